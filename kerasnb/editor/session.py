"""The editor's state without any widget: the original model, the steps taken, and the history.

Each step is one user action (choose a type for a layer, insert after it, freeze it, prune it,
or a whole-model action: change the input, apply a choice to every layer like one, swap an
activation, fold BatchNorm, cut the model at a layer). The current model is always
``kerasnb.apply(original, session.edits)``, so undo is just going back to an earlier list of
steps, and an error leaves everything as it was.

A whole-model action is a step of kind ``"transform"`` whose edit is the tuple of edits the
transform returned (``result.edits`` of :mod:`kerasnb.transforms`), worked out on the model the
steps before it make. Those edits only hold for that model: when an earlier step changes (Keep
on a row edited before it, new parameters), the action is worked out again on the new model,
with the same settings, before anything is committed (or refused, and nothing changes).

Pruning: a layer's prune step keeps a fraction of its channels, ranked by one of
:meth:`Session.criteria` ("l1", "l2", "bn_scale"; "apoz" and "taylor" when the session was given
``data=`` to measure channels on); :meth:`Session.prune_preview` says the parameters and MACs
before and after without building. "Prune model..." is a whole-model step (kind ``"transform"``,
label ``"prune_global"``): :func:`kerasnb.prune_global_plan` to a budget on the model the steps
before it make, its edits one :class:`kerasnb.Prune` per group with the channels named;
:meth:`Session.global_prune_plan` answers the slider (the channel scores are kept per model and
criterion, so a move only plans again). A step that names channels (the global one, and a
layer's prune by a criterion other than a kernel norm) is worked out again when a step before it
changes, as the other whole-model steps are.

Transformers: a row whose layer takes several tensors (a keras-hub block takes the hidden states
and a mask) can be deleted where the core's planner says so (:class:`kerasnb.Delete` passes on
the residual stream); on a block the step reads "drop block". LoRA is a whole-model step too
(kind ``"transform"``, label ``"lora"``), one per row (:meth:`Session.enable_lora`: the row's
layer, or a block's attention query and value projections) plus one for every attention
projection (:meth:`Session.enable_lora_attention`); :meth:`Session.merge_lora` folds the factors
in. While LoRA is on, only its factors train, as after :func:`kerasnb.enable_lora` (the session
sets those flags again after each rebuild: they are not edits).

A row of the table is a layer *path*. What the controls act on is a *key*: the path, or
``(path, call_index)`` for one call of a layer the original model calls more than once (a
shared layer); replacing, deleting and inserting are per call, freezing and pruning per layer.

The session answers every question the panel asks about a row in one place,
:meth:`Session.row_actions` (types offered and refused, parameters, whether it can be
deleted, frozen, pruned, cut there or have something inserted after it, whether its chosen type
can go to every layer like it, an input row's shape, and why not), so the panel only
reads those answers and draws them. Shapes come from the model as it is now: a row whose layer a
step replaced is judged where that layer would stand in the model every other step makes. The
whole-model actions are answered by :meth:`Session.model_actions`, and a probe batch's
comparison by :meth:`Session.compare`.

A rebuild of a big model takes a while; before it, :meth:`Session.predict` works out the new
statuses from shapes alone where that is exact (a replace, delete or insert whose new layers
give the shape the old one gave), and ``session.on_predict(report, step)`` hands them to the
panel to show while the model is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _graph, _targets
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
import kerasnb.fitting as fitting
from ..edits import Delete, Insert, Prune, Replace, SetTrainable, Transform, Truncate
from ..errors import IncompatibleShape, InputLayerEdit, InvalidEdit, LayerNotFound, first_line
from .._lineage import Lineage
from ..report import KEPT, KEPT_INPUT_CHANGED, NEW, REMOVED, LayerRow, WeightReport, status_of


RECENT_RESULTS = 4  # models kept for instant undo / redo; each holds a copy of the weights
PRUNE_CRITERIA = ("l1", "l2", "bn_scale")  # what the panel ranks channels by (kerasnb.importance)
DATA_CRITERIA = ("apoz", "taylor")  # ... and these too when the editor was given data= to measure channels on
# The budgets of "Prune model...": a ratio of channels removed (kerasnb.prune_global's keep= is the
# part kept), params and flops (kerasnb.prune_global's params= and macs=: a fraction of the current count kept).
GLOBAL_BUDGETS = ("ratio", "params", "flops")
GLOBAL_ROUND_TO = (None, 8)
INPUT_STAYS = "input layers stay; insert after them instead"
CHANNEL_MODES = ("sum", "repeat", "reinit")  # how kerasnb.change_input adapts the first layers to new channels
SWAP_TO = ("relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "elu", "selu", "softplus", "leaky_relu", "linear")
LORA_RANK = 8  # the rank the LoRA controls start from (kerasnb.enable_lora's default)
# Which projections of an attention layer "LoRA on attention" means. "query, value" is what the
# LoRA paper and keras-hub's own Backbone.enable_lora put it on.
LORA_PROJECTIONS = {"query, value": ("query", "value"), "query, key, value, output": ("query", "key", "value", "output")}
# The names keras-hub and Keras give those projections inside an attention layer.
_PROJECTION_NAMES = {"query": ("query", "query_dense", "q_proj"), "key": ("key", "key_dense", "k_proj"),
                     "value": ("value", "value_dense", "v_proj"),
                     "output": ("attention_output", "output_dense", "o_proj", "out_proj")}


@dataclass(frozen=True)
class Step:
    """One action in the panel and the core edit that carries it out."""

    kind: str  # "choice" (replace / remove), "insert", "trainable", "prune" or "transform"
    target: Any  # the layer's path ("outer/inner" inside a nested model), or (path, call_index); "" for the whole model
    edit: Any  # one core edit; for a transform, the tuple of edits it returned
    label: str = ""  # catalog label for choices and inserts; the action's name for a transform
    params: dict = field(default_factory=dict)  # a transform: its settings, enough to work it out again
    names: tuple = ()  # names of the layers this step adds, so their rows lead back to it
    trainable: bool | None = None
    # prune: (params before, params after, MACs before, MACs after) the step; "prune_global" the same
    counts: tuple = field(default=(), compare=False)
    input_shape: Any = field(default=None, compare=False)  # what the new layers were made for
    text: str = field(default="", compare=False)  # a transform, in words
    notes: tuple = field(default=(), compare=False)  # a transform: what it decided, and what it left alone
    # a transform, or a prune by a criterion that is not a kernel norm (its channels are named):
    # the steps it was worked out after
    base: tuple = field(default=(), compare=False, repr=False)
    replaced: Any = field(default=None, compare=False, repr=False)  # a choice: the class of the layer it replaced
    block: bool = field(default=False, compare=False, repr=False)  # a delete of a transformer block ("drop block")

    @property
    def edits(self) -> tuple:
        """The core edits this step stands for (a transform stands for several)."""
        return tuple(self.edit) if self.kind == "transform" else (self.edit,)

    def what(self) -> str:
        """The chosen type with its parameters, e.g. ``Dropout(rate=0.2)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.label}({args})" if args else self.label

    def describe(self) -> str:
        if self.kind == "transform":
            return self.text
        what, target = self.what(), key_text(self.target)
        if self.kind == "choice":
            if isinstance(self.edit, Delete):
                return f"{'drop block' if self.block else 'delete'} {target}"
            return f"replace {target} with {what}"
        if self.kind == "insert":
            return f"insert {what} after {target}"
        if self.kind == "prune":
            return f"prune {target} keeping {self.params['keep']:.0%} of its channels (by {self.params['by']})"
        return f"{'unfreeze' if self.trainable else 'freeze'} {target}"


@dataclass(frozen=True)
class Param:
    """One parameter of the type a row has: what its control shows."""

    name: str
    value: Any
    choices: tuple | None = None  # the allowed values (a dropdown), the current one first if not among them


