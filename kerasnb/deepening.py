"""Net2DeeperNet: insert a layer that starts as the identity, so the deeper model computes what it did.

``deepen(model, after, layer=None)`` works out the width of the tensor ``after`` gives, makes a
layer set exactly to the identity on it (a fresh layer made from the given one's config, so the
layer passed in is never changed), and inserts it with an :class:`IdentityInsert` (an Insert whose
rebuild copies the new layer's own weights into the model, as for any inserted layer with
weights). The report gives the added layer ``new`` with the reason ``identity``, also when the
editor replays the edit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np

from . import _graph, _targets, activations
from .errors import IncompatibleShape, InvalidEdit, UnsupportedLayer, surgery_errors_only
from .edits import Insert
from .report import Status

# Activations whose output is never negative: relu after them is the identity.
_NON_NEGATIVE = ("relu", "relu6", "sigmoid", "softmax", "hard_sigmoid", "softplus", "exponential")
_WHAT_WORKS = (
    "Dense(units=width), Conv1D/2D/3D(filters=width, odd kernel_size, padding='same', strides=1; "
    "Conv1D padding='causal' too), DepthwiseConv1D/2D(depth_multiplier=1, same rules), "
    "SeparableConv1D/2D(filters=width, depth_multiplier=1, same rules), BatchNormalization, "
    "Activation('linear'), Identity; activation linear, or relu where the input is never negative"
)


@surgery_errors_only
def deepen(model, after, layer=None, *, activation=None):
    """Insert after ``after`` a layer set to the identity (Net2DeeperNet): same outputs, one more layer.

    The model computes exactly what it did, with one more layer to train.

    The target (``after``) is one of:

    - ``"name"`` (or the layer object itself): a layer of the model (an Input too);
    - ``"outer/inner"``: a layer inside a nested model;
    - ``("name", call_index)``: one call of a layer the graph calls several times.

    By default the added layer, of the width ``C`` of the target's output, is a
    ``Dense(C)`` with an identity kernel and zero bias for a ``(batch, C)`` tensor, and for
    sequences and images (rank 3, 4, 5, channels last) a ``Conv1D/2D/3D(C, kernel_size=1)``
    with an identity kernel and zero bias. A 1x1 kernel is the identity with any padding; for a
    wider kernel pass ``layer=keras.layers.Conv2D(C, 3, padding="same")`` (identity at its
    centre). Channels-first tensors are refused (TensorFlow's CPU convolution does not run them);
    ``layer=keras.layers.BatchNormalization(axis=1)`` works there.

    A given ``layer`` is used through a fresh copy made from its config (the layer passed in is
    never changed or built); its own weights, if it has some, are not used: the copy starts as the
    identity, and the notes say so.

    Args:
        model: A built functional or Sequential model; it is not changed.
        after: The target whose output flows into the new layer, in one of the forms above.
        layer: The layer to add, or None for the default above. Accepted where it can be set
            exactly to the identity: ``Dense`` with ``units`` equal to the width;
            ``Conv1D/2D/3D`` with ``filters`` equal to the width, an odd kernel size with
            ``padding="same"`` (or any size with ``Conv1D``'s ``padding="causal"``, or a kernel
            of 1 with any padding), strides 1, any dilation and groups; ``DepthwiseConv1D/2D`` with
            ``depth_multiplier=1`` and ``SeparableConv1D/2D`` with ``depth_multiplier=1`` (same
            rules); ``BatchNormalization`` (gamma 1, beta 0, moving mean 0, moving variance
            ``1 - epsilon``: the identity in inference, not in training, which the notes say);
            ``Activation("linear")``, ``Identity``. Its activation is linear, or relu where the
            input is never negative. ``LayerNormalization`` is refused: it divides each sample
            by its own spread, which no setting of its weights undoes.
        activation: ``"linear"`` (the default) or ``"relu"`` for the default layer; relu is
            allowed only after a layer whose output is never negative (activation relu,
            relu6, sigmoid, softmax, hard_sigmoid, softplus or exponential; a ReLU or Softmax
            layer).

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the added layer ``new``, reason ``identity``;
        the layers after it ``kept_input_changed``: they read the same values), ``.edits``,
        ``.notes``.

    Raises:
        LayerNotFound: the target names no layer.
        AmbiguousTarget: the target is a layer called several times, named without a call index.
        IncompatibleShape: the given layer's width is not the tensor's (a non-square Dense), or
            the tensor is not one float tensor with a known last axis.
        InvalidEdit: relu asked where the input may be negative; ``activation`` given with
            ``layer``; channels-first data.
        UnsupportedLayer: a layer type (or setting) that cannot be set exactly to the identity.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.deepen(model, after="hidden", activation="relu")
        >>> [(row.layer, str(row.status), row.reason) for row in result.report][1:3]
        [('hidden', 'kept', ''), ('hidden_identity', 'new', 'identity')]
        >>> x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
        >>> bool(np.abs(model(x) - result.model(x)).max() <= 1e-5)
        True
    """
    from .surgery import apply

    found = _targets.resolve(model, after, what="deepen")
    producer = found.layer
    tensor = _output_of(found)
    if layer is not None and activation is not None:
        raise InvalidEdit("activation= is for the default identity layer; a given layer brings its own activation. "
                          f"Received: layer={type(layer).__name__} {layer.name!r}, activation={activation!r}")
    notes = []
    if layer is None:
        fresh, what = _default_layer(producer, tensor, activation or "linear")
    else:
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
            raise UnsupportedLayer(f"deepen takes one keras layer that can start as the identity: {_WHAT_WORKS}. "
                                   f"Received: layer={layer!r} of type {type(layer).__name__}")
        fresh, what = _given_layer(layer, producer, tensor)
        if layer.weights:
            notes.append(f"The layer you passed ({layer.name!r}) has weights of its own; they are not used: the "
                         "inserted copy starts as the identity. Your layer is unchanged.")
    if isinstance(fresh, keras.layers.BatchNormalization):
        notes.append(f"{fresh.name!r} is the identity in inference only: in training it normalises by each batch's "
                     "statistics (and moves its moving mean and variance), so training outputs differ at once.")
    _set_identity(fresh, tensor)
    result = apply(model, [IdentityInsert(fresh, after=after)])
    added = [row.layer for row in result.report if row.status == Status.NEW]
    if len(added) != 1:  # one layer went in; anything else is a bug here, not the user's
        raise AssertionError(f"deepen added {added}")
    notes.insert(0, f"{added[0]!r} ({what}) inserted after {found.path!r} as the identity: the model computes what "
                    "it did; train to use it.")
    if len(found.scopes) == 1 and any(t is tensor for t in _graph.output_tensors(model)):
        notes.append(f"The model output {found.path!r} gave now comes from {added[0]!r}, with the same values; the "
                     f"output is named {added[0]!r} now (a loss or metric keyed by output name needs the new name).")
    return dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))


@dataclass(frozen=True)
class IdentityInsert(Insert):
    """Edit: :class:`kerasnb.Insert` of a layer whose weights are set to the identity (what ``deepen``
    returns in ``.edits``); the report gives the added layer the reason ``new_reason``.

    Examples:
        >>> inputs = keras.Input((4,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> edit = kerasnb.deepen(model, after="x").edits[0]
        >>> type(edit).__name__, edit.target, edit.new_reason
        ('IdentityInsert', 'x', 'identity')
    """

    new_reason: str = "identity"


# ----------------------------------------------------------------------------- what flows out of the target


def _output_of(found):
    """The one Keras tensor the target's call gives."""
    outputs = found.call_outputs()
    if len(outputs) != 1:
        raise IncompatibleShape(f"deepen inserts after a layer giving one tensor; {found.path!r} gives "
                                f"{len(outputs)}. Received: after={found.given!r}")
    tensor = outputs[0]
    shape = tuple(tensor.shape)
    if len(shape) < 2 or shape[-1] is None or not keras.backend.is_float_dtype(tensor.dtype):
        raise IncompatibleShape(
            f"deepen needs a float tensor (batch, ..., width) with a known width after {found.path!r}; it gives "
            f"{tensor.dtype} of shape {shape}. Received: after={found.given!r}")
    return tensor


def never_negative(producer) -> bool:
    """The producer's output is provably never negative (so relu on it is the identity)."""
    if isinstance(producer, keras.layers.Softmax):
        return True
    if isinstance(producer, keras.layers.ReLU):
        return float(producer.negative_slope) == 0.0 and float(producer.threshold) >= 0.0
    return _activation_name(getattr(producer, "activation", None)) in _NON_NEGATIVE


def _activation_name(function) -> str | None:
    """The name of a layer's activation as kerasnb names activations everywhere, or None without one."""
    return None if function is None else activations.name_of(function)


def _check_activation(name, producer, tensor, where: str) -> None:
    if name in (None, "linear"):
        return
    if name == "relu":
        if never_negative(producer):
            return
        raise InvalidEdit(
            f"{where}: relu is the identity only on inputs that are never negative, and {producer.name!r} "
            f"({type(producer).__name__}, activation {_activation_name(getattr(producer, 'activation', None)) or 'none'})"
            " can give negative values, so relu would change what the model computes. What would work: "
            "activation 'linear', or deepening after a layer whose output is never negative (activation "
            f"{', '.join(_NON_NEGATIVE)}; a ReLU or Softmax layer). Received: activation='relu' after {producer.name!r}")
    raise UnsupportedLayer(f"{where}: activation {name!r} does not pass its input through unchanged. What would work: "
                           f"'linear', or 'relu' where the input is never negative. Received: activation={name!r}")


def _channels_last(producer, tensor, where: str) -> None:
    data_format = getattr(producer, "data_format", None)
    if data_format is None and _graph.is_input_layer(producer) and len(tensor.shape) > 2:
        data_format = keras.config.image_data_format()
    if data_format == "channels_first":
        raise InvalidEdit(
            f"{where}: {producer.name!r} gives channels-first data, and a channels-first convolution does not run on "
            "TensorFlow's CPU, so kerasnb cannot promise it computes the identity everywhere. What would work: "
            "layer=keras.layers.BatchNormalization(axis=1) (the identity in inference). "
            f"Received: after {producer.name!r} with data_format='channels_first'")


# ----------------------------------------------------------------------------- the identity layer


def _dtype_of(producer, tensor):
    policy = getattr(producer, "dtype_policy", None)
    if policy is not None and not getattr(policy, "quantization_mode", None) and not _graph.is_input_layer(producer):
        return policy.name
    return keras.backend.standardize_dtype(tensor.dtype)


def _default_layer(producer, tensor, activation):
    rank, width = len(tensor.shape), tensor.shape[-1]
    where = "deepen"
    if activation not in ("linear", "relu"):
        raise InvalidEdit(f"deepen's activation is 'linear' or 'relu' (where the input is never negative). "
                          f"Received: activation={activation!r}")
    _check_activation(activation, producer, tensor, where)
    name = f"{producer.name}_identity"
    dtype = _dtype_of(producer, tensor)
    if rank in (3, 4, 5):
        _channels_last(producer, tensor, where)
        conv = {3: keras.layers.Conv1D, 4: keras.layers.Conv2D, 5: keras.layers.Conv3D}[rank]
        return (conv(width, 1, activation=activation, name=name, dtype=dtype),
                f"{conv.__name__} {width} -> {width}, kernel size 1, identity kernel, zero bias, {activation}")
    return (keras.layers.Dense(width, activation=activation, name=name, dtype=dtype),
            f"Dense {width} -> {width}, identity kernel, zero bias, {activation}")


_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_ACCEPTED = (keras.layers.Dense, *_CONVS, *_DEPTHWISE, *_SEPARABLE, keras.layers.BatchNormalization,
             keras.layers.Activation, keras.layers.Identity, keras.layers.ReLU)


def _given_layer(layer, producer, tensor):
    """A fresh copy of the user's ``layer``, checked to be exactly settable to the identity."""
    kind = type(layer).__name__
    where = f"deepen with {kind} {layer.name!r}"
    received = f"Received: layer={kind} {layer.name!r} after {producer.name!r} (output {tuple(tensor.shape)})"
    if type(layer) not in _ACCEPTED:
        reason = (" LayerNormalization divides each sample by its own spread, which no setting of its weights "
                  "undoes." if isinstance(layer, keras.layers.LayerNormalization) else "")
        if isinstance(layer, _ACCEPTED):
            reason = f" {kind} is a subclass of {type(layer).__mro__[1].__name__}; its call may differ."
        raise UnsupportedLayer(f"{where}: kerasnb cannot set a {kind} to the identity.{reason} What works: "
                               f"{_WHAT_WORKS}. {received}")
    width = tensor.shape[-1]
    _check_dtype(layer, tensor, where, received)
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            raise UnsupportedLayer(f"{where}: a ReLU with max_value, negative_slope or threshold is not the identity "
                                   f"on non-negative inputs. What works: keras.layers.ReLU(). {received}")
        _check_activation("relu", producer, tensor, where)
    elif isinstance(layer, (keras.layers.Activation, keras.layers.Dense, *_CONVS, *_DEPTHWISE, *_SEPARABLE)):
        _check_activation(_activation_name(layer.activation), producer, tensor, where)
    what = kind
    if isinstance(layer, keras.layers.Dense) and layer.units != width:
        raise IncompatibleShape(f"{where}: a Dense is the identity only when square; it has units={layer.units}, the "
                                f"input's width is {width}. What would work: keras.layers.Dense({width}). {received}")
    if isinstance(layer, (*_CONVS, *_DEPTHWISE, *_SEPARABLE)):
        _check_conv(layer, producer, tensor, where, received)
        what = f"{kind} {width} -> {width}, kernel size {tuple(layer.kernel_size)}, identity kernel"
    elif isinstance(layer, keras.layers.Dense):
        what = f"Dense {width} -> {width}, identity kernel"
    config = _graph.config_of(layer, f"The layer {layer.name!r}")
    try:
        fresh = type(layer).from_config(config)
    except Exception as error:  # a config that does not make the layer again
        raise UnsupportedLayer(f"{where}: it cannot be made again from its config ({error}). {received}") from None
    return fresh, what


def _check_dtype(layer, tensor, where, received) -> None:
    given = keras.backend.standardize_dtype(tensor.dtype)
    compute = keras.backend.standardize_dtype(layer.compute_dtype)
    wider = {"float16": ("float32", "float64"), "bfloat16": ("float32", "float64"), "float32": ("float64",)}
    if compute != given and compute not in wider.get(given, ()):
        raise InvalidEdit(f"{where}: it computes in {compute} and its input is {given}; casting the input to {compute} "
                          f"would round it. What would work: the layer made with dtype={given!r}. {received}")


def _check_conv(layer, producer, tensor, where, received) -> None:
    width, rank = tensor.shape[-1], len(tensor.shape)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        raise InvalidEdit(f"{where}: channels-first convolutions do not run on TensorFlow's CPU, so kerasnb cannot "
                          "promise the identity everywhere. What would work: the layer with "
                          f"data_format='channels_last', or BatchNormalization(axis=1). {received}")
    _channels_last(producer, tensor, where)
    if rank != len(layer.kernel_size) + 2:
        raise IncompatibleShape(f"{where}: it takes rank-{len(layer.kernel_size) + 2} input, the tensor has rank "
                                f"{rank}. {received}")
    filters = getattr(layer, "filters", None)
    if not isinstance(layer, _DEPTHWISE) and filters != width:
        raise IncompatibleShape(f"{where}: it is the identity only with as many filters as input channels; it has "
                                f"filters={filters}, the input has {width}. What would work: filters={width}. {received}")
    if isinstance(layer, (*_DEPTHWISE, *_SEPARABLE)) and layer.depth_multiplier != 1:
        raise UnsupportedLayer(f"{where}: depth_multiplier={layer.depth_multiplier} makes more channels than it "
                               f"reads; the identity needs depth_multiplier=1. {received}")
    if any(s != 1 for s in layer.strides):
        raise UnsupportedLayer(f"{where}: strides {tuple(layer.strides)} change the spatial size; the identity "
                               f"needs strides 1. {received}")
    sizes, padding = tuple(layer.kernel_size), layer.padding
    if all(k == 1 for k in sizes) or padding == "causal":
        return
    if padding != "same" or any(k % 2 == 0 for k in sizes):
        raise UnsupportedLayer(
            f"{where}: kernel size {sizes} with padding {padding!r} does not keep every position in place. What "
            f"would work: an odd kernel size with padding='same', Conv1D with padding='causal', or a kernel of 1. "
            f"{received}")


def _centre(layer) -> tuple:
    """Where the tap reading each output position's own input sits in the kernel."""
    sizes = tuple(layer.kernel_size) if hasattr(layer, "kernel_size") else ()
    if getattr(layer, "padding", None) == "causal":
        return tuple(k - 1 for k in sizes)  # causal: the last tap reads the current step
    return tuple((k - 1) // 2 for k in sizes)


def _set_identity(layer, tensor) -> None:
    """Build ``layer`` on ``tensor``'s shape and set every variable so that it computes the identity."""
    layer.build(tuple(tensor.shape))
    width = tensor.shape[-1]
    for variable in layer.weights:
        key = variable.name.split("/")[-1]
        shape = tuple(variable.shape)
        value = np.zeros(shape, "float64")
        if key == "kernel" and isinstance(layer, keras.layers.Dense):
            value = np.eye(width)
        elif key == "kernel" and isinstance(layer, _DEPTHWISE):  # (*kernel, channels, 1)
            value[_centre(layer) + (slice(None), 0)] = 1.0
        elif key == "kernel":  # (*kernel, in / groups, out): output o reads its own channel in its group
            per_group = shape[-2]
            for o in range(shape[-1]):
                value[_centre(layer) + (o % per_group, o)] = 1.0
        elif key == "depthwise_kernel":  # (*kernel, channels, 1)
            value[_centre(layer) + (slice(None), 0)] = 1.0
        elif key == "pointwise_kernel":  # (1, ..., channels, channels)
            value[(0,) * (len(shape) - 2)] = np.eye(width)
        elif key in ("gamma",):
            value = np.ones(shape)
        elif key == "moving_variance":
            value = np.full(shape, 1.0 - layer.epsilon)  # + epsilon inside gives exactly 1 in float32
        elif key == "lora_kernel_a":
            continue  # its partner lora_kernel_b starts at zero: the product adds nothing
        elif key not in ("bias", "beta", "moving_mean", "lora_kernel_b"):
            raise UnsupportedLayer(
                f"deepen: {type(layer).__name__} {layer.name!r} has the variable {key!r}, which kerasnb cannot set "
                f"to the identity (a quantized layer?). What works: {_WHAT_WORKS}. Received: layer={layer.name!r}")
        variable.assign(keras.ops.cast(value, variable.dtype))
