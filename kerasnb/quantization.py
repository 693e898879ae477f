"""Quantization with Keras's own ``quantize()``, on a new model: chosen layers, a report of bytes and drift.

``quantize(model, "int8", match=...)`` returns a new model in which every chosen Dense,
EinsumDense, Embedding and ReversibleEmbedding layer (at any depth, inside keras-hub blocks too)
is quantized by Keras itself (``layer.quantize(mode)``) on kerasnb's copy: the user's model is
never quantized. Each such layer is reported ``quantized``, with the mode and its bytes before and
after; the layers after it see slightly changed inputs (``kept_input_changed``), so
``result.compare(x)`` shows the drift where it is expected. A quantized layer keeps its mode in
its config (a block holding quantized layers keeps a ``DTypePolicyMap`` of them, as keras-hub's
backbones do), so the result saves to ``.keras`` and loads back computing the same, and later
kerasnb edits carry its quantized layers as they are.

``quantization_sensitivity(model, data)`` quantizes one layer at a time and measures the drift
of the model's outputs: the layers that cost least accuracy per byte saved come first.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras
import numpy as np

from . import _graph, _targets, weights
from .edits import Transform
from .errors import InvalidEdit, QuantizationRefused, surgery_errors_only
from .report import Status, WeightReport
from .surgery import SurgeryResult, apply
from .weights import Outcome

__all__ = ["quantize", "quantization_sensitivity", "MODES", "quantizable", "why_not_quantizable", "refusal",
           "model_bytes", "size_text"]

MODES = ("int8", "int4", "float8")  # what kerasnb.quantize takes (Keras's own weight-only modes)
_CALIBRATED = ("gptq", "awq")  # Keras's modes that need a whole-model calibration pass


def _classes() -> tuple:
    """The exact classes Keras's ``quantize()`` accepts (its type check refuses their subclasses)."""
    found = [keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding]
    reversible = getattr(keras.layers, "ReversibleEmbedding", None)  # in keras.layers since Keras 3.13
    if reversible is not None:
        found.append(reversible)
    return tuple(found)


def _kinds_text() -> str:
    return ", ".join(c.__name__ for c in _classes()[:-1]) + " and " + _classes()[-1].__name__


def why_not_quantizable(layer, mode: str) -> str:
    """Why Keras cannot quantize ``layer`` in ``mode``, in words, or ``""`` when it can.

    Args:
        layer: A Keras layer.
        mode: ``"int8"``, ``"int4"`` or ``"float8"``.

    Returns:
        str: e.g. ``"it is a Conv2D: Keras quantizes only Dense, EinsumDense, Embedding and
        ReversibleEmbedding layers"``, or ``""``.

    Examples:
        >>> from kerasnb.quantization import why_not_quantizable
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 4))
        >>> why_not_quantizable(dense, "int8")
        ''
        >>> why_not_quantizable(keras.layers.Conv2D(2, 3), "int8")[:16]
        'it is a Conv2D: '
    """
    kind = type(layer).__name__
    exact = _classes()
    if not isinstance(layer, exact):
        return f"it is a {kind}: Keras quantizes only {_kinds_text()} layers"
    if type(layer) not in exact:
        base = next(c.__name__ for c in exact if isinstance(layer, c))
        return (f"it is a {kind}, a subclass of {base}: Keras's quantize() quantizes only the exact classes "
                f"{_kinds_text()}")
    if getattr(layer, "lora_enabled", False):
        return "it has LoRA enabled: merge it first (kerasnb.merge_lora(model)), then quantize the merged model"
    if layer.quantization_mode is not None:
        return (f"it is quantized already ({layer.quantization_mode}); Keras cannot quantize a layer twice: "
                "quantize the float model it came from")
    if mode == "float8" and isinstance(layer, keras.layers.Embedding):
        return "Keras has no float8 mode for embeddings (int8 and int4 work)"
    if mode == "int8" and layer.compute_dtype == "float16":
        return "Keras refuses int8 for layers computing in float16 (use bfloat16 or float32)"
    if not layer.built:
        return "it is not built"
    return ""


