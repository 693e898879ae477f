"""A new input shape for a trained model: :func:`change_input`.

The channels are followed from the input to the layers that read them (through weightless
layers that treat every channel alike, into nested models), whose kernels are adapted (summed,
repeated or started fresh); per-channel statistics on the way are folded into them; layers that
hold one value per input position are resized or refused.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import keras
import numpy as np

from . import _graph
from .activations import function_in_model
from .edits import ChangeInput, Delete, Transform
from .errors import surgery_errors_only, InvalidEdit, LayerNotFound, UnsupportedLayer, UnsupportedModel, suggest
from .surgery import SurgeryResult, apply
from .transforms import KERNEL_LAYERS, _finish, _Frame, _frames, _give, _host, _np
from .report import Status
from .weights import Outcome

__all__ = ["change_input"]

L = keras.layers

# The layers that read the input's channels and get an adapted kernel are the KERNEL_LAYERS.
# Weightless layers that treat every channel alike: a grey image replicated to C channels stays replicated.
_ALIKE = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
          L.Cropping1D, L.Cropping2D, L.Cropping3D, L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
          L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D,
          L.GlobalMaxPooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
          L.UpSampling1D, L.UpSampling2D, L.UpSampling3D, L.Resizing, L.CenterCrop, L.Dropout, L.SpatialDropout1D,
          L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout,
          L.ActivityRegularization, L.Identity, L.RandomFlip, L.RandomRotation, L.RandomZoom, L.RandomTranslation,
          L.RandomCrop, L.RandomBrightness, L.RandomContrast, L.Rescaling)
# Of those, the ones a per-channel affine map passes through unchanged (so it can be folded past them).
_COMMUTES = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
             L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity, L.Cropping1D, L.Cropping2D,
             L.Cropping3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
             L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_PADDING = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_FLATTENS = (L.Flatten, L.Reshape)


@surgery_errors_only
def change_input(model, shape, *, mode=None, interpolate=False, input=None) -> SurgeryResult:
    """Give the model's input a new shape (without the batch axis), keeping every weight that can be kept.

    **Channels** (the last axis). When their number changes from C to N, the layers that read
    them (the first Conv / Depthwise / Separable / Dense layers reached from the input through
    weightless layers that treat every channel alike, into nested models too) get an adapted
    kernel and report ``adapted``; the layers after them keep their weights (``kept_input_changed``).
    ``mode``, how they are adapted:

    - ``"sum"`` (the default for N = 1): the kernel summed over the C input channels, so a grey
      image gives exactly what its C-channel replicate gave;
    - ``"repeat"`` (the default for N > 1): new channel i takes the kernel of old channel i mod C,
      scaled by C/N so the output keeps its scale (timm's ``adapt_input_conv`` idea). Only an
      approximation of the original: fine-tune;
    - ``"reinit"``: those layers start fresh.

    Depthwise first layers keep each output channel's filter and change ``depth_multiplier``
    (refused when C x multiplier is not a multiple of N). Channels that reach a Flatten or
    Reshape before any such layer are mixed into features: the Dense after it is re-initialised
    with the shapes as reason, and said in the notes.

    **Per-channel statistics before those layers** (EfficientNet's Normalization, ConvNeXt's,
    a Rescaling with one value per channel, a BatchNormalization on the input): each computes
    ``x * a_c + b_c`` per channel, which one new channel cannot do. In "sum" and "repeat" they
    are removed and folded into the adapted layer: its kernel is scaled by ``a_c`` and ``b_c``
    times the kernel's sum goes into its bias. For "sum" that is exact (a grey image gives what
    its replicate gave, up to float rounding: subtracting a large mean after the kernel rather
    than before costs float32 some digits, about 1e-5 relative for ConvNeXt's ImageNet mean on
    0-255 pixels) whenever no zero padding lies between them and the layer: with padding
    (a ZeroPadding layer, or ``padding="same"``) and nonzero ``b_c``, the padded border used to
    stand for a normalised 0 and now stands for a raw 0, so outputs differ within the padding's
    reach of the border; the notes say so. With "reinit" they are removed (their statistics
    were for the old channels). Anything else between the input and those layers that kerasnb
    cannot see through (a merge, a per-channel nonlinearity) is refused, except with "reinit".

    **Spatial size.** Convolutions do not care; a Dense after a Flatten is re-initialised (its
    kernel no longer fits). A layer holding one vector per position of its input (a ViT-like
    position embedding: a variable shaped like its input) is refused, unless ``interpolate=True``:
    then its values are resized bilinearly over the grid of positions (leading extra tokens,
    such as a class token, kept as they are).

    ``input``: the input layer's name, for a model with several inputs.
    """
    inputs = _graph.input_layers(model)
    if input is None:
        if len(inputs) != 1:
            raise InvalidEdit(f"Model {model.name!r} has {len(inputs)} inputs; say which to change with input=, one of "
                              f"{[l.name for l in inputs]}. Received: input=None")
        index = 0
    else:
        names = [l.name for l in inputs]
        if input not in names:
            raise LayerNotFound(f"Model {model.name!r} has no input named {input!r}.{suggest(str(input), names)} "
                                f"Its inputs: {names}. Received: input={input!r}")
        index = names.index(input)
    in_layer, in_tensor = inputs[index], _graph.input_tensors(model)[index]
    old = tuple(in_tensor.shape)[1:]
    if not isinstance(shape, (tuple, list)) or not all(
            d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0) for d in shape):
        raise InvalidEdit(f"shape is a tuple of positive ints or None, without the batch axis, e.g. {old!r}. "
                          f"Received: shape={shape!r}")
    shape = tuple(None if d is None else int(d) for d in shape)
    if len(shape) != len(old):
        raise InvalidEdit(
            f"Input {in_layer.name!r} has shape {old!r} (rank {len(old)} without the batch axis); the new shape must "
            f"have the same rank, e.g. {old[:-1] + (1,)!r}. Received: shape={shape!r}"
        )
    if mode not in (None, "sum", "repeat", "reinit"):
        raise InvalidEdit(f"mode is 'sum', 'repeat' or 'reinit' (or None: 'sum' for one channel, 'repeat' for "
                          f"more). Received: mode={mode!r}")
    if not isinstance(interpolate, (bool, np.bool_)):
        raise InvalidEdit(f"interpolate is True or False. Received: interpolate={interpolate!r}")
    given = f"change_input(shape={shape!r}, mode={mode!r}, interpolate={interpolate!r})"
    old_c, new_c = old[-1], shape[-1]
    edits = [ChangeInput(in_layer.name, shape)]
    notes = []
    if old_c != new_c:
        if old_c is None or new_c is None:
            raise InvalidEdit(f"The channel axis (the last) must have a size before and after: the input has "
                              f"{old!r}. Received: shape={shape!r}")
        chosen = mode or ("sum" if new_c == 1 else "repeat")
        if chosen == "sum" and new_c != 1:
            raise InvalidEdit(f"mode='sum' makes one channel out of {old_c}; for {new_c} channels use "
                              f"mode='repeat' or 'reinit' (or leave mode out). Received: {given}")
        edits += _channel_edits(model, in_tensor, chosen, old_c, new_c, given, notes)
    elif mode is not None:
        notes.append(f"The input keeps its {old_c} channel(s); mode={mode!r} had nothing to do.")
    if old[:-1] != shape[:-1]:
        edits += _position_edits(model, old, shape, interpolate, given, notes)
    result = apply(model, edits)
    reinit = [r.layer for r in result.report if r.status == "reinitialized" and not r.is_container]
    if reinit and old[:-1] != shape[:-1]:
        notes.append(f"{len(reinit)} layer(s) re-initialised because their weights depend on the input size: "
                     + ", ".join(repr(n) for n in reinit[:5]) + (" ..." if len(reinit) > 5 else "")
                     + " (see their reasons in the report).")
    return _finish(model, result, notes)


def _channel_edits(model, in_tensor, mode, old_c, new_c, given, notes) -> list:
    route = _route(model, in_tensor, mode, given)
    if not route.readers and not route.flattened and not route.stopped:
        raise InvalidEdit(f"No layer of model {model.name!r} reads the channels of its input, so there is nothing "
                          f"to adapt. Received: {given}")
    edits = []
    for path, (layer, view) in route.chain.items():
        edits.append(Delete(path))  # called once with one output: the walk refuses the others
    for reader in route.readers:
        if mode == "reinit":
            reason = f"input channels {old_c} -> {new_c}: re-initialised (mode='reinit')"
            edits.append(Transform(reader.target, _reinit_rule(reader, reason, new_c)))
            continue
        values, changes, reason = _adapted_values(reader, mode, old_c, new_c)
        edits.append(Transform(reader.target, _adapt_rule(reader, values, reason, new_c), changes))
    # What the result means, in words.
    if route.readers and mode == "sum":
        notes.append(f"{', '.join(repr(r.path) for r in route.readers)}: kernel summed over the {old_c} input channels: "
                     f"a 1-channel image gives what its {old_c}-channel replicate gave.")
    elif route.readers and mode == "repeat":
        notes.append(f"{', '.join(repr(r.path) for r in route.readers)}: input channel i uses the kernel of old channel "
                     f"i mod {old_c}, scaled by {old_c}/{new_c}; an approximation of the original: fine-tune.")
    elif route.readers:
        notes.append(f"{', '.join(repr(r.path) for r in route.readers)}: re-initialised for {new_c} input channel(s) "
                     "(mode='reinit').")
    for path, (layer, view) in route.chain.items():
        users = [r for r in route.readers if any(p == path for p, _, _ in r.chain)]
        if mode == "reinit" or not users:
            notes.append(f"{path!r} ({type(layer).__name__}) held statistics for {old_c} channels; removed (they do "
                         f"not apply to {new_c}).")
            continue
        padded = [r.path for r in users if r.padded]
        _, b = _composed(next(r.chain for r in users), old_c)
        text = (f"{path!r} ({type(layer).__name__}) applied its own scale and offset to each of the {old_c} channels; "
                f"removed and folded into the kernel and bias of {', '.join(repr(r.path) for r in users)}.")
        if padded and np.any(b != 0):
            text += (f" Exact except near the border: zero padding before {', '.join(repr(p) for p in padded)} used "
                     "to stand for a normalised 0 and now stands for a raw 0.")
        notes.append(text)
    for path, kind in route.flattened:
        notes.append(f"The input's channels reach {path!r} ({kind}), which mixes them into its features; the layers "
                     "after it whose weights no longer fit are re-initialised (see the report).")
    for path, kind in route.stopped:
        notes.append(f"The input's channels reach {path!r} ({kind}), which kerasnb cannot see through; what follows "
                     "keeps its weights where they fit.")
    return edits


def _position_edits(model, old, new, interpolate, given, notes) -> list:
    edits = []
    for frame in _frames(model):
        for view in frame.views:
            op = view.operation
            if view.n_calls != 1 or not _position_like(op, view):
                continue
            path = frame.path(op)
            edits.append(Transform(path, _resize_rule(path, old, new, interpolate, given)))
            if interpolate:
                notes.append(f"{path!r} holds one value per input position; resized to the new grid where it changed "
                             "(bilinear): fine-tune.")
    return edits


# ----------------------------------------------------------------------------- following the channels


def _per_channel(layer) -> bool:
    """A layer that maps each channel through its own affine function (statistics per channel)."""
    if isinstance(layer, (L.Normalization, L.BatchNormalization)):
        return True
    if isinstance(layer, L.Rescaling):
        config = layer.get_config()
        return any(np.ndim(config.get(k, 0)) > 0 and np.size(config.get(k, 0)) > 1 for k in ("scale", "offset"))
    return False


@dataclass
class _Reader:
    path: str
    target: object
    layer: object
    chain: tuple  # (path, layer, view) of the per-channel affine layers on the way, in order
    padded: bool  # zero padding between the first of them and this layer (or the layer pads itself)


@dataclass
class _Route:
    readers: list
    chain: dict  # path -> (layer, view): per-channel layers to remove
    flattened: list  # (path of the Flatten / Reshape, type) the channels reach before any reader
    stopped: list  # (path, type) of layers the walk cannot see through (mode='reinit' only)


def _route(model, input_tensor, mode: str, given) -> _Route:
    """Follow the input's channels to the layers that read them (see :func:`change_input`)."""
    route = _Route([], {}, [], [])
    top = _Frame(model, "")
    frames: dict = {}
    seen: set = set()

    def frame_of(op, view, parent):
        key = id(op)
        if key not in frames:
            frames[key] = _Frame(op, parent.prefix + op.name + "/", parent, view)
        return frames[key]

    def refuse(path, layer, why):
        if mode == "reinit":
            route.stopped.append((path, type(layer).__name__))
            return
        raise InvalidEdit(
            f"change_input cannot adapt model {model.name!r}: on the way from the input to the layers that read its "
            f"channels, {path!r} ({type(layer).__name__}) {why}. What would work: mode='reinit' (the layers "
            "that read the channels start fresh), or first remove or replace "
            f"{path!r}. Received: {given}"
        )

    def follow(frame, tensor, chain, padded):
        key = (id(tensor), tuple(p for p, _, _ in chain), padded)
        if key in seen:
            return
        seen.add(key)
        for view in frame.consumers.get(id(tensor), []):
            op, path = view.operation, frame.path(view.operation)
            if _graph.is_graph_model(op):
                if view.n_calls != 1:
                    refuse(path, op, f"is a nested model called {view.n_calls} times")
                    continue
                inner = frame_of(op, view, frame)
                for k, t in enumerate(view.input_tensors):
                    if t is tensor and k < len(inner.inputs):
                        follow(inner, inner.inputs[k], chain, padded)
                continue
            if isinstance(op, KERNEL_LAYERS):
                if view.n_calls != 1:
                    refuse(path, op, f"reads the channels but is called {view.n_calls} times")
                    continue
                route.readers.append(_Reader(path, frame.target(view), op, chain,
                                             padded or getattr(op, "padding", "valid") != "valid"))
                continue
            if view.kwargs.get("training") is True:
                refuse(path, op, "is called with training=True")
                continue
            if _per_channel(op) or (chain and isinstance(op, (L.Rescaling, L.Normalization))):
                if view.n_calls != 1 or len(view.outputs) != 1:
                    refuse(path, op, "holds per-channel statistics and is called more than once")
                    continue
                route.chain[path] = (op, view)
                follow(frame, view.outputs[0], chain + ((path, op, view),), padded)
                continue
            if isinstance(op, _FLATTENS):
                route.flattened.append((path, type(op).__name__))
                continue
            if isinstance(op, _ALIKE) and len(view.outputs) == 1:
                if chain and not isinstance(op, _COMMUTES) and not (
                        isinstance(op, L.Activation) and function_in_model(op.get_config()["activation"])
                        is keras.activations.linear):
                    refuse(path, op, f"comes after the per-channel statistics of {chain[-1][0]!r}, which cannot be "
                                     "folded into the next layer's kernel past it")
                    continue
                follow(frame, view.outputs[0], chain, padded or (bool(chain) and isinstance(op, _PADDING)))
                continue
            refuse(path, op, "is not a layer kerasnb can see through (it may mix channels or hold per-channel "
                             "weights)")
        if id(tensor) in frame.outputs:
            if frame.parent is None:
                refuse(frame.scope.name, frame.scope, "gives the input (or a channel-wise function of it) as an output")
                return
            j = frame.outputs.index(id(tensor))
            if frame.call is not None and j < len(frame.call.outputs):
                follow(frame.parent, frame.call.outputs[j], chain, padded)

    follow(top, input_tensor, (), False)
    return route


