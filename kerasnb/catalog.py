"""The replacement types offered in the editor's dropdowns, and a decorator to register more.

An entry is a function ``(layer, input_shape, **params) -> replacement`` where the replacement
is anything :func:`kerasnb.replace` accepts (a Layer, a list of layers, a ``keras.Model`` or a
callable ``tensor -> tensor``). ``params`` are the few settings the editor shows as widgets::

    @kerasnb.register_replacement("Dropout 0.5")
    def dropout_half(layer, input_shape):
        return keras.layers.Dropout(0.5)

    @kerasnb.register_replacement("Noise", params={"stddev": 0.1})
    def noise(layer, input_shape, stddev):
        return keras.layers.GaussianNoise(stddev)

A parameter default may be a value (its type picks the widget), a tuple of choices (the first is
the default), ``Choices(options, from_layer=fn)`` (choices whose default is read from the layer
being replaced, e.g. its activation), or a function ``layer -> value`` computed for the row being
edited. ``limits={"rate": Range(0, 1, high_open=True)}`` states the valid range of a number.

Every error this module raises is a :class:`kerasnb.SurgeryError` that names what was received
and what would work: :class:`UnknownType` (no such label), :class:`InvalidParameter` (a value of
the wrong kind or out of its range, checked before anything is built) and
:class:`InvalidRegistration` (a bad ``register_replacement`` call).

This module is the registry only. Whether a type fits where a layer is (the dry run the editor
uses to decide what a row offers) is :mod:`kerasnb.fitting`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import keras

from . import _graph, errors
from .errors import InvalidParameter, InvalidRegistration, UnknownType  # defined in errors.py, named here too

KEEP = "Keep"
REMOVE = "Remove (identity)"
KINDS = ("replace", "remove")  # what a registered entry does ("keep" is Keep's alone)


class Choices(tuple):
    """A parameter's allowed values (a dropdown); ``from_layer(layer)`` may give the default.

    ``Choices(ACTIVATIONS, from_layer=layer_option("activation"))`` starts from the activation of
    the layer being replaced (a softmax output stays softmax), else from the first choice. The
    replaced layer's own value is accepted even when it is not among the choices.
    """

    def __new__(cls, options, from_layer: Callable | None = None):
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise InvalidRegistration(f"Choices takes the allowed values as a list or tuple, e.g. "
                                      f"Choices(('relu', 'tanh')). Received: options={options!r}")
        made = super().__new__(cls, options)
        if not made:
            raise InvalidRegistration(f"Choices needs at least one value; the first is the default. "
                                      f"Received: options={options!r}")
        if from_layer is not None and not callable(from_layer):
            raise InvalidRegistration(f"from_layer is a function layer -> value (or None), e.g. "
                                      f"layer_option('activation'). Received: from_layer={from_layer!r}")
        made.from_layer = from_layer
        return made


@dataclass(frozen=True)
class Range:
    """The valid values of a number: ``Range(0, 1, high_open=True)`` is ``0 <= x < 1``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __post_init__(self):
        for name in ("low", "high"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or math.isnan(value)):
                raise InvalidRegistration(f"Range's {name} is a number or None (no bound). "
                                          f"Received: {name}={value!r}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise InvalidRegistration(f"Range's low must not exceed its high, e.g. Range(0, 1). "
                                      f"Received: low={self.low!r}, high={self.high!r}")

    def __contains__(self, value) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def text(self, name: str) -> str:
        left = f"{self.low} {'<' if self.low_open else '<='} " if self.low is not None else ""
        right = f" {'<' if self.high_open else '<='} {self.high}" if self.high is not None else ""
        return f"{left}{name}{right}"


