"""Planning: edits -> what to do in each graph (the model and every nested model it holds).

Every target is resolved once here (through :mod:`kerasnb._targets`) and every refusal happens
here, before anything is built. A plan holds, per call of a layer, the action that replaces it
(:class:`ReplaceCall`, :class:`DeleteCall`, :class:`ReplaceSpan`) and the pieces inserted
before or after it; per layer, config changes and trainable flags; and the channels a prune
removes. The rebuild (:mod:`kerasnb._rebuild`) reads it and decides nothing itself.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from . import _channels, _graph, _inside, _slicing, _targets
from .edits import ChangeInput, Configure, Delete, Insert, Prune, Replace, SetTrainable, Transform, Truncate
from .errors import Conflict, InputLayerEdit, InvalidEdit, NameClash, SurgeryError


@dataclass(frozen=True)
class Block:
    """A replacement or inserted piece, as the user gave it, and the edit that brought it."""

    spec: Any
    edit: Any


@dataclass(frozen=True)
class ReplaceCall:
    """Call ``block`` with the call the replaced layer received."""

    block: Block

    @property
    def edit(self):
        return self.block.edit


@dataclass(frozen=True)
class DeleteCall:
    """Pass one of the call's input tensors (its ``keep``-th) on to its consumers."""

    edit: Any
    keep: int = 0


@dataclass(frozen=True)
class ReplaceSpan:
    """The last call of a (first, last) chain: call ``block`` on what fed the first call."""

    block: Block
    first_node: Any

    @property
    def edit(self):
        return self.block.edit


@dataclass
class NodePlan:
    before: list = field(default_factory=list)
    action: Any = None  # ReplaceCall | DeleteCall | ReplaceSpan, or None: the call is replayed
    after: list = field(default_factory=list)


@dataclass
class Plan:
    """Everything to do inside one graph (a model or a nested model), keyed by Keras objects' ids."""

    nodes: dict = field(default_factory=dict)  # id(node) -> NodePlan
    skip: set = field(default_factory=set)  # id(node) inside a replaced span
    config: dict = field(default_factory=dict)  # id(layer) -> {key: value}
    trainable: dict = field(default_factory=dict)  # id(layer) -> bool
    after_input: dict = field(default_factory=dict)  # id(input layer) -> [blocks]
    nested: dict = field(default_factory=dict)  # id(nested model) -> Plan
    prune: "PrunePlan | None" = None  # channels removed by Prune edits (top-level graph only)
    input_shapes: dict = field(default_factory=dict)  # id(input layer) -> new batch shape
    rules: dict = field(default_factory=dict)  # id(layer) -> weight rule (old, new) -> weights.Outcome
    outputs: list | None = None  # old tensors that become the outputs (Truncate), or None
    notes_from_edits: list = field(default_factory=list)  # what an edit did that the report cannot say
    extra_outputs: list = field(default_factory=list)  # inner tensors a Truncate takes out of this model

    def is_empty(self) -> bool:
        return not (self.nodes or self.skip or self.config or self.trainable or self.after_input or self.prune
                    or self.input_shapes or self.rules or self.outputs is not None or self.extra_outputs
                    or any(not p.is_empty() for p in self.nested.values()))

    def node(self, node) -> NodePlan:
        return self.nodes.setdefault(id(node), NodePlan())

    def changes_for(self, op) -> dict:
        """Config changes of ``op``: a Configure edit's and a prune's (fewer units / filters)."""
        changes = dict(self.config.get(id(op), {}))
        if self.prune is not None:
            changes.update(self.prune.changes.get(id(op), {}))
        return changes

    def notes(self) -> list[str]:
        own = [self.prune.note] if self.prune is not None and self.prune.note else []
        # A prune reaching into nested models shares one PrunePlan (and note) with them.
        return own + self.notes_from_edits + [n for p in self.nested.values() for n in p.notes() if n not in own]


