"""Weight rules: how a new layer gets its variables from the layer it stands for.

Each rule reads the old layer and the new (built, not yet initialised) layer and returns an
:class:`Outcome`: the values to give the new variables, and in words what it did. The rebuild
applies outcomes; the report derives statuses from them.

- :func:`carry`: copy when shapes and dtypes fit, cast when only the float dtype differs
  (said in the reason), re-initialise otherwise (the reason names each variable and shapes);
- :func:`slice_channels`: the surviving slices of a pruned layer's variables;
- :func:`paired_variables` / :func:`carried_values`: old and new variables paired by structure
  (the order of tracked sub-layers and of each one's own variables), for any rule that maps a
  layer onto its rebuilt twin. Never by name: a rebuilt block's sub-layers get new
  auto-generated names (``dense_3`` comes back as ``dense_7``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from . import _graph, _slicing
from .errors import InvalidEdit
from .report import Status


@dataclass
class Outcome:
    """What a rule did: ``kind`` is the :class:`~kerasnb.report.Status` it gives the layer (``"kept"``
    when it copied the weights, ``"adapted"``, ``"folded"``...: a Status or its value); ``reason``
    says it in words."""

    kind: Status
    reason: str = ""
    values: list = field(default_factory=list)  # (new variable, its starting value)
    faithful: bool = False  # the new layer computes exactly what the old one did (LoRA not trained yet)

    def __post_init__(self):
        if self.kind not in _OUTCOME_KINDS:
            raise InvalidEdit(f"A weight rule's Outcome kind is one of {', '.join(map(repr, map(str, _OUTCOME_KINDS)))}. "
                              f"Received: kind={self.kind!r}")
        self.kind = Status(self.kind)

    def assign(self) -> None:
        """Give the new variables their values (drawn from their initialisers if none is given)."""
        for variable, value in self.values:
            _graph.set_initial_value(variable, value)


# What a weight rule can say it did; the report decides kept or kept_input_changed from the graph.
# NEW: a layer an edit adds whose starting values a rule derives from another layer (a grown block).
_OUTCOME_KINDS = (Status.KEPT, Status.REINITIALIZED, Status.PRUNED, Status.ADAPTED, Status.FOLDED, Status.QUANTIZED,
                  Status.NO_WEIGHTS, Status.NEW)


def carry(old, new) -> Outcome:
    """The default rule: copy what fits, cast float dtypes, re-initialise what does not fit."""
    mirror_lora(old, new)
    old_vars, new_vars = list(old.weights), list(new.weights)
    if not old_vars and not new_vars:
        return Outcome(Status.NO_WEIGHTS)
    same = len(old_vars) == len(new_vars) and all(
        ov.shape == nv.shape and ov.dtype == nv.dtype for ov, nv in zip(old_vars, new_vars))
    if not same:  # the words are worked out only when something differs
        mismatch = _mismatches(old_vars, new_vars)
        if mismatch:
            return Outcome(Status.REINITIALIZED, mismatch)
    casts = "" if same else _dtype_casts(old, old_vars, new_vars)
    return Outcome(Status.KEPT, casts, [(nv, _copy_value(ov, nv.dtype)) for ov, nv in zip(old_vars, new_vars)])


def mirror_lora(old, new) -> None:
    """LoRA that is not in a layer's config (a block's sub-layers; a convolution, whose constructor
    takes no ``lora_rank``): enable it again on the made-again twin."""
    olds = _graph.sublayers(old)
    if not any(getattr(s, "lora_enabled", False) for s in olds):
        return
    news = _graph.sublayers(new)
    if len(news) != len(olds) or not new.built:
        return
    for o, n in zip(olds, news):
        if getattr(o, "lora_enabled", False) and not getattr(n, "lora_enabled", False) and n.built:
            n.enable_lora(o.lora_rank, lora_alpha=getattr(o, "lora_alpha", None))


def is_lora_factor(variable) -> bool:
    """A factor Keras's LoRA adds (``lora_kernel_a``, ``lora_embeddings_b``...)."""
    return variable.name.split("/")[-1].startswith("lora_")


