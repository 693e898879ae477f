"""Where each layer goes in the graph picture: a layered (Sugiyama-style) layout made in Python.

Widget-free: no ipywidgets, no anywidget, no graph library. :func:`graph_layout` turns a model
into plain data (nodes with boxes, edges with the points they pass through, boxes of nested
models) that :mod:`kerasnb.editor.graph` hands to the browser, which only draws it.

The steps, per graph (the model, and each nested model that is not collapsed):

1. one unit per layer (a shared layer is one unit with several edges); a nested model is one
   unit too, as big as its own layout plus a header, or node-sized when collapsed;
2. rank = longest path from the inputs, so every edge points down; an edge that closes a
   cycle (a shared layer fed by a layer it feeds) is turned around for ranking only;
3. an edge spanning several ranks gets a dummy point in each rank between, so a skip
   connection is routed beside the layers it skips instead of through them;
4. within a rank, order by barycenter sweeps (down, then up) keeping the order with the
   fewest crossings;
5. x by a few passes that pull each unit towards the mean x of its neighbours while keeping
   the rank's order and spacing (a least-squares fit under order constraints, solved exactly
   by pooling adjacent violators).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import _graph

NODE_H = 34
RANK_GAP = 26  # vertical space between two ranks
NODE_GAP = 18  # horizontal space between two units of a rank
DUMMY_W = 4  # width reserved in a rank for an edge passing through it
DUMMY_GAP = 8
CHAR_W = 6.6  # average width of a character of the 11 px label font
HEADER_CHAR_W = 7.2  # the same, bold (a nested model's header)
MIN_W, MAX_W = 72, 220
GROUP_PAD = 10
GROUP_HEADER = 22
SWEEPS = 4  # barycenter iterations (each one down and one up)
PLACE_PASSES = 4


def status_map(report) -> dict:
    """``{layer path: status}`` from a WeightReport (aliases included), a mapping, or None."""
    if report is None:
        return {}
    if isinstance(report, Mapping):
        return {str(name): str(status) for name, status in report.items()}
    rows = getattr(report, "rows", None)
    if rows is None:
        raise TypeError(
            "statuses must be a WeightReport or a mapping of layer name to status. "
            f"Received: {type(report).__name__}"
        )
    out = {row.layer: str(row.status) for row in rows}
    for alias, target in getattr(report, "aliases", {}).items():
        if target in out:
            out.setdefault(alias, out[target])
    return out


def label_width(*texts: str) -> float:
    """Width of a node whose longest label is among ``texts`` (clamped; longer labels are cut)."""
    longest = max((len(t) for t in texts), default=0)
    return float(min(MAX_W, max(MIN_W, round(longest * CHAR_W + 16))))


def header_width(layer) -> float:
    """Width of a nested model's header, "▾ name (Type)" in bold (clamped like a node's)."""
    text = f"\u25be {layer.name} ({type(layer).__name__})"
    return float(min(MAX_W + 2 * GROUP_PAD, round(len(text) * HEADER_CHAR_W + 16)))


def graph_layout(model, report=None, collapsed=()) -> dict:
    """The picture of ``model`` as plain data, laid out top to bottom.

    ``report``: a WeightReport or ``{layer path: status}`` for the nodes' ``status``.
    ``collapsed``: paths of nested models drawn as a single node.

    Returns ``{"nodes", "edges", "paths", "groups", "aliases", "width", "height"}``:
    nodes ``{"id", "name", "type", "status", "x", "y", "w", "h", "group", "calls"}`` (``id`` is
    the layer's path, ``"outer/inner"`` inside a nested model, as in the report; ``group`` is
    the enclosing nested model's path or ""), edges ``[src_id, dst_id]`` once per connected
    pair, ``paths[i]`` the ``[x, y]`` points edge ``i`` passes through, groups ``{"id", "name",
    "type", "status", "x", "y", "w", "h", "collapsed", "parent"}``. A collapsed nested model is
    also a node whose id is the group's id. ``aliases`` maps the other paths of a tied layer
    (one called in a nested model and outside it: the table may name it either way) to its id.
    """
    ctx = _Context(model, status_map(report), set(collapsed))
    top = _layout_graph(ctx, model, "")
    ctx.place(top, 0.0, 0.0, "")
    edges, paths = ctx.route()
    return {
        "nodes": ctx.nodes,
        "edges": edges,
        "paths": paths,
        "groups": ctx.groups,
        "aliases": {path: first for path, first in _graph.layer_aliases(model).items() if first in ctx.drawn()},
        "width": round(top.width, 1),
        "height": round(top.height, 1),
    }


# ----------------------------------------------------------------------------- one graph


@dataclass
class _Unit:
    """A box laid out in one graph: a layer, a nested model (expanded or collapsed), or a dummy."""

    id: str
    w: float
    h: float
    layer: object = None
    kind: str = "node"  # node | group | collapsed | dummy
    inner: "_Block | None" = None
    x: float = 0.0  # centre
    y: float = 0.0  # top
    rank: int = 0


@dataclass
class _Block:
    """The layout of one graph, in coordinates relative to its own top left corner."""

    units: list
    by_id: dict
    chains: dict  # (upper unit id, lower unit id) -> dummies between them, top to bottom
    links: list  # (src node id, dst node id, src unit id, dst unit id)
    width: float = 0.0
    height: float = 0.0
    origin: tuple = (0.0, 0.0)  # set when placed
    boxes: dict = field(default_factory=dict)


class _Context:
    def __init__(self, model, statuses: dict, collapsed: set):
        self.statuses = statuses
        self.collapsed = collapsed
        # A layer reached by several paths (tied) is drawn once, at its first path.
        self.path_of = {id(layer): path for path, layer in _graph.walk_layers(model)}
        self.nodes: list = []
        self.groups: list = []
        self.node_box: dict = {}  # node id -> (x, y, w, h), absolute
        self.collapsed_box: dict = {}  # collapsed nested model's id -> its box, header included
        self.blocks: list = []

    def drawn(self) -> set:
        return set(self.node_box) | {group["id"] for group in self.groups}

    def expanded(self, layer) -> bool:
        return _graph.is_graph_model(layer) and self.path_of[id(layer)] not in self.collapsed

    def source_node(self, operation, tensor_index: int) -> str:
        """The drawn node that makes output ``tensor_index`` of ``operation`` (inside it if expanded)."""
        while self.expanded(operation):
            outputs = _graph.output_tensors(operation)
            inner = outputs[min(tensor_index, len(outputs) - 1)]
            operation, _, tensor_index = _graph.producer(inner)
        return self.path_of[id(operation)]

    def target_node(self, operation, position: int) -> str:
        """The drawn node that receives input ``position`` of a call of ``operation``."""
        while self.expanded(operation):
            inputs = _graph.input_layers(operation)
            operation = inputs[min(position, len(inputs) - 1)]
            position = 0
        return self.path_of[id(operation)]

    # -------------------------------------------------------------- absolute positions

    def place(self, block: _Block, ox: float, oy: float, group: str) -> None:
        block.origin = (ox, oy)
        self.blocks.append(block)
        for unit in block.units:
            if unit.kind == "dummy":
                continue
            left, top = ox + unit.x - unit.w / 2, oy + unit.y
            block.boxes[unit.id] = (left, top, unit.w, unit.h)
            if unit.kind == "node":
                self._node(unit.id, unit.layer, left, top, unit.w, unit.h, group)
                continue
            self.groups.append({
                "id": unit.id, "name": unit.layer.name, "type": type(unit.layer).__name__,
                "status": self.statuses.get(unit.id, ""), "x": _r(left), "y": _r(top), "w": _r(unit.w),
                "h": _r(unit.h), "collapsed": unit.kind == "collapsed", "parent": group,
            })
            if unit.kind == "collapsed":
                self.collapsed_box[unit.id] = block.boxes[unit.id]
                self._node(unit.id, unit.layer, left + GROUP_PAD / 2, top + GROUP_HEADER,
                           unit.w - GROUP_PAD, NODE_H, unit.id)
            else:
                self.place(unit.inner, left + (unit.w - unit.inner.width) / 2, top + GROUP_HEADER, unit.id)

    def _node(self, path, layer, x, y, w, h, group) -> None:
        self.node_box[path] = (x, y, w, h)
        self.nodes.append({
            "id": path, "name": layer.name, "type": type(layer).__name__,
            "status": self.statuses.get(path, ""), "x": _r(x), "y": _r(y), "w": _r(w), "h": _r(h),
            "group": group, "calls": _graph.call_count(layer) if not _graph.is_input_layer(layer) else 0,
        })

    # -------------------------------------------------------------- edges

    def route(self) -> tuple[list, list]:
        edges, paths = [], []
        for block in self.blocks:
            ox, oy = block.origin
            for src, dst, su, du in block.links:
                edges.append([src, dst])
                paths.append([[_r(x), _r(y)] for x, y in self._points(block, ox, oy, src, dst, su, du)])
        return edges, paths

    def _points(self, block, ox, oy, src, dst, su, du) -> list:
        # a collapsed nested model is met at its box (header included), not at its node inside
        sx, sy, sw, sh = self.collapsed_box.get(src) or self.node_box[src]
        dx, dy, dw, dh = self.collapsed_box.get(dst) or self.node_box[dst]
        scx, dcx = sx + sw / 2, dx + dw / 2
        if su == du:  # a layer (or nested model) fed by its own output: a loop on the right
            ux, uy, uw, uh = block.boxes[su]
            right = ux + uw + 16
            return [(scx, sy + sh), (right, uy + uh + 8), (right, uy - 8), (dcx, dy)]
        if (su, du) in block.chains:
            upper, lower = su, du
        elif (du, su) in block.chains:
            upper, lower = du, su
        else:  # a tied layer met first in another graph: a straight line
            return [(scx, sy + sh), (dcx, dy)]
        middle = []
        for dummy in block.chains[(upper, lower)]:
            top = oy + dummy.y
            middle += [(ox + dummy.x, top), (ox + dummy.x, top + dummy.h)]
        if upper == su:  # downwards, the usual case
            start = [(scx, sy + sh)] + self._leave(block, su, src, scx, bottom=True)
            end = self._leave(block, du, dst, dcx, bottom=False) + [(dcx, dy)]
            return start + middle + end
        # an edge that closes a cycle goes up: from the top of src to the bottom of dst
        start = [(scx, sy)] + self._leave(block, su, src, scx, bottom=False)
        end = self._leave(block, du, dst, dcx, bottom=True) + [(dcx, dy + dh)]
        return start + middle[::-1] + end

    @staticmethod
    def _leave(block, unit_id, node_id, x, bottom: bool) -> list:
        """A point on the edge of an expanded nested model that an edge leaves or enters through."""
        if unit_id == node_id:
            return []
        ux, uy, uw, uh = block.boxes[unit_id]
        return [(x, uy + uh if bottom else uy)]


def _r(value: float) -> float:
    return round(float(value), 1)


def _layout_graph(ctx: _Context, model, prefix: str) -> _Block:
    units, by_id = [], {}
    for layer in _graph.layers_in_order(model):
        path = ctx.path_of[id(layer)]
        if path != prefix + layer.name:
            continue  # tied: drawn where it was met first
        if _graph.is_graph_model(layer) and path in ctx.collapsed:
            w = max(label_width(layer.name, type(layer).__name__) + GROUP_PAD, header_width(layer))
            unit = _Unit(path, w, GROUP_HEADER + NODE_H + GROUP_PAD / 2, layer, "collapsed")
        elif _graph.is_graph_model(layer):
            inner = _layout_graph(ctx, layer, path + "/")
            w = max(inner.width + 2 * GROUP_PAD, header_width(layer))
            unit = _Unit(path, w, GROUP_HEADER + inner.height + GROUP_PAD, layer, "group", inner)
        else:
            calls = _graph.call_count(layer)
            kind = f"{type(layer).__name__} ×{calls}" if calls > 1 else type(layer).__name__
            unit = _Unit(path, label_width(layer.name, kind), NODE_H, layer)
        units.append(unit)
        by_id[path] = unit

    links, seen, ranked = [], set(), set()
    for view in _graph.walk(model):
        consumer = view.operation
        du = ctx.path_of[id(consumer)]
        for position, tensor in enumerate(view.input_tensors):
            operation, _, tensor_index = _graph.producer(tensor)
            su = ctx.path_of[id(operation)]
            link = (ctx.source_node(operation, tensor_index), ctx.target_node(consumer, position), su, du)
            if link[0] == link[1] and operation is not consumer:
                ranked.add((su, du))  # a tied input fed to the nested model that has it as its own
                continue  # input: its edges are drawn inside, but the model still goes below it
            if link[:2] not in seen:
                seen.add(link[:2])
                links.append(link)

    block = _Block(units, by_id, {}, links)
    _arrange(block, ranked)
    return block


# ----------------------------------------------------------------------------- the layered layout


def _arrange(block: _Block, ranked=()) -> None:
    """Rank, order and place the units of a block; ``ranked``: unit pairs that order but draw nothing."""
    units = block.units
    index = {u.id: i for i, u in enumerate(units)}  # Keras's order: parents before children
    pairs = set()
    for su, du in [(su, du) for _, _, su, du in block.links] + list(ranked):
        if su == du or su not in index or du not in index:
            continue  # self loops do not rank; a tied layer's edge from elsewhere is drawn as is
        pairs.add((su, du) if index[su] < index[du] else (du, su))
    # 2. ranks: longest path from the sources, in Keras's order (a topological one)
    for unit in units:
        unit.rank = 0
    succ_units: dict = {}
    for a, b in pairs:
        succ_units.setdefault(a, []).append(b)
    for unit in units:
        for b in succ_units.get(unit.id, ()):
            target = block.by_id[b]
            target.rank = max(target.rank, unit.rank + 1)
    # 3. dummies on long edges
    vertices = list(units)
    succ = {id(u): [] for u in units}
    pred = {id(u): [] for u in units}

    def connect(a, b):
        succ[id(a)].append(b)
        pred[id(b)].append(a)

    for a, b in sorted(pairs, key=lambda p: (index[p[0]], index[p[1]])):
        upper, lower = block.by_id[a], block.by_id[b]
        chain, previous = [], upper
        for rank in range(upper.rank + 1, lower.rank):
            dummy = _Unit(f"{a}->{b}#{rank}", DUMMY_W, 0.0, kind="dummy", rank=rank)
            succ[id(dummy)], pred[id(dummy)] = [], []
            vertices.append(dummy)
            chain.append(dummy)
            connect(previous, dummy)
            previous = dummy
        connect(previous, lower)
        block.chains[(a, b)] = chain
    if not units:
        return
    ranks = _initial_order(units, vertices, succ)
    ranks = _reduce_crossings(ranks, pred, succ)
    _place(ranks, pred, succ)
    # bands: a rank is as tall as its tallest unit; dummies span the band
    tops, y = [], 0.0
    for row in ranks:
        tops.append(y)
        band = max(u.h for u in row)
        for u in row:
            u.y = y
            if u.kind == "dummy":
                u.h = band
        y += band + RANK_GAP
    left = min(u.x - u.w / 2 for u in vertices)
    for u in vertices:
        u.x -= left
    block.width = max(u.x + u.w / 2 for u in vertices)
    block.height = y - RANK_GAP


def _initial_order(units, vertices, succ) -> list:
    """Ranks in depth-first order from the sources: connected layers start out side by side."""
    n_ranks = max(v.rank for v in vertices) + 1
    ranks = [[] for _ in range(n_ranks)]
    seen = set()
    for root in units:
        if id(root) in seen:
            continue
        stack = [root]
        while stack:
            v = stack.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            ranks[v.rank].append(v)
            stack.extend(reversed(succ[id(v)]))
    return ranks


def _reduce_crossings(ranks, pred, succ) -> list:
    pos = {}
    for row in ranks:
        for i, v in enumerate(row):
            pos[id(v)] = i
    best, best_crossings = [list(r) for r in ranks], _crossings(ranks, succ, pos)
    for _ in range(SWEEPS):
        if best_crossings == 0:
            break
        for r in range(1, len(ranks)):
            _sort_by_barycenter(ranks[r], pred, pos)
        for r in range(len(ranks) - 2, -1, -1):
            _sort_by_barycenter(ranks[r], succ, pos)
        crossings = _crossings(ranks, succ, pos)
        if crossings < best_crossings:
            best, best_crossings = [list(r) for r in ranks], crossings
    return best


def _sort_by_barycenter(row, neighbours, pos) -> None:
    def key(v):
        near = neighbours[id(v)]
        mean = sum(pos[id(n)] for n in near) / len(near) if near else pos[id(v)]
        return (mean, pos[id(v)])

    row.sort(key=key)
    for i, v in enumerate(row):
        pos[id(v)] = i


def _crossings(ranks, succ, pos) -> int:
    total = 0
    for row in ranks[:-1]:
        ends = sorted((pos[id(v)], pos[id(w)]) for v in row for w in succ[id(v)])
        seen: list = []
        for _, lower in ends:  # pairs whose lower ends are in the opposite order cross
            total += len(seen) - bisect.bisect_right(seen, lower)
            bisect.insort(seen, lower)
    return total


def _place(ranks, pred, succ) -> None:
    for row in ranks:  # packed and centred on 0 to start
        x = 0.0
        for i, v in enumerate(row):
            if i:
                x += _gap(row[i - 1], v)
            v.x = x
        for v in row:
            v.x -= x / 2
    for _ in range(PLACE_PASSES):
        for row in ranks[1:]:
            _fit_row(row, pred)
        for row in reversed(ranks[:-1]):
            _fit_row(row, succ)
    both = {k: pred[k] + succ[k] for k in pred}
    for row in ranks:
        _fit_row(row, both)


def _gap(a: _Unit, b: _Unit) -> float:
    space = DUMMY_GAP if a.kind == "dummy" or b.kind == "dummy" else NODE_GAP
    return a.w / 2 + space + b.w / 2


def _fit_row(row, neighbours) -> None:
    """Move a rank's units as close as they can get to their neighbours' mean x, order and gaps kept.

    With offsets ``s_i`` (the packed position of unit i), ``x_i = y_i + s_i`` keeps the gaps
    exactly when ``y`` does not decrease, so this is isotonic regression of the wanted
    ``x_i - s_i``: pool adjacent blocks whose means are out of order.
    """
    offset, wanted, weight = 0.0, [], []
    offsets = []
    for i, v in enumerate(row):
        if i:
            offset += _gap(row[i - 1], v)
        offsets.append(offset)
        near = neighbours[id(v)]
        target = sum(n.x for n in near) / len(near) if near else v.x
        wanted.append(target - offset)
        weight.append(1.0)
    pools: list = []  # [mean, weight, count]
    for value, w in zip(wanted, weight):
        pools.append([value, w, 1])
        while len(pools) > 1 and pools[-2][0] > pools[-1][0]:
            m2, w2, c2 = pools.pop()
            m1, w1, c1 = pools.pop()
            pools.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    i = 0
    for mean, _, count in pools:
        for _ in range(count):
            row[i].x = mean + offsets[i]
            i += 1