class PrunePlan:
    """The Prune edits of one rebuild, planned together: their channel groups never overlap.

    What each layer becomes (fewer units, sliced variables) is worked out once, when first
    asked for, from all the groups removed: not again for every Prune edit of the batch.
    """

    def __init__(self, analysis, removed: dict):
        self.analysis = analysis  # _channels.Analysis of the model before the rebuild
        self.removed = removed  # group root -> channel indices removed
        self._planned = None
        # A branch whose channels all go: its calls are not replayed, and it drops out of the Concatenate.
        self.dead, self.dropped, self.gone = _slicing.branch_drops(analysis, removed)

    def _plan(self):
        if self._planned is None:
            by_name, slices = _slicing.plan(self.analysis, self.removed)
            layers = self.analysis.layers
            self._planned = ({id(layers[n]): c for n, c in by_name.items()},
                             {id(layers[n]): kept for n, kept in slices.items()})
        return self._planned

    @property
    def changes(self) -> dict:
        """id(layer) -> config changes (units, filters, target_shape)."""
        return self._plan()[0]

    @property
    def slices(self) -> dict:
        """id(layer) -> (kept input indices or None, kept output indices or None)."""
        return self._plan()[1]

    @property
    def note(self) -> str:
        return _slicing.describe(self.analysis, self.removed) if self.removed else ""

    @property
    def dead_layer_ids(self) -> set:
        return {id(self.analysis.layers[n]) for n in self.gone if n in self.analysis.layers}


@dataclass(frozen=True)
class Resolved:
    scope: Any  # the (nested) model that holds the layer
    plan: Plan  # that scope's plan
    layer: Any
    views: tuple  # the chosen calls (NodeView); all calls when no call index was given
    span_first: Any = None  # NodeView of a span's first layer
    found: Any = None  # the _targets.Target


def plan_edit(model, edit, plan: Plan) -> None:
    """Add ``edit`` to ``plan`` (or to the plan of the nested model it reaches), or refuse it.

    An edit of a layer held inside a block becomes an edit of the block (made again with it
    changed); then the planner of the edit's type (:data:`_PLANNERS`) does the rest.
    """
    if isinstance(edit, (Replace, Configure, Delete, Transform)):
        found = _targets.inside(model, edit.target)
        if found is not None:
            edit = _inside.as_block_edit(found, edit)
    planner = next(_PLANNERS[kind] for kind in type(edit).__mro__ if kind in _PLANNERS)
    planner(model, edit, plan)


def _plan_transform(model, edit: Transform, plan: Plan) -> None:
    res = _resolve_edit(model, edit, plan)
    if _graph.is_input_layer(res.layer) or _graph.is_graph_model(res.layer):
        raise InvalidEdit(
            f"A Transform rebuilds one layer with a weight rule; {res.layer.name!r} is "
            f"{'an input' if _graph.is_input_layer(res.layer) else 'a nested model'}. Received: {edit!r}"
        )
    if not callable(edit.rule):
        raise InvalidEdit(f"Transform's rule is a function (old layer, new layer) -> Outcome. Received: {edit!r}")
    if edit.changes:  # no changes: the layer is made again as it was (from its arguments if need be)
        _check_config_keys(res.layer, Configure(edit.target, edit.changes), res.scope)
    if id(res.layer) in res.plan.config or id(res.layer) in res.plan.rules:
        raise Conflict(f"{res.layer.name} transformed twice")
    res.plan.config[id(res.layer)] = dict(edit.changes)
    res.plan.rules[id(res.layer)] = edit.rule
    if isinstance(edit.rule, _inside.InsideRule):
        plan.notes_from_edits.append(_inside.plan_note(edit.rule.found))


def _plan_trainable(model, edit: SetTrainable, plan: Plan) -> None:
    targets = edit.targets
    if not isinstance(targets, list):  # as in every verb: a list is several targets, a tuple is one
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


def _plan_configure(model, edit: Configure, plan: Plan) -> None:
    res = _resolve_edit(model, edit, plan)
    if _graph.is_graph_model(res.layer):
        raise InvalidEdit(
            f"{res.layer.name!r} is a nested model; configure its layers ('{res.layer.name}/<layer>') or "
            f"freeze it with kerasnb.set_trainable. Received: Configure({edit.target!r}, {dict(edit.changes)!r})"
        )
    if _graph.is_input_layer(res.layer):
        raise InputLayerEdit(_input_msg(res.layer, edit))
    _check_config_keys(res.layer, edit, res.scope)
    if id(res.layer) in res.plan.config:
        raise Conflict(f"{res.layer.name} configured twice")
    res.plan.config[id(res.layer)] = dict(edit.changes)