@dataclass(frozen=True)
class PruneInfo:
    """Whether a row's layer is pruned or can be, and the model's parameter counts around it."""

    keep: float | None  # the fraction its prune step keeps; None when it is not pruned
    reason: str  # why it cannot be pruned; "" when it can (or is)
    before: int  # model parameters before the prune step (the current model's when not pruned)
    after: int  # ... and after it (the same as before when not pruned)
    macs_before: int | None = field(default=None, compare=False)  # multiply-accumulates per sample, likewise
    macs_after: int | None = field(default=None, compare=False)  # (None: not worked out, or sizes unknown)
    by: str = field(default="l1", compare=False)  # the criterion its prune step ranks channels by

    @property
    def can_prune(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class RowActions:
    """Everything the panel shows for one row (or one call of a shared layer): plain data."""

    key: Any  # the exact key: the path, or (path, call_index)
    label: str  # the type the row has now (Keep when it has none)
    offered: tuple  # labels the Type dropdown offers: the row's own label first if it no longer fits
    refused: dict  # label -> why that type is not offered here
    params: tuple  # Param per parameter of the row's type
    can_choose: bool
    choose_reason: str
    insertable: tuple  # labels that can be inserted after it
    insert_reason: str  # why nothing can be inserted after it ("" when something can)
    can_delete: bool
    delete_reason: str
    trainable: bool
    can_freeze: bool  # the trainable flag can be changed
    freeze_reason: str
    prune: PruneInfo
    like: LikeInfo | None = None  # giving the row's chosen type to every layer like it (None: not asked)
    input_shape: tuple | None = None  # an input row of the model: its shape without the batch axis
    input_reason: str = "only the model's input rows can change its input"  # why not ("" when it can)
    cut_reason: str = ""  # why the model cannot be cut at this row ("" when it can)
    delete_label: str = "Delete"  # "Drop block" for a transformer block (a layer with attention inside)
    lora: LoraInfo | None = None  # LoRA on this row (None: not asked)

    @property
    def can_insert(self) -> bool:
        return bool(self.insertable)

    @property
    def can_change_input(self) -> bool:
        return not self.input_reason

    @property
    def can_cut(self) -> bool:
        return not self.cut_reason


@dataclass(frozen=True)
class LikeInfo:
    """Whether the type chosen for a row can also be given to every other layer of its class."""

    label: str  # the type chosen for the row ("" when it has none)
    type: str  # the class of the layer the row had, e.g. "Dense"
    others: int  # other layers of that class in the current model
    reason: str  # why not ("" when it can)

    @property
    def can_apply(self) -> bool:
        return not self.reason

    @property
    def count(self) -> int:
        """This layer and the others like it: the N of "apply to all N layers like this one"."""
        return self.others + 1


@dataclass(frozen=True)
class LoraInfo:
    """LoRA on one row: on the layer itself (Dense, EinsumDense, Embedding, convolution) or, on a
    block, on its attention projections; whether it can be turned on or off there, and why not."""

    targets: tuple  # paths of the layers LoRA goes on for this row ("outer/block/attention/query", ...)
    what: str  # those layers in words: "this EinsumDense layer", "2 attention projections (query, value)"
    rank: int  # the rank this row's own LoRA step gives (0: the row has no LoRA step)
    on: dict  # {path: rank} of the layers at or inside this row that have LoRA now (from any step)
    reason: str  # why LoRA cannot be turned on here ("" when it can; with a step, "on" changes its rank)
    off_reason: str  # why it cannot be turned off here ("" when the row has its own LoRA step)

    @property
    def can_enable(self) -> bool:
        return not self.reason

    @property
    def can_disable(self) -> bool:
        return not self.off_reason


@dataclass(frozen=True)
class ModelActions:
    """The whole-model actions the panel offers for the current model, and why not: plain data."""

    activations: tuple  # activations the model applies now (what "Swap activation" can swap from)
    swap_to: tuple  # what it can swap to
    swap_reason: str  # why nothing can be swapped ("" when something can)
    batchnorms: int  # BatchNormalization layers in the model
    fold_reason: str  # why "Fold BatchNorm" has nothing to do ("" when it may)
    lora_projections: dict = field(default_factory=dict)  # LORA_PROJECTIONS key -> how many the model has
    lora_rank: int = 0  # the rank of the whole-model LoRA step (0: there is none)
    lora_which: str = ""  # which projections that step names (a key of LORA_PROJECTIONS)
    lora_on: int = 0  # layers that have LoRA now (from any step)
    lora_reason: str = "not asked"  # why "LoRA on attention" cannot be done ("" when it can)
    lora_off_reason: str = "not asked"  # why the whole-model LoRA step cannot be taken back ("" when it can)
    merge_reason: str = "not asked"  # why "Merge LoRA" has nothing to do ("" when it may)
    trainable_params: int = 0  # parameters that train in the current model (only the factors, with LoRA)

    @property
    def can_lora(self) -> bool:
        return not self.lora_reason

    @property
    def can_lora_off(self) -> bool:
        return not self.lora_off_reason

    @property
    def can_merge(self) -> bool:
        return not self.merge_reason

    @property
    def can_swap(self) -> bool:
        return not self.swap_reason

    @property
    def can_fold(self) -> bool:
        return not self.fold_reason


@dataclass(frozen=True)
class Comparison:
    """The current model and the original run on the probe batch: ``frame`` (one row per layer in
    both, see :func:`kerasnb.compare.compare`) and ``note`` (how the probe was fed to each, or why
    there is no comparison, with ``frame`` None)."""

    frame: Any
    note: str


def path_of(key) -> str:
    """The layer path of a key (``"shared"`` for ``("shared", 1)``)."""
    return key[0] if isinstance(key, tuple) else key


def call_of(key):
    """The call index of a key, or None for a whole layer."""
    return key[1] if isinstance(key, tuple) else None


def key_text(key) -> str:
    """``'dense_1'``, or ``'shared' (call 1)`` for one call of a shared layer."""
    return f"{path_of(key)!r} (call {call_of(key)})" if isinstance(key, tuple) else repr(key)


class Session:
    """What the panel edits; every method either succeeds or raises and changes nothing."""

    def __init__(self, model, probe=None, data=None):
        _graph.functional(model)  # refuse unbuilt / subclassed models before drawing anything
        self.original = model
        self.probe = None if probe is None else check_probe(model, probe)  # a batch to compare outputs on
        # Examples to measure channels on (kerasnb.importance's data=): offers "apoz" and "taylor".
        self.data = data
        self._costs: tuple = (None, None)  # (model, kerasnb.flops.layer_cost of it) for the MACs shown
        self._global_scores: dict = {}  # criterion -> (model, scores of every group) for "Prune model..."
        self.original_rows = {info.path: info for info in _graph.describe(model)}
        # A tied layer (a task's head reusing the backbone's embedding) is one row, as in every report.
        self._aliases = _graph.layer_aliases(model)
        self.history: list[tuple] = [()]
        self.cursor = 0
        self.result = None  # SurgeryResult of the current steps; None while there are none
        self._rows_cache: dict | None = None
        self._recent: list = []  # (steps, result) of the last few rebuilds, most recently used first
        self._prune_reasons: tuple = (None, {})  # (model, {path: reason}) for the current model
        # Called as on_predict(report, step) before a rebuild whose statuses :meth:`predict` can tell.
        self.on_predict = None

    # ------------------------------------------------------------------ current state

    @property
    def steps(self) -> tuple:
        return self.history[self.cursor]

    @property
    def model(self):
        return self.result.model if self.result is not None else self.original

    @property
    def report(self) -> WeightReport:
        if self.result is not None:
            return self.result.report
        return _unchanged_report(self.original_rows.values(), self._aliases)

    @property
    def edits(self) -> tuple:
        """The core edits, in the order :func:`kerasnb.apply` runs them (see :func:`ordered`);
        ``kerasnb.apply(session.original, session.edits)`` makes :attr:`model` again."""
        return edits_of(self.steps)

    @property
    def notes(self) -> list[str]:
        notes = list(self.result.notes) if self.result is not None else []
        for step in self.steps:
            if step.kind == "transform":  # what a whole-model action decided, and what it left alone
                notes.extend(n for n in step.notes if n not in notes)
                continue
            entry = _entry_or_none(step.label)
            if entry is None or entry.note is None or step.kind != "choice":
                continue
            try:  # about the replacement as it was made: for the shape it was made for
                notes.append(str(entry.note(step.input_shape, **step.params)))
            except Exception as error:  # a registered note's own code failed: said, not raised
                notes.append(f"{step.label}: its note could not be written ({first_line(error, 200)})")
        return notes

    @property
    def can_undo(self) -> bool:
        return self.cursor > 0

    @property
    def can_redo(self) -> bool:
        return self.cursor < len(self.history) - 1

    @property
    def can_reset(self) -> bool:
        return bool(self.steps)

    def rows(self) -> dict:
        """``{path: LayerInfo}`` of the current model (cached until the next change)."""
        if self._rows_cache is None:
            self._rows_cache = (
                self.original_rows if self.result is None
                else {info.path: info for info in _graph.describe(self.result.model)}
            )
        return self._rows_cache

    # ------------------------------------------------------------------ what a row stands for

    def calls(self, path: str) -> int:
        """How many times the original model calls the layer at ``path`` (1 for new layers)."""
        info = self.original_rows.get(path)
        return max(info.calls, 1) if info is not None else 1

    def keys(self, path: str) -> list:
        """What the controls can act on for a row: the path, or one ``(path, i)`` per call."""
        n = self.calls(path)
        return [(path, i) for i in range(n)] if n > 1 else [path]

    def key(self, key):
        """``key`` made exact: a shared layer's bare path means its first call."""
        if isinstance(key, list):
            key = tuple(key)
        if isinstance(key, tuple):
            return key if self.calls(key[0]) > 1 else key[0]
        return (key, 0) if self.calls(key) > 1 else key

    def default_key(self, keys=None):
        """The key to select when none is (or the selected one is gone): the first of ``keys``
        (every row's keys by default) whose layer is in the current model and is not an input."""
        rows = self.rows()
        keys = list(keys) if keys is not None else [k for path in rows for k in self.keys(path)]
        return next((k for k in keys if path_of(k) in rows and not rows[path_of(k)].is_input),
                    keys[0] if keys else None)

    def step_for(self, key):
        """The choice or insert step whose target or added layers include ``key``, or None."""
        if key is None:
            return None
        path = path_of(key)
        for step in self.steps:
            if step.kind in ("trainable", "prune", "transform"):  # a transform's layers are rows of their own
                continue
            if step.target == key and step.kind == "choice":
                return step
            if _under(path, step.names):
                return step
        return None

    def prune_step(self, path: str):
        """The step pruning the layer at ``path``, or None."""
        return next((s for s in self.steps if s.kind == "prune" and s.target == path), None)

    def site(self, key) -> fitting.Site:
        """Where ``key`` stands, with the shapes it really sees in the current edited model.

        A layer (or call) of the current model is looked up there (a shared layer's calls are
        numbered as the current model numbers them). One that a step replaced or deleted is
        looked up where it would stand if only that step were taken back: in the model all the
        other steps make, so an upstream change of width is seen.
        """
        return fitting.locate(*self._place(key))

    def _place(self, key) -> tuple:
        """``(model, target)``: the model :meth:`site` looks ``key`` up in, and ``key`` as it names it there."""
        key = self.key(key)
        gone = self._gone_reason(key)
        if gone:
            raise InvalidEdit(f"{gone}. Received: key={key!r}")
        own = self._own_step(key)
        if own is not None:
            return self._base_place(own)
        return self.model, _key_in(self.steps, key)

    def options(self, key) -> tuple[list, dict]:
        """``(labels offered, {label: reason not offered})`` for ``key`` (a row or one call of it)."""
        key = self.key(key)
        step = self.step_for(key)
        own = (step.label, step.params) if step is not None else None  # its own type: with its own values
        if step is not None and step.kind == "insert":
            # An inserted row can become another insertable type, or be removed again.
            offered, refused = _insertable(self._base_site(step), own)
            return [catalog.REMOVE] + offered, refused
        place = self._base_place(step) if step is not None else self._place(key)
        site = fitting.locate(*place)
        offered, refused = [], {}
        for entry in catalog.entries():
            params = own[1] if own is not None and entry.label == own[0] else {}
            ok, reason = _fits(entry, place, site, **params)
            if ok:
                offered.append(entry.label)
            else:
                refused[entry.label] = reason
        return offered, refused

    def insert_options(self, key) -> tuple[list, dict]:
        """Types that can be inserted after ``key`` as it stands in the current model."""
        return _insertable(self.site(key))

    def row_actions(self, key) -> RowActions:
        """What the panel shows for ``key``: the types offered and refused, the parameters, and
        whether it can be deleted, frozen, pruned, cut there or have a layer inserted after it,
        whether its chosen type can go to every layer like it, and (an input row) its shape, with
        why not.
        """
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nothing to show. Select a row first. Received: key=None")
        key = self.key(key)
        path = path_of(key)
        info = self.rows().get(path)
        was = info or self.original_rows.get(path)
        trainable = bool(was.trainable) if was is not None else True
        gone = self._gone_reason(key)
        if gone:  # inside a nested model that a step replaced: nothing to act on here
            n = self._count()
            return RowActions(key, catalog.KEEP, (catalog.KEEP,), {}, (), False, gone, (), gone, False, gone,
                              trainable, False, gone, PruneInfo(None, gone, n, n),
                              like=LikeInfo("", was.type if was is not None else "", 0, gone),
                              input_reason=gone, cut_reason=gone, lora=LoraInfo((), "", 0, {}, gone, gone))
        step = self.step_for(key)
        own = self._own_step(key)
        offered, refused = self.options(key)
        label = step.label if step is not None else catalog.KEEP
        shown = tuple(offered) if label in offered else (label,) + tuple(offered)
        is_input = bool(info is not None and info.is_input)
        if own is not None or info is None:
            insertable, insert_reason = (), f"{key_text(key)} was replaced or deleted; insert after what stands there now"
        else:
            insertable = tuple(self.insert_options(key)[0])
            insert_reason = "" if insertable else "no type can go after it"
        if is_input:
            can_delete, delete_reason = False, INPUT_STAYS
        elif own is not None and isinstance(own.edit, Delete):
            can_delete, delete_reason = False, f"{key_text(key)} is deleted already; choose Keep to bring it back"
        elif catalog.REMOVE in offered:
            can_delete, delete_reason = True, ""
        else:
            can_delete, delete_reason = False, refused.get(catalog.REMOVE, "it cannot be removed here")
        if info is None:
            freeze_reason = f"{path!r} is not in the edited model: it was replaced or deleted"
        else:
            freeze_reason = "an input layer has no weights to freeze" if is_input else ""
        return RowActions(
            key=key, label=label, offered=shown, refused=refused, params=self._params_of(step),
            can_choose=not is_input, choose_reason=INPUT_STAYS if is_input else "",
            insertable=insertable, insert_reason=insert_reason,
            can_delete=can_delete, delete_reason=delete_reason,
            trainable=trainable, can_freeze=not freeze_reason, freeze_reason=freeze_reason,
            prune=self.prune_info(key), like=self.like_info(key),
            input_shape=self.input_shape(path) if is_input and "/" not in path else None,
            input_reason=self._input_reason(path, is_input), cut_reason=self.cut_reason(key),
            delete_label="Drop block" if info is not None and _is_block(self._layer(path)) else "Delete",
            lora=self.lora_info(key),
        )

    def prune_info(self, key) -> PruneInfo:
        """Whether the layer of ``key`` is pruned (and the parameter counts), or why it cannot be."""
        key = self.key(key)
        step = self.prune_step(path_of(key))
        if step is not None:
            before, after, macs_before, macs_after = step.counts or (self._count(), self._count(), None, None)
            return PruneInfo(step.params["keep"], "", before, after, macs_before, macs_after, step.params["by"])
        now = self._count()
        return PruneInfo(None, self.prune_reason(key), now, now)

    def criteria(self) -> tuple:
        """The criteria a layer's channels can be ranked by here: ``"apoz"`` and ``"taylor"`` only
        when the session has ``data`` to measure them on."""
        return PRUNE_CRITERIA + (DATA_CRITERIA if self.data is not None else ())

    def prune_preview(self, key, keep: float, by: str = "l1") -> PruneInfo:
        """What :meth:`prune` with these values would give, worked out without building a model:
        the parameters and multiply-accumulates per sample (MACs) before and after, counted on the
        model the steps before the layer's prune step make (the current model when it has none)."""
        keep, by, path = self._check_prune(key, keep, by)
        steps = list(self.steps)
        old = self.prune_step(path)
        if old is None:
            reason = self.prune_reason(key if isinstance(key, tuple) else path)
            if reason:
                raise InvalidEdit(f"{reason.rstrip('.')}. Received: key={key!r}")
        base = tuple(steps[:steps.index(old)]) if old is not None else tuple(steps)
        built = self._build(base)
        model = built.model if built is not None else self.original
        before = _graph.count_params(model)
        if keep >= 1.0:
            macs = self._macs(model)
            return PruneInfo(None, "", before, before, macs, macs, by)
        _, params_after, macs_before, macs_after = self._prune_plan(model, path, keep, by)
        return PruneInfo(keep, "", before, params_after, macs_before, macs_after, by)


    def input_shape(self, name: str) -> tuple:
        """The shape (without the batch axis) of the current model's input layer ``name``."""
        for layer in _graph.input_layers(self.model):
            if layer.name == name:
                return tuple(layer.batch_shape)[1:]
        names = [l.name for l in _graph.input_layers(self.model)]
        raise LayerNotFound(f"The model has no input named {name!r}; its inputs: {names}. Received: input={name!r}")

    def _input_reason(self, path: str, is_input: bool) -> str:
        if not is_input:
            return "only the model's input rows can change its input; select one"
        if "/" in path:
            return "this is the input of a nested model; change the input of the whole model instead"
        return ""

    def like_info(self, key) -> LikeInfo:
        """Whether the type chosen for ``key`` can be given to every other layer of the class it had.

        Only counts them (cheap): which of them the type fits is worked out when it is asked
        (:meth:`apply_to_all`), and those it does not fit are left alone and named.
        """
        key = self.key(key)
        own = self._own_step(key)
        if own is None or own.replaced is None:
            return LikeInfo("", "", 0, "choose a type for this row first; then it can go to every layer like it")
        cls = own.replaced
        others = len(self._like_candidates(cls, path_of(key))[0])
        reason = "" if others else f"there is no other {cls.__name__} layer in the model"
        return LikeInfo(own.label, cls.__name__, others, reason)

    def lora_info(self, key) -> LoraInfo:
        """LoRA on the row of ``key``: which layers it goes on (the row's own layer, or a block's
        attention projections), the rank of the row's own LoRA step, what has LoRA now, and why
        it cannot be turned on or off there."""
        key = self.key(key)
        path = path_of(key)
        if path not in self.rows() and path not in self.original_rows and self._own_step(key) is None:
            from ..errors import suggest

            raise LayerNotFound(f"No row {path!r} in the model.{suggest(str(path), self.rows())} Received: key={key!r}")
        gone = self._gone_reason(key)
        if gone:
            return LoraInfo((), "", 0, {}, gone, gone)
        own = self._lora_step(path)
        rank = own.params["rank"] if own is not None else 0
        info = self.rows().get(path)
        layer = self._layer(path) if info is not None else None
        on = _lora_now_in(path, layer) if layer is not None else {}
        giver = own or self._lora_giver(path)
        off_reason = "" if own is not None else (
            f"its LoRA comes from the step \u201c{giver.describe()}\u201d; take that back instead (undo, or turn LoRA "
            "off where it was turned on)" if giver is not None and on else "LoRA is not on here")
        if info is None or layer is None:
            why = f"{key_text(key)} was replaced or deleted; LoRA goes on what stands there now"
            return LoraInfo((), "", rank, {}, why, off_reason if own is not None else why)
        if info.is_input:
            why = "an input layer has no weights for LoRA"
        elif info.is_container:
            why = ("this is a nested model: turn LoRA on for its blocks or layers on their rows, or on every "
                   "attention projection with \u201cLoRA on attention\u201d")
        else:
            why = ""
        targets, what = _lora_targets(path, layer, LORA_PROJECTIONS["query, value"]) if not why else ((), "")
        if not why and not targets:
            why = (f"LoRA goes on Dense, EinsumDense, Embedding and convolution layers, and on blocks with attention "
                   f"(on their query and value projections); {path!r} is {_a(type(layer).__name__)}")
        if not why and own is None and all(t in on for t in targets):
            why = (f"LoRA is on {what} already"
                   + (f", from the step \u201c{giver.describe()}\u201d" if giver is not None else ""))
        return LoraInfo(tuple(targets), what, rank, on, why, off_reason)

    def cut_reason(self, key) -> str:
        """Why the model cannot be cut at ``key`` (its output made the model's output), or ``""``."""
        key = self.key(key)
        path = path_of(key)
        info = self.rows().get(path)
        if info is None or self._own_step(key) is not None:
            return f"{key_text(key)} was replaced or deleted; cut at what stands there now"
        if info.is_input:
            return "an input row computes nothing; cut after a layer"
        if path.count("/") > 1:
            return "the model can be cut inside a nested model one level deep, not deeper"
        if "/" not in path:
            from .. import _targets

            try:
                call = _targets.resolve(self.model, _key_in(self.steps, key)).single_call()
            except Exception as error:  # noqa: BLE001 -- the resolver's refusal, said as the reason
                return first_line(error, 200)
            outputs = [id(t) for t in _graph.output_tensors(self.model)]
            if len(outputs) == 1 and [id(t) for t in call.outputs] == outputs:
                return "its output is the model's output already"
        return ""

    def model_actions(self) -> ModelActions:
        """What the whole-model actions can do on the current model (swap from what, fold how many)."""
        used = importlib.import_module("kerasnb.activations").activations_in(self.model)
        swap_reason = "" if used else ("the model applies no activation that can be swapped (an Activation or "
                                       "ReLU layer, or one fused in a Dense / Conv layer)")
        import keras

        batchnorms = sum(isinstance(layer, keras.layers.BatchNormalization)
                         for _, layer in _graph.walk_layers(self.model))
        fold_reason = "" if batchnorms else "the model has no BatchNormalization layer"
        counts = {which: len(_attention_projections_of(self.model, names)) for which, names in LORA_PROJECTIONS.items()}
        own = self._lora_step("")
        on = _lora_now(self.model)
        lora_reason = "" if own is not None or any(counts.values()) else (
            "the model has no attention layer with query and value projections (keras-hub blocks and Keras's "
            "MultiHeadAttention have them); turn LoRA on for single layers on their rows")
        off_reason = "" if own is not None else "no \u201cLoRA on attention\u201d step to take back"
        merge_reason = "" if on else "no layer has LoRA; turn it on first"
        trainable = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        return ModelActions(tuple(used), SWAP_TO, swap_reason, batchnorms, fold_reason, counts,
                            own.params["rank"] if own is not None else 0,
                            own.params["projections"] if own is not None else "", len(on), lora_reason, off_reason,
                            merge_reason, trainable)

    def compare(self, x=None) -> Comparison:
        """Run the current model and the original on ``x`` (the probe batch by default).

        When the input lost its channels to one (:meth:`change_input` with channels "sum"), the
        edited model gets each probe example's mean over the channels, and the original that
        grey example repeated: what the sum rule promises to compute alike. Another input shape
        cannot be compared; the note says why.
        """
        if x is None:
            if self.probe is None:
                raise InvalidEdit("No probe batch to compare on: open the editor with show_editor(model, probe=x), or "
                                  "pass x. Received: x=None")
            x = self.probe
        else:
            x = check_probe(self.original, x)
        n = len(x[0])
        if self.result is None:
            return Comparison(None, f"No edit yet: the model is the original, so its outputs on the {n} probe "
                                    "example(s) are the same.")
        new_shapes = [tuple(t.shape)[1:] for t in _graph.input_tensors(self.model)]
        given = [a.shape[1:] for a in x]
        feed, original_x, how = x, None, f"Both models ran on the {n} probe example(s)"
        if not all(_fits_shape(g, s) for g, s in zip(given, new_shapes)):
            if len(x) == 1 and len(new_shapes[0]) == len(given[0]) and new_shapes[0][-1] == 1 \
                    and _fits_shape(given[0][:-1], new_shapes[0][:-1]):
                grey = x[0].mean(axis=-1, keepdims=True).astype(x[0].dtype)
                feed, original_x = [grey], [np.repeat(grey, given[0][-1], axis=-1)]
                how = (f"The input now has 1 channel: the edited model ran on each of the {n} probe example(s) "
                       f"averaged over its {given[0][-1]} channels, the original on that grey example repeated "
                       f"to {given[0][-1]} channels")
            else:
                return Comparison(None, f"The edited model takes inputs shaped {_shapes_text(new_shapes)} and the "
                                        f"probe batch is {_shapes_text(given)}, so they cannot be compared.")
        import warnings

        from ..compare import compare

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = compare(self.result, _one_or_list(feed), original=self.original,
                            original_x=None if original_x is None else _one_or_list(original_x))
        broken = [str(c.message) for c in caught if type(c.message).__name__ == "BrokenPromiseWarning"]
        return Comparison(frame, how + ("." if not broken else ". " + broken[0]))

    # ------------------------------------------------------------------ actions

    def prune_reason(self, path: str) -> str:
        """Why the layer at ``path`` cannot be pruned in the current model, or ``""`` when it can.

        Asked only for the row the user selects, and kept per model: one channel analysis per
        row asked about, none at all when the editor opens on a layer that makes no channels.
        """
        if isinstance(path, tuple):
            return (f"{path[0]!r} is shared (called {self.calls(path[0])} times with the same weights); "
                    "pruning works on layers called once")
        model, known = self._prune_reasons
        if model is not self.model:
            known = {}
            self._prune_reasons = (self.model, known)
        if path not in known:
            info = self.rows().get(path)
            if info is None:
                known[path] = f"{path!r} is not in the current model"
            elif info.is_input or info.is_container or "/" in path or not info.params:
                # Said here without an analysis: pruning works on top-level layers that make channels.
                what = ("an input" if info.is_input else "a nested model" if info.is_container
                        else "inside a nested model" if "/" in path else "a layer without weights")
                known[path] = (f"{path!r} is {what}; only top-level Dense and convolution layers "
                               "have channels to prune")
            else:
                known[path] = pruning_module().unprunable_reason(self.model, path)
        return known[path]

    def prune(self, key, keep: float, by: str = "l1") -> str:
        """Keep the fraction ``keep`` of the layer's channels (the strongest by ``by``); 1 undoes it.

        ``by``: one of :meth:`criteria` (``"l1"``, ``"l2"``, ``"bn_scale"``; ``"apoz"`` and
        ``"taylor"`` with the session's ``data``). One prune step per layer: pruning it again
        changes that step in place. Returns the path.

        By ``"l1"`` / ``"l2"`` the step's edit is ``Prune(path, keep=..., by=...)``; by another
        criterion its edit names the channels chosen on the model the steps before it make, and
        they are chosen again when those steps change.
        """
        keep, by, path = self._check_prune(key, keep, by)
        steps = list(self.steps)
        old = self.prune_step(path)
        if keep >= 1.0:
            if old is not None:
                self._commit(_without(steps, old))
            return path
        if old is None:
            reason = self.prune_reason(key if isinstance(key, tuple) else path)
            if reason:
                raise InvalidEdit(f"{reason.rstrip('.')}. Received: key={key!r}")
            index = len(steps)
            steps.append(None)
        else:
            index = steps.index(old)
        steps[index] = self._prune_step_on(tuple(steps[:index]), path, keep, by)
        self._commit(steps)
        return path

    def _check_prune(self, key, keep, by) -> tuple:
        """``(keep, by, path)`` checked, or :class:`InvalidEdit` saying what would work."""
        if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or math.isnan(keep) or not 0 < keep <= 1:
            raise InvalidEdit(
                "keep is the fraction of the layer's channels to keep: a number with 0 < keep <= 1 "
                f"(0.5 keeps half; 1 takes the pruning back). Received: keep={keep!r}"
            )
        offered = self.criteria()
        if by not in offered:
            more = ("" if self.data is not None or by not in DATA_CRITERIA else
                    f"; {by!r} measures channels on examples: open the editor with data=x to offer it")
            raise InvalidEdit(f"by is how channels are ranked: one of {', '.join(map(repr, offered))}{more}. "
                              f"Received: by={by!r}")
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nothing to prune. Select a Dense or convolution "
                              "layer first. Received: key=None")
        path = path_of(key)
        if path not in self.rows() and path not in self.original_rows:
            raise InvalidEdit(f"No layer {path!r} to prune. Received: key={key!r}")
        return float(keep), by, path

    def _prune_step_on(self, base: tuple, path: str, keep: float, by: str) -> Step:
        """The step pruning ``path`` to ``keep`` by ``by``, after the steps ``base``; its counts are
        the parameters of the models before and after it (built) and the MACs from the plan."""
        before = self._build(base)  # usually the current or the previous state: kept
        model = before.model if before is not None else self.original
        channels, _, macs_before, macs_after = self._prune_plan(model, path, keep, by)
        if by in ("l1", "l2"):  # the core ranks by kernel norms itself: the step holds on any model
            edit = Prune(path, keep=keep, by=by)
        else:
            edit = Prune(path, channels=channels)
        step = Step("prune", path, edit, "Prune", {"keep": keep, "by": by}, base=base)
        after = self._build(base + (step,))
        counts = (_graph.count_params(model), _graph.count_params(after.model), macs_before, macs_after)
        return dataclasses.replace(step, counts=counts)

    def _prune_plan(self, model, path: str, keep: float, by: str) -> tuple:
        """``(channels removed, params after, MACs before, MACs after)`` of pruning ``path`` of ``model``
        to ``keep`` by ``by``, without building (MACs None when the model's sizes are unknown)."""
        from .. import _slicing, budget, criteria

        with _graph.memo():
            scorer = criteria.scorer(model, by, self.data)
            analysis, removed, _ = _slicing.choose(model, path, None, keep, scorer, True)
            params_after = _slicing.params_after_removal(analysis, removed, _graph.count_params(model))
            costs = self._layer_costs(model)
            macs_after = None if costs is None else budget.macs_after_removal(analysis, removed, costs)
        channels = tuple(int(i) for idx in removed.values() for i in idx)
        macs_before = None if costs is None else int(sum(c.macs for c in costs.values()))
        return channels, params_after, macs_before, macs_after

    def _layer_costs(self, model):
        """:func:`kerasnb.flops.layer_cost` of ``model`` (kept for the current one), None when its
        sizes are unknown."""
        held, costs = self._costs
        if held is not model:
            from ..errors import SurgeryError
            from ..flops import layer_cost

            try:
                costs = layer_cost(model)
            except SurgeryError:
                costs = None
            self._costs = (model, costs)
        return costs

    def macs(self):
        """The current model's multiply-accumulates per sample (:func:`kerasnb.flops.total_macs`), or
        None when its sizes are unknown."""
        return self._macs(self.model)

    def _macs(self, model):
        costs = self._layer_costs(model)
        return None if costs is None else int(sum(c.macs for c in costs.values()))

    # ------------------------------------------------------------------ pruning the whole model

    def global_prune_plan(self, budget: str, target: float, by: str = "l1", round_to=None):
        """What :meth:`prune_global` with these values would do to the current model, without
        building it: a :class:`kerasnb.budget.GlobalPlan` (params and MACs before and after).

        ``budget``: ``"ratio"`` (``target`` is the fraction of channels removed), ``"params"`` or
        ``"flops"`` (``target`` is the fraction of the current parameters / MACs kept, at most).
        ``by``: one of :meth:`criteria`. ``round_to``: None or a channel multiple (8). The channels
        are scored once per model and criterion; later plans reuse the scores (a slider's moves).
        A budget pruning cannot reach raises :class:`kerasnb.budget.BudgetNotReachable`.
        """
        params = self._check_global(budget, target, by, round_to)
        return self._global_plan(self.model, params)

    def prune_global(self, budget: str, target: float, by: str = "l1", round_to=None) -> tuple:
        """Prune the whole model to one budget (:func:`kerasnb.prune_global`) as one step, after the
        others; see :meth:`global_prune_plan` for the arguments. Returns the step's counts:
        ``(params before, params after, MACs before, MACs after)``. A budget that cannot be
        reached is refused and nothing changes."""
        params = self._check_global(budget, target, by, round_to)
        steps = list(self.steps)
        step = self._make_transform("prune_global", params, tuple(steps))
        self._commit(steps + [step])
        return step.counts

    def _check_global(self, budget, target, by, round_to) -> dict:
        if budget not in GLOBAL_BUDGETS:
            raise InvalidEdit(f"budget is one of {', '.join(map(repr, GLOBAL_BUDGETS))} (remove a fraction of the "
                              f"channels, or keep at most a fraction of the parameters / MACs). Received: "
                              f"budget={budget!r}")
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or math.isnan(target) \
                or not (0 <= target < 1 if budget == "ratio" else 0 < target <= 1):
            wanted = ("the fraction of channels to remove, 0 <= target < 1" if budget == "ratio" else
                      f"the fraction of the current {'parameters' if budget == 'params' else 'MACs'} to keep at "
                      "most, 0 < target <= 1")
            raise InvalidEdit(f"target is {wanted}. Received: budget={budget!r}, target={target!r}")
        offered = self.criteria()
        if by not in offered:
            raise InvalidEdit(f"by is how channels are ranked: one of {', '.join(map(repr, offered))}. "
                              f"Received: by={by!r}")
        if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral)
                                     or round_to < 1):
            raise InvalidEdit(f"round_to is None or a whole number of channels (e.g. 8). Received: round_to={round_to!r}")
        return {"budget": budget, "target": float(target), "by": by,
                "round_to": None if round_to in (None, 1) else int(round_to)}

    def _global_plan(self, model, params: dict):
        """The :class:`kerasnb.budget.GlobalPlan` of ``params`` on ``model``, reusing its scores."""
        from .. import budget

        by = params["by"]
        held = self._global_scores.get(by)
        scores = held[1] if held is not None and held[0] is model else None
        # The panel's budgets in the core's words: a ratio of channels removed is keep= (the part kept).
        kind, target = params["budget"], params["target"]
        goal = {"keep": 1 - target} if kind == "ratio" else {"macs" if kind == "flops" else kind: target}
        plan = budget.prune_global_plan(model, **goal, by=None if scores else by,
                                        data=None if scores else self.data, round_to=params["round_to"],
                                        scores=scores)
        if scores is None:
            self._global_scores = {k: v for k, v in self._global_scores.items() if v[0] is model}
            self._global_scores[by] = (model, plan.scores)
        return plan

    def choose(self, key, label: str, params: dict | None = None):
        """Give ``key`` (a row, or one call of a shared layer) the type ``label`` (Keep undoes a choice).

        Returns the key that stands for this layer afterwards (an inserted layer's new name, or
        the target), so the panel can keep it selected; None when the row is gone.
        """
        entry = catalog.get(label)  # an unknown label is refused first, with the known ones
        if key is None:
            raise InvalidEdit(f"No layer is selected, so {label!r} has nothing to replace. Select a row first. "
                              f"Received: key=None, label={label!r}")
        key = self.key(key)
        gone = self._gone_reason(key)
        if gone and entry.kind != "keep":
            raise InvalidEdit(f"{gone}. Received: key={key!r}, label={label!r}")
        path = path_of(key)
        step = self.step_for(key)
        steps = list(self.steps)
        if step is not None and step.kind == "insert":
            if entry.kind == "keep":
                return path
            if entry.kind == "remove":
                self._commit(_without(steps, step))
                return None
            new = self._insert_step(step.target, entry, params, reuse=step)
            steps[steps.index(step)] = new
            self._commit(steps)
            return new.names[0] if new.names else None
        target = step.target if step is not None else key
        if step is None and entry.kind != "keep":
            self._refuse_call_after_transform(key, "replaced")
        if path_of(target) not in self.rows() and path_of(target) not in self.original_rows:
            raise InvalidEdit(f"No layer {key_text(target)} to edit. Received: key={key!r}")
        if entry.kind == "keep":
            if step is not None:
                self._commit(_without(steps, step))
            return target
        new = self._choice_step(target, entry, params, reuse=step)
        if step is not None:
            steps[steps.index(step)] = new
        else:
            steps.append(new)
        self._commit(steps)
        return target

    def set_params(self, key, params: dict):
        """Change some parameters of the type ``key`` has (the others stay); returns like :meth:`choose`."""
        step = self.step_for(self.key(key)) if key is not None else None
        if step is None or not step.label:
            raise InvalidEdit(f"{key_text(key) if key is not None else 'No row'} has no type with parameters "
                              f"chosen; choose a type first. Received: params={params!r}")
        if not isinstance(params, dict):
            raise InvalidEdit(f"params is a dict of name -> value. Received: params={params!r}")
        return self.choose(key, step.label, {**step.params, **params})

    def insert_after(self, key, label: str, params: dict | None = None) -> str:
        """Insert a layer of type ``label`` after ``key``; returns the new layer's name."""
        entry = catalog.get(label)
        if not entry.insertable or entry.kind != "replace":
            raise InvalidEdit(f"{label!r} cannot be inserted; insertable types: {_insertable_labels()}. "
                              f"Received: label={label!r}")
        if key is None:
            raise InvalidEdit(f"No layer is selected, so there is nothing to insert {label!r} after. Select a row "
                              f"first. Received: key=None, label={label!r}")
        key = self.key(key)
        gone = self._gone_reason(key)
        if gone:
            raise InvalidEdit(f"{gone}. Received: key={key!r}, label={label!r}")
        if self._own_step(key) is not None:
            raise InvalidEdit(f"{key_text(key)} was replaced or deleted; insert after what stands there now. "
                              f"Received: key={key!r}")
        self._refuse_call_after_transform(key, "given a layer after it")
        step = self._insert_step(key, entry, params)
        self._commit(list(self.steps) + [step])
        return step.names[0] if step.names else ""

    def delete(self, key) -> str | None:
        return self.choose(key, catalog.REMOVE)

    def set_trainable(self, key, trainable: bool) -> None:
        """Freeze or unfreeze a layer (all its calls: the weights are the same)."""
        if not isinstance(trainable, (bool, np.bool_)):
            raise InvalidEdit(f"trainable is True (train the layer) or False (freeze it). Received: trainable={trainable!r}")
        trainable = bool(trainable)
        path = path_of(key)
        if path not in self.rows():
            raise InvalidEdit(f"{path!r} is not in the current model, so it cannot be frozen or unfrozen. "
                              f"Received: key={key!r}")
        steps = [s for s in self.steps if not (s.kind == "trainable" and s.target == path)]
        original = self.original_rows.get(path)
        related = any(s.kind == "trainable" and (s.target.startswith(path + "/") or path.startswith(s.target + "/"))
                      for s in steps)
        # Going back to how the original had it needs no edit, unless a container's flag is involved.
        if original is None or original.trainable != trainable or related:
            steps.append(Step("trainable", path, SetTrainable([path], trainable), trainable=trainable))
        self._commit(steps)

    # ------------------------------------------------------------------ whole-model actions

    def change_input(self, shape, channels: str | None = None, input: str | None = None) -> str:
        """Give the model's input a new shape (without the batch axis): :func:`kerasnb.change_input`.

        ``shape``: a tuple, or text such as ``"8, 8, 1"`` (``None`` for a free size).
        ``channels``: how the layers that read a changed number of channels are adapted, one of
        ``"sum"``, ``"repeat"``, ``"reinit"`` (None: sum for one channel, repeat for more); unused
        when the number of channels stays. ``input``: the input layer's name (needed when the model
        has several). One step per input: changing it again redoes that step, and going back
        to the original shape takes it back. Returns the input's name.
        """
        names = [layer.name for layer in _graph.input_layers(self.original)]
        if input is None:
            if len(names) != 1:
                raise InvalidEdit(f"The model has {len(names)} inputs; say which one to change: one of {names}. "
                                  f"Received: input=None")
            input = names[0]
        elif input not in names:
            from ..errors import suggest

            raise LayerNotFound(f"The model has no input named {input!r}.{suggest(str(input), names)} Its inputs: "
                                f"{names}. Received: input={input!r}")
        if channels is not None and channels not in CHANNEL_MODES:
            raise InvalidEdit(f"channels is how the first layers are adapted to a new number of channels: one of "
                              f"{', '.join(map(repr, CHANNEL_MODES))} (or None). Received: channels={channels!r}")
        steps = list(self.steps)
        old = next((s for s in steps if s.kind == "transform" and s.label == "change_input"
                    and s.params["input"] == input), None)
        index = steps.index(old) if old is not None else len(steps)
        before = self._build(tuple(steps[:index]))
        was = next(tuple(l.batch_shape)[1:] for l in _graph.input_layers(before.model if before else self.original)
                   if l.name == input)
        shape = parse_shape(shape, was)
        if shape == was:
            if old is None:
                raise InvalidEdit(f"Input {input!r} has shape {was!r} already; nothing would change. "
                                  f"Received: shape={shape!r}")
            self._commit(_without(steps, old))  # back to the shape it had: the step is taken back
            return input
        mode = None  # the number of channels stays: nothing to adapt
        if shape[-1] != was[-1]:
            mode = channels or ("sum" if shape[-1] == 1 else "repeat")  # kerasnb.change_input's defaults
        step = self._make_transform("change_input", {"input": input, "shape": shape, "channels": mode},
                                    tuple(steps[:index]))
        self._commit(steps[:index] + [step] + steps[index + 1:])
        return input

    def apply_to_all(self, key) -> tuple:
        """Give every other layer of the class ``key``'s layer had the type chosen for ``key``.

        "Apply to all N layers like this one": one step (:func:`kerasnb.replace_all`, or deletes
        for "Remove"), with the row's type and parameters, on each layer of the same class in the
        current model that it fits; the others are left alone and named in the step's notes.
        Returns the paths it was given to.
        """
        if key is None:
            raise InvalidEdit("No layer is selected. Select a row whose type you chose. Received: key=None")
        key = self.key(key)
        own = self._own_step(key)
        if own is None or own.replaced is None:
            raise InvalidEdit(f"{key_text(key)} has no type chosen; choose one first, then give it to every layer "
                              f"like it. Received: key={key!r}")
        entry, cls = catalog.get(own.label), own.replaced
        found, shared = self._like_candidates(cls, path_of(key))
        if not found and not shared:
            raise LayerNotFound(f"There is no other {cls.__name__} layer in the model to give {own.what()} to. "
                                f"Received: key={key!r}")
        fit, left = [], dict(shared)
        for path in found:
            site = fitting.locate(self.model, path)
            ok, reason = _fits(entry, (self.model, path), site, **own.params)
            if ok:
                fit.append(path)
            else:
                left[path] = reason
        if not fit:
            raise IncompatibleShape(
                f"{own.what()} fits none of the other {cls.__name__} layers: "
                + "; ".join(f"{p!r}: {r}" for p, r in left.items()) + f". Received: key={key!r}")
        params = {"like": key, "type": cls.__name__, "label": own.label, "values": dict(own.params),
                  "paths": tuple(fit), "left": left}
        steps = list(self.steps)
        self._commit(steps + [self._make_transform("like", params, tuple(steps))])
        return tuple(fit)

    def swap_activation(self, old: str, new: str) -> None:
        """Use activation ``new`` wherever the model applies ``old``: :func:`kerasnb.swap_activation`."""
        for name, value in (("old", old), ("new", new)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidEdit(f"{name} is an activation's name, e.g. 'relu' or 'gelu'. Received: {name}={value!r}")
        steps = list(self.steps)
        self._commit(steps + [self._make_transform("swap", {"old": old.strip(), "new": new.strip()}, tuple(steps))])

    def fold_batchnorm(self) -> None:
        """Fold each BatchNormalization into the layer before it: :func:`kerasnb.fold_batchnorm`."""
        steps = list(self.steps)
        self._commit(steps + [self._make_transform("fold", {}, tuple(steps))])

    def cut(self, key) -> None:
        """Cut the model at ``key``: its output becomes the model's output, what follows is removed
        (:func:`kerasnb.truncate`)."""
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nowhere to cut. Select a row first. Received: key=None")
        key = self.key(key)
        reason = self.cut_reason(key)
        if reason:
            raise InvalidEdit(f"The model cannot be cut at {key_text(key)}: {reason}. Received: key={key!r}")
        steps = list(self.steps)
        self._commit(steps + [self._make_transform("cut", {"at": _key_in(steps, key)}, tuple(steps))])

    def enable_lora(self, key, rank: int = LORA_RANK) -> str:
        """LoRA of ``rank`` on the row of ``key``: on the layer itself (Dense, EinsumDense, Embedding,
        convolution) or, on a block, on its attention projections (query and value), with
        :func:`kerasnb.enable_lora`. Only the LoRA factors train afterwards. One LoRA step per
        row: turning it on again with another rank changes that step. Returns the row's path."""
        rank = _check_rank(rank)
        if key is None:
            raise InvalidEdit(f"No layer is selected, so there is nothing to put LoRA on. Select a Dense, EinsumDense, "
                              f"Embedding or convolution row, or a block. Received: key=None, rank={rank!r}")
        key = self.key(key)
        info = self.lora_info(key)
        if not info.can_enable:
            raise InvalidEdit(f"LoRA cannot go on {key_text(key)}: {info.reason}. Received: key={key!r}, rank={rank!r}")
        path = path_of(key)
        old = self._lora_step(path)
        if old is not None and old.params["rank"] == rank:
            raise InvalidEdit(f"LoRA rank {rank} is on {key_text(key)} already; nothing would change. Received: "
                              f"key={key!r}, rank={rank!r}")
        self._put_transform(old, "lora", {"scope": path, "rank": rank, "projections": "query, value"})
        return path

    def disable_lora(self, key) -> str:
        """Take back the LoRA step of the row of ``key`` (its layers are as they were before it)."""
        if key is None:
            raise InvalidEdit("No layer is selected, so there is no LoRA to turn off. Select a row with LoRA. "
                              "Received: key=None")
        key = self.key(key)
        info = self.lora_info(key)
        if not info.can_disable:
            raise InvalidEdit(f"LoRA cannot be turned off on {key_text(key)}: {info.off_reason}. Received: key={key!r}")
        self._commit(_without(list(self.steps), self._lora_step(path_of(key))))
        return path_of(key)

    def enable_lora_attention(self, rank: int = LORA_RANK, projections: str = "query, value") -> None:
        """LoRA of ``rank`` on every attention projection of the model (``projections``: a key of
        :data:`LORA_PROJECTIONS`), at any depth; layers that have LoRA from another step keep it.
        One such step: doing it again changes it."""
        rank = _check_rank(rank)
        if projections not in LORA_PROJECTIONS:
            raise InvalidEdit(f"projections is one of {', '.join(map(repr, LORA_PROJECTIONS))}. "
                              f"Received: projections={projections!r}")
        old = self._lora_step("")
        if old is not None and old.params == {"scope": "", "rank": rank, "projections": projections}:
            raise InvalidEdit(f"LoRA rank {rank} is on the attention projections ({projections}) already; nothing "
                              f"would change. Received: rank={rank!r}, projections={projections!r}")
        self._put_transform(old, "lora", {"scope": "", "rank": rank, "projections": projections})

    def disable_lora_attention(self) -> None:
        """Take back the \u201cLoRA on attention\u201d step."""
        old = self._lora_step("")
        if old is None:
            raise InvalidEdit("There is no \u201cLoRA on attention\u201d step to take back. Received: "
                              "disable_lora_attention()")
        self._commit(_without(list(self.steps), old))

    def merge_lora(self) -> None:
        """Fold every LoRA factor into its kernel: :func:`kerasnb.merge_lora` (a model without LoRA,
        the same outputs; every weight trains again)."""
        steps = list(self.steps)
        self._commit(steps + [self._make_transform("merge_lora", {}, tuple(steps))])

    # ------------------------------------------------------------------ statuses before the rebuild

    def predict(self, steps) -> WeightReport | None:
        """The report of ``steps`` worked out from shapes alone, without building the model, or
        None when that cannot be exact.

        Exact in the common case: ``steps`` are steps already built (the current ones, or the ones
        before the row's own step) plus one replace, delete or insert at the end, on a top-level
        layer called once, whose new layers give the shape the old one gave. Then no weight shape
        changes anywhere: the layer is removed, its new layers are new, the layers that read its
        output (directly or further on) see a changed input (``kept`` becomes
        ``kept_input_changed``; every other status stays), and the rest are as they were.
        Anything else (a new shape, a nested model downstream or in the replacement, a shared
        layer, a tied layer, a whole-model step last) gives None and waits for the rebuild.
        New rows' parameter counts are those of their layers where already built, else 0.
        """
        import keras

        steps = tuple(steps)
        if not steps or self._aliases:
            return None
        same = self._predict_same_shapes(steps)
        if same is not None:
            return same
        step, base = steps[-1], steps[:-1]
        if step.kind not in ("choice", "insert") or not isinstance(step.target, str) or "/" in step.target:
            return None
        if any(s.kind in ("choice", "insert") and isinstance(s.target, tuple) for s in base):
            return None  # call edits run first (see ordered): the last step is not the last edit
        if base:
            cached = next((r for kept, r in self._recent if kept == base), None)
            if cached is None:
                return None
            model, report = cached.model, cached.report
        else:
            model, report = self.original, _unchanged_report(self.original_rows.values(), self._aliases)
        try:
            layer = _targets.layer_named(model, step.target)
        except LayerNotFound:
            return None
        if _graph.is_graph_model(layer) or (_graph.is_input_layer(layer) and step.kind == "choice"):
            return None
        views = _graph.walk(model)
        own = [v for v in views if v.operation is layer]
        if len(own) != 1 or len(own[0].outputs) != 1 or len(own[0].input_tensors) > 1:
            return None
        try:
            row = report.row(step.target)
        except LayerNotFound:
            return None
        if row.status in ("removed", "new") or row.layer != step.target:
            return None
        out_shape = tuple(own[0].outputs[0].shape)
        if _graph.is_input_layer(layer):
            in_shape = out_shape
        else:
            in_shape = tuple(own[0].input_tensors[0].shape)
        parts = () if isinstance(step.edit, Delete) else (
            step.edit.replacement if isinstance(step.edit, Replace) else step.edit.layer)
        parts = list(parts) if isinstance(parts, (list, tuple)) else [parts]
        if any(not isinstance(p, keras.layers.Layer) or isinstance(p, keras.Model) for p in parts):
            return None
        shape = out_shape if step.kind == "insert" else in_shape
        try:
            for part in parts:
                shape = fitting.output_shape_of(part, shape)
        except Exception:  # noqa: BLE001 -- the rebuild will say what is wrong; no prediction
            return None
        if tuple(shape) != out_shape:
            return None
        downstream = self._downstream(views, own[0])
        if downstream is None:
            return None
        new_rows = [LayerRow(name, type(part).__name__, NEW, "added by the edit",
                             _graph.count_params(part) if part.built else 0, bool(part.trainable))
                    for name, part in zip(step.names, parts)]
        rows, removed = [], []
        for r in report.rows:
            if r.layer == step.target and step.kind == "choice":
                removed.append(LayerRow(r.layer, r.type, REMOVED, "", r.params, r.trainable, r.layer))
                rows.extend(new_rows)
                continue
            if r.layer in downstream and r.status == KEPT:  # as status_of says of an unfaithful copy
                r = dataclasses.replace(r, status=KEPT_INPUT_CHANGED,
                                        reason="weights copied, but its input changed: fine-tune it")
            rows.append(r)
            if r.layer == step.target:  # an insert: its layers follow the one it goes after
                rows.extend(new_rows)
        return WeightReport(rows + removed)

    def _predict_same_shapes(self, steps) -> WeightReport | None:
        """The prediction when ``steps`` are the current ones with one replace or insert changed in
        place (new parameters for the same type): its layers keep their names and give the shape
        they gave before, so every status stays; the new layers' parameter counts are theirs."""
        import keras

        now = self.steps
        if self.result is None or len(steps) != len(now):
            return None
        changed = [i for i, (a, b) in enumerate(zip(now, steps)) if a is not b]
        if len(changed) != 1:
            return None
        old, new = now[changed[0]], steps[changed[0]]
        if (old.kind, old.target, old.names, old.label) != (new.kind, new.target, new.names, new.label) \
                or old.kind not in ("choice", "insert") or any(s.kind == "transform" for s in steps[changed[0]:]):
            return None

        def parts(step):
            made = step.edit.replacement if isinstance(step.edit, Replace) else getattr(step.edit, "layer", None)
            made = list(made) if isinstance(made, (list, tuple)) else [made]
            return made if all(isinstance(p, keras.layers.Layer) and not isinstance(p, keras.Model)
                               for p in made) else None

        def shape_after(made):
            shape = tuple(new.input_shape)
            for part in made:
                shape = fitting.output_shape_of(part, shape)
            return tuple(shape)

        old_parts, new_parts = parts(old), parts(new)
        if old_parts is None or new_parts is None or len(old_parts) != len(new_parts) or new.input_shape is None:
            return None
        try:
            if shape_after(old_parts) != shape_after(new_parts):
                return None
        except Exception:  # noqa: BLE001 -- the rebuild will say what is wrong; no prediction
            return None
        params = {name: _graph.count_params(part) if part.built else 0 for name, part in zip(new.names, new_parts)}
        return WeightReport([dataclasses.replace(r, params=params[r.layer]) if r.layer in params else r
                             for r in self.report.rows])

    @staticmethod
    def _downstream(views, start) -> set | None:
        """Names of the layers whose calls read ``start``'s output, directly or further on; None
        when a nested model is among them (its rows would need its own walk)."""
        readers: dict = {}
        for view in views:
            for tensor in list(view.input_tensors) + view.kwargs_tensors():
                readers.setdefault(id(tensor), []).append(view)
        found, stack, seen = set(), list(start.outputs), set()
        while stack:
            tensor = stack.pop()
            for view in readers.get(id(tensor), ()):
                if id(view.node) in seen:
                    continue
                seen.add(id(view.node))
                if _graph.is_graph_model(view.operation):
                    return None
                found.add(view.operation.name)
                stack.extend(view.outputs)
        return found

    # ------------------------------------------------------------------ history

    def undo(self) -> bool:
        if self.cursor == 0:
            return False
        self._move(self.cursor - 1)
        return True

    def redo(self) -> bool:
        if self.cursor >= len(self.history) - 1:
            return False
        self._move(self.cursor + 1)
        return True

    def reset(self) -> None:
        if self.steps:
            self._commit([])

    # ------------------------------------------------------------------ internals

    def _lora_step(self, scope: str):
        """The LoRA step of the row ``scope`` ("" for the whole-model one), or None."""
        return next((s for s in self.steps if s.kind == "transform" and s.label == "lora" and s.target == scope), None)

    def _lora_giver(self, path: str):
        """The last LoRA step whose edits reach the layer at ``path`` (or a layer inside it), or None."""
        found = None
        for step in self.steps:
            if step.kind == "transform" and step.label == "lora" and any(
                    isinstance(getattr(e, "target", None), str) and _under(e.target, (path,)) for e in step.edits):
                found = step
        return found

    def _layer(self, path: str):
        """The layer at ``path`` in the current model, or None."""
        return _targets.layer_at(self.model, path)

    def _put_transform(self, old, op: str, params: dict):
        """Put the whole-model step ``op`` in the place of ``old`` (or at the end), worked out on the
        model the steps before it make; the steps after it are worked out again. Returns the step."""
        steps = list(self.steps)
        index = steps.index(old) if old is not None else len(steps)
        step = self._make_transform(op, params, tuple(steps[:index]))
        self._commit(steps[:index] + [step] + steps[index + 1:])
        return step

    def _own_step(self, key):
        """The choice step that replaced or deleted exactly ``key``, or None."""
        step = self.step_for(key)
        return step if step is not None and step.kind == "choice" and step.target == key else None

    def _gone_reason(self, key) -> str:
        """Why ``key`` has nothing to act on (a step replaced the nested model holding it), or ""."""
        path = path_of(key)
        holder = next((s for s in self.steps if s.kind == "choice" and not isinstance(s.target, tuple)
                       and path.startswith(s.target + "/")), None)
        if holder is None and (path in self.rows() or self._own_step(key) is not None
                               or path not in self.original_rows):
            return ""
        if holder is not None:
            return (f"{path!r} is not in the edited model: {holder.describe()} took it away; choose Keep on that "
                    "row to bring it back")
        taker = self._taken_by(path)
        if taker is not None:
            return (f"{path!r} is not in the edited model: {taker.describe()} took it away; undo that step (or "
                    "Reset) to bring it back")
        return f"{path!r} is not in the edited model: an edit took it away"

    def _taken_by(self, path: str):
        """The whole-model step that removed the layer at ``path`` (or the nested model holding it), or None."""
        transforms = [s for s in self.steps if s.kind == "transform"]
        for step in transforms:
            for edit in step.edits:
                target = getattr(edit, "target", None)
                if isinstance(edit, (Delete, Replace, Transform)) and isinstance(target, (str, tuple)) \
                        and _under(path, (path_of(target),)):
                    return step
        return next((s for s in reversed(transforms) if any(isinstance(e, Truncate) for e in s.edits)),
                    transforms[-1] if transforms else None)

    def _base_site(self, step) -> fitting.Site:
        """Where ``step``'s target stands in the model that every other step makes.

        The steps that build on what ``step`` added (inserts after its new layers, their freezes)
        go with it. If those other steps cannot be rebuilt without it, the steps made before it
        are used, and failing that the original model.
        """
        return fitting.locate(*self._base_place(step))

    def _base_place(self, step) -> tuple:
        """``(model, target)`` that :meth:`_base_site` looks ``step``'s target up in."""
        steps = list(self.steps)
        index = next(i for i, s in enumerate(steps) if s is step)
        others, added = [], set(step.names)
        for s in steps[:index] + steps[index + 1:]:
            if _under(path_of(s.target), added):
                added |= set(s.names)
                continue
            others.append(s)
        # A whole-model step after it was worked out on the model with it: the steps made before
        # it are the model it stands in.
        later_transform = any(s.kind == "transform" for s in steps[index + 1:])
        for base in ((steps[:index],) if later_transform else (others, steps[:index])):
            try:
                result = self._build(tuple(base))
                place = (result.model if result is not None else self.original, _key_in(base, step.target))
                fitting.locate(*place)  # it must stand there
                return place
            except Exception:  # noqa: BLE001 -- any refusal: try a smaller base (the rebuild's own error is not ours)
                continue
        return self.original, step.target

    def _params_of(self, step) -> tuple:
        """The :class:`Param` of each parameter of the type ``step`` gives its row."""
        if step is None or step.kind not in ("choice", "insert"):
            return ()
        entry = _entry_or_none(step.label)
        out = []
        for name, value in step.params.items():
            choices = entry.choices(name) if entry is not None else None
            if choices and value not in choices:
                choices = (value,) + choices
            out.append(Param(name, value, choices or None))
        return tuple(out)

    def _count(self) -> int:
        return _graph.count_params(self.model)

    def _choice_step(self, target, entry, params, reuse=None) -> Step:
        """The step giving ``target`` the type ``entry``; refused before anything is built when the
        parameters are bad or the type's dry run says it does not fit there."""
        place = self._base_place(reuse) if reuse is not None else self._place(target)
        site = fitting.locate(*place)
        if site.is_input:
            raise InputLayerEdit(f"{key_text(target)} is an input layer: it stays. Insert after it instead. "
                                 f"Received: label={entry.label!r}")
        values = self._params(entry, site.layer, params, reuse)
        ok, reason = _fits(entry, place, site, **values)
        if not ok:
            offered, _ = self.options(target)
            raise IncompatibleShape(
                f"{_what(entry, values)} does not fit {key_text(target)}: {reason}. "
                f"Types that fit there: {', '.join(offered)}. Received: label={entry.label!r}, params={values!r}"
            )
        if entry.kind == "remove":
            return Step("choice", target, Delete(target), entry.label, {}, input_shape=site.input_shape,
                        replaced=type(site.layer), block=_is_block(site.layer))
        replacement = entry.make(site.layer, site.input_shape, **values)
        names = self._name(replacement, target, entry, keep=reuse.names if reuse else ())
        return Step("choice", target, Replace(target, replacement), entry.label, values, names,
                    input_shape=site.input_shape, replaced=type(site.layer))

    def _insert_step(self, target, entry, params, reuse=None) -> Step:
        """The step inserting ``entry`` after ``target``, checked like a choice before building."""
        if not entry.insertable or entry.kind != "replace":
            raise InvalidEdit(f"{entry.label!r} cannot be inserted; insertable types: {_insertable_labels()}. "
                              f"Received: label={entry.label!r}")
        site = self._base_site(reuse) if reuse is not None else self.site(target)
        values = self._params(entry, site.layer, params, reuse, replacing=False)
        ok, reason = fitting.fits_after(entry, site, **values)
        if not ok:
            offered, _ = _insertable(site)
            raise IncompatibleShape(
                f"{_what(entry, values)} cannot go after {key_text(target)}: {reason}. "
                f"Types that can: {', '.join(offered) or 'none'}. Received: label={entry.label!r}, params={values!r}"
            )
        layer = entry.make(site.layer, site.output_shape, **values)
        names = self._name(layer, target, entry, keep=reuse.names if reuse else ())
        return Step("insert", target, Insert(layer, after=target), entry.label, values, names,
                    input_shape=site.output_shape)

    @staticmethod
    def _params(entry, layer, params, reuse, replacing: bool = True) -> dict:
        """Checked values: the user's, else the earlier ones for the same type, else the defaults."""
        if params is None and reuse is not None and reuse.label == entry.label:
            return dict(reuse.params)  # same type again: keep what the user had set
        return entry.check_params(params or {}, layer, replacing=replacing)

    def _name(self, replacement, target, entry, keep=(), also=()) -> tuple:
        """Name the new layers after the row they stand in, so the table can lead back to the step.
        ``also``: more names already taken (those given earlier in the same action)."""
        parts = replacement if isinstance(replacement, (list, tuple)) else [replacement]
        taken = set(self.rows()) | set(self.original_rows) | set(also)
        for step in self.steps:
            taken |= set(step.names)
        taken -= set(keep)
        import keras

        call = f"_call{call_of(target)}" if isinstance(target, tuple) else ""
        base = path_of(target).split("/")[-1] + call + "_" + _slug(entry.label)
        # New layers live in the same (nested) model as the target: rows are keyed by full path.
        prefix = path_of(target).rpartition("/")[0]
        prefix = prefix + "/" if prefix else ""
        names = []
        for i, part in enumerate(parts):
            if not isinstance(part, keras.layers.Layer):
                continue
            if not isinstance(part, keras.Model):
                wanted = base if len(parts) == 1 else f"{base}_{i + 1}"
                name, n = wanted, 1
                while prefix + name in taken:
                    n += 1
                    name = f"{wanted}_{n}"
                part.name = name
            taken.add(prefix + part.name)
            names.append(prefix + part.name)
        return tuple(names)

    def _like_candidates(self, cls, exclude: str) -> tuple[list, dict]:
        """``(paths, {path: why not})``: the other layers of class ``cls`` in the current model, and
        those of them a whole-model step cannot replace alone (called more than once)."""
        found, shared = [], {}
        rows = self.rows()
        for path, layer in _graph.walk_layers(self.model):
            if path == exclude or type(layer) is not cls or _graph.is_input_layer(layer):
                continue
            if any(path.startswith(p + "/") for p in found):
                continue  # inside a nested model that is itself one of them
            info = rows.get(path)
            if info is not None and info.calls > 1:
                shared[path] = f"called {info.calls} times; choose a type for each call on its row"
                continue
            found.append(path)
        return found, shared

    def _make_transform(self, op: str, params: dict, base: tuple, keep: tuple = ()) -> Step:
        """The step of whole-model action ``op`` with ``params``, worked out on the model ``base`` makes.
        ``keep``: names of the step it redoes, free to be given again."""
        before = self._build(base)
        model = before.model if before is not None else self.original
        result, text = _TRANSFORMS[op](self, model, params, keep)
        if not result.edits:
            raise InvalidEdit(f"{text}: nothing would change. Received: {op} on model {model.name!r}")
        had = {p for p, _ in _graph.walk_layers(model)}
        names = tuple(p for p, _ in _graph.walk_layers(result.model) if p not in had)
        target = path_of(params["at"]) if "at" in params else params.get("scope", params.get("input", ""))
        return Step("transform", target, tuple(result.edits), op, dict(params), names,
                    text=text, notes=tuple(result.notes), base=base, counts=tuple(getattr(result, "counts", ())))

    def _rebase(self, steps) -> list:
        """``steps`` with each whole-model step worked out again where the steps before it changed."""
        out: list = []
        for step in steps:
            if step.kind == "transform" and tuple(out) != step.base:
                step = self._make_transform(step.label, step.params, tuple(out), keep=step.names)
            elif step.kind == "prune" and tuple(out) != step.base:
                # Its channels (or at least its counts) were worked out on other steps.
                step = self._prune_step_on(tuple(out), step.target, step.params["keep"], step.params["by"])
            out.append(step)
        return out

    def _refuse_call_after_transform(self, key, what: str) -> None:
        """One call of a shared layer is numbered as the original model numbers them, and its edit
        runs before the others (see :func:`ordered`): not after a whole-model step."""
        done = next((s for s in self.steps if s.kind == "transform"), None)
        if isinstance(key, tuple) and done is not None:
            raise InvalidEdit(
                f"{key_text(key)} is one call of a shared layer, and {done.describe()} came first: after a whole-model "
                f"action, one call cannot be {what} on its own. Undo that action, edit the call, then do it again. "
                f"Received: key={key!r}"
            )

    def _commit(self, steps: list) -> None:
        steps = tuple(self._rebase(self._applying(steps)))
        if self.on_predict is not None:
            predicted = self.predict(steps)
            if predicted is not None:
                self.on_predict(predicted, steps[-1])  # shown while the model is built
        result = self._build(steps)
        # Only a successful rebuild reaches here: history and state change together.
        del self.history[self.cursor + 1:]
        self.history.append(steps)
        self.cursor += 1
        self._show(result)

    def _applying(self, steps: list) -> list:
        """``steps`` less the freeze and prune steps that no longer aim at anything.

        Those are the ones aimed at a layer that a changed or removed step had added (its name is
        gone from the steps, so the rebuild would not find it), and the ones aimed at an original
        layer that a choice now replaces or deletes (every call of it, for a shared layer): they
        would stay in the list of edits without any effect on the model.
        """
        had = {n for s in self.steps for n in s.names}
        gone = had - {n for s in steps for n in s.names}
        chosen: dict = {}  # original layer path -> calls of it replaced or deleted
        for s in steps:
            if s.kind == "choice":
                chosen.setdefault(path_of(s.target), set()).add(call_of(s.target))
        replaced = {p for p, calls in chosen.items() if None in calls or len(calls) >= self.calls(p)}
        return [s for s in steps
                if not (s.kind in ("trainable", "prune") and _under(path_of(s.target), gone | replaced))]

    def _move(self, cursor: int) -> None:
        result = self._build(self.history[cursor])
        self.cursor = cursor
        self._show(result)

    def _show(self, result) -> None:
        self.result = result
        self._rows_cache = None

    def _build(self, steps: tuple):
        """The result of ``steps``; recent ones are kept so undo / redo need no rebuild."""
        if not steps:
            return None
        for i, (kept_steps, result) in enumerate(self._recent):
            if kept_steps is steps or kept_steps == steps:
                self._recent.insert(0, self._recent.pop(i))  # most recently used first
                return result
        from ..surgery import apply

        result = apply(self.original, list(edits_of(steps)))
        _train_only_lora(steps, result.model)
        self._recent = ([(steps, result)] + self._recent)[:RECENT_RESULTS]
        return result


def edits_of(steps) -> tuple:
    """The core edits of ``steps``, in the order :func:`kerasnb.apply` runs them."""
    return tuple(edit for step in ordered(steps) for edit in step.edits)


def ordered(steps) -> list:
    """The steps in the order they are applied: edits of single calls of shared layers first.

    A call index names a call of the original model. Once one call is replaced, the core numbers
    the remaining calls anew, so those edits run first, while the original calls all exist, and
    from the highest call index down (replacing call 1 leaves call 0 as it was). The rest keep
    the user's order; a call edit never depends on them, as it targets an original layer.
    """
    calls = [s for s in steps if s.kind in ("choice", "insert") and isinstance(s.target, tuple)]
    if not calls:
        return list(steps)
    calls.sort(key=lambda s: -s.target[1])  # stable: edits of one call keep their order
    return calls + [s for s in steps if not (s.kind in ("choice", "insert") and isinstance(s.target, tuple))]


# ----------------------------------------------------------------------------- whole-model actions


def _transforms():
    """``kerasnb.transforms``, imported on the first whole-model action."""
    return importlib.import_module("kerasnb.transforms")


def _op_change_input(session, model, params, keep):
    result = importlib.import_module("kerasnb.input_change").change_input(model, params["shape"], mode=params["channels"],
                                                                         input=params["input"])
    how = f" (channels: {params['channels']})" if params["channels"] else ""
    return result, f"change input {params['input']!r} to {params['shape']!r}{how}"


def _op_like(session, model, params, keep):
    entry, values, paths = catalog.get(params["label"]), params["values"], params["paths"]
    present = {p: layer for p, layer in _graph.walk_layers(model) if p in paths}
    if not present:
        raise LayerNotFound(f"None of {', '.join(map(repr, paths))} is in the model any more, so there is nothing to "
                            f"give {params['label']!r} to. Received: {params['type']} layers like {params['like']!r}")
    notes = [f"{p!r} left alone: {why}" for p, why in params["left"].items()]
    notes += [f"{p!r} left alone: it is no longer in the model" for p in paths if p not in present]
    if entry.kind == "remove":
        from ..surgery import apply

        result = apply(model, [Delete(p) for p in present])
        what = "delete"
    else:
        by_id = {id(layer): p for p, layer in present.items()}
        given: list = []

        def make(layer):
            path = by_id[id(layer)]
            site = fitting.locate(model, path)
            replacement = entry.make(site.layer, site.input_shape, **values)
            given.extend(session._name(replacement, path, entry, keep=keep, also=given))
            return replacement

        result = _transforms().replace_all(model, lambda path, layer: path in present, make)
        args = ", ".join(f"{k}={v!r}" for k, v in values.items())
        what = f"give {params['label']}({args})" if args else f"give {params['label']}"
        what += " to"
    if notes:
        result = dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))
    return result, (f"{what} {len(present)} more {params['type']} layer(s) like {key_text(params['like'])}: "
                    + ", ".join(map(repr, present)))


