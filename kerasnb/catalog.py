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

Values are checked before anything is built: an unknown type, an unknown parameter, a value of
the wrong kind or out of its range raises a :class:`kerasnb.SurgeryError` that names what was
received and what would work (:class:`UnknownType`, :class:`InvalidParameter`).

:func:`fits` is the dry run the editor uses to decide which types a row may offer: it works out the
replacement's output shape from the row's input shape, without making any weights.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import keras

from . import _graph, errors

KEEP = "Keep"
REMOVE = "Remove (identity)"


class UnknownType(errors.SurgeryError, KeyError):
    """No replacement type has that label; the message lists the labels there are."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidParameter(errors.InvalidEdit):
    """A parameter of a replacement type is unknown, of the wrong kind or out of its range."""


class Choices(tuple):
    """A parameter's allowed values (a dropdown); ``from_layer(layer)`` may give the default.

    ``Choices(ACTIVATIONS, from_layer=layer_option("activation"))`` starts from the activation of
    the layer being replaced (a softmax output stays softmax), else from the first choice. The
    replaced layer's own value is accepted even when it is not among the choices.
    """

    def __new__(cls, options, from_layer: Callable | None = None):
        made = super().__new__(cls, options)
        made.from_layer = from_layer
        return made


@dataclass(frozen=True)
class Range:
    """The valid values of a number: ``Range(0, 1, high_open=True)`` is ``0 <= x < 1``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

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
        """
        out = {}
        for name, default in self.params.items():
            if isinstance(default, (tuple, list)):
                value = default[0]
                read = getattr(default, "from_layer", None)
                if read is not None and replacing and layer is not None:
                    found = read(layer)
                    value = value if found is None else found
                default = value
            elif callable(default):
                default = default(layer)
            out[name] = default
        return out

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
        params = dict(params or {})
        unknown = set(params) - set(self.params)
        if unknown:
            raise InvalidParameter(
                f"{self.label!r} has no parameter {', '.join(sorted(map(str, unknown)))}; "
                f"it takes {', '.join(self.params) or 'none'}. Received: {params!r}"
            )
        defaults = self.defaults(layer, replacing=replacing)
        for name, value in params.items():
            problem = self._problem(name, value, defaults[name])
            if problem:
                raise InvalidParameter(f"{self.label}'s {name} must be {problem}. Received: {name}={value!r}")
        return {**defaults, **params}

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
        if limit is not None and isinstance(value, numbers.Real) and value not in limit:
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
                f"{self.label}({args}) cannot be built for input {input_shape}: {first_line(error)}. "
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

    ``limits`` maps a parameter name to the :class:`Range` of its valid values.

    Registering a label again replaces the earlier entry (handy while iterating in a notebook).
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"A replacement needs a non-empty text label. Received: label={label!r}")
    if label == KEEP:
        raise ValueError(f"{KEEP!r} is reserved for leaving the layer as it is. Received: label={label!r}")
    unknown = set(limits or {}) - set(params or {})
    if unknown:
        raise ValueError(f"limits name parameters {label!r} does not take: {', '.join(sorted(unknown))}. "
                         f"Received: limits={limits!r}")

    def decorate(fn):
        if not callable(fn):
            raise TypeError(f"register_replacement decorates a function. Received: {fn!r}")
        _REGISTRY[label] = Entry(label, fn, dict(params or {}), kind=kind, insertable=insertable,
                                 check=check, note=note, output=output, limits=dict(limits or {}))
        return fn

    return decorate


def unregister(label: str) -> None:
    """Remove a registered type (built-ins included)."""
    _REGISTRY.pop(label, None)


def entries() -> list[Entry]:
    """Every entry in dropdown order: Keep first, then in registration order."""
    return list(_REGISTRY.values())


def get(label: str) -> Entry:
    """The entry called ``label``; :class:`UnknownType` (a SurgeryError and a KeyError) lists the known ones."""
    if isinstance(label, str) and label in _REGISTRY:
        return _REGISTRY[label]
    from .errors import suggest

    raise UnknownType(
        f"No replacement type {label!r}.{suggest(str(label), _REGISTRY)} "
        f"Known types: {', '.join(_REGISTRY)}. Received: label={label!r}"
    )


# ----------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class Site:
    """Where a layer sits: what it receives and gives, and whether a shape change would break a merge."""

    layer: Any
    input_shape: tuple | None  # None when the layer takes several tensors
    output_shape: tuple | None
    feeds_merge: bool  # a consumer takes several tensors, so the output shape must stay the same
    is_input: bool
    consumers: tuple = ()  # layers that take this layer's output as their only input
    merges: tuple = ()  # names of the layers that take this output together with others (Add, ...)


def locate(model, target) -> Site:
    """The :class:`Site` of ``target`` in ``model``.

    ``target`` is anything :func:`kerasnb._targets.resolve` takes: a name, an ``"outer/inner"``
    path, a layer object, or ``(name or path, call_index)``. A shared layer needs its call index,
    as everywhere in kerasnb.
    """
    from . import _targets

    found = _targets.resolve(model, target, what="a type")
    if _graph.is_input_layer(found.layer):
        layer = found.layer
        shape = tuple(layer.batch_shape) if hasattr(layer, "batch_shape") else None
        return Site(layer, None, shape, False, True)
    call = found.single_call()
    views = _graph.walk(found.scope)
    inputs = call.input_tensors
    in_shape = tuple(inputs[0].shape) if len(inputs) == 1 else None
    outs = call.outputs
    out_shape = tuple(outs[0].shape) if len(outs) == 1 else None
    out_ids = {id(t) for t in outs}
    takers = [v for v in views if any(id(t) in out_ids for t in v.input_tensors)]
    feeds_merge = any(len(v.input_tensors) > 1 for v in takers)
    consumers = tuple(v.operation for v in takers if len(v.input_tensors) == 1)
    merges = tuple(dict.fromkeys(v.name for v in takers if len(v.input_tensors) > 1))
    return Site(call.operation, in_shape, out_shape, feeds_merge, False, consumers, merges)


def fits(entry: Entry | str, model, target, site: Site | None = None, **params) -> tuple[bool, str]:
    """``(True, "")`` if ``entry`` can stand where ``target`` is, else ``(False, reason)``.

    Cheap on big models: only shapes around the one layer are computed (``compute_output_shape``
    of the replacement and of the next layers); no weight is made and nothing is rebuilt.
    """
    entry = get(entry) if isinstance(entry, str) else entry
    site = site or locate(model, target)
    if entry.kind == "keep":
        return True, ""
    if site.is_input:
        return False, "input layers stay; insert after them instead"
    if site.input_shape is None:
        return False, "the layer takes several tensors"
    if entry.kind == "remove":
        if site.feeds_merge and site.input_shape != site.output_shape:
            return False, (f"removing it would change {site.output_shape} into {site.input_shape} before "
                           f"{_merge_text(site)}")
        return shape_reason(site, site.input_shape)
    if entry.check is not None:  # entries too big to dry-run (backbones) say what they need
        reason = entry.check(site.layer, site.input_shape)
        if reason:
            return False, reason
    try:
        out_shape = dry_run(entry, site.layer, site.input_shape, **params)
    except Exception as error:  # any failure to build means "does not fit", with Keras's words
        return False, first_line(error)
    return shape_reason(site, out_shape)


def shape_reason(site: Site, out_shape) -> tuple[bool, str]:
    """Whether a replacement's output shape can flow on to the layer's consumers."""
    if out_shape is None or site.output_shape is None or out_shape == site.output_shape:
        return True, ""
    if site.feeds_merge:
        return False, f"gives {out_shape} but {_merge_text(site)} after it needs {site.output_shape}"
    # A new shape is fine if every next layer, rebuilt fresh, still accepts it.
    for consumer in site.consumers:
        if _graph.is_graph_model(consumer):
            continue
        try:
            output_shape_of(type(consumer).from_config(consumer.get_config()), out_shape)
        except Exception as error:
            return False, f"gives {out_shape}, which the next layer {consumer.name!r} cannot take ({first_line(error)})"
    return True, ""


def _merge_text(site: Site) -> str:
    names = " and ".join(repr(n) for n in site.merges)
    return f"the merge {names}" if names else "a merge"


def dry_run(entry: Entry, layer, input_shape, *, replacing: bool = True, **params):
    """Output shape of ``entry``'s replacement for ``input_shape``, found without making weights.

    Raises what stops it: :class:`InvalidParameter` for bad values, else Keras's own error.
    """
    values = entry.check_params(params, layer, replacing=replacing)
    if entry.output is not None:  # declared, so big blocks need not be built to be checked
        return tuple(entry.output(input_shape))
    replacement = entry.build(layer, input_shape, **values)
    shape = tuple(input_shape)
    for part in replacement if isinstance(replacement, (list, tuple)) else [replacement]:
        shape = output_shape_of(part, shape)
    return shape


def output_shape_of(part, shape: tuple) -> tuple:
    """What ``part`` (a layer, model or callable) gives for ``shape``; raises if it cannot take it.

    Layers answer from ``compute_output_shape`` (no variables, so a 16M-weight Dense costs
    nothing). Only parts that cannot say are called on a symbolic tensor.
    """
    if isinstance(part, keras.layers.Layer) and not isinstance(part, keras.Model):
        problem = _input_spec_problem(part, shape)
        if problem:
            raise ValueError(problem)
        try:
            out = tuple(part.compute_output_shape(shape))
        except NotImplementedError:
            out = None
        if out is not None:
            if any(isinstance(d, int) and d <= 0 for d in out):
                raise ValueError(f"{type(part).__name__} would give the empty shape {out} for {shape}")
            return out
    with keras.StatelessScope():
        return tuple(part(keras.KerasTensor(shape)).shape)


def _input_spec_problem(layer, shape: tuple) -> str:
    """What a layer's declared ``input_spec`` says against ``shape`` ('' if nothing)."""
    specs = layer.input_spec
    spec = specs[0] if isinstance(specs, (list, tuple)) and specs else specs
    if spec is None or isinstance(spec, (list, tuple)):
        return ""
    rank = len(shape)
    if getattr(spec, "ndim", None) is not None and rank != spec.ndim:
        return f"{type(layer).__name__} expects rank {spec.ndim}, got {shape}"
    if getattr(spec, "min_ndim", None) is not None and rank < spec.min_ndim:
        return f"{type(layer).__name__} expects rank >= {spec.min_ndim}, got {shape}"
    if getattr(spec, "max_ndim", None) is not None and rank > spec.max_ndim:
        return f"{type(layer).__name__} expects rank <= {spec.max_ndim}, got {shape}"
    return ""


def first_line(error: Exception) -> str:
    return errors.first_line(error, limit=200)  # a reason in a dropdown's tooltip stays short


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
