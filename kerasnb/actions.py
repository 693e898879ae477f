"""Every capability of kerasnb as one record: the registry the editor, the table and the docs read.

An :class:`Action` says, once, what a capability is: its name (the core function's name, and the
method's name on the editor's ``Session`` and ``Editor``), the core function it calls, a one-line
description, the short label the layer table shows for a step of it, whether it is a whole-model
step (worked out on the model the steps before it make, and worked out again when they change),
the statuses a step of it gives the layers it touches, its argument checks, and, for a
whole-model step, how it becomes edits and notes (``plan``). A new capability registers once with
:func:`register_action`; ``tests/test_actions.py`` walks :func:`registry` and applies every action
through the editor, so nothing can be registered in one place and missed in another.

This is the one internal facade the editor uses besides kerasnb's public API: widget-free, and it
never imports :mod:`kerasnb.editor`. Besides the records, it names what the editor reads of a
model (:func:`describe`, :func:`walk_layers`, ...; :func:`memo` while it draws, so that those walks are
made once per drawing), the statuses foretold before a rebuild
(:func:`foretell`), a rebuild's progress (:func:`progress`), and the planner's answers
(:func:`prune_plan`, :func:`delete_refusal`, :func:`single_call`), so the editor never reaches into
kerasnb's private modules itself.

    >>> import kerasnb.actions as actions
    >>> actions.get("fold_batchnorm").whole_model
    True
    >>> actions.get("prune").label(type("Step", (), {"params": {"keep": 0.5}})())
    'pruned to 50%'
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from ._foretell import foretell, foretell_same_shapes, unchanged_report
from ._graph import (count_params, describe, functional, input_layers, input_tensors, is_graph_model, is_input_layer,
                     layer_aliases, memo, output_tensors, sublayers, walk_layers)
from ._rebuild import progress
from .errors import InvalidEdit, LayerNotFound
from .report import Status

__all__ = ["Action", "register_action", "registry", "get", "Planned", "GLOBAL_BUDGETS", "CHANGE_INPUT_MODES",
           "check_rank", "check_prune", "check_global", "prune_global_plan", "prune_plan", "delete_refusal",
           "single_call", "channel_width", "foretell", "foretell_same_shapes", "unchanged_report", "progress", "count_params", "describe",
           "functional", "input_layers", "input_tensors", "is_graph_model", "is_input_layer", "layer_aliases",
           "output_tensors", "sublayers", "walk_layers", "memo", "model_bytes"]

# The budgets of a whole-model prune: the fraction of the channels kept (keep=), of the parameters
# kept at most (params=) or of the multiply-accumulates kept at most (macs=).
GLOBAL_BUDGETS = ("keep", "params", "macs")
CHANGE_INPUT_MODES = ("sum", "repeat", "reinit")  # how change_input adapts the first layers to new channels


@dataclass(frozen=True)
class Action:
    """One capability: see the module docstring."""

    name: str  # the verb: the core function's name and the editor's method's
    function: str  # "module:attribute" of the core function it calls, e.g. "budget:prune_global"
    description: str  # one line
    label: Callable[[Any], str]  # step -> the short text the table's edit column shows
    whole_model: bool = False  # a step of it is worked out on the model the steps before it make
    foretells: tuple = ()  # statuses a step of it gives the layers it touches
    check: Callable[..., dict] | None = None  # (**settings) -> settings checked; raises InvalidEdit
    # A whole-model step: (model, settings, context) -> (result with .model, .edits, .notes, in words).
    # ``context`` is the editor's session (``name_layers``, ``global_plan``, ``data``) or None.
    plan: Callable | None = None
    marks_target: bool = False  # the table marks the step's own row too (truncate: where it cut)
    example: dict = field(default_factory=dict)  # the editor method's arguments on tests/test_actions.py's model
    needs: tuple = ()  # actions the example takes first (merge_lora needs enable_lora)
    # The editor panel's widget (an attribute of kerasnb.editor.Editor) whose gesture makes a step of it:
    # a button's click, a slider's or checkbox's new value, an Apply after its box is opened ("table":
    # the row's Type dropdown in the layer table). tests/test_actions.py works every one of them.
    control: str = ""

    @property
    def core(self) -> Callable:
        """The core function (imported on first use)."""
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(f"kerasnb.{module}"), attribute)

    def doc(self) -> str:
        """One line for the docs: name, what it does, the core function."""
        kind = "whole model" if self.whole_model else "per layer"
        return f"{self.name} ({kind}): {self.description} [kerasnb.{self.function.replace(':', '.')}]"


_REGISTRY: dict[str, Action] = {}


def register_action(name: str, function: str, description: str, label: Callable, **fields) -> Action:
    """Register a capability once (see :class:`Action` for the fields); returns its record.

    Registering a name again replaces its record (a capability refined later).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidEdit(f"An action's name is a Python identifier (the editor's method). Received: name={name!r}")
    action = Action(name, function, description, label, **fields)
    if action.whole_model and action.plan is None:
        raise InvalidEdit(f"A whole-model action says how it becomes edits: plan=(model, settings, context) -> "
                          f"(result, text). Received: {name!r} without plan")
    _REGISTRY[name] = action
    return action


