"""Carry out edits: rebuild a model through its functional graph, copying every weight that fits.

The walk mirrors Keras's own ``Function._run_through_graph``: nodes in depth order, each call
replayed on new tensors. It is written out here (rather than passed as hooks to
``keras.models.clone_model``) because an edit is attached to one *call* of a layer, and the
report needs to know, per call, whether it still sees exactly the inputs it saw before.

New layers are built inside :func:`kerasnb._graph.deferred_variables`, so kept layers receive a
copy of their old values directly instead of first drawing random ones (that is where
``clone_model`` + ``set_weights`` spends about half of its time).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from . import _graph, _targets
from .edits import Configure, Delete, Insert, Prune, Replace, SetTrainable
from .errors import (
    AmbiguousTarget,
    IncompatibleShape,
    InputLayerEdit,
    InvalidEdit,
    LayerNotFound,
    NameClash,
    SurgeryError,
    UnsupportedLayer,
    first_line,
    suggest,
)
from .report import (
    KEPT,
    KEPT_INPUT_CHANGED,
    NEW,
    NO_WEIGHTS,
    PRUNED,
    REINITIALIZED,
    REMOVED,
    LayerRow,
    WeightReport,
)


@dataclass(frozen=True)
class SurgeryResult:
    """What an operation returns: the new model, the weight report and the edits applied."""

    model: Any
    report: WeightReport
    edits: tuple
    notes: tuple = ()

    def _repr_html_(self) -> str:
        # Notes quote layer names, which come from model files: escape them like the report does.
        notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in self.notes)
        return self.report._repr_html_() + (f"<ul>{notes}</ul>" if notes else "")

    def __repr__(self) -> str:
        return f"SurgeryResult(model={self.model.name!r}, {len(self.edits)} edit(s))\n{self.report!r}"


# ----------------------------------------------------------------------------- public API


def replace(model, target, replacement) -> SurgeryResult:
    """Put ``replacement`` (layer, list of layers, model or callable) in place of ``target``."""
    return apply(model, [Replace(target, replacement)])


def insert(model, layer, *, after=None, before=None) -> SurgeryResult:
    """Add ``layer`` right after or right before ``target``."""
    return apply(model, [Insert(layer, after=after, before=before)])


def delete(model, target) -> SurgeryResult:
    """Remove ``target``; its single input flows on to its consumers."""
    return apply(model, [Delete(target)])


def configure(model, target, **changes) -> SurgeryResult:
    """Rebuild ``target`` from its config with ``changes``; its weights are kept if they still fit."""
    return apply(model, [Configure(target, changes)])


def set_trainable(model, targets, trainable: bool = False) -> SurgeryResult:
    """Freeze (``False``) or unfreeze the target layers."""
    return apply(model, [SetTrainable(targets, trainable)])


def apply(model, edits) -> SurgeryResult:
    """Apply several edits in as few rebuilds as possible; the report compares with ``model``.

    Edits are resolved in order. Consecutive edits whose targets all exist in the current graph
    share one rebuild; an edit that names a layer made by an earlier edit starts a new one.
    """
    if isinstance(edits, _EDIT_TYPES):
        edits = (edits,)
    elif isinstance(edits, (str, bytes, dict)) or not isinstance(edits, Iterable):
        raise InvalidEdit(
            "apply() takes an edit or a list of edits: kerasnb.Replace, Insert, Delete, Configure, SetTrainable "
            f"or Prune, e.g. apply(model, [kerasnb.Delete('dense_1')]). Received: {edits!r} of type {type(edits).__name__}"
        )
    edits = tuple(edits)
    for edit in edits:
        if not isinstance(edit, _EDIT_TYPES):
            raise InvalidEdit(
                "apply() takes a list of kerasnb.Replace, Insert, Delete, Configure, SetTrainable or Prune. "
                f"Received: {edit!r}"
            )
    _graph.functional(model)  # clear error for unbuilt / subclassed models
    lineage = {path: _Lineage(path) for path in _all_paths(model)}
    current = model
    pass_notes: list[str] = []
    batch: _Plan | None = None  # edits planned on `current`, not yet rebuilt
    for edit in edits:
        try:
            candidate = batch or _Plan()
            _plan_edit(current, edit, candidate)
        except (LayerNotFound, _Conflict):
            if batch is None:
                raise
            # The edit needs the result of the batch so far (or clashes with it): rebuild first.
            current, lineage = _run_pass(current, batch, lineage, pass_notes)
            candidate = _Plan()
            _plan_edit(current, edit, candidate)
        batch = candidate
    if batch is not None or current is model:
        current, lineage = _run_pass(current, batch or _Plan(), lineage, pass_notes)
    notes = pass_notes + _recompile(model, current)
    report = _build_report(model, current, lineage)
    return SurgeryResult(current, report, edits, tuple(notes))


_EDIT_TYPES = (Replace, Insert, Delete, Configure, SetTrainable, Prune)


# ----------------------------------------------------------------------------- planning


class _Conflict(SurgeryError):
    """Two edits of one batch touch the same call; the second starts a new rebuild."""


@dataclass
class _NodePlan:
    before: list = field(default_factory=list)
    action: tuple | None = None  # ("replace", block, edit) | ("delete", edit) | ("span", block, first_node, edit)
    after: list = field(default_factory=list)


@dataclass
class _Plan:
    """Everything to do inside one graph (a model or a nested model), keyed by Keras objects' ids."""

    nodes: dict = field(default_factory=dict)  # id(node) -> _NodePlan
    skip: set = field(default_factory=set)  # id(node) inside a replaced span
    config: dict = field(default_factory=dict)  # id(layer) -> {key: value}
    trainable: dict = field(default_factory=dict)  # id(layer) -> bool
    after_input: dict = field(default_factory=dict)  # id(input layer) -> [blocks]
    nested: dict = field(default_factory=dict)  # id(nested model) -> _Plan
    prune: "_PrunePlan | None" = None  # channels removed by Prune edits (top-level graph only)

    def is_empty(self) -> bool:
        return not (self.nodes or self.skip or self.config or self.trainable or self.after_input or self.prune
                    or any(not p.is_empty() for p in self.nested.values()))

    def node(self, node) -> _NodePlan:
        return self.nodes.setdefault(id(node), _NodePlan())

    def changes_for(self, op) -> dict:
        """Config changes of ``op``: a Configure edit's and a prune's (fewer units / filters)."""
        changes = dict(self.config.get(id(op), {}))
        if self.prune is not None:
            changes.update(self.prune.changes.get(id(op), {}))
        return changes

    def notes(self) -> list[str]:
        return [self.prune.note] if self.prune is not None and self.prune.note else []