def _affine(layer, view, channels):
    """(scale, offset), one per channel: what a per-channel layer computes, ``x * scale + offset``."""
    rank = len(view.input_tensors[0].shape)
    shape = (1,) * (rank - 1) + (channels,)
    kwargs = {"training": False} if "training" in inspect.signature(type(layer).call).parameters else {}
    try:  # an eager call on constant pixels: it adds no call to the user's model
        f = [_np(layer(np.full(shape, v, dtype="float32"), **kwargs)).reshape(-1).astype("float64")
             for v in (0.0, 1.0, 2.0)]
    except Exception:
        f = None
    if f is not None:
        scale, offset = f[1] - f[0], f[0]
    if f is None or f[2].shape != (channels,) or not np.allclose(f[2], 2 * scale + offset, rtol=1e-4, atol=1e-4):
        raise InvalidEdit(f"{layer.name!r} ({type(layer).__name__}) does not compute one affine map per channel "
                          "(the same for every pixel), so change_input cannot fold it. What would work: "
                          f"mode='reinit', or first remove {layer.name!r}. Received: layer={layer.name!r}")
    return scale, offset


def _composed(chain, channels):
    a, b = np.ones(channels), np.zeros(channels)
    for _, layer, view in chain:
        s, o = _affine(layer, view, channels)
        a, b = s * a, s * b + o
    return a, b