@dataclass(frozen=True)
class Entry:
    """One replacement type: a label for the dropdown, a builder and its parameter defaults."""

    label: str
    build: Callable[..., Any]
    params: dict = field(default_factory=dict)
    kind: str = "replace"  # "keep", "remove" or "replace"
    insertable: bool = True  # also offered by "insert after"
    check: Callable[..., str] | None = None  # fast shape check: (layer, input_shape) -> reason or ""
    note: Callable[..., str] | None = None  # (input_shape, **params) -> remark shown beside the result
    output: Callable[..., tuple] | None = None  # input_shape -> output shape, to skip building in dry runs
    limits: dict = field(default_factory=dict)  # parameter name -> Range of valid numbers

    def defaults(self, layer=None, *, replacing: bool = True) -> dict:
        """Parameter values to start from for ``layer`` (callable defaults are resolved).

        ``replacing`` says ``layer`` is the layer this type stands in for, so choices that follow
        the replaced layer (:class:`Choices` with ``from_layer``) take its value; for an insert,
        ``layer`` is the layer before the new one and those choices start from their first value.
        A default that cannot be worked out for ``layer`` raises :class:`InvalidParameter`.
        """
        return {name: self.default(name, layer, replacing=replacing) for name in self.params}

    def default(self, name: str, layer=None, *, replacing: bool = True):
        """The starting value of parameter ``name`` for ``layer`` (see :meth:`defaults`)."""
        spec = self.params[name]
        try:
            if isinstance(spec, (tuple, list)):
                value = spec[0]
                read = getattr(spec, "from_layer", None)
                if read is not None and replacing and layer is not None:
                    found = read(layer)
                    value = value if found is None else found
                return value
            return spec(layer) if callable(spec) else spec
        except Exception as error:  # the registered default's own code failed for this layer
            where = f"layer {layer.name!r}" if hasattr(layer, "name") else f"layer={layer!r}"
            raise InvalidParameter(
                f"{self.label!r} could not work out the default of {name!r} for {where}: "
                f"{errors.first_line(error, limit=200)}. Give {name}= yourself ({self.accepts()})."
            ) from error

    def choices(self, name: str):
        """The allowed values of a parameter given as a tuple of choices, else None."""
        default = self.params.get(name)
        return tuple(default) if isinstance(default, (tuple, list)) else None

    def accepts(self) -> str:
        """What each parameter takes, in words: ``rate: a number, 0 <= rate < 1``."""
        parts = []
        for name, spec in self.params.items():
            if isinstance(spec, (tuple, list)):
                parts.append(f"{name}: one of {', '.join(map(str, spec))}")
                continue
            kind = _kind_of(spec if not callable(spec) else None)
            limit = self.limits.get(name)
            what = ", ".join(p for p in (kind, limit.text(name) if limit else "") if p)
            parts.append(f"{name}: {what or 'any value'}")
        return "; ".join(parts) or "no parameters"

    def check_params(self, params: dict, layer=None, *, replacing: bool = True) -> dict:
        """All parameter values (defaults filled in) once ``params`` pass the checks, else
        :class:`InvalidParameter` naming the parameter, what was received and what is valid."""
        if params is not None and not isinstance(params, dict):
            raise InvalidParameter(f"{self.label!r} takes its parameters as a dict of name -> value "
                                   f"({self.accepts()}). Received: params={params!r}")
        params = dict(params or {})
        unknown = set(params) - set(self.params)
        if unknown:
            raise InvalidParameter(
                f"{self.label!r} has no parameter {', '.join(sorted(map(str, unknown)))}; "
                f"it takes {', '.join(self.params) or 'none'}. Received: {params!r}"
            )
        values = {}
        for name in self.params:
            if name not in params:
                values[name] = self.default(name, layer, replacing=replacing)
                continue
            try:
                default = self.default(name, layer, replacing=replacing)
            except InvalidParameter:  # given by the user: its own default is not needed
                default = None
            problem = self._problem(name, params[name], default)
            if problem:
                raise InvalidParameter(f"{self.label}'s {name} must be {problem}. Received: {name}={params[name]!r}")
            values[name] = params[name]
        return values

    def _problem(self, name: str, value, default) -> str:
        spec = self.params[name]
        if isinstance(spec, (tuple, list)):
            if value in spec or value == default:
                return ""
            return f"one of {', '.join(map(repr, spec))}"
        kind = _kind_of(default)
        if kind == "True or False" and not isinstance(value, bool):
            return kind
        if kind.startswith("a whole number") and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            return _with_limit(kind, self.limits.get(name), name)
        if kind == "a number" and (isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value)):
            return _with_limit(kind, self.limits.get(name), name)
        if kind == "text" and not isinstance(value, str):
            return kind
        limit = self.limits.get(name)
        if limit is not None and isinstance(value, numbers.Real) and not isinstance(value, bool) and value not in limit:
            return _with_limit(kind, limit, name)
        return ""

    def make(self, layer, input_shape, **params):
        """Build a fresh replacement for ``layer``; bad parameters are refused in plain words.

        Everything is checked before building; what Keras still refuses while building is
        raised as :class:`InvalidParameter` with Keras's reason and what the parameters take.
        """
        values = self.check_params(params, layer)
        try:
            return self.build(layer, input_shape, **values)
        except errors.SurgeryError:
            raise
        except Exception as error:
            args = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise InvalidParameter(
                f"{self.label}({args}) cannot be built for input {input_shape}: {errors.first_line(error, limit=200)}. "
                f"Its parameters take: {self.accepts()}. Received: {params!r}"
            ) from error