def _resolve_edit(model, edit, plan: Plan) -> Resolved:
    """The layer ``edit`` names, resolved, refused if another edit of this rebuild changes it."""
    res = _resolve(model, edit.target, plan, edit)
    _refuse_if_already_edited(res)
    return res


def _the_call(res: Resolved, edit, changes_it: bool = True):
    """``(view, node_plan)``: the one call an Insert, Delete or Replace edits, refused at an input layer
    and (``changes_it``) when another edit already changes that call."""
    if _graph.is_input_layer(res.layer):
        raise InputLayerEdit(_input_msg(res.layer, edit))
    view = _single_call(res, edit)
    node_plan = res.plan.node(view.node)
    if changes_it and (node_plan.action is not None or id(view.node) in res.plan.skip):
        raise Conflict(f"{res.layer.name} edited twice")
    return view, node_plan


def _plan_insert(model, edit: Insert, plan: Plan) -> None:
    res = _resolve_edit(model, edit, plan)
    if edit.after is not None and _graph.is_input_layer(res.layer):
        res.plan.after_input.setdefault(id(res.layer), []).append(Block(edit.layer, edit))
        return
    view, node_plan = _the_call(res, edit, changes_it=False)
    if edit.before is not None:
        if len(view.input_tensors) != 1:
            raise InvalidEdit(
                f"Cannot insert before {res.layer.name!r}: it has {len(view.input_tensors)} inputs, so 'before' "
                f"is ambiguous. Insert after one of its inputs instead: {_input_names(view)}. Received: before={edit.before!r}"
            )
        node_plan.before.append(Block(edit.layer, edit))
    else:
        node_plan.after.append(Block(edit.layer, edit))


def _plan_delete(model, edit: Delete, plan: Plan) -> None:
    res = _resolve_edit(model, edit, plan)
    view, node_plan = _the_call(res, edit)
    if len(view.outputs) != 1:
        raise InvalidEdit(
            f"Cannot delete {res.layer.name!r} ({type(res.layer).__name__}): it has {len(view.outputs)} outputs, "
            "and one input cannot stand in for all of them. Replace it with a block that gives as many outputs. "
            f"Received: target={edit.target!r}"
        )
    keep = _input_to_keep(view, res.layer, edit)
    _refuse_other_kind(view, res.layer, keep, edit)
    node_plan.action = DeleteCall(edit, keep)
    if len(view.input_tensors) > 1:
        kept = view.input_tensors[node_plan.action.keep]
        plan.notes_from_edits.append(
            f"Deleting {res.layer.name!r} passes on its input from {_graph.producer(kept)[0].name!r} "
            f"{tuple(kept.shape)}; its other inputs ({_other_inputs(view, node_plan.action.keep)}) are no "
            "longer read there.")


def _plan_replace(model, edit: Replace, plan: Plan) -> None:
    res = _resolve_edit(model, edit, plan)
    view, node_plan = _the_call(res, edit)
    if res.span_first is not None:
        first = res.span_first
        chain = _span_nodes(res.scope, first, view, edit)
        for inner in chain[:-1]:
            if id(inner.node) in res.plan.nodes or id(inner.node) in res.plan.skip:
                raise Conflict("span overlaps another edit")
            res.plan.skip.add(id(inner.node))
        node_plan.action = ReplaceSpan(Block(edit.replacement, edit), first.node)
    else:
        node_plan.action = ReplaceCall(Block(edit.replacement, edit))


def _plan_prune(model, edit: Prune, plan: Plan) -> None:
    """Plan the channels a Prune removes, joined with the other prunes of this rebuild.

    The channel analysis reads the model before the rebuild, so a prune that touches a layer
    another edit of this batch changes (or that fails while other edits are pending) waits for
    the next rebuild, which sees their result.
    """
    prune = plan.prune
    analysis = prune.analysis if prune is not None else _channels.analyse(model)
    others_pending = bool(plan.nodes or plan.skip or plan.config or plan.after_input
                          or any(not _empty_but_prune(p) for p in plan.nested.values()))
    try:
        _, removed, _ = _slicing.choose(model, edit.target, edit.channels, edit.keep, edit.by, True, analysis,
                                        allow_output_change=edit.allow_output_change)
    except SurgeryError:
        if others_pending:
            raise Conflict("decide on the model the pending edits make") from None
        raise
    done = prune.removed if prune is not None else {}
    if any(root in done for root in removed):
        raise Conflict("a group pruned twice in one rebuild")
    combined = {**done, **removed}
    new = PrunePlan(analysis, combined)
    if others_pending:  # only then can a layer the prune slices be edited by another edit too
        touched_ids = set(new.changes) | set(new.slices)
        for view in _graph.walk(model):
            planned = plan.nodes.get(id(view.node))
            busy = id(view.node) in plan.skip or (planned is not None and (planned.action or planned.before or planned.after))
            if id(view.operation) in touched_ids and (busy or id(view.operation) in plan.config):
                raise Conflict(f"{view.name} is edited in this batch and sliced by the prune")
    plan.prune = new
    _share_prune(model, plan, new)


