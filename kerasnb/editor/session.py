"""The editor's state without any widget: the original model, the steps taken, and the history.

Each step is one user action (choose a type for a layer, insert after it, freeze it). The
current model is always ``kerasnb.apply(original, [step.edit for step in steps])``, so undo is
just going back to an earlier list of steps, and an error leaves everything as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import _graph
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
from ..edits import Delete, Insert, Replace, SetTrainable
from ..report import KEPT, NO_WEIGHTS, LayerRow, WeightReport


RECENT_RESULTS = 4  # models kept for instant undo / redo; each holds a copy of the weights


@dataclass(frozen=True)
class Step:
    """One action in the panel and the core edit that carries it out."""

    kind: str  # "choice" (replace / remove), "insert" or "trainable"
    target: str  # the layer the action is about ("outer/inner" inside a nested model)
    edit: Any
    label: str = ""  # catalog label for choices and inserts
    params: dict = field(default_factory=dict)
    names: tuple = ()  # names of the layers this step adds, so their rows lead back to it
    trainable: bool | None = None

    def what(self) -> str:
        """The chosen type with its parameters, e.g. ``Dropout(rate=0.2)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.label}({args})" if args else self.label

    def describe(self) -> str:
        what = self.what()
        if self.kind == "choice":
            if isinstance(self.edit, Delete):
                return f"delete {self.target!r}"
            return f"replace {self.target!r} with {what}"
        if self.kind == "insert":
            return f"insert {what} after {self.target!r}"
        return f"{'unfreeze' if self.trainable else 'freeze'} {self.target!r}"


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
        self._recent: list = []  # (steps, result) of the last few rebuilds, newest first

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
        return tuple(step.edit for step in self.steps)

    @property
    def notes(self) -> list[str]:
        notes = list(self.result.notes) if self.result is not None else []
        for step in self.steps:
            entry = _entry_or_none(step.label)
            if entry is not None and entry.note is not None and step.kind == "choice":
                site = self.site(step.target)
                notes.append(entry.note(site.input_shape, **step.params))
        return notes

    def rows(self) -> dict:
        """``{path: LayerInfo}`` of the current model (cached until the next change)."""
        if self._rows_cache is None:
            self._rows_cache = (
                self.original_rows if self.result is None
                else {info.path: info for info in _graph.describe(self.result.model)}
            )
        return self._rows_cache

    # ------------------------------------------------------------------ what a row stands for

    def step_for(self, path: str):
        """The step whose target or added layers include ``path``, or None."""
        for step in self.steps:
            if step.kind == "trainable":
                continue
            if step.target == path and step.kind == "choice":
                return step
            if any(path == n or path.startswith(n + "/") for n in step.names):
                return step
        return None

    def site(self, path: str) -> catalog.Site:
        """Where ``path`` sits, in the current model if it is there, else in the original."""
        model = self.model if path in self.rows() else self.original
        return catalog.locate(model, path)

    def options(self, path: str) -> tuple[list, dict]:
        """``(labels offered, {label: reason not offered})`` for the row ``path``."""
        step = self.step_for(path)
        if step is not None and step.kind == "insert":
            # An inserted row can become another insertable type, or be removed again.
            offered, refused = self.insert_options(step.target)
            return [catalog.REMOVE] + offered, refused
        target = step.target if step is not None else path
        site = self.site(target)
        offered, refused = [], {}
        for entry in catalog.entries():
            ok, reason = catalog.fits(entry, None, target, site=site)
            if ok:
                offered.append(entry.label)
            else:
                refused[entry.label] = reason
        return offered, refused

    def insert_options(self, path: str) -> tuple[list, dict]:
        """Types that can be inserted after ``path``: they must take and give its output shape."""
        site = self.site(path)
        after = catalog.Site(site.layer, site.output_shape, site.output_shape, site.feeds_merge, False, site.consumers)
        offered, refused = [], {}
        for entry in catalog.entries():
            if not entry.insertable:
                continue
            try:
                ok, reason = catalog.shape_reason(after, catalog.dry_run(entry, site.layer, site.output_shape))
            except Exception as error:  # a type that cannot take the shape is simply not offered
                ok, reason = False, catalog.first_line(error)
            if ok:
                offered.append(entry.label)
            else:
                refused[entry.label] = reason
        return offered, refused

    # ------------------------------------------------------------------ actions

    def choose(self, path: str, label: str, params: dict | None = None) -> str | None:
        """Give the row ``path`` the type ``label`` (Keep undoes an earlier choice).

        Returns the row that stands for this layer afterwards (an inserted layer's new name, or
        the target), so the panel can keep it selected; None when the row is gone.
        """
        step = self.step_for(path)
        entry = catalog.get(label)
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
        target = step.target if step is not None else path
        if target not in self.rows() and target not in self.original_rows:
            raise catalog_error(f"No layer {target!r} to edit.")
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

    def insert_after(self, path: str, label: str, params: dict | None = None) -> str:
        """Insert a layer of type ``label`` after ``path``; returns the new layer's name."""
        entry = catalog.get(label)
        if not entry.insertable:
            raise catalog_error(f"{label!r} cannot be inserted; insertable types: "
                                + ", ".join(e.label for e in catalog.entries() if e.insertable))
        step = self._insert_step(path, entry, params)
        self._commit(list(self.steps) + [step])
        return step.names[0] if step.names else ""

    def delete(self, path: str) -> str | None:
        return self.choose(path, catalog.REMOVE)

    def set_trainable(self, path: str, trainable: bool) -> None:
        if path not in self.rows():
            raise catalog_error(f"{path!r} is not in the current model, so it cannot be frozen or unfrozen.")
        steps = [s for s in self.steps if not (s.kind == "trainable" and s.target == path)]
        original = self.original_rows.get(path)
        related = any(s.kind == "trainable" and (s.target.startswith(path + "/") or path.startswith(s.target + "/"))
                      for s in steps)
        # Going back to how the original had it needs no edit, unless a container's flag is involved.
        if original is None or original.trainable != bool(trainable) or related:
            steps.append(Step("trainable", path, SetTrainable([path], bool(trainable)), trainable=bool(trainable)))
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

    def _choice_step(self, target: str, entry, params, reuse=None) -> Step:
        site = self.site(target)
        values = self._params(entry, site.layer, params, reuse)
        if entry.kind == "remove":
            return Step("choice", target, Delete(target), entry.label, {})
        replacement = entry.make(site.layer, site.input_shape, **values)
        names = self._name(replacement, target, entry, keep=reuse.names if reuse else ())
        return Step("choice", target, Replace(target, replacement), entry.label, values, names)

    def _insert_step(self, target: str, entry, params, reuse=None) -> Step:
        site = self.site(target)
        values = self._params(entry, site.layer, params, reuse)
        layer = entry.make(site.layer, site.output_shape, **values)
        names = self._name(layer, target, entry, keep=reuse.names if reuse else ())
        return Step("insert", target, Insert(layer, after=target), entry.label, values, names)

    @staticmethod
    def _params(entry, layer, params, reuse) -> dict:
        if params is None and reuse is not None and reuse.label == entry.label:
            return dict(reuse.params)  # same type again: keep what the user had set
        return {**entry.defaults(layer), **(params or {})}

    def _name(self, replacement, target: str, entry, keep=()) -> tuple:
        """Name the new layers after the row they stand in, so the table can lead back to the step."""
        parts = replacement if isinstance(replacement, (list, tuple)) else [replacement]
        taken = set(self.rows()) | set(self.original_rows)
        for step in self.steps:
            taken |= set(step.names)
        taken -= set(keep)
        import keras

        base = target.split("/")[-1] + "_" + _slug(entry.label)
        names = []
        for i, part in enumerate(parts):
            if not isinstance(part, keras.layers.Layer):
                continue
            if not isinstance(part, keras.Model):
                wanted = base if len(parts) == 1 else f"{base}_{i + 1}"
                name, n = wanted, 1
                while name in taken:
                    n += 1
                    name = f"{wanted}_{n}"
                part.name = name
            taken.add(part.name)
            names.append(part.name)
        return tuple(names)

    def _commit(self, steps: list) -> None:
        steps = tuple(steps)
        result = self._build(steps)
        # Only a successful rebuild reaches here: history and state change together.
        del self.history[self.cursor + 1:]
        self.history.append(steps)
        self.cursor += 1
        self._show(result)

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
        for kept_steps, result in self._recent:
            if kept_steps is steps:
                return result
        from ..surgery import apply

        result = apply(self.original, [s.edit for s in steps])
        self._recent = ([(steps, result)] + self._recent)[:RECENT_RESULTS]
        return result


def _without(steps: list, step: Step) -> list:
    """``steps`` less ``step`` and the freeze / unfreeze steps aimed at the layers it added."""
    gone = set(step.names)
    return [s for s in steps if s is not step and not (s.kind == "trainable" and s.target.split("/")[0] in gone)]


def _entry_or_none(label):
    try:
        return catalog.get(label)
    except KeyError:
        return None


def _unchanged_report(infos) -> WeightReport:
    """The report of 'no edit yet': every layer keeps its weights."""
    return WeightReport(
        LayerRow(i.path, i.type, KEPT if i.params else NO_WEIGHTS, "", i.params, i.trainable, i.path) for i in infos
    )


def _slug(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_") or "new"


def catalog_error(message: str):
    from ..errors import InvalidEdit

    return InvalidEdit(message)