def quantizable(layer, mode: str = "int8") -> bool:
    """Whether Keras can quantize ``layer`` in ``mode`` (:func:`why_not_quantizable` says why not).

    Args:
        layer: A Keras layer.
        mode: ``"int8"`` (default), ``"int4"`` or ``"float8"``.

    Returns:
        bool

    Examples:
        >>> from kerasnb.quantization import quantizable
        >>> embedding = keras.layers.Embedding(10, 4)
        >>> embedding.build((None, 3))
        >>> quantizable(embedding, "int8"), quantizable(embedding, "float8")
        (True, False)
    """
    return not why_not_quantizable(layer, mode)


def refusal(layer, mode: str = "int8") -> str:
    """Why ``kerasnb.quantize`` would refuse ``layer`` named on its own, or ``""``: a block or nested
    model is fine when it holds a layer Keras can quantize in ``mode``.

    Args:
        layer: A Keras layer (a block, a nested model).
        mode: ``"int8"`` (default), ``"int4"`` or ``"float8"``.

    Returns:
        str: the reason, or ``""``.

    Examples:
        >>> from kerasnb.quantization import refusal
        >>> inputs = keras.Input((4,), name="x")
        >>> inner = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="inner")
        >>> refusal(inner), refusal(keras.layers.ReLU())[:12]
        ('', 'it is a ReLU')
    """
    why = why_not_quantizable(layer, mode)
    inside = _graph.sublayers(layer)[1:] if why else []
    if not inside:
        return why
    if any(not why_not_quantizable(sub, mode) for sub in inside):
        return ""
    if any(getattr(sub, "quantization_mode", None) for sub in inside + [layer]):
        return "its layers are quantized already; Keras cannot quantize a layer twice"
    return f"{why}, and it holds no layer Keras can quantize in {mode}"


def model_bytes(model) -> int:
    """The bytes of every variable of ``model`` (each counted once), as stored.

    Args:
        model: Any built Keras model or layer.

    Returns:
        int: e.g. ``40`` for a Dense(2) on 4 inputs in float32.

    Examples:
        >>> from kerasnb.quantization import model_bytes
        >>> inputs = keras.Input((4,), name="x")
        >>> model_bytes(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
        40
    """
    return _bytes(model.weights)


# ----------------------------------------------------------------------------- quantize