def registry() -> dict[str, Action]:
    """``{name: Action}`` of every registered capability, in the order they were registered."""
    return dict(_REGISTRY)


def get(name: str) -> Action:
    """The record of ``name``; :class:`LayerNotFound`-like refusal naming the registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidEdit(f"No action {name!r}; registered: {', '.join(_REGISTRY)}. Received: name={name!r}") from None


@dataclass(frozen=True)
class Planned:
    """What a whole-model step worked out without building (as a SurgeryResult would say it):
    ``model`` is the model it was planned on (it adds no layer), ``counts`` its numbers."""

    model: Any
    edits: tuple
    notes: tuple
    counts: tuple = ()


# ----------------------------------------------------------------------------- checks


def check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise InvalidEdit(f"rank is a whole number of at least 1 (the size of the LoRA factors), e.g. 8. "
                          f"Received: rank={rank!r}")
    return int(rank)


def check_prune(keep, by, criteria, need_data=()) -> tuple:
    """``(keep, by)`` of a layer's prune checked: ``keep`` the fraction of its channels kept
    (0 < keep <= 1; 1 takes the pruning back), ``by`` one of ``criteria`` (``need_data``: the
    criteria that measure channels on examples, not offered without them)."""
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or math.isnan(keep) or not 0 < keep <= 1:
        raise InvalidEdit("keep is the fraction of the layer's channels to keep: a number with 0 < keep <= 1 "
                          f"(0.5 keeps half; 1 takes the pruning back). Received: keep={keep!r}")
    if by not in criteria:
        more = (f"; {by!r} measures channels on examples: open the editor with data=x to offer it"
                if by in need_data else "")
        raise InvalidEdit(f"by is how channels are ranked: one of {', '.join(map(repr, criteria))}{more}. "
                          f"Received: by={by!r}")
    return float(keep), by


def check_global(keep=None, params=None, macs=None, by="l1", round_to=None, criteria=None) -> dict:
    """The settings of a whole-model prune: exactly one budget (``keep``: the fraction of the
    channels kept; ``params`` / ``macs``: the fraction of the parameters / MACs kept at most), the
    criterion ``by`` (one of ``criteria`` when given) and ``round_to`` (None or a channel multiple)."""
    given = {k: v for k, v in (("keep", keep), ("params", params), ("macs", macs)) if v is not None}
    if len(given) != 1:
        raise InvalidEdit("Give one budget: keep= (the fraction of the channels kept), params= or macs= (the "
                          "fraction of the parameters / multiply-accumulates kept at most), e.g. keep=0.5. "
                          f"Received: {', '.join(f'{k}={v!r}' for k, v in given.items()) or 'none'}")
    (budget, target), = given.items()
    if isinstance(target, bool) or not isinstance(target, numbers.Real) or math.isnan(target) \
            or not (0 < target < 1 if budget == "keep" else 0 < target <= 1):
        wanted = ("the fraction of the channels to keep, 0 < keep < 1" if budget == "keep" else
                  f"the fraction of the current {'parameters' if budget == 'params' else 'MACs'} to keep at most, "
                  f"0 < {budget} <= 1")
        raise InvalidEdit(f"{budget} is {wanted}. Received: {budget}={target!r}")
    if criteria is not None and by not in criteria:
        raise InvalidEdit(f"by is how channels are ranked: one of {', '.join(map(repr, criteria))}. "
                          f"Received: by={by!r}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral)
                                 or round_to < 1):
        raise InvalidEdit(f"round_to is None or a whole number of channels (e.g. 8). Received: round_to={round_to!r}")
    return {budget: float(target), "by": by, "round_to": None if round_to in (None, 1) else int(round_to)}


def budget_of(settings: dict) -> tuple:
    """``(budget, fraction)`` of whole-model prune ``settings``."""
    return next((k, settings[k]) for k in GLOBAL_BUDGETS if settings.get(k) is not None)


def prune_global_plan(model, settings: dict, *, scores=None, data=None):
    """:func:`kerasnb.prune_global_plan` of ``settings`` (see :func:`check_global`) on ``model``."""
    from . import budget as budgets

    budget, target = budget_of(settings)
    return budgets.prune_global_plan(model, **{budget: target}, by=None if scores else settings["by"],
                                     data=None if scores else data, round_to=settings["round_to"], scores=scores)


def prune_plan(model, path: str, keep: float, by: str, data=None, costs=None) -> tuple:
    """``(channels removed, params after, MACs before, MACs after)`` of pruning the layer ``path`` of
    ``model`` to ``keep`` of its channels by ``by``, without building; ``costs``:
    :func:`kerasnb.flops.layer_cost` of ``model`` (MACs None when it is None)."""
    from . import _graph, _slicing, budget, criteria

    with _graph.memo():
        scorer = criteria.scorer(model, by, data)
        analysis, removed, _ = _slicing.choose(model, path, None, keep, scorer, True)
        params_after = _slicing.params_after_removal(analysis, removed, _graph.count_params(model))
        macs_after = None if costs is None else budget.macs_after_removal(analysis, removed, costs)
    channels = tuple(int(i) for idx in removed.values() for i in idx)
    macs_before = None if costs is None else int(sum(c.macs for c in costs.values()))
    return channels, params_after, macs_before, macs_after


def channel_width(layer) -> int:
    """How many channels ``layer`` makes, read where its channel rule says (``units``, ``filters``,
    ``output_dim`` ...; a rule registered for a user's layer too); 0 when it has no such width."""
    from ._channels import rule_for

    rule = rule_for(layer)
    width = getattr(layer, rule.size_key, None) if rule is not None and rule.size_key else None
    return int(width) if isinstance(width, numbers.Integral) and not isinstance(width, bool) else 0


def single_call(model, target):
    """The one call ``target`` names in ``model`` (its ``outputs`` tensors), or the resolver's
    :class:`kerasnb.SurgeryError` saying why there is not exactly one."""
    from . import _targets

    return _targets.resolve(model, target).single_call()


def delete_refusal(model, target) -> str:
    """Why the core would refuse ``Delete(target)`` on ``model``, in one line, or ``""``: asked of
    the planner, which refuses before anything is built."""
    from . import _plan
    from .edits import Delete
    from .errors import SurgeryError, first_line

    try:
        _plan.plan_edit(model, Delete(target), _plan.Plan())
    except SurgeryError as error:
        return first_line(error)
    return ""


# ----------------------------------------------------------------------------- plans of whole-model steps


def _layer_at(model, path):
    from . import _graph

    return next((layer for p, layer in _graph.walk_layers(model) if p == path), None)


def _key_text(key) -> str:
    return f"{key[0]!r} (call {key[1]})" if isinstance(key, tuple) else repr(key)


def _plan_change_input(model, settings, context):
    from . import input_change

    result = input_change.change_input(model, settings["shape"], mode=settings["mode"], input=settings["input"])
    how = f" (channels: {settings['mode']})" if settings["mode"] else ""
    return result, f"change input {settings['input']!r} to {settings['shape']!r}{how}"


def _plan_replace_all(model, settings, context):
    import kerasnb.catalog as catalog

    from . import fitting, surgery, transforms
    from .edits import Delete

    entry, values, paths = catalog.get(settings["label"]), settings["values"], settings["paths"]
    from . import _graph

    present = {p: layer for p, layer in _graph.walk_layers(model) if p in paths}
    if not present:
        raise LayerNotFound(f"None of {', '.join(map(repr, paths))} is in the model any more, so there is nothing to "
                            f"give {settings['label']!r} to. Received: {settings['type']} layers like "
                            f"{settings['like']!r}")
    notes = [f"{p!r} left alone: {why}" for p, why in settings["left"].items()]
    notes += [f"{p!r} left alone: it is no longer in the model" for p in paths if p not in present]
    if entry.kind == "remove":
        result = surgery.apply(model, [Delete(p) for p in present])
        what = "delete"
    else:
        by_id = {id(layer): p for p, layer in present.items()}
        given: list = []

        def make(layer):
            path = by_id[id(layer)]
            site = fitting.locate(model, path)
            replacement = entry.make(site.layer, site.input_shape, **values)
            if context is not None:
                given.extend(context.name_layers(replacement, path, entry.label, also=given))
            return replacement

        result = transforms.replace_all(model, lambda path, layer: path in present, make)
        args = ", ".join(f"{k}={v!r}" for k, v in values.items())
        what = (f"give {settings['label']}({args})" if args else f"give {settings['label']}") + " to"
    if notes:
        result = dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))
    return result, (f"{what} {len(present)} more {settings['type']} layer(s) like {_key_text(settings['like'])}: "
                    + ", ".join(map(repr, present)))


