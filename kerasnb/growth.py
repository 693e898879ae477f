"""Grow a trained model without changing what it computes.

``widen(model, target, units=N)`` (``filters=N`` for a convolution) is Net2WiderNet (Chen,
Goodfellow and Shlens, 2015), the mirror image of channel pruning and built on the same channel
analysis (:mod:`kerasnb._channels`):

1. the target's coupled group (producers joined by Add / Multiply ..., the BatchNormalization and
   depthwise layers that follow its channels, Concatenate offsets, Flatten after a conv) grows
   from ``C`` to ``N`` channels; the new channels are copies of existing ones, drawn at random
   (``numpy.random.default_rng(seed)``); one index list ``range(C) + drawn`` serves the whole group;
2. every producer of the group gets the copied output columns (kernel and bias), every per-channel
   layer copies its values per channel, and every layer reading the channels gathers its incoming
   weights with the same list and divides those of a copied channel by its number of copies
   (original included), so the sum it computes is unchanged;
3. it is carried out as :class:`kerasnb.Transform` edits (a config change and this weight rule
   per layer) in one rebuild; the layers it changes are reported ``adapted``.

Where the result could not compute what the model did (LayerNormalization over the channels, a
softmax across them, a grouped convolution, a sum over the channel axis, a model output without
``allow_output_change=True``), it refuses before anything is built.
"""

from __future__ import annotations

import dataclasses
import numbers

import keras
import numpy as np

from . import _channels, _graph, _slicing
from .edits import Configure, Transform
from .errors import InvalidEdit, LayerNotFound, UnwidenableLayer, surgery_errors_only
from .report import Status
from .surgery import SurgeryResult, apply
from .weights import Outcome

__all__ = ["widen", "widen_refusal"]

L = keras.layers

# The layers whose weights widen exactly: a gather of per-channel values, or a sum over input
# channels whose copied terms are divided among the copies. (A rule a user registered says which
# variables follow channels, not that the layer's output is a sum over them.)
_EXACT = (L.Dense, L.Embedding, L.BatchNormalization, L.TimeDistributed, L.Bidirectional) + _channels.CONVS + \
    _channels.CONV_TRANSPOSES + _channels.SEPARABLES + _channels.DEPTHWISES + _channels.RECURRENT
_LAYER_SCALE = _graph.keras_class("applications.convnext", "LayerScale")
if _LAYER_SCALE is not None:
    _EXACT = _EXACT + (_LAYER_SCALE,)