def paired_sublayers(old, new) -> list:
    """``[(old sub-layer, new sub-layer)]``: ``old`` and every layer it tracks, in Keras's order,
    each with its twin in ``new``; refused (:class:`InvalidEdit`) unless both have the same
    structure (as many sub-layers, of the same classes, in the same order)."""
    olds, news = _graph.sublayers(old), _graph.sublayers(new)
    if len(olds) == len(news) and all(type(o) is type(n) for o, n in zip(olds, news)):
        return list(zip(olds, news))
    at = next((i for i, (o, n) in enumerate(zip(olds, news)) if type(o) is not type(n)), min(len(olds), len(news)))

    def what(subs):
        return f"{type(subs[at]).__name__} {subs[at].name!r}" if at < len(subs) else "nothing"

    raise InvalidEdit(
        f"{type(old).__name__} {old.name!r} was made again with other sub-layers than it had ({len(olds)} before, "
        f"{len(news)} now; sub-layer {at} was {what(olds)}, is {what(news)}), so its trained variables cannot be "
        "paired with the new ones, and starting any of them from random values would change what it computes. "
        f"What would work: a layer whose config makes it again as it was. Received: {type(old).__name__} {old.name!r}"
    )


def own_variables(layer) -> list:
    """The variables ``layer`` holds itself, in its order, not through a sub-layer it tracks."""
    inner = {id(v) for sub in _graph.sublayers(layer)[1:] for v in sub.weights}
    return [v for v in layer.weights if id(v) not in inner]


def paired_variables(old, new) -> list:
    """``[(old variable, new variable)]`` for every variable of ``new``, paired by structure: the
    sub-layers in order (:func:`paired_sublayers`), then each sub-layer's own variables in order.

    LoRA factors pair like any variable where both twins have LoRA; where one twin has it and the
    other not (LoRA being enabled or merged), its factors are left out. Refused with
    :class:`InvalidEdit`, naming the first difference, when a sub-layer has another number of
    variables, a variable another shape, or two sub-layers share a variable in one model and not
    in the other: never a new variable left without a value.
    """
    pairs, old_to_new, new_to_old = [], {}, {}
    for old_sub, new_sub in paired_sublayers(old, new):
        old_vars, new_vars = own_variables(old_sub), own_variables(new_sub)
        if bool(getattr(old_sub, "lora_enabled", False)) != bool(getattr(new_sub, "lora_enabled", False)):
            old_vars = [v for v in old_vars if not is_lora_factor(v)]
            new_vars = [v for v in new_vars if not is_lora_factor(v)]
        where = f"{type(old).__name__} {old.name!r}" + (
            "" if old_sub is old else f", its sub-layer {type(old_sub).__name__} {old_sub.name!r}")
        if len(old_vars) != len(new_vars):
            raise InvalidEdit(
                f"{where} was made again with other variables: {_mismatches(old_vars, new_vars)}. Its trained values "
                "cannot be paired with the new variables, and starting any of them from random values would change "
                f"what it computes. Received: {type(old).__name__} {old.name!r}"
            )
        for ov, nv in zip(old_vars, new_vars):
            if tuple(ov.shape) != tuple(nv.shape):
                raise InvalidEdit(
                    f"{where} was made again with {_var_name(nv)} of shape {tuple(nv.shape)}, not "
                    f"{tuple(ov.shape)} as before, so its trained value does not fit. Received: "
                    f"{type(old).__name__} {old.name!r}"
                )
            if old_to_new.setdefault(id(ov), nv) is not nv or new_to_old.setdefault(id(nv), ov) is not ov:
                raise InvalidEdit(
                    f"{where}: its variable {_var_name(ov)} is shared with another sub-layer in one model and not in "
                    f"the other, so the rebuilt layer would not keep its ties. Received: {type(old).__name__} "
                    f"{old.name!r}"
                )
            if len(new_to_old) > len(pairs):  # a variable shared by two sub-layers is paired once
                pairs.append((ov, nv))
    return pairs


