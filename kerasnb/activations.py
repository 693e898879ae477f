"""Activations: where a model applies them, swapping one for another, splitting fused ones off.

- :func:`activations_in`: the activations a model applies, most used first (what the panel offers);
- :func:`swap_activation`: ``new`` wherever the model applies ``old``, weights kept;
- :func:`split_activations`: ``Dense(activation=...)`` becomes ``Dense`` + ``Activation``, bit-identical;
  :func:`fused_activations` lists the layers it would split.

Each returns a :class:`kerasnb.SurgeryResult` as the transforms of :mod:`kerasnb.transforms` do.
"""

from __future__ import annotations

import keras

from .edits import Configure, Insert, Replace
from .errors import surgery_errors_only, InvalidEdit, LayerNotFound
from .surgery import SurgeryResult, apply
from .transforms import KERNEL_LAYERS, _candidates, _finish, _matching, _targets_of

__all__ = ["activations_in", "fused_activations", "split_activations", "swap_activation"]

L = keras.layers

# Layers whose `activation` is applied last, on their output: fused, and splittable.
_FUSED = KERNEL_LAYERS + (L.EinsumDense,)


def function_in_model(value):
    """The function an activation in the model resolves to, or None (a custom one Keras cannot find)."""
    try:
        return keras.activations.get(value)
    except Exception:
        return None


def name_of(value) -> str:
    """An activation's name: a string as given, a function as Keras names it (``relu6``)."""
    if isinstance(value, str):
        return value
    try:
        name = keras.activations.serialize(value)
    except Exception:
        name = getattr(value, "__name__", "activation")
    return name if isinstance(name, str) else getattr(value, "__name__", "activation")


def _activation_fn(value, what="activation"):
    try:
        return keras.activations.get(value)
    except Exception:
        raise InvalidEdit(
            f"{what} {value!r} is not an activation Keras knows. Use a name such as 'relu', 'relu6', 'gelu', "
            f"'silu' (also 'swish'), 'tanh', 'sigmoid', 'linear', or a registered function. Received: {value!r}"
        ) from None


def _relu_equivalent(layer):
    """The activation a keras.layers.ReLU layer computes, when it is a named one (relu, relu6)."""
    config = layer.get_config()
    if config.get("negative_slope", 0) or config.get("threshold", 0):
        return None
    max_value = config.get("max_value")
    if max_value is None:
        return keras.activations.relu
    if float(max_value) == 6.0:
        return keras.activations.relu6
    return None


def _fused_fn(layer):
    if not isinstance(layer, _FUSED):
        return None
    value = layer.get_config().get("activation")
    return None if value is None else function_in_model(value)


def _applied(model):
    """``(path, layer, function)`` for every place the model applies an activation, at any depth:
    Activation layers, ReLU layers and fused ``activation=``. ``function`` is None where it is not
    one Keras knows (a custom function, a ReLU with other settings)."""
    for path, layer in _candidates(model):
        if isinstance(layer, L.Activation):
            yield path, layer, function_in_model(layer.get_config()["activation"])
        elif isinstance(layer, L.ReLU):
            yield path, layer, _relu_equivalent(layer)
        elif isinstance(layer, _FUSED) and layer.get_config().get("activation") is not None:
            yield path, layer, _fused_fn(layer)


def activations_in(model) -> dict:
    """``{name: how many places}`` of the activations ``model`` applies, most used first.

    What ``kerasnb.swap_activation`` can swap: Activation and ReLU layers, and fused
    ``activation=`` other than ``"linear"`` (a Dense without an activation applies none), at
    any depth. The model is only read.

    Args:
        model: A built functional or Sequential model.

    Returns:
        dict: ``{activation name: number of layers applying it}``.

    Examples:
        >>> from kerasnb.activations import activations_in
        >>> inputs = keras.Input((4,), name="x")
        >>> hidden = keras.layers.ReLU(name="relu")(keras.layers.Dense(3, activation="relu", name="dense")(inputs))
        >>> activations_in(keras.Model(inputs, keras.layers.Dense(2, activation="tanh", name="out")(hidden)))
        {'relu': 2, 'tanh': 1}
    """
    counts: dict = {}
    for _, layer, fn in _applied(model):
        if fn is None or (fn is keras.activations.linear and not isinstance(layer, L.Activation)):
            continue
        try:
            name = keras.activations.serialize(fn)
        except Exception:  # noqa: BLE001 -- an activation Keras cannot name is not offered
            continue
        if isinstance(name, str):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