@dataclass
class _PrunePlan:
    """The Prune edits of one rebuild, planned together: their channel groups never overlap."""

    analysis: Any  # _channels.Analysis of the model before the rebuild
    removed: dict = field(default_factory=dict)  # group root -> channel indices removed
    changes: dict = field(default_factory=dict)  # id(layer) -> config changes
    slices: dict = field(default_factory=dict)  # id(layer) -> (kept input indices, kept output indices)
    note: str = ""


@dataclass(frozen=True)
class _Resolved:
    scope: Any  # the (nested) model that holds the layer
    plan: _Plan  # that scope's plan
    layer: Any
    views: tuple  # the chosen calls (NodeView); all calls when no call index was given
    span_first: Any = None  # NodeView of a span's first layer
    found: Any = None  # the _targets.Target


def _plan_edit(model, edit, plan: _Plan) -> None:
    if isinstance(edit, Prune):
        _plan_prune(model, edit, plan)
        return
    if isinstance(edit, SetTrainable):
        targets = edit.targets
        if not isinstance(targets, (list, set, tuple)) or _targets.is_call_target(targets):
            targets = [targets]
        for target in targets:
            res = _resolve(model, target, plan, edit)
            _refuse_if_already_edited(res, prune_too=False)
            if edit.trainable and res.scope is not model and not res.scope.trainable and \
                    res.plan is not plan and plan.trainable.get(id(res.scope)) is not True:
                raise InvalidEdit(
                    f"{target!r} is inside {res.scope.name!r}, which is frozen, and Keras ignores the flags of "
                    f"layers inside a frozen model. Unfreeze {res.scope.name!r} first, then freeze the layers "
                    f"inside it that should stay frozen. Received: SetTrainable({target!r}, True)"
                )
            res.plan.trainable[id(res.layer)] = bool(edit.trainable)
        return
    res = _resolve(model, edit.target, plan, edit)
    _refuse_if_already_edited(res)
    if isinstance(edit, Configure):
        if _graph.is_graph_model(res.layer):
            raise InvalidEdit(
                f"{res.layer.name!r} is a nested model; configure its layers ('{res.layer.name}/<layer>') or "
                f"freeze it with kerasnb.set_trainable. Received: Configure({edit.target!r}, {dict(edit.changes)!r})"
            )
        if _graph.is_input_layer(res.layer):
            raise InputLayerEdit(_input_msg(res.layer, edit))
        _check_config_keys(res.layer, edit, res.scope)
        if id(res.layer) in res.plan.config:
            raise _Conflict(f"{res.layer.name} configured twice")
        res.plan.config[id(res.layer)] = dict(edit.changes)
        return
    if isinstance(edit, Insert) and edit.after is not None and _graph.is_input_layer(res.layer):
        res.plan.after_input.setdefault(id(res.layer), []).append(_Block(edit.layer, edit))
        return
    if _graph.is_input_layer(res.layer):
        raise InputLayerEdit(_input_msg(res.layer, edit))
    view = _single_call(res, edit)
    node_plan = res.plan.node(view.node)
    if isinstance(edit, Insert):
        if edit.before is not None:
            if len(view.input_tensors) != 1:
                raise InvalidEdit(
                    f"Cannot insert before {res.layer.name!r}: it has {len(view.input_tensors)} inputs, so 'before' "
                    f"is ambiguous. Insert after one of its inputs instead: {_input_names(view)}. Received: before={edit.before!r}"
                )
            node_plan.before.append(_Block(edit.layer, edit))
        else:
            node_plan.after.append(_Block(edit.layer, edit))
        return
    if node_plan.action is not None or id(view.node) in res.plan.skip:
        raise _Conflict(f"{res.layer.name} edited twice")
    if isinstance(edit, Delete):
        if len(view.outputs) != 1:
            raise InvalidEdit(
                f"Cannot delete {res.layer.name!r} ({type(res.layer).__name__}): it has {len(view.outputs)} outputs, "
                "and one input cannot stand in for all of them. Replace it with a block that gives as many outputs. "
                f"Received: target={edit.target!r}"
            )
        if len(view.input_tensors) != 1:
            raise InvalidEdit(
                f"Cannot delete {res.layer.name!r} ({type(res.layer).__name__}): it takes {len(view.input_tensors)} "
                f"inputs ({_input_names(view)}), so there is no single input to pass on to its consumers. "
                "Replace it with a layer that merges them instead, e.g. "
                f"kerasnb.replace(model, {res.layer.name!r}, keras.layers.Add()). Received: target={edit.target!r}"
            )
        node_plan.action = ("delete", edit)
        return
    # Replace
    if res.span_first is not None:
        first = res.span_first
        chain = _span_nodes(res.scope, first, view, edit)
        for inner in chain[:-1]:
            if id(inner.node) in res.plan.nodes or id(inner.node) in res.plan.skip:
                raise _Conflict("span overlaps another edit")
            res.plan.skip.add(id(inner.node))
        node_plan.action = ("span", _Block(edit.replacement, edit), first.node, edit)
    else:
        node_plan.action = ("replace", _Block(edit.replacement, edit), edit)




def _plan_prune(model, edit: Prune, plan: _Plan) -> None:
    """Plan the channels a Prune removes, joined with the other prunes of this rebuild.

    The channel analysis reads the model before the rebuild, so a prune that touches a layer
    another edit of this batch changes (or that fails while other edits are pending) waits for
    the next rebuild, which sees their result.
    """
    from . import _channels, _slicing

    prune = plan.prune
    analysis = prune.analysis if prune is not None else _channels.analyse(model)
    others_pending = bool(plan.nodes or plan.skip or plan.config or plan.after_input
                          or any(not p.is_empty() for p in plan.nested.values()))
    try:
        _, removed, _ = _slicing.choose(model, edit.target, edit.channels, edit.keep, edit.by, True, analysis)
    except SurgeryError:
        if others_pending:
            raise _Conflict("decide on the model the pending edits make") from None
        raise
    done = prune.removed if prune is not None else {}
    if any(root in done for root in removed):
        raise _Conflict("a group pruned twice in one rebuild")
    combined = {**done, **removed}
    by_name, slices = _slicing.plan(analysis, combined)
    touched_ids = {id(analysis.layers[name]) for name in set(by_name) | set(slices)}
    for view in _graph.walk(model):
        planned = plan.nodes.get(id(view.node))
        busy = id(view.node) in plan.skip or (planned is not None and (planned.action or planned.before or planned.after))
        if id(view.operation) in touched_ids and (busy or id(view.operation) in plan.config):
            raise _Conflict(f"{view.name} is edited in this batch and sliced by the prune")
    new = _PrunePlan(analysis, combined)
    new.changes = {id(analysis.layers[name]): c for name, c in by_name.items()}
    new.slices = {id(analysis.layers[name]): kept for name, kept in slices.items()}
    new.note = _slicing.describe(analysis, combined) if combined else ""
    plan.prune = new