def _plan_swap(model, settings, context):
    from . import activations

    result = activations.swap_activation(model, settings["old"], settings["new"])
    return result, f"swap activation {settings['old']!r} for {settings['new']!r} ({len(result.edits)} layer(s))"


def _plan_fold(model, settings, context):
    from . import batchnorm
    from .edits import Delete

    result = batchnorm.fold_batchnorm(model)
    folded = sum(isinstance(e, Delete) for e in result.edits)
    if not folded:
        why = " ".join(result.notes) or "no BatchNormalization layer could be folded"
        raise InvalidEdit(f"No BatchNormalization layer could be folded: {why} Received: fold_batchnorm on model "
                          f"{model.name!r}")
    return result, f"fold {folded} BatchNormalization layer(s) into the layer before each"


def _plan_split(model, settings, context):
    from . import activations

    result = activations.split_activations(model)
    return result, f"split the fused activations of {len(result.edits)} layer(s) into Activation layers"


def _plan_truncate(model, settings, context):
    from . import transforms

    result = transforms.truncate(model, settings["at"])
    return result, f"truncate the model at {_key_text(settings['at'])} (its output is the model's output)"


def _plan_widen(model, settings, context):
    from .growth import widen

    # The dict form takes the new width whatever the layer's kind (units or filters); seed 0: the
    # same copies each time the step is worked out again.
    result = widen(model, {settings["target"]: settings["width"]}, seed=0)
    return result, f"widen {settings['target']!r} to {settings['width']} (copies of existing channels)"


