"""Statuses foretold from shapes alone, before a rebuild: what the report of an edit will say
where that can be exact without building the model (beside :func:`kerasnb.report.status_of`,
which says it of a built one). The editor shows them while the model is built.
"""

from __future__ import annotations

import dataclasses

import keras

from . import _graph, _targets, fitting
from ._lineage import Lineage
from .edits import Delete, Replace
from .errors import LayerNotFound
from .report import KEPT, KEPT_INPUT_CHANGED, NEW, REMOVED, LayerRow, WeightReport, status_of

__all__ = ["foretell", "foretell_same_shapes", "unchanged_report"]


def foretell(model, report, edit, names) -> WeightReport | None:
    """The report after one ``edit`` (a :class:`Replace`, :class:`Delete` or :class:`Insert` of a
    top-level layer called once) on ``model`` whose report is ``report``, or None when shapes alone
    cannot say it exactly.

    Exact when the edit's new layers (named ``names``) give the shape the old one gave: then no
    weight shape changes anywhere: the layer is removed, its new layers are new, the layers that
    read its output (directly or further on) see a changed input (``kept`` becomes
    ``kept_input_changed``; every other status stays), and the rest are as they were. A new shape,
    a nested model downstream or in the replacement gives None. New rows' parameter counts are
    those of their layers where already built, else 0.
    """
    replacing = isinstance(edit, (Replace, Delete))
    target = edit.target if replacing else getattr(edit, "after", None)
    if not isinstance(target, str) or "/" in target:
        return None
    try:
        layer = _targets.layer_named(model, target)
    except LayerNotFound:
        return None
    if _graph.is_graph_model(layer) or (_graph.is_input_layer(layer) and replacing):
        return None
    views = _graph.walk(model)
    own = [v for v in views if v.operation is layer]
    if len(own) != 1 or len(own[0].outputs) != 1 or len(own[0].input_tensors) > 1:
        return None
    try:
        row = report.row(target)
    except LayerNotFound:
        return None
    if row.status in ("removed", "new") or row.layer != target:
        return None
    out_shape = tuple(own[0].outputs[0].shape)
    if _graph.is_input_layer(layer):
        in_shape = out_shape
    else:
        in_shape = tuple(own[0].input_tensors[0].shape)
    parts = () if isinstance(edit, Delete) else (edit.replacement if isinstance(edit, Replace) else edit.layer)
    parts = list(parts) if isinstance(parts, (list, tuple)) else [parts]
    if any(not isinstance(p, keras.layers.Layer) or isinstance(p, keras.Model) for p in parts):
        return None
    shape = out_shape if not replacing else in_shape
    try:
        for part in parts:
            shape = fitting.output_shape_of(part, shape)
    except Exception:  # noqa: BLE001 -- the rebuild will say what is wrong; no prediction
        return None
    if tuple(shape) != out_shape:
        return None
    downstream = _downstream(model, own[0])
    if downstream is None:
        return None
    new_rows = [LayerRow(name, type(part).__name__, NEW, "added by the edit",
                         _graph.count_params(part) if part.built else 0, bool(part.trainable))
                for name, part in zip(names, parts)]
    rows, removed = [], []
    for r in report.rows:
        if r.layer == target and replacing:
            removed.append(LayerRow(r.layer, r.type, REMOVED, "", r.params, r.trainable, r.layer))
            rows.extend(new_rows)
            continue
        if r.layer in downstream and r.status == KEPT:  # as status_of says of an unfaithful copy
            r = dataclasses.replace(r, status=KEPT_INPUT_CHANGED,
                                    reason="weights copied, but its input changed: fine-tune it")
        rows.append(r)
        if r.layer == target:  # an insert: its layers follow the one it goes after
            rows.extend(new_rows)
    return WeightReport(rows + removed)


def foretell_same_shapes(report, old, new, input_shape, names) -> WeightReport | None:
    """The report when the edit ``old`` (a replace or insert) becomes ``new`` with other
    parameters for the same type: its layers (named ``names``) keep their names and give the
    shape they gave for ``input_shape``, so every status of ``report`` stays; the new layers'
    parameter counts are theirs. None when the shapes differ or cannot be worked out."""
    def parts(edit):
        made = edit.replacement if isinstance(edit, Replace) else getattr(edit, "layer", None)
        made = list(made) if isinstance(made, (list, tuple)) else [made]
        return made if all(isinstance(p, keras.layers.Layer) and not isinstance(p, keras.Model)
                           for p in made) else None

    def shape_after(made):
        shape = tuple(input_shape)
        for part in made:
            shape = fitting.output_shape_of(part, shape)
        return tuple(shape)

    old_parts, new_parts = parts(old), parts(new)
    if old_parts is None or new_parts is None or len(old_parts) != len(new_parts) or input_shape is None:
        return None
    try:
        if shape_after(old_parts) != shape_after(new_parts):
            return None
    except Exception:  # noqa: BLE001 -- the rebuild will say what is wrong; no prediction
        return None
    params = {name: _graph.count_params(part) if part.built else 0 for name, part in zip(names, new_parts)}
    return WeightReport([dataclasses.replace(r, params=params[r.layer]) if r.layer in params else r
                         for r in report.rows])


def _downstream(model, start) -> set | None:
    """Names of the layers whose calls read ``start``'s output, directly or further on; None
    when a nested model is among them (its rows would need its own walk)."""
    readers = _graph.graph_index(model).downstream(start)
    if any(_graph.is_graph_model(view.operation) for view in readers):
        return None
    return {view.operation.name for view in readers}


def unchanged_report(infos, aliases=None) -> WeightReport:
    """The report of 'no edit yet': every layer as it is, its status derived like any other; a
    layer reached by several paths has one row, at its first path (``aliases``: the others)."""
    rows = []
    aliases = dict(aliases or {})
    for i in infos:
        if i.path in aliases:
            continue
        status, reason = status_of(Lineage(i.path), has_weights=bool(i.params), container=i.is_container)
        rows.append(LayerRow(i.path, i.type, status, reason, i.params, i.trainable, i.path, i.is_container))
    return WeightReport(rows, aliases)