def _refuse_if_already_edited(res: _Resolved, prune_too: bool = True) -> None:
    """An edit naming a call this batch already replaces or deletes applies to the rebuilt model.

    So does an edit of a layer that a prune in this batch slices (it is planned on the old widths).
    """
    if prune_too and res.plan.prune is not None and (
            id(res.layer) in res.plan.prune.changes or id(res.layer) in res.plan.prune.slices):
        raise _Conflict(f"{res.layer.name} is sliced by a prune in this batch")
    views = list(res.views) + ([res.span_first] if res.span_first is not None else [])
    for view in views:
        node_plan = res.plan.nodes.get(id(view.node))
        if (node_plan is not None and node_plan.action is not None) or id(view.node) in res.plan.skip:
            raise _Conflict(f"{view.name} already replaced in this batch")


def _resolve(model, target, plan: _Plan, edit) -> _Resolved:
    """Find the layer (and calls) a target names, and the plan of the (nested) model holding it."""
    found = _targets.resolve(model, target, allow_span=isinstance(edit, Replace), what=type(edit).__name__)
    sub_plan = plan
    for scope in found.scopes[1:]:
        sub_plan = sub_plan.nested.setdefault(id(scope), _Plan())
    return _Resolved(found.scope, sub_plan, found.layer, found.calls, found.span_first, found)


def _single_call(res: _Resolved, edit):
    return res.found.single_call()


def _target_of(edit):
    return edit.target


def _input_names(view) -> str:
    names = []
    for t in view.input_tensors:
        op, _, _ = _graph.producer(t)
        names.append(op.name)
    return ", ".join(repr(n) for n in names)


def _input_msg(layer, edit) -> str:
    return (
        f"{layer.name!r} is an InputLayer: it can't be replaced, deleted or reconfigured, nor can anything be "
        "inserted before it. Insert after it instead (kerasnb.insert(model, layer, after="
        f"{layer.name!r})), or build a model with a different keras.Input. Received: {type(edit).__name__}(target={_target_of(edit)!r})"
    )


def _check_config_keys(layer, edit, scope) -> None:
    config = _graph.config_of(layer)
    unknown = [k for k in edit.changes if k not in config]
    if unknown:
        raise InvalidEdit(
            f"{type(layer).__name__} {layer.name!r} has no config option {', '.join(map(repr, unknown))}. "
            f"Options it has: {', '.join(sorted(config))}. Received: changes={dict(edit.changes)!r}"
        )
    if "name" in edit.changes:
        new_name = edit.changes["name"]
        taken = {l.name for l in _graph.layers_in_order(scope) if l is not layer}
        if not isinstance(new_name, str) or not new_name or "/" in new_name:
            raise InvalidEdit(
                "A layer's new name is a non-empty string without '/' (kerasnb uses '/' for paths into nested "
                f"models). Received: name={new_name!r} for {layer.name!r}"
            )
        if new_name in taken:
            free = next(f"{new_name}_{i}" for i in range(1, len(taken) + 2) if f"{new_name}_{i}" not in taken)
            raise NameClash(
                f"Cannot rename {layer.name!r} to {new_name!r}: model {scope.name!r} already has a layer named "
                f"{new_name!r}, and layer names must be unique. Pick a name no layer has, e.g. {free!r}, or rename "
                f"{new_name!r} in the same apply(). Received: Configure({edit.target!r}, {dict(edit.changes)!r})"
            )


def _span_nodes(scope, first, last, edit) -> list:
    """The calls from ``first`` to ``last`` along single-input links, checked to be a closed chain."""
    by_output = {}
    for view in _graph.walk(scope):
        for t in view.outputs:
            by_output[id(t)] = view
    consumers: dict[int, int] = {}
    for view in _graph.walk(scope):
        for t in view.input_tensors:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    out_ids = {id(t) for t in _graph.output_tensors(scope)}
    chain = [last]
    while chain[-1].node is not first.node:
        cur = chain[-1]
        if len(cur.input_tensors) != 1:
            raise InvalidEdit(
                f"{cur.name!r} in span {edit.target!r} has {len(cur.input_tensors)} inputs; a span must be a linear "
                f"chain from {first.name!r} to {last.name!r}. Received: target={edit.target!r}"
            )
        parent = by_output.get(id(cur.input_tensors[0]))
        if parent is None:
            raise InvalidEdit(
                f"{first.name!r} does not lead to {last.name!r} along a linear chain, so ({first.name!r}, {last.name!r}) "
                f"is not a span. Received: target={edit.target!r}"
            )
        chain.append(parent)
    chain.reverse()
    for view in chain[:-1]:
        for t in view.outputs:
            if consumers.get(id(t), 0) > 1 or id(t) in out_ids:
                raise InvalidEdit(
                    f"The output of {view.name!r}, inside span {edit.target!r}, is also used outside the span, so "
                    f"the span cannot be replaced as one piece. Received: target={edit.target!r}"
                )
    return chain


# ----------------------------------------------------------------------------- rebuilding


@dataclass
class _Block:
    """A replacement or inserted piece, as the user gave it."""

    spec: Any
    edit: Any


@dataclass
class _Record:
    """What one pass did to one layer of the new model."""

    prev_path: str | None
    weights: str  # "copied" | "reinit" | "new" | "none"
    reason: str = ""
    faithful: bool = True  # computes the same as prev_path did, on the same inputs
    config_changed: str = ""
    inner: tuple = ()  # for a rebuilt nested model: its layers' new ids


@dataclass
class _Lineage:
    """Where a layer of the current model comes from, relative to the original model."""

    original: str | None
    state: str = "original"  # "original" | "reinit" | "pruned" | "new"
    reason: str = ""
    faithful: bool = True
    config_changed: str = ""