def _op_swap(session, model, params, keep):
    result = importlib.import_module("kerasnb.activations").swap_activation(model, params["old"], params["new"])
    return result, f"swap activation {params['old']!r} for {params['new']!r} ({len(result.edits)} layer(s))"


def _op_fold(session, model, params, keep):
    result = importlib.import_module("kerasnb.batchnorm").fold_batchnorm(model)
    folded = sum(isinstance(e, Delete) for e in result.edits)
    if not folded:
        why = " ".join(result.notes) or "no BatchNormalization layer could be folded"
        raise InvalidEdit(f"No BatchNormalization layer could be folded: {why} Received: fold_batchnorm on model "
                          f"{model.name!r}")
    return result, f"fold {folded} BatchNormalization layer(s) into the layer before each"


def _op_cut(session, model, params, keep):
    result = _transforms().truncate(model, params["at"])
    return result, f"cut the model at {key_text(params['at'])} (its output is the model's output)"


def _lora():
    """``kerasnb.lora``, imported on the first LoRA action."""
    return importlib.import_module("kerasnb.lora")


def _op_lora(session, model, params, keep):
    scope, rank, which = params["scope"], params["rank"], params["projections"]
    if scope:
        layer = _targets.layer_at(model, scope)
        if layer is None:
            raise LayerNotFound(f"{scope!r} is not in the model any more, so LoRA cannot go on it. Received: "
                                f"LoRA rank {rank} on {scope!r}")
        targets, what = _lora_targets(scope, layer, LORA_PROJECTIONS[which])
        where = f"{scope!r}" if what.startswith("this ") else f"the attention projections ({which}) of {scope!r}"
    else:
        targets = _attention_projections_of(model, LORA_PROJECTIONS[which])
        where = f"the attention projections ({which})"
    if not targets:
        raise InvalidEdit(f"There is no layer for LoRA on {where}: it goes on Dense, EinsumDense, Embedding and "
                          f"convolution layers, and on attention projections. Received: LoRA rank {rank} on {where}")
    have = _lora_now(model)
    todo = [t for t in targets if t not in have]
    if not todo:
        raise InvalidEdit(f"Every layer of {where} has LoRA already ({', '.join(sorted(map(repr, targets)))}); "
                          f"nothing would change. Received: LoRA rank {rank} on {where}")
    layers = dict(_deep(model))
    widest = max((max(v.shape) for t in todo for v in layers[t].weights if len(v.shape) >= 2), default=0)
    if widest and rank > widest:
        raise InvalidEdit(f"LoRA rank {rank} is larger than every dimension of the kernels it would go on (the "
                          f"largest is {widest}); LoRA's factors are meant to be far smaller, e.g. rank 4 or 8. "
                          f"Received: rank={rank!r} on {where}")
    pattern = re.compile("^(?:" + "|".join(re.escape(t) for t in todo) + ")$")
    result = _lora().enable_lora(model, pattern, rank=rank)
    left = [f"{t!r} has LoRA already (rank {have[t]}); left as it is" for t in targets if t in have]
    if left:
        result = dataclasses.replace(result, notes=tuple(left) + tuple(result.notes))
    return result, f"LoRA rank {rank} on {where}" + (f": {len(todo)} layers" if len(todo) > 1 else "")