def _empty_but_prune(plan: Plan) -> bool:
    """A nested plan that holds nothing but the prune shared with it (see _share_prune)."""
    if plan.prune is None:
        return plan.is_empty()
    saved, plan.prune = plan.prune, None
    try:
        return plan.is_empty()
    finally:
        plan.prune = saved


def _share_prune(scope, plan: Plan, prune: "PrunePlan", top: bool = True) -> bool:
    """Hand the prune to the plans of the nested models it reaches into (it is keyed by layer ids)."""
    layers = _graph.layers_in_order(scope)
    if top and not any(_graph.is_graph_model(layer) for layer in layers):
        # Nothing nested at the top: no need to work out the whole slicing plan, which every
        # Prune edit of a batch would otherwise do again (a global prune has one per group).
        return False
    touched = set(prune.changes) | set(prune.slices) | prune.dead_layer_ids
    reached = False
    for layer in layers:
        if _graph.is_graph_model(layer):
            inner = plan.nested.get(id(layer)) or Plan()
            if _share_prune(layer, inner, prune, top=False):
                inner.prune = prune
                plan.nested[id(layer)] = inner
                reached = True
        elif id(layer) in touched:
            reached = True
    return reached


def _plan_input(model, edit: ChangeInput, plan: Plan) -> None:
    found = _targets.resolve(model, edit.target, what="ChangeInput")
    layer = found.layer
    if not _graph.is_input_layer(layer) or len(found.scopes) > 1:
        names = [l.name for l in _graph.input_layers(model)]
        raise InvalidEdit(
            f"ChangeInput names an input layer of the model: one of {names}. Received: target={edit.target!r}, "
            f"a {type(layer).__name__}"
        )
    old = tuple(layer.batch_shape)
    shape = edit.shape
    if not isinstance(shape, (tuple, list)) or not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
        raise InvalidEdit(
            f"A shape is a tuple of positive ints or None, without the batch axis, e.g. {old[1:]!r}. "
            f"Received: shape={shape!r}"
        )
    if len(shape) != len(old) - 1:
        raise InvalidEdit(
            f"Input {layer.name!r} has shape {old[1:]!r} (rank {len(old) - 1} without the batch axis); the new shape "
            f"must have the same rank, e.g. {tuple(None for _ in old[1:])!r}. Received: shape={tuple(shape)!r}"
        )
    if id(layer) in plan.input_shapes:
        raise Conflict(f"{layer.name} reshaped twice")
    plan.input_shapes[id(layer)] = (old[0],) + tuple(shape)


def _plan_outputs(model, edit: Truncate, plan: Plan) -> None:
    targets = edit.outputs
    if isinstance(targets, (str,)) or _targets.is_call_target(targets) or not isinstance(targets, (list, tuple)):
        targets = [targets]
    if not targets:
        raise InvalidEdit("truncate() needs at least one layer whose output becomes a model output. Received: []")
    if plan.outputs is not None:
        raise Conflict("outputs set twice")
    tensors = []
    for target in targets:
        found = _targets.resolve(model, target, what="truncate")
        if len(found.scopes) > 1:
            _expose_inner(found, plan)
            tensors.append(("inner", found))
            continue
        call = found.single_call() if not _graph.is_input_layer(found.layer) else None
        outs = call.outputs if call is not None else [_graph.input_tensors(model)[
            _graph.input_layers(model).index(found.layer)]]
        if len(outs) != 1:
            raise InvalidEdit(f"{found.path!r} has {len(outs)} outputs; name a layer with one. Received: {target!r}")
        tensors.append(outs[0])
    plan.outputs = tensors