class _Pass:
    """State of one rebuild of ``model`` (None for the copy of a block model a user brings in)."""

    def __init__(self, model=None):
        self.records: dict[int, _Record] = {}  # id(new layer) -> record
        self.layers: dict[int, Any] = {}  # id(new layer) -> new layer (keeps ids alive)
        self.copies: list = []  # (old layer, new layer) whose weights are copied if they fit
        self.clones: dict[int, Any] = {}  # id(old op) -> its one new op in this pass
        # every layer of the model being edited, nested ones too: a callable must not call them
        walked = list(_walk_layers(model)) if model is not None else []
        self.source_layers: list = [layer for _, layer in walked]
        self.old_paths: dict[int, str] = {id(layer): path for path, layer in walked}  # one path per layer
        self.pretrained: list = []  # (user layer, new layer, edit) brought in with their own weights
        # id(new layer) -> (the layer its trainable flags come from, the flag an edit sets or None)
        self.sources: dict[int, tuple] = {}
        self.slices: list = []  # (old layer, new layer, (kept input indices, kept output indices))
        self.notes: list[str] = []

    def record(self, layer, rec: _Record):
        self.records[id(layer)] = rec
        self.layers[id(layer)] = layer


def _run_pass(model, plan: _Plan, lineage: dict, notes: list):
    state = _Pass(model)
    try:
        with _graph.deferred_variables():
            new_model = _rebuild(model, plan, state, prefix="")
            _transfer_weights(state)
    except (ValueError, TypeError) as error:
        if isinstance(error, SurgeryError) or not _graph.is_deferred_variable_error(error):
            raise
        # Some layer creates variables outside build(); rebuild the slow way.
        state = _Pass(model)
        new_model = _rebuild(model, plan, state, prefix="")
        _transfer_weights(state)
    _apply_trainable(model, new_model, state)
    notes.extend(n for n in plan.notes() + state.notes if n not in notes)
    return new_model, _compose(new_model, state, lineage)


def _apply_trainable(old_model, new_model, state: _Pass) -> None:
    """Trainable flags as the original had them, sub-layers included, or as an edit set them.

    Done once every layer is built: a layer that makes sub-layers in build() (attention, a
    keras-hub block) would otherwise come back with trainable sub-layers under a frozen parent.
    """
    if new_model.trainable != old_model.trainable:
        new_model.trainable = old_model.trainable
    _flags_inside(new_model, state, inherited=None)


def _flags_inside(container, state: _Pass, inherited) -> None:
    for layer in _graph.layers_in_order(container):
        source = state.sources.get(id(layer))
        if source is None:
            continue  # made by a callable: it follows its container
        old, explicit = source
        value = explicit if explicit is not None else inherited
        if _graph.is_graph_model(layer):
            wanted = old.trainable if value is None else value
            if layer.trainable != wanted:
                layer.trainable = wanted
            _flags_inside(layer, state, value)
        elif value is not None:
            if layer.trainable != value:
                layer.trainable = value
        else:
            _copy_flags(old, layer)


def _copy_flags(old, new) -> None:
    """Each sub-layer's flag as in ``old`` (parents first: setting a parent's flag sets its children's)."""
    olds, news = _graph.sublayers(old), _graph.sublayers(new)
    if len(olds) != len(news):  # a config change made other sub-layers: the layer's own flag only
        olds, news = olds[:1], news[:1]
    for o, n in zip(olds, news):
        if n.trainable != o.trainable:
            n.trainable = o.trainable


def _rebuild(model, plan: _Plan, state: _Pass, prefix: str, name: str | None = None):
    """A new functional model computing ``model`` with ``plan`` applied; fills ``state``."""
    fn = _graph.functional(model)
    names = _NameBook(_graph.layers_in_order(model))
    tensor_dict: dict[int, Any] = {}
    faithful: dict[int, int] = {}  # id(new tensor) -> id(old tensor) it stands for exactly
    new_inputs = []
    for old_t, old_layer in zip(_graph.input_tensors(model), _graph.input_layers(model)):
        new_t = keras.Input(batch_shape=old_t.shape, dtype=old_t.dtype, sparse=getattr(old_t, "sparse", False),
                            name=old_layer.name)
        new_inputs.append(new_t)
        new_layer = _graph.producer(new_t)[0]
        state.record(new_layer, _Record(state.old_paths.get(id(old_layer), prefix + old_layer.name), "none"))
        out = new_t
        faithful[id(new_t)] = id(old_t)
        for block in plan.after_input.get(id(old_layer), []):
            out = _call_block(block, (out,), state, names, old_layer, prefix)
        tensor_dict[id(old_t)] = out

    clones = state.clones  # one clone per original op in the whole pass: layers tied across graphs stay tied
    called_here: set[int] = set()  # ids of the old ops called in this graph
    op_faithful: dict[int, bool] = {}  # every call of the op computes what it did before
    op_inputs_faithful: dict[int, bool] = {}  # every call of the op sees the inputs it saw before
    for view in _graph.replay_order(model):
        node, op = view.node, view.operation
        if id(node) in plan.skip:
            continue
        node_plan = plan.nodes.get(id(node))
        action = node_plan.action if node_plan else None
        if action is not None and action[0] == "span":
            # The span's inner calls were skipped: feed what fed its first layer.
            x = tensor_dict[id(action[2].input_tensors[0])]
            outputs = _call_block(action[1], (x,), state, names, op, prefix)
            _store_outputs(view, outputs, tensor_dict, faithful, False, node_plan, state, names, prefix)
            continue
        inputs_faithful = all(faithful.get(id(tensor_dict[id(t)])) == id(t) for t in view.input_tensors)
        local = tensor_dict
        if node_plan and node_plan.before:
            x = tensor_dict[id(view.input_tensors[0])]
            for block in node_plan.before:
                x = _call_block(block, (x,), state, names, op, prefix)
            local = dict(tensor_dict)
            local[id(view.input_tensors[0])] = x
            inputs_faithful = False
        args, kwargs = view.fill_in(local)
        if action is None:
            new_op = clones.get(id(op))
            if new_op is None:
                new_op = _clone_op(op, plan, state, prefix)
                clones[id(op)] = new_op
            called_here.add(id(op))
            unchanged_op = not _computation_changes(op, plan.changes_for(op)) and not (
                _graph.is_graph_model(op) and not plan.nested.get(id(op), _Plan()).is_empty())
            node_faithful = inputs_faithful and unchanged_op
            outputs = _call_checked(new_op, args, kwargs, view, inputs_faithful, local, faithful)
            op_faithful[id(op)] = op_faithful.get(id(op), True) and node_faithful
            op_inputs_faithful[id(op)] = op_inputs_faithful.get(id(op), True) and inputs_faithful
        elif action[0] == "delete":
            outputs = local[id(view.input_tensors[0])]
            node_faithful = False
        else:
            outputs = _call_block(action[1], args, state, names, op, prefix, kwargs)
            node_faithful = False
        _store_outputs(view, outputs, tensor_dict, faithful, node_faithful, node_plan, state, names, prefix)

    for old_id in called_here:
        new_op = clones[old_id]
        rec = state.records[id(new_op)]
        rec.faithful = rec.faithful and op_faithful.get(old_id, False)
        if rec.inner and not op_inputs_faithful.get(old_id, False):
            # A nested model fed changed inputs changes the inputs of every layer inside it.
            for key in rec.inner:
                state.records[key].faithful = False

    outputs = [tensor_dict[id(t)] for t in _graph.output_tensors(model)]
    new_inputs_struct = _graph.pack_inputs(model, new_inputs)
    new_outputs_struct = _graph.pack_outputs(model, outputs)
    try:
        new_model = keras.Model(new_inputs_struct, new_outputs_struct, name=name or model.name)
        if isinstance(model, keras.Sequential):
            new_model = _as_sequential(new_model, state) or new_model
    except ValueError as error:
        if "unique" in str(error):
            raise NameClash(f"The edited model would have two layers with one name: {error}") from None
        raise
    return new_model