@surgery_errors_only
def quantize(model, mode, *, match=None, data=None, keep_float=None, config=None) -> SurgeryResult:
    """A new model whose chosen layers are quantized by Keras's own ``quantize()``; ``model`` is not.

    Keras quantizes exactly the classes Dense, EinsumDense, Embedding and ReversibleEmbedding
    (not their subclasses, no convolutions). kerasnb makes its copy of ``model`` (sub-layers of
    keras-hub blocks too), gives it the trained weights and quantizes the chosen layers of the copy.
    Each is reported ``quantized``, its reason giving the mode and its kernel's bytes before and
    after (``int8: kernel 4.0 MB -> 1.0 MB (+ scales 16 KB)``); the report's ``to_frame()`` has
    ``bytes_before`` and ``bytes_after`` per layer and the notes give the model's total. The
    layers after them see slightly different inputs (``kept_input_changed``), and
    ``result.compare(x)`` shows the drift of each. ``float8`` is Keras's training scheme: it keeps
    the float32 kernels and adds scales and histories, so the model grows; the notes say so.

    What is refused and what is left alone: a layer named explicitly (by name, path or object)
    that Keras cannot quantize in that mode (a Conv2D, a subclass of Dense, an Embedding in
    float8, a layer quantized already, a layer with LoRA) is refused with
    :class:`kerasnb.errors.QuantizationRefused`; one only a pattern or class matched is left as it
    is and listed in the notes. Naming a block (a keras-hub ``TransformerDecoder``) or a nested
    model means the layers inside it that Keras can quantize. LoRA is not merged for you: merge
    it first (``kerasnb.merge_lora``), then quantize the merged model. GPTQ and AWQ are refused:
    they calibrate the whole model block by block with Keras's ``model.quantize(mode,
    config=...)``, which kerasnb does not run; call that on ``result.model`` of a float copy.

    The result saves to ``.keras`` and loads back computing the same (a block holding quantized
    layers keeps their modes in its config, as keras-hub's backbones do); later kerasnb edits of
    it carry its quantized layers as they are.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        mode: ``"int8"``, ``"int4"`` or ``"float8"``; or a dict ``{match: mode}`` giving the layers
            each ``match`` selects that mode (``{"*attention*": "int8", "*ffw*": "int4"}``); a layer
            two keys select with different modes is refused.
        match: Which layers, as every ``match=`` of kerasnb selects (a class, a name or path, a
            glob, a regex, a layer object, a predicate ``(path, layer) -> bool``, or a list of
            these); None (default): every layer Keras can quantize. Not with a dict ``mode``.
        data: Example inputs, for ``keep_float``: what ``model(data)`` takes.
        keep_float: A whole number k: the k chosen layers whose quantization costs most drift per
            byte saved (:func:`quantization_sensitivity` on ``data``) stay float. Needs ``data``.
        config: A Keras quantization config (``keras.quantizers.Int8QuantizationConfig`` ...)
            passed to each layer's ``quantize()``; None uses Keras's defaults for the mode.

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the quantized layers ``quantized``; a block with
        quantized layers inside is one row), ``.edits`` and ``.notes`` (bytes before and after,
        what was left alone and why, which layers ``keep_float`` kept).

    Raises:
        QuantizationRefused: an unknown mode, GPTQ / AWQ, a layer named explicitly that Keras
            cannot quantize in its mode, a layer two dict keys give different modes, or nothing
            to quantize.
        LayerNotFound: a name in ``match`` names no layer; the message suggests close names.
        InvalidEdit: ``keep_float`` without ``data``, or not a whole number; ``match`` with a dict
            ``mode``.

    Examples:
        >>> inputs = keras.Input((64,), name="x")
        >>> hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(10, name="out")(hidden))
        >>> result = kerasnb.quantize(model, "int8", match="hidden")
        >>> result.report.status("hidden"), result.report.status("out")
        ('quantized', 'kept_input_changed')
        >>> result.report.row("hidden").reason
        'int8: kernel 16.0 KB -> 4.0 KB (+ scales 256 B)'
        >>> result.model.get_layer("hidden").kernel.dtype, model.get_layer("hidden").kernel.dtype
        ('int8', 'float32')
        >>> x = np.random.default_rng(0).random((4, 64)).astype("float32")
        >>> float(np.max(np.abs(result.model(x) - model(x)))) < 0.05
        True
    """
    if config is not None and isinstance(mode, dict):
        raise InvalidEdit("config= is one Keras quantization config for one mode; with a dict of modes give each "
                          f"layer its mode and leave config=None. Received: mode={mode!r}, config={config!r}")
    chosen, notes = _choose(model, mode, match)
    if keep_float is not None:
        chosen, kept_notes = _keep_float(model, chosen, data, keep_float, config)
        notes += kept_notes
    elif data is not None:
        notes.append("data= is used only with keep_float=; it was not needed here.")
    edits = _edits(model, chosen, config)
    result = apply(model, edits)
    report = _with_bytes(result.report, model, result.model, chosen)
    notes = _size_notes(model, result.model, report, chosen) + notes
    return dataclasses.replace(result, report=report, notes=tuple(notes) + tuple(result.notes))


@dataclasses.dataclass(frozen=True)
class _Chosen:
    path: str  # the layer's path (a sub-layer: "block/self_attention/query")
    layer: object
    owner: str | None  # the graph layer (a block) holding it, or None
    mode: str


def _check_mode(mode) -> str:
    if isinstance(mode, str) and mode.lower() in _CALIBRATED:
        raise QuantizationRefused(
            f"{mode!r} calibrates the whole model block by block (Keras's model.quantize({mode!r}, config=...) with "
            "a dataset and a layer structure); kerasnb.quantize does not run it. What works here: one of "
            f"{', '.join(map(repr, MODES))}; or make a float copy and call Keras's model.quantize({mode!r}, "
            f"config=...) on it. Received: mode={mode!r}")
    if not isinstance(mode, str) or mode not in MODES:
        raise QuantizationRefused(f"mode is one of {', '.join(map(repr, MODES))}, or a dict {{match: mode}} (e.g. "
                                  f"{{'*attention*': 'int8', '*ffw*': 'int4'}}). Received: mode={mode!r}")
    return mode


