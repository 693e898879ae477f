"""``kerasnb.patch``: a model that computes something else in place of chosen calls' outputs.

``patch(model, {target: replacement})`` inserts after each target an :class:`ActivationPatch`
layer (through the one rebuild, as ``deepen`` inserts its identity layer), which gives the
replacement instead of its input: ``fn(h)`` for a function written with ``keras.ops`` (an
ablation, a steering vector added), or an array broadcast over the batch (activation patching:
what ``kerasnb.trace`` recorded on another input). With ``positions`` only those positions of a
sequence (axis 1) are replaced. The report gives the patch layer ``new`` (its reason says what it
does) and the layers after it ``kept_input_changed``; the patched model is a real ``keras.Model``
that every backend runs and ``trace`` traces again. An array patch is a non-trainable weight and
saves; a function is Python code, which a ``.keras`` file does not hold: saving refuses with
:class:`kerasnb.UnsaveablePatch`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np

from . import _graph, _targets
from .edits import Insert
from .errors import IncompatibleShape, InvalidEdit, UnsaveablePatch, surgery_errors_only

__all__ = ["ActivationPatch", "PatchInsert", "patch"]


class _PatchFunction:
    """A patch's Python function, carried through kerasnb's rebuilds (which make layers again from their
    configs in this process); Keras's saving asks it for a config, and it refuses with the way out."""

    def __init__(self, function, layer_name="", source=""):
        self.function, self.layer_name, self.source = function, layer_name, source

    def __call__(self, tensor):
        return self.function(tensor)

    def get_config(self):
        name = getattr(self.function, "__name__", type(self.function).__name__)
        raise UnsaveablePatch(
            f"The patch {self.layer_name!r} replaces the output of {self.source!r} with a Python function ({name}), "
            "which a .keras file cannot hold (it stores configs and weights, not code), so this model cannot be "
            f"saved. What saves: an array patch (kerasnb.patch(model, {{{self.source!r}: array}}), e.g. the values "
            f"the function gives, recorded by kerasnb.trace), or the model without the patch (save the model you "
            f"patched, or kerasnb.delete(patched_model, {self.layer_name!r})). Received: a model holding "
            f"{self.layer_name!r}")