def _as_sequential(functional, state: _Pass):
    """The same chain of layers as a keras.Sequential, or None when the edit made it branch.

    A Sequential stays a Sequential (its class, its config, and how the panel labels it) as long
    as the edited graph is still one chain of layers, each called once on the previous output.
    """
    views = _graph.walk(functional)
    if len(_graph.input_tensors(functional)) != 1 or len(_graph.output_tensors(functional)) != 1:
        return None
    previous = _graph.input_tensors(functional)[0]
    for view in views:
        if (not isinstance(view.operation, keras.layers.Layer) or view.n_calls != 1 or view.kwargs_tensors()
                or len(view.input_tensors) != 1 or view.input_tensors[0] is not previous or len(view.outputs) != 1):
            return None
        previous = view.outputs[0]
    if previous is not _graph.output_tensors(functional)[0]:
        return None
    source = _graph.input_tensors(functional)[0]
    walked_input = _graph.input_layers(functional)[0]
    start = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=walked_input.name)
    state.record(_graph.producer(start)[0], state.records[id(walked_input)])
    layers = [view.operation for view in views]
    # The functional graph is thrown away: its calls go, so that `layer.output` and the like
    # read the Sequential's own graph. Keras calls each layer again on `start`; they are
    # built already, so no variable is made twice.
    for layer in layers:
        _graph.drop_all_calls(layer)
    return keras.Sequential([start] + layers, name=functional.name)


def _store_outputs(view, outputs, tensor_dict, faithful, node_faithful, node_plan, state, names, prefix):
    """Map the old call's outputs to the new ones, then run any inserts placed after the call."""
    flat = keras.tree.flatten(outputs)
    if len(flat) != len(view.outputs):
        edit = node_plan.action[-1] if node_plan and node_plan.action else None
        raise IncompatibleShape(
            f"{view.name!r} had {len(view.outputs)} output(s) but its replacement gives {len(flat)}; its consumers "
            f"need the same number. Received: {edit!r}"
        )
    for old_t, new_t in zip(view.outputs, flat):
        if node_faithful:
            faithful[id(new_t)] = id(old_t)
        tensor_dict[id(old_t)] = new_t
    if node_plan and node_plan.after:
        if len(flat) != 1:
            raise InvalidEdit(
                f"Cannot insert after {view.name!r}: it has {len(flat)} outputs. Received: {node_plan.after[0].edit!r}"
            )
        y = flat[0]
        for block in node_plan.after:
            y = _call_block(block, (y,), state, names, view.operation, prefix)
        tensor_dict[id(view.outputs[0])] = y


def _call_checked(new_op, args, kwargs, view, inputs_faithful, tensor_dict, faithful):
    try:
        return new_op(*args, **kwargs)
    except SurgeryError:
        raise
    except Exception as error:  # a layer refusing its new input: say which and why
        if inputs_faithful:
            raise
        changed = []
        for old_t in view.input_tensors:
            new_t = tensor_dict[id(old_t)]
            if faithful.get(id(new_t)) != id(old_t):
                changed.append((_graph.producer(old_t)[0].name, tuple(old_t.shape), tuple(new_t.shape)))
        what = "; ".join(f"from {name!r} it took {was} and now receives {now}" for name, was, now in changed)
        wants = " and ".join(str(was) for _, was, _ in changed)
        raise IncompatibleShape(
            f"After the edit, {view.name!r} ({type(view.operation).__name__}) cannot take its new input: {what}. "
            f"Keras says: {first_line(error)} What would work: an edit whose output keeps shape {wants}, "
            f"or also replace {view.name!r}. Received: an edit upstream of {view.name!r}."
        ) from None


def _fmt_shapes(shapes) -> str:
    return ", ".join(str(s) for s in shapes)


class _NameBook:
    """Layer names used in one graph, to give new layers names that clash with none."""

    def __init__(self, layers):
        self.used = {layer.name for layer in layers}

    def unique(self, name: str) -> str:
        if name not in self.used:
            self.used.add(name)
            return name
        base, i = name, 1
        while f"{base}_{i}" in self.used:
            i += 1
        self.used.add(f"{base}_{i}")
        return f"{base}_{i}"


