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
(:mod:`kerasnb.editor.answers`); statuses foretold before a rebuild by :func:`kerasnb.actions.foretell`,
handed to ``session.on_predict(report, step)``.
"""

from __future__ import annotations

import numpy as np

import kerasnb.actions as actions  # the editor's one internal facade
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
from .. import lora
from ..edits import SetTrainable
from ..errors import InvalidEdit, LayerNotFound, UnprunableLayer, first_line, suggest
from ..report import WeightReport
from . import steps as stepping
from .steps import (Step, _entry_or_none, _key_in, _under, _without, answers_module, call_of, change_text,  # noqa: F401
                    edits_of, key_text, ordered, parse_shape, path_of)

RECENT_RESULTS = 4  # models kept for instant undo / redo; each holds a copy of the weights
PRUNE_CRITERIA = ("l1", "l2", "bn_scale")  # what the panel ranks channels by (kerasnb.importance)
DATA_CRITERIA = ("apoz", "taylor")  # ... and these too when the editor was given data= to measure channels on
GLOBAL_BUDGETS = actions.GLOBAL_BUDGETS  # keep= / params= / macs= of "Prune model..."
GLOBAL_ROUND_TO = (None, 8)
CHANGE_INPUT_MODES = actions.CHANGE_INPUT_MODES
LORA_RANK = 8  # the rank the LoRA controls start from (kerasnb.enable_lora's default)



class Session:
    """What the panel edits; every method either succeeds or raises and changes nothing."""

    def __init__(self, model, probe=None, data=None):
        actions.functional(model)  # refuse unbuilt / subclassed models before drawing anything
        self.original = model
        self.probe = None if probe is None else answers_module().check_probe(model, probe)  # a batch to compare outputs on
        # Examples to measure channels on (kerasnb.importance's data=): offers "apoz" and "taylor".
        self.data = data
        self._costs: tuple = (None, None)  # (model, kerasnb.flops.layer_cost of it) for the MACs shown
        self._global_scores: dict = {}  # criterion -> (model, scores of every group) for "Prune model..."
        self.original_rows = {info.path: info for info in actions.describe(model)}
        # A tied layer (a task's head reusing the backbone's embedding) is one row, as in every report.
        self._aliases = actions.layer_aliases(model)
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
        return actions.unchanged_report(self.original_rows.values(), self._aliases)

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
                else {info.path: info for info in actions.describe(self.result.model)}
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
        gone = self.answers.gone_reason(key)
        if gone and entry.kind != "keep":
            raise InvalidEdit(f"{gone}. Received: key={key!r}, label={label!r}")
        path = path_of(key)
        step = self.answers.step_for(key)
        steps = list(self.steps)
        if step is not None and step.kind == "insert":
            if entry.kind == "keep":
                return path
            if entry.kind == "remove":
                self._commit(_without(steps, step))
                return None
            new = stepping.insert_step(self, step.target, entry, params, reuse=step)
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
        new = stepping.choice_step(self, target, entry, params, reuse=step)
        if step is not None:
            steps[steps.index(step)] = new
        else:
            steps.append(new)
        self._commit(steps)
        return target

    def set_params(self, key, params: dict):
        """Change some parameters of the type ``key`` has (the others stay); returns like :meth:`replace`."""
        step = self.answers.step_for(self.key(key)) if key is not None else None
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
        gone = self.answers.gone_reason(key)
        if gone:
            raise InvalidEdit(f"{gone}. Received: key={key!r}, label={label!r}")
        if self.answers.own_step(key) is not None:
            raise InvalidEdit(f"{key_text(key)} was replaced or deleted; insert after what stands there now. "
                              f"Received: key={key!r}")
        self._refuse_call_after_transform(key, "given a layer after it")
        step = stepping.insert_step(self, key, entry, params)
        self._commit(list(self.steps) + [step])
        return step.names[0] if step.names else ""

    def delete(self, key) -> str | None:
        """Delete the layer (or call) ``key``: :meth:`replace` with "Remove (identity)"."""
        return self.replace(key, catalog.REMOVE)

    def configure(self, key, **changes) -> str:
        """Rebuild the layer at ``key`` from its config with ``changes`` (:func:`kerasnb.configure`), as
        one step; configuring it again replaces that step. Returns the path."""
        return self._row_transform("configure", key, changes)

    def prune_heads(self, key, heads=None, *, keep=None) -> str:
        """Remove attention heads of the MultiHeadAttention at ``key`` (:func:`kerasnb.prune_heads`):
        ``heads`` the indices removed, or ``keep`` how many kept (a fraction or a count). One step
        per layer: pruning its heads again replaces that step. Returns the path."""
        return self._row_transform("prune_heads", key, heads, keep)

    def widen(self, key, width: int) -> str:
        """Give the layer at ``key`` (and the layers its channels are tied to) ``width`` units or filters,
        copies of existing ones (:func:`kerasnb.widen`), as one step; widening the same row again
        replaces that step. Returns the path."""
        return self._row_transform("widen", key, width)

    def deepen(self, key, activation=None) -> str:
        """Insert after the layer at ``key`` a layer set to the identity (:func:`kerasnb.deepen`), as one
        step; deepening the same row again replaces that step. Returns the path."""
        return self._row_transform("deepen", key, activation)

    def quantize(self, key, mode: str = "int8") -> str:
        """Quantize the layer at ``key`` with Keras's own quantize() (:func:`kerasnb.quantize`; a block:
        the layers inside it Keras can quantize), as one step; quantizing the same row again replaces
        that step, and undo brings the float layer back. Returns the path."""
        return self._row_transform("quantize", key, mode)

    def quantize_model(self, mode: str = "int8", keep_float=None):
        """Quantize every layer Keras can quantize (:func:`kerasnb.quantize`), ``keep_float`` of them
        (the most drift per byte saved on the editor's data) left float, as one step; again replaces
        that step. Returns the step."""
        settings = actions.get("quantize").check("", mode, keep_float)
        old = next((s for s in self.steps if s.label == "quantize" and s.target == ""), None)
        return self._put_transform(old, "quantize", settings)

    def quantization_sensitivity(self, mode: str = "int8"):
        """:func:`kerasnb.quantization_sensitivity` of the current model on the editor's data (kept
        until the model or the mode changes), or None without data."""
        if self.data is None:
            return None
        model = self.model
        cached = getattr(self, "_sensitivity", None)
        if cached is not None and cached[0] is model and cached[1] == mode:
            return cached[2]
        from ..quantization import quantization_sensitivity

        frame = quantization_sensitivity(model, self.data, mode)
        self._sensitivity = (model, mode, frame)
        return frame

    def patch(self, key) -> str:
        """Ablate the layer at ``key``: its output replaced by zeros for everything after it
        (:func:`kerasnb.patch`), as one step; the probe comparison shows what moved. Returns the path."""
        return self._row_transform("patch", key)

    def activation_stats(self) -> dict:
        """``{path: {"mean", "std", "min", "max", "zeros", "nonfinite"}}`` of the current model on the
        editor's ``data`` (every call of a layer together), from one :func:`kerasnb.trace` with
        statistics only; ``{}`` without data. Traced again once the model changes."""
        if self.data is None:
            return {}
        model = self.model
        cached = getattr(self, "_stats_cache", None)
        if cached is not None and cached[0] is model:
            return cached[1]
        from ..tracing import trace

        data = self.data
        if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[0], "shape"):
            data = data[0]  # (x, y): the labels are not needed to look inside
        stats = trace(model, data, stats_only=True).by_path()
        self._stats_cache = (model, stats)
        return stats

    def grow_blocks(self, key) -> str:
        """Add after the block at ``key`` (a transformer block, or the Add closing a residual block) a copy
        of it whose output projections are zero (:func:`kerasnb.grow_blocks`), as one step; growing after
        the same row again replaces that step. Returns the path."""
        return self._row_transform("grow_blocks", key)

    def _row_transform(self, name: str, key, *arguments) -> str:
        """The whole-model action ``name`` on the row of ``key`` (its record checks ``(path, *arguments)``):
        one such step per row, taking the place of the row's earlier one. Returns the path."""
        if key is None:
            raise InvalidEdit(f"No layer is selected, so {name} has nothing to act on. Select a row first. "
                              f"Received: key=None")
        path = path_of(self.key(key))
        if path not in self.rows():
            raise LayerNotFound(f"No layer {path!r} in the current model.{suggest(path, self.rows())} "
                                f"Received: key={key!r}")
        old = next((s for s in self.steps if s.label == name and s.target == path), None)
        self._put_transform(old, name, actions.get(name).check(path, *arguments))
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
        keep, by, path = self.check_prune(key, keep, by)
        steps = list(self.steps)
        old = self.answers.prune_step(path)
        if keep >= 1.0:
            if old is not None:
                self._commit(_without(steps, old))
            return path
        if old is None:
            reason = self.answers.prune_reason(key if isinstance(key, tuple) else path)
            if reason:
                raise UnprunableLayer(f"{reason.rstrip('.')}. Received: key={key!r}")
            index = len(steps)
            steps.append(None)
        else:
            index = steps.index(old)
        steps[index] = stepping.prune_step_on(self, tuple(steps[:index]), path, keep, by)
        self._commit(steps)
        return path

    def check_prune(self, key, keep, by) -> tuple:
        """``(keep, by, path)`` checked, or :class:`InvalidEdit` saying what would work."""
        keep, by = actions.check_prune(keep, by, self.criteria(), DATA_CRITERIA if self.data is None else ())
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nothing to prune. Select a Dense or convolution "
                              "layer first. Received: key=None")
        path = path_of(key)
        if path not in self.rows() and path not in self.original_rows:
            raise InvalidEdit(f"No layer {path!r} to prune. Received: key={key!r}")
        return keep, by, path

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
        names = [layer.name for layer in actions.input_layers(self.original)]
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
        was = next(tuple(l.batch_shape)[1:] for l in actions.input_layers(before.model if before else self.original)
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
        params = self.answers.like_settings(key)
        self._put_transform(None, "replace_all", params)
        return params["paths"]

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
        old = self.answers.lora_step(path)
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
        self._commit(_without(list(self.steps), self.answers.lora_step(path_of(key))))
        return path_of(key)

    def enable_lora_attention(self, rank: int = LORA_RANK, projections: str = "query, value") -> None:
        """LoRA of ``rank`` on every attention projection of the model (``projections``: a key of
        :data:`kerasnb.lora.PROJECTIONS`), at any depth; layers that have LoRA from another step keep
        it. One such step: doing it again changes it."""
        rank = actions.check_rank(rank)
        if projections not in lora.PROJECTIONS:
            raise InvalidEdit(f"projections is one of {', '.join(map(repr, lora.PROJECTIONS))}. "
                              f"Received: projections={projections!r}")
        old = self.answers.lora_step("")
        if old is not None and old.params == {"scope": "", "rank": rank, "projections": projections}:
            raise InvalidEdit(f"LoRA rank {rank} is on the attention projections ({projections}) already; nothing "
                              f"would change. Received: rank={rank!r}, projections={projections!r}")
        self._put_transform(old, "enable_lora", {"scope": "", "rank": rank, "projections": projections})

    def disable_lora_attention(self) -> None:
        """Take back the \u201cLoRA on attention\u201d step."""
        old = self.answers.lora_step("")
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
        """The report of ``steps`` foretold from shapes alone (:func:`kerasnb.actions.foretell`), or None
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
                    same = actions.foretell_same_shapes(self.report, old.edit, new.edit, new.input_shape, new.names)
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
            model, report = self.original, actions.unchanged_report(self.original_rows.values(), self._aliases)
        return actions.foretell(model, report, step.edit, step.names)

    # ------------------------------------------------------------------ internals




    def _put_transform(self, old, op: str, params: dict):
        """Put the whole-model step ``op`` in the place of ``old`` (or at the end), worked out on the
        model the steps before it make; the steps after it are worked out again. Returns the step."""
        steps = list(self.steps)
        index = steps.index(old) if old is not None else len(steps)
        step = stepping.transform_step(self, op, params, tuple(steps[:index]))
        self._commit(steps[:index] + [step] + steps[index + 1:])
        return step













    def _rebase(self, steps) -> list:
        """``steps`` with each whole-model step worked out again where the steps before it changed."""
        out: list = []
        for step in steps:
            if step.kind == "transform" and tuple(out) != step.base:
                step = stepping.transform_step(self, step.label, step.params, tuple(out), keep=step.names)
            elif step.kind == "prune" and tuple(out) != step.base:
                # Its channels (or at least its counts) were worked out on other steps.
                step = stepping.prune_step_on(self, tuple(out), step.target, step.params["keep"], step.params["by"])
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