def _check_widen(target, width) -> dict:
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 2:
        raise InvalidEdit(f"width is the layer's new number of units or filters, a whole number larger than today's, "
                          f"e.g. width=64. Received: width={width!r}")
    return {"target": target, "width": int(width)}


def _plan_deepen(model, settings, context):
    from .deepening import deepen

    result = deepen(model, settings["target"], activation=settings["activation"])
    relu = " (relu)" if settings["activation"] == "relu" else ""
    return result, f"insert an identity layer{relu} after {settings['target']!r}"


def _check_deepen(target, activation=None) -> dict:
    if activation not in (None, "linear", "relu"):
        raise InvalidEdit(f"deepen's activation is 'linear' or 'relu' (after a layer whose output is never negative). "
                          f"Received: activation={activation!r}")
    return {"target": target, "activation": activation}


def model_bytes(model) -> int:
    """The bytes of ``model``'s variables as stored (:func:`kerasnb.quantization.model_bytes`)."""
    from .quantization import model_bytes as count

    return count(model)


def _plan_quantize(model, settings, context):
    from .quantization import quantize

    target, mode, keep = settings["target"], settings["mode"], settings["keep_float"]
    data = getattr(context, "data", None) if keep else None
    result = quantize(model, mode, match=target or None, data=data, keep_float=keep)
    where = repr(target) if target else "the model"
    kept = f", {keep} most sensitive layer(s) kept float" if keep else ""
    return result, f"quantize {where} to {mode} with Keras's quantize(){kept}"


