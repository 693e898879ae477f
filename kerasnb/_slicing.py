"""Which channels a prune removes, and how every layer that makes or reads them is sliced.

The planning half of pruning, below the rebuild: :func:`choose` turns a target and
``channels=`` / ``keep=`` into channel indices per coupled group (every check happens here,
before anything is built); :func:`plan` turns those into config changes (fewer units or
filters) and a slicing spec per layer; :func:`sliced_values` is the weight rule the rebuild
applies to each sliced layer: the surviving slices of its old variables, and the words for the
report. ``kerasnb.pruning`` (importance, the public ``prune``) builds on this; the core
(``kerasnb.surgery``) carries out ``Prune`` edits with it in the same single rebuild as any
other edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import keras
import numpy as np

from . import _channels, _graph, _targets
from .errors import CoupledChannels, InvalidEdit, UnprunableLayer, UnwidenableLayer


@dataclasses.dataclass(frozen=True)
class Wording:
    """How :func:`group_of` words a refusal for the operation asking: the channel analysis is
    shared by pruning and widening, each says what it cannot do in its own words."""

    verb: str  # "prune"
    gerund: str  # "pruning"
    participle: str  # "pruned"
    output_change: str  # what a model output would do: "narrow"
    error: type  # the SurgeryError subclass raised


PRUNING = Wording("prune", "pruning", "pruned", "narrow", UnprunableLayer)
WIDENING = Wording("widen", "widening", "widened", "widen", UnwidenableLayer)

def choose(model, target, channels, keep, by, coupled, analysis=None, *, allow_output_change=False, notes=None):
    """The analysis, ``{group root: channel indices to remove}`` and ``{group root: the target's name
    that reached it first}``; every check happens here. ``notes`` (a list) receives what the
    choice had to adjust (a count rounded to a grouped convolution's groups)."""
    analysis = analysis or _channels.analyse(model)
    targets = list(target) if isinstance(target, (list, tuple)) and not _targets.is_call_target(target) else [target]
    if not targets:
        raise InvalidEdit("prune() needs at least one target. Received: target=[]")
    if (channels is None) == (keep is None):
        raise InvalidEdit(
            "prune() takes either channels=[indices to remove] or keep=<fraction or count>, not both and not "
            f"neither. Received: channels={channels!r}, keep={keep!r}"
        )
    if channels is not None and len(targets) > 1:
        raise InvalidEdit(
            "Explicit channels= go with one target; to prune several layers at once use keep=. "
            f"Received: target={target!r}, channels={channels!r}"
        )
    removed: dict = {}  # root space -> indices removed
    named: dict = {}  # root space -> name of the target that chose it
    for t in targets:
        root, group = group_of(model, analysis, t, allow_output_change=allow_output_change)
        key = path_of(model, t)
        if group.coupled and not coupled:
            raise CoupledChannels(
                f"{key!r} is coupled with {_others(group, key)} (their outputs are joined, e.g. by Add), so "
                f"its channels can only be pruned in all of them together: {list(group.producers)}. Pass "
                f"coupled=True to prune the whole group. Received: target={t!r}, coupled=False"
            )
        if root in removed:
            continue  # two targets of one coupled group
        named[root] = key
        if key not in analysis.out_space and notes is not None:
            notes.append(f"{key!r} ({type(analysis.layers[key]).__name__}) makes no channels of its own: it passes "
                         f"on those of {list(group.producers)} one for one, so they were pruned there and "
                         f"{key!r} lost the same channels.")
        if channels is not None:
            removed[root] = _check_channels(channels, group, t)
        else:
            removed[root] = _weakest(analysis, group, keep, by, t, root, notes)
    removed = {r: idx for r, idx in removed.items() if idx.size}  # keep=1.0 removes nothing
    _check_groups(analysis, removed, channels)
    branch_drops(analysis, removed, named, channels)
    return analysis, removed, named


# ----------------------------------------------------------------------------- choosing channels


def _name(target) -> str:
    return target.name if isinstance(target, keras.layers.Layer) else str(target)


def path_of(model, target) -> str:
    """``"conv"`` or ``"backbone/conv3"``: how the analysis names the layer ``target`` finds."""
    if isinstance(target, str) and "/" not in target:
        return target
    try:
        return _targets.resolve(model, target, what="prune").path
    except Exception:
        return _name(target)


def _others(group, name) -> str:
    others = [p for p in group.producers if p != name]
    return ", ".join(repr(p) for p in others)


def group_of(model, analysis, target, allow_output_change=False, wording=PRUNING):
    """(root space, ChannelGroup) of a producer named by ``target``; clear errors otherwise, in the
    words of the operation asking (``wording``: :data:`PRUNING` or :data:`WIDENING`)."""
    verb, error = wording.verb, wording.error
    if isinstance(target, keras.layers.Layer):
        target = path_of(model, target)
    if not isinstance(target, str):
        raise error(
            f"{verb}() takes the name of a Dense / Conv / recurrent layer (or 'nested_model/layer' for one inside a "
            f"nested model). Received: target={target!r}"
        )
    found = _targets.resolve(model, target, what=verb)  # the one "no layer named ..." message
    key = found.path
    sid = analysis.out_space.get(key)
    if sid is None:
        sid = passed_on(analysis, key)
    if sid is None:
        layer = found.layer
        kind = type(layer).__name__
        if analysis.roles.get(key) == "channelwise":
            groups = analysis.groups()
            makers = [m for s in _channels.spaces_of(analysis.in_layout.get(key))
                      for m in getattr(groups.get(analysis.root(s)), "producers", ())]
            makers = list(dict.fromkeys(makers))
            that = f" ({', '.join(repr(m) for m in makers)})" if makers else ""
            hint = f"{kind} follows the channels of the layer before it{that}; {verb} that layer instead"
        elif type(layer) in _channels.DEPTHWISES or _channels.one_channel_per_group(layer):
            hint = (f"{kind} makes no channels of its own (it passes on those of its input, one per group), and "
                    f"the channels it reads cannot be {wording.participle}: {_upstream_reason(analysis, key, wording)}")
        elif key in analysis.problems:
            hint = f"{kind} {key!r} cannot be sliced: {analysis.problems[key]}"
        else:
            hint = (f"only layers that make channels can be {wording.participle} (Dense, Conv1D/2D/3D, their "
                    f"Transpose and Separable variants, SimpleRNN / GRU / LSTM, Embedding, TimeDistributed of those); "
                    f"{kind} is not one")
        raise error(f"Cannot {verb} {key!r}: {hint}. Received: target={target!r}")
    root = analysis.root(sid)
    group = analysis.groups()[root]
    where = ""
    if group.coupled:
        where = f" (coupled with {_others(group, key)} in the group {list(group.producers)})"
    if group.blocked:
        raise error(f"Cannot {verb} {key!r}{where}: {group.blocked}. Nothing was changed. Received: target={target!r}")
    if group.outputs and not allow_output_change:
        raise error(
            f"Cannot {verb} {key!r}{where}: {_outputs_reached(group, wording)}. Pass allow_output_change=True to let "
            f"that output {wording.output_change}. Nothing was changed. Received: target={target!r}"
        )
    return root, group


def _outputs_reached(group, wording) -> str:
    outs = ", ".join(repr(o) for o in group.outputs)
    return f"its channels reach the model output at {outs}, whose shape {wording.gerund} would change"


def _upstream_reason(analysis, key, wording=PRUNING) -> str:
    """Why the channels ``key`` reads cannot be pruned (widened): the reasons of the nearest producer
    groups upstream of it (following the graph back through layers that make no channels)."""
    node_layer = {n: name for name, nodes in analysis.nodes_of.items() for n in nodes}
    made_by = {t: (node, ins) for node, ins, outs in analysis.flow for t in outs}
    groups = analysis.groups()
    todo = [t for node, ins, _ in analysis.flow if node in analysis.nodes_of.get(key, ()) for t in ins]
    seen, reasons = set(), []
    while todo and len(reasons) < 2:  # breadth first: the nearest producers say it best
        t = todo.pop(0)
        if t in seen or t not in made_by:
            continue
        seen.add(t)
        node, ins = made_by[t]
        name = node_layer.get(node)
        sid = analysis.out_space.get(name)
        if sid is not None:
            group = groups.get(analysis.root(sid))
            reason = "" if group is None else "; ".join([group.blocked] * bool(group.blocked) + [
                f"its channels reach the model output at {o!r}, whose shape {wording.gerund} would change"
                for o in group.outputs])
            why = f"{name!r}: {reason}" if reason else ""
            if why and why not in reasons:
                reasons.append(why)
            continue
        todo.extend(ins)
    return "; ".join(reasons) or (f"they come from no layer that makes channels kerasnb can {wording.verb}")


def passed_on(analysis, key):
    """The channel space a channel-wise convolution passes on one for one (a DepthwiseConv, or a
    grouped conv with one channel per group, with one output per channel), when its input is exactly
    one producer group's channels: pruning its channels means pruning them where they are made."""
    layer = analysis.layers.get(key)
    if analysis.roles.get(key) != "channelwise" or layer is None:
        return None
    rule = _channels.rule_for(layer)
    one_for_one = rule.per_group == 1 or (
        type(layer) in _channels.DEPTHWISES and int(_graph.settings(layer).get("depth_multiplier", 1)) == 1)
    layout = analysis.in_layout.get(key)
    if not one_for_one or layout is None or len(layout) != 1 or layout[0][0] != 1 or len(layout[0][1]) != 1:
        return None
    sid, n, each = layout[0][1][0]
    if each != 1 or n != analysis.spaces[analysis.root(sid)].length:
        return None
    return sid


def _check_channels(channels, group, target) -> np.ndarray:
    n = group.channels
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        raise InvalidEdit(
            f"channels= is a list of channel indices to remove, e.g. channels=[0, 3]. Received: channels={channels!r}"
        )
    channels = list(channels)
    not_int = [c for c in channels if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer))]
    if not_int:
        raise InvalidEdit(
            f"channels= takes whole numbers (channel indices from 0 to {n - 1}, or -1 for the last); "
            f"{not_int[0]!r} is a {type(not_int[0]).__name__}. Received: channels={channels!r}"
        )
    idx = np.asarray(channels, dtype=int).reshape(-1)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise InvalidEdit(
            f"{_name(target)!r} has {n} channels (0 to {n - 1}), or -{n} to -1 counting from the end; cannot remove "
            f"{bad.tolist()}. Received: channels={list(channels)!r}"
        )
    idx = np.unique(np.where(idx < 0, idx + n, idx))  # Python style: -1 is the last channel
    if idx.size == 0:
        raise InvalidEdit(f"channels=[] removes nothing from {_name(target)!r}. Received: channels={list(channels)!r}")
    return idx


