"""Channel analysis for pruning: which layers' channels are tied together, and how.

One walk over the graph follows the last axis (channels_last) of every tensor. The last axis
is described by a *layout*: a tuple of blocks ``(repeat, segments)`` where ``segments`` is a
tuple of ``(space, length)``. A *space* is the channel axis a producer (Dense, Conv, ...)
creates; Concatenate places spaces side by side, Flatten repeats the channel pattern once per
spatial position, and Add / Multiply / ... join the spaces of their inputs into one group.

Anything the walk does not understand makes the spaces that reach it unprunable, with a
reason naming the layer. Nothing here changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from . import _graph

L = keras.layers

# ----------------------------------------------------------------------------- layer rules
#
# Which variables of a layer carry which channel axis: attribute -> ((axis, role), ...), where
# role is "out" (the layer's own output channels), "in" (its input channels) or "in_dm" (input
# channels expanded by a depth multiplier, as in a separable convolution's pointwise kernel).


@dataclass(frozen=True)
class _Producer:
    size_key: str  # config key that sets the number of output channels
    variables: dict


@dataclass(frozen=True)
class _Channelwise:
    variables: dict


_DENSE = _Producer("units", {"kernel": ((0, "in"), (1, "out")), "bias": ((0, "out"),)})
_CONV = _Producer("filters", {"kernel": ((-2, "in"), (-1, "out")), "bias": ((0, "out"),)})
_CONV_T = _Producer("filters", {"kernel": ((-1, "in"), (-2, "out")), "bias": ((0, "out"),)})
_SEPARABLE = _Producer("filters", {
    "depthwise_kernel": ((-2, "in"),),
    "pointwise_kernel": ((-2, "in_dm"), (-1, "out")),
    "bias": ((0, "out"),),
})
_DEPTHWISE = _Channelwise({"kernel": ((-2, "in"),), "bias": ((0, "in"),)})
_BATCHNORM = _Channelwise({v: ((0, "in"),) for v in ("gamma", "beta", "moving_mean", "moving_variance")})
_LAYERNORM = _Channelwise({"gamma": ((0, "in"),), "beta": ((0, "in"),)})

PRODUCERS = {
    L.Dense: _DENSE,
    L.Conv1D: _CONV, L.Conv2D: _CONV, L.Conv3D: _CONV,
    L.Conv1DTranspose: _CONV_T, L.Conv2DTranspose: _CONV_T, L.Conv3DTranspose: _CONV_T,
    L.SeparableConv1D: _SEPARABLE, L.SeparableConv2D: _SEPARABLE,
}
CHANNELWISE = {
    L.DepthwiseConv1D: _DEPTHWISE, L.DepthwiseConv2D: _DEPTHWISE,
    L.BatchNormalization: _BATCHNORM,
    L.LayerNormalization: _LAYERNORM,
}
# Weightless layers that act on each channel separately and keep the last axis as channels.
PASSTHROUGH = (
    L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.Identity, L.ActivityRegularization,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

# Activations applied to each value on its own (softmax and friends mix channels).
ELEMENTWISE = {
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid", "tanh",
    "swish", "silu", "hard_swish", "hard_silu", "softplus", "softsign", "exponential", "mish", "log_sigmoid",
    "celu", "tanh_shrink", "soft_shrink", "hard_shrink", "squareplus", "sparse_plus", "hard_tanh",
}


# ----------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ChannelGroup:
    """Producers whose output channels are tied together, and every layer that reads them.

    ``producers`` make the channels (Dense / Conv); several producers mean a coupled group (joined
    by Add, Multiply, ...), in which channel ``i`` of each is pruned together. ``channelwise``
    layers (BatchNormalization, DepthwiseConv, LayerNormalization) are sliced on their channel
    axis, ``consumers`` on their kernel's input axis, ``reshapes`` get a new ``target_shape``.
    ``reason`` is ``""`` when the group can be pruned, else why not.
    """

    producers: tuple
    channels: int
    consumers: tuple = ()
    channelwise: tuple = ()
    reshapes: tuple = ()
    reason: str = ""

    @property
    def prunable(self) -> bool:
        return not self.reason

    @property
    def coupled(self) -> bool:
        return len(self.producers) > 1

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"not prunable: {self.reason}"
        return (f"ChannelGroup(producers={list(self.producers)}, channels={self.channels}, "
                f"consumers={list(self.consumers)}, channelwise={list(self.channelwise)}, {state})")


@dataclass
class _Space:
    length: int
    producer: str | None  # layer that makes it, None for a model input or an opaque tensor
    reasons: list = field(default_factory=list)


@dataclass
class Analysis:
    """Everything one walk learned; kerasnb.prune plans from it."""

    spaces: list  # _Space per id
    parent: list  # union-find
    out_space: dict  # producer name -> space id
    in_layout: dict  # consumer / channel-wise / reshape name -> layout of its input
    reshape_layout: dict  # reshape name -> (layout whose kept count is the new last dim)
    roles: dict  # layer name -> "producer" | "channelwise" | "reshape"
    layers: dict  # layer name -> layer
    order: list  # layer names in graph order
    problems: dict = field(default_factory=dict)  # layer name -> why it cannot be pruned or sliced
    _groups: dict | None = None

    def root(self, sid: int) -> int:
        parent = self.parent
        while parent[sid] != sid:
            parent[sid] = parent[parent[sid]]
            sid = parent[sid]
        return sid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def block(self, layout, reason: str) -> None:
        for sid in spaces_of(layout):
            if reason not in self.spaces[sid].reasons:
                self.spaces[sid].reasons.append(reason)

    def new_space(self, length, producer=None, reason=None) -> int:
        self.spaces.append(_Space(int(length), producer, [reason] if reason else []))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def groups(self) -> dict:
        """root space id -> ChannelGroup, in graph order of the first producer (computed once)."""
        if self._groups is None:
            self._groups = self._make_groups()
        return self._groups

    def _make_groups(self) -> dict:
        position = {name: i for i, name in enumerate(self.order)}
        by_root: dict = {}
        for sid, space in enumerate(self.spaces):
            if space.producer is None and not space.reasons:
                continue
            by_root.setdefault(self.root(sid), []).append(sid)
        touching: dict = {}
        for name in self.order:
            layout = self.in_layout.get(name)
            if layout is None:
                continue
            for root in {self.root(s) for s in spaces_of(layout)}:
                touching.setdefault(root, []).append(name)
        out = {}
        for root, sids in by_root.items():
            producers = [self.spaces[s].producer for s in sids if self.spaces[s].producer]
            if not producers:
                continue
            producers.sort(key=position.__getitem__)
            reasons = []
            for s in sids:
                for r in self.spaces[s].reasons:
                    if r not in reasons:
                        reasons.append(r)
            readers = touching.get(root, [])
            out[root] = ChannelGroup(
                producers=tuple(producers),
                channels=self.spaces[root].length,
                consumers=tuple(n for n in readers if self.roles[n] == "producer"),
                channelwise=tuple(n for n in readers if self.roles[n] == "channelwise"),
                reshapes=tuple(n for n in readers if self.roles[n] == "reshape"),
                reason="; ".join(reasons),
            )
        return dict(sorted(out.items(), key=lambda kv: position[kv[1].producers[0]]))


# ----------------------------------------------------------------------------- layouts


def spaces_of(layout) -> list:
    if layout is None:
        return []
    return [sid for _, segs in layout for sid, _ in segs]


def _canonical(blocks) -> tuple:
    out: list = []
    for rep, segs in blocks:
        if not segs or rep == 0:
            continue
        if rep == 1 and out and out[-1][0] == 1:
            out[-1] = (1, out[-1][1] + tuple(segs))
        else:
            out.append((rep, tuple(segs)))
    return tuple(out)


def _pattern(layout) -> tuple:
    return tuple((rep, tuple(n for _, n in segs)) for rep, segs in layout)


def kept_indices(layout, kept: dict, root) -> np.ndarray:
    """Positions along a tensor's last axis that survive, given kept indices per pruned group root."""
    parts, offset = [], 0
    for rep, segs in layout:
        block, width = [], 0
        for sid, n in segs:
            k = kept.get(root(sid))
            block.append(width + (np.arange(n) if k is None else k))
            width += n
        block = np.concatenate(block) if block else np.zeros(0, dtype=int)
        for r in range(rep):
            parts.append(offset + r * width + block)
        offset += rep * width
    return np.concatenate(parts).astype(int) if parts else np.zeros(0, dtype=int)