@surgery_errors_only
def widen(model, target, units=None, *, filters=None, noise=0.0, seed=None,
          allow_output_change=False) -> SurgeryResult:
    """Give ``target`` (and every layer its channels are tied to) more units or filters, computing the same.

    The new units are copies of existing ones chosen at random; each layer reading them divides
    a copied unit's incoming weights among its copies (Net2WiderNet). With ``noise=0`` the new
    model's outputs equal the original's up to float rounding (1e-5 in float32). Channels coupled
    by Add / Multiply ... widen in every producer of the group; BatchNormalization and depthwise
    convolutions copy their per-channel values; a Concatenate or Flatten after them is followed.

    Args:
        model: A built functional or Sequential model; it is not changed.
        target: The layer that makes the channels: ``"name"`` (or the layer object), or
            ``"outer/inner"`` inside a nested model. A DepthwiseConv names the channels it
            reads (they widen where they are made). Or a dict ``{layer: new width}`` to widen
            several groups in one rebuild (then no ``units`` / ``filters``).
        units: The new width of a Dense, recurrent or Embedding layer (larger than today's).
        filters: The new width of a convolution (larger than today's).
        noise: 0 (default) keeps the function exactly. Above 0, Gaussian noise of that size
            (times each kernel's standard deviation) is added to the copies' incoming weights to
            break their symmetry before training; the outputs then differ and the notes say so.
        seed: Seed of ``numpy.random.default_rng`` for which units are copied (and the noise).
        allow_output_change: False (default) refuses channels that reach a model output; True
            lets that output widen (its new positions repeat existing ones; the notes say so).

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the widened layers, the per-channel layers and
        the layers reading them ``adapted``), ``.notes`` and ``.edits`` (the ``Transform`` edits
        that did it).

    Raises:
        LayerNotFound: the target names no layer.
        InvalidEdit: no width, both ``units`` and ``filters``, the wrong one for the layer, or a
            width not larger than today's; ``noise`` negative.
        UnwidenableLayer: the channels reach a layer the widening could not keep exact
            (LayerNormalization over them, a mixing activation, an attention layer, a grouped
            convolution, a sum over them ...), or a model output without
            ``allow_output_change=True``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.widen(model, "hidden", units=6, seed=0)
        >>> result.model.get_layer("hidden").units, result.report.status("hidden")
        (6, 'adapted')
        >>> result.report.row("hidden").reason
        'units 4 -> 6 (2 copies of existing units)'
        >>> result.report.row("out").reason
        'incoming weights of 2 copied units divided among copies'
    """
    with _graph.memo():
        analysis = _channels.analyse(model)
        noise = _check_noise(noise)
        if isinstance(target, dict):
            if units is not None or filters is not None:
                raise InvalidEdit("widen(model, {layer: new width, ...}) takes the widths from the dict: give no "
                                  f"units= or filters= with it. Received: units={units!r}, filters={filters!r}")
            if not target:
                raise InvalidEdit("widen() needs at least one layer. Received: target={}")
            asked = list(target.items())
        else:
            asked = [(target, None)]
        rng = np.random.default_rng(seed)
        grown, notes = {}, []
        for one, width in asked:
            root, group, key = _group_of(model, analysis, one, allow_output_change)
            size_key, word = _width_words(analysis, group, key)
            n_old = group.channels
            if width is None:
                n_new = _new_width(key, analysis.layers.get(key), size_key, units, filters, n_old, one)
            else:
                n_new = _new_width(key, analysis.layers.get(key), size_key, *(
                    (None, width) if size_key == "filters" else (width, None)), n_old, one)
            if root in grown:
                if len(grown[root].index) != n_new:
                    raise InvalidEdit(
                        f"{key!r} is coupled with {list(group.producers)} (their channels are joined), so they widen "
                        f"together to one width; this asks for {len(grown[root].index)} and {n_new}. Received: "
                        f"target={target!r}")
                continue
            _check_exact(model, analysis, root, key, one)
            index = np.concatenate([np.arange(n_old), np.sort(rng.integers(0, n_old, n_new - n_old))]).astype(int)
            grown[root] = _Group(index, n_old, word)
            notes.append(_note(group, n_old, n_new, word, noise, seed))
        edits = _edits(analysis, grown, noise, rng)
        result = apply(model, edits)
        for out_name, trace, shape in analysis.output_layouts:
            widened = {axis: layout for axis, layout in trace.items()
                       if _channels.touches(layout, set(grown), analysis.root)}
            if widened:
                new_shape = list(shape)
                for axis, layout in widened.items():
                    new_shape[axis] = int(_positions(layout, analysis.root, grown)[0].size)
                notes.append(f"The model output {out_name!r} widens from {tuple(shape[1:])} to {tuple(new_shape[1:])} "
                             "(allow_output_change=True): each new position repeats an existing one, placed after "
                             "the widened group's originals, so code reading it by position must allow for them.")
        return dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))


def widen_refusal(model, target, *, allow_output_change=False) -> str:
    """Why :func:`widen` would refuse ``target`` whatever the width, or ``""`` when it can widen it.

    One channel analysis and no model built: what a panel asks before offering "Widen...".

    Args:
        model: A built functional or Sequential model; it is only read.
        target: The layer, as :func:`widen` takes it.
        allow_output_change: As for :func:`widen`: whether channels may reach a model output.

    Returns:
        str: The refusal's message (the layer in the way and why), or ``""``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> normalised = keras.layers.LayerNormalization(name="ln")(hidden)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(normalised))
        >>> from kerasnb.growth import widen_refusal
        >>> widen_refusal(model, "hidden")
        "Cannot widen 'hidden': 'ln' (LayerNormalization) normalises over the widened channels: ..."
        >>> widen_refusal(model, "out", allow_output_change=True)
        ''
    """
    with _graph.memo():
        analysis = _channels.analyse(model)
        try:
            root, _, key = _group_of(model, analysis, target, allow_output_change)
            _check_exact(model, analysis, root, key, target)
        except (UnwidenableLayer, LayerNotFound, InvalidEdit) as error:
            return str(error)
    return ""


# ----------------------------------------------------------------------------- checks


def _group_of(model, analysis, target, allow_output_change):
    """(root space, ChannelGroup, the target's path): the channel analysis's checks, in widen's words."""
    if isinstance(target, (list, tuple)):
        raise InvalidEdit("widen() takes one layer (its whole coupled group widens with it), or a dict "
                          "{layer: new width} to widen several in one rebuild, e.g. widen(model, {'a': 12, 'b': 24}). "
                          f"Received: target={target!r}")
    root, group = _slicing.group_of(model, analysis, target, allow_output_change=allow_output_change,
                                    wording=_slicing.WIDENING)
    return root, group, _slicing.path_of(model, target)