def _expose_inner(found, plan: Plan) -> None:
    """A layer inside nested models: each nested model on the way gives its output too."""
    call = found.single_call()
    if len(call.outputs) != 1:
        raise InvalidEdit(f"{found.path!r} has {len(call.outputs)} outputs; name a layer with one. "
                          f"Received: {found.given!r}")
    if len(found.scopes) > 2:
        raise InvalidEdit(
            f"truncate() takes layers of the model or of a model nested in it, one level deep; {found.path!r} is "
            f"deeper. Truncate the inner model first and use it as a block. Received: {found.given!r}"
        )
    sub = plan
    for scope in found.scopes[1:]:
        calls = [v for v in _graph.walk(found.scopes[found.scopes.index(scope) - 1]) if v.operation is scope]
        if len(calls) != 1:
            raise InvalidEdit(
                f"{scope.name!r} is called {len(calls)} times, so a layer inside it has no single output to take. "
                f"Received: {found.given!r}"
            )
        sub = sub.nested.setdefault(id(scope), Plan())
    sub.extra_outputs.append(call.outputs[0])


def _refuse_if_already_edited(res: Resolved, prune_too: bool = True) -> None:
    """An edit naming a call this batch already replaces or deletes applies to the rebuilt model.

    So does an edit of a layer that a prune in this batch slices (it is planned on the old widths).
    """
    if prune_too and res.plan.prune is not None and (
            id(res.layer) in res.plan.prune.changes or id(res.layer) in res.plan.prune.slices):
        raise Conflict(f"{res.layer.name} is sliced by a prune in this batch")
    views = list(res.views) + ([res.span_first] if res.span_first is not None else [])
    for view in views:
        node_plan = res.plan.nodes.get(id(view.node))
        if (node_plan is not None and node_plan.action is not None) or id(view.node) in res.plan.skip:
            raise Conflict(f"{view.name} already replaced in this batch")


def _resolve(model, target, plan: Plan, edit) -> Resolved:
    """Find the layer (and calls) a target names, and the plan of the (nested) model holding it."""
    found = _targets.resolve(model, target, allow_span=isinstance(edit, Replace), what=type(edit).__name__)
    sub_plan = plan
    for scope in found.scopes[1:]:
        sub_plan = sub_plan.nested.setdefault(id(scope), Plan())
    return Resolved(found.scope, sub_plan, found.layer, found.calls, found.span_first, found)


def _single_call(res: Resolved, edit):
    return res.found.single_call()


def _input_to_keep(view, layer, edit) -> int:
    """Which input tensor of the call a Delete passes on (see :class:`kerasnb.Delete`)."""
    tensors = view.input_tensors
    if edit.keep_input is not None:
        wanted = edit.keep_input
        if isinstance(wanted, (int, np.integer)) and not isinstance(wanted, bool):
            if 0 <= wanted < len(tensors):
                return _call_order(view)[int(wanted)]  # the position in the call, as the message lists them
        elif isinstance(wanted, str):
            by_keyword = view.kwargs.get(wanted)
            for i, t in enumerate(tensors):
                if t is by_keyword or _graph.producer(t)[0].name == wanted:
                    return i
        raise InvalidEdit(
            f"keep_input names one input of {layer.name!r}: {_input_choices(view)}. Received: keep_input={wanted!r}"
        )
    if len(tensors) == 1:
        return 0
    out = view.outputs[0]
    fits = [i for i, t in enumerate(tensors) if tuple(t.shape) == tuple(out.shape) and t.dtype == out.dtype]
    if len(fits) == 1:
        return fits[0]
    why = ("none of them has" if not fits else f"{len(fits)} of them have") + \
        f" the shape and dtype of its output {tuple(out.shape)} {out.dtype}"
    raise InvalidEdit(
        f"Cannot delete {layer.name!r} ({type(layer).__name__}): it takes {len(tensors)} inputs and {why}, so it "
        f"is not clear which one to pass on. Say which with keep_input=: {_input_choices(view)}; or replace it "
        f"with a layer that merges them. Received: target={edit.target!r}"
    )


def _kind(dtype) -> str:
    name = str(dtype)
    return "bool" if name == "bool" else "float" if "float" in name else "int" if "int" in name else name