def _check_quantize(target="", mode="int8", keep_float=None) -> dict:
    from .quantization import MODES

    if mode not in MODES:
        raise InvalidEdit(f"mode is one of {', '.join(map(repr, MODES))}. Received: mode={mode!r}")
    if keep_float is not None and (isinstance(keep_float, bool) or not isinstance(keep_float, numbers.Integral)
                                   or keep_float < 0):
        raise InvalidEdit(f"keep_float is how many layers stay float, a whole number >= 0 (or None). "
                          f"Received: keep_float={keep_float!r}")
    return {"target": target, "mode": mode, "keep_float": int(keep_float) if keep_float else None}


def _plan_patch(model, settings, context):
    import numpy as np

    from .patching import patch

    # The panel's "Ablate": the row's output replaced by zeros (a scalar array: it broadcasts to any
    # shape, and an array patch saves with the model).
    result = patch(model, {settings["target"]: np.zeros((), "float32")})
    return result, f"ablate {settings['target']!r}: its output replaced by zeros"


def _check_patch(target) -> dict:
    return {"target": target}


def _plan_grow_blocks(model, settings, context):
    from .blocks_growth import grow_blocks

    result = grow_blocks(model, settings["target"])
    return result, f"grow a block after {settings['target']!r} (a copy of it, output projections zero)"


def _check_grow_blocks(target) -> dict:
    return {"target": target}


def _plan_configure(model, settings, context):
    from . import surgery

    result = surgery.configure(model, settings["target"], **settings["changes"])
    args = ", ".join(f"{k}={v!r}" for k, v in settings["changes"].items())
    return result, f"configure {settings['target']!r} ({args})"


def _plan_prune_heads(model, settings, context):
    from . import heads

    result = heads.prune_heads(model, settings["target"], settings["heads"], keep=settings["keep"])
    which = (f"heads {list(settings['heads'])}" if settings["heads"] is not None
             else f"keeping {settings['keep']!r} of its heads")
    return result, f"prune the attention heads of {settings['target']!r} ({which})"


def _check_heads(target, heads=None, keep=None) -> dict:
    if (heads is None) == (keep is None):
        raise InvalidEdit("Give heads= (the indices of the heads to remove, e.g. [0]) or keep= (how many to keep: "
                          f"a fraction or a count). Received: heads={heads!r}, keep={keep!r}")
    if heads is not None:
        if isinstance(heads, (int, str)) or not all(isinstance(h, numbers.Integral) and not isinstance(h, bool)
                                                    for h in heads):
            raise InvalidEdit(f"heads is a list of head indices, e.g. [0, 3]. Received: heads={heads!r}")
        heads = tuple(int(h) for h in heads)
    return {"target": target, "heads": heads, "keep": keep}