def _width_words(analysis, group, key):
    """(the config key of the width, the word for its channels) of the group's producers."""
    maker = key if key in analysis.out_space else group.producers[0]
    rule = _channels.rule_for(analysis.layers[maker])
    size_key = rule.size_key or "units"
    return size_key, ("filters" if size_key == "filters" else "units")


def _new_width(key, layer, size_key, units, filters, n_old, target) -> int:
    kind = type(layer).__name__ if layer is not None else "layer"
    if units is not None and filters is not None:
        raise InvalidEdit(f"widen() takes units= (Dense, recurrent, Embedding) or filters= (convolutions), not both. "
                          f"Received: units={units!r}, filters={filters!r}")
    if units is None and filters is None:
        raise InvalidEdit(f"widen() needs the new width of {key!r}: "
                          f"{'filters' if size_key == 'filters' else 'units'}=N with N larger than {n_old}. "
                          f"Received: units=None, filters=None")
    given_key, given = ("filters", filters) if filters is not None else ("units", units)
    wanted = "filters" if size_key == "filters" else "units"
    if given_key != wanted:
        raise InvalidEdit(f"{key!r} ({kind}) has {n_old} {wanted}: give its new width as {wanted}={given!r}, not "
                          f"{given_key}=. Received: {given_key}={given!r}")
    if isinstance(given, bool) or not isinstance(given, numbers.Integral):
        raise InvalidEdit(f"{given_key}= is a whole number larger than {n_old} (the {wanted} of {key!r} now). "
                          f"Received: {given_key}={given!r}")
    if int(given) <= n_old:
        raise InvalidEdit(f"widen() makes {key!r} wider: {given_key}= must be larger than its {n_old} {wanted} now "
                          f"(to make it narrower use kerasnb.prune). Received: {given_key}={given!r}")
    return int(given)


def _check_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not np.isfinite(noise) or noise < 0:
        raise InvalidEdit(f"noise= is a number >= 0 (0 keeps the function exactly). Received: noise={noise!r}")
    return float(noise)


def _check_exact(model, analysis, root, key, target) -> None:
    """Refuse what the copies would not keep exact: before anything is built."""
    roots = {root}
    for name in analysis.order:
        if analysis.roles[name] == "reshape":
            continue
        layer = analysis.layers[name]
        makes = name in analysis.out_space and analysis.root(analysis.out_space[name]) == root
        reads = any(_channels.touches(layout, roots, analysis.root) for layout in analysis.reads.get(name, ()))
        if not (makes or reads):
            continue
        kind = type(layer).__name__
        why = ""
        if type(layer) is L.LayerNormalization:
            why = (f"{name!r} (LayerNormalization) normalises over the widened channels: its mean and variance would "
                   "count the copies, so its output would change")
        elif type(layer) not in _EXACT:
            why = (f"{name!r} ({kind}) follows the channels by a rule of its own, which says which weights follow "
                   "them but not that its output stays the same with copied channels")
        elif int(_graph.settings(layer).get("groups", 1) or 1) > 1 and not _channels.one_channel_per_group(layer):
            why = (f"{name!r} ({kind}) is a grouped convolution (groups={_graph.settings(layer)['groups']}): copies "
                   "would land in other groups than their originals")
        if why:
            raise UnwidenableLayer(f"Cannot widen {key!r}: {why}. What would work: widen a layer whose channels do "
                                   "not reach it, or replace it first. Nothing was changed. "
                                   f"Received: target={target!r}")
    summed = _sums_reached(model, analysis, root)
    if summed:
        raise UnwidenableLayer(
            f"Cannot widen {key!r}: its channels reach {summed!r} (a keras.ops sum), and kerasnb cannot tell whether "
            "it sums over them, which would count every copy. Nothing was changed. Received: "
            f"target={target!r}")


def _sum_nodes(model, prefix="") -> dict:
    out = {}
    for view in _graph.walk(model):
        op = view.operation
        if _graph.is_graph_model(op):
            out.update(_sum_nodes(op, prefix + op.name + "/"))
        elif _graph.keras_op_name(op) == "Sum":
            out[id(view.node)] = prefix + getattr(op, "name", "sum")
    return out


