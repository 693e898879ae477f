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
the default), or a function ``layer -> value`` computed for the row being edited.

:func:`fits` is the dry run the editor uses to decide which types a row may offer: it works out the
replacement's output shape from the row's input shape, without making any weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import keras

from . import _graph, errors

KEEP = "Keep"
REMOVE = "Remove (identity)"


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

    def defaults(self, layer=None) -> dict:
        """Parameter values to start from for ``layer`` (callable defaults are resolved)."""
        out = {}
        for name, default in self.params.items():
            if callable(default):
                default = default(layer)
            elif isinstance(default, (tuple, list)):
                default = default[0]
            out[name] = default
        return out

    def choices(self, name: str):
        """The allowed values of a parameter given as a tuple of choices, else None."""
        default = self.params.get(name)
        return tuple(default) if isinstance(default, (tuple, list)) else None

    def make(self, layer, input_shape, **params):
        """Build a fresh replacement; unknown parameter names are refused in plain words."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise ValueError(
                f"{self.label!r} has no parameter {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(self.params) or 'none'}. Received: {params!r}"
            )
        values = {**self.defaults(layer), **params}
        return self.build(layer, input_shape, **values)


_REGISTRY: dict[str, Entry] = {}


def register_replacement(label: str, *, params: dict | None = None, insertable: bool = True,
                         check: Callable | None = None, note: Callable | None = None,
                         output: Callable | None = None, kind: str = "replace"):
    """Decorator adding ``fn(layer, input_shape, **params)`` to the editor's dropdowns as ``label``.

    Registering a label again replaces the earlier entry (handy while iterating in a notebook).
    """
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"A replacement needs a non-empty text label. Received: label={label!r}")
    if label == KEEP:
        raise ValueError(f"{KEEP!r} is reserved for leaving the layer as it is. Received: label={label!r}")

    def decorate(fn):
        if not callable(fn):
            raise TypeError(f"register_replacement decorates a function. Received: {fn!r}")
        _REGISTRY[label] = Entry(label, fn, dict(params or {}), kind=kind, insertable=insertable,
                                 check=check, note=note, output=output)
        return fn

    return decorate


def unregister(label: str) -> None:
    """Remove a registered type (built-ins included)."""
    _REGISTRY.pop(label, None)


def entries() -> list[Entry]:
    """Every entry in dropdown order: Keep first, then in registration order."""
    return list(_REGISTRY.values())


def get(label: str) -> Entry:
    try:
        return _REGISTRY[label]
    except KeyError:
        from .errors import suggest

        raise KeyError(
            f"No replacement type {label!r}.{suggest(label, _REGISTRY)} "
            f"Known: {', '.join(_REGISTRY)}. Received: label={label!r}"
        ) from None


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


def locate(model, target) -> Site:
    """The :class:`Site` of ``target`` in ``model``.

    ``target`` is a name, an ``"outer/inner"`` path, a layer object, or ``(name or path,
    call_index)`` for one call of a layer called more than once (without a call index, a shared
    layer's first call stands for it).
    """
    from .errors import LayerNotFound, suggest

    graph = model
    call_index = None
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[1], int) and not isinstance(target[1], bool):
        target, call_index = target
    parts = target.split("/") if isinstance(target, str) else [target]
    for depth, part in enumerate(parts):
        views = _graph.walk(graph)
        names = {v.name: v for v in views}
        for layer in _graph.input_layers(graph):
            if part == layer.name or part is layer:
                shape = tuple(layer.batch_shape) if hasattr(layer, "batch_shape") else None
                return Site(layer, None, shape, False, True)
        calls = sorted((v for v in views if part is v.operation or part == v.name), key=lambda v: v.call_index)
        if not calls:
            raise LayerNotFound(
                f"No layer named {part!r} in model {graph.name!r}.{suggest(str(part), names)} Received: target={target!r}"
            )
        found = calls[0]
        if depth < len(parts) - 1:
            graph = found.operation
            continue
        if call_index is not None:
            if not 0 <= call_index < len(calls):
                raise LayerNotFound(
                    f"Layer {part!r} is called {len(calls)} time(s) in model {graph.name!r}; there is no call "
                    f"{call_index}. Received: target={(target, call_index)!r}"
                )
            found = calls[call_index]
        inputs = found.input_tensors
        in_shape = tuple(inputs[0].shape) if len(inputs) == 1 else None
        outs = found.outputs
        out_shape = tuple(outs[0].shape) if len(outs) == 1 else None
        out_ids = {id(t) for t in outs}
        takers = [v for v in views if any(id(t) in out_ids for t in v.input_tensors)]
        feeds_merge = any(len(v.input_tensors) > 1 for v in takers)
        consumers = tuple(v.operation for v in takers if len(v.input_tensors) == 1)
        return Site(found.operation, in_shape, out_shape, feeds_merge, False, consumers)


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
            return False, f"removing it would change {site.output_shape} into {site.input_shape} before a merge"
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
        return False, f"gives {out_shape} but a merge after it needs {site.output_shape}"
    # A new shape is fine if every next layer, rebuilt fresh, still accepts it.
    for consumer in site.consumers:
        if _graph.is_graph_model(consumer):
            continue
        try:
            output_shape_of(type(consumer).from_config(consumer.get_config()), out_shape)
        except Exception as error:
            return False, f"gives {out_shape}, which the next layer {consumer.name!r} cannot take ({first_line(error)})"
    return True, ""


def dry_run(entry: Entry, layer, input_shape, **params):
    """Output shape of ``entry``'s replacement for ``input_shape``, found without making weights."""
    if entry.output is not None:  # declared, so big blocks need not be built to be checked
        return tuple(entry.output(input_shape))
    replacement = entry.make(layer, input_shape, **params)
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
    shape = _graph.output_shape(layer)
    if isinstance(shape, tuple) and shape and isinstance(shape[-1], int):
        return shape[-1]
    return 64


_REGISTRY[KEEP] = Entry(KEEP, lambda layer, input_shape: None, kind="keep", insertable=False)


@register_replacement(REMOVE, kind="remove", insertable=False)
def _remove(layer, input_shape):
    return None  # carried out as kerasnb.delete: the layer's input flows on


@register_replacement("Dropout", params={"rate": 0.2})
def _dropout(layer, input_shape, rate):
    return keras.layers.Dropout(rate)


ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "silu", "elu", "selu", "softplus", "leaky_relu", "linear", "softmax")


@register_replacement("Dense", params={"units": _width, "activation": ACTIVATIONS})
def _dense(layer, input_shape, units, activation):
    return keras.layers.Dense(int(units), activation=activation)


@register_replacement("Conv1D block", params={"filters": 16, "kernel_size": 3, "activation": ACTIVATIONS}, insertable=False)
def _conv1d_block(layer, input_shape, filters, kernel_size, activation):
    # The seed's second example: view the features as a sequence, convolve, flatten back.
    # Conv1D needs (steps, channels): a flat vector becomes (n, 1); a sequence is used as is.
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
        keras.layers.Dense(width),  # back to the width the next layer expects
    ]


@register_replacement("BatchNormalization")
def _batch_norm(layer, input_shape):
    return keras.layers.BatchNormalization()


@register_replacement("LayerNormalization")
def _layer_norm(layer, input_shape):
    return keras.layers.LayerNormalization()


@register_replacement("Activation", params={"activation": ACTIVATIONS})
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
