"""Activations: where a model applies them, swapping one for another, splitting fused ones off.

- :func:`activations_in`: the activations a model applies, most used first (what the panel offers);
- :func:`swap_activation`: ``new`` wherever the model applies ``old``, weights kept;
- :func:`split_activations`: ``Dense(activation=...)`` becomes ``Dense`` + ``Activation``, bit-identical.

Each returns a :class:`kerasnb.SurgeryResult` as the transforms of :mod:`kerasnb.transforms` do.
"""

from __future__ import annotations

import keras

from .edits import Configure, Insert, Replace
from .errors import surgery_errors_only, InvalidEdit, LayerNotFound
from .surgery import SurgeryResult, apply
from .transforms import KERNEL_LAYERS, _candidates, _finish, _matching, _targets_of

__all__ = ["activations_in", "split_activations", "swap_activation"]

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
    """``{name: how many places}`` of the activations ``model`` applies that :func:`swap_activation`
    can swap, most used first: Activation and ReLU layers, and fused ``activation=`` other than
    ``"linear"`` (a Dense without an activation applies none).

    >>> import keras
    >>> x = keras.Input((4,))
    >>> y = keras.layers.ReLU()(keras.layers.Dense(3, activation="relu")(x))
    >>> activations_in(keras.Model(x, keras.layers.Dense(2, activation="tanh")(y)))
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
    (``ReLU()`` is ``"relu"``, ``ReLU(6.0)`` is ``"relu6"``; replaced by ``Activation(new)``, named
    ``<name>_<new>``), and the fused ``activation=`` of Dense / Conv / Depthwise / Separable layers
    (reconfigured, weights kept). Names resolve as Keras resolves them (``"swish"`` is ``"silu"``).
    Layers after a swapped one report ``kept_input_changed``: fine-tune.
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


@surgery_errors_only
def split_activations(model, match=None) -> SurgeryResult:
    """Split each fused activation into the linear layer followed by an ``Activation`` layer.

    Every Dense / Conv / Depthwise / Separable layer with a non-linear ``activation=`` (those that
    ``match`` selects, see :func:`kerasnb.replace_all`; all of them by default) is reconfigured with
    ``activation="linear"``, keeping its weights, and an ``Activation`` layer named
    ``<name>_<activation>`` is inserted after each of its calls. The new model computes exactly
    what the original did (same operations in the same order: bit for bit). The reconfigured
    layers report ``kept_input_changed`` (their own output is now the pre-activation).
    """
    def fused(path, layer):
        fn = _fused_fn(layer)
        return fn is not None and fn is not keras.activations.linear

    if match is None:
        found = [(p, l) for p, l in _candidates(model) if fused(p, l)]
        if not found:
            raise LayerNotFound(f"No layer of model {model.name!r} has a fused activation to split (a Dense / Conv "
                                f"layer with activation= other than 'linear'). Received: match=None")
    else:
        found = _matching(model, match, containers=False, extra=fused, condition=" and has a fused activation")
    edits = []
    for path, layer in found:
        value = layer.get_config()["activation"]
        edits.append(Configure(path, {"activation": "linear"}))
        for target in _targets_of(model, path):
            edits.append(Insert(L.Activation(value, name=f"{layer.name}_{name_of(value)}"), after=target))
    return _finish(model, apply(model, edits))
