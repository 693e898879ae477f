"""The public face of kerasnb's core: ``apply(model, edits)`` and its thin wrappers.

An operation becomes edits (:mod:`kerasnb.edits`); :mod:`kerasnb._plan` resolves their targets
once and refuses what cannot be done; :mod:`kerasnb._rebuild` walks the graph in Keras's own
order and replays or replaces each call, giving every new layer its variables by a weight rule
(:mod:`kerasnb.weights`); :mod:`kerasnb._lineage` carries where each layer comes from across
rebuilds, and :mod:`kerasnb.report` derives the statuses. The model passed in is never changed.
"""

from __future__ import annotations

import contextlib
import gc
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _graph, _invariants, _lineage, _plan, _rebuild, _tasks
from .edits import ChangeInput, Configure, Delete, Insert, Prune, Replace, SetTrainable, Transform, Truncate
from .errors import surgery_errors_only, InvalidEdit, LayerNotFound, first_line
from .report import WeightReport, build


@dataclass(frozen=True)
class SurgeryResult:
    """What an operation returns: the new model, the weight report and the edits applied."""

    model: Any
    report: WeightReport
    edits: tuple
    notes: tuple = ()
    original: Any = field(default=None, repr=False, compare=False)  # the model passed in (for compare)

    def _repr_html_(self) -> str:
        # Notes quote layer names, which come from model files: escape them like the report does.
        notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in self.notes)
        return self.report._repr_html_() + (f"<ul>{notes}</ul>" if notes else "")

    def __repr__(self) -> str:
        return f"SurgeryResult(model={self.model.name!r}, {len(self.edits)} edit(s))\n{self.report!r}"

    def compare(self, x, original=None, *, original_x=None):
        """Run the original and the new model on ``x``: a pandas DataFrame, one row per layer in both.

        Columns: layer, source, type, status, output_shape, max_abs_diff, max_rel_diff and
        broken_promise (a ``kept`` layer whose output differs; also warned about). ``original``:
        the model this result was made from, when the result does not know it; ``original_x``:
        the original's input when it differs from ``x``. See :func:`kerasnb.compare.compare`.
        """
        from .compare import compare

        return compare(self, x, original=original, original_x=original_x)


@surgery_errors_only
def replace(model, target, replacement) -> SurgeryResult:
    """Put ``replacement`` (layer, list of layers, model or callable) in place of ``target``.

    ``target`` may be a list of targets, replaced in one rebuild, as :func:`delete` takes: each
    gets its own new layer(s) made from ``replacement`` (a layer's config; the first keeps its
    name, the others get unique ones), and a callable is called at each target with that
    target's inputs. For a replacement that depends on the layer it replaces, use
    :func:`kerasnb.replace_all` with the same list as ``match``: its ``make(layer)`` takes the old layer.
    """
    return apply(model, [Replace(t, replacement) for t in _target_list(target, "replace")])


@surgery_errors_only
def insert(model, layer, *, after=None, before=None) -> SurgeryResult:
    """Add ``layer`` right after or right before ``target``."""
    return apply(model, [Insert(layer, after=after, before=before)])


@surgery_errors_only
def delete(model, target, *, keep_input=None) -> SurgeryResult:
    """Remove ``target`` (or a list of targets, in one rebuild); its input flows on to its consumers.

    ``delete(model, ["transformer_layer_3", "transformer_layer_4"])`` drops two blocks of an LLM.
    See :class:`kerasnb.Delete` for which input a block with several inputs passes on.
    """
    return apply(model, [Delete(t, keep_input) for t in _target_list(target, "delete")])


@surgery_errors_only
def configure(model, target, **changes) -> SurgeryResult:
    """Rebuild ``target`` (or each of a list of targets, in one rebuild) from its config with ``changes``;
    its weights are kept if they still fit."""
    return apply(model, [Configure(t, dict(changes)) for t in _target_list(target, "configure")])


@surgery_errors_only
def set_trainable(model, targets, trainable: bool) -> SurgeryResult:
    """Freeze (``trainable=False``) or unfreeze (``True``) the target layers: one target or a list."""
    return apply(model, [SetTrainable(targets, trainable)])


def _target_list(target, verb: str) -> list:
    """The targets of a verb that takes one target or a list of them (a list is several targets; a
    tuple stays one target: ``(name, call_index)`` or a ``(first, last)`` span)."""
    if not isinstance(target, list):
        return [target]
    if not target:
        raise InvalidEdit(f"{verb}() was given an empty list of targets: it would change nothing. Give a layer name "
                          f"or a list of them, e.g. {verb}(model, ['dense_1', 'dense_2'], ...). Received: target=[]")
    seen = []
    for t in target:
        if isinstance(t, list):
            raise InvalidEdit(f"A list of targets holds targets (a name, a layer, (name, call_index), 'outer/inner'), "
                              f"not lists: {verb}(model, ['dense_1', 'dense_2'], ...). Received: target={target!r}")
        if any(t is u or (not hasattr(t, "weights") and t == u) for u in seen):
            raise InvalidEdit(f"{t!r} is named twice in the targets of {verb}(); each layer once. "
                              f"Received: target={target!r}")
        seen.append(t)
    return list(target)


@surgery_errors_only
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
    # No garbage collection in the middle of a rebuild (one full pass costs about 0.5 s with
    # TensorFlow loaded), and the user's graphs are walked once.
    with _graph.memo(), _gc_paused():
        return _apply(model, edits)


@contextlib.contextmanager
def _gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _apply(model, edits) -> SurgeryResult:
    lineage = _lineage.initial(model)
    current = model
    notes: list[str] = []
    batch: _plan.Plan | None = None  # edits planned on `current`, not yet rebuilt

    def rebuild(plan):
        new_model, state = _rebuild.run_pass(current, plan)
        notes.extend(n for n in state.notes if n not in notes)
        return new_model, _lineage.compose(new_model, state, lineage)

    for edit in edits:
        try:
            candidate = batch or _plan.Plan()
            _plan.plan_edit(current, edit, candidate)
        except (LayerNotFound, _plan.Conflict):
            if batch is None:
                raise
            # The edit needs the result of the batch so far (or clashes with it): rebuild first.
            current, lineage = rebuild(batch)
            candidate = _plan.Plan()
            _plan.plan_edit(current, edit, candidate)
        batch = candidate
    if batch is not None or current is model:
        current, lineage = rebuild(batch or _plan.Plan())
    report = build(model, current, lineage)
    if _tasks.is_task(model):  # a keras-hub task stays a task: same class, same preprocessor
        rebuilt = current
        current, task_notes = _tasks.rewrap(model, current)
        _invariants.carry_into_task(rebuilt, current, model.backbone.name)
        _invariants.check_wrapped(rebuilt, current)
        notes += task_notes
    elif _tasks.is_backbone(model) and _graph.is_graph_model(current):  # and a backbone a backbone
        rebuilt = current
        current, backbone_notes = _tasks.as_backbone(model, current)
        _invariants.carry_into_backbone(rebuilt, current)
        _invariants.check_wrapped(rebuilt, current)
        notes += backbone_notes
        notes += _recompile(model, current)
    else:
        notes += _recompile(model, current)
    return SurgeryResult(current, report, edits, tuple(notes), model)


_EDIT_TYPES = (Replace, Insert, Delete, Configure, SetTrainable, Prune, ChangeInput, Transform, Truncate)


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