def _op_merge_lora(session, model, params, keep):
    had = _lora_now(model)
    result = _lora().merge_lora(model)
    return result, f"merge LoRA into the kernels of {len(had)} layer(s)"


@dataclass(frozen=True)
class _Planned:
    """What a whole-model step worked out without building (as a SurgeryResult would say it):
    ``model`` is the model it was planned on (it adds no layer), ``counts`` its numbers."""

    model: Any
    edits: tuple
    notes: tuple
    counts: tuple


def _op_prune_global(session, model, params, keep):
    plan = session._global_plan(model, params)
    budget, target = params["budget"], params["target"]
    goal = {"ratio": f"{target:.0%} of the channels removed", "params": f"at most {target:.0%} of the parameters",
            "flops": f"at most {target:.0%} of the MACs"}[budget]
    rounded = f", channel counts multiples of {params['round_to']}" if params["round_to"] else ""
    note = (f"Pruned the model to {goal} by {params['by']}{rounded}: removed "
            f"{plan.channels_before - plan.channels_after} of {plan.channels_before} channels in "
            f"{len(plan.removed)} group(s); params {plan.params_before:,} -> {plan.params_after:,}, MACs per sample "
            f"{plan.macs_before:,} -> {plan.macs_after:,}. The layers after them see fewer channels: fine-tune")
    counts = (plan.params_before, plan.params_after, plan.macs_before, plan.macs_after)
    return (_Planned(model, plan.edits, (note,), counts),
            f"prune the model to {goal} (by {params['by']}{rounded})")