def _old_index(mode, old_c, new_c):
    """For each new input channel, the old channel it stands for, and the kernel's scale."""
    if mode == "sum":
        return None, 1.0
    return [i % old_c for i in range(new_c)], old_c / new_c


def _adapted_values(reader: _Reader, mode, old_c, new_c):
    """``({variable name: new value}, {config changes}, reason)`` for a reader; numpy on the old values."""
    layer = reader.layer
    a, b = _composed(reader.chain, old_c)
    offset = bool(np.any(b != 0))
    index, factor = _old_index(mode, old_c, new_c)
    values, changes, parts = {}, {}, []

    def adapt(kernel, axis):
        """Scale by the folded statistics along ``axis`` (the input channels), then sum or repeat."""
        kernel = np.moveaxis(kernel, axis, -1) * a
        out = kernel.sum(-1, keepdims=True) if index is None else kernel[..., index] * factor
        return np.moveaxis(out, -1, axis)

    def extra_bias(kernel, axis):
        """What the folded offsets add to each output: offset_c times the kernel's sum over space."""
        kernel = np.moveaxis(kernel, axis, -1)  # (..., out, in): the spatial axes summed below
        per = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(0)  # (out, in)
        if index is None:
            return per @ b
        return (per[:, index] * factor) @ b[index]

    def fmt(shape):
        return tuple(int(d) for d in shape)

    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D)):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _unsupported(layer, reader, "uses channels_first")
        name = "depthwise_kernel" if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)) else "kernel"
        k = _np(getattr(layer, name)).astype("float64")
        mult = k.shape[-1]
        total = old_c * mult
        if total % new_c:
            raise _unsupported(layer, reader, f"makes {old_c} x {mult} = {total} channels, which {new_c} input "
                                              "channels cannot make with one depth multiplier")
        flat = k.reshape(k.shape[:-2] + (total,)) * np.repeat(a, mult)
        new_mult = total // new_c
        values[name] = flat.reshape(k.shape[:-2] + (new_c, new_mult))
        # The offsets go through the old kernel: output o gains offset_c times its filter's sum.
        extra = np.repeat(b, mult) * k.reshape(-1, total).sum(0) if offset else np.zeros(total)
        changes["depth_multiplier"] = new_mult
        parts.append(f"{name} {fmt(k.shape)} -> {fmt(values[name].shape)}: each output channel keeps its filter "
                     f"(depth_multiplier {mult} -> {new_mult})")
        if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
            pw = _np(layer.pointwise_kernel).astype("float64")
            values["pointwise_kernel"] = pw
            extra = extra @ pw.reshape(total, -1)
    elif isinstance(layer, L.Dense):
        k = _np(layer.kernel).astype("float64")
        values["kernel"] = adapt(k, -2)
        extra = extra_bias(k[None], -2) if offset else np.zeros(k.shape[-1])
        parts.append(_kernel_words("kernel", k.shape, values["kernel"].shape, mode, old_c, new_c))
    else:  # Conv and ConvTranspose
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise _unsupported(layer, reader, "uses channels_first")
        if getattr(layer, "groups", 1) != 1:
            raise _unsupported(layer, reader, f"is a grouped convolution (groups={layer.groups})")
        k = _np(layer.kernel).astype("float64")
        transpose = isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose))
        axis = -1 if transpose else -2
        if transpose and offset:
            raise _unsupported(layer, reader, "is a transposed convolution, whose output at each pixel sums a "
                                              "varying number of kernel taps, so per-channel offsets cannot be folded")
        values["kernel"] = adapt(k, axis)
        extra = extra_bias(k, -2) if offset else np.zeros(k.shape[-1])
        parts.append(_kernel_words("kernel", k.shape, values["kernel"].shape, mode, old_c, new_c))
    if reader.chain:
        names = ", ".join(repr(p) for p, _, _ in reader.chain)
        parts.append(f"per-channel statistics of {names} folded in")
    bias = None if layer.bias is None else _np(layer.bias).astype("float64")
    if bias is not None or np.any(extra != 0):
        values["bias"] = (bias if bias is not None else 0.0) + extra
        if bias is None:
            changes["use_bias"] = True
            parts.append("bias added")
    return values, changes, "; ".join(parts)