@keras.saving.register_keras_serializable(package="kerasnb")
class ActivationPatch(keras.layers.Layer):
    """A layer that gives a replacement in place of its input (what ``kerasnb.patch`` inserts).

    Args:
        function: ``tensor -> tensor`` written with ``keras.ops``, or None for an array patch.
        value_shape: The shape of the array patch (its values are the weight ``value``), or None.
        value_dtype: Its dtype.
        positions: Positions along axis 1 to replace (negative ones count from the end), or None
            for every position.
        source: The path of the call it patches, for messages.
        **kwargs: Layer arguments (``name``, ``dtype``).

    Examples:
        >>> layer = kerasnb.patching.ActivationPatch(lambda h: h * 0)
        >>> layer(np.ones((1, 3), "float32")).tolist()
        [[0.0, 0.0, 0.0]]
    """

    def __init__(self, function=None, value_shape=None, value_dtype="float32", positions=None, source="", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if function is not None and not isinstance(function, _PatchFunction):
            function = _PatchFunction(function, self.name, source)
        self.function = function
        self.value_shape = None if value_shape is None else tuple(int(d) for d in value_shape)
        self.value_dtype = keras.backend.standardize_dtype(value_dtype)
        self.positions = None if positions is None else [int(p) for p in positions]
        self.source = source
        self.value = None

    def build(self, input_shape):
        if self.value_shape is not None:
            self.value = self.add_weight(name="value", shape=self.value_shape, dtype=self.value_dtype,
                                         initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs):
        if self.function is not None:
            new = self.function(inputs)
        else:
            new = keras.ops.broadcast_to(keras.ops.cast(self.value, inputs.dtype), keras.ops.shape(inputs))
        if self.positions is None:
            return new
        steps = keras.ops.shape(inputs)[1]
        where = keras.ops.arange(steps)
        chosen = keras.ops.zeros_like(where, dtype="bool")
        for p in self.positions:
            chosen = keras.ops.logical_or(chosen, keras.ops.equal(where, p % steps if p >= 0 else steps + p))
        chosen = keras.ops.reshape(chosen, (1, steps) + (1,) * (len(inputs.shape) - 2))
        return keras.ops.where(chosen, keras.ops.cast(new, inputs.dtype), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(function=self.function, value_shape=self.value_shape, value_dtype=self.value_dtype,
                      positions=self.positions, source=self.source, autocast=False)
        if self.function is None:
            config.pop("function")
        return config


@dataclass(frozen=True)
class PatchInsert(Insert):
    """Edit: the :class:`kerasnb.Insert` of an :class:`ActivationPatch` (what ``patch`` returns in
    ``.edits``); the report gives the patch layer the reason ``new_reason``.

    Examples:
        >>> inputs = keras.Input((4,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> edit = kerasnb.patch(model, {"out": np.zeros(2, "float32")}).edits[0]
        >>> type(edit).__name__, edit.target
        ('PatchInsert', 'out')
    """

    new_reason: str = "patch"


@surgery_errors_only
def patch(model, patches, *, positions=None):
    """A model that computes each replacement in place of its target call's output.

    Each target's output is replaced, for everything after it, by a function of it written with
    ``keras.ops`` (``lambda h: h * 0`` ablates it; ``lambda h: h + steering`` steers it; a
    channel ablation multiplies by a mask) or by an array (activation patching: the activation
    ``kerasnb.trace`` recorded on another input), broadcast over the batch: an array of the
    output's shape without the batch axis (or with a batch axis of 1) is used for every example;
    one with the batch axis replaces example by example (the batch must then have that size).
    The patch is a layer (:class:`ActivationPatch`) inserted after the target, so the result is
    a real ``keras.Model`` that runs on every backend and can be traced and edited again.

    Targets: ``"name"`` (or the layer object), ``"outer/inner"`` inside a nested model,
    ``("name", call_index)`` for one call of a shared layer; a shared layer named alone is
    patched at every call, with the same replacement.

    Args:
        model: A built functional or Sequential model; it is not changed.
        patches: ``{target: replacement}``: a callable ``tensor -> tensor`` (``keras.ops``), or an
            array (numpy, or a backend tensor).
        positions: For sequence outputs ``(batch, steps, ...)``: the steps to replace (a list of
            ints, negative ones from the end: ``[-1]`` is the last); the others keep their values.
            None (the default): the whole output.

    Returns:
        SurgeryResult: ``.model`` (the patched model), ``.report`` (each patch layer ``new``,
        its reason saying what it gives; the layers after it ``kept_input_changed``; the rest
        ``kept``), ``.edits`` (one :class:`PatchInsert` per patched call), ``.notes``.

    Raises:
        LayerNotFound: a target names no layer.
        InvalidEdit: ``patches`` is not a non-empty dict; a replacement neither callable nor an
            array; positions on an output without a steps axis.
        IncompatibleShape: an array that does not broadcast to the target's output; a target
            giving several tensors.
        UnsaveablePatch: (when saving the result) a function patch, which a file cannot hold.

    Examples:
        >>> inputs = keras.Input((4,), name="x")
        >>> hidden = keras.layers.Dense(3, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.patch(model, {"hidden": lambda h: h * 0})
        >>> [(row.layer, str(row.status)) for row in result.report]
        [('x', 'no_weights'), ('hidden', 'kept'), ('hidden_patch', 'new'), ('out', 'kept_input_changed')]
        >>> result.report.row("hidden_patch").reason
        "replaces the output of 'hidden' by a function (<lambda>)"
        >>> x = np.ones((2, 4), "float32")
        >>> bool(np.allclose(result.model(x), model.get_layer("out").bias.numpy()))
        True
    """
    from .surgery import apply

    if not isinstance(patches, dict) or not patches:
        raise InvalidEdit("patch takes a dict {target: replacement}, the replacement a function of the output "
                          "tensor written with keras.ops (lambda h: h * 0) or an array, e.g. "
                          f"kerasnb.patch(model, {{'dense': lambda h: h * 0}}). Received: {patches!r}")
    if positions is not None:
        if isinstance(positions, (int, np.integer)) and not isinstance(positions, bool):
            positions = [positions]
        if (not isinstance(positions, (list, tuple)) or not positions
                or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in positions)):
            raise InvalidEdit(f"positions is a list of step indices along axis 1 (negative ones from the end, "
                              f"[-1] is the last step), or None for the whole output. Received: positions={positions!r}")
        positions = [int(p) for p in positions]
    taken = {path.rsplit("/", 1)[-1] for path, _ in _graph.walk_layers(model)}
    outputs = {id(t) for t in _graph.output_tensors(model)}
    edits, what, renamed = [], [], []
    for target, replacement in patches.items():
        for call_target, found in _calls(model, target):
            tensor = _output_of(found, target)
            layer, reason = _patch_layer(found, tensor, replacement, positions, target, taken)
            edits.append(PatchInsert(layer, after=call_target, new_reason=reason))
            what.append(f"{layer.name!r} {reason}")
            if len(found.scopes) == 1 and id(tensor) in outputs:
                renamed.append(f"The model output {found.path!r} gave now comes from {layer.name!r}, and is named "
                               f"{layer.name!r} (a loss or metric keyed by output name needs the new name).")
    result = apply(model, edits)
    notes = [f"Patched: {', '.join(what)}. Layers after a patch compute on the replacement (kept_input_changed)."]
    notes += renamed
    return dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))