def touches(layout, pruned_roots, root) -> bool:
    return layout is not None and any(root(s) in pruned_roots for s in spaces_of(layout))


# ----------------------------------------------------------------------------- the walk


def analyse(model) -> Analysis:
    """The channel analysis of ``model`` (remembered within one operation, see ``_graph.memo``)."""
    return _graph.remembered("channels", model, _analyse)


def _analyse(model) -> Analysis:
    """Follow every channel axis of ``model`` once; see the module docstring."""
    a = Analysis([], [], {}, {}, {}, {}, {}, [])
    layouts: dict = {}  # id(tensor) -> layout, or None when the last axis cannot be traced
    for tensor, layer in zip(_graph.input_tensors(model), _graph.input_layers(model)):
        layouts[id(tensor)] = _fresh(a, tensor, None, f"it is joined with the model input {layer.name!r}")
    for view in _graph.walk(model):
        op = view.operation
        ins = [layouts.get(id(t)) for t in view.input_tensors]
        outs = _step(a, view, op, ins)
        for tensor, layout in zip(view.outputs, outs):
            layouts[id(tensor)] = layout
    for tensor in _graph.output_tensors(model):
        op = _graph.producer(tensor)[0]
        a.block(layouts.get(id(tensor)),
                f"its channels reach the model output at {op.name!r}, whose shape pruning would change")
    return a