def _kernel_words(name, old, new, mode, old_c, new_c):
    shapes = f"{name} {tuple(int(d) for d in old)} -> {tuple(int(d) for d in new)}"
    if mode == "sum":
        return f"{shapes}: summed over input channels"
    return f"{shapes}: input channels repeated cyclically, scaled by {old_c}/{new_c}"


def _unsupported(layer, reader, why) -> UnsupportedLayer:
    return UnsupportedLayer(
        f"change_input cannot adapt {reader.path!r} ({type(layer).__name__}) to a new number of input channels: "
        f"it {why}. What would work: mode='reinit' (it starts fresh). Received: layer={reader.path!r}"
    )


def _in_channels(layer) -> int:
    """How many input channels a built reader was made for."""
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return int(layer.depthwise_kernel.shape[-2])
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return int(layer.kernel.shape[-2])
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return int(layer.kernel.shape[-1])
    return int(layer.kernel.shape[-2]) * int(getattr(layer, "groups", 1) or 1)


def _check_built_for(reader: _Reader, new, new_c: int) -> None:
    """The new reader sees ``new_c`` channels; a nested model rebuilt with its old input shape would not."""
    built = _in_channels(new)
    if built == new_c:
        return
    if "/" in reader.path:
        scope = reader.path.rsplit("/", 1)[0]
        raise UnsupportedModel(
            f"{reader.path!r} reads the input's channels inside the nested model {scope!r}, and the rebuild gave "
            f"that nested model its old input shape, so {reader.path!r} was built for {built} input channels instead "
            f"of {new_c}. This kerasnb cannot yet change the input shape of a nested model. What would work: call "
            "change_input on the nested model itself and build the outer model around its result. Received: "
            f"change_input to {new_c} channel(s)"
        )
    raise AssertionError(f"{reader.path}: built for {built} input channels, expected {new_c}")