def _kind_of(default) -> str:
    if isinstance(default, bool):
        return "True or False"
    if isinstance(default, numbers.Integral):
        return "a whole number"
    if isinstance(default, numbers.Real):
        return "a number"
    if isinstance(default, str):
        return "text"
    return ""


def _with_limit(kind: str, limit: Range | None, name: str) -> str:
    return f"{kind} with {limit.text(name)}" if limit is not None else kind


_REGISTRY: dict[str, Entry] = {}


def register_replacement(label: str, *, params: dict | None = None, insertable: bool = True,
                         check: Callable | None = None, note: Callable | None = None,
                         output: Callable | None = None, kind: str = "replace", limits: dict | None = None):
    """Decorator adding ``fn(layer, input_shape, **params)`` to the editor's dropdowns as ``label``.

    ``params`` maps each parameter name to its default (see the module's notes); ``limits`` maps
    a parameter name to the :class:`Range` of its valid values; ``check(layer, input_shape)``
    returns why the type cannot stand somewhere ("" when it can); ``output(input_shape)`` gives
    the output shape so a big block is not built to be checked; ``note(input_shape, **params)``
    is a remark the editor shows with the result. A bad call raises :class:`InvalidRegistration`.

    Registering a label again replaces the earlier entry (handy while iterating in a notebook).
    """
    if not isinstance(label, str) or not label.strip():
        raise InvalidRegistration(f"A replacement needs a non-empty text label, e.g. 'Dropout 0.5'. "
                                  f"Received: label={label!r}")
    if label == KEEP:
        raise InvalidRegistration(f"{KEEP!r} is reserved for leaving the layer as it is; pick another label. "
                                  f"Received: label={label!r}")
    if params is not None and not isinstance(params, dict):
        raise InvalidRegistration(f"params maps each parameter name to its default, e.g. {{'rate': 0.2}}. "
                                  f"Received: params={params!r}")
    odd = [name for name in params or {} if not isinstance(name, str) or not name.isidentifier()]
    if odd:
        raise InvalidRegistration(f"Parameter names become keyword arguments, so each must be an identifier "
                                  f"like 'rate'. Received: {', '.join(map(repr, odd))} in params for {label!r}")
    empty = [name for name, spec in (params or {}).items() if isinstance(spec, (tuple, list)) and not spec]
    if empty:
        raise InvalidRegistration(f"A parameter given as choices needs at least one (the first is the default). "
                                  f"Received: {', '.join(f'{n}=()' for n in empty)} in params for {label!r}")
    if limits is not None and not isinstance(limits, dict):
        raise InvalidRegistration(f"limits maps a parameter name to a Range, e.g. {{'rate': Range(0, 1)}}. "
                                  f"Received: limits={limits!r}")
    unknown = set(limits or {}) - set(params or {})
    if unknown:
        raise InvalidRegistration(f"limits name parameters {label!r} does not take: {', '.join(sorted(map(str, unknown)))}; "
                                  f"it takes {', '.join(params or {}) or 'none'}. Received: limits={limits!r}")
    not_ranges = {k: v for k, v in (limits or {}).items() if not isinstance(v, Range)}
    if not_ranges:
        raise InvalidRegistration(f"Each limit is a catalog.Range, e.g. Range(0, 1, high_open=True). "
                                  f"Received: limits={not_ranges!r}")
    if kind not in KINDS:
        raise InvalidRegistration(f"kind is one of {', '.join(map(repr, KINDS))}. Received: kind={kind!r}")
    for name, value in (("check", check), ("note", note), ("output", output)):
        if value is not None and not callable(value):
            raise InvalidRegistration(f"{name} is a function (or None). Received: {name}={value!r}")

    def decorate(fn):
        if not callable(fn):
            raise InvalidRegistration(f"register_replacement decorates a function fn(layer, input_shape, **params). "
                                      f"Received: {fn!r}")
        _REGISTRY[label] = Entry(label, fn, dict(params or {}), kind=kind, insertable=bool(insertable),
                                 check=check, note=note, output=output, limits=dict(limits or {}))
        return fn

    return decorate


