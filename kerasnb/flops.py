"""Multiply-accumulates (MACs) per layer, for one sample, and how they scale when channels go.

``count_macs(model)`` is a table (pandas DataFrame) with one row per layer; ``total_macs(model)``
the sum; ``layer_macs(model)`` the same numbers as a dict keyed by layer path (``"dense_1"``,
``"backbone/conv3"``). A shared layer sums its calls; the layers of a nested model are counted for
every call of that model.

What is counted: the multiply-accumulates of the matrix products and convolutions, for a batch of
one (the usual convention of published figures such as MobileNetV2's 300M at 224x224). Bias adds,
activations, normalisation, pooling and merges count 0. Per layer type:

- Dense: positions x inputs x units (a Dense on (T, d) inputs runs at each of the T positions);
- EinsumDense: the product of the sizes of every index of its equation;
- Conv1D/2D/3D: output positions x filters x (input channels / groups) x kernel size;
- DepthwiseConv1D/2D: output positions x input channels x depth_multiplier x kernel size;
- SeparableConv1D/2D: that depthwise part, then output positions x (channels x multiplier) x filters;
- Conv1D/2D/3DTranspose: input positions x input channels x filters x kernel size;
- MultiHeadAttention (and GroupQueryAttention): the query, key and value projections, QK^T and
  the weighted sum of values (query positions x attended positions x heads x head size each), and
  the output projection, with the sequence lengths of each call;
- Attention / AdditiveAttention: QK^T and the weighted sum of values;
- SimpleRNN / GRU / LSTM (any RNN whose cell has ``kernel`` and ``recurrent_kernel``): per
  timestep the input and the recurrent matrix products, times the number of steps; Bidirectional
  counts both directions; TimeDistributed counts its layer once per step;
- Embedding: 0 (a look-up).

A layer with weights that has no formula here (a custom layer) shows 0 MACs and ``counted`` False.

Sizes come from the shapes the model was built with. Where a size the formula needs is unknown
(``None``, e.g. an image model built for any resolution), give one:
``count_macs(model, input_shape=(224, 224, 3))``; the shapes are then worked out layer by layer
without calling the model (``compute_output_spec``), and the model is not changed.

For budgets after pruning without building the pruned model, :func:`layer_cost` gives each
layer's MACs as terms that each scale with a power of (kept input channels / input channels) and
of (kept output channels / output channels); :func:`macs_with_channels` sums them for given
fractions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import keras
from keras import layers as L

from . import _graph
from .errors import surgery_errors_only, IncompatibleShape, SurgeryError, UnknownShape

__all__ = ["LayerCost", "Term", "UnknownShape", "count_macs", "layer_cost", "layer_macs", "macs_with_channels",
           "total_macs"]


@dataclass(frozen=True)
class Term:
    """Part of a layer's MACs that scales as ``(kept in / in) ** in_power * (kept out / out) ** out_power``.

    A grouped conv's term also scales as ``(groups after / groups before) ** groups_power`` (-1:
    removing whole groups removes input and output channels but not the channels each filter reads).
    """

    macs: int
    in_power: int = 1
    out_power: int = 1
    what: str = ""
    groups_power: int = 0


@dataclass
class LayerCost:
    """A layer's MACs (summed over its calls), as terms, with the channel counts they scale with.

    ``in_channels`` is the channel count of the layer's (first) input, ``out_channels`` that of
    its output: units of a Dense, filters of a Conv, channels x depth_multiplier of a Depthwise.
    A conv or dense term scales with both (in_power = out_power = 1); a depthwise term only with
    the input channels (its output channels follow them); a recurrent term with the units squared
    (out_power = 2). A grouped conv's term is divided by the fraction of groups kept (see :class:`Term`).
    """

    path: str
    type: str
    params: int
    in_channels: int | None = None
    out_channels: int | None = None
    terms: list = field(default_factory=list)
    counted: bool = True  # False: a layer with weights that has no formula here (shows 0)

    @property
    def macs(self) -> int:
        return int(sum(t.macs for t in self.terms))

    def macs_at(self, in_fraction: float = 1.0, out_fraction: float = 1.0, groups_fraction: float = 1.0) -> float:
        """The MACs with ``in_fraction`` of the input channels and ``out_fraction`` of the output channels kept.

        ``groups_fraction``: for a grouped conv whose whole groups go, the fraction of groups kept.
        """
        return float(sum(t.macs * in_fraction ** t.in_power * out_fraction ** t.out_power
                         * groups_fraction ** t.groups_power for t in self.terms))


# ----------------------------------------------------------------------------- public API


def layer_cost(model, input_shape=None) -> dict:
    """``{layer path: LayerCost}`` for every layer (not inputs, not nested models themselves), in graph order.

    ``input_shape``: the shape of one sample without the batch axis, e.g. ``(224, 224, 3)``, for a
    model whose sizes are unknown; a list (or a dict by input name) for several inputs.
    """
    fn = _graph.functional(model)
    given = _given_shapes(fn, input_shape)
    costs: dict = {}
    with _graph.memo():
        _graph_costs(fn, "", given, costs, {}, input_shape)
    return {cost.path: cost for cost in costs.values()}


def layer_macs(model, input_shape=None) -> dict:
    """``{layer path: MACs}`` for one sample; a shared layer sums its calls."""
    return {path: cost.macs for path, cost in layer_cost(model, input_shape).items()}


def total_macs(model, input_shape=None) -> int:
    """The model's multiply-accumulates for one sample."""
    return int(sum(cost.macs for cost in layer_cost(model, input_shape).values()))