def _clone_op(op, plan: _Plan, state: _Pass, prefix: str):
    """A fresh copy of an existing operation: same config (plus changes), new variables."""
    path = prefix + op.name
    if _graph.is_graph_model(op):
        sub_plan = plan.nested.get(id(op), _Plan())
        before = set(state.records)
        new_op = _rebuild(op, sub_plan, state, prefix=path + "/")
        inner = tuple(k for k in state.records if k not in before)
        # "Unfreeze the backbone" means every layer in it: _apply_trainable hands the flag down.
        state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
        state.record(new_op, _Record(state.old_paths.get(id(op), path), "none", inner=inner))
        return new_op
    if not isinstance(op, keras.layers.Layer):
        # A raw keras.ops call in the graph: stateless, so a copy from its config is exact. Never
        # the user's own op object: calling it would add a call to their model.
        try:
            new_op = type(op).from_config(op.get_config())
        except Exception:
            new_op = _graph.fresh_copy(op)
        state.record(new_op, _Record(path, "none"))
        return new_op
    config = _graph.config_of(op, f"Layer {path!r}")
    changes = plan.changes_for(op)
    config.update(changes)
    if "trainable" in config and id(op) in plan.trainable:
        config["trainable"] = plan.trainable[id(op)]
    try:
        new_op = type(op).from_config(config)
    except Exception as error:
        if changes:
            raise InvalidEdit(
                f"{type(op).__name__} {op.name!r} cannot be rebuilt with {changes!r}: {first_line(error)} "
                f"Received: changes={changes!r}"
            ) from None
        raise UnsupportedLayer(
            f"Layer {op.name!r} of type {type(op).__name__} cannot be recreated from its config "
            f"({first_line(error)}). Custom layers need get_config() and registration with "
            f"@keras.saving.register_keras_serializable(). Every edit rebuilds the whole model, so this layer "
            f"blocks edits anywhere in it. Received: layer={op.name!r}"
        ) from None
    state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
    kept = plan.prune.slices.get(id(op)) if plan.prune is not None else None
    if kept is not None:
        # The weight rule of pruning: the surviving slices of the old values (see _transfer_weights).
        state.record(new_op, _Record(state.old_paths.get(id(op), path), "pruned", faithful=False))
        state.slices.append((op, new_op, kept))
        return new_op
    described = _describe_changes(op, changes)
    state.record(new_op, _Record(state.old_paths.get(id(op), path), "copied", config_changed=described))
    state.copies.append((op, new_op))
    return new_op


def _computation_changes(op, changes) -> dict:
    """The changes that make the layer compute something else (a new name or flag does not)."""
    if not changes:
        return {}
    old = _graph.config_of(op)
    return {k: v for k, v in changes.items() if k not in ("name", "trainable") and old.get(k) != v}


def _describe_changes(op, changes) -> str:
    effective = _computation_changes(op, changes)
    if not effective:
        return ""
    old = _graph.config_of(op)
    parts = [f"{k}: {_short(old.get(k))} -> {_short(v)}" for k, v in effective.items()]
    return "config changed (" + ", ".join(parts) + ")"


def _short(value) -> str:
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = value.get("config", {}).get("name", value)  # a dtype policy reads as its name
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


def _call_block(block: _Block, args, state: _Pass, names: _NameBook, anchor, prefix: str, kwargs=None):
    """Call a replacement / inserted piece with the call the replaced layer received.

    The positional arguments go to the first piece; each keyword argument (a mask, ``query=``,
    ``training=``) to the first piece that takes it. Records every layer it adds as new.
    """
    spec = block.spec
    pieces = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not pieces:
        raise InvalidEdit(f"An empty list is not a replacement; use kerasnb.delete to remove a layer. Received: {block.edit!r}")
    given = _share_keywords(pieces, kwargs or {}, block, anchor, state)
    x = args
    for piece, piece_kwargs in zip(pieces, given):
        x = _call_piece(piece, x, state, names, block, anchor, prefix, piece_kwargs)
        x = (x,)
    return x[0]


def _share_keywords(pieces, kwargs: dict, block: _Block, anchor, state: _Pass) -> list[dict]:
    """The keyword arguments each piece gets: each to the first piece whose call takes it.

    A keyword tensor that no piece takes is refused (dropping a mask silently would change what
    the model computes); a non-tensor setting no piece takes (``use_causal_mask=True``) is left
    out and said in the result's notes. ``None`` and ``training`` need no taker.
    """
    given: list[dict] = [{} for _ in pieces]
    left_out = []
    for key, value in kwargs.items():
        taker = next((i for i, piece in enumerate(pieces) if _takes_keyword(piece, key)), None)
        if taker is not None:
            given[taker][key] = value
            continue
        if any(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten(value)):
            kinds = ", ".join(_piece_name(p) for p in pieces)
            raise InvalidEdit(
                f"{anchor.name!r} is called with the tensor {key}=..., and its replacement ({kinds}) has no call "
                f"argument {key!r} to receive it; dropping it would change what the model computes. What would "
                f"work: a replacement whose call() takes {key}= (or **kwargs), or a callable "
                f"`lambda x, {key}=None, **kwargs: ...` that uses it. Received: {block.edit!r}"
            )
        if value is not None and key != "training":
            left_out.append(f"{key}={_short(value)}")
    if left_out:
        state.notes.append(
            f"{anchor.name!r} was called with {', '.join(left_out)}; its replacement takes no such argument, "
            "so it was not passed on."
        )
    return given


def _takes_keyword(piece, key: str) -> bool:
    import inspect

    if isinstance(piece, keras.Model):
        return key == "training"  # a model's call takes its inputs and training only
    target = type(piece).call if isinstance(piece, keras.layers.Layer) else piece
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return key in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _piece_name(piece) -> str:
    if isinstance(piece, keras.layers.Layer):
        return f"{type(piece).__name__} {piece.name!r}"
    return f"callable {getattr(piece, '__name__', type(piece).__name__)!r}"