def _adapt_rule(reader: _Reader, values: dict, reason: str, new_c: int):
    def rule(old, new):
        _check_built_for(reader, new, new_c)
        pairs = [_give(getattr(new, name), value) for name, value in values.items()]
        covered = {id(v) for v, _ in pairs}
        missing = [v.path for v in new.weights if id(v) not in covered]
        if missing:
            raise AssertionError(f"{reader.path}: no value for {missing}")
        return Outcome(Status.ADAPTED, reason, pairs)

    rule.__name__ = f"adapt_{reader.layer.name}"
    return rule


def _reinit_rule(reader: _Reader, reason: str, new_c: int):
    def rule(old, new):
        _check_built_for(reader, new, new_c)
        return Outcome(Status.REINITIALIZED, reason)

    rule.__name__ = f"reinit_{reader.layer.name}"
    return rule


# --------------------------------------------------------------- position embeddings


def _position_like(layer, view) -> list:
    """The variables of ``layer`` that hold one value per position of its input (ViT-like embeddings).

    A variable whose shape, leading 1s aside, is the layer's input shape without the batch axis
    (``(1, tokens, dim)`` for an input ``(batch, tokens, dim)``) is added position by position; a
    new input size changes how many positions there are.
    """
    if isinstance(layer, KERNEL_LAYERS + (L.EinsumDense, L.Embedding, L.LayerNormalization, L.BatchNormalization,
                                     L.Normalization)) or _graph.is_graph_model(layer) or not view.input_tensors:
        return []
    given = tuple(view.input_tensors[0].shape[1:])
    if len(given) < 2 or any(d is None for d in given):
        return []
    out = []
    for variable in layer.weights:
        shape = tuple(variable.shape)
        while shape and shape[0] == 1 and len(shape) > len(given):
            shape = shape[1:]
        if shape == given:
            out.append(variable)
    return out