@surgery_errors_only
def count_macs(model, input_shape=None):
    """A pandas DataFrame of MACs per layer: columns layer, type, macs, params, counted.

    One row per layer (nested models' layers by path, ``"backbone/conv3"``); the sum is in
    ``frame.attrs["total"]`` (no total row, so the columns sum as they are). ``counted`` is False
    for a layer with weights that kerasnb has no formula for (it shows 0). See the module's
    docstring for what is counted.
    """
    import pandas as pd

    costs = layer_cost(model, input_shape)
    frame = pd.DataFrame(
        [(c.path, c.type, c.macs, c.params, c.counted) for c in costs.values()],
        columns=["layer", "type", "macs", "params", "counted"],
    )
    frame.attrs["total"] = int(frame["macs"].sum()) if len(frame) else 0
    return frame


def macs_with_channels(model_or_costs, in_fraction=None, out_fraction=None, input_shape=None, *,
                       groups_fraction=None) -> int:
    """Total MACs if each layer kept the given fractions of its input / output channels.

    ``in_fraction`` and ``out_fraction`` map layer paths to the kept fraction (missing: 1.0);
    ``groups_fraction`` the fraction of groups kept by grouped convs that lose whole groups.
    Pass the model, or the dict from :func:`layer_cost` to skip working it out again.
    """
    costs = model_or_costs if isinstance(model_or_costs, dict) else layer_cost(model_or_costs, input_shape)
    in_fraction, out_fraction = dict(in_fraction or {}), dict(out_fraction or {})
    groups_fraction = dict(groups_fraction or {})
    unknown = [p for p in list(in_fraction) + list(out_fraction) + list(groups_fraction) if p not in costs]
    if unknown:
        from .errors import LayerNotFound, suggest

        raise LayerNotFound(f"No layer {unknown[0]!r} in the costs.{suggest(unknown[0], costs)} "
                            f"Received: {unknown!r}")
    total = sum(cost.macs_at(in_fraction.get(path, 1.0), out_fraction.get(path, 1.0), groups_fraction.get(path, 1.0))
                for path, cost in costs.items())
    return int(round(total))


# ----------------------------------------------------------------------------- the walk


def _batch1(shape) -> tuple:
    shape = tuple(shape)
    return (1,) + shape[1:] if shape else shape