def _sums_reached(model, analysis, root) -> str:
    """The name of a keras.ops sum downstream of the group's producers, or ''."""
    sums = _sum_nodes(model)
    if not sums:
        return ""
    producers = analysis.groups()[root].producers
    start = {n for p in producers for n in analysis.nodes_of.get(p, ())}
    reached: set = set()
    for node_id, ins, outs in analysis.flow:
        if node_id in start or any(t in reached for t in ins):
            if node_id in sums:
                return sums[node_id]
            reached.update(outs)
    return ""


# ----------------------------------------------------------------------------- the plan


def _positions(layout, root_of, widened: dict):
    """Positions along an axis after widening (the old position each new one copies), and the
    divisor of each: the copies of its channel (1 outside the widened groups). ``widened`` maps a
    group's root to its :class:`_Group`."""
    parts, factors, offset = [], [], 0
    for rep, segs in layout:
        block, fblock, w = [], [], 0
        for sid, n, each in segs:
            grown = widened.get(root_of(sid))
            k, f = (grown.index, grown.divisors) if grown is not None else (np.arange(n), np.ones(n))
            block.append(w + (k[:, None] * each + np.arange(each)).reshape(-1))
            fblock.append(np.repeat(f, each))
            w += n * each
        block = np.concatenate(block)
        fblock = np.concatenate(fblock)
        for r in range(rep):
            parts.append(offset + r * w + block)
            factors.append(fblock)
        offset += rep * w
    return np.concatenate(parts).astype(int), np.concatenate(factors).astype(float)


@dataclasses.dataclass(frozen=True, eq=False)
class _Group:
    """One widened group: ``index`` the old channel each new one copies (``range(C)`` first)."""

    index: np.ndarray
    n_old: int
    word: str  # "units" or "filters"

    @property
    def copies(self) -> int:
        return len(self.index) - self.n_old

    @property
    def divisors(self) -> np.ndarray:
        """Per new channel: how many channels share its original's weights (original included)."""
        return np.bincount(self.index, minlength=self.n_old)[self.index].astype(float)


def _edits(analysis, widened: dict, noise, rng) -> list:
    """One Transform per layer whose variables widen (a Configure per Reshape that names the width).
    ``widened``: ``{group root: _Group}``."""
    roots = set(widened)
    edits = []
    for name in analysis.order:
        role, layer = analysis.roles[name], analysis.layers[name]
        if role == "reshape":
            sized = analysis.reshape_layout[name]
            if any(_channels.touches(layout, roots, analysis.root) for layout in sized.values()):
                shape = list(_graph.settings(layer)["target_shape"])
                for axis, layout in sized.items():
                    shape[axis - 1] = int(_positions(layout, analysis.root, widened)[0].size)
                edits.append(Configure(name, {"target_shape": tuple(shape)}))
            continue
        layout = analysis.in_layout.get(name)
        k_in = in_div = out = reads = None
        if _channels.touches(layout, roots, analysis.root):
            k_in, in_div = _positions(layout, analysis.root, widened)
            reads = [widened[r] for r in dict.fromkeys(analysis.root(s) for s in _channels.spaces_of(layout))
                     if r in widened]
        if role == "producer":
            out = widened.get(analysis.root(analysis.out_space[name]))
        if k_in is None and out is None:
            continue
        rule = _channels.rule_for(layer)
        changes = rule.resize(_graph.settings(layer), None if out is None else len(out.index))
        if rule.per_group and k_in is not None:
            changes = {"groups": int(k_in.size), "filters": int(k_in.size) * rule.per_group}
        if rule.count_key and k_in is not None:
            changes = {rule.count_key: int(k_in.size)}
        layer_noise = noise if out is not None else 0.0
        seed = int(rng.integers(0, 2 ** 31)) if layer_noise else None
        weight_rule = _WidenRule(role, k_in, in_div, tuple(reads or ()), out, rule.size_key, layer_noise, seed)
        edits.append(Transform(name, weight_rule, changes))
    return edits


def _along(values, cut):
    """Per-channel values laid out as the variable's axis holds them (``each``, ``tiles``)."""
    return np.tile(np.repeat(values, cut.each), cut.tiles)