def _refuse_other_kind(view, layer, keep: int, edit) -> None:
    """A Delete that would hand the layer's consumers integers where it gave them floats (or the
    reverse) is refused: what they compute from it is not what they computed. Moonshine's rotary
    embedding turns int32 positions into float32 frequencies, and its declared output shape is the
    positions' shape, so the rebuilt graph looks fine and fails only when called."""
    kept, out = view.input_tensors[keep], view.outputs[0]
    if _kind(kept.dtype) == _kind(out.dtype):
        return
    raise InvalidEdit(
        f"Cannot delete {layer.name!r} ({type(layer).__name__}): it turns {kept.dtype} {tuple(kept.shape)} from "
        f"{_graph.producer(kept)[0].name!r} into {out.dtype} {tuple(out.shape)}, and passing its input on would hand "
        f"the layers that read its output {kept.dtype} values where they read {out.dtype} ones (positions where they "
        f"read, say, rotary frequencies made from them). Replace it with a layer that gives {out.dtype} instead. "
        f"Received: target={edit.target!r}"
    )


def _call_order(view) -> list:
    """Indices into ``view.input_tensors`` in the order the call passed them: positional tensors
    first, then keyword tensors in the order of the layer's ``call()`` signature (Keras lists
    keyword tensors by keyword, alphabetically: ``decoder_padding_mask`` before ``decoder_sequence``)."""
    n = len(view.input_tensors)

    def count(value):
        return sum(1 for t in keras.tree.flatten(value) if isinstance(t, keras.KerasTensor))

    try:
        signature = list(inspect.signature(view.operation.call).parameters)
    except (TypeError, ValueError):
        signature = []
    place = {name: i for i, name in enumerate(signature)}
    start, slots = count(view.args), []
    for key in sorted(view.kwargs):
        k = count(view.kwargs[key])
        slots.append((place.get(key, len(place)), list(range(start, start + k))))
        start += k
    if start != n:  # not laid out as expected: keep Keras's order
        return list(range(n))
    order = list(range(count(view.args)))
    for _, indices in sorted(slots, key=lambda slot: slot[0]):
        order.extend(indices)
    return order


def _input_choices(view) -> str:
    keyword = {id(v): k for k, v in view.kwargs.items() if isinstance(v, keras.KerasTensor)}
    tensors = view.input_tensors
    parts = []
    for i, j in enumerate(_call_order(view)):
        t = tensors[j]
        name = keyword.get(id(t)) or _graph.producer(t)[0].name
        parts.append(f"{i} or {name!r} {tuple(t.shape)} {t.dtype}")
    return "; ".join(parts)


def _other_inputs(view, keep: int) -> str:
    return ", ".join(repr(_graph.producer(t)[0].name) for i, t in enumerate(view.input_tensors) if i != keep)


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
    # A constructor argument the config leaves out while it has its default (Dense's lora_rank) counts too.
    unknown = [k for k in edit.changes if k not in config and k not in _graph.init_arguments(type(layer))]
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
    index = _graph.graph_index(scope)
    chain = [last]
    while chain[-1].node is not first.node:
        cur = chain[-1]
        if len(cur.input_tensors) != 1:
            raise InvalidEdit(
                f"{cur.name!r} in span {edit.target!r} has {len(cur.input_tensors)} inputs; a span must be a linear "
                f"chain from {first.name!r} to {last.name!r}. Received: target={edit.target!r}"
            )
        parent = index.producer.get(id(cur.input_tensors[0]))
        if parent is None:
            raise InvalidEdit(
                f"{first.name!r} does not lead to {last.name!r} along a linear chain, so ({first.name!r}, {last.name!r}) "
                f"is not a span. Received: target={edit.target!r}"
            )
        chain.append(parent)
    chain.reverse()
    for view in chain[:-1]:
        for t in view.outputs:
            if len(index.consumers.get(id(t), ())) > 1 or id(t) in index.outputs:
                raise InvalidEdit(
                    f"The output of {view.name!r}, inside span {edit.target!r}, is also used outside the span, so "
                    f"the span cannot be replaced as one piece. Received: target={edit.target!r}"
                )
    return chain


# The planner of each edit type (a subclass of an edit type takes its parent's).
_PLANNERS = {
    Replace: _plan_replace,
    Insert: _plan_insert,
    Delete: _plan_delete,
    Configure: _plan_configure,
    SetTrainable: _plan_trainable,
    Prune: _plan_prune,
    ChangeInput: _plan_input,
    Transform: _plan_transform,
    Truncate: _plan_outputs,
}