# name -> (session, model the steps before it make, params, names free to reuse) -> (SurgeryResult, in words)
_TRANSFORMS = {"change_input": _op_change_input, "like": _op_like, "swap": _op_swap, "fold": _op_fold,
               "cut": _op_cut, "lora": _op_lora, "merge_lora": _op_merge_lora, "prune_global": _op_prune_global}


# ----------------------------------------------------------------------------- LoRA: which layers


def _lora_targets(path: str, layer, projections) -> tuple[list, str]:
    """``(paths, in words)`` of what LoRA on the row ``path`` means: the layer itself when it is a
    Dense, EinsumDense, Embedding or convolution layer, else its attention ``projections``."""
    if isinstance(layer, _lora()._KINDS) and not _graph.is_graph_model(layer):
        return [path], f"this {type(layer).__name__} layer"
    found = _attention_projections(path, layer, projections)
    return found, (f"its {len(found)} attention projection(s) ({', '.join(projections)})" if found else "")


def _attention_projections_of(model, projections) -> list:
    """Paths of every attention projection named in ``projections`` in ``model``, at any depth."""
    return [t for path, layer in _graph.walk_layers(model) for t in _attention_projections(path, layer, projections)]


def _attention_projections(path: str, layer, projections) -> list:
    """Paths (as :func:`kerasnb.enable_lora` names them) of the Dense / EinsumDense layers inside
    ``layer`` that are the ``projections`` ("query", "value", ...) of an attention layer."""
    import keras

    if not isinstance(layer, keras.layers.Layer) or _graph.is_graph_model(layer):
        return []
    subs = _graph.sublayers(layer)
    by_path = {getattr(sub, "path", None): sub for sub in subs}
    names = {name for p in projections for name in _PROJECTION_NAMES[p]}
    prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    found = []
    for sub in subs[1:]:
        sub_path = getattr(sub, "path", None)
        if not sub_path or "/" not in sub_path or not isinstance(sub, (keras.layers.Dense, keras.layers.EinsumDense)):
            continue
        holder, name = sub_path.rsplit("/", 1)
        if name in names and "attention" in type(by_path.get(holder)).__name__.lower():
            found.append(prefix + sub_path)
    return found