def _given_shapes(fn, input_shape):
    """One shape (batch axis 1) per input of ``fn``: the built ones, or those of ``input_shape``."""
    tensors = _graph.input_tensors(fn)
    if input_shape is None:
        return None
    if isinstance(input_shape, dict):
        names = [t.name for t in tensors]
        layer_names = [layer.name for layer in _graph.input_layers(fn)]
        stray = [k for k in input_shape if k not in names and k not in layer_names]
        if stray:
            raise SurgeryError(f"Model {fn.name!r} has no input named {stray[0]!r}; its inputs are {layer_names}. "
                               f"Received: input_shape={input_shape!r}")
        picked = []
        for tensor, name, layer_name in zip(tensors, names, layer_names):
            value = input_shape.get(layer_name, input_shape.get(name))
            picked.append(tuple(tensor.shape[1:]) if value is None else value)
        shapes = picked
    elif _is_shape(input_shape):
        if len(tensors) != 1:
            raise SurgeryError(
                f"Model {fn.name!r} has {len(tensors)} inputs; give one shape per input, as a list or as a dict by "
                f"input name. Received: input_shape={input_shape!r}")
        shapes = [input_shape]
    else:
        shapes = list(input_shape)
        if len(shapes) != len(tensors) or not all(_is_shape(s) for s in shapes):
            raise SurgeryError(
                f"input_shape is the shape of one sample without the batch axis, e.g. (224, 224, 3), or one such "
                f"shape per input ({len(tensors)} here). Received: input_shape={input_shape!r}")
    out = []
    for tensor, shape in zip(tensors, shapes):
        shape = tuple(shape)
        if len(shape) != len(tensor.shape) - 1:
            raise SurgeryError(
                f"The input {tensor.name!r} of model {fn.name!r} has shape {tuple(tensor.shape)} (batch axis first), "
                f"so input_shape gives {len(tensor.shape) - 1} sizes for it. Received: input_shape={input_shape!r}")
        fixed = [(axis, was, now) for axis, (was, now) in enumerate(zip(tensor.shape[1:], shape), start=1)
                 if was is not None and now != was]
        if fixed:
            axis, was, now = fixed[0]
            raise SurgeryError(
                f"The input {tensor.name!r} of model {fn.name!r} has shape {tuple(tensor.shape)}: axis {axis} is fixed "
                f"at {was}, and input_shape gives {now}. input_shape fills in the sizes the model leaves unknown "
                f"(None); to count at another size, give the model that input first "
                f"(kerasnb.change_input(model, {tuple(shape)!r})). Received: input_shape={input_shape!r}")
        out.append((1,) + shape)
    return out


def _is_shape(value) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def _graph_costs(fn, prefix, given, costs, first, input_shape) -> list:
    """Walk one graph, adding the cost of each call to ``costs``; returns its output shapes."""
    shapes: dict = {}
    in_tensors = _graph.input_tensors(fn)
    for i, tensor in enumerate(in_tensors):
        shapes[id(tensor)] = given[i] if given is not None else _batch1(tensor.shape)
    for view in _graph.walk(fn):
        op = view.operation
        ins = [shapes.get(id(t), _batch1(t.shape)) for t in view.input_tensors]
        recorded = [_batch1(t.shape) for t in view.input_tensors]
        if _graph.is_graph_model(op):
            inner_inputs = _graph.input_tensors(op)
            inner_given = ins if len(inner_inputs) == len(ins) else None
            outs = _graph_costs(_graph.functional(op), prefix + op.name + "/", inner_given, costs, first, input_shape)
        else:
            outs = [_batch1(t.shape) for t in view.outputs] if ins == recorded else _spec_shapes(view, ins, prefix)
            path = first.setdefault(id(op), prefix + op.name)
            cost = costs.get(id(op))
            if cost is None:
                cost = costs[id(op)] = LayerCost(path, type(op).__name__, _graph.count_params(op))
            _add_call(cost, op, view, dict(zip(map(id, view.input_tensors), ins)), ins, outs, input_shape)
        for tensor, shape in zip(view.outputs, outs):
            shapes[id(tensor)] = shape
    return [shapes.get(id(t), _batch1(t.shape)) for t in _graph.output_tensors(fn)]


def _spec_shapes(view, ins, prefix) -> list:
    """Output shapes of one call for new input shapes, worked out symbolically (no call is recorded)."""
    op = view.operation
    tensors = {id(t): keras.KerasTensor(shape, dtype=t.dtype) for t, shape in zip(view.input_tensors, ins)}
    args, kwargs = view.fill_in(tensors)
    try:
        spec = op.compute_output_spec(*args, **kwargs)
    except Exception as error:
        from .errors import first_line

        raise IncompatibleShape(
            f"Layer {prefix + op.name!r} ({type(op).__name__}) cannot take inputs of shape "
            f"{', '.join(str(s) for s in ins)}: {first_line(error, 300)} The input_shape given does not fit the "
            f"model. Received: inputs of shape {ins}") from None
    return [tuple(s.shape) for s in keras.tree.flatten(spec)]


class _Unknown(Exception):
    pass


def _prod(dims) -> int:
    out = 1
    for d in dims:
        if d is None:
            raise _Unknown
        out *= int(d)
    return out


def _add_call(cost: LayerCost, op, view, shape_of: dict, ins, outs, input_shape) -> None:
    try:
        result = _terms(op, view, shape_of, ins, outs)
    except _Unknown:
        shown = ins[0] if len(ins) == 1 else ins
        example = _example_shape(ins)
        raise UnknownShape(
            f"Layer {cost.path!r} ({type(op).__name__}) has an unknown spatial size: it sees inputs of shape {shown} "
            f"(batch axis first, counted as 1), so its multiply-accumulates cannot be counted. Give the size of one "
            f"sample: count_macs(model, input_shape={example}) (also for total_macs and layer_macs). "
            f"Received: input_shape={input_shape!r}") from None
    if result is None:
        cost.counted = not op.weights if hasattr(op, "weights") else True
        return
    terms, c_in, c_out = result
    cost.terms.extend(terms)
    cost.in_channels = cost.in_channels if c_in is None else int(c_in)
    cost.out_channels = cost.out_channels if c_out is None else int(c_out)