def _fresh(a: Analysis, tensor, producer, reason=None):
    shape = tuple(tensor.shape)
    if len(shape) < 2 or shape[-1] is None:
        return None
    return ((1, ((a.new_space(shape[-1], producer, reason), int(shape[-1])),)),)


def _unknown(a: Analysis, view, ins, why: str):
    for layout in ins:
        a.block(layout, why)
    return [None] * len(view.outputs)


def _why_unknown(op) -> str:
    kind = type(op).__name__
    name = op.name
    if "attention" in kind.lower():
        return (f"they flow into {name!r} ({kind}), an attention layer whose heads would be split; "
                "kerasnb does not prune into attention layers")
    if _graph.is_graph_model(op):
        return (f"they flow into the nested model {name!r}, and kerasnb does not prune into or inside nested "
                "models; prune a top-level layer whose channels do not reach it")
    known = tuple(PRODUCERS) + tuple(CHANNELWISE) + PASSTHROUGH + MERGES + (
        L.Activation, L.Flatten, L.Reshape, L.Concatenate)
    for base in known:
        if isinstance(op, base):
            return (f"they flow into {name!r}, a custom subclass of {base.__name__} ({kind}) whose call kerasnb "
                    "cannot see into; use the standard layer there")
    return (f"they flow into {name!r} ({kind}), which kerasnb does not know how to slice; prune a layer whose "
            "channels do not reach it, or replace it with a standard layer first")


def _channels_last(op) -> bool:
    return op.get_config().get("data_format", "channels_last") in (None, "channels_last")


def _elementwise(activation) -> bool:
    return isinstance(activation, str) and activation in ELEMENTWISE


def _producer_problem(op, rule: _Producer) -> str:
    config = op.get_config()
    if not _channels_last(op):
        return "it uses data_format='channels_first'"
    if config.get("groups", 1) != 1:
        return f"it is a grouped convolution (groups={config['groups']})"
    return _variables_problem(op, rule.variables)


def _variables_problem(op, variables: dict) -> str:
    expected = [getattr(op, attr, None) for attr in variables]
    ids = {id(v) for v in expected if v is not None}
    if {id(v) for v in op.weights} != ids:
        names = ", ".join(v.name for v in op.weights)
        return f"it has variables kerasnb does not know how to slice ({names}; LoRA or quantized?)"
    return ""


def _step(a: Analysis, view, op, ins) -> list:
    kind = type(op)
    name = op.name
    shared = view.n_calls > 1
    if kind in PRODUCERS:
        rule = PRODUCERS[kind]
        problem = _producer_problem(op, rule) or (f"it is shared (called {view.n_calls} times)" if shared else "")
        if problem:
            a.problems[name] = problem
            return _unknown(a, view, ins,
                            f"they flow into {name!r} ({kind.__name__}), which cannot be pruned: {problem}")
        a.layers[name], a.roles[name] = op, "producer"
        a.order.append(name)
        if ins and ins[0] is not None:
            a.in_layout[name] = ins[0]
        out = _fresh(a, view.outputs[0], name)
        if out is None:
            return _unknown(a, view, ins, f"{name!r} has no known channel count")
        a.out_space[name] = out[0][1][0][0]
        activation = op.get_config().get("activation", "linear")
        if not _elementwise(activation):  # its input can still be sliced, its output not
            a.block(out, f"the activation {activation!r} of {name!r} mixes its output channels")
        return [out]
    if kind in CHANNELWISE:
        rule = CHANNELWISE[kind]
        problem = _channelwise_problem(op, view, rule)
        if problem or not ins or ins[0] is None:
            a.problems[name] = problem or "its input is not traced"
            return _unknown(a, view, ins, f"they flow into {name!r} ({kind.__name__}), which cannot be sliced: "
                                          f"{problem or 'its input is not traced'}")
        a.layers[name], a.roles[name] = op, "channelwise"
        a.order.append(name)
        a.in_layout[name] = ins[0]
        return [ins[0]]
    if len(ins) == 1 and len(view.outputs) == 1 and (kind in PASSTHROUGH or kind is L.Activation):
        if kind is L.Activation and not _elementwise(op.get_config().get("activation")):
            return _unknown(a, view, ins, f"they flow into {name!r} (Activation "
                                          f"{op.get_config().get('activation')!r}), which mixes channels")
        if not _channels_last(op):
            return _unknown(a, view, ins,
                            f"they flow into {name!r} ({kind.__name__}) with data_format='channels_first'")
        return [ins[0]]
    if kind is L.Flatten and len(ins) == 1:
        return [_flatten(a, view, op, ins[0])]
    if kind is L.Reshape and len(ins) == 1:
        return [_reshape(a, view, op, ins[0])]
    if kind in MERGES or kind is L.Concatenate:
        return [_merge(a, view, op, ins)]
    return _unknown(a, view, ins, _why_unknown(op))