def _is_block(layer) -> bool:
    """A transformer block: a layer (not a nested model) with an attention layer inside."""
    import keras

    if not isinstance(layer, keras.layers.Layer) or _graph.is_graph_model(layer):
        return False
    return any("attention" in type(sub).__name__.lower() for sub in _graph.sublayers(layer)[1:])


def _lora_now_in(path: str, layer) -> dict:
    """``{path: rank}`` of the layer at ``path`` and the sub-layers inside it that have LoRA."""
    import keras

    rank_of = _lora().lora_rank
    if not isinstance(layer, keras.layers.Layer):
        return {}
    if _graph.is_graph_model(layer):
        return {f"{path}/{p}": r for p, r in _lora_now(layer).items()}
    prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    out = {path: rank_of(layer)} if rank_of(layer) else {}
    for sub in _graph.sublayers(layer)[1:]:
        sub_path = getattr(sub, "path", None)
        if sub_path and rank_of(sub):
            out[prefix + sub_path] = rank_of(sub)
    return out


def _lora_now(model) -> dict:
    """``{path: rank}`` of every layer of ``model`` that has LoRA, inside blocks too (named as
    :func:`kerasnb.enable_lora` names them). Operations that are not layers are passed over."""
    out = {}
    for path, layer in _graph.walk_layers(model):
        if not _graph.is_graph_model(layer):
            out.update(_lora_now_in(path, layer))
    return out