def _explicit(match):
    """The matcher of the parts of ``match`` that name layers (names, paths, layer objects), or None."""
    parts = match if isinstance(match, (list, tuple, set, frozenset)) else [match]
    named = [p for p in parts if isinstance(p, keras.layers.Layer)
             or (isinstance(p, str) and not _targets._GLOB_CHARACTERS.search(p))]
    return _targets.matcher(named) if named else None


def _choose(model, mode, match) -> tuple:
    """``([_Chosen], notes)``: the layers to quantize with their modes, and what was left alone."""
    if isinstance(mode, dict):
        if match is not None:
            raise InvalidEdit("Give the layers either in a dict mode ({match: mode}) or with match=, not both. "
                              f"Received: mode={mode!r}, match={match!r}")
        if not mode:
            raise QuantizationRefused("A dict of modes names at least one {match: mode}, e.g. {'*attention*': "
                                      "'int8'}. Received: mode={}")
        pairs = [(key, _check_mode(value)) for key, value in mode.items()]
    else:
        pairs = [(match, _check_mode(mode))]
    everything = [(p, layer, owner) for p, layer, owner in _targets.deep_layers(model)
                  if not _graph.is_input_layer(layer)]
    by_path: dict = {}
    left: dict = {}  # path -> why it was left alone
    for key, each_mode in pairs:
        if key is None:
            selected, explicit = everything, None
        else:
            m = _targets.matcher(key)
            selected = _targets.select(model, m, everything, kind="layer")
            explicit = _explicit(key)
        for path, layer, owner in _expand(selected, everything):
            why = why_not_quantizable(layer, each_mode)
            named = explicit is not None and explicit(path, layer)
            if why and named and not _holds_quantizable(path, layer, everything, each_mode):
                raise QuantizationRefused(
                    f"{path!r} cannot be quantized: {why}. What works: name a Dense, EinsumDense, Embedding or "
                    f"ReversibleEmbedding layer (or a block or nested model holding them), or a pattern, which "
                    f"leaves such layers as they are. Received: mode={each_mode!r} on {path!r} "
                    f"({type(layer).__name__})")
            if why:
                if _weights(layer) and not _graph.sublayers(layer)[1:] and not _graph.is_graph_model(layer):
                    left.setdefault(path, why)
                continue
            was = by_path.get(path)
            if was is not None and was.mode != each_mode:
                raise QuantizationRefused(
                    f"{path!r} is selected for {was.mode!r} and for {each_mode!r}; each layer gets one mode. What "
                    f"works: keys that select different layers. Received: mode={mode!r}")
            by_path[path] = _Chosen(path, layer, owner, each_mode)
    for path in by_path:
        left.pop(path, None)
    if not by_path:
        said = "; ".join(f"{p!r}: {w}" for p, w in list(left.items())[:5])
        raise QuantizationRefused(
            f"Nothing in model {model.name!r} can be quantized as asked" + (f" ({said})" if said else "")
            + f". Keras quantizes {_kinds_text()} layers. Received: mode={mode!r}, match={match!r}")
    notes = []
    if left:
        listed = "; ".join(f"{p!r}: {w}" for p, w in list(left.items())[:8])
        more = f" (and {len(left) - 8} more)" if len(left) > 8 else ""
        notes.append(f"{len(left)} layer(s) with weights left as they are: {listed}{more}.")
    return list(by_path.values()), notes


def _expand(selected, everything):
    """Each selected layer; a block or nested model that Keras cannot quantize itself stands for the
    layers inside it (in order, each once)."""
    seen = set()
    for path, layer, owner in selected:
        inside = []
        if _graph.is_graph_model(layer) or (owner is None and len(_graph.sublayers(layer)) > 1):
            inside = [c for c in everything if c[0].startswith(path + "/")]
        for item in [(path, layer, owner)] + inside:
            if item[0] not in seen:
                seen.add(item[0])
                yield item