def unregister(label: str) -> None:
    """Remove a registered type (built-ins included); a label that is not there is ignored."""
    _REGISTRY.pop(label, None)


def entries() -> list[Entry]:
    """Every entry in dropdown order: Keep first, then in registration order."""
    return list(_REGISTRY.values())


def get(label: str) -> Entry:
    """The entry called ``label``; :class:`UnknownType` (a SurgeryError and a KeyError) lists the known ones."""
    if isinstance(label, str) and label in _REGISTRY:
        return _REGISTRY[label]
    raise UnknownType(
        f"No replacement type {label!r}.{errors.suggest(str(label), _REGISTRY)} "
        f"Known types: {', '.join(_REGISTRY)}. Received: label={label!r}"
    )


# ----------------------------------------------------------------------------- built-ins


def _width(layer) -> int:
    """Last dimension of a layer's output (the natural default for units / filters)."""
    if layer is None:
        return 64
    try:
        shape = _graph.output_shape(layer)
    except Exception:  # a layer without one output shape: the plain default
        return 64
    if isinstance(shape, tuple) and shape and isinstance(shape[-1], int) and shape[-1] > 0:
        return shape[-1]
    return 64


def layer_option(name: str, kind=str):
    """``layer -> value`` of the option ``name`` in the layer's config, or None if it has none
    (or not of type ``kind``); the default a replacement takes from the layer it replaces."""

    def read(layer):
        try:
            value = layer.get_config().get(name)
        except Exception:
            return None
        if kind is int and isinstance(value, bool):
            return None
        return value if isinstance(value, kind) else None

    return read


def _filters(layer) -> int:
    """A convolution's own filter count, else 16."""
    value = layer_option("filters", int)(layer) if layer is not None else None
    return value if value and value > 0 else 16


_REGISTRY[KEEP] = Entry(KEEP, lambda layer, input_shape: None, kind="keep", insertable=False)


@register_replacement(REMOVE, kind="remove", insertable=False)
def _remove(layer, input_shape):
    return None  # carried out as kerasnb.delete: the layer's input flows on


ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "silu", "elu", "selu", "softplus", "leaky_relu", "linear", "softmax")
# The activation of the replaced layer where it has one (a softmax output stays softmax), else relu.
_FOLLOW_ACTIVATION = Choices(ACTIVATIONS, from_layer=layer_option("activation"))
# A block's last layer ends as the replaced layer did; linear when it had no activation.
_OUTPUT_ACTIVATION = Choices(("linear",) + tuple(a for a in ACTIVATIONS if a != "linear"),
                             from_layer=layer_option("activation"))
_AT_LEAST_ONE = Range(1)


@register_replacement("Dropout", params={"rate": 0.2}, limits={"rate": Range(0, 1, high_open=True)})
def _dropout(layer, input_shape, rate):
    return keras.layers.Dropout(rate)


@register_replacement("Dense", params={"units": _width, "activation": _FOLLOW_ACTIVATION},
                      limits={"units": _AT_LEAST_ONE})
def _dense(layer, input_shape, units, activation):
    return keras.layers.Dense(int(units), activation=activation)


@register_replacement("Conv1D block", params={"filters": _filters, "kernel_size": 3, "activation": ACTIVATIONS,
                                              "output_activation": _OUTPUT_ACTIVATION},
                      limits={"filters": _AT_LEAST_ONE, "kernel_size": _AT_LEAST_ONE}, insertable=False)
