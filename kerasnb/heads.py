"""Remove attention heads of a ``keras.layers.MultiHeadAttention``.

``prune_heads(model, "mha", heads=[0, 3])`` rebuilds the layer with fewer ``num_heads``; the
query, key and value projections (and the gate, with ``use_gate=True``) lose those heads' slices
of their kernels and biases, the output projection loses its rows for them. Each kept head
computes exactly what it did, and the output keeps its shape: the model's output equals the
original's with the removed heads' output-projection slices set to zero.

It is a :class:`kerasnb.Transform` with a weight rule, carried out by :func:`kerasnb.apply` in one
rebuild; the layer's report row says ``pruned`` (with the heads and shapes), the layers after it
``kept_input_changed``.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from . import _graph, _targets
from .edits import Transform
from .errors import surgery_errors_only, InvalidEdit, UnsupportedLayer
from .surgery import SurgeryResult, apply
from .report import Status
from .weights import Outcome

__all__ = ["head_scores", "prune_heads"]

# The sub-layers of MultiHeadAttention that carry a heads axis, by name, and where it is.
# query / key / value / gate: kernel (in, heads, size), bias (heads, size); attention_output:
# kernel (heads, size, out...), bias (out...) has none.
_PER_HEAD = {"query": (1, 0), "key": (1, 0), "value": (1, 0), "gate": (1, 0), "attention_output": (0, None)}


@surgery_errors_only
def prune_heads(model, target, heads=None, *, keep=None, by="l1") -> SurgeryResult:
    """Remove attention heads of the MultiHeadAttention ``target``; the kept heads compute what they did.

    The layer is rebuilt with fewer ``num_heads``: the query, key and value projections (and the
    gate, with ``use_gate=True``) lose the removed heads' slices of their kernels and biases, the
    output projection its rows for them. The output keeps its shape: the new model computes what
    the original would with the removed heads' output-projection slices set to zero. The layers
    after it keep their weights and are reported ``kept_input_changed`` (fine-tune).

    The target is one of:

    - ``"name"`` (or the layer object): a MultiHeadAttention of the model; a layer called several
      times is changed once, for all its calls;
    - ``"outer/inner"``: one inside a nested model;
    - ``"block/attention"``: one held inside a layer of the graph, e.g.
      ``"transformer_layer_0/self_attention_layer"`` of a keras-hub backbone (the block is made
      again with that attention changed, its other weights kept).

    Args:
        model: A built functional or Sequential model; it is not changed.
        target: The MultiHeadAttention, in one of the forms above.
        heads: Indices of the heads to remove, e.g. ``[0, 3]`` (``-1`` is the last). Give this
            or ``keep``.
        keep: How many heads to keep: a fraction in (0, 1] (rounded, at least one head) or a
            count (``2``); the weakest by ``by`` are removed.
        by: How ``keep`` ranks the heads: ``"l1"`` (default) or ``"l2"``, the norm of each head's
            slice of the output projection, or a callable ``layer -> one score per head`` (the
            highest scores are kept).

    Returns:
        SurgeryResult: ``.model`` with the smaller layer, ``.report`` (the layer ``pruned``, its
        reason naming the heads and kernel shapes), ``.edits`` and ``.notes``.

    Raises:
        LayerNotFound: ``target`` names no layer.
        InvalidEdit: the target is no built MultiHeadAttention; neither or both of ``heads`` /
            ``keep`` are given; an index or ``keep`` is out of range; none or all heads would go.
        UnsupportedLayer: the layer holds variables other than its projections' kernels and
            biases (LoRA factors: merge them first; quantized kernels).

    Examples:
        >>> inputs = keras.Input((4, 8), name="x")
        >>> mha = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")
        >>> model = keras.Model(inputs, mha(inputs, inputs))
        >>> result = kerasnb.prune_heads(model, "mha", heads=[0, 3])
        >>> result.report.status("mha"), result.model.get_layer("mha").num_heads
        ('pruned', 2)
        >>> result.model.output.shape == model.output.shape
        True
    """
    inside = _targets.inside(model, target)  # "block/attention": held inside a keras-hub block
    found = inside or _targets.resolve(model, target, what="prune_heads")
    layer, path = found.layer, found.path
    _check_layer(layer, target)
    n_heads = int(layer.num_heads)
    removed = _chosen(layer, n_heads, heads, keep, by, target)
    kept = [h for h in range(n_heads) if h not in set(removed)]
    edit = Transform(target, _heads_rule(kept, removed, n_heads), {"num_heads": len(kept)})
    result = apply(model, [edit])
    note = (f"{path!r}: {len(removed)} of {n_heads} attention heads removed ({removed}); num_heads {n_heads} -> "
            f"{len(kept)}. Its output shape is unchanged, so the layers after it keep their weights but see a "
            "changed input (fine-tune).")
    return dataclasses.replace(result, notes=(note,) + tuple(result.notes))


def head_scores(layer, by="l1") -> np.ndarray:
    """One score per head of a MultiHeadAttention: the norm of its slice of the output projection."""
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.output_dense.kernel.value), dtype="float64")
    per_head = kernel.reshape(kernel.shape[0], -1)
    if by == "l1":
        return np.abs(per_head).sum(axis=1)
    if by == "l2":
        return np.sqrt((per_head ** 2).sum(axis=1))
    raise InvalidEdit(f"Heads are ranked by 'l1', 'l2' or a callable layer -> one score per head. Received: by={by!r}")


# ----------------------------------------------------------------------------- checks


def _check_layer(layer, target) -> None:
    if not isinstance(layer, keras.layers.MultiHeadAttention):
        raise InvalidEdit(
            f"prune_heads removes heads of a keras.layers.MultiHeadAttention; {layer.name!r} is a "
            f"{type(layer).__name__}. Received: target={target!r}")
    if not layer.built:
        raise InvalidEdit(f"MultiHeadAttention {layer.name!r} is not built, so it has no heads to slice yet. "
                          f"Received: target={target!r}")
    covered = set()
    for sub in _graph.sublayers(layer)[1:]:
        if sub.name in _PER_HEAD:
            covered.update(id(v) for v in (getattr(sub, "kernel", None), getattr(sub, "bias", None)) if v is not None)
    others = [v.path for v in layer.weights if id(v) not in covered]
    if others or getattr(layer.query_dense, "quantization_mode", None):
        raise UnsupportedLayer(
            f"MultiHeadAttention {layer.name!r} has variables other than its projections' kernels and biases "
            f"({', '.join(others) or 'quantized kernels'}), which prune_heads cannot slice: merge LoRA first "
            f"(kerasnb.merge_lora) or prune before quantizing. Received: target={target!r}")


def _chosen(layer, n_heads, heads, keep, by, target) -> list:
    """The sorted, non-negative indices of the heads to remove."""
    if (heads is None) == (keep is None):
        raise InvalidEdit(
            "Give either heads= (indices to remove, e.g. [0, 3]) or keep= (a fraction such as 0.5, or a count). "
            f"Received: heads={heads!r}, keep={keep!r}")
    if heads is not None:
        given = [heads] if isinstance(heads, (int, np.integer)) and not isinstance(heads, bool) else heads
        try:
            given = list(given)
        except TypeError:
            given = None
        bad = given is None or [h for h in given if isinstance(h, bool) or not isinstance(h, (int, np.integer))
                                or not -n_heads <= h < n_heads]
        if bad:
            raise InvalidEdit(
                f"MultiHeadAttention {layer.name!r} has {n_heads} heads: indices run from 0 to {n_heads - 1} "
                f"(or -{n_heads} to -1 from the end). Received: heads={heads!r}")
        removed = sorted({int(h) % n_heads for h in given})
    else:
        n_keep = _kept_count(layer, n_heads, keep)
        scores = np.asarray(by(layer) if callable(by) else head_scores(layer, by), dtype="float64").reshape(-1)
        if scores.shape != (n_heads,):
            raise InvalidEdit(f"The criterion gave {scores.size} scores for {n_heads} heads of {layer.name!r}; "
                              f"it must give one per head. Received: by={by!r}")
        order = np.argsort(-scores, kind="stable")  # the strongest first, ties by index
        removed = sorted(int(h) for h in order[n_keep:])
    if not removed:
        raise InvalidEdit(f"That removes none of the {n_heads} heads of {layer.name!r}. "
                          f"Received: heads={heads!r}, keep={keep!r}")
    if len(removed) == n_heads:
        raise InvalidEdit(
            f"That removes all {n_heads} heads of {layer.name!r}; at least one must stay. To drop the attention "
            f"altogether, delete or replace the layer. Received: heads={heads!r}, keep={keep!r}")
    return removed


def _kept_count(layer, n_heads, keep) -> int:
    if isinstance(keep, (int, np.integer)) and not isinstance(keep, bool) and 1 <= keep <= n_heads:
        return int(keep)
    if isinstance(keep, (float, np.floating)) and 0 < keep <= 1:
        return max(1, int(round(keep * n_heads)))
    raise InvalidEdit(
        f"keep is a fraction of the heads in (0, 1] or a count from 1 to {n_heads} for {layer.name!r}. "
        f"Received: keep={keep!r}")


# ----------------------------------------------------------------------------- the weight rule


def _heads_rule(kept, removed, n_heads):
    """The surviving heads' slices of every projection of the old layer, for the new one."""
    index = np.asarray(kept, dtype="int32")

    def rule(old, new):
        old_subs = {s.name: s for s in _graph.sublayers(old)[1:] if s.name in _PER_HEAD}
        new_subs = {s.name: s for s in _graph.sublayers(new)[1:] if s.name in _PER_HEAD}
        values, shapes = [], []
        for name, (kernel_axis, bias_axis) in _PER_HEAD.items():
            if name not in old_subs:
                continue
            o, n = old_subs[name], new_subs[name]
            for attr, axis in (("kernel", kernel_axis), ("bias", bias_axis)):
                ov, nv = getattr(o, attr, None), getattr(n, attr, None)
                if ov is None:
                    continue
                value = ov.value if axis is None else keras.ops.take(ov.value, index, axis=axis)
                if axis is None:
                    value = keras.ops.copy(value)
                dtype = keras.backend.standardize_dtype(nv.dtype)
                if keras.backend.standardize_dtype(value.dtype) != dtype:
                    value = keras.ops.cast(value, dtype)
                values.append((nv, value))
                if axis is not None and attr == "kernel":
                    shapes.append(f"{name} {tuple(ov.shape)} -> {tuple(nv.shape)}")
        biases = "; biases sliced alike" if getattr(old_subs["query"], "bias", None) is not None else ""
        reason = f"heads {removed} of {n_heads} removed, {len(kept)} kept: kernels " + ", ".join(shapes) + biases
        return Outcome(Status.PRUNED, reason, values)

    rule.__name__ = "prune_heads"
    return rule