def _plan_lora(model, settings, context):
    from . import lora

    scope, rank, which = settings["scope"], settings["rank"], settings["projections"]
    if scope:
        layer = _layer_at(model, scope)
        if layer is None:
            raise LayerNotFound(f"{scope!r} is not in the model any more, so LoRA cannot go on it. Received: "
                                f"LoRA rank {rank} on {scope!r}")
        targets, what = lora.lora_targets(scope, layer, which)
        where = f"{scope!r}" if what.startswith("this ") else f"the attention projections ({which}) of {scope!r}"
    else:
        targets = lora.attention_projections(model, which)
        where = f"the attention projections ({which})"
    if not targets:
        raise InvalidEdit(f"There is no layer for LoRA on {where}: it goes on Dense, EinsumDense, Embedding and "
                          f"convolution layers, and on attention projections. Received: LoRA rank {rank} on {where}")
    have = lora.lora_layers(model)
    todo = [t for t in targets if t not in have]
    if not todo:
        raise InvalidEdit(f"Every layer of {where} has LoRA already ({', '.join(sorted(map(repr, targets)))}); "
                          f"nothing would change. Received: LoRA rank {rank} on {where}")
    from . import _targets

    layers = {p: layer for p, layer, _ in _targets.deep_layers(model)}
    widest = max((max(v.shape) for t in todo for v in layers[t].weights if len(v.shape) >= 2), default=0)
    if widest and rank > widest:
        raise InvalidEdit(f"LoRA rank {rank} is larger than every dimension of the kernels it would go on (the "
                          f"largest is {widest}); LoRA's factors are meant to be far smaller, e.g. rank 4 or 8. "
                          f"Received: rank={rank!r} on {where}")
    result = lora.enable_lora(model, list(todo), rank=rank)
    left = [f"{t!r} has LoRA already (rank {have[t]}); left as it is" for t in targets if t in have]
    if left:
        result = dataclasses.replace(result, notes=tuple(left) + tuple(result.notes))
    return result, f"LoRA rank {rank} on {where}" + (f": {len(todo)} layers" if len(todo) > 1 else "")


def _plan_merge_lora(model, settings, context):
    from . import lora

    had = lora.lora_layers(model)
    result = lora.merge_lora(model)
    return result, f"merge LoRA into the kernels of {len(had)} layer(s)"


def _plan_prune_global(model, settings, context):
    plan = (context.global_plan(model, settings) if context is not None
            else prune_global_plan(model, settings))
    budget, target = budget_of(settings)
    goal = {"keep": f"{target:.0%} of the channels kept", "params": f"at most {target:.0%} of the parameters",
            "macs": f"at most {target:.0%} of the MACs"}[budget]
    rounded = f", channel counts multiples of {settings['round_to']}" if settings["round_to"] else ""
    note = (f"Pruned the model to {goal} by {settings['by']}{rounded}: removed "
            f"{plan.channels_before - plan.channels_after} of {plan.channels_before} channels in "
            f"{len(plan.removed)} group(s); params {plan.params_before:,} -> {plan.params_after:,}, MACs per sample "
            f"{plan.macs_before:,} -> {plan.macs_after:,}. The layers after them see fewer channels: fine-tune")
    counts = (plan.params_before, plan.params_after, plan.macs_before, plan.macs_after)
    return (Planned(model, tuple(plan.edits), (note,), counts),
            f"prune the model to {goal} (by {settings['by']}{rounded})")


