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

from collections.abc import Iterable

import keras
import numpy as np

from . import _channels, _graph, _targets
from .errors import CoupledChannels, InvalidEdit, UnprunableLayer

def choose(model, target, channels, keep, by, coupled, analysis=None):
    """The analysis, ``{group root: channel indices to remove}`` and ``{group root: the target's name
    that reached it first}``; every check happens here."""
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
        root, group = group_of(model, analysis, t)
        if group.coupled and not coupled:
            raise CoupledChannels(
                f"{_name(t)!r} is coupled with {_others(group, _name(t))} (their outputs are joined, e.g. by Add), so "
                f"its channels can only be pruned in all of them together: {list(group.producers)}. Pass "
                f"coupled=True to prune the whole group. Received: target={t!r}, coupled=False"
            )
        if root in removed:
            continue  # two targets of one coupled group
        named[root] = _name(t)
        if channels is not None:
            removed[root] = _check_channels(channels, group, t)
        else:
            removed[root] = _weakest(analysis, group, keep, by, t)
    return analysis, {r: idx for r, idx in removed.items() if idx.size}, named  # keep=1.0 removes nothing


# ----------------------------------------------------------------------------- choosing channels


def _name(target) -> str:
    return target.name if isinstance(target, keras.layers.Layer) else str(target)


def _others(group, name) -> str:
    others = [p for p in group.producers if p != name]
    return ", ".join(repr(p) for p in others)


def group_of(model, analysis, target):
    """(root space, ChannelGroup) of a producer named by ``target``; clear errors otherwise."""
    if isinstance(target, keras.layers.Layer):
        target = target.name
    if not isinstance(target, str) or "/" in target:
        raise UnprunableLayer(
            "prune() takes the name of a top-level Dense / Conv layer (layers inside nested models are not "
            f"pruned). Received: target={target!r}"
        )
    _targets.resolve(model, target, what="prune")  # the one "no layer named ..." message
    sid = analysis.out_space.get(target)
    if sid is None:
        layer = next(l for l in _graph.layers_in_order(model) if l.name == target)
        kind = type(layer).__name__
        if analysis.roles.get(target) == "channelwise":
            hint = f"{kind} follows the channels of the layer before it; prune that layer instead"
        elif target in analysis.problems:
            hint = f"{kind} {target!r} cannot be sliced: {analysis.problems[target]}"
        else:
            hint = (f"only layers that make channels can be pruned (Dense, Conv1D/2D/3D, their Transpose and "
                    f"Separable variants); {kind} is not one")
        raise UnprunableLayer(f"Cannot prune {target!r}: {hint}. Received: target={target!r}")
    root = analysis.root(sid)
    group = analysis.groups()[root]
    if group.reason:
        where = ""
        if group.coupled:
            where = f" (coupled with {_others(group, target)} in the group {list(group.producers)})"
        raise UnprunableLayer(
            f"Cannot prune {target!r}{where}: {group.reason}. Nothing was changed. Received: target={target!r}"
        )
    return root, group


def _check_channels(channels, group, target) -> np.ndarray:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        raise InvalidEdit(
            f"channels= is a list of channel indices to remove, e.g. channels=[0, 3]. Received: channels={channels!r}"
        )
    channels = list(channels)
    not_int = [c for c in channels if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer))]
    if not_int:
        raise InvalidEdit(
            f"channels= takes whole numbers (channel indices from 0 to {group.channels - 1}); "
            f"{not_int[0]!r} is a {type(not_int[0]).__name__}. Received: channels={channels!r}"
        )
    idx = np.asarray(channels, dtype=int).reshape(-1)
    bad = idx[(idx < 0) | (idx >= group.channels)]
    if bad.size:
        raise InvalidEdit(
            f"{_name(target)!r} has {group.channels} channels (0 to {group.channels - 1}); cannot remove "
            f"{bad.tolist()}. Received: channels={list(channels)!r}"
        )
    idx = np.unique(idx)
    if idx.size == 0:
        raise InvalidEdit(f"channels=[] removes nothing from {_name(target)!r}. Received: channels={list(channels)!r}")
    if idx.size >= group.channels:
        raise InvalidEdit(
            f"Removing all {group.channels} channels of {_name(target)!r} would leave nothing; keep at least one. "
            f"Received: channels={list(channels)!r}"
        )
    return idx