def _conv1d_block(layer, input_shape, filters, kernel_size, activation, output_activation="linear"):
    # The seed's second example: view the features as a sequence, convolve, flatten back.
    # Conv1D needs (steps, channels): a flat vector becomes (n, 1); a sequence is used as is.
    # The last Dense gives the replaced layer's width and, by default, its activation.
    feature_shape = tuple(input_shape[1:])
    if any(d is None for d in feature_shape):
        raise ValueError(f"Conv1D block needs a fixed input shape. Received: input_shape={input_shape}")
    n = 1
    for d in feature_shape:
        n *= d
    steps, channels = (feature_shape if len(feature_shape) == 2 else (n, 1))
    if steps < kernel_size:
        raise ValueError(f"kernel_size {kernel_size} is longer than the {steps} steps it would slide over")
    width = _width(layer)
    return [
        keras.layers.Reshape((steps, channels)),
        keras.layers.Conv1D(int(filters), int(kernel_size), activation=activation),
        keras.layers.Flatten(),
        keras.layers.Dense(width, activation=output_activation),  # back to the width the next layer expects
    ]


@register_replacement("BatchNormalization")
def _batch_norm(layer, input_shape):
    return keras.layers.BatchNormalization()


@register_replacement("LayerNormalization")
def _layer_norm(layer, input_shape):
    return keras.layers.LayerNormalization()


@register_replacement("Activation", params={"activation": _FOLLOW_ACTIVATION})
def _activation(layer, input_shape, activation):
    return keras.layers.Activation(activation)


# Pretrained backbones: ImageNet weights only when Keras's cache already holds them (never fetched).

BACKBONE_FILES = {
    "VGG16": lambda shape: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "MobileNetV2": lambda shape: f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{_mobilenet_rows(shape)}_no_top.h5",
}


def _mobilenet_rows(shape) -> int:
    rows = shape[1] if shape and shape[1] in (96, 128, 160, 192, 224) else 224
    return rows


def keras_cache_dir() -> str:
    """Where ``keras.utils.get_file`` keeps downloaded model weights."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def cached_weights(backbone: str, input_shape) -> str | None:
    """Path of the backbone's no-top ImageNet file if it is already cached, else None."""
    if backbone not in BACKBONE_FILES:
        raise UnknownType(f"No backbone {backbone!r}.{errors.suggest(str(backbone), BACKBONE_FILES)} "
                          f"Known backbones: {', '.join(BACKBONE_FILES)}. Received: backbone={backbone!r}")
    path = os.path.join(keras_cache_dir(), BACKBONE_FILES[backbone](input_shape))
    return path if os.path.isfile(path) else None


def _image_check(min_side: int):
    def check(layer, input_shape):
        if input_shape is None or len(input_shape) != 4:
            return f"needs images (batch, height, width, 3); this layer receives {input_shape}"
        _, h, w, c = input_shape
        if c != 3:
            return f"needs 3 colour channels; this layer receives {c}"
        if h is None or w is None or h < min_side or w < min_side:
            return f"needs images of at least {min_side}x{min_side}; this layer receives {h}x{w}"
        return ""

    return check


def _backbone_note(name):
    def note(input_shape, **params):
        if cached_weights(name, input_shape):
            return f"{name}: ImageNet weights from Keras's cache ({keras_cache_dir()}), frozen."
        return (f"{name}: random weights (weights=None): no ImageNet file in {keras_cache_dir()} "
                "and nothing is downloaded; frozen all the same.")

    return note


def _backbone(factory, name, input_shape):
    weights = cached_weights(name, input_shape)
    base = factory(include_top=False, weights=weights, input_shape=tuple(input_shape[1:]))
    base.trainable = False
    # The model's name tells the report's reader which weights it carries.
    base.name = f"{name.lower()}_{'imagenet' if weights else 'random_init'}"
    return [base, keras.layers.GlobalAveragePooling2D()]


@register_replacement("VGG16 backbone (frozen)", insertable=False, check=_image_check(32),
                      note=_backbone_note("VGG16"), output=lambda shape: (shape[0], 512))
def _vgg16(layer, input_shape):
    return _backbone(keras.applications.VGG16, "VGG16", input_shape)


@register_replacement("MobileNetV2 backbone (frozen)", insertable=False, check=_image_check(32),
                      note=_backbone_note("MobileNetV2"), output=lambda shape: (shape[0], 1280))
def _mobilenet_v2(layer, input_shape):
    return _backbone(keras.applications.MobileNetV2, "MobileNetV2", input_shape)