def _n_keep(n, keep, target) -> int:
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise InvalidEdit(f"keep= is a fraction in (0, 1] or a count of channels. Received: keep={keep!r}")
    if isinstance(keep, (float, np.floating)):
        if not 0 < keep <= 1:
            raise InvalidEdit(f"keep= as a fraction must be in (0, 1]. Received: keep={keep!r}")
        return max(1, int(round(n * float(keep))))
    if not 1 <= keep <= n:
        raise InvalidEdit(
            f"keep= as a count must be between 1 and {n} (the channels of {_name(target)!r}). Received: keep={keep!r}"
        )
    return int(keep)


def _simple_groups(analysis, root) -> list:
    """``(layer, groups)`` of the grouped convolutions that make or read exactly this group's channels."""
    out = []
    for name, layout, groups in analysis.grouped:
        if len(layout) == 1 and layout[0][0] == 1 and len(layout[0][1]) == 1:
            sid, _, each = layout[0][1][0]
            if each == 1 and analysis.root(sid) == root:
                out.append((name, groups))
    return out


def _weakest(analysis, group, keep, by, target, root=None, notes=None) -> np.ndarray:
    n = group.channels
    n_keep = _n_keep(n, keep, target)
    # by: "l1" / "l2", or a scorer (analysis, group) -> scores made by kerasnb.importance.
    scores = np.asarray(by(analysis, group) if callable(by) else kernel_norms(analysis, group, by), dtype=float)
    grouped = _simple_groups(analysis, root) if root is not None else []
    if not grouped:
        # Stable: among equal scores the lower index is kept.
        ranking = np.argsort(-scores, kind="stable")
        return np.sort(ranking[n_keep:])
    # A grouped convolution needs the same count kept in each of its groups: the weakest go per group.
    step = int(np.lcm.reduce([g for _, g in grouped]))
    rounded = min(n, max(step, int(round(n_keep / step)) * step))
    if rounded != n_keep and notes is not None:
        names = ", ".join(f"{name!r} (groups={g})" for name, g in grouped)
        notes.append(f"keep={keep!r} asked for {n_keep} of {n} channels of {_name(target)!r}; rounded to {rounded}, "
                     f"a multiple of the groups of {names}, the same number kept in every group.")
    size, per = n // step, rounded // step
    drop = []
    for g in range(step):
        block = np.arange(g * size, (g + 1) * size)
        ranking = block[np.argsort(-scores[block], kind="stable")]
        drop.extend(ranking[per:])
    return np.sort(np.asarray(drop, dtype=int))