def _deep(model):
    """``(path, layer)`` for every layer of ``model`` and every sub-layer of its layers (a block's
    attention projections), named as :func:`kerasnb.enable_lora` names them."""
    import keras

    for path, layer in _graph.walk_layers(model):
        yield path, layer
        if _graph.is_graph_model(layer) or not isinstance(layer, keras.layers.Layer):
            continue
        prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        for sub in _graph.sublayers(layer)[1:]:
            if getattr(sub, "path", None):
                yield prefix + sub.path, sub


def _train_only_lora(steps, model) -> None:
    """Only the LoRA factors train, as after :func:`kerasnb.enable_lora`, while the latest LoRA step
    (turning it on, or merging it) is one that turns it on and the model has LoRA.

    The session rebuilds from the original, and what enable_lora freezes (every variable but the
    factors) is not an edit, so it is done again here. Layers that steps after that LoRA step
    added, or unfroze, are left training.
    """
    last = max((i for i, s in enumerate(steps) if s.kind == "transform" and s.label in ("lora", "merge_lora")),
               default=None)
    if last is None or steps[last].label != "lora" or not _lora_now(model):
        return
    later = {n for s in steps[last + 1:] for n in s.names}
    later |= {path_of(s.target) for s in steps[last + 1:] if s.kind == "trainable" and s.trainable}
    import keras

    for path, layer in _graph.walk_layers(model):
        if _graph.is_graph_model(layer) or not isinstance(layer, keras.layers.Layer) or _under(path, later):
            continue
        for variable in layer.weights:
            if not variable.path.rsplit("/", 1)[-1].startswith("lora_"):
                variable.trainable = False


