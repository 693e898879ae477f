"""``result.compare(x)``: run the original and the new model on ``x`` and compare every layer's output.

One row per layer present in both models (a report row that is neither ``new`` nor
``removed``), nested layers included: each nested model called once is run on the values its
call received. A layer reported ``kept`` promises the same output bit for bit; one that differs
is flagged in the ``broken_promise`` column, and a :class:`BrokenPromiseWarning` is issued.
pandas is imported only here, when a comparison is made.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from . import _graph, tracing
from .errors import InvalidEdit

__all__ = ["BrokenPromiseWarning", "compare", "layer_outputs"]

COLUMNS = ["layer", "source", "type", "status", "output_shape", "max_abs_diff", "max_rel_diff", "broken_promise"]

class BrokenPromiseWarning(UserWarning):
    """A layer reported ``kept`` computes something else than it did in the original."""


def compare(result, x, original=None, original_x=None):
    """A pandas DataFrame comparing each layer's output in ``result.model`` and in the original.

    Both models run on the input in inference mode (``training=False``); one row per layer
    present in both (a report row neither ``new`` nor ``removed``), layers of nested models
    included. A layer reported ``kept`` promises the same output bit for bit; one that differs
    is flagged in ``broken_promise`` and a ``BrokenPromiseWarning`` is issued.
    ``result.compare(x)`` calls this.

    Columns: ``layer`` (path in the new model), ``source`` (path in the original), ``type``,
    ``status`` (from the report), ``output_shape`` (in the new model), ``max_abs_diff`` (largest
    absolute difference over the layer's outputs, every call of a shared layer; NaN when the
    shapes differ), ``max_rel_diff`` (that, divided by the largest magnitude of the original
    output) and ``broken_promise``.

    Args:
        result: A ``SurgeryResult`` from any kerasnb operation.
        x: The new model's input: an array, or a list / dict as the model takes.
        original: The model the result was made from, when the result does not know it
            (``result.original`` is used otherwise).
        original_x: The original's input when it differs from ``x`` (e.g. after
            ``kerasnb.change_input``: the 3-channel copy of a grey image); default ``x``.

    Returns:
        pandas.DataFrame: one row per layer, the columns above.

    Raises:
        InvalidEdit: the original is not known, or ``x`` has a different number of arrays than
            the model has inputs.

    Examples:
        >>> from kerasnb.compare import compare
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden")
        >>> frame = compare(result, np.ones((2, 8), "float32"))
        >>> print(frame[["layer", "status", "max_abs_diff"]].to_string(index=False))
              layer             status  max_abs_diff
                x         no_weights           0.0
             hidden               kept           0.0
                out kept_input_changed           0.0
    """
    import pandas as pd

    original = original if original is not None else getattr(result, "original", None)
    if original is None:
        raise InvalidEdit(
            "compare() runs the original model beside the new one, and this result does not know the original. "
            "Pass it: result.compare(x, original=model). Received: a result of model "
            f"{getattr(result.model, 'name', result.model)!r} without its original"
        )
    new_out = layer_outputs(result.model, x)
    old_out = layer_outputs(original, x if original_x is None else original_x)
    rows, broken = [], []
    for row in result.report:
        if row.status in ("new", "removed") or not row.source:
            continue
        new_values, old_values = new_out.get(row.layer), old_out.get(row.source)
        if new_values is None or old_values is None:
            continue
        shape = _shape_of(new_values)
        same_shapes = len(new_values) == len(old_values) and all(
            a.shape == b.shape for a, b in zip(new_values, old_values))
        if same_shapes:
            abs_diff = max((_max_abs(a, b) for a, b in zip(new_values, old_values)), default=0.0)
            scale = max((float(np.nanmax(np.abs(b.astype("float64")))) if b.size else 0.0 for b in old_values),
                        default=0.0)
            rel_diff = abs_diff / scale if scale > 0 else (0.0 if abs_diff == 0 else float("inf"))
            identical = all(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc") for a, b in zip(new_values, old_values))
        else:
            abs_diff = rel_diff = float("nan")
            identical = False
        promise_broken = row.status == "kept" and not identical
        if promise_broken:
            broken.append(row.layer)
        rows.append({"layer": row.layer, "source": row.source, "type": row.type, "status": str(row.status),
                     "output_shape": shape, "max_abs_diff": abs_diff, "max_rel_diff": rel_diff,
                     "broken_promise": promise_broken})
    if broken:
        warnings.warn(
            f"{len(broken)} layer(s) reported 'kept' do not compute what they computed in the original: "
            f"{', '.join(repr(b) for b in broken[:5])}{' ...' if len(broken) > 5 else ''}. The report promised "
            "bit-identical outputs; please report this as a kerasnb bug.",
            BrokenPromiseWarning, stacklevel=3,
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def layer_outputs(model, x) -> dict:
    """``{path: [output arrays]}`` for every layer of ``model`` on input ``x`` (inference mode).

    Every call of a layer gives its outputs, in call order; a nested model is replayed on
    the values its call received, and its layers appear as ``"outer/inner"``. The model is not
    changed: this is :func:`kerasnb.trace`'s pass (each call made eagerly, which adds no call).

    Args:
        model: A built functional or Sequential model.
        x: Its input: an array, or a list / dict as the model takes.

    Returns:
        dict: ``{path: [numpy array per output of each call]}``.

    Raises:
        InvalidEdit: ``x`` has a different number of arrays than the model has inputs.

    Examples:
        >>> from kerasnb.compare import layer_outputs
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> outputs = layer_outputs(model, np.ones((3, 8), "float32"))
        >>> {path: [a.shape for a in arrays] for path, arrays in outputs.items()}
        {'x': [(3, 8)], 'hidden': [(3, 4)], 'out': [(3, 2)]}
    """
    flat = [np.asarray(keras.ops.convert_to_numpy(v)) for v in keras.tree.flatten(x)]
    inputs = _graph.input_tensors(model)
    if len(flat) != len(inputs):
        raise InvalidEdit(
            f"Model {model.name!r} takes {len(inputs)} input(s) "
            f"{[tuple(t.shape) for t in inputs]}; compare() received {len(flat)} array(s) "
            f"{[a.shape for a in flat]}. Received: x of type {type(x).__name__}"
        )
    return tracing.every_output(model, [_cast(v, t) for v, t in zip(flat, inputs)], "compare()")


def _cast(value, tensor):
    dtype = getattr(tensor, "dtype", None)
    return value.astype(keras.backend.standardize_dtype(dtype)) if dtype and value.dtype != dtype else value


def _max_abs(a, b) -> float:
    if a.size == 0:
        return 0.0
    diff = np.abs(a.astype("float64") - b.astype("float64"))
    both_nan = np.isnan(a.astype("float64")) & np.isnan(b.astype("float64"))
    diff = np.where(both_nan, 0.0, diff)
    return float(np.max(diff))


def _shape_of(values):
    shapes = [tuple(int(d) for d in v.shape) for v in values]
    if len(set(shapes)) == 1:
        return shapes[0]
    return tuple(shapes)
