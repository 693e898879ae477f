"""The editor's state without any widget: the original model, the steps taken, and the history.

Each step is one user action (choose a type for a layer, insert after it, freeze it, prune it).
The current model is always ``kerasnb.apply(original, session.edits)``, so undo is just going
back to an earlier list of steps, and an error leaves everything as it was.

A row of the table is a layer *path*. What the controls act on is a *key*: the path, or
``(path, call_index)`` for one call of a layer the original model calls more than once (a
shared layer); replacing, deleting and inserting are per call, freezing and pruning per layer.

The session answers every question the panel asks about a row in one place,
:meth:`Session.row_actions` (types offered and refused, parameters, whether it can be
deleted, frozen, pruned or have something inserted after it, and why not), so the panel only
reads those answers and draws them. Shapes come from the model as it is now: a row whose layer a
step replaced is judged where that layer would stand in the model every other step makes.
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _graph
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
import kerasnb.fitting as fitting
from ..edits import Delete, Insert, Prune, Replace, SetTrainable
from ..errors import IncompatibleShape, InputLayerEdit, InvalidEdit, first_line
from .._lineage import Lineage
from ..report import LayerRow, WeightReport, status_of


RECENT_RESULTS = 4  # models kept for instant undo / redo; each holds a copy of the weights
PRUNE_CRITERIA = ("l1", "l2")  # what kerasnb.prune ranks channels by
INPUT_STAYS = "input layers stay; insert after them instead"


@dataclass(frozen=True)
class Step:
    """One action in the panel and the core edit that carries it out."""

    kind: str  # "choice" (replace / remove), "insert", "trainable" or "prune"
    target: Any  # the layer's path ("outer/inner" inside a nested model), or (path, call_index)
    edit: Any
    label: str = ""  # catalog label for choices and inserts
    params: dict = field(default_factory=dict)
    names: tuple = ()  # names of the layers this step adds, so their rows lead back to it
    trainable: bool | None = None
    counts: tuple = field(default=(), compare=False)  # prune: (params before, params after) the step
    input_shape: Any = field(default=None, compare=False)  # what the new layers were made for

    def what(self) -> str:
        """The chosen type with its parameters, e.g. ``Dropout(rate=0.2)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.label}({args})" if args else self.label

    def describe(self) -> str:
        what, target = self.what(), key_text(self.target)
        if self.kind == "choice":
            if isinstance(self.edit, Delete):
                return f"delete {target}"
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

    @property
    def can_insert(self) -> bool:
        return bool(self.insertable)


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

    def __init__(self, model):
        _graph.functional(model)  # refuse unbuilt / subclassed models before drawing anything
        self.original = model
        self.original_rows = {info.path: info for info in _graph.describe(model)}
        self.history: list[tuple] = [()]
        self.cursor = 0
        self.result = None  # SurgeryResult of the current steps; None while there are none
        self._rows_cache: dict | None = None
        self._recent: list = []  # (steps, result) of the last few rebuilds, most recently used first
        self._prune_reasons: tuple = (None, {})  # (model, {path: reason}) for the current model

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
        return _unchanged_report(self.original_rows.values())

    @property
    def edits(self) -> tuple:
        """The core edits, in the order :func:`kerasnb.apply` runs them (see :func:`ordered`)."""
        return tuple(step.edit for step in ordered(self.steps))

    @property
    def notes(self) -> list[str]:
        notes = list(self.result.notes) if self.result is not None else []
        for step in self.steps:
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
            if step.kind in ("trainable", "prune"):
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
        key = self.key(key)
        gone = self._gone_reason(key)
        if gone:
            raise InvalidEdit(f"{gone}. Received: key={key!r}")
        own = self._own_step(key)
        if own is not None:
            return self._base_site(own)
        return fitting.locate(self.model, _key_in(self.steps, key))

    def options(self, key) -> tuple[list, dict]:
        """``(labels offered, {label: reason not offered})`` for ``key`` (a row or one call of it)."""
        key = self.key(key)
        step = self.step_for(key)
        own = (step.label, step.params) if step is not None else None  # its own type: with its own values
        if step is not None and step.kind == "insert":
            # An inserted row can become another insertable type, or be removed again.
            offered, refused = _insertable(self._base_site(step), own)
            return [catalog.REMOVE] + offered, refused
        site = self._base_site(step) if step is not None else self.site(key)
        offered, refused = [], {}
        for entry in catalog.entries():
            params = own[1] if own is not None and entry.label == own[0] else {}
            ok, reason = fitting.fits(entry, None, key, site=site, **params)
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
        whether it can be deleted, frozen, pruned or have a layer inserted after it (with why not).
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
                              trainable, False, gone, PruneInfo(None, gone, n, n))
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
            prune=self.prune_info(key),
        )

    def prune_info(self, key) -> PruneInfo:
        """Whether the layer of ``key`` is pruned (and the parameter counts), or why it cannot be."""
        key = self.key(key)
        step = self.prune_step(path_of(key))
        if step is not None:
            before, after = step.counts or (self._count(), self._count())
            return PruneInfo(step.params["keep"], "", before, after)
        now = self._count()
        return PruneInfo(None, self.prune_reason(key), now, now)

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

        One prune step per layer: pruning it again changes that step in place. Returns the path.
        """
        if isinstance(keep, bool) or not isinstance(keep, numbers.Real) or math.isnan(keep) or not 0 < keep <= 1:
            raise InvalidEdit(
                "keep is the fraction of the layer's channels to keep: a number with 0 < keep <= 1 "
                f"(0.5 keeps half; 1 takes the pruning back). Received: keep={keep!r}"
            )
        if by not in PRUNE_CRITERIA:
            raise InvalidEdit(f"by is how channels are ranked: one of {', '.join(map(repr, PRUNE_CRITERIA))}. "
                              f"Received: by={by!r}")
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nothing to prune. Select a Dense or convolution "
                              "layer first. Received: key=None")
        path = path_of(key)
        if path not in self.rows() and path not in self.original_rows:
            raise InvalidEdit(f"No layer {path!r} to prune. Received: key={key!r}")
        steps = list(self.steps)
        old = self.prune_step(path)
        keep = float(keep)
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
        step = Step("prune", path, Prune(path, keep=keep, by=by), "Prune", {"keep": keep, "by": by})
        steps[index] = step
        before = self._build(tuple(steps[:index]))  # usually the current or the previous state: kept
        after = self._build(tuple(steps[:index + 1]))  # the whole list when it is the last step
        counts = (_graph.count_params(before.model if before else self.original), _graph.count_params(after.model))
        steps[index] = Step(step.kind, step.target, step.edit, step.label, step.params, counts=counts)
        self._commit(steps)
        return path

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
        by = f"{holder.describe()} took it away" if holder is not None else "an edit took it away"
        return f"{path!r} is not in the edited model: {by}; choose Keep on that row to bring it back"

    def _base_site(self, step) -> fitting.Site:
        """Where ``step``'s target stands in the model that every other step makes.

        The steps that build on what ``step`` added (inserts after its new layers, their freezes)
        go with it. If those other steps cannot be rebuilt without it, the steps made before it
        are used, and failing that the original model.
        """
        steps = list(self.steps)
        index = next(i for i, s in enumerate(steps) if s is step)
        others, added = [], set(step.names)
        for s in steps[:index] + steps[index + 1:]:
            if _under(path_of(s.target), added):
                added |= set(s.names)
                continue
            others.append(s)
        for base in (others, steps[:index]):
            try:
                result = self._build(tuple(base))
                return fitting.locate(result.model if result is not None else self.original,
                                      _key_in(base, step.target))
            except Exception:  # noqa: BLE001 -- any refusal: try a smaller base (the rebuild's own error is not ours)
                continue
        return fitting.locate(self.original, step.target)

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
        site = self._base_site(reuse) if reuse is not None else self.site(target)
        if site.is_input:
            raise InputLayerEdit(f"{key_text(target)} is an input layer: it stays. Insert after it instead. "
                                 f"Received: label={entry.label!r}")
        values = self._params(entry, site.layer, params, reuse)
        ok, reason = fitting.fits(entry, None, target, site=site, **values)
        if not ok:
            offered, _ = self.options(target)
            raise IncompatibleShape(
                f"{_what(entry, values)} does not fit {key_text(target)}: {reason}. "
                f"Types that fit there: {', '.join(offered)}. Received: label={entry.label!r}, params={values!r}"
            )
        if entry.kind == "remove":
            return Step("choice", target, Delete(target), entry.label, {}, input_shape=site.input_shape)
        replacement = entry.make(site.layer, site.input_shape, **values)
        names = self._name(replacement, target, entry, keep=reuse.names if reuse else ())
        return Step("choice", target, Replace(target, replacement), entry.label, values, names,
                    input_shape=site.input_shape)

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

    def _name(self, replacement, target, entry, keep=()) -> tuple:
        """Name the new layers after the row they stand in, so the table can lead back to the step."""
        parts = replacement if isinstance(replacement, (list, tuple)) else [replacement]
        taken = set(self.rows()) | set(self.original_rows)
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

    def _commit(self, steps: list) -> None:
        steps = tuple(self._applying(steps))
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

        result = apply(self.original, [s.edit for s in ordered(steps)])
        self._recent = ([(steps, result)] + self._recent)[:RECENT_RESULTS]
        return result


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
    for step in added:
        was = next((g for g in gone if g.kind == step.kind and g.target == step.target), None)
        if was is not None and was.kind != "trainable":
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


def _unchanged_report(infos) -> WeightReport:
    """The report of 'no edit yet': every layer as it is, its status derived like any other."""
    rows = []
    for i in infos:
        status, reason = status_of(Lineage(i.path), has_weights=bool(i.params), container=i.is_container)
        rows.append(LayerRow(i.path, i.type, status, reason, i.params, i.trainable, i.path, i.is_container))
    return WeightReport(rows)


def _slug(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_") or "new"