def _holds_quantizable(path, layer, everything, mode) -> bool:
    return any(c[0].startswith(path + "/") and not why_not_quantizable(c[1], mode) for c in everything)


def _edits(model, chosen, config) -> list:
    """One Transform per quantized graph layer; one per block for the layers quantized inside it."""
    edits = [Transform(c.path, _quantized(c.mode, config)) for c in chosen if c.owner is None]
    inside: dict = {}
    for c in chosen:
        if c.owner is not None:
            inside.setdefault(c.owner, []).append(c)
    for owner, items in inside.items():
        # By position among the block's tracked sub-layers: the rebuilt block's twins have other names.
        subs = _graph.sublayers(_targets.resolve(model, owner).layer)
        where = {id(sub): i for i, sub in enumerate(subs)}
        modes = {where[id(c.layer)]: c.mode for c in items}
        edits.append(Transform(owner, _quantized_inside(modes, [c.path for c in items], config)))
    return edits


# ----------------------------------------------------------------------------- weight rules


def _quantize_layer(new, mode, config) -> None:
    """Let Keras quantize ``new``, whose trained values are its variables' initial values already.

    Outside the rebuild's deferral: quantize() reads each float kernel through its initial value (the
    original's tensor, not a copy) and makes its int8 / int4 variables for real, at once, so no
    quantized tensor waits in the deferral beside its variable (which would hold every quantized
    weight twice at the end of the rebuild). The float kernels it drops were never given memory."""
    floats = list(new.weights)
    with _graph.outside_deferral(), _graph.without_forced_collections():
        if config is None:  # Keras 3.13's quantize() takes no config
            new.quantize(mode)
        else:
            new.quantize(mode, config=config)
    kept = {id(v) for v in new.weights}
    _graph.forget_deferred([v for v in floats if id(v) not in kept])


def _give(pairs) -> None:
    """Each new variable's initial value: its twin's trained value (what quantize() reads next)."""
    for variable, value in pairs:
        _graph.set_initial_value(variable, value)


def _quantized(mode, config):
    def rule(old, new):
        """Carry every trained variable (paired by structure), then Keras's quantize() on the new layer."""
        _give(weights.carried_values(old, new))
        _quantize_layer(new, mode, config)
        # Every variable has its value: the kept ones (a bias) their initial value, the quantized ones their own.
        return Outcome(Status.QUANTIZED, _reason(mode, old, new))

    rule.changes_computation = True  # the layers after it see changed inputs
    rule.__name__ = f"quantize_{mode}"
    return rule


def _quantized_inside(modes: dict, paths: list, config):
    def rule(old, new):
        """Carry the block's variables, quantize its chosen sub-layers (by position), and keep their
        modes in the block's config (a DTypePolicyMap, as keras-hub's backbones do) so it loads again."""
        _give(weights.carried_values(old, new))
        twins = weights.paired_sublayers(old, new)
        policies = keras.dtype_policies.DTypePolicyMap(default_policy=new.dtype_policy)
        parts = []
        for i, mode in modes.items():
            old_sub, new_sub = twins[i]
            _quantize_layer(new_sub, mode, config)
            policies[new_sub.path] = new_sub.dtype_policy
            parts.append((mode, old_sub, new_sub))
        new.dtype_policy = policies
        used = sorted({m for m in modes.values()})
        before = sum(_bytes(o.weights) for _, o, _ in parts)
        after = sum(_bytes(n.weights) for _, _, n in parts)
        names = ", ".join(p.split("/", 1)[-1] for p in paths)
        reason = (f"{'/'.join(used)} on {len(parts)} layer(s) inside ({names}): {size_text(before)} -> {size_text(after)}")
        return Outcome(Status.QUANTIZED, reason)

    rule.changes_computation = True
    rule.__name__ = "quantize_inside"
    return rule


