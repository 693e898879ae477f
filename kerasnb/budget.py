"""Global pruning: rank the channels of every coupled group together and prune to one budget.

``prune_global(model, keep=0.5 | params=N | macs=N, by="l1", ...)``:

1. every prunable channel group (:func:`kerasnb.pruning.channel_groups`) is scored by ``by``
   (:mod:`kerasnb.importance`), and each group's scores are divided by their mean, so that groups
   of different sizes and scales compare (a channel scoring 0.2 is five times weaker than the
   average channel of its own group);
2. channels are taken weakest first across all groups until the budget is met, keeping at least
   ``min_keep`` channels per group and, with ``round_to``, a multiple of it;
3. the choice becomes one :class:`kerasnb.Prune` edit per group and :func:`kerasnb.apply`
   carries them out in one rebuild.

:func:`prune_global_plan` does steps 1-2 only and says what the result would be (params and
multiply-accumulates before and after) without building anything: cheap enough for a slider,
especially when given the ``scores`` of an earlier plan.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from . import _channels, _graph, _slicing, _targets
from . import criteria
from .edits import Prune
from .errors import surgery_errors_only, BudgetNotReachable, InvalidEdit, SurgeryError
from .surgery import SurgeryResult, apply

__all__ = ["GlobalPlan", "BudgetNotReachable", "prune_global", "prune_global_plan"]


@dataclass(frozen=True)
class GlobalPlan:
    """What ``kerasnb.prune_global`` would do, worked out without building a model.

    ``kerasnb.prune_global_plan`` returns it; ``plan.edits`` applied with ``kerasnb.apply`` give
    the model ``prune_global`` would, and ``plan.summary()`` says it in one line.

    Attributes:
        removed: ``{producer name: channel indices removed}``, one entry per pruned group (named
            by its first producer).
        params_before: The model's parameters (every variable) now.
        params_after: Its parameters after pruning.
        macs_before: The multiply-accumulates of one sample now (``kerasnb.count_macs``).
        macs_after: Those after pruning.
        channels_before: The output channels of the groups that take part (neither ignored nor
            unprunable) now.
        channels_after: Those after pruning.
        by: The criterion, in words.
        target: The budget, in words (``"keep=0.5"``).
        scores: The raw scores per group (``{producers: array}``): pass them to another plan of
            the same model (``scores=plan.scores``) to skip scoring.
        unscored: The producers of groups the criterion could not score (left as they are).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(6, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> plan = kerasnb.prune_global_plan(model, keep=0.5)
        >>> plan.removed.keys(), plan.channels_after, plan.target
        (dict_keys(['hidden']), 3, 'keep=0.5')
        >>> [type(edit).__name__ for edit in plan.edits]
        ['Prune']
    """

    removed: dict
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    channels_before: int
    channels_after: int
    by: str
    target: str
    scores: dict = field(default_factory=dict, repr=False)
    unscored: tuple = ()  # producers of groups the criterion could not score: left as they are

    @property
    def edits(self) -> tuple:
        return tuple(Prune(name, channels=tuple(int(i) for i in idx)) for name, idx in self.removed.items())

    def summary(self) -> str:
        """The plan in one line: params, MACs and channels before -> after.

        Returns:
            str: e.g. ``'params 68 -> 35 (51.5%), MACs 60 -> 30 (50.0%), channels 6 -> 3 in 1 group(s) pruned'``.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(6, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> kerasnb.prune_global_plan(model, keep=0.5).summary()
            'params 68 -> 35 (51.5%), MACs 60 -> 30 (50.0%), channels 6 -> 3 in 1 group(s) pruned'
        """
        return (f"params {_short(self.params_before)} -> {_short(self.params_after)} "
                f"({_pct(self.params_after, self.params_before)}), MACs {_short(self.macs_before)} -> "
                f"{_short(self.macs_after)} ({_pct(self.macs_after, self.macs_before)}), channels "
                f"{self.channels_before} -> {self.channels_after} in {len(self.removed)} group(s) pruned")


def _short(n) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _pct(after, before) -> str:
    return f"{after / before:.1%}" if before else "n/a"


# ----------------------------------------------------------------------------- public API


@surgery_errors_only
def prune_global(model, keep=None, *, params=None, macs=None, by=None, data=None, round_to=None, ignore=(),
                 per_layer=None, min_keep=1, scores=None, loss=None, input_shape=None) -> SurgeryResult:
    """Prune the weakest channels of the whole model, ranked across groups, to one budget, in one rebuild.

    Every prunable channel group (``kerasnb.channel_groups``) is scored by ``by``, each group's
    scores divided by their mean so that groups of different sizes compare; channels are taken
    weakest first across all groups until the budget is met; the choice becomes one
    ``kerasnb.Prune`` edit per group, applied in one rebuild. Give one budget: ``keep``,
    ``params`` or ``macs`` (or only ``per_layer``). ``kerasnb.prune_global_plan`` says what
    this would do without building anything.

    Args:
        model: A built functional or Sequential model; it is not changed.
        keep: The fraction of the channels kept, in (0, 1], counted over the groups ranked
            together (every prunable group neither ignored nor in ``per_layer``): ``0.5`` keeps
            half of them, removing the others wherever they are weakest (a few more stay where
            ``round_to`` or a grouped convolution rounds a layer's count).
        params: The parameter count after pruning is at most this: a count, or a float in
            (0, 1], the fraction of the current count kept (``params=0.5``: at most half).
        macs: The multiply-accumulates of one sample after pruning (``kerasnb.count_macs``)
            are at most this: a count, or a float in (0, 1], the fraction of the current MACs.
        by: The criterion (see ``kerasnb.importance``): ``"l1"`` unless ``scores`` are given;
            ``"apoz"`` and ``"taylor"`` need ``data``. Groups it cannot score (no
            BatchNormalization for ``"bn_scale"``) are left as they are, and a note says so.
        data: Examples for ``by="apoz"`` / ``"taylor"`` (what ``kerasnb.importance`` takes).
        round_to: Keep every pruned group's channel count a multiple of this (e.g. 8; rounded
            up, the search then takes more channels elsewhere).
        ignore: Layers whose output channels are never pruned (a producer, or a
            BatchNormalization / depthwise layer of its group; their inputs may still be
            sliced), chosen as every ``match=`` of kerasnb: names or paths, globs, classes, a
            compiled regex, a predicate ``(path, layer) -> bool``, or a list of these.
        per_layer: ``{layer: fraction of its channels kept}``: those groups keep exactly that
            fraction (their strongest), outside the global ranking. May be the only budget.
        min_keep: The fewest channels any group keeps (default 1).
        scores: The ``scores`` of an earlier ``GlobalPlan`` of the same model, to skip scoring.
        loss: For ``by="taylor"``, a ``loss(y_true, y_pred)`` instead of the compiled loss.
        input_shape: The shape of one sample (no batch axis), for a ``macs`` budget on a model
            built with unknown sizes.

    Returns:
        SurgeryResult: ``.model``, ``.report`` (the sliced layers ``pruned``), ``.edits`` (one
        ``Prune`` per group) and ``.notes``, the first giving params and MACs before -> after.

    Raises:
        BudgetNotReachable: the budget asks for less than pruning can reach (every group at
            ``min_keep``); the message gives the smallest reachable.
        InvalidEdit: no budget or several; a budget, ``per_layer`` fraction, ``round_to`` or
            ``min_keep`` out of range; a layer both ignored and in ``per_layer``; ``by`` can
            score no group.
        LayerNotFound: ``ignore`` or ``per_layer`` names no layer.
        UnknownShape: a ``macs`` budget on a model whose sizes are unknown and no
            ``input_shape``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.prune_global(model, keep=0.5)
        >>> result.model.get_layer("hidden").units, result.report.status("hidden")
        (3, 'pruned')
        >>> kerasnb.prune_global(model, macs=0.5).model.count_params() < model.count_params()
        True
    """
    with _graph.memo():
        plan = prune_global_plan(model, keep, params=params, macs=macs, by=by, data=data, round_to=round_to,
                                 ignore=ignore, per_layer=per_layer, min_keep=min_keep, scores=scores, loss=loss,
                                 input_shape=input_shape)
        result = apply(model, plan.edits)
    macs_built = plan.macs_after  # exact: the plan slices as the rebuild does (checked by the tests)
    params_built = int(result.model.count_params())
    note = (f"Global pruning by {plan.by} to {plan.target}: removed "
            f"{plan.channels_before - plan.channels_after} of {plan.channels_before} channels in "
            f"{len(plan.removed)} group(s); params {plan.params_before:,} -> {params_built:,} "
            f"({_pct(params_built, plan.params_before)}), MACs per sample {plan.macs_before:,} -> {macs_built:,} "
            f"({_pct(macs_built, plan.macs_before)}). The remaining layers see fewer channels: fine-tune.")
    if plan.unscored:
        shown = ", ".join(repr(n) for n in plan.unscored[:8]) + (" ..." if len(plan.unscored) > 8 else "")
        note += (f" {len(plan.unscored)} group(s) that {plan.by} cannot score were left as they are: {shown} "
                 "(no BatchNormalization after them for bn_scale, no ReLU-like activation for apoz).")
    return dataclasses.replace(result, notes=(note,) + tuple(result.notes))


@surgery_errors_only
def prune_global_plan(model, keep=None, *, params=None, macs=None, by=None, data=None, round_to=None, ignore=(),
                      per_layer=None, min_keep=1, scores=None, loss=None, input_shape=None) -> GlobalPlan:
    """What ``kerasnb.prune_global`` with the same arguments would remove, without building a model.

    Cheap enough to follow a slider, especially when given the ``scores`` of an earlier plan.
    The counts it gives are those the built model has.

    Args:
        model: A built functional or Sequential model; it is not changed.
        keep: The fraction of the channels kept, in (0, 1], counted over the groups ranked
            together (every prunable group neither ignored nor in ``per_layer``): ``0.5`` keeps
            half of them, removing the others wherever they are weakest (a few more stay where
            ``round_to`` or a grouped convolution rounds a layer's count).
        params: The parameter count after pruning is at most this: a count, or a float in
            (0, 1], the fraction of the current count kept (``params=0.5``: at most half).
        macs: The multiply-accumulates of one sample after pruning (``kerasnb.count_macs``)
            are at most this: a count, or a float in (0, 1], the fraction of the current MACs.
        by: The criterion (see ``kerasnb.importance``): ``"l1"`` unless ``scores`` are given;
            ``"apoz"`` and ``"taylor"`` need ``data``. Groups it cannot score (no
            BatchNormalization for ``"bn_scale"``) are left as they are, and a note says so.
        data: Examples for ``by="apoz"`` / ``"taylor"`` (what ``kerasnb.importance`` takes).
        round_to: Keep every pruned group's channel count a multiple of this (e.g. 8; rounded
            up, the search then takes more channels elsewhere).
        ignore: Layers whose output channels are never pruned (a producer, or a
            BatchNormalization / depthwise layer of its group; their inputs may still be
            sliced), chosen as every ``match=`` of kerasnb: names or paths, globs, classes, a
            compiled regex, a predicate ``(path, layer) -> bool``, or a list of these.
        per_layer: ``{layer: fraction of its channels kept}``: those groups keep exactly that
            fraction (their strongest), outside the global ranking. May be the only budget.
        min_keep: The fewest channels any group keeps (default 1).
        scores: The ``scores`` of an earlier ``GlobalPlan`` of the same model, to skip scoring.
        loss: For ``by="taylor"``, a ``loss(y_true, y_pred)`` instead of the compiled loss.
        input_shape: The shape of one sample (no batch axis), for a ``macs`` budget on a model
            built with unknown sizes.

    Returns:
        GlobalPlan: ``removed`` (``{producer: channel indices}``, one entry per pruned group),
        ``params_before`` / ``params_after``, ``macs_before`` / ``macs_after`` (per sample),
        ``channels_before`` / ``channels_after``, ``scores`` (for the next plan), ``edits`` (what
        ``kerasnb.apply`` takes) and ``summary()`` (one line).

    Raises:
        BudgetNotReachable: the budget asks for less than pruning can reach (every group at
            ``min_keep``); the message gives the smallest reachable.
        InvalidEdit: no budget or several; a budget, ``per_layer`` fraction, ``round_to`` or
            ``min_keep`` out of range; a layer both ignored and in ``per_layer``; ``by`` can
            score no group.
        LayerNotFound: ``ignore`` or ``per_layer`` names no layer.
        UnknownShape: a ``macs`` budget on a model whose sizes are unknown and no
            ``input_shape``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> plan = kerasnb.prune_global_plan(model, params=0.6)
        >>> plan.summary()
        'params 68 -> 35 (51.5%), MACs 60 -> 30 (50.0%), channels 6 -> 3 in 1 group(s) pruned'
        >>> kerasnb.apply(model, plan.edits).model.count_params() == plan.params_after
        True
    """
    from .flops import layer_cost

    with _graph.memo():
        analysis = _channels.analyse(model)
        groups = {r: g for r, g in analysis.groups().items() if g.prunable}
        kind, goal = _budget(keep, params, macs, per_layer)
        min_keep = _check_count(min_keep, "min_keep", 1)
        round_to = None if round_to in (None, 1) else _check_count(round_to, "round_to", 1)
        ignored = _ignored(model, analysis, ignore)
        fixed = _per_layer(model, analysis, per_layer or {})
        both = [name for name, root in fixed.items() if root in ignored]
        if both:
            raise InvalidEdit(f"{both[0]!r} is both ignored and given a per_layer fraction; choose one. "
                              f"Received: ignore={ignore!r}, per_layer={per_layer!r}")
        active = {r: g for r, g in groups.items() if r not in ignored}
        try:
            costs = layer_cost(model, input_shape)
        except SurgeryError:
            if kind == "macs":
                raise  # says which size is unknown and how to give input_shape=
            costs = None  # sizes unknown: the plan reports no MACs
        label = _by_name(by) if by is not None else ("the scores given" if scores is not None else "l1")
        unscored: list = []  # groups the criterion cannot score: they stay as they are
        raw = _scores(model, analysis, active, "l1" if by is None else by, data, loss, scores, unscored)
        if unscored:
            left = {id(g) for g, _ in unscored}
            active = {r: g for r, g in active.items() if id(g) not in left}
            stuck = [name for name in fixed if fixed[name] not in active]
            if stuck:
                reason = next(why for g, why in unscored if stuck[0] in g.producers)
                raise InvalidEdit(f"per_layer names {stuck[0]!r}, which by={label!r} cannot score: "
                                  f"{reason.split(' Received')[0]} Received: per_layer={per_layer!r}")
            if not active:
                raise InvalidEdit(
                    f"by={label!r} cannot score any prunable group of this model ({unscored[0][1].split(' Received')[0]}). "
                    f"What would work: by='l1' or by='l2'. Received: by={by!r}")
        ranked = {r: np.argsort(-raw[r], kind="stable")[::-1] for r in active}  # weakest first
        # A grouped convolution on a group's channels keeps the same count in each of its groups.
        steps = {r: _group_step(analysis, r, round_to) for r in active}
        fixed_removed = {}
        for name, root in fixed.items():
            channels = active[root].channels
            kept = max(1, int(round(channels * float(per_layer[name]))))  # as prune(keep=) counts it
            fixed_removed[root] = _count_removed(active[root], channels - kept, min_keep, steps[root])
        pool = [r for r in active if r not in fixed_removed]
        order = _global_order(pool, raw, ranked)

        params_before = int(model.count_params())
        macs_before = int(sum(c.macs for c in costs.values())) if costs is not None else 0

        # The budget search asks for many prefixes of `order`: count them with arrays, not a loop per channel.
        slot = {r: i for i, r in enumerate(pool)}
        order_slots = np.fromiter((slot[r] for r in order), dtype=np.int64, count=len(order))
        first_seen = np.full(len(pool), len(order), dtype=np.int64)
        np.minimum.at(first_seen, order_slots, np.arange(len(order), dtype=np.int64))

        def removal(k):
            taken = np.bincount(order_slots[:k], minlength=len(pool))
            counts = dict(fixed_removed)
            for i in sorted(np.flatnonzero(taken).tolist(), key=first_seen.__getitem__):  # as a prefix walk meets them
                root = pool[i]
                counts[root] = _count_removed(active[root], int(taken[i]), min_keep, steps[root])
            return {r: _weakest(analysis, active[r], r, n, raw[r], ranked[r]) for r, n in counts.items() if n}

        def measure(removed):
            if kind == "params":
                return _slicing.params_after_removal(analysis, removed, params_before)
            if kind == "macs":
                return macs_after_removal(analysis, removed, costs)
            return sum(int(idx.size) for r, idx in removed.items() if r in pool)

        pool_channels = sum(active[r].channels for r in pool)
        if kind is None:
            k = 0
        elif kind == "keep":
            wanted = pool_channels - int(round(goal * pool_channels))  # channels to remove
            k = _smallest_k(len(order), lambda k: measure(removal(k)) >= wanted)
            if k is None:
                reach = measure(removal(len(order)))
                least = pool_channels - reach
                raise BudgetNotReachable(
                    f"keep={keep} asks to keep {pool_channels - wanted} of {pool_channels} channels, but with "
                    f"min_keep={min_keep}{f' and round_to={round_to}' if round_to else ''} at least {least} stay "
                    f"(keep={least / max(pool_channels, 1):.3f} or more is reachable). Received: keep={keep!r}")
        else:
            before = params_before if kind == "params" else macs_before
            limit = goal * before if isinstance(goal, float) else goal
            k = _smallest_k(len(order), lambda k: measure(removal(k)) <= limit)
            if k is None:
                floor = measure(removal(len(order)))
                given = params if kind == "params" else macs
                what = "parameters" if kind == "params" else "multiply-accumulates per sample"
                raise BudgetNotReachable(
                    f"{kind}={given!r} asks for at most {int(limit):,} {what}, but the smallest reachable is "
                    f"{floor:,} ({floor / before:.1%} of {before:,}): every prunable group down to "
                    f"min_keep={min_keep}{f' (round_to={round_to})' if round_to else ''}; the rest "
                    f"({len(ignored)} ignored group(s), layers that cannot be pruned, "
                    f"{len(analysis.groups()) - len(groups)} unprunable group(s)) stays. "
                    f"Ask for {floor:,} or more. Received: {kind}={given!r}")
        removed = removal(k)
        _slicing._check_groups(analysis, removed, None)  # grouped convolutions read by several groups
        params_after = _slicing.params_after_removal(analysis, removed, params_before)
        macs_after = macs_after_removal(analysis, removed, costs) if costs is not None else 0
        target = {"keep": f"keep={keep}", "params": f"params={params}", "macs": f"macs={macs}",
                  None: "per_layer fractions"}[kind]
        channels_before = sum(g.channels for g in active.values())
        channels_after = channels_before - sum(int(idx.size) for idx in removed.values())
        groups_all = analysis.groups()
        return GlobalPlan(
            removed={groups_all[r].producers[0]: tuple(int(i) for i in idx) for r, idx in removed.items()},
            params_before=params_before, params_after=params_after, macs_before=int(macs_before),
            macs_after=int(macs_after), channels_before=channels_before, channels_after=channels_after,
            by=label, target=target, scores={groups_all[r].producers: raw[r] for r in active},
            unscored=tuple(g.producers[0] for g, _ in unscored),
        )


# ----------------------------------------------------------------------------- checks


def _budget(keep, params, macs, per_layer):
    given = {k: v for k, v in (("keep", keep), ("params", params), ("macs", macs)) if v is not None}
    if len(given) > 1 or (not given and not per_layer):
        raise InvalidEdit(
            "prune_global() takes one budget: keep= (fraction of the channels kept), params= (parameters after, "
            "at most: a count, or the fraction kept) or macs= (multiply-accumulates per sample after, at most: a "
            f"count, or the fraction kept); or only per_layer=. Received: keep={keep!r}, params={params!r}, "
            f"macs={macs!r}")
    if not given:
        return None, None
    (kind, value), = given.items()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidEdit(f"{kind}= is a number. Received: {kind}={value!r}")
    if kind == "keep":
        if not 0 < value <= 1:
            raise InvalidEdit(f"keep= is the fraction of the channels kept, in (0, 1] (0.5 keeps half). "
                              f"Received: keep={value!r}")
        return kind, float(value)
    if value <= 0:
        raise InvalidEdit(f"{kind}= must be positive: a count, or a fraction in (0, 1]. Received: {kind}={value!r}")
    if isinstance(value, (float, np.floating)) and value <= 1:
        return kind, float(value)  # a fraction of the current count
    return kind, int(value)


def _check_count(value, name, low) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidEdit(f"{name}= is a whole number of channels, at least {low}. Received: {name}={value!r}")
    return int(value)


def _group_root(model, analysis, name, what):
    """The group root whose channels ``name`` makes or follows (producer, BatchNorm, depthwise)."""
    name = name.name if hasattr(name, "name") and not isinstance(name, str) else name
    _targets.resolve(model, name, what=what)
    sid = analysis.out_space.get(name)
    if sid is not None:
        return analysis.root(sid)
    for root, group in analysis.groups().items():
        if name in group.channelwise:
            return root
    return None


def _ignored(model, analysis, ignore) -> set:
    """The group roots of the layers ``ignore`` selects (kerasnb's one matcher: names, globs, classes, ...)."""
    candidates = [(p, l) for p, l in _graph.walk_layers(model) if not _graph.is_input_layer(l)]
    roots = set()
    nothing = isinstance(ignore, (list, tuple, set, frozenset)) and not ignore  # the default: ignore nothing
    for path, _ in _targets.select(model, ignore, candidates, argument="ignore", required=not nothing):
        root = _group_root(model, analysis, path, "ignore in prune_global")
        if root is not None:
            roots.add(root)
    return roots


def _per_layer(model, analysis, per_layer) -> dict:
    if not isinstance(per_layer, dict):
        raise InvalidEdit(f"per_layer= is a dict {{layer name: fraction of its channels kept}}. "
                          f"Received: per_layer={per_layer!r}")
    out = {}
    for name, fraction in per_layer.items():
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)) \
                or not 0 < fraction <= 1:
            raise InvalidEdit(f"per_layer[{name!r}] is the fraction of its channels kept, in (0, 1]. "
                              f"Received: per_layer={per_layer!r}")
        root, _ = _slicing.group_of(model, analysis, name)  # refuses names that cannot be pruned, with the reason
        out[name] = root
    return out


def _scores(model, analysis, active, by, data, loss, given, unscored) -> dict:
    if given is None:
        return {r: np.asarray(s, dtype="float64") for r, s in
                criteria.group_scores(model, by, data, groups=active, loss=loss, analysis=analysis,
                                      unscorable=unscored).items()}
    out = {}
    for root, group in active.items():
        s = given.get(group.producers)
        if s is None and unscored is not None and given:
            # An earlier plan left this group out (its criterion could not score it): so does this one.
            unscored.append((group, "no score for it in scores="))
            continue
        if s is None or np.shape(s) != (group.channels,):
            raise InvalidEdit(
                f"scores= are the scores of an earlier plan of this model ({{producers: one score per channel}}); "
                f"they have none for {list(group.producers)} ({group.channels} channels). Received: scores with "
                f"{len(given)} group(s)")
        out[root] = np.asarray(s, dtype="float64")
    return out


def _by_name(by) -> str:
    return by if isinstance(by, str) else getattr(by, "__name__", "a callable")


# ----------------------------------------------------------------------------- choosing


def _global_order(pool, raw, ranked) -> list:
    """Group roots, one entry per channel, weakest first across groups (scores divided by the group's mean)."""
    scores, positions, ranks = [], [], []
    for position, root in enumerate(pool):
        s = raw[root]
        mean = float(np.mean(s))
        normal = s / mean if mean > 0 else np.zeros_like(s)
        scores.append(np.asarray(normal, dtype="float64")[ranked[root]])
        positions.append(np.full(len(ranked[root]), position))
        ranks.append(np.arange(len(ranked[root])))
    if not pool:
        return []
    score, position, rank = (np.concatenate(a) for a in (scores, positions, ranks))
    if not np.isfinite(score).all():  # NaN does not order: sort as Python sorts the tuples
        entries = sorted(zip(score.tolist(), position.tolist(), rank.tolist()))
        return [pool[p] for _, p, _ in entries]
    # By score, then group, then rank in the group: (score, position, j) tuples sorted, in one array sort.
    return [pool[p] for p in position[np.lexsort((rank, position, score))].tolist()]


def _group_step(analysis, root, round_to) -> int:
    """Kept counts of this group are multiples of this: ``round_to`` and the groups of grouped convolutions."""
    steps = [g for _, g in _slicing._simple_groups(analysis, root)] + ([round_to] if round_to else [])
    return int(np.lcm.reduce(steps)) if steps else 1


def _count_removed(group, wanted, min_keep, step) -> int:
    n = group.channels
    keep = max(n - int(wanted), min(min_keep, n))
    if step > 1:
        keep = min(n, math.ceil(keep / step) * step)
    return n - keep


def _weakest(analysis, group, root, n_removed, scores, ranked) -> np.ndarray:
    """The ``n_removed`` weakest channels; with a grouped convolution, the weakest of each of its groups."""
    if _slicing._simple_groups(analysis, root):
        return _slicing._weakest(analysis, group, group.channels - n_removed, lambda a, g: scores, group.producers[0],
                                 root)
    return np.sort(ranked[:n_removed])


def _smallest_k(n, ok):
    """The smallest k in [0, n] with ok(k), for ok monotone (False... True); None when ok(n) is False."""
    if not ok(n):
        return None
    low, high = 0, n
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low


# ----------------------------------------------------------------------------- measuring without building


def macs_after_removal(analysis, removed, costs) -> int:
    """The MACs with ``removed`` channels gone: each layer's kept fraction of its input and output
    channels, from channel counts alone (as ``_slicing.plan`` slices them, without its per-layer
    configs: this runs at every step of a budget's search)."""
    from .flops import macs_with_channels

    root = analysis.root
    kept = {r: analysis.spaces[r].length - int(idx.size) for r, idx in removed.items()}
    in_fraction, out_fraction = {}, {}
    for name in analysis.order:
        if name not in costs or analysis.roles[name] == "reshape":
            continue
        layout = analysis.in_layout.get(name)
        if _channels.touches(layout, kept, root):
            in_fraction[name] = _kept_width(layout, kept, root) / _channels.width(layout)
        if analysis.roles[name] == "producer":
            r = root(analysis.out_space[name])
            if r in kept:
                out_fraction[name] = kept[r] / analysis.spaces[r].length
    return macs_with_channels(costs, in_fraction, out_fraction)


def _kept_width(layout, kept, root) -> int:
    """How many positions of ``layout`` survive (``_channels.kept_indices(...).size`` from counts)."""
    return sum(rep * sum(kept.get(root(sid), n) * each for sid, n, each in segs) for rep, segs in layout)