def _example_shape(ins) -> tuple:
    """A made-up sample shape for the error message: the layer's input with its unknown sizes filled in."""
    shape = ins[0][1:] if ins and ins[0] else ()
    fill = 224 if len(shape) >= 3 else 128
    return tuple(fill if d is None else d for d in shape) or (224, 224, 3)


# ----------------------------------------------------------------------------- formulas

_NO_MACS = (L.Embedding, L.BatchNormalization, L.LayerNormalization, L.GroupNormalization, L.Normalization,
            L.PReLU, L.Rescaling)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_TRANSPOSE = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D)


def _terms(op, view, shape_of, ins, outs):
    """``(terms, input channels, output channels)`` of one call, or None when there is no formula."""
    if isinstance(op, _NO_MACS):
        return [], None, None
    if isinstance(op, L.TimeDistributed):
        inner = _shape_terms(op.layer, [(1,) + tuple(s[2:]) for s in ins], [(1,) + tuple(s[2:]) for s in outs])
        if inner is None:
            return None
        steps = _prod([ins[0][1]])
        terms, c_in, c_out = inner
        return [Term(t.macs * steps, t.in_power, t.out_power, t.what) for t in terms], c_in, c_out
    if _is_attention(op):
        return _attention_terms(op, view, shape_of)
    if isinstance(op, (L.Attention, L.AdditiveAttention)):
        return _dot_attention_terms(op, view, shape_of)
    return _shape_terms(op, ins, outs)