def _resize_rule(path, old_input, new_input, interpolate, given):
    """Copy what fits; resize (or refuse to resize) the per-position variables that do not."""
    old_space = [d for d in old_input[:-1]]
    new_space = [d for d in new_input[:-1]]

    def rule(old, new):
        pairs, words = [], []
        for ov, nv in zip(old.weights, new.weights):
            was, now = tuple(ov.shape), tuple(nv.shape)
            if was == now:
                pairs.append((nv, keras.ops.copy(ov.value)))
                continue
            name = ov.name.split("/")[-1]
            if not interpolate:
                raise InvalidEdit(
                    f"{path!r} ({type(old).__name__}) holds {name} {was}, one vector per position of its input; the "
                    f"new input size gives it {now}. Its trained values would be lost. What would work: "
                    f"interpolate=True (resized bilinearly over the grid of positions), or keep the spatial size. "
                    f"Received: {given}"
                )
            value, how = _resized(ov, was, now, old_space, new_space, path)
            pairs.append((nv, keras.ops.cast(value, nv.dtype)))
            words.append(f"{name} {was} -> {now}: {how}")
        if not words:
            return Outcome(Status.KEPT, "", pairs)
        return Outcome(Status.ADAPTED, "; ".join(words), pairs)

    rule.__name__ = f"resize_{path.replace('/', '_')}"
    return rule