def _channelwise_problem(op, view, rule) -> str:
    if view.n_calls > 1:
        return f"it is shared (called {view.n_calls} times)"
    config = op.get_config()
    rank = len(view.input_tensors[0].shape)
    if isinstance(op, L.BatchNormalization):
        if config["axis"] not in (-1, rank - 1):
            return f"it normalises axis {config['axis']}, not the channel axis"
    elif isinstance(op, L.LayerNormalization):
        axis = config["axis"]
        axis = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if axis not in ([-1], [rank - 1]):
            return f"it normalises axes {axis}, not just the channel axis"
    else:  # depthwise
        if not _channels_last(op):
            return "it uses data_format='channels_first'"
        if config.get("depth_multiplier", 1) != 1:
            return f"its depth_multiplier is {config['depth_multiplier']}, not 1"
        if not _elementwise(config.get("activation", "linear")):
            return f"its activation {config.get('activation')!r} mixes channels"
    return _variables_problem(op, rule.variables)


def _flatten(a, view, op, layout):
    shape = tuple(view.input_tensors[0].shape)
    if layout is None:
        return None
    if not _channels_last(op) or any(d is None for d in shape[1:]):
        _unknown(a, view, [layout], f"they flow into {op.name!r} (Flatten), whose input layout kerasnb cannot follow")
        return None
    positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
    if len(layout) == 1:
        return ((layout[0][0] * positions, layout[0][1]),)
    return _canonical(list(layout) * positions)


def _reshape(a, view, op, layout):
    if layout is None or view.n_calls > 1:
        _unknown(a, view, [layout], f"they flow into {op.name!r} (Reshape), which kerasnb cannot follow")
        return None
    in_shape = tuple(view.input_tensors[0].shape)
    out_shape = tuple(view.outputs[0].shape)
    target = tuple(op.get_config()["target_shape"])
    if out_shape[-1] is not None and out_shape[-1] == in_shape[-1]:
        out = layout
    elif len(layout) == 1 and out_shape[-1] == sum(n for _, n in layout[0][1]):
        out = ((1, layout[0][1]),)  # un-flatten: the channel pattern becomes the last axis again
    else:
        _unknown(a, view, [layout], f"they flow into {op.name!r} (Reshape to {target}), which does not keep the "
                                    "channel axis last")
        return None
    if target and target[-1] != -1:
        a.layers[op.name], a.roles[op.name] = op, "reshape"
        a.order.append(op.name)
        a.in_layout[op.name] = layout
        a.reshape_layout[op.name] = out
    return out


def _merge(a, view, op, ins):
    kind = type(op).__name__
    if not ins or any(layout is None for layout in ins):
        return _unknown(a, view, ins, f"they are joined by {op.name!r} ({kind}) with a tensor kerasnb cannot trace")[0]
    if isinstance(op, L.Concatenate):
        rank = len(view.outputs[0].shape)
        if op.get_config()["axis"] in (-1, rank - 1):
            return _canonical([block for layout in ins for block in layout])
    first = ins[0]
    for other in ins[1:]:
        if _pattern(other) != _pattern(first):
            return _unknown(a, view, ins, f"they are joined by {op.name!r} ({kind}) with channels laid out "
                                          "differently (broadcast or split), so they cannot be pruned together")[0]
    for other in ins[1:]:
        for s1, s2 in zip(spaces_of(first), spaces_of(other)):
            a.union(s1, s2)
    return first