def _call_piece(piece, args, state: _Pass, names: _NameBook, block: _Block, anchor, prefix: str, kwargs=None):
    kwargs = kwargs or {}
    made_by = f"added by {type(block.edit).__name__.lower()} at {anchor.name!r}"
    if isinstance(piece, keras.Model) and _graph.is_graph_model(piece):
        sub = _Pass()
        copy = _rebuild(piece, _Plan(), sub, prefix="", name=names.unique(piece.name))
        for new_id, layer in sub.layers.items():
            state.layers[new_id] = layer
            has_weights = bool(layer.weights) and not _graph.is_graph_model(layer)
            state.records[new_id] = _Record(None, "new", f"{made_by}; brings its own weights from {piece.name!r}"
                                            if has_weights else made_by)
        state.copies.extend(sub.copies)
        state.sources.update(sub.sources)
        state.sources[id(copy)] = (piece, None)
        state.record(copy, _Record(None, "new", f"{made_by}; brings its own weights from model {piece.name!r}"))
        return _call_new(copy, args, block, kwargs)
    if isinstance(piece, keras.layers.Layer):
        config = _graph.config_of(piece, f"The replacement {piece.name!r}")
        config["name"] = names.unique(piece.name)
        try:
            layer = type(piece).from_config(config)
        except Exception as error:
            raise UnsupportedLayer(
                f"The replacement {piece.name!r} ({type(piece).__name__}) cannot be recreated from its config: "
                f"{first_line(error)}. Received: {block.edit!r}"
            ) from None
        state.sources[id(layer)] = (piece, None)  # the flags the user gave it, sub-layers included
        out = _call_new(layer, args, block, kwargs)
        if piece.weights:
            state.pretrained.append((piece, layer, block.edit))
            state.record(layer, _Record(None, "new", f"{made_by}; brings its own weights"))
        else:
            state.record(layer, _Record(None, "new", made_by))
        return out
    if callable(piece):
        calls_before = {id(layer): _graph.call_count(layer) for layer in state.source_layers}
        failure = None
        try:
            out = piece(*args, **kwargs)
        except SurgeryError:
            raise
        except Exception as error:
            failure = error
        finally:
            # Undo any call the callable made to the user's layers, whatever happened (an error,
            # KeyboardInterrupt): the user's model must end up as it was.
            reused = [layer for layer in state.source_layers if _graph.call_count(layer) > calls_before[id(layer)]]
            for layer in reused:
                _graph.forget_calls(layer, calls_before[id(layer)])
        if reused:
            raise InvalidEdit(
                f"The callable {getattr(piece, '__name__', piece)!r} calls {reused[0].name!r}, a layer of the model "
                "being edited. That would add calls to your model and share its weights; make new layers inside "
                f"the callable instead (e.g. keras.layers.Dense(...)(x)). Received: {block.edit!r}"
            )
        if failure is not None:
            raise IncompatibleShape(
                f"The callable {getattr(piece, '__name__', piece)!r} failed on input of shape "
                f"{_fmt_shapes(tuple(t.shape) for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor))}: "
                f"{first_line(failure)} Received: {block.edit!r}"
            )
        _check_callable_output(piece, out, block)
        return out
    raise InvalidEdit(
        "A replacement is a keras Layer, a list of layers, a keras.Model, or a callable tensor -> tensor. "
        f"Received: {piece!r} of type {type(piece).__name__}"
    )


def _check_callable_output(piece, out, block) -> None:
    """A callable replacement must hand back the tensor(s) it built, not None or a number."""
    flat = keras.tree.flatten(out) if out is not None else []
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        raise InvalidEdit(
            f"The callable {getattr(piece, '__name__', piece)!r} returned {_short(out)} of type {type(out).__name__}; "
            "a callable replacement must return the Keras tensor(s) it computes from its input, e.g. "
            "lambda x: keras.layers.Dense(8)(x). Did it forget a return statement? "
            f"Received: {block.edit!r}"
        )


def _call_new(layer, args, block, kwargs=None):
    try:
        return layer(*args, **(kwargs or {}))
    except Exception as error:
        got = _fmt_shapes(tuple(t.shape) for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor))
        raise IncompatibleShape(
            f"{type(layer).__name__} {layer.name!r} cannot take an input of shape {got}: {first_line(error)} "
            f"Received: {block.edit!r}"
        ) from None


def _transfer_weights(state: _Pass) -> None:
    """Copy every old variable whose shape still fits; record why the others do not."""
    for old, new in state.copies:
        rec = state.records[id(new)]
        old_vars, new_vars = list(old.weights), list(new.weights)
        if not old_vars and not new_vars:
            rec.weights = "none"
            continue
        mismatch = _mismatches(old_vars, new_vars)
        if mismatch:
            rec.weights = "reinit"
            rec.reason = mismatch
            rec.faithful = False
            continue
        casts = _dtype_casts(old, old_vars, new_vars)
        for ov, nv in zip(old_vars, new_vars):
            _graph.set_initial_value(nv, _copy_value(ov, nv.dtype))
        if casts:
            rec.config_changed = "; ".join(s for s in (rec.config_changed, casts) if s)
    for old, new, (k_in, k_out) in state.slices:
        from . import _slicing

        values, reason = _slicing.sliced_values(old, k_in, k_out)
        covered = {id(getattr(new, attr)) for attr in values}
        missed = [v.path for v in new.weights if id(v) not in covered]
        if missed:  # the channel analysis refuses such layers; never leave a variable random
            raise AssertionError(f"{old.name}: no slicing rule for {missed}")
        for attr, value in values.items():
            variable = getattr(new, attr)
            if tuple(value.shape) != tuple(variable.shape):  # a bug in the analysis, never the user's fault
                raise AssertionError(f"{old.name}.{attr}: sliced {tuple(value.shape)}, the new layer has "
                                     f"{tuple(variable.shape)}")
            _graph.set_initial_value(variable, keras.ops.cast(value, variable.dtype))
        state.records[id(new)].reason = reason
    for piece, new, edit in state.pretrained:
        rec = state.records[id(new)]
        mismatch = _mismatches(list(piece.weights), list(new.weights))
        if mismatch:
            rec.reason = f"{rec.reason.split(';')[0]}; its own weights did not fit ({mismatch}), so it starts fresh"
            continue
        casts = _dtype_casts(piece, piece.weights, new.weights)
        for ov, nv in zip(piece.weights, new.weights):
            _graph.set_initial_value(nv, _copy_value(ov, nv.dtype))
        if casts:
            rec.reason = f"{rec.reason}; {casts}"


def _mismatches(old_vars, new_vars) -> str:
    if len(old_vars) != len(new_vars):
        before = ", ".join(f"{_var_name(v)} {tuple(v.shape)}" for v in old_vars) or "none"
        after = ", ".join(f"{_var_name(v)} {tuple(v.shape)}" for v in new_vars) or "none"
        return f"variables changed: [{before}] -> [{after}]"
    parts = [
        f"{_var_name(ov)} {tuple(ov.shape)} -> {tuple(nv.shape)}"
        for ov, nv in zip(old_vars, new_vars)
        if tuple(ov.shape) != tuple(nv.shape)
    ]
    return ", ".join(parts)


def _var_name(variable) -> str:
    return variable.name.split("/")[-1]


def _copy_value(variable, dtype=None):
    # A copy on the backend's own device: the new model must share no storage with the user's
    # model (torch would otherwise wrap the same buffer); cheaper than a round trip through numpy.
    if dtype is not None and keras.backend.standardize_dtype(dtype) != keras.backend.standardize_dtype(variable.dtype):
        return keras.ops.cast(variable.value, dtype)  # a cast makes a new tensor already
    return keras.ops.copy(variable.value)


