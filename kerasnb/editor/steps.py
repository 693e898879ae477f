"""How each action becomes a step of the editor's history: :class:`Step` (one user action and the
core edits that carry it out), the functions that make the steps of a replace, an insert, a prune
and a whole-model action (worked out on the model the steps before it make, by its record's
``plan`` in :mod:`kerasnb.actions`), and the text of keys, steps and changes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kerasnb.actions as actions  # the editor's one internal facade
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
import kerasnb.fitting as fitting
from ..edits import Delete, Insert, Prune, Replace
from ..errors import IncompatibleShape, InputLayerEdit, InvalidEdit


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


# ----------------------------------------------------------------------------- making steps


def choice_step(session, target, entry, params, reuse=None) -> Step:
    """The step giving ``target`` the type ``entry``; refused before anything is built when the
    parameters are bad or the type's dry run says it does not fit there."""
    place = session.answers.base_place(reuse) if reuse is not None else session.answers.place(target)
    site = fitting.locate(*place)
    if site.is_input:
        raise InputLayerEdit(f"{key_text(target)} is an input layer: it stays. Insert after it instead. "
                             f"Received: label={entry.label!r}")
    values = values_for(entry, site.layer, params, reuse)
    ok, reason = answers_module().fits(entry, place, site, **values)
    if not ok:
        offered, _ = session.answers.options(target)
        raise IncompatibleShape(
            f"{_what(entry, values)} does not fit {key_text(target)}: {reason}. "
            f"Types that fit there: {', '.join(offered)}. Received: label={entry.label!r}, params={values!r}"
        )
    if entry.kind == "remove":
        return Step("choice", target, Delete(target), entry.label, {}, input_shape=site.input_shape,
                    replaced=type(site.layer), block=answers_module().is_block(site.layer))
    replacement = entry.make(site.layer, site.input_shape, **values)
    names = name_layers(session, replacement, target, entry.label, keep=reuse.names if reuse else ())
    return Step("choice", target, Replace(target, replacement), entry.label, values, names,
                input_shape=site.input_shape, replaced=type(site.layer))


def insert_step(session, target, entry, params, reuse=None) -> Step:
    """The step inserting ``entry`` after ``target``, checked like a choice before building."""
    if not entry.insertable or entry.kind != "replace":
        raise InvalidEdit(f"{entry.label!r} cannot be inserted; insertable types: "
                          f"{answers_module().insertable_labels()}. Received: label={entry.label!r}")
    site = session.answers.base_site(reuse) if reuse is not None else session.answers.site(target)
    values = values_for(entry, site.layer, params, reuse, replacing=False)
    ok, reason = fitting.fits_after(entry, site, **values)
    if not ok:
        offered, _ = answers_module().insertable(site)
        raise IncompatibleShape(
            f"{_what(entry, values)} cannot go after {key_text(target)}: {reason}. "
            f"Types that can: {', '.join(offered) or 'none'}. Received: label={entry.label!r}, params={values!r}"
        )
    layer = entry.make(site.layer, site.output_shape, **values)
    names = name_layers(session, layer, target, entry.label, keep=reuse.names if reuse else ())
    return Step("insert", target, Insert(layer, after=target), entry.label, values, names,
                input_shape=site.output_shape)


def values_for(entry, layer, params, reuse, replacing: bool = True) -> dict:
    """Checked values: the user's, else the earlier ones for the same type, else the defaults."""
    if params is None and reuse is not None and reuse.label == entry.label:
        return dict(reuse.params)  # same type again: keep what the user had set
    return entry.check_params(params or {}, layer, replacing=replacing)


def name_layers(session, replacement, target, label: str, keep=(), also=()) -> tuple:
    """Name the new layers after the row they stand in, so the table can lead back to the step.
    ``also``: more names already taken (those given earlier in the same action)."""
    parts = replacement if isinstance(replacement, (list, tuple)) else [replacement]
    taken = set(session.rows()) | set(session.original_rows) | set(also)
    for step in session.steps:
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


def prune_step_on(session, base: tuple, path: str, keep: float, by: str) -> Step:
    """The step pruning ``path`` to ``keep`` by ``by``, after the steps ``base``; its counts are
    the parameters of the models before and after it (built) and the MACs from the plan."""
    before = session._build(base)  # usually the current or the previous state: kept
    model = before.model if before is not None else session.original
    channels, _, macs_before, macs_after = actions.prune_plan(model, path, keep, by, session.data,
                                                              session.answers.layer_costs(model))
    if by in ("l1", "l2"):  # the core ranks by kernel norms itself: the step holds on any model
        edit = Prune(path, keep=keep, by=by)
    else:
        edit = Prune(path, channels=channels)
    step = Step("prune", path, edit, "Prune", {"keep": keep, "by": by}, base=base)
    after = session._build(base + (step,))
    counts = (actions.count_params(model), actions.count_params(after.model), macs_before, macs_after)
    return dataclasses.replace(step, counts=counts)


def transform_step(session, op: str, params: dict, base: tuple, keep: tuple = ()) -> Step:
    """The step of whole-model action ``op`` with ``params``, worked out on the model ``base`` makes.
    ``keep``: names of the step it redoes, free to be given again."""
    before = session._build(base)
    model = before.model if before is not None else session.original
    result, text = actions.get(op).plan(model, params, _PlanContext(session, keep))
    if not result.edits:
        raise InvalidEdit(f"{text}: nothing would change. Received: {op} on model {model.name!r}")
    had = {p for p, _ in actions.walk_layers(model)}
    names = tuple(p for p, _ in actions.walk_layers(result.model) if p not in had)
    target = path_of(params["at"]) if "at" in params else next(
        (params[k] for k in ("scope", "input", "target") if k in params), "")
    return Step("transform", target, tuple(result.edits), op, dict(params), names,
                text=text, notes=tuple(result.notes), base=base, counts=tuple(getattr(result, "counts", ())))


class _PlanContext:
    """What a whole-model action's plan may ask of the session (see :class:`kerasnb.actions.Action`)."""

    def __init__(self, session, keep=()):
        self.session, self.keep, self.data = session, tuple(keep), session.data

    def name_layers(self, replacement, path, label, also=()) -> tuple:
        """Name the new layers after the row they stand in (the names of the step redone are free)."""
        return name_layers(self.session, replacement, path, label, keep=self.keep, also=also)

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