def _shape_terms(op, ins, outs):
    """Terms of the layers whose MACs follow from their first input and output shapes."""
    if isinstance(op, _NO_MACS):
        return [], None, None
    if not ins or not outs:
        return None
    x, y = tuple(ins[0]), tuple(outs[0])
    if isinstance(op, L.Dense):
        d = _prod([x[-1]])
        return [Term(_prod(x[1:-1]) * d * op.units, 1, 1, "dense")], d, op.units
    if isinstance(op, L.EinsumDense):
        return _einsum_terms(op, x, y)
    if isinstance(op, _TRANSPOSE + _SEPARABLE + _DEPTHWISE + _CONV):
        first = op.data_format == "channels_first"
        c_in = _prod([x[1] if first else x[-1]])
        in_space = x[2:] if first else x[1:-1]
        out_space = y[2:] if first else y[1:-1]
        k = _prod(op.kernel_size)
        if isinstance(op, _TRANSPOSE):
            return [Term(_prod(in_space) * c_in * op.filters * k, 1, 1, "transposed conv")], c_in, op.filters
        if isinstance(op, _SEPARABLE):
            mid = c_in * op.depth_multiplier
            return [Term(_prod(out_space) * mid * k, 1, 0, "depthwise"),
                    Term(_prod(out_space) * mid * op.filters, 1, 1, "pointwise")], c_in, op.filters
        if isinstance(op, _DEPTHWISE):
            mid = c_in * op.depth_multiplier
            return [Term(_prod(out_space) * mid * k, 1, 0, "depthwise")], c_in, mid
        groups_power = -1 if op.groups > 1 else 0
        return [Term(_prod(out_space) * op.filters * (c_in // op.groups) * k, 1, 1, "conv", groups_power)], c_in, \
            op.filters
    if isinstance(op, L.Bidirectional):
        parts = [_shape_terms(layer, ins, outs) for layer in (op.forward_layer, op.backward_layer)]
        if any(p is None for p in parts):
            return None
        return parts[0][0] + parts[1][0], parts[0][1], (parts[0][2] or 0) + (parts[1][2] or 0)
    if isinstance(op, L.RNN) and not isinstance(op, (L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D)):
        cell = op.cell
        kernel, recurrent = getattr(cell, "kernel", None), getattr(cell, "recurrent_kernel", None)
        if kernel is None or recurrent is None:
            return None
        steps = _prod([x[1]])
        units = int(recurrent.shape[0])
        return [Term(steps * _prod(kernel.shape), 1, 1, "input matmul per step"),
                Term(steps * _prod(recurrent.shape), 0, 2, "recurrent matmul per step")], _prod([x[-1]]), units
    return None


def _einsum_terms(op, x, y):
    """Every index of the equation once: the product of their sizes is the number of MACs."""
    equation = op.equation.replace(" ", "")
    inputs, output = equation.split("->")
    lhs, kernel_spec = inputs.split(",")
    sizes: dict = {}
    extra = 1
    if "..." in lhs:
        before, after = lhs.split("...")
        n_ellipsis = len(x) - len(before) - len(after)
        extra = _prod([1 if i == 0 and not before else d for i, d in enumerate(x[len(before):len(before) + n_ellipsis])])
        letters = list(before) + [None] * n_ellipsis + list(after)
    else:
        letters = list(lhs)
    for i, (letter, d) in enumerate(zip(letters, x)):
        if letter is not None:
            sizes[letter] = 1 if i == 0 else d
    for letter, d in zip(kernel_spec, op.kernel.shape):
        sizes.setdefault(letter, d)
    macs = _prod(list(sizes.values())) * extra
    last_in = lhs[-1] if lhs and lhs[-1] != "." else None
    last_out = output[-1] if output and output[-1] != "." else None
    in_power = 1 if last_in and last_in in kernel_spec and last_in not in output else 0
    out_power = 1 if last_out and last_out in kernel_spec else 0
    return [Term(macs, in_power, out_power, "einsum")], x[-1], y[-1]


def _is_attention(op) -> bool:
    """MultiHeadAttention, GroupQueryAttention: query/key/value/output projections around scaled dot products."""
    return isinstance(op, L.Layer) and all(
        getattr(op, name, None) is not None and getattr(getattr(op, name), "kernel", None) is not None
        for name in ("query_dense", "key_dense", "value_dense", "output_dense"))


def _bound(op, view, shape_of) -> dict:
    """The call's arguments by name, each Keras tensor replaced by its shape."""
    args, kwargs = view.fill_in({k: _ShapeOf(v) for k, v in shape_of.items()})
    try:
        bound = inspect.signature(op.call).bind(*args, **kwargs)
    except TypeError:
        return {}
    return {k: (v.shape if isinstance(v, _ShapeOf) else v) for k, v in bound.arguments.items()}


class _ShapeOf:
    def __init__(self, shape):
        self.shape = tuple(shape)


def _attention_terms(op, view, shape_of):
    arguments = _bound(op, view, shape_of)
    query, value = arguments.get("query"), arguments.get("value")
    key = arguments.get("key") or value
    if not isinstance(query, tuple) or not isinstance(value, tuple):
        return None
    q_kernel, k_kernel = tuple(op.query_dense.kernel.shape), tuple(op.key_dense.kernel.shape)
    v_kernel, o_kernel = tuple(op.value_dense.kernel.shape), tuple(op.output_dense.kernel.shape)
    heads, head_dim, value_dim = q_kernel[-2], q_kernel[-1], v_kernel[-1]
    queries, keys, values = _prod(query[1:-1]), _prod(key[1:-1]), _prod(value[1:-1])
    axes = getattr(op, "attention_axes", None)
    if axes is None:
        attended = keys
    else:
        rank = len(key)
        attended = _prod([key[a % rank] for a in axes])
    # MultiHeadAttention(use_gate=True) gates each head's output by a sigmoid of another projection of the query.
    gates = [s for s in _graph.sublayers(op)[1:] if s.name == "gate" and getattr(s, "kernel", None) is not None]
    gate = [Term(queries * _prod(g.kernel.shape), 1, 0, "gate projection") for g in gates[:1]]
    return ([Term(queries * _prod(q_kernel), 1, 0, "query projection"), *gate,
             Term(keys * _prod(k_kernel), 0, 0, "key projection"),
             Term(values * _prod(v_kernel), 0, 0, "value projection"),
             Term(heads * queries * attended * head_dim, 0, 0, "QK^T"),
             Term(heads * queries * attended * value_dim, 0, 0, "attention x values"),
             Term(queries * _prod(o_kernel), 0, 1, "output projection")],
            query[-1], _prod(o_kernel[2:]) if len(o_kernel) > 2 else None)


def _dot_attention_terms(op, view, shape_of):
    arguments = _bound(op, view, shape_of)
    inputs = arguments.get("inputs")
    if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
        return None
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) > 2 else value
    queries, keys = _prod(query[1:-1]), _prod(key[1:-1])
    return ([Term(queries * keys * _prod([query[-1]]), 0, 0, "scores"),
             Term(queries * keys * _prod([value[-1]]), 0, 0, "attention x values")], query[-1], value[-1])