def _weakest(analysis, group, keep, by, target) -> np.ndarray:
    n = group.channels
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise InvalidEdit(f"keep= is a fraction in (0, 1] or a count of channels. Received: keep={keep!r}")
    if isinstance(keep, (float, np.floating)):
        if not 0 < keep <= 1:
            raise InvalidEdit(f"keep= as a fraction must be in (0, 1]. Received: keep={keep!r}")
        n_keep = max(1, int(round(n * float(keep))))
    else:
        if not 1 <= keep <= n:
            raise InvalidEdit(
                f"keep= as a count must be between 1 and {n} (the channels of {_name(target)!r}). "
                f"Received: keep={keep!r}"
            )
        n_keep = int(keep)
    order = {"l1": 1, "l2": 2}
    if by not in order:
        raise InvalidEdit(f"by= is 'l1' or 'l2'. Received: by={by!r}")
    scores = np.zeros(n)
    for name in group.producers:
        layer = analysis.layers[name]
        rule = _channels.PRODUCERS[type(layer)]
        attr = "pointwise_kernel" if "pointwise_kernel" in rule.variables else "kernel"
        out_axis = next(axis for axis, role in rule.variables[attr] if role == "out")
        w = np.moveaxis(keras.ops.convert_to_numpy(getattr(layer, attr)), out_axis, -1).reshape(-1, n)
        scores += np.abs(w).sum(axis=0) if by == "l1" else np.sqrt((w * w).sum(axis=0))
    # Stable: among equal scores the lower index is kept.
    ranking = np.argsort(-scores, kind="stable")
    return np.sort(ranking[n_keep:])


def plan(analysis, removed: dict):
    """``(config changes per layer, {layer: (kept input indices or None, kept output indices or None)})``."""
    root = analysis.root
    kept = {r: np.setdiff1d(np.arange(analysis.spaces[r].length), idx) for r, idx in removed.items()}
    pruned_roots = set(kept)
    changes = {}  # layer name -> new units / filters / target_shape
    slices = {}
    for name in analysis.order:
        role = analysis.roles[name]
        layout = analysis.in_layout.get(name)
        k_in = _channels.kept_indices(layout, kept, root) if _channels.touches(layout, pruned_roots, root) else None
        k_out = None
        if role == "producer":
            r = root(analysis.out_space[name])
            if r in pruned_roots:
                k_out = kept[r]
                rule = _channels.PRODUCERS[type(analysis.layers[name])]
                changes[name] = {rule.size_key: int(k_out.size)}
        elif role == "reshape":
            out_layout = analysis.reshape_layout[name]
            if _channels.touches(out_layout, pruned_roots, root):
                target = tuple(analysis.layers[name].get_config()["target_shape"])
                last = int(_channels.kept_indices(out_layout, kept, root).size)
                changes[name] = {"target_shape": target[:-1] + (last,)}
            continue
        if k_in is not None or k_out is not None:
            slices[name] = (k_in, k_out)
    return changes, slices


def kept_per_axis(layer, k_in, k_out):
    """``(attribute, variable, [(axis, kept indices), ...])`` for every variable of a sliced layer."""
    kind = type(layer)
    rule = _channels.PRODUCERS.get(kind) or _channels.CHANNELWISE[kind]
    dm = layer.get_config().get("depth_multiplier", 1)
    for attr, axes in rule.variables.items():
        variable = getattr(layer, attr, None)
        if variable is None:
            continue
        cuts = []
        for axis, role in axes:
            if role == "out" and k_out is not None:
                cuts.append((axis, k_out))
            elif role == "in" and k_in is not None:
                cuts.append((axis, k_in))
            elif role == "in_dm" and k_in is not None:
                cuts.append((axis, (k_in[:, None] * dm + np.arange(dm)).reshape(-1)))
        yield attr, variable, cuts


def sliced_shapes(layer, k_in, k_out):
    """``(attribute, old shape, new shape)`` for every variable of a sliced layer."""
    for attr, variable, cuts in kept_per_axis(layer, k_in, k_out):
        shape = list(variable.shape)
        for axis, kept in cuts:
            shape[axis] = int(kept.size)
        yield attr, tuple(variable.shape), tuple(shape)


def sliced_values(old, k_in, k_out) -> tuple[dict, str]:
    """The weight rule of a sliced layer: ``({attribute: surviving values}, reason)``.

    Sliced in numpy: for the many small gathers of a pruned network it is about three times
    faster than the backend's eager ``take`` (measured on TensorFlow).
    """
    values, parts = {}, []
    for attr, old_var, cuts in kept_per_axis(old, k_in, k_out):
        value = keras.ops.convert_to_numpy(old_var.value)
        for axis, kept in cuts:
            value = np.take(value, kept, axis=axis)
        values[attr] = value if cuts else np.array(value)  # a copy: never the user's buffer
        if tuple(old_var.shape) != tuple(value.shape):
            parts.append(f"{attr} {tuple(old_var.shape)} -> {tuple(value.shape)}")
    reason = ", ".join(parts)
    if type(old) is keras.layers.LayerNormalization:
        reason += "; it now normalises over fewer channels, so its output changes: fine-tune"
    return values, reason


def describe(analysis, removed: dict) -> str:
    """The result's note: how many channels of which producers went."""
    groups = analysis.groups()
    n_removed = sum(int(v.size) for v in removed.values())
    described = "; ".join(
        f"{len(removed[r])} of {groups[r].channels} channels of {', '.join(groups[r].producers)}" for r in removed
    )
    return (f"Pruned {n_removed} channel(s): {described}. Layers after them keep their weights but see "
            "changed inputs (kept_input_changed); fine-tune unless the removed channels were zero.")