def _a(name: str) -> str:
    """``"a Dense"``, ``"an Add"``."""
    return f"{'an' if name[:1].upper() in 'AEIOU' else 'a'} {name}"


def _check_rank(rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise InvalidEdit(f"rank is a whole number of at least 1 (the size of the LoRA factors), e.g. 8. "
                          f"Received: rank={rank!r}")
    return int(rank)


# ----------------------------------------------------------------------------- probes and shapes


def parse_shape(shape, like: tuple = ()) -> tuple:
    """A shape without the batch axis from a tuple or text (``"8, 8, 1"``, ``"(None, None, 3)"``).

    ``like`` is the shape it replaces (for the message). Refused with :class:`InvalidEdit`.
    """
    example = ", ".join("None" if d is None else str(d) for d in like) or "8, 8, 1"
    received = shape
    if isinstance(shape, str):
        text = shape.strip().strip("()[]").strip()
        parts = [p.strip() for p in text.split(",")]
        if parts and parts[-1] == "":
            parts = parts[:-1]
        try:
            shape = tuple(None if p.lower() == "none" else int(p) for p in parts)
        except ValueError:
            shape = None
    if not isinstance(shape, (tuple, list)) or not shape or not all(
            d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0) for d in shape):
        raise InvalidEdit(f"A shape is positive whole numbers (or None) separated by commas, without the batch axis, "
                          f"e.g. {example!r}. Received: shape={received!r}")
    shape = tuple(None if d is None else int(d) for d in shape)
    if like and len(shape) != len(like):
        raise InvalidEdit(f"The input has shape {tuple(like)!r} ({len(like)} axes without the batch axis); the new "
                          f"shape needs as many, e.g. {example!r}. Received: shape={received!r}")
    return shape


def check_probe(model, x) -> list:
    """``x`` as a list of arrays, one per input of ``model``, once their shapes fit it; else
    :class:`InvalidEdit` saying what the model takes."""
    import keras

    try:
        arrays = [np.asarray(keras.ops.convert_to_numpy(v)) for v in keras.tree.flatten(x)]
    except Exception as error:  # noqa: BLE001 -- anything that is not arrays: said in the message
        raise InvalidEdit(f"The probe batch is an array (or a list of arrays, one per input). Received: "
                          f"{type(x).__name__} ({first_line(error, 200)})") from None
    wanted = [tuple(t.shape)[1:] for t in _graph.input_tensors(model)]
    given = [a.shape[1:] for a in arrays]
    if len(arrays) != len(wanted) or not all(a.ndim >= 1 and a.shape[0] > 0 for a in arrays) \
            or not all(_fits_shape(g, s) for g, s in zip(given, wanted)):
        raise InvalidEdit(f"The probe batch must fit the model's inputs: a batch of {_shapes_text(wanted)}. "
                          f"Received: {_shapes_text([a.shape for a in arrays])}")
    return arrays


def _fits_shape(given, wanted) -> bool:
    return len(given) == len(wanted) and all(w is None or g == w for g, w in zip(given, wanted))


def _shapes_text(shapes) -> str:
    texts = ["(" + ", ".join("None" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"
             for s in shapes]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"


def _one_or_list(arrays):
    return arrays[0] if len(arrays) == 1 else list(arrays)


def _fits(entry, place, site, **params) -> tuple[bool, str]:
    """:func:`kerasnb.fitting.fits` for the layer at ``place`` (``(model, target)``), except removing a
    layer that takes several tensors (a transformer block takes the hidden states and a mask):
    whether that can be done is the core's own decision (:class:`kerasnb.Delete` passes on the
    input whose shape and dtype equal the output's), so the core's planner is asked."""
    if entry.kind == "remove" and not site.is_input and site.input_shape is None:
        reason = delete_refusal(*place)
        return not reason, reason
    return fitting.fits(entry, None, place[1], site=site, **params)


def delete_refusal(model, target) -> str:
    """Why the core would refuse ``Delete(target)`` on ``model``, in one line, or ``""``.

    Asked of the planner, which refuses before anything is built: nothing is rebuilt here.
    """
    from .. import _plan
    from ..errors import SurgeryError

    try:
        _plan.plan_edit(model, Delete(target), _plan.Plan())
    except SurgeryError as error:
        return first_line(error)
    return ""


def _insertable(site, own=None) -> tuple[list, dict]:
    """``(labels that can go right after the layer at site, {label: why not})``: insertable types.

    ``own`` is ``(label, params)`` of the type an inserted row has, checked with its own values.
    """
    offered, refused = [], {}
    for entry in catalog.entries():
        if not entry.insertable or entry.kind != "replace":
            continue
        params = own[1] if own is not None and entry.label == own[0] else {}
        ok, reason = fitting.fits_after(entry, site, **params)
        if ok:
            offered.append(entry.label)
        else:
            refused[entry.label] = reason
    return offered, refused


def _insertable_labels() -> str:
    return ", ".join(e.label for e in catalog.entries() if e.insertable and e.kind == "replace")


def _key_in(steps, key):
    """``key`` as the model that ``steps`` make numbers it.

    A call index counts the original model's calls; each earlier call that a choice in ``steps``
    replaced or deleted is gone from that model, and the calls after it move down by one.
    """
    if not isinstance(key, tuple):
        return key
    path, call = key
    gone = sum(1 for s in steps if s.kind == "choice" and isinstance(s.target, tuple)
               and s.target[0] == path and s.target[1] < call)
    return (path, call - gone)


def change_text(old: tuple, new: tuple) -> str:
    """What an action changed, in words, from the steps before and after it."""
    added = [s for s in new if not any(s is o for o in old)]
    gone = [s for s in old if not any(s is n for n in new)]
    done = []
    notes = []
    for step in added:
        was = next((g for g in gone if g.kind == step.kind and g.target == step.target), None)
        if step.kind == "transform":
            notes.extend(step.notes)
            if was is not None and was.label == step.label:
                gone.remove(was)
                redone = was.params == step.params
                done.append(f"{step.describe()} ({'worked out again on the changed model' if redone else 'was: ' + was.describe()})")
            else:
                done.append(step.describe())
        elif was is not None and was.kind != "trainable":
            gone.remove(was)
            before = f"keeping {was.params['keep']:.0%}" if was.kind == "prune" else was.what()
            done.append(f"{step.describe()} (was {before})")
        else:
            done.append(step.describe())
    parts = []
    if done:
        parts.append("Done: " + _listing(done) + ".")
    if gone:
        parts.append("Took back: " + _listing([g.describe() for g in gone]) + ".")
    if notes:
        parts.append(" ".join(n if n.endswith(".") else n + "." for n in notes[:3]) + (" ..." if len(notes) > 3 else ""))
    return " ".join(parts) or "No change."


def _listing(texts) -> str:
    return f"{len(texts)} edits" if len(texts) > 3 else "; ".join(texts)


def _what(entry, values: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return f"{entry.label!r}" + (f" with {args}" if args else "")


def pruning_module():
    """``kerasnb.pruning``, imported on the first question about pruning (not when the panel opens)."""
    return importlib.import_module("kerasnb.pruning")


def _without(steps: list, step: Step) -> list:
    """``steps`` less ``step`` (:meth:`Session._commit` drops the freezes / prunes of what it added)."""
    return [s for s in steps if s is not step]


def _under(path: str, names) -> bool:
    """True when ``path`` is one of ``names`` or inside one of them (a nested model)."""
    return any(path == n or path.startswith(n + "/") for n in names)


def _entry_or_none(label):
    try:
        return catalog.get(label)
    except KeyError:
        return None


def _unchanged_report(infos, aliases=None) -> WeightReport:
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


def _slug(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_") or "new"