def _resized(variable, was, now, old_space, new_space, path):
    value = keras.ops.convert_to_tensor(_host(variable).astype("float32"))
    lead = len(was) - len(now)
    if lead:
        raise InvalidEdit(f"{path!r}: {was} -> {now} changes rank; cannot resize. Received: {variable.path}")
    dim = was[-1]
    grid_axes = [i for i in range(len(was) - 1) if was[i] != 1 or now[i] != 1]
    if len(grid_axes) >= 2:  # (1, H, W, C): the positions are a grid already
        h, w = now[grid_axes[0]], now[grid_axes[1]]
        image = keras.ops.reshape(value, (1, was[grid_axes[0]], was[grid_axes[1]], dim))
        out = keras.ops.image.resize(image, (h, w), interpolation="bilinear")
        return keras.ops.reshape(out, now), f"resized bilinearly from {was[grid_axes[0]]}x{was[grid_axes[1]]} to {h}x{w}"
    axis = grid_axes[0]
    t_old, t_new = was[axis], now[axis]
    if any(d is None for d in old_space + new_space):
        raise InvalidEdit(f"{path!r}: the input's spatial size is not fixed, so the grid of {t_old} positions is "
                          f"unknown. Received: old input {old_space}, new {new_space}")
    ratio = math.prod(new_space) / math.prod(old_space)
    extra = round((ratio * t_old - t_new) / (ratio - 1)) if ratio != 1 else -1
    grid_old, grid_new = t_old - extra, t_new - extra
    old_hw, new_hw = _grid(grid_old, old_space), _grid(grid_new, new_space)
    if extra < 0 or old_hw is None or new_hw is None:
        raise InvalidEdit(
            f"{path!r}: cannot tell how its {t_old} positions lie on the input grid {tuple(old_space)} (expected a "
            f"grid shaped like the input, after any extra tokens such as a class token). Received: "
            f"{variable.path} {was} -> {now}"
        )
    flat = keras.ops.reshape(value, (t_old, dim))
    head, grid = flat[:extra], flat[extra:]
    image = keras.ops.reshape(grid, (1,) + old_hw + (dim,))
    out = keras.ops.reshape(keras.ops.image.resize(image, new_hw, interpolation="bilinear"), (grid_new, dim))
    out = keras.ops.concatenate([head, out], axis=0) if extra else out
    kept = f" ({extra} extra token{'s' if extra > 1 else ''} kept)" if extra else ""
    return (keras.ops.reshape(out, now),
            f"resized bilinearly from a {old_hw[0]}x{old_hw[1]} grid to {new_hw[0]}x{new_hw[1]}{kept}")


def _grid(n, space):
    """(h, w) with h * w = n shaped like the input's spatial axes (one axis: (1, n))."""
    if len(space) == 1:
        return (1, n)
    h0, w0 = space[0], math.prod(space[1:])
    h = round(math.sqrt(n * h0 / w0))
    if h > 0 and n % h == 0:
        return (h, n // h)
    return None
