"""Whole-model transforms on every matching layer, and the ground the other transform modules share.

Each function looks at the model, turns what it finds into plain edits (:mod:`kerasnb.edits`)
and carries them out with one :func:`kerasnb.apply`, so it returns a :class:`kerasnb.SurgeryResult`
like any edit: the new model, the weight report, ``result.edits`` (the individual edits, which
replay to the same model with ``kerasnb.apply(model, result.edits)``) and ``result.notes`` (what
was decided, and what was left alone and why). The model passed in is never changed.

- :func:`replace_all`, :func:`configure_all`: every layer that matches, at any depth;
- :func:`truncate`: outputs at any layer.

The other whole-model transforms work the same way, each in its own module:
:mod:`kerasnb.activations` (``swap_activation``, ``split_activations``, ``activations_in``),
:mod:`kerasnb.batchnorm` (``fold_batchnorm``) and :mod:`kerasnb.input_change` (``change_input``).
They share what is below the public functions here: the layers with a kernel, one graph at a
time (:class:`_Frame`), host arithmetic on variables, and how a result gets its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace as _dc_replace

import keras
import numpy as np

from . import _graph, _targets
from .edits import Configure, Replace, Truncate
from .errors import surgery_errors_only, InvalidEdit
from .surgery import SurgeryResult, apply

__all__ = ["configure_all", "replace_all", "truncate"]

L = keras.layers

# Layers that apply a kernel to their input, then their own `activation=`: a BatchNorm after one folds
# into it, change_input adapts the kernel of the first ones, and their activation can be split off.
KERNEL_LAYERS = (L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose,
                 L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D, L.Dense)


# ----------------------------------------------------------------------------- matching layers


def _candidates(model):
    """(path, layer) of every layer at any depth, inputs left out; tied layers once."""
    return [(p, l) for p, l in _graph.walk_layers(model) if not _graph.is_input_layer(l)]


def _matching(model, match, *, containers: bool, extra=None, condition: str = "") -> list:
    """Every (path, layer) that ``match`` selects (:func:`kerasnb._targets.matcher`); a nested model
    that matches covers its own layers. A match of nothing says what would have matched."""
    candidates = [(p, l) for p, l in _candidates(model) if (containers or not _graph.is_graph_model(l))
                  and (extra is None or extra(p, l))]
    found = []
    for path, layer in _targets.select(model, match, candidates, condition=condition):
        if not any(path.startswith(p + "/") for p, _ in found):  # the container's edit covers it
            found.append((path, layer))
    return found


def _calls(model, path) -> int:
    return len(_targets.resolve(model, path).calls)


def _targets_of(model, path) -> list:
    """``[path]``, or ``[(path, 0), (path, 1), ...]`` for a layer called more than once."""
    n = _calls(model, path)
    return [path] if n <= 1 else [(path, i) for i in range(n)]


# ----------------------------------------------------------------------------- results


def _finish(model, result: SurgeryResult, notes=()) -> SurgeryResult:
    """The result with our notes first (``result.original`` is ``model``: apply keeps it for ``compare``)."""
    extra = tuple(n for n in notes if n not in result.notes)
    if extra:
        result = _dc_replace(result, notes=extra + tuple(result.notes))
    return result


@surgery_errors_only
def replace_all(model, match, make) -> SurgeryResult:
    """Replace every layer that ``match`` selects, at any depth, in one rebuild.

    ``match``: a layer class or tuple of classes, a name or path, a glob on paths and names
    (``"backbone/conv*"``, ``"*_relu"``), a compiled regex searched in paths, a layer object, a
    predicate ``(path, layer) -> bool``, or a list of these (the one matcher of kerasnb, see
    :func:`kerasnb._targets.matcher`). Input layers never match; a nested model that matches is replaced whole.
    ``make(layer)`` returns the replacement for one layer (a layer, a list of layers, a model or
    a callable, as for :func:`kerasnb.replace`); a layer or list given instead of a function is
    used for every match. A layer called more than once gets one replacement per call.

    ``result.edits`` are the :class:`kerasnb.Replace` edits, one per call. A match of nothing
    raises :class:`kerasnb.LayerNotFound` naming the closest paths.
    """
    constant = isinstance(make, (keras.layers.Layer, list, tuple))
    if not constant and not callable(make):
        raise InvalidEdit(
            "make is a function layer -> replacement (e.g. lambda layer: keras.layers.Dropout(0.1)), or one "
            f"replacement for every match. Received: make={make!r} of type {type(make).__name__}"
        )
    edits = []
    for path, layer in _matching(model, match, containers=True):
        for target in _targets_of(model, path):
            replacement = make if constant else make(layer)
            if replacement is None:
                raise InvalidEdit(f"make({path!r}) returned None; it returns the replacement layer (or layers, a "
                                  f"model, a callable). Received: make={make!r}")
            edits.append(Replace(target, replacement))
    return _finish(model, apply(model, edits))


@surgery_errors_only
def configure_all(model, match, **changes) -> SurgeryResult:
    """Rebuild every layer that ``match`` selects (see :func:`replace_all`) with config ``changes``.

    Weights are kept where they fit, as for :func:`kerasnb.configure`. Nested models themselves
    are not configured (their layers are). ``result.edits`` are the :class:`kerasnb.Configure`
    edits, one per layer.
    """
    if not changes:
        raise InvalidEdit("configure_all needs config changes, e.g. configure_all(model, keras.layers.Dropout, "
                          "rate=0.2). Received: no changes")
    found = _matching(model, match, containers=False)
    return _finish(model, apply(model, [Configure(path, dict(changes)) for path, _ in found]))


@surgery_errors_only
def truncate(model, outputs) -> SurgeryResult:
    """A model whose outputs are those of ``outputs`` (one target or a list; ``"backbone/layer"`` inside
    a nested model, one level deep); the layers they do not need are removed."""
    return _finish(model, apply(model, [Truncate(outputs)]))


# ----------------------------------------------------------------------------- shared by the transform modules


@dataclass
class _Frame:
    """One graph (the model or a nested model) as the transforms read it."""

    scope: object
    prefix: str  # "" at top level, "backbone/" inside
    parent: "_Frame | None" = None
    call: object = None  # the NodeView calling this nested model in the parent graph

    def __post_init__(self):
        index = _graph.graph_index(self.scope)
        self.views = list(index.order)
        self.by_output = index.producer  # id(tensor) -> the call that makes it
        self.consumers = index.consumers  # id(tensor) -> the calls that read it
        self.outputs = [id(t) for t in _graph.output_tensors(self.scope)]  # in order: a nested output maps to its call's
        self.inputs = _graph.input_tensors(self.scope)

    def path(self, op) -> str:
        return self.prefix + op.name

    def target(self, view):
        return self.path(view.operation) if view.n_calls == 1 else (self.path(view.operation), view.call_index)


def _frames(model, frame=None):
    """The model's frame and, recursively, those of the nested models (each nested model once)."""
    frame = frame or _Frame(model, "")
    yield frame
    seen = set()
    for view in frame.views:
        op = view.operation
        if _graph.is_graph_model(op) and id(op) not in seen:
            seen.add(id(op))
            yield from _frames(op, _Frame(op, frame.prefix + op.name + "/", frame, view if view.n_calls == 1 else None))


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _host(variable):
    """A variable's value as a float64 numpy array (per-channel arithmetic is done on the host)."""
    return _np(variable.value if hasattr(variable, "value") else variable).astype("float64")


def _give(variable, value):
    """(variable, value in its dtype), after checking the shape (a rule bug otherwise)."""
    value = np.asarray(value)
    if tuple(value.shape) != tuple(variable.shape):
        raise AssertionError(f"{variable.path}: computed {tuple(value.shape)}, the new layer has {tuple(variable.shape)}")
    dtype = keras.backend.standardize_dtype(variable.dtype)
    if dtype in ("float16", "float32", "float64"):
        return variable, value.astype(dtype)
    return variable, keras.ops.cast(keras.ops.convert_to_tensor(value.astype("float32")), dtype)
