"""The editor's state without any widget: the original model, the steps taken, and the history.

The current model is always ``kerasnb.apply(original, session.edits)``: the session is a history
of step lists over that one call, so undo is going back to an earlier list, and an error leaves
everything as it was. Each step is one action of :mod:`kerasnb.actions` (the registry of every
capability), and the session's verbs are the core's: :meth:`Session.replace`, ``insert``,
``delete``, ``configure``, ``set_trainable``, ``prune``, ``prune_global``, ``change_input``,
``replace_all``, ``swap_activation``, ``split_activations``, ``fold_batchnorm``, ``truncate``,
``enable_lora``, ``merge_lora``.

A whole-model action (``Action.whole_model``) is a step of kind ``"transform"`` whose edit is the
tuple of edits its plan returned, worked out on the model the steps before it make; when an
earlier step changes, it is worked out again on the new model with the same settings before
anything is committed (or refused, and nothing changes). A layer's prune by a criterion that
names channels is worked out again likewise. While LoRA is on, only its factors train, as after
:func:`kerasnb.enable_lora` (the session sets those flags again after each rebuild).

A row of the table is a layer *path*. What the controls act on is a *key*: the path, or
``(path, call_index)`` for one call of a layer the original model calls more than once (a
shared layer); replacing, deleting and inserting are per call, freezing and pruning per layer.
What the panel asks about rows and the model is answered by ``session.answers``
(:mod:`kerasnb.editor.answers`); statuses foretold before a rebuild by :mod:`kerasnb._foretell`,
handed to ``session.on_predict(report, step)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kerasnb.actions as actions  # the editor's one internal facade
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
import kerasnb.fitting as fitting
from .. import _foretell, _graph, lora
from ..edits import Delete, Insert, Prune, Replace, SetTrainable, Transform, Truncate
from ..errors import IncompatibleShape, InputLayerEdit, InvalidEdit, LayerNotFound, first_line, suggest
from ..report import WeightReport

RECENT_RESULTS = 4  # models kept for instant undo / redo; each holds a copy of the weights
PRUNE_CRITERIA = ("l1", "l2", "bn_scale")  # what the panel ranks channels by (kerasnb.importance)
DATA_CRITERIA = ("apoz", "taylor")  # ... and these too when the editor was given data= to measure channels on
GLOBAL_BUDGETS = actions.GLOBAL_BUDGETS  # keep= / params= / macs= of "Prune model..."
GLOBAL_ROUND_TO = (None, 8)
CHANGE_INPUT_MODES = actions.CHANGE_INPUT_MODES
LORA_RANK = 8  # the rank the LoRA controls start from (kerasnb.enable_lora's default)


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

    @property
    def action(self) -> str:
        """The name of the :mod:`kerasnb.actions` record this step is one of."""
        if self.kind == "transform":
            return self.label
        if self.kind == "choice":
            return "delete" if isinstance(self.edit, Delete) else "replace"
        return {"insert": "insert", "trainable": "set_trainable", "prune": "prune"}[self.kind]

    def short(self) -> str:
        """What the table's edit column shows for this step (its action's label)."""
        return actions.get(self.action).label(self)

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
        self.probe = None if probe is None else answers_module().check_probe(model, probe)  # a batch to compare outputs on
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
        # Called as on_predict(report, step) before a rebuild whose statuses :meth:`predict` can tell.
        self.on_predict = None
        self.answers = answers_module().Answers(self)  # what the panel asks, as plain data

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
        return _foretell.unchanged_report(self.original_rows.values(), self._aliases)

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

    # ------------------------------------------------------------------ verbs: one per action of kerasnb.actions

    def replace(self, key, label: str, params: dict | None = None):
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
        """Change some parameters of the type ``key`` has (the others stay); returns like :meth:`replace`."""
        step = self.step_for(self.key(key)) if key is not None else None
        if step is None or not step.label:
            raise InvalidEdit(f"{key_text(key) if key is not None else 'No row'} has no type with parameters "
                              f"chosen; choose a type first. Received: params={params!r}")
        if not isinstance(params, dict):
            raise InvalidEdit(f"params is a dict of name -> value. Received: params={params!r}")
        return self.replace(key, step.label, {**step.params, **params})

    def insert(self, key, label: str, params: dict | None = None) -> str:
        """Insert a layer of type ``label`` after ``key``; returns the new layer's name."""
        entry = catalog.get(label)
        if not entry.insertable or entry.kind != "replace":
            raise InvalidEdit(f"{label!r} cannot be inserted; insertable types: "
                              f"{answers_module().insertable_labels()}. "
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
        """Delete the layer (or call) ``key``: :meth:`replace` with "Remove (identity)"."""
        return self.replace(key, catalog.REMOVE)

    def configure(self, key, **changes) -> str:
        """Rebuild the layer at ``key`` from its config with ``changes`` (:func:`kerasnb.configure`), as
        one step; configuring it again replaces that step. Returns the path."""
        if key is None:
            raise InvalidEdit(f"No layer is selected, so there is nothing to configure. Received: key=None, "
                              f"changes={changes!r}")
        path = path_of(self.key(key))
        if path not in self.rows():
            raise LayerNotFound(f"No layer {path!r} in the current model to configure.{suggest(path, self.rows())} "
                                f"Received: key={key!r}")
        old = next((s for s in self.steps if s.label == "configure" and s.target == path), None)
        self._put_transform(old, "configure", actions.get("configure").check(path, changes))
        return path

    def transform(self, name: str, **settings):
        """Take the whole-model action ``name`` of :mod:`kerasnb.actions` with ``settings`` (checked by
        its record) as one step after the others. Returns the step."""
        action = actions.get(name)
        if not action.whole_model:
            raise InvalidEdit(f"{name!r} acts on a row, not the whole model: call session.{name}(key, ...). "
                              f"Received: transform({name!r})")
        settings = action.check(**settings) if action.check is not None else settings
        return self._put_transform(None, name, settings)

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

    def criteria(self) -> tuple:
        """The criteria a layer's channels can be ranked by here: ``"apoz"`` and ``"taylor"`` only
        when the session has ``data`` to measure them on."""
        return PRUNE_CRITERIA + (DATA_CRITERIA if self.data is not None else ())

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
            reason = self.answers.prune_reason(key if isinstance(key, tuple) else path)
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
        """``(channels removed, params after, MACs before, MACs after)``: :func:`kerasnb.actions.prune_plan`."""
        return actions.prune_plan(model, path, keep, by, self.data, self._layer_costs(model))

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

    def _macs(self, model):
        costs = self._layer_costs(model)
        return None if costs is None else int(sum(c.macs for c in costs.values()))

    def prune_global(self, keep=None, *, params=None, macs=None, by: str = "l1", round_to=None) -> tuple:
        """Prune the whole model to one budget (:func:`kerasnb.prune_global`) as one step, after the
        others: ``keep`` (the fraction of the channels kept), ``params`` or ``macs`` (the fraction
        of the current parameters / multiply-accumulates kept at most); ``by``: one of
        :meth:`criteria`; ``round_to``: None or a channel multiple (8). Returns the step's counts:
        ``(params before, params after, MACs before, MACs after)``. A budget that cannot be
        reached is refused and nothing changes."""
        settings = actions.check_global(keep, params, macs, by, round_to, criteria=self.criteria())
        return self._put_transform(None, "prune_global", settings).counts

    def global_plan(self, model, settings: dict):
        """The :class:`kerasnb.budget.GlobalPlan` of ``settings`` on ``model``, reusing its scores
        (scored once per model and criterion: a slider's moves only plan again)."""
        by = settings["by"]
        held = self._global_scores.get(by)
        scores = held[1] if held is not None and held[0] is model else None
        plan = actions.prune_global_plan(model, settings, scores=scores, data=self.data)
        if scores is None:
            self._global_scores = {k: v for k, v in self._global_scores.items() if v[0] is model}
            self._global_scores[by] = (model, plan.scores)
        return plan

    def change_input(self, shape, mode: str | None = None, input: str | None = None) -> str:
        """Give the model's input a new shape (without the batch axis): :func:`kerasnb.change_input`.

        ``shape``: a tuple, or text such as ``"8, 8, 1"`` (``None`` for a free size).
        ``mode``: how the layers that read a changed number of channels are adapted, one of
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
            raise LayerNotFound(f"The model has no input named {input!r}.{suggest(str(input), names)} Its inputs: "
                                f"{names}. Received: input={input!r}")
        wanted = actions._check_mode(mode)
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
            mode = wanted or ("sum" if shape[-1] == 1 else "repeat")  # kerasnb.change_input's defaults
        self._put_transform(old, "change_input", {"input": input, "shape": shape, "mode": mode})
        return input

    def replace_all(self, key) -> tuple:
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
            ok, reason = answers_module().fits(entry, (self.model, path), site, **own.params)
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
        self._put_transform(None, "replace_all", params)
        return tuple(fit)

    def swap_activation(self, old: str, new: str) -> None:
        """Use activation ``new`` wherever the model applies ``old``: :func:`kerasnb.swap_activation`."""
        self.transform("swap_activation", old=old, new=new)

    def split_activations(self) -> None:
        """Each fused activation becomes an Activation layer after its layer: :func:`kerasnb.split_activations`."""
        self.transform("split_activations")

    def fold_batchnorm(self) -> None:
        """Fold each BatchNormalization into the layer before it: :func:`kerasnb.fold_batchnorm`."""
        self.transform("fold_batchnorm")

    def truncate(self, key) -> None:
        """Truncate the model at ``key``: its output becomes the model's output, what follows is
        removed (:func:`kerasnb.truncate`)."""
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nowhere to truncate. Select a row first. "
                              "Received: key=None")
        key = self.key(key)
        reason = self.answers.cut_reason(key)
        if reason:
            raise InvalidEdit(f"The model cannot be truncated at {key_text(key)}: {reason}. Received: key={key!r}")
        self.transform("truncate", at=_key_in(self.steps, key))

    def enable_lora(self, key, rank: int = LORA_RANK) -> str:
        """LoRA of ``rank`` on the row of ``key``: on the layer itself (Dense, EinsumDense, Embedding,
        convolution) or, on a block, on its attention projections (query and value), with
        :func:`kerasnb.enable_lora`. Only the LoRA factors train afterwards. One LoRA step per
        row: turning it on again with another rank changes that step. Returns the row's path."""
        rank = actions.check_rank(rank)
        if key is None:
            raise InvalidEdit(f"No layer is selected, so there is nothing to put LoRA on. Select a Dense, EinsumDense, "
                              f"Embedding or convolution row, or a block. Received: key=None, rank={rank!r}")
        key = self.key(key)
        info = self.answers.lora_info(key)
        if not info.can_enable:
            raise InvalidEdit(f"LoRA cannot go on {key_text(key)}: {info.reason}. Received: key={key!r}, rank={rank!r}")
        path = path_of(key)
        old = self._lora_step(path)
        if old is not None and old.params["rank"] == rank:
            raise InvalidEdit(f"LoRA rank {rank} is on {key_text(key)} already; nothing would change. Received: "
                              f"key={key!r}, rank={rank!r}")
        self._put_transform(old, "enable_lora", {"scope": path, "rank": rank, "projections": "query, value"})
        return path

    def disable_lora(self, key) -> str:
        """Take back the LoRA step of the row of ``key`` (its layers are as they were before it)."""
        if key is None:
            raise InvalidEdit("No layer is selected, so there is no LoRA to turn off. Select a row with LoRA. "
                              "Received: key=None")
        key = self.key(key)
        info = self.answers.lora_info(key)
        if not info.can_disable:
            raise InvalidEdit(f"LoRA cannot be turned off on {key_text(key)}: {info.off_reason}. Received: key={key!r}")
        self._commit(_without(list(self.steps), self._lora_step(path_of(key))))
        return path_of(key)

    def enable_lora_attention(self, rank: int = LORA_RANK, projections: str = "query, value") -> None:
        """LoRA of ``rank`` on every attention projection of the model (``projections``: a key of
        :data:`kerasnb.lora.PROJECTIONS`), at any depth; layers that have LoRA from another step keep
        it. One such step: doing it again changes it."""
        rank = actions.check_rank(rank)
        if projections not in lora.PROJECTIONS:
            raise InvalidEdit(f"projections is one of {', '.join(map(repr, lora.PROJECTIONS))}. "
                              f"Received: projections={projections!r}")
        old = self._lora_step("")
        if old is not None and old.params == {"scope": "", "rank": rank, "projections": projections}:
            raise InvalidEdit(f"LoRA rank {rank} is on the attention projections ({projections}) already; nothing "
                              f"would change. Received: rank={rank!r}, projections={projections!r}")
        self._put_transform(old, "enable_lora", {"scope": "", "rank": rank, "projections": projections})

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
        self.transform("merge_lora")

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

    def predict(self, steps) -> WeightReport | None:
        """The report of ``steps`` foretold from shapes alone (:mod:`kerasnb._foretell`), or None
        when that cannot be exact: ``steps`` are the current ones with one replace or insert given
        other parameters, or steps already built plus one replace, delete or insert of a top-level
        layer called once at the end. A whole-model step last, a shared or tied layer, waits for
        the rebuild."""
        steps = tuple(steps)
        if not steps or self._aliases:
            return None
        now = self.steps
        if self.result is not None and len(steps) == len(now):
            changed = [i for i, (a, b) in enumerate(zip(now, steps)) if a is not b]
            if len(changed) == 1:
                old, new = now[changed[0]], steps[changed[0]]
                if (old.kind, old.target, old.names, old.label) == (new.kind, new.target, new.names, new.label) \
                        and old.kind in ("choice", "insert") \
                        and not any(s.kind == "transform" for s in steps[changed[0]:]):
                    same = _foretell.foretell_same_shapes(self.report, old.edit, new.edit, new.input_shape, new.names)
                    if same is not None:
                        return same
        step, base = steps[-1], steps[:-1]
        if step.kind not in ("choice", "insert") or isinstance(step.target, tuple):
            return None
        if any(s.kind in ("choice", "insert") and isinstance(s.target, tuple) for s in base):
            return None  # call edits run first (see ordered): the last step is not the last edit
        if base:
            cached = next((r for kept, r in self._recent if kept == base), None)
            if cached is None:
                return None
            model, report = cached.model, cached.report
        else:
            model, report = self.original, _foretell.unchanged_report(self.original_rows.values(), self._aliases)
        return _foretell.foretell(model, report, step.edit, step.names)

    # ------------------------------------------------------------------ internals

    def _lora_step(self, scope: str):
        """The LoRA step of the row ``scope`` ("" for the whole-model one), or None."""
        return next((s for s in self.steps if s.kind == "transform" and s.label == "enable_lora" and s.target == scope), None)

    def _lora_giver(self, path: str):
        """The last LoRA step whose edits reach the layer at ``path`` (or a layer inside it), or None."""
        found = None
        for step in self.steps:
            if step.kind == "transform" and step.label == "enable_lora" and any(
                    isinstance(getattr(e, "target", None), str) and _under(e.target, (path,)) for e in step.edits):
                found = step
        return found

    def _layer(self, path: str):
        """The layer at ``path`` in the current model, or None."""
        return next((layer for p, layer in _graph.walk_layers(self.model) if p == path), None)

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
        ok, reason = answers_module().fits(entry, place, site, **values)
        if not ok:
            offered, _ = self.answers.options(target)
            raise IncompatibleShape(
                f"{_what(entry, values)} does not fit {key_text(target)}: {reason}. "
                f"Types that fit there: {', '.join(offered)}. Received: label={entry.label!r}, params={values!r}"
            )
        if entry.kind == "remove":
            return Step("choice", target, Delete(target), entry.label, {}, input_shape=site.input_shape,
                        replaced=type(site.layer), block=answers_module().is_block(site.layer))
        replacement = entry.make(site.layer, site.input_shape, **values)
        names = self._name(replacement, target, entry.label, keep=reuse.names if reuse else ())
        return Step("choice", target, Replace(target, replacement), entry.label, values, names,
                    input_shape=site.input_shape, replaced=type(site.layer))

    def _insert_step(self, target, entry, params, reuse=None) -> Step:
        """The step inserting ``entry`` after ``target``, checked like a choice before building."""
        if not entry.insertable or entry.kind != "replace":
            raise InvalidEdit(f"{entry.label!r} cannot be inserted; insertable types: "
                              f"{answers_module().insertable_labels()}. Received: label={entry.label!r}")
        site = self._base_site(reuse) if reuse is not None else self.site(target)
        values = self._params(entry, site.layer, params, reuse, replacing=False)
        ok, reason = fitting.fits_after(entry, site, **values)
        if not ok:
            offered, _ = answers_module().insertable(site)
            raise IncompatibleShape(
                f"{_what(entry, values)} cannot go after {key_text(target)}: {reason}. "
                f"Types that can: {', '.join(offered) or 'none'}. Received: label={entry.label!r}, params={values!r}"
            )
        layer = entry.make(site.layer, site.output_shape, **values)
        names = self._name(layer, target, entry.label, keep=reuse.names if reuse else ())
        return Step("insert", target, Insert(layer, after=target), entry.label, values, names,
                    input_shape=site.output_shape)

    @staticmethod
    def _params(entry, layer, params, reuse, replacing: bool = True) -> dict:
        """Checked values: the user's, else the earlier ones for the same type, else the defaults."""
        if params is None and reuse is not None and reuse.label == entry.label:
            return dict(reuse.params)  # same type again: keep what the user had set
        return entry.check_params(params or {}, layer, replacing=replacing)

    def _name(self, replacement, target, label: str, keep=(), also=()) -> tuple:
        """Name the new layers after the row they stand in, so the table can lead back to the step.
        ``also``: more names already taken (those given earlier in the same action)."""
        parts = replacement if isinstance(replacement, (list, tuple)) else [replacement]
        taken = set(self.rows()) | set(self.original_rows) | set(also)
        for step in self.steps:
            taken |= set(step.names)
        taken -= set(keep)
        import keras

        call = f"_call{call_of(target)}" if isinstance(target, tuple) else ""
        base = path_of(target).split("/")[-1] + call + "_" + _slug(label)
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
        result, text = actions.get(op).plan(model, params, _PlanContext(self, keep))
        if not result.edits:
            raise InvalidEdit(f"{text}: nothing would change. Received: {op} on model {model.name!r}")
        had = {p for p, _ in _graph.walk_layers(model)}
        names = tuple(p for p, _ in _graph.walk_layers(result.model) if p not in had)
        target = path_of(params["at"]) if "at" in params else next(
            (params[k] for k in ("scope", "input", "target") if k in params), "")
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


class _PlanContext:
    """What a whole-model action's plan may ask of the session (see :class:`kerasnb.actions.Action`)."""

    def __init__(self, session, keep=()):
        self.session, self.keep, self.data = session, tuple(keep), session.data

    def name_layers(self, replacement, path, label, also=()) -> tuple:
        """Name the new layers after the row they stand in (the names of the step redone are free)."""
        return self.session._name(replacement, path, label, keep=self.keep, also=also)

    def global_plan(self, model, settings):
        return self.session.global_plan(model, settings)


def answers_module():
    """:mod:`kerasnb.editor.answers` (it imports this module: imported when first asked)."""
    from . import answers

    return answers


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


def _train_only_lora(steps, model) -> None:
    """Only the LoRA factors train, as after :func:`kerasnb.enable_lora`, while the latest LoRA step
    (turning it on, or merging it) is one that turns it on and the model has LoRA.

    The session rebuilds from the original, and what enable_lora freezes (every variable but the
    factors) is not an edit, so it is done again here. Layers that steps after that LoRA step
    added, or unfroze, are left training.
    """
    last = max((i for i, s in enumerate(steps) if s.kind == "transform"
                and s.label in ("enable_lora", "merge_lora")), default=None)
    if last is None or steps[last].label != "enable_lora" or not lora.lora_layers(model):
        return
    later = {n for s in steps[last + 1:] for n in s.names}
    later |= {path_of(s.target) for s in steps[last + 1:] if s.kind == "trainable" and s.trainable}
    lora.train_only_lora(model, leave=later)


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


def _slug(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_") or "new"