@surgery_errors_only
def swap_activation(model, old, new) -> SurgeryResult:
    """Use activation ``new`` wherever the model applies ``old``, at any depth; every weight is kept.

    Three places hold an activation: ``Activation`` layers (reconfigured), ``ReLU`` layers
    (``ReLU()`` is ``"relu"``, ``ReLU(6.0)`` is ``"relu6"``; replaced by ``Activation(new)``
    named ``<name>_<new>``), and the fused ``activation=`` of Dense / Conv / Depthwise /
    Separable layers (reconfigured). Names resolve as Keras resolves them (``"swish"`` is
    ``"silu"``). Layers after a swapped one report ``kept_input_changed``: fine-tune.
    ``kerasnb.activations.activations_in(model)`` lists what can be swapped.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        old: The activation to swap out: a name (``"relu"``) or the function
            (``keras.activations.relu``).
        new: The activation to use instead, in the same forms.

    Returns:
        SurgeryResult: ``.model``, ``.report``, ``.edits`` and ``.notes``.

    Raises:
        LayerNotFound: no layer applies ``old``; the message lists the activations the model
            uses.
        InvalidEdit: ``old`` or ``new`` is no activation Keras knows, or they are the same.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.swap_activation(model, "relu", "gelu")
        >>> result.model.get_layer("hidden").activation.__name__, result.report.status("out")
        ('gelu', 'kept_input_changed')
    """
    old_fn, new_fn = _activation_fn(old, "old"), _activation_fn(new, "new")
    if old_fn is new_fn:
        raise InvalidEdit(f"old and new are the same activation; nothing would change. Received: old={old!r}, new={new!r}")
    edits = []
    for path, layer, fn in _applied(model):
        if fn is not old_fn:
            continue
        if isinstance(layer, L.ReLU):
            for target in _targets_of(model, path):
                edits.append(Replace(target, L.Activation(new, name=f"{layer.name}_{name_of(new)}")))
        else:  # an Activation layer, or fused
            edits.append(Configure(path, {"activation": new}))
    if not edits:
        used = ", ".join(f"{name} ({n})" for name, n in activations_in(model).items()) or "none"
        raise LayerNotFound(
            f"No layer of model {model.name!r} applies {old!r} (in an Activation or ReLU layer, or fused in a "
            f"Dense / Conv layer). Activations it uses: {used}. Received: old={old!r}"
        )
    return _finish(model, apply(model, edits))


def _splittable(layer) -> bool:
    fn = _fused_fn(layer)
    return fn is not None and fn is not keras.activations.linear


def _fused_layers(model) -> list:
    return [(path, layer) for path, layer in _candidates(model) if _splittable(layer)]


def fused_activations(model) -> dict:
    """``{path: activation name}`` of the layers with a fused activation: what ``split_activations`` splits.

    A Dense / Conv layer with ``activation=`` other than ``"linear"``, at any depth. The model
    is only read.

    Args:
        model: A built functional or Sequential model.

    Returns:
        dict: ``{layer path: activation name}``, in the model's order; empty when there is none.

    Examples:
        >>> from kerasnb.activations import fused_activations
        >>> inputs = keras.Input((4,), name="x")
        >>> hidden = keras.layers.Dense(3, activation="relu", name="dense")(inputs)
        >>> fused_activations(keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden)))
        {'dense': 'relu'}
    """
    return {path: name_of(layer.get_config()["activation"]) for path, layer in _fused_layers(model)}


@surgery_errors_only
def split_activations(model, match=None) -> SurgeryResult:
    """Split each fused activation into the linear layer followed by an ``Activation`` layer.

    Every Dense / Conv / Depthwise / Separable layer with a non-linear ``activation=`` is
    reconfigured with ``activation="linear"``, keeping its weights, and an ``Activation`` layer
    named ``<name>_<activation>`` is inserted after each of its calls. The new model computes
    exactly what the original did (the same operations in the same order: bit for bit); the
    reconfigured layers report ``kept_input_changed`` (their own output is now the
    pre-activation). Useful before pruning, quantizing or inspecting pre-activations.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        match: Which layers to split (default None: every one with a fused activation): a layer class or tuple of classes
            (``keras.layers.Dense``); a name or path (``"head"``, which also selects
            ``"block/head"``); a glob on the whole path or name (``"conv*"``,
            ``"backbone/*"``); a compiled regex searched in the path (``re.compile("conv|dense")``);
            a layer object; a predicate ``(path, layer) -> bool``; or a list of these (a layer
            any of them selects).

    Returns:
        SurgeryResult: ``.model``, ``.report`` (each new Activation ``new``), ``.edits`` and
        ``.notes``.

    Raises:
        LayerNotFound: no layer (that ``match`` selects) has a fused activation.
        InvalidEdit: ``match`` is of no form above.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.split_activations(model)
        >>> [layer.name for layer in result.model.layers]
        ['x', 'hidden', 'hidden_relu', 'out']
        >>> x = np.ones((2, 8), "float32")
        >>> result.report.status("hidden_relu"), bool(np.array_equal(result.model(x), model(x)))
        ('new', True)
    """
    if match is None:
        found = _fused_layers(model)
        if not found:
            raise LayerNotFound(f"No layer of model {model.name!r} has a fused activation to split (a Dense / Conv "
                                f"layer with activation= other than 'linear'). Received: match=None")
    else:
        found = _matching(model, match, containers=False, extra=lambda path, layer: _splittable(layer),
                          condition=" and has a fused activation")
    edits = []
    for path, layer in found:
        value = layer.get_config()["activation"]
        edits.append(Configure(path, {"activation": "linear"}))
        for target in _targets_of(model, path):
            edits.append(Insert(L.Activation(value, name=f"{layer.name}_{name_of(value)}"), after=target))
    return _finish(model, apply(model, edits))