def _reason(mode, old, new) -> str:
    """``int8: kernel 4.0 MB -> 1.0 MB (+ scales 16 KB)``."""
    names = {_name(v) for v in old.weights}
    big = max(old.weights, key=lambda v: int(np.prod(v.shape)))  # the kernel (or the embeddings)
    after = next((v for v in new.weights if _name(v) == _name(big)), None)
    added = [v for v in new.weights if _name(v) not in names]
    extra = _bytes(added)
    what = "scales and histories" if mode == "float8" else "scales"
    text = f"{mode}: {_name(big)} {size_text(_bytes([big]))} -> {size_text(_bytes([after]) if after is not None else 0)}"
    text += f" (+ {what} {size_text(extra)})" if added else ""
    if mode == "float8":
        text += "; float8 keeps float32 kernels (a training scheme): the layer grows"
    return text


def _weights(layer) -> list:
    """A layer's variables; none for a raw keras.ops operation in a graph (Gemma's embedding scaling)."""
    return list(getattr(layer, "weights", None) or [])


def _name(variable) -> str:
    return variable.name.split("/")[-1]


def _bytes(variables) -> int:
    seen, total = set(), 0
    for v in variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        total += int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
    return total


def size_text(n: int) -> str:
    """``n`` bytes in words, as the reasons and notes give them: ``"4.0 MB"``, ``"256 B"``.

    Examples:
        >>> from kerasnb.quantization import size_text
        >>> size_text(4 * 2**20), size_text(256)
        ('4.0 MB', '256 B')
    """
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# ----------------------------------------------------------------------------- report and notes


def _with_bytes(report: WeightReport, original, new_model, chosen) -> WeightReport:
    """The report with every row's bytes before (in ``original``) and after (in ``new_model``)."""
    new_layers = dict(_graph.walk_layers(new_model))
    old_layers = dict(_graph.walk_layers(original))
    rows = []
    for row in report.rows:
        old = old_layers.get(row.source) if row.source else None
        new = new_layers.get(row.layer) if row.status != Status.REMOVED else None
        rows.append(dataclasses.replace(
            row, bytes_before=_bytes(_weights(old)) if old is not None else 0,
            bytes_after=_bytes(_weights(new)) if new is not None else 0))
    return WeightReport(rows, aliases=report.aliases)


def _size_notes(original, new_model, report, chosen) -> list:
    before, after = model_bytes(original), model_bytes(new_model)
    modes = sorted({c.mode for c in chosen})
    rows = [r for r in report.rows if r.status == Status.QUANTIZED]
    q_before, q_after = sum(r.bytes_before for r in rows), sum(r.bytes_after for r in rows)
    notes = [f"Quantized {len(chosen)} layer(s) ({'/'.join(modes)}) with Keras's quantize(): those rows' bytes "
             f"{size_text(q_before)} -> {size_text(q_after)}; the model's {size_text(before)} -> {size_text(after)} "
             f"({after / before:.0%} of before). The layers after them see slightly changed inputs: "
             "result.compare(x) shows the drift."]
    if "float8" in modes:
        notes.append("float8 is Keras's training scheme: it keeps the float32 kernels and adds scales and amax "
                     "histories, so the float8 layers grow instead of shrinking; int8 and int4 make them smaller.")
    return notes


# ----------------------------------------------------------------------------- keep_float and sensitivity


def _keep_float(model, chosen, data, keep_float, config) -> tuple:
    if isinstance(keep_float, bool) or not isinstance(keep_float, numbers.Integral) or keep_float < 0:
        raise InvalidEdit(f"keep_float is how many of the chosen layers stay float, a whole number >= 0, e.g. "
                          f"keep_float=2. Received: keep_float={keep_float!r}")
    if data is None:
        raise InvalidEdit("keep_float= keeps the layers whose quantization moves the outputs most per byte saved; "
                          "that is measured on examples: give data=x (what model(x) takes). Received: "
                          f"keep_float={keep_float!r}, data=None")
    if keep_float == 0:
        return chosen, []
    if keep_float >= len(chosen):
        raise InvalidEdit(f"keep_float={keep_float} would keep every one of the {len(chosen)} chosen layer(s) float, "
                          f"so nothing would be quantized. Give fewer. Received: keep_float={keep_float!r}")
    frame = _measure(model, chosen, data, None, config)
    kept = list(frame["layer"])[-keep_float:]  # last: the most drift per byte saved
    notes = [f"keep_float={keep_float}: kept float (the most drift per byte saved on data): "
             + ", ".join(f"{p!r}" for p in kept) + "."]
    return [c for c in chosen if c.path not in kept], notes