def _check_swap(old, new) -> dict:
    for name, value in (("old", old), ("new", new)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidEdit(f"{name} is an activation's name, e.g. 'relu' or 'gelu'. Received: {name}={value!r}")
    return {"old": old.strip(), "new": new.strip()}


def _check_mode(mode) -> str | None:
    if mode is not None and mode not in CHANGE_INPUT_MODES:
        raise InvalidEdit(f"mode is how the first layers are adapted to a new number of channels: one of "
                          f"{', '.join(map(repr, CHANGE_INPUT_MODES))} (or None). Received: mode={mode!r}")
    return mode


def _check_changes(changes) -> dict:
    if not isinstance(changes, dict) or not changes or not all(isinstance(k, str) for k in changes):
        raise InvalidEdit(f"configure takes the config keys to change, e.g. units=128. Received: {changes!r}")
    return dict(changes)


def _shape_text(shape) -> str:
    return ", ".join("None" if d is None else str(d) for d in shape)


# ----------------------------------------------------------------------------- the capabilities

S = Status
register_action(
    "replace", "surgery:replace", "give a layer (or one call of a shared layer) another type from the catalog",
    lambda step: step.what(), foretells=(S.REMOVED, S.NEW), example={"key": "dense_1", "label": "Dropout"},
    control="table")
register_action(
    "insert", "surgery:insert", "insert a layer of a catalog type after a layer",
    lambda step: f"{step.what()} (inserted)", foretells=(S.NEW,), example={"key": "dense", "label": "Dropout"},
    control="insert_button")
register_action(
    "delete", "surgery:delete", "delete a layer (a transformer block: drop it); its input flows on",
    lambda step: "block dropped" if getattr(step, "block", False) else "deleted",
    foretells=(S.REMOVED, S.KEPT_INPUT_CHANGED), example={"key": "dense_1"}, control="delete_button")
register_action(
    "configure", "surgery:configure", "rebuild one layer from its config with some keys changed",
    lambda step: "configured (" + ", ".join(f"{k}={v!r}" for k, v in step.params["changes"].items()) + ")",
    whole_model=True, plan=_plan_configure, check=lambda target, changes: {"target": target,
                                                                            "changes": _check_changes(changes)},
    foretells=(S.REINITIALIZED,), example={"key": "dense", "units": 12}, control="configure_apply")
register_action(
    "set_trainable", "surgery:set_trainable", "freeze or unfreeze a layer (every call of it)",
    lambda step: "unfrozen" if step.trainable else "frozen", foretells=(S.KEPT,),
    example={"key": "dense", "trainable": False}, control="trainable_box")
register_action(
    "prune", "pruning:prune", "keep a fraction of a layer's channels (the strongest by a criterion); slice its readers",
    lambda step: f"pruned to {step.params['keep']:.0%}", foretells=(S.PRUNED,),
    example={"key": "dense", "keep": 0.5}, control="prune_slider")
register_action(
    "prune_global", "budget:prune_global", "prune the whole model to one budget: channels, parameters or MACs kept",
    lambda step: f"pruned by {step.params['by']} (model to {budget_of(step.params)[0]} "
                 f"{budget_of(step.params)[1]:.0%})",
    whole_model=True, plan=_plan_prune_global, check=check_global, foretells=(S.PRUNED,), example={"keep": 0.5},
    control="global_apply")
register_action(
    "change_input", "input_change:change_input", "give the model's input a new shape; adapt the layers that read it",
    lambda step: "input " + _shape_text(step.params["shape"]) + (f" ({step.params['mode']})" if step.params["mode"]
                                                                   else ""),
    whole_model=True, plan=_plan_change_input, foretells=(S.ADAPTED,), example={"shape": (8, 8, 1)},
    control="input_apply")
register_action(
    "replace_all", "transforms:replace_all", "give the type chosen for a row to every other layer of its class",
    lambda step: f"{step.params['label']} (like "
                 f"{step.params['like'] if isinstance(step.params['like'], str) else step.params['like'][0]})",
    whole_model=True, plan=_plan_replace_all, foretells=(S.NEW, S.REMOVED), example={"key": "dense_1"},
    needs=(("replace", {"key": "dense_1", "label": "Dense"}),), control="like_button")
register_action(
    "swap_activation", "activations:swap_activation", "use another activation wherever the model applies one",
    lambda step: f"{step.params['old']} \u2192 {step.params['new']}", whole_model=True, plan=_plan_swap,
    check=_check_swap, foretells=(S.KEPT_INPUT_CHANGED,), example={"old": "relu", "new": "gelu"}, control="swap_apply")
register_action(
    "split_activations", "activations:split_activations", "a layer's fused activation becomes an Activation after it",
    lambda step: "activation split", whole_model=True, plan=_plan_split, foretells=(S.NEW,), example={},
    control="split_button")
register_action(
    "fold_batchnorm", "batchnorm:fold_batchnorm", "fold each BatchNormalization into the layer before it",
    lambda step: "fold BatchNorm", whole_model=True, plan=_plan_fold, foretells=(S.FOLDED, S.REMOVED), example={},
    control="fold_button")
register_action(
    "truncate", "transforms:truncate", "make a layer's output the model's output; what follows is removed",
    lambda step: "truncated here", whole_model=True, plan=_plan_truncate, marks_target=True,
    foretells=(S.REMOVED,), example={"key": "pool"}, control="cut_button")
register_action(
    "enable_lora", "lora:enable_lora", "LoRA on a layer, a block's attention projections, or every attention layer",
    lambda step: f"LoRA rank {step.params['rank']}", whole_model=True, plan=_plan_lora,
    foretells=(S.KEPT,), example={"key": "attention", "rank": 2}, control="lora_button")
register_action(
    "prune_heads", "heads:prune_heads", "remove attention heads of a MultiHeadAttention (its weights sliced)",
    lambda step: (f"heads {list(step.params['heads'])} pruned" if step.params["heads"] is not None
                  else f"heads pruned to {step.params['keep']!r}"),
    whole_model=True, plan=_plan_prune_heads, check=_check_heads, foretells=(S.PRUNED,),
    example={"key": "attention", "heads": [0]}, control="heads_apply")
register_action(
    "merge_lora", "lora:merge_lora", "fold every LoRA factor into its kernel: a model without LoRA, same outputs",
    lambda step: "LoRA merged", whole_model=True, plan=_plan_merge_lora, foretells=(S.FOLDED,), example={},
    needs=(("enable_lora", {"key": "dense", "rank": 2}),), control="merge_button")
register_action(
    "deepen", "deepening:deepen", "insert after a layer a layer set to the identity (Net2DeeperNet): same outputs",
    lambda step: "identity layer after" + (" (relu)" if step.params["activation"] == "relu" else ""),
    whole_model=True, plan=_plan_deepen, check=_check_deepen, foretells=(S.NEW,), example={"key": "dense"},
    control="deepen_button")
register_action(
    "widen", "growth:widen", "give a layer (and the layers its channels are tied to) more units or filters, "
    "copies of existing ones (Net2WiderNet): same outputs",
    lambda step: f"widened to {step.params['width']}", whole_model=True, plan=_plan_widen, check=_check_widen,
    foretells=(S.ADAPTED,), example={"key": "dense", "width": 24}, control="widen_apply")
register_action(
    "quantize", "quantization:quantize", "store a layer's (or the model's) weights in int8 / int4 / float8 with "
    "Keras's own quantize(), on a new model",
    lambda step: f"quantized {step.params['mode']}" + (" (model)" if not step.params["target"] else ""),
    whole_model=True, plan=_plan_quantize, check=_check_quantize, foretells=(S.QUANTIZED,),
    example={"key": "dense", "mode": "int8"}, control="quantize_button")
register_action(
    "patch", "patching:patch", "replace a layer's output by zeros (ablation), an array or a function of it, "
    "to see what depends on it", lambda step: "ablated (zeros)", whole_model=True, plan=_plan_patch,
    check=_check_patch, foretells=(S.NEW,), example={"key": "dense"}, control="ablate_button")
register_action(
    "grow_blocks", "blocks_growth:grow_blocks", "add after a transformer or residual block a copy of it whose "
    "output projections are zero (block expansion): same outputs",
    lambda step: "block grown after", whole_model=True, plan=_plan_grow_blocks, check=_check_grow_blocks,
    foretells=(S.NEW,), example={"key": "block"}, control="grow_button")
del S