def _calls(model, target):
    """``(target for one call, its Target)`` for each call ``target`` names (a shared layer: each)."""
    found = _targets.resolve(model, target, what="patch")
    if len(found.calls) <= 1 or _targets.is_call_target(target) or _graph.is_input_layer(found.layer):
        return [(target, found)]
    path = found.path
    return [((path, i), _targets.resolve(model, (path, i), what="patch")) for i in range(len(found.calls))]


def _output_of(found, given):
    outputs = found.call_outputs()
    if len(outputs) != 1:
        raise IncompatibleShape(f"patch replaces the output of a call giving one tensor; {found.path!r} gives "
                                f"{len(outputs)}. Patch the layer that makes the one you mean. Received: target={given!r}")
    return outputs[0]


def _patch_layer(found, tensor, replacement, positions, given, taken):
    name = _free_name(found.path.replace("/", "_") + "_patch", taken)
    shape = tuple(tensor.shape)
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    call = found.calls[0].call_index if found.call_index is not None and found.calls else None
    where = f"{found.path!r}" + (f" (call {call})" if call is not None else "")
    if positions is not None and len(shape) < 3:
        raise InvalidEdit(f"positions are steps along axis 1 of a (batch, steps, ...) output; {where} gives shape "
                          f"{shape}, which has no steps axis. Leave positions out to replace the whole output. "
                          f"Received: positions={positions!r}")
    at = "" if positions is None else f" at positions {positions}"
    if callable(replacement) and not _is_array(replacement):
        layer = ActivationPatch(replacement, positions=positions, source=found.path, name=name)
        label = getattr(replacement, "__name__", type(replacement).__name__)
        return layer, f"replaces the output of {where} by a function ({label}){at}"
    if not _is_array(replacement):
        raise InvalidEdit(f"A patch's replacement is a function of the output tensor (keras.ops) or an array. "
                          f"Received: for target {given!r}, {type(replacement).__name__}")
    value = np.asarray(keras.ops.convert_to_numpy(replacement))
    if not _broadcasts(value.shape, shape):
        raise IncompatibleShape(
            f"An array patch is broadcast to the output of {where}, of shape {shape} (None: any size): give its "
            f"shape without the batch axis {shape[1:]}, with a batch axis of 1, or with the batch axis (example by "
            f"example). Received: an array of shape {value.shape} for target {given!r}")
    layer = ActivationPatch(value_shape=value.shape, value_dtype=dtype, positions=positions, source=found.path,
                            name=name)
    layer.build(shape)
    layer.value.assign(value.astype(dtype))
    kind = ("zeros" if not value.any() else
            f"an array of shape {value.shape}" + (", example by example" if value.ndim == len(shape) and
                                                  value.shape[0] != 1 else ", the same for every example"))
    return layer, f"replaces the output of {where} by {kind}{at}"


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _broadcasts(value_shape, shape) -> bool:
    if len(value_shape) > len(shape):
        return False
    for v, s in zip(reversed(value_shape), reversed(shape)):
        if v != 1 and s is not None and v != s:
            return False
        if v != 1 and s is None and len(value_shape) == len(shape) and (v, s) == (value_shape[0], shape[0]):
            continue  # the batch axis: replaced example by example
    return True


def _free_name(base, taken) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name