def kernel_norms(analysis, group, by="l1") -> np.ndarray:
    """Per channel of ``group``: the L1 or L2 norm of its outgoing weights, summed over the producers
    (every variable slice that makes the channel: kernel columns, each gate of a recurrent layer)."""
    if by not in ("l1", "l2"):
        raise InvalidEdit(f"by= is 'l1' or 'l2'. Received: by={by!r}")
    n = group.channels
    scores = np.zeros(n)
    for name in group.producers:
        layer = analysis.layers[name]
        rule = _channels.rule_for(layer)
        for attr, cuts in rule.variables.items():
            variable = _channels.variable_at(layer, attr)
            outs = [c for c in cuts if c.role == "out"]
            if variable is None or len(outs) != 1 or len(variable.shape) < 2 or attr.endswith("recurrent_kernel"):
                continue  # the kernels: (input, output) weights; biases and recurrent rows are not counted
            cut = outs[0]
            w = np.moveaxis(_graph.read_only_values(variable), cut.axis, -1)
            w = w.reshape(-1, cut.tiles, n, cut.each).transpose(0, 1, 3, 2).reshape(-1, n)
            scores += np.abs(w).sum(axis=0) if by == "l1" else np.sqrt((w * w).sum(axis=0))
    return scores


def _check_groups(analysis, removed, channels) -> None:
    """A grouped convolution keeps the same number of channels in every group (at least one)."""
    if not removed:
        return
    root = analysis.root
    kept = _kept(analysis, removed)
    for name, layout, groups in analysis.grouped:
        if not _channels.touches(layout, set(kept), root):
            continue
        positions = _channels.kept_indices(layout, kept, root)
        size = _channels.width(layout) // groups
        counts = np.bincount(positions // size, minlength=groups)
        if len(set(counts.tolist())) != 1 or counts[0] == 0:
            raise InvalidEdit(
                f"{name!r} is a grouped convolution (groups={groups}, {size} channels per group): a prune must leave "
                f"the same number of its channels in every group, and at least one. This request leaves "
                f"{counts.tolist()}. What works: remove the same number of channels from each group of {size} "
                f"(keep= rounds to that by itself). Received: channels={channels!r}"
            )


def _kept(analysis, removed) -> dict:
    return {r: np.setdiff1d(np.arange(analysis.spaces[r].length), idx) for r, idx in removed.items()}


def branch_drops(analysis, removed: dict, named=None, channels=None):
    """Where every channel of a group goes: ``(dead node ids, {concat node id: dropped input ids},
    names of the layers that go)``. Removing all channels works only when they reach nothing but
    inputs of a Concatenate: that branch drops out, and what fed only it goes too."""
    root = analysis.root
    full = {r for r, idx in removed.items() if idx.size >= analysis.spaces[r].length}
    if not full:
        return set(), {}, []
    dropped: dict = {}
    for node_id, (_, record) in analysis.concats.items():
        gone = {tid for tid, layout in record
                if _channels.spaces_of(layout) and all(root(s) in full for s in _channels.spaces_of(layout))}
        if gone:
            dropped[node_id] = gone
    used, dead = set(analysis.model_outputs), set()
    for node_id, ins, outs in reversed(analysis.flow):
        if not any(t in used for t in outs):
            if node_id is not None:
                dead.add(node_id)
            continue
        skip = dropped.get(node_id, ())
        used.update(t for t in ins if t not in skip)
    problems = []
    for name in analysis.order:  # a layer still called that would read nothing at all
        reads = [layout for layout in analysis.reads.get(name, ()) if _channels.spaces_of(layout)]
        if any(all(root(s) in full for s in _channels.spaces_of(layout)) for layout in reads):
            if not all(n in dead for n in analysis.nodes_of.get(name, ())):
                problems.append(name)
    for r in full:
        for name in analysis.groups()[r].producers:
            if not all(n in dead for n in analysis.nodes_of.get(name, ())) and name not in problems:
                problems.append(name)
    kept = _kept(analysis, removed)
    for out_name, trace, _ in analysis.output_layouts:  # it may narrow (allow_output_change), not vanish
        if any(_channels.touches(layout, full, root) and _channels.kept_indices(layout, kept, root).size == 0
               for layout in trace.values()):
            problems.append(f"the model output {out_name!r}")
    for node_id, gone in dropped.items():
        name, record = analysis.concats[node_id]
        if node_id not in dead and len(gone) == len(record):
            problems.append(f"{name!r}, all of whose inputs would go")
    if problems:
        target = next((named[r] for r in full if named and r in named), None) or \
            analysis.groups()[next(iter(full))].producers[0]
        n = analysis.spaces[next(iter(full))].length
        raise InvalidEdit(
            f"Removing all {n} channels of {target!r} would leave nothing where they are still needed: "
            f"{', '.join(repr(p) if not p.startswith(('the ', chr(39))) else p for p in problems)}. Removing every "
            "channel works only for a branch whose channels reach nothing but an input of a Concatenate (the branch "
            f"is then dropped); otherwise keep at least one. Received: channels={channels!r}"
        )
    gone_layers = [name for name, nodes in analysis.nodes_of.items() if nodes and all(n in dead for n in nodes)]
    return dead, dropped, gone_layers


def plan(analysis, removed: dict):
    """``(config changes per layer, {layer: (kept input indices or None, kept output indices or None)})``."""
    root = analysis.root
    kept = _kept(analysis, removed)
    pruned_roots = set(kept)
    changes = {}  # layer path -> new units / filters / target_shape / wrapped config
    slices = {}
    for name in analysis.order:
        role = analysis.roles[name]
        layer = analysis.layers[name]
        if role == "reshape":
            sized = analysis.reshape_layout[name]
            if any(_channels.touches(layout, pruned_roots, root) for layout in sized.values()):
                target = list(_graph.settings(layer)["target_shape"])
                for axis, layout in sized.items():
                    target[axis - 1] = int(_channels.kept_indices(layout, kept, root).size)
                changes[name] = {"target_shape": tuple(target)}
            continue
        layout = analysis.in_layout.get(name)
        k_in = _channels.kept_indices(layout, kept, root) if _channels.touches(layout, pruned_roots, root) else None
        k_out = None
        rule = _channels.rule_for(layer)
        if role == "producer":
            r = root(analysis.out_space[name])
            if r in pruned_roots:
                k_out = kept[r]
        if k_in is not None or k_out is not None:
            slices[name] = (k_in, k_out)
            resized = rule.resize(_graph.settings(layer), None if k_out is None else int(k_out.size))
            if rule.per_group and k_in is not None:  # whole groups go: one per removed input channel
                resized = {"groups": int(k_in.size), "filters": int(k_in.size) * rule.per_group}
            if rule.count_key and k_in is not None:
                resized = {rule.count_key: int(k_in.size)}
            if resized:
                changes[name] = resized
    return changes, slices


def _indices(cut, variable, kept) -> np.ndarray:
    if cut.each == 1 and cut.tiles == 1:
        return np.asarray(kept)  # one position per channel (never written to)
    idx = (np.asarray(kept)[:, None] * cut.each + np.arange(cut.each)).reshape(-1)
    if cut.tiles > 1:
        per_tile = int(variable.shape[cut.axis]) // cut.tiles
        idx = np.concatenate([t * per_tile + idx for t in range(cut.tiles)])
    return idx


def kept_per_axis(layer, k_in, k_out):
    """``(attribute, variable, [(Cut, kept indices), ...])`` for every variable of a sliced layer."""
    rule = _channels.rule_for(layer)
    for attr, axes in rule.variables.items():
        variable = _channels.variable_at(layer, attr)
        if variable is None:
            continue
        cuts = []
        for cut in axes:
            kept = k_out if cut.role == "out" else k_in
            if kept is not None:
                cuts.append((cut, kept if cut.groups > 1 else _indices(cut, variable, kept)))
        yield attr, variable, cuts


def sliced_shapes(layer, k_in, k_out):
    """``(attribute, old shape, new shape)`` for every variable of a sliced layer."""
    for attr, variable, cuts in kept_per_axis(layer, k_in, k_out):
        shape = list(variable.shape)
        for cut, kept in cuts:
            shape[cut.axis] = int(kept.size) // cut.groups
        yield attr, tuple(variable.shape), tuple(shape)


def _grouped_take(value, k_in, groups, in_axis, out_axis=-1):
    """A grouped kernel ``[..., input in group, output]`` keeps, for each output, the kept inputs of its group."""
    per_in, n_out = value.shape[in_axis], value.shape[out_axis]
    per_out = n_out // groups
    parts = []
    for g in range(groups):
        local = k_in[(k_in >= g * per_in) & (k_in < (g + 1) * per_in)] - g * per_in
        outputs = np.take(value, np.arange(g * per_out, (g + 1) * per_out), axis=out_axis)
        parts.append(np.take(outputs, local, axis=in_axis))
    return np.concatenate(parts, axis=out_axis)


def _take_both(value, cuts):
    """``np.take`` on two axes in one gather (the kept inputs and outputs of a kernel): one copy of
    the kept values instead of an intermediate array of every input."""
    (cut_a, kept_a), (cut_b, kept_b) = sorted(cuts, key=lambda c: c[0].axis % value.ndim)
    a, b = cut_a.axis % value.ndim, cut_b.axis % value.ndim
    if b != a + 1:
        return np.take(np.take(value, kept_a, axis=a), kept_b, axis=b)
    index = (slice(None),) * a + (np.asarray(kept_a)[:, None], np.asarray(kept_b)[None, :])
    return value[index]


def params_after_removal(analysis, removed: dict, before: int) -> int:
    """The model's parameter count once ``removed`` channels are gone, from shapes alone: every
    sliced layer at its new size, layers that fed only a dropped Concatenate branch gone."""
    _, _, gone = branch_drops(analysis, removed)
    gone_layers = {id(analysis.layers[n]): analysis.layers[n] for n in gone if n in analysis.layers}
    after = before - sum(_graph.count_params(layer) for layer in gone_layers.values())
    for name, (k_in, k_out) in plan(analysis, removed)[1].items():
        layer = analysis.layers[name]
        if id(layer) in gone_layers:
            continue
        after -= _graph.count_params(layer)
        after += sum(int(np.prod(shape)) for _, _, shape in sliced_shapes(layer, k_in, k_out))
    return int(after)


def sliced_values(old, k_in, k_out) -> tuple[dict, str]:
    """The weight rule of a sliced layer: ``({attribute path: surviving values}, reason)``.

    Sliced in numpy: for the many small gathers of a pruned network it is about three times
    faster than the backend's eager ``take`` (measured on TensorFlow).
    """
    values, parts = {}, []
    for attr, old_var, cuts in kept_per_axis(old, k_in, k_out):
        value = _graph.read_only_values(old_var)  # read once per operation (the scoring read it too)
        if len(cuts) == 2 and cuts[0][0].groups == cuts[1][0].groups == 1:
            value = _take_both(value, cuts)
        else:
            for cut, kept in cuts:  # a grouped input cut comes first, while every output is still there
                if cut.groups > 1:
                    value = _grouped_take(value, kept, cut.groups, cut.axis)
                else:
                    value = np.take(value, kept, axis=cut.axis)
        values[attr] = value if cuts else np.array(value)  # a copy: never the user's buffer
        if tuple(old_var.shape) != tuple(value.shape):
            parts.append(f"{attr.split('.')[-1] if attr.count('.') < 2 else attr} {tuple(old_var.shape)} -> "
                         f"{tuple(value.shape)}")
    reason = ", ".join(parts)
    if type(old) is keras.layers.LayerNormalization:
        reason += "; it now normalises over fewer channels, so its output changes: fine-tune"
    return values, reason


def describe(analysis, removed: dict) -> str:
    """The result's note: how many channels of which producers went, and what that did elsewhere."""
    groups = analysis.groups()
    root = analysis.root
    n_removed = sum(int(v.size) for v in removed.values())
    described = "; ".join(
        f"{len(removed[r])} of {groups[r].channels} channels of {', '.join(groups[r].producers)}" for r in removed
    )
    text = (f"Pruned {n_removed} channel(s): {described}. Layers after them keep their weights but see "
            "changed inputs (kept_input_changed); fine-tune unless the removed channels were zero.")
    kept = _kept(analysis, removed)
    for name, trace, shape in analysis.output_layouts:
        touched = {axis: layout for axis, layout in trace.items() if _channels.touches(layout, set(kept), root)}
        if touched:
            new = list(shape)
            for axis, layout in touched.items():
                new[axis] = int(_channels.kept_indices(layout, kept, root).size)
            text += (f" The model output {name!r} narrows from {tuple(shape[1:])} to {tuple(new[1:])} "
                     "(allow_output_change=True).")
    _, dropped, gone = branch_drops(analysis, removed)
    for node_id in dropped:
        name, _ = analysis.concats[node_id]
        text += f" A whole branch drops out of {name!r}."
    if gone:
        text += f" Removed (they fed only that branch): {', '.join(gone)}."
    for name, layout, g in analysis.grouped:
        if _channels.touches(layout, set(kept), root):
            text += (f" {name!r} is a grouped convolution (groups={g}): every group keeps "
                     f"{int(_channels.kept_indices(layout, kept, root).size) // g} channels.")
    return text