def _divide(value, factors, axis):
    """Divide ``value`` (an array of ours, never a variable's buffer) in place along ``axis``."""
    shape = [1] * value.ndim
    shape[axis] = -1
    value /= factors.reshape(shape).astype(value.dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class _WidenRule:
    """The weight rule of one widened layer (see the module docstring)."""

    role: str  # "producer" (makes or sums over channels) | "channelwise"
    k_in: np.ndarray | None  # old input positions each new one copies
    in_divisors: np.ndarray | None  # per new input position: copies of its channel
    reads: tuple  # the widened _Groups among its input channels
    out: "_Group | None"  # the widened group of its output channels
    size_key: str | None
    noise: float
    seed: int | None

    @property
    def k_out(self):
        return None if self.out is None else self.out.index

    def __repr__(self) -> str:
        out = self.out
        parts = [f"{self.size_key} {out.n_old} -> {len(out.index)}"] if out is not None else []
        if self.k_in is not None:
            parts.append(f"reads {sum(g.copies for g in self.reads)} copied {self.reads[0].word}")
        return f"widen({', '.join(parts)}{f', noise={self.noise:g}' if self.noise else ''})"

    def __call__(self, old, new) -> Outcome:
        values = {}
        noise_rng = np.random.default_rng(self.seed) if self.noise else None
        for attr, variable, cuts in _slicing.kept_per_axis(old, self.k_in, self.k_out):
            value = np.asarray(_graph.read_only_values(variable))
            for cut, idx in cuts:  # one np.take per axis: 2-3x faster than one fancy-index gather of both
                value = np.take(value, idx, axis=cut.axis)
            # From here ``value`` is a new array when there were cuts (a gather always copies), so
            # it is divided in place; without cuts it is the variable's buffer and copied below.
            recurrent = attr.endswith("recurrent_kernel")
            for cut, _ in cuts:
                if cut.role == "in" and self.role == "producer" and not attr.endswith("depthwise_kernel"):
                    _divide(value, _along(self.in_divisors, cut), cut.axis)
                elif cut.role == "out" and recurrent and cut.axis % value.ndim == 0:
                    _divide(value, _along(self.out.divisors, cut), 0)  # the state read back
            if noise_rng is not None and value.ndim >= 2:
                for cut, _ in cuts:
                    if cut.role == "out" and not (recurrent and cut.axis % value.ndim == 0):
                        copied = _along(np.arange(len(self.k_out)) >= self.out.n_old, cut)
                        shape = [1] * value.ndim
                        shape[cut.axis] = -1
                        scale = self.noise * float(np.std(_graph.read_only_values(variable)) or 1.0)
                        value = value + scale * noise_rng.standard_normal(value.shape) * copied.reshape(shape)
            values[attr] = value if cuts else np.array(value)  # never the user's buffer
        pairs, covered = [], set()
        for attr, value in values.items():
            target = _channels.variable_at(new, attr)
            if tuple(target.shape) != tuple(value.shape):  # a bug in the plan, never the user's fault
                raise AssertionError(f"{old.name}.{attr}: widened to {value.shape}, the new layer has {target.shape}")
            covered.add(id(target))
            dtype = keras.backend.standardize_dtype(target.dtype)
            pairs.append((target, value if str(value.dtype) == dtype else keras.ops.cast(value, dtype)))
        missed = [v.path for v in new.weights if id(v) not in covered]
        if missed:
            raise AssertionError(f"{old.name}: no widening rule for {missed}")
        return Outcome(Status.ADAPTED, self._reason(values), pairs)

    def _reason(self, values) -> str:
        parts = []
        out = self.out
        if out is not None:
            text = f"{self.size_key} {out.n_old} -> {len(out.index)} ({out.copies} copies of existing {out.word})"
            if self.noise:
                text += f", noise {self.noise:g} added to the copies"
            parts.append(text)
        if self.k_in is not None:
            copies, word = sum(g.copies for g in self.reads), self.reads[0].word
            if self.role == "producer":
                parts.append(f"incoming weights of {copies} copied {word} divided among copies")
            else:
                names = ", ".join(attr.split(".")[-1] for attr in values)
                n_old = sum(g.n_old for g in self.reads)
                parts.append(f"{names} copied for {copies} copied {word} ({n_old} -> {n_old + copies} channels)")
        return "; ".join(parts)


def _note(group, n_old, n_new, word, noise, seed) -> str:
    text = (f"Widened {', '.join(group.producers)} from {n_old} to {n_new} {word}: {n_new - n_old} copies of "
            f"existing {word} (chosen with seed={seed!r}); every layer reading them divides a copied channel's "
            "incoming weights among its copies.")
    if noise:
        text += (f" noise={noise:g} was added to the copies' weights to break their symmetry, so the outputs now "
                 "differ from the original's: fine-tune.")
    else:
        text += (" The model computes what it did up to float rounding (the layers after the readers see inputs "
                 "equal but for rounding, and are marked kept_input_changed for that).")
    return text