def _dtype_casts(layer, old_vars, new_vars) -> str:
    """'kernel, bias cast float32 -> float16' for variables whose dtype changed, or ''.

    A cast between float types keeps the trained values (rounded); anything else (float to
    int, int to float) would not mean the same numbers, so it is refused.
    """
    changed: dict = {}
    for ov, nv in zip(old_vars, new_vars):
        was, now = keras.backend.standardize_dtype(ov.dtype), keras.backend.standardize_dtype(nv.dtype)
        if was == now:
            continue
        if not (keras.backend.is_float_dtype(was) and keras.backend.is_float_dtype(now)):
            raise InvalidEdit(
                f"{type(layer).__name__} {layer.name!r}: its variable {_var_name(ov)!r} holds {was} values, which "
                f"cannot be carried over into a {now} variable without changing what they mean. Float dtypes "
                f"(float16, bfloat16, float32, float64) can be cast into one another. "
                f"Received: a change of {_var_name(ov)!r} from {was} to {now}"
            )
        changed.setdefault((was, now), []).append(_var_name(ov))
    return "; ".join(f"{', '.join(names)} cast {was} -> {now}" for (was, now), names in changed.items())


# ----------------------------------------------------------------------------- bookkeeping


def _all_paths(model) -> list[str]:
    return [path for path, _ in _walk_layers(model)]


def _walk_layers(model, prefix: str = "", seen: set | None = None):
    """(path, layer) for every layer of a model, nested ones right after their container.

    A layer reached by several paths (tied: called in a nested model and outside it, like a
    task model's output head that reuses the backbone's embedding) comes once, at its first path.
    """
    seen = set() if seen is None else seen
    for layer in _graph.layers_in_order(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = prefix + layer.name
        yield path, layer
        if _graph.is_graph_model(layer):
            yield from _walk_layers(layer, path + "/", seen)


def _layer_aliases(model, prefix: str = "", first: dict | None = None) -> dict:
    """``{other path: first path}`` for the layers that :func:`_walk_layers` gives only once."""
    first = {} if first is None else first
    aliases = {}
    for layer in _graph.layers_in_order(model):
        path = prefix + layer.name
        if id(layer) in first:
            if first[id(layer)] != path:
                aliases[path] = first[id(layer)]
            continue
        first[id(layer)] = path
        if _graph.is_graph_model(layer):
            aliases.update(_layer_aliases(layer, path + "/", first))
    return aliases


def _compose(new_model, state: _Pass, lineage: dict) -> dict:
    """Lineage of every layer of ``new_model`` relative to the original model."""
    out = {}
    for path, layer in _walk_layers(new_model):
        rec = state.records.get(id(layer))
        if rec is None:  # made inside a user's callable
            out[path] = _Lineage(None, "new", "added by a callable replacement", False)
            continue
        prev = lineage.get(rec.prev_path) if rec.prev_path is not None else None
        if prev is None or prev.original is None:
            reason = rec.reason or (prev.reason if prev else "")
            out[path] = _Lineage(None, "new", reason, False)
            continue
        if rec.weights == "reinit":
            state_, reason = "reinit", rec.reason
        elif rec.weights == "pruned" and prev.state in ("original", "pruned"):
            state_, reason = "pruned", rec.reason
        else:
            state_, reason = prev.state, prev.reason
        config_changed = "; ".join(s for s in (prev.config_changed, rec.config_changed) if s)
        out[path] = _Lineage(prev.original, state_, reason, prev.faithful and rec.faithful, config_changed)
    return out


def _build_report(original, new_model, lineage: dict) -> WeightReport:
    rows = []
    carried = set()
    original_layers = dict(_walk_layers(original))
    for path, layer in _walk_layers(new_model):
        lin = lineage[path]
        params = _graph.count_params(layer)
        trainable = bool(getattr(layer, "trainable", True))
        type_name = type(layer).__name__
        if lin.original is not None:
            carried.add(lin.original)
        container = _graph.is_graph_model(layer)
        if lin.original is None:
            status, reason = NEW, lin.reason
        elif container:
            status, reason = _container_status(path, lin, lineage)
        elif lin.state == "reinit":
            status, reason = REINITIALIZED, lin.reason
        elif lin.state == "pruned":
            status, reason = PRUNED, lin.reason
        elif not getattr(layer, "weights", None):
            status = NO_WEIGHTS
            reason = "" if lin.faithful else "its input changed"
        elif lin.faithful and not lin.config_changed:
            status, reason = KEPT, ""
        else:
            status = KEPT_INPUT_CHANGED
            reason = lin.config_changed or "weights copied, but its input changed: fine-tune it"
        rows.append(LayerRow(path, type_name, status, reason, params, trainable, lin.original or "", container))
    for path, layer in original_layers.items():
        if path not in carried:
            rows.append(LayerRow(path, type(layer).__name__, REMOVED, "", _graph.count_params(layer),
                                 bool(getattr(layer, "trainable", True)), path, _graph.is_graph_model(layer)))
    aliases = {**_layer_aliases(original), **_layer_aliases(new_model)}
    return WeightReport(rows, aliases=aliases)


def _container_status(path, lin: _Lineage, lineage: dict):
    inner = [l for p, l in lineage.items() if p.startswith(path + "/")]
    if all(l.original is not None and l.state == "original" and l.faithful and not l.config_changed for l in inner) and lin.faithful:
        return KEPT, ""
    if any(l.original is not None and l.state == "original" for l in inner):
        return KEPT_INPUT_CHANGED, "some layers inside changed or see changed inputs; see its rows"
    return REINITIALIZED, "none of its weights could be kept; see its rows"


def _recompile(original, new_model) -> list[str]:
    """Compile the new model as the original was; per-output settings follow renamed outputs."""
    try:
        config = original.get_compile_config()
    except Exception:
        config = None
    if not config:
        return []
    notes = []
    old_names = _graph.functional(original).output_names  # a Sequential keeps them on its inner graph
    new_names = _graph.functional(new_model).output_names
    renamed = {old: new for old, new in zip(old_names, new_names) if old != new}
    if renamed:
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if isinstance(config.get(key), dict):
                config[key] = {renamed.get(name, name): value for name, value in config[key].items()}
        pairs = ", ".join(f"{old!r} -> {new!r}" for old, new in renamed.items())
        notes.append(f"Outputs renamed by the edit ({pairs}); their losses and metrics were carried over to the new names.")
    try:
        new_model.compile_from_config(config)
    except Exception as error:
        notes.append(f"The original was compiled but the new model could not be compiled the same way "
                     f"({first_line(error)}); call new_model.compile(...) yourself.")
    return notes