def carried_values(old, new, replaced=None) -> list:
    """``[(new variable, its value)]``: each of ``new``'s variables (LoRA factors being enabled
    aside) gets its twin's value (:func:`paired_variables`); ``replaced`` maps ``id(old variable)``
    to another value for it (a merged kernel)."""
    replaced = replaced or {}
    values = []
    for ov, nv in paired_variables(old, new):
        value = replaced.get(id(ov))
        values.append((nv, _copy_value(ov, nv.dtype) if value is None else value))
    return values


def slice_channels(old, new, k_in, k_out) -> Outcome:
    """Pruning's rule: the surviving input / output channels of each variable, with the shapes."""
    from ._channels import variable_at

    values, reason = _slicing.sliced_values(old, k_in, k_out)
    covered = {id(variable_at(new, attr)) for attr in values}
    missed = [v.path for v in new.weights if id(v) not in covered]
    if missed:  # the channel analysis refuses such layers; never leave a variable random
        raise AssertionError(f"{old.name}: no slicing rule for {missed}")
    pairs = []
    for attr, value in values.items():
        variable = variable_at(new, attr)
        if tuple(value.shape) != tuple(variable.shape):  # a bug in the analysis, never the user's fault
            raise AssertionError(f"{old.name}.{attr}: sliced {tuple(value.shape)}, the new layer has "
                                 f"{tuple(variable.shape)}")
        dtype = keras.backend.standardize_dtype(variable.dtype)
        pairs.append((variable, value if str(value.dtype) == dtype else keras.ops.cast(value, dtype)))
    return Outcome(Status.PRUNED, reason, pairs)


def _mismatches(old_vars, new_vars) -> str:
    if len(old_vars) != len(new_vars):
        before = ", ".join(f"{_var_name(v)} {tuple(v.shape)}" for v in old_vars) or "none"
        after = ", ".join(f"{_var_name(v)} {tuple(v.shape)}" for v in new_vars) or "none"
        return f"variables changed: [{before}] -> [{after}]"
    parts = [
        f"{_var_name(ov)} {tuple(ov.shape)} -> {tuple(nv.shape)}"
        for ov, nv in zip(old_vars, new_vars)
        if tuple(ov.shape) != tuple(nv.shape)
    ]
    return ", ".join(parts)


def _var_name(variable) -> str:
    return variable.name.split("/")[-1]


def _copy_value(variable, dtype=None):
    # A copy on the backend's own device: the new model must share no storage with the user's
    # model (torch would otherwise wrap the same buffer); cheaper than a round trip through numpy.
    if dtype is not None and keras.backend.standardize_dtype(dtype) != keras.backend.standardize_dtype(variable.dtype):
        return keras.ops.cast(variable.value, dtype)  # a cast makes a new tensor already
    if keras.backend.backend() == "tensorflow":
        # A TensorFlow variable made from a tensor owns its buffer: training either model
        # leaves the other unchanged (tested), and no copy of every weight is made first.
        return variable.value
    return keras.ops.copy(variable.value)  # JAX donates buffers in training; torch would share


def _dtype_casts(layer, old_vars, new_vars) -> str:
    """'kernel, bias cast float32 -> float16' for variables whose dtype changed, or ''.

    A cast between float types keeps the trained values (rounded); anything else (float to
    int, int to float) would not mean the same numbers, so it is refused.
    """
    changed: dict = {}
    for ov, nv in zip(old_vars, new_vars):
        was, now = keras.backend.standardize_dtype(ov.dtype), keras.backend.standardize_dtype(nv.dtype)
        if was == now:
            continue
        if not (keras.backend.is_float_dtype(was) and keras.backend.is_float_dtype(now)):
            raise InvalidEdit(
                f"{type(layer).__name__} {layer.name!r}: its variable {_var_name(ov)!r} holds {was} values, which "
                f"cannot be carried over into a {now} variable without changing what they mean. Float dtypes "
                f"(float16, bfloat16, float32, float64) can be cast into one another. "
                f"Received: a change of {_var_name(ov)!r} from {was} to {now}"
            )
        changed.setdefault((was, now), []).append(_var_name(ov))
    return "; ".join(f"{', '.join(names)} cast {was} -> {now}" for (was, now), names in changed.items())
