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
    """What every kerasnb operation returns: the new model, its weight report, the edits and notes.

    The model passed to the operation is never changed; ``result.model`` is a new one whose
    layers hold their own variables.

    Attributes:
        model: The new Keras model (a keras-hub task or backbone stays one, with the same class).
        report: The ``WeightReport``: one row per layer of the new model, then the removed ones,
            each with a status (``kept``, ``kept_input_changed``, ``pruned``, ``adapted``,
            ``folded``, ``reinitialized``, ``new``, ``removed``, ``no_weights``) and a reason.
        edits: The edits applied, in order (``kerasnb.Replace``, ``Insert``, ...).
        notes: Remarks in words about what changed beyond the report (renamed outputs, a
            recompiled model, how many layers got LoRA ...), a tuple of strings.
        original: The model the operation was given (``compare`` runs it beside the new one).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.delete(model, "hidden")
        >>> result.model is not model, result.original is model
        (True, True)
        >>> result.report.status("hidden"), result.report.status("out")
        ('removed', 'reinitialized')
        >>> result.edits
        (Delete(target='hidden', keep_input=None),)
    """

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
        broken_promise (a ``kept`` layer whose output differs; also warned about with a
        ``kerasnb.compare.BrokenPromiseWarning``). Inference mode. See ``kerasnb.compare.compare``.

        Args:
            x: The new model's input: an array, or a list / dict as the model takes.
            original: The model this result was made from, when the result does not know it
                (default: ``self.original``).
            original_x: The original's input when it differs from ``x`` (e.g. after
                ``kerasnb.change_input``); default ``x``.

        Returns:
            pandas.DataFrame: one row per layer present in both models.

        Raises:
            InvalidEdit: the original is not known, or ``x`` does not match the model's inputs.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> result = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden")
            >>> frame = result.compare(np.ones((2, 8), "float32"))
            >>> list(frame["layer"]), bool(frame["broken_promise"].any())
            (['x', 'hidden', 'out'], False)
        """
        from .compare import compare

        return compare(self, x, original=original, original_x=original_x)


@surgery_errors_only
def replace(model, target, replacement) -> SurgeryResult:
    """Put ``replacement`` in place of ``target``; the target's input flows into it.

    The target is one of:

    - ``"name"`` (or the layer object itself): a layer of the model;
    - ``"outer/inner"``: a layer inside a nested model;
    - ``("name", call_index)``: one call of a layer the graph calls several times;
    - ``("first", "last")``: a linear chain of layers, replaced as one;
    - a list of any of these, replaced in one rebuild: each gets its own new layer(s) made from
      ``replacement`` (from a layer's config: the first keeps its name, the others get unique
      ones), and a callable is called at each target with that target's inputs.

    Layers after it keep their weights where they still fit (``kept_input_changed``: fine-tune)
    and are re-initialised where they do not. For a replacement that depends on the layer it
    replaces, use ``kerasnb.replace_all`` with the same list as ``match``: its ``make(layer)``
    takes the old layer.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        target: What is replaced, in one of the forms above.
        replacement: A Layer, a list of layers applied in order, a ``keras.Model`` used as a
            block, or a callable ``tensor -> tensor`` that builds a subgraph.

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the target ``removed``, the replacement
        ``new``), ``.edits``, ``.notes``.

    Raises:
        LayerNotFound: a target names no layer; the message suggests close names.
        AmbiguousTarget: a layer called several times, named without a call index.
        InputLayerEdit: a target is an InputLayer.
        InvalidEdit: an empty list, a target named twice, or a replacement of no form above.
        IncompatibleShape: the replacement cannot take the target's input, or a layer after it
            without weights cannot take what it gives.
        NameClash: a callable replacement makes layers whose names the model already has
            (a Layer or list given directly is renamed to a unique name instead).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.replace(model, "hidden", keras.layers.Dense(4, activation="relu", name="relu4"))
        >>> [(row.layer, str(row.status)) for row in result.report]
        [('x', 'no_weights'), ('relu4', 'new'), ('out', 'kept_input_changed'), ('hidden', 'removed')]
    """
    return apply(model, [Replace(t, replacement) for t in _target_list(target, "replace")])


@surgery_errors_only
def insert(model, layer, *, after=None, before=None) -> SurgeryResult:
    """Add ``layer`` right after or right before one layer of ``model``.

    The target (the value of ``after=`` or ``before=``, exactly one of them) is one of:

    - ``"name"`` (or the layer object itself): a layer of the model;
    - ``"outer/inner"``: a layer inside a nested model;
    - ``("name", call_index)``: one call of a layer the graph calls several times.

    Layers after the insertion keep their weights where they still fit (``kept_input_changed``:
    fine-tune) and are re-initialised where they do not (``reinitialized``, with the shapes).
    The added layer keeps its name unless the model has a layer of that name: then it gets a
    unique one (``"hidden_1"``).

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        layer: What to add: a Layer, a list of layers applied in order, a ``keras.Model`` used
            as a block, or a callable ``tensor -> tensor`` that builds a subgraph.
        after: The target whose output flows into ``layer``; its consumers then read ``layer``'s
            output.
        before: The target whose input passes through ``layer`` first (not an InputLayer).

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the added layer ``new``), ``.edits``, ``.notes``.

    Raises:
        InvalidEdit: neither or both of ``after`` / ``before`` are given.
        LayerNotFound: the target names no layer; the message suggests close names.
        AmbiguousTarget: the target is a layer called several times, named without a call index.
        InputLayerEdit: ``before=`` an InputLayer.
        IncompatibleShape: a layer after the insertion cannot take its new input and has no
            weights to re-initialise (e.g. an ``Add`` of two different shapes).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden")
        >>> [result.report.status(name) for name in ("hidden", "drop", "out")]
        ['kept', 'new', 'kept_input_changed']
        >>> [layer.name for layer in result.model.layers]
        ['x', 'hidden', 'drop', 'out']
    """
    return apply(model, [Insert(layer, after=after, before=before)])


@surgery_errors_only
def delete(model, target, *, keep_input=None) -> SurgeryResult:
    """Remove ``target`` (or a list of targets, in one rebuild); its input flows on to its consumers.

    The target is one of:

    - ``"name"`` (or the layer object itself): a layer of the model;
    - ``"outer/inner"``: a layer inside a nested model;
    - ``("name", call_index)``: one call of a layer the graph calls several times;
    - a list of any of these, removed in one rebuild, e.g. two blocks of an LLM:
      ``delete(model, ["transformer_layer_3", "transformer_layer_4"])``.

    A layer called with several inputs (a transformer block takes the hidden states and a mask)
    passes on the one whose shape and dtype equal its output's: the residual stream.
    Consumers whose weights no longer fit the input they now receive are re-initialised.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        target: What to remove, in one of the forms above.
        keep_input: Which input a layer with several inputs passes on, where no single one has
            its output's shape: the producing layer's name, the keyword it was passed by, or its
            position among the call's input tensors.

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the target ``removed``), ``.edits``, ``.notes``.

    Raises:
        LayerNotFound: a target names no layer; the message suggests close names.
        AmbiguousTarget: a layer called several times, named without a call index.
        InputLayerEdit: a target is an InputLayer.
        InvalidEdit: the layer has several inputs and none (or ``keep_input``) says which one
            passes on; an empty list, or a target named twice.
        IncompatibleShape: a consumer without weights cannot take the input it now receives.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(8, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.delete(model, "hidden")
        >>> result.report.status("hidden"), result.report.status("out")
        ('removed', 'kept_input_changed')
    """
    return apply(model, [Delete(t, keep_input) for t in _target_list(target, "delete")])


@surgery_errors_only
def configure(model, target, **changes) -> SurgeryResult:
    """Rebuild ``target`` from its config with ``changes``; its weights are kept where they still fit.

    The target is one of:

    - ``"name"`` (or the layer object itself): a layer of the model;
    - ``"outer/inner"``: a layer inside a nested model;
    - ``("name", call_index)``: one call of a layer the graph calls several times;
    - a list of any of these, each reconfigured alike, in one rebuild.

    A change that keeps the weights' shapes (an activation, a dropout rate) keeps them: the
    layer reports ``kept_input_changed``, or ``no_weights`` with the change as reason. A change
    of shape (``units=``, ``filters=``) re-initialises it (``reinitialized``, with the shapes),
    and the layers after it where their weights no longer fit. ``name=`` renames the layer.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        target: What is reconfigured, in one of the forms above.
        **changes: Config options and their new values, e.g. ``units=128``,
            ``activation="gelu"``, ``name="head"``.

    Returns:
        SurgeryResult: ``.model``, ``.report``, ``.edits`` (one ``kerasnb.Configure`` per
        target), ``.notes``.

    Raises:
        LayerNotFound: a target names no layer; the message suggests close names.
        InputLayerEdit: a target is an InputLayer.
        InvalidEdit: an empty list, a target named twice, or a change the layer's config does
            not take.
        NameClash: ``name=`` is taken by another layer; the message proposes a free one.
        UnsupportedLayer: the layer cannot be made again from its config.
        IncompatibleShape: a layer after it without weights cannot take its new output.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.configure(model, "hidden", activation="relu")
        >>> result.report.status("hidden"), result.report.status("out")
        ('kept_input_changed', 'kept_input_changed')
        >>> result = kerasnb.configure(model, ["hidden", "out"], use_bias=True, units=3)
        >>> result.report.row("out").reason
        'kernel (4, 2) -> (3, 3)...'
    """
    return apply(model, [Configure(t, dict(changes)) for t in _target_list(target, "configure")])


@surgery_errors_only
def set_trainable(model, targets, trainable: bool) -> SurgeryResult:
    """Freeze (``trainable=False``) or unfreeze (``True``) the target layers; every weight is kept.

    The targets are one or a list of:

    - ``"name"`` (or the layer object itself): a layer of the model;
    - ``"outer/inner"``: a layer inside a nested model (a nested model's name sets all of its
      layers).

    The layers compute what they did (``kept``); only their ``trainable`` flag (the report's
    ``trainable`` column) changes.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        targets: One target or a list of them, in the forms above.
        trainable: False freezes, True unfreezes; required, and a real bool.

    Returns:
        SurgeryResult: ``.model``, ``.report``, ``.edits``, ``.notes``.

    Raises:
        LayerNotFound: a target names no layer; the message suggests close names.
        InvalidEdit: ``trainable`` is not a bool.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.set_trainable(model, ["hidden"], False)
        >>> result.report.status("hidden"), result.report.row("hidden").trainable
        ('kept', False)
        >>> [w.path for w in result.model.trainable_weights]
        ['out/kernel', 'out/bias']
    """
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
    """Apply several edits in one go, in as few rebuilds as possible; the report compares with ``model``.

    Edits are resolved in order. Consecutive edits whose targets all exist in the current graph
    share one rebuild; an edit that names a layer made by an earlier edit starts a new one (so a
    ``(name, call_index)`` counts the calls of the graph as the earlier edits left it). Every
    other operation of kerasnb is a thin wrapper over this.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        edits: One edit or a list of them: ``kerasnb.Replace``, ``Insert``, ``Delete``,
            ``Configure``, ``SetTrainable``, ``Prune``, ``ChangeInput``, ``Transform``,
            ``Truncate``.

    Returns:
        SurgeryResult: ``.model``, ``.report`` (every layer against ``model``), ``.edits``,
        ``.notes``.

    Raises:
        InvalidEdit: ``edits`` holds something that is not an edit, or an edit that cannot be
            carried out on this graph.
        UnsupportedModel: the model has no graph (a subclassed model; ``UnbuiltModel`` when it
            was never built).
        SurgeryError: any subclass the single edits raise (``LayerNotFound``,
            ``AmbiguousTarget``, ``IncompatibleShape``, ``NameClash``, ``UnsupportedLayer``, ...);
            nothing is half-applied.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [
        ...     kerasnb.Insert(keras.layers.Dropout(0.5, name="drop"), after="hidden"),
        ...     kerasnb.Configure("out", {"activation": "softmax"}),
        ... ])
        >>> [(row.layer, str(row.status)) for row in result.report]
        [('x', 'no_weights'), ('hidden', 'kept'), ('drop', 'new'), ('out', 'kept_input_changed')]
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