@surgery_errors_only
def quantization_sensitivity(model, data, mode="int8", match=None, metric=None):
    """How much each quantizable layer, quantized alone, moves the model's outputs on ``data``.

    One row per layer Keras can quantize in ``mode`` (those ``match`` selects): the model is
    copied with only that layer quantized (by :func:`kerasnb.quantize`, so ``model`` is never
    changed) and run on ``data``. Sorted by drift per byte saved, smallest first: the first rows
    are the cheapest to quantize; the last are what ``quantize(..., keep_float=k, data=...)``
    keeps float. One rebuild per layer: on a large model, narrow it with ``match``.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed.
        data: Example inputs: what ``model(data)`` takes (an array, or a dict for keras-hub).
        mode: ``"int8"`` (default), ``"int4"`` or ``"float8"``, or a dict ``{match: mode}``.
        match: Which layers, as every ``match=`` of kerasnb selects; None: every quantizable one.
        metric: Optional ``metric(model) -> number`` (e.g. accuracy on a held-out set), evaluated
            on the original and on each copy: columns ``metric`` and ``metric_change``.

    Returns:
        pandas.DataFrame: columns layer, type, mode, max_abs_drift (largest absolute output
        difference), rel_drift (that divided by the largest absolute output), bytes_before,
        bytes_after, bytes_saved, drift_per_mb_saved (rel_drift per MB saved), and metric /
        metric_change with ``metric=``; the original's metric is in ``frame.attrs["metric"]``.

    Raises:
        QuantizationRefused: an unknown mode, or nothing to quantize.
        LayerNotFound: a name in ``match`` names no layer.

    Examples:
        >>> inputs = keras.Input((16,), name="x")
        >>> hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))
        >>> x = np.random.default_rng(0).random((8, 16)).astype("float32")
        >>> frame = kerasnb.quantization_sensitivity(model, x, "int8")
        >>> sorted(frame["layer"]), list(frame["bytes_saved"])[0] > 0
        (['hidden', 'out'], True)
    """
    chosen, _ = _choose(model, mode, match)
    return _measure(model, chosen, data, metric, None)


def _outputs(model, data) -> list:
    out = model(data, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32"))) for t in keras.tree.flatten(out)]


def _measure(model, chosen, data, metric, config):
    import pandas as pd

    reference = _outputs(model, data)
    scale = max(float(np.max(np.abs(r))) for r in reference) or 1.0
    base_metric = float(metric(model)) if metric is not None else None
    rows = []
    for c in chosen:
        result = quantize(model, c.mode, match=[c.layer], config=config)
        got = _outputs(result.model, data)
        drift = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, got))
        row = result.report.row(c.owner or c.path)  # only this layer changed in its row
        before = _bytes(c.layer.weights)
        after = before + row.bytes_after - row.bytes_before
        saved = before - after
        row = {"layer": c.path, "type": type(c.layer).__name__, "mode": c.mode, "max_abs_drift": drift,
               "rel_drift": drift / scale, "bytes_before": before, "bytes_after": after, "bytes_saved": saved,
               "drift_per_mb_saved": (drift / scale) / (saved / 2**20) if saved > 0 else math.inf}
        if metric is not None:
            value = float(metric(result.model))
            row.update(metric=value, metric_change=value - base_metric)
        rows.append(row)
        del result
    frame = pd.DataFrame(rows)
    frame = frame.sort_values(["drift_per_mb_saved", "layer"], kind="stable").reset_index(drop=True)
    if metric is not None:
        frame.attrs["metric"] = base_metric
    return frame

