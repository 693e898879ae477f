"""Channel analysis for pruning: which layers' channels are tied together, and how.

One walk over the graph (nested models included, inline) follows every *traced axis* of every
tensor: an axis whose positions come from channels a producer (Dense, Conv, an RNN, Embedding...)
created. A tensor's trace is ``{axis: layout}``; mostly one axis (the last for channels_last, 1
for channels_first), but Permute, RepeatVector or Dense on a 3-D input move or keep axes.

A *layout* describes the positions along one axis: a tuple of blocks ``(repeat, segments)``,
each segment ``(space, length, each)``: ``length`` channels of ``space``, each channel standing
for ``each`` consecutive positions (Flatten of a channels_first tensor, a depth multiplier).
Concatenate places segments side by side, Flatten repeats the pattern once per position, and
Add / Multiply / ... join the spaces of their inputs into one group (union-find).

Anything the walk does not understand blocks the spaces that reach it, with a reason naming the
layer, worded for any operation that resizes channels (pruning, widening: each names its verb
around it, see ``kerasnb._slicing.group_of``). Nothing here changes the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import keras
import numpy as np

from . import _graph

L = keras.layers

# ----------------------------------------------------------------------------- layer rules


@dataclass(frozen=True)
class Cut:
    """One axis of one variable that follows channels.

    ``role`` "in" (the channels a layer reads) or "out" (the channels it makes). ``each``: every
    channel stands for that many consecutive entries (a depth multiplier); ``tiles``: the axis
    holds that many copies of the channels side by side (the gates of a GRU or LSTM); ``groups``:
    a grouped convolution's kernel holds ``channels / groups`` inputs per output group.
    """

    axis: int
    role: str
    each: int = 1
    tiles: int = 1
    groups: int = 1


@dataclass(frozen=True)
class Rule:
    """Which variables of a layer follow channels (attribute path -> cuts), and how it is resized."""

    variables: dict
    size_key: str | None = None  # config key of the number of output channels (None: channel-wise)
    wrapper: tuple = ()  # config keys holding the wrapped layer's config (TimeDistributed, Bidirectional)
    groups: int = 1
    per_group: int = 0  # a grouped conv with one input channel per group: outputs per group (0: not one)
    count_key: str | None = None  # config key of a channel-wise layer's channel count (LayerScale)

    def resize(self, config: dict, n_out: int | None) -> dict:
        """Config changes for ``n_out`` output channels (None: same count, fresh wrapped build)."""
        if not self.wrapper:
            return {} if n_out is None or self.size_key is None else {self.size_key: int(n_out)}
        changes = {}
        for key in self.wrapper:
            inner = copy.deepcopy(config.get(key))
            if not isinstance(inner, dict):
                continue
            inner.pop("build_config", None)  # built again on the new input, not the old shape
            if n_out is not None:
                inner["config"][self.size_key] = int(n_out)
            changes[key] = inner
        return changes


_DENSE = Rule({"kernel": (Cut(0, "in"), Cut(1, "out")), "bias": (Cut(0, "out"),)}, "units")
_CONV_T = Rule({"kernel": (Cut(-1, "in"), Cut(-2, "out")), "bias": (Cut(0, "out"),)}, "filters")
_BATCHNORM = Rule({v: (Cut(0, "in"),) for v in ("gamma", "beta", "moving_mean", "moving_variance")})
_LAYERNORM = Rule({"gamma": (Cut(0, "in"),), "beta": (Cut(0, "in"),)})
_EMBEDDING = Rule({"embeddings": (Cut(1, "out"),)}, "output_dim")
_GATES = {L.SimpleRNN: 1, L.GRU: 3, L.LSTM: 4}

CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
CONV_TRANSPOSES = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
SEPARABLES = (L.SeparableConv1D, L.SeparableConv2D)
DEPTHWISES = (L.DepthwiseConv1D, L.DepthwiseConv2D)
RECURRENT = tuple(_GATES)

# Kept for callers that ask "is this a producer / channel-wise layer" by class.
PRODUCERS = {cls: None for cls in (L.Dense, L.Embedding) + CONVS + CONV_TRANSPOSES + SEPARABLES + RECURRENT}
CHANNELWISE = {cls: None for cls in DEPTHWISES + (L.BatchNormalization, L.LayerNormalization)}

# Weightless layers that act on each value on its own: every axis stays where it is.
ELEMENTWISE_LAYERS = (
    L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D,
    L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.Identity, L.ActivityRegularization,
    L.Masking,
)
# Weightless layers that keep the channel axis and change only the spatial ones.
SPATIAL = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)
GLOBAL_POOLING = (
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
)
PASSTHROUGH = ELEMENTWISE_LAYERS + SPATIAL + GLOBAL_POOLING
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

# Activations applied to each value on its own (softmax and friends mix channels).
ELEMENTWISE = {
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid", "tanh",
    "swish", "silu", "hard_swish", "hard_silu", "softplus", "softsign", "exponential", "mish", "log_sigmoid",
    "celu", "tanh_shrink", "soft_shrink", "hard_shrink", "squareplus", "sparse_plus", "hard_tanh",
}
# keras.ops operations in a functional graph (``a * b``, ``keras.ops.silu(x)``), by class name.
_RAW_UNARY = {
    "Relu", "Relu6", "Sigmoid", "Silu", "Swish", "Gelu", "Elu", "Selu", "Celu", "LeakyRelu", "HardSigmoid",
    "HardSilu", "HardTanh", "Softplus", "Softsign", "LogSigmoid", "TanhShrink", "SoftShrink", "HardShrink",
    "Squareplus", "SparsePlus", "Tanh", "Exp", "Negative", "Abs", "Square", "Sqrt", "Absolute", "Mish",
}
_RAW_BINARY = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "NotEqual", "Equal",
               "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd", "LogicalOr"}
# keras.ops reductions a removed zero channel adds nothing to (``any(x != 0, axis=-1)``: Masking's mask).
_RAW_REDUCTIONS = {"Any", "Sum"}


def one_channel_per_group(op) -> int:
    """Outputs per group of a grouped convolution that reads one input channel per group (ConvNeXt's
    depthwise ``Conv2D(groups=channels)``), 0 otherwise. Such a conv passes its input channels on,
    like a DepthwiseConv: removing an input channel removes its whole group (``groups`` shrinks)."""
    if type(op) not in CONVS or int(_graph.settings(op).get("groups", 1) or 1) < 2:
        return 0
    kernel = getattr(op, "kernel", None)
    if kernel is None or int(kernel.shape[-2]) != 1:
        return 0
    return int(kernel.shape[-1]) // int(_graph.settings(op)["groups"])


def _conv_rule(op) -> Rule:
    groups = int(_graph.settings(op).get("groups", 1) or 1)
    per_group = one_channel_per_group(op)
    if per_group:  # channel-wise: its output channels follow its input's, ``per_group`` each
        return Rule({"kernel": (Cut(-1, "in", each=per_group),), "bias": (Cut(0, "in", each=per_group),)},
                    per_group=per_group)
    return Rule({"kernel": (Cut(-2, "in", groups=groups), Cut(-1, "out")), "bias": (Cut(0, "out"),)}, "filters",
                groups=groups)


def _separable_rule(op) -> Rule:
    dm = int(_graph.settings(op).get("depth_multiplier", 1))
    return Rule({"depthwise_kernel": (Cut(-2, "in"),),
                 "pointwise_kernel": (Cut(-2, "in", each=dm), Cut(-1, "out")),
                 "bias": (Cut(0, "out"),)}, "filters")


def _depthwise_rule(op) -> Rule:
    dm = int(_graph.settings(op).get("depth_multiplier", 1))
    return Rule({"kernel": (Cut(-2, "in"),), "bias": (Cut(0, "in", each=dm),)})


def _recurrent_variables(op, prefix: str) -> dict:
    gates = _GATES[type(op)]
    return {prefix + "cell.kernel": (Cut(0, "in"), Cut(1, "out", tiles=gates)),
            prefix + "cell.recurrent_kernel": (Cut(0, "out"), Cut(1, "out", tiles=gates)),
            prefix + "cell.bias": (Cut(-1, "out", tiles=gates),)}


def _prefixed(rule: Rule, prefix: str) -> dict:
    return {prefix + attr: cuts for attr, cuts in rule.variables.items()}


# ----------------------------------------------------------------------------- the rules, by class

# Exact layer class -> its Rule, or a function (layer) -> Rule | None for rules that read the layer.
# A subclass finds no rule here: its call() may do anything (see _why_unknown).
_RULES: dict = {}


def register(layer_class, rule) -> None:
    """Slice the layers of exactly ``layer_class`` by ``rule`` (a :class:`Rule`, or a function
    ``layer -> Rule | None``); ``None`` forgets the class's rule. See
    :func:`kerasnb.pruning.register_channel_rule`."""
    if rule is None:
        _RULES.pop(layer_class, None)
    else:
        _RULES[layer_class] = rule


def rule_for(op) -> Rule | None:
    """The slicing rule of a layer (by its exact class), or None when kerasnb has none (worked out
    once per layer while ``_graph.memo`` is active: the analysis, the plan and the slicing ask)."""
    return _graph.remembered("rule", op, _rule_for)


def _rule_for(op) -> Rule | None:
    rule = _RULES.get(type(op))
    return rule(op) if callable(rule) else rule


def _time_distributed_rule(op) -> Rule | None:
    inner = rule_for(op.layer)
    if inner is None or inner.size_key is None or type(op.layer) in RECURRENT + (L.Embedding,):
        return None
    return Rule(_prefixed(inner, "layer."), inner.size_key, ("layer",), inner.groups)


def _bidirectional_rule(op) -> Rule | None:
    if type(op.forward_layer) not in RECURRENT or type(op.backward_layer) is not type(op.forward_layer):
        return None
    variables = {**_recurrent_variables(op.forward_layer, "forward_layer."),
                 **_recurrent_variables(op.backward_layer, "backward_layer.")}
    config = _graph.settings(op)
    return Rule(variables, "units", tuple(k for k in ("layer", "backward_layer") if k in config))


for _kind, _rule in [(L.Dense, _DENSE), (L.BatchNormalization, _BATCHNORM), (L.LayerNormalization, _LAYERNORM),
                     (L.Embedding, _EMBEDDING), (L.TimeDistributed, _time_distributed_rule),
                     (L.Bidirectional, _bidirectional_rule)]:
    register(_kind, _rule)
for _kinds, _rule in [(CONVS, _conv_rule), (CONV_TRANSPOSES, _CONV_T), (SEPARABLES, _separable_rule),
                      (DEPTHWISES, _depthwise_rule), (RECURRENT, lambda op: Rule(_recurrent_variables(op, ""), "units"))]:
    for _kind in _kinds:
        register(_kind, _rule)
# keras.applications ConvNeXt's LayerScale: ``x * gamma``, one gamma per channel of the last axis.
_LAYER_SCALE_CLASS = _graph.keras_class("applications.convnext", "LayerScale")
if _LAYER_SCALE_CLASS is not None:
    register(_LAYER_SCALE_CLASS, Rule({"gamma": (Cut(0, "in"),)}, count_key="projection_dim"))


def variable_at(layer, path: str):
    """``layer.a.b`` for the path ``"a.b"`` (None where missing, e.g. no bias)."""
    obj = layer
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


# ----------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ChannelGroup:
    """Producers whose output channels are tied together, and every layer that reads them.

    ``producers`` make the channels (Dense / Conv / RNN ...); several producers mean a coupled
    group (joined by Add, Multiply, a shared layer...), in which channel ``i`` of each is pruned
    together. ``channelwise`` layers (BatchNormalization, DepthwiseConv, LayerNormalization) are
    sliced on their channel axis, ``consumers`` on their kernel's input axis, ``reshapes`` get a
    new ``target_shape``. ``reason`` is ``""`` when the group can be pruned, else why not;
    ``outputs`` names the model outputs its channels reach (pruning narrows them, which
    ``allow_output_change=True`` permits), ``blocked`` is the reason without that part.
    """

    producers: tuple
    channels: int
    consumers: tuple = ()
    channelwise: tuple = ()
    reshapes: tuple = ()
    reason: str = ""
    outputs: tuple = ()
    blocked: str = ""

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
    outputs: list = field(default_factory=list)  # model outputs it reaches (layer names)


@dataclass
class Analysis:
    """Everything one walk learned; kerasnb.prune plans from it. Layers are keyed by path
    (``"backbone/conv3"`` inside a nested model)."""

    spaces: list  # _Space per id
    parent: list  # union-find
    out_space: dict  # producer path -> space id
    in_layout: dict  # producer / channel-wise path -> layout of the axis its variables read (or None)
    reshape_layout: dict  # reshape path -> {output axis: layout} whose kept counts go into target_shape
    roles: dict  # layer path -> "producer" | "channelwise" | "reshape"
    layers: dict  # layer path -> layer
    order: list  # layer paths in graph order
    problems: dict = field(default_factory=dict)  # layer path -> why it cannot be pruned or sliced
    reads: dict = field(default_factory=dict)  # layer path -> layouts it reads (for ChannelGroup readers)
    grouped: list = field(default_factory=list)  # (layer path, layout, groups): equal kept count per group
    flow: list = field(default_factory=list)  # (id(node) or None, input tensor ids, output tensor ids)
    model_outputs: set = field(default_factory=set)  # ids of the top-level output tensors
    output_layouts: list = field(default_factory=list)  # (output layer name, {axis: layout}, shape)
    concats: dict = field(default_factory=dict)  # id(concat node) -> (path, [(id(input), layout on its axis)])
    nodes_of: dict = field(default_factory=dict)  # layer path -> ids of its nodes
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

    def block_trace(self, trace, reason: str) -> None:
        for layout in (trace or {}).values():
            self.block(layout, reason)

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
            for root in {self.root(s) for layout in self.reads.get(name, ()) for s in spaces_of(layout)}:
                touching.setdefault(root, []).append(name)
        out = {}
        for root, sids in by_root.items():
            producers = []
            for s in sids:
                p = self.spaces[s].producer
                if p and p not in producers:
                    producers.append(p)
            if not producers:
                continue
            producers.sort(key=position.__getitem__)
            reasons, outputs = [], []
            for s in sids:
                reasons += [r for r in self.spaces[s].reasons if r not in reasons]
                outputs += [o for o in self.spaces[s].outputs if o not in outputs]
            blocked = "; ".join(reasons)
            output_text = "; ".join(f"its channels reach the model output at {o!r}, whose shape pruning would change"
                                    for o in outputs)
            readers = touching.get(root, [])
            out[root] = ChannelGroup(
                producers=tuple(producers),
                channels=self.spaces[root].length,
                consumers=tuple(n for n in readers if self.roles[n] == "producer"),
                channelwise=tuple(n for n in readers if self.roles[n] == "channelwise"),
                reshapes=tuple(n for n in readers if self.roles[n] == "reshape"),
                reason="; ".join(r for r in (blocked, output_text) if r),
                outputs=tuple(outputs),
                blocked=blocked,
            )
        return dict(sorted(out.items(), key=lambda kv: position[kv[1].producers[0]]))


# ----------------------------------------------------------------------------- layouts


def spaces_of(layout) -> list:
    if layout is None:
        return []
    return [sid for _, segs in layout for sid, _, _ in segs]


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
    return tuple((rep, tuple((n, e) for _, n, e in segs)) for rep, segs in layout)


def width(layout) -> int:
    return sum(rep * sum(n * e for _, n, e in segs) for rep, segs in layout)


def _expand(layout, each: int) -> tuple:
    """Every position stands for ``each`` consecutive positions."""
    if each == 1:
        return layout
    return tuple((rep, tuple((sid, n, e * each) for sid, n, e in segs)) for rep, segs in layout)


def _repeat(layout, times: int) -> tuple:
    if times == 1:
        return layout
    if len(layout) == 1:
        return ((layout[0][0] * times, layout[0][1]),)
    return _canonical(list(layout) * times)


def _single(sid: int, n: int) -> tuple:
    return ((1, ((sid, int(n), 1),)),)


def kept_indices(layout, kept: dict, root) -> np.ndarray:
    """Positions along an axis that survive, given kept channel indices per pruned group root."""
    parts, offset = [], 0
    for rep, segs in layout:
        block, w = [], 0
        for sid, n, each in segs:
            k = kept.get(root(sid))
            k = np.arange(n) if k is None else np.asarray(k)
            block.append(w + (k[:, None] * each + np.arange(each)).reshape(-1))
            w += n * each
        block = np.concatenate(block) if block else np.zeros(0, dtype=int)
        for r in range(rep):
            parts.append(offset + r * w + block)
        offset += rep * w
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
    traces: dict = {}  # id(tensor) -> {axis: layout}
    for tensor, layer in zip(_graph.input_tensors(model), _graph.input_layers(model)):
        shape = tuple(tensor.shape)
        if len(shape) >= 2 and shape[-1] is not None:
            sid = a.new_space(shape[-1], None, f"it is joined with the model input {layer.name!r}")
            traces[id(tensor)] = {len(shape) - 1: _single(sid, shape[-1])}
    _walk_graph(a, model, "", traces)
    for tensor in _graph.output_tensors(model):
        a.model_outputs.add(id(tensor))
        name = _graph.producer(tensor)[0].name
        trace = traces.get(id(tensor)) or {}
        a.output_layouts.append((name, trace, tuple(tensor.shape)))
        for layout in trace.values():
            for sid in spaces_of(layout):
                if name not in a.spaces[sid].outputs:
                    a.spaces[sid].outputs.append(name)
    return a


@dataclass(frozen=True)
class _Call:
    """One call as the rules see it: ``input_tensors`` are the positional ones (a mask or an initial
    state passed by keyword is not what the layer's channels are made from)."""

    node: object
    operation: object
    n_calls: int
    input_tensors: list
    outputs: list
    args: tuple
    keyword_tensors: int = 0  # tensors passed by keyword, a mask aside (an RNN's initial_state)


def _walk_graph(a: Analysis, model, prefix: str, traces: dict) -> None:
    for view in _graph.walk(model):
        op = view.operation
        if _graph.is_graph_model(op):
            ins = [traces.get(id(t)) or {} for t in view.input_tensors]
            outs = _nested(a, view, op, ins, prefix, traces)
        else:
            name = prefix + op.name
            positional = [t for t in keras.tree.flatten(view.args) if isinstance(t, keras.KerasTensor)]
            for key, value in view.kwargs.items():
                for t in keras.tree.flatten(value):
                    if isinstance(t, keras.KerasTensor) and key != "mask":
                        a.block_trace(traces.get(id(t)), _why_unknown(op, name) + f" (they are passed as {key}=)")
            keyword = sum(1 for key, value in view.kwargs.items() if key != "mask"
                          for t in keras.tree.flatten(value) if isinstance(t, keras.KerasTensor))
            call = _Call(view.node, op, view.n_calls, positional, view.outputs, view.args, keyword)
            ins = [traces.get(id(t)) or {} for t in positional]
            a.nodes_of.setdefault(name, []).append(id(view.node))
            outs = _step(a, call, op, ins, name) if positional or not view.input_tensors else \
                _unknown(a, call, [], _why_unknown(op, name))
            a.flow.append((id(view.node), [id(t) for t in view.input_tensors], [id(t) for t in view.outputs]))
        for tensor, trace in zip(view.outputs, outs):
            traces[id(tensor)] = trace


def _nested(a, view, op, ins, prefix, traces) -> list:
    """Walk a nested model inline: its inputs take the traces of the call's inputs."""
    name = prefix + op.name
    inner_inputs = _graph.input_tensors(op)
    inner_outputs = _graph.output_tensors(op)
    why = ""
    if len(inner_inputs) != len(view.input_tensors) or len(inner_outputs) != len(view.outputs):
        why = f"they flow into the nested model {name!r}, whose call kerasnb cannot match to its inputs"
    elif view.n_calls > 1:
        why = (f"they flow into the nested model {name!r}, which is called {view.n_calls} times, so its input "
               "width cannot change")
    for inner, outer, trace in zip(inner_inputs, view.input_tensors, ins):
        if why or len(inner.shape) != len(outer.shape):
            a.block_trace(trace, why or f"they flow into the nested model {name!r} with another rank")
            continue
        traces[id(inner)] = trace
    if why:
        for trace in ins[len(inner_inputs):]:
            a.block_trace(trace, why)
    a.flow.append((None, [id(t) for t in view.input_tensors], [id(t) for t in inner_inputs]))
    _walk_graph(a, op, name + "/", traces)
    a.flow.append((id(view.node), [id(t) for t in inner_outputs], [id(t) for t in view.outputs]))
    a.nodes_of.setdefault(name, []).append(id(view.node))
    if len(inner_outputs) != len(view.outputs):
        for t in inner_outputs:
            a.block_trace(traces.get(id(t)), why)
        return [{} for _ in view.outputs]
    return [dict(traces.get(id(t)) or {}) for t in inner_outputs]


# Layers that divide by statistics taken across the channel axis (LayerNormalization has a rule).
_NORMALISING = ("GroupNormalization", "UnitNormalization", "RMSNormalization")


def _why_unknown(op, name) -> str:
    kind = type(op).__name__
    if "attention" in kind.lower():
        return (f"they flow into {name!r} ({kind}), an attention layer: its query, key and value projections read "
                "them into its heads and its output width follows the query's, and kerasnb does not resize the channels an "
                "attention layer reads; choose a layer whose channels do not reach it")
    if type(op).__name__ in _NORMALISING:
        return (f"they flow into {name!r} ({kind}), which normalises over them: the statistics it divides by "
                "would count a different set of channels, so its output would change; choose a layer whose "
                "channels do not reach it")
    known = tuple(PRODUCERS) + tuple(CHANNELWISE) + PASSTHROUGH + MERGES + (
        L.Activation, L.Flatten, L.Reshape, L.Concatenate, L.Permute, L.RepeatVector, L.TimeDistributed,
        L.Bidirectional)
    for base in known:
        if isinstance(op, base) and type(op) is not base:
            return (f"they flow into {name!r}, a custom subclass of {base.__name__} ({kind}) whose call kerasnb "
                    "cannot see into; use the standard layer there")
    return (f"they flow into {name!r} ({kind}), which kerasnb does not know how to slice; choose a layer whose "
            "channels do not reach it, or replace it with a standard layer first")


def _channels_first(op) -> bool:
    return _graph.settings(op).get("data_format") == "channels_first"


def _elementwise(activation) -> bool:
    return isinstance(activation, str) and activation in ELEMENTWISE


def _variables_problem(op, rule: Rule) -> str:
    expected = [variable_at(op, attr) for attr in rule.variables]
    ids = {id(v) for v in expected if v is not None}
    if {id(v) for v in op.weights} != ids:
        names = ", ".join(v.name for v in op.weights)
        return f"it has variables kerasnb does not know how to slice ({names}; LoRA or quantized?)"
    return ""


def _keep(a, trace, mapping: dict, why: str) -> dict:
    """The traced axes that survive a layer (input axis -> output axis); the others are blocked."""
    out = {}
    for axis, layout in trace.items():
        if axis in mapping:
            out[mapping[axis]] = layout
        else:
            a.block(layout, why)
    return out


def _unknown(a, view, ins, why: str) -> list:
    for trace in ins:
        a.block_trace(trace, why)
    return [{} for _ in view.outputs]


def _read(a, name, layout) -> None:
    """Record the layout a layer's variables read; the calls of a shared layer must read alike."""
    a.reads.setdefault(name, [])
    if layout is not None:
        a.reads[name].append(layout)
    if name not in a.in_layout:
        a.in_layout[name] = layout
        return
    before = a.in_layout[name]
    if before is None and layout is None:
        return
    if before is not None and layout is not None and _pattern(before) == _pattern(layout):
        for s1, s2 in zip(spaces_of(before), spaces_of(layout)):
            a.union(s1, s2)  # one set of weights reads both: their channels go together
        return
    why = (f"they flow into {name!r}, which is shared and reads channels laid out differently in its calls, "
           "so its weights cannot be sliced for all of them")
    a.block(before, why)
    a.block(layout, why)


def _register(a, name, op, role) -> None:
    if name not in a.roles:
        a.layers[name], a.roles[name] = op, role
        a.order.append(name)


def _step(a: Analysis, view, op, ins, name) -> list:
    kind = type(op)
    rule = rule_for(op) if isinstance(op, L.Layer) else None
    if rule is not None and rule.size_key is not None:
        return _produce(a, view, op, ins, name, rule)
    if rule is not None:
        return _channelwise(a, view, op, ins, name, rule)
    rank = len(view.input_tensors[0].shape) if view.input_tensors else 0
    if len(ins) == 1 and len(view.outputs) == 1:
        trace = ins[0]
        out_rank = len(view.outputs[0].shape)
        if kind in ELEMENTWISE_LAYERS or (kind is L.Activation and _elementwise(_graph.settings(op).get("activation"))) \
                or _raw_elementwise(view, op):
            return [dict(trace)]
        if kind is L.Activation:
            return _unknown(a, view, ins, f"they flow into {name!r} (Activation "
                                          f"{_graph.settings(op).get('activation')!r}), which mixes channels")
        if kind in SPATIAL:
            c = 1 if _channels_first(op) else rank - 1
            return [_keep(a, trace, {c: c}, f"they flow into {name!r} ({kind.__name__}) along a spatial axis")]
        if kind in GLOBAL_POOLING:
            c = 1 if _channels_first(op) else rank - 1
            to = c if out_rank == rank else 1
            return [_keep(a, trace, {c: to}, f"they flow into {name!r} ({kind.__name__}) along a pooled axis")]
        if kind is L.Permute:
            dims = tuple(_graph.settings(op)["dims"])
            return [_keep(a, trace, {d: j + 1 for j, d in enumerate(dims)}, "")]
        if kind is L.RepeatVector:
            return [_keep(a, trace, {1: 2}, "")]
        if kind is L.Flatten:
            return [_flatten(a, view, op, trace, name)]
        if kind is L.Reshape:
            return [_reshape(a, view, op, trace, name)]
    if _raw_reduction(op) and len(ins) == 1 and len(view.outputs) == 1:
        return [_reduce(view, op, ins[0], rank)]
    if kind in MERGES or _raw_binary(view, op):
        return [_merge(a, view, op, ins, name, None)]
    if kind is L.Concatenate or (type(op).__name__ == "Concatenate" and not isinstance(op, L.Layer)):
        axis = _graph.settings(op)["axis"] if isinstance(op, L.Layer) else getattr(op, "axis", None)
        if axis is None or not all(len(t.shape) == rank for t in view.input_tensors):
            return _unknown(a, view, ins, f"they are joined by {name!r} (Concatenate) along an axis kerasnb cannot "
                                          "follow")
        return [_merge(a, view, op, ins, name, axis % rank)]
    if kind in (L.TimeDistributed, L.Bidirectional):  # wrapping a layer kerasnb does not slice
        return _unknown(a, view, ins, f"they flow into {name!r} ({kind.__name__} of "
                                      f"{type(getattr(op, 'layer', op)).__name__}), which kerasnb does not slice")
    return _unknown(a, view, ins, _why_unknown(op, name))


def _raw_elementwise(view, op) -> bool:
    """A keras.ops call on one tensor that acts on each value alone (``silu(x)``, ``x * 0.5``)."""
    cls = _graph.keras_op_name(op)
    if cls is None:
        return False
    others = [arg for arg in view.args if not isinstance(arg, keras.KerasTensor)]
    if cls in _RAW_UNARY:
        return True
    return cls in _RAW_BINARY and len(view.input_tensors) == 1 and all(np.ndim(o) == 0 for o in others)


def _raw_reduction(op) -> bool:
    return _graph.keras_op_name(op) in _RAW_REDUCTIONS and hasattr(op, "axis")


def _reduce(view, op, trace, rank) -> dict:
    """A reduction: the traced axes it reduces end there (a removed channel is one fewer term);
    the others move down past the reduced axes (unless ``keepdims``)."""
    axis = op.axis
    reduced = set(range(rank)) if axis is None else {
        int(x) % rank for x in (axis if isinstance(axis, (list, tuple)) else [axis])}
    keepdims = bool(getattr(op, "keepdims", False))
    out = {}
    for ax, layout in trace.items():
        if ax not in reduced:
            out[ax if keepdims else ax - sum(1 for r in reduced if r < ax)] = layout
    return out


def _raw_binary(view, op) -> bool:
    return _graph.keras_op_name(op) in _RAW_BINARY and len(view.input_tensors) == 2


def _produce(a, view, op, ins, name, rule: Rule) -> list:
    """A layer that makes channels (and reads the channels of its input on one axis)."""
    kind = type(op)
    problem = _variables_problem(op, rule)
    if not problem and kind is L.Bidirectional and _graph.settings(op).get("merge_mode") not in (
            "concat", "sum", "ave", "mul", None):
        problem = f"its merge_mode {_graph.settings(op).get('merge_mode')!r} is unknown"
    x = view.input_tensors[0] if view.input_tensors else None
    rank = len(x.shape) if x is not None else 0
    out_rank = len(view.outputs[0].shape)
    inner = op.layer if kind is L.TimeDistributed else op
    shift = 1 if kind is L.TimeDistributed else 0
    if type(inner) in (L.Dense,) + RECURRENT or kind is L.Bidirectional:
        in_axis, out_axis = rank - 1, out_rank - 1
        keep = {i: i for i in range(1, rank - 1)} if type(inner) is L.Dense else (
            {1: 1} if shift else {})
    elif kind is L.Embedding:
        in_axis, out_axis, keep = None, out_rank - 1, {}
    else:  # convolutions
        c = 1 + shift if _channels_first(inner) else rank - 1
        in_axis, out_axis, keep = c, (1 + shift if _channels_first(inner) else out_rank - 1), ({1: 1} if shift else {})
    if rule.groups > 1 and not problem:
        if x is not None and x.shape[in_axis] is not None and int(x.shape[in_axis]) % rule.groups:
            problem = f"its {rule.groups} groups do not divide its input channels"
    if problem:
        a.problems[name] = problem
        return _unknown(a, view, ins,
                        f"they flow into {name!r} ({kind.__name__}), which kerasnb cannot resize: {problem}")
    _register(a, name, op, "producer")
    main = ins[0] if ins else {}
    for extra in ins[1:]:  # initial states and the like
        a.block_trace(extra, f"they flow into {name!r} ({kind.__name__}) as an extra input kerasnb does not slice")
    layout_in = main.get(in_axis) if in_axis is not None else None
    _read(a, name, layout_in)
    if rule.groups > 1 and layout_in is not None:
        a.grouped.append((name, layout_in, rule.groups))
    survivors = _keep(a, {k: v for k, v in main.items() if k != in_axis}, keep,
                      f"they flow into {name!r} ({kind.__name__}) along an axis it mixes")
    n = view.outputs[0].shape[out_axis]
    if n is None:
        a.problems[name] = "it has no known channel count"
        return _unknown(a, view, ins, f"{name!r} has no known channel count")
    if kind is L.Bidirectional:
        n = int(op.forward_layer.units)
    sid = a.out_space.get(name)
    if sid is None:
        sid = a.out_space[name] = a.new_space(n, name)
    if rule.groups > 1:
        a.grouped.append((name, _single(sid, n), rule.groups))
    if (kind in RECURRENT or kind is L.Bidirectional) and (len(ins) > 1 or getattr(view, "keyword_tensors", 0)):
        a.spaces[sid].reasons.append(f"{name!r} starts from a state another tensor gives (initial_state), whose "
                                     "width would have to change with its units")
    # An RNN's activations act inside its recurrence; any other producer's on its output channels.
    activation = "linear" if kind in RECURRENT or kind is L.Bidirectional else \
        _graph.settings(inner).get("activation", "linear")
    if not _elementwise(activation):  # its input can still be sliced, its output not
        a.spaces[sid].reasons.append(f"the activation {activation!r} of {name!r} mixes its output channels")
    single = _single(sid, n)
    if kind is L.Bidirectional:
        return _bidirectional_outputs(a, view, op, sid, n, name)
    outs = []
    for i, tensor in enumerate(view.outputs):
        axis = out_axis if i == 0 else len(tensor.shape) - 1  # an RNN's states: (batch, units)
        if len(tensor.shape) < 2 or tensor.shape[axis] != n:
            a.spaces[sid].reasons.append(f"{name!r} gives an output kerasnb cannot follow")
            outs.append({})
            continue
        trace = {axis: single}
        if i == 0:
            trace.update(survivors)
        outs.append(trace)
    return outs


def _bidirectional_outputs(a, view, op, sid, n, name) -> list:
    mode = _graph.settings(op).get("merge_mode")
    single = _single(sid, n)
    outs = []
    for i, tensor in enumerate(view.outputs):
        last = len(tensor.shape) - 1
        if tensor.shape[-1] == n:
            outs.append({last: single})
        elif tensor.shape[-1] == 2 * n and mode == "concat" and i == 0:
            outs.append({last: ((2, ((sid, n, 1),)),)})  # forward units, then backward units
        else:
            a.spaces[sid].reasons.append(f"{name!r} (Bidirectional) gives an output kerasnb cannot follow")
            outs.append({})
    return outs


def _channelwise(a, view, op, ins, name, rule: Rule) -> list:
    """BatchNormalization, LayerNormalization, DepthwiseConv: one weight per channel of one axis."""
    kind = type(op)
    rank = len(view.input_tensors[0].shape)
    trace = ins[0] if ins else {}
    config = _graph.settings(op)
    problem = _variables_problem(op, rule)
    if kind in DEPTHWISES or rule.per_group:
        axes = [1 if _channels_first(op) else rank - 1]
        if not problem and rule.per_group and view.input_tensors[0].shape[axes[0]] != config["groups"]:
            problem = f"its {config['groups']} groups do not match its input channels"
        if not _elementwise(config.get("activation", "linear")):
            problem = problem or f"its activation {config.get('activation')!r} mixes channels"
    else:
        axis = config.get("axis", -1)  # LayerScale: the last axis
        axes = sorted({int(x) % rank for x in (axis if isinstance(axis, (list, tuple)) else [axis])})
    if problem:
        a.problems[name] = problem
        return _unknown(a, view, ins, f"they flow into {name!r} ({kind.__name__}), which cannot be sliced: {problem}")
    if len(axes) != 1:
        why = f"they flow into {name!r} ({kind.__name__}), which normalises over axes {axes} together"
        return [_keep(a, trace, {i: i for i in range(rank) if i not in axes}, why)]
    c = axes[0]
    if kind in DEPTHWISES or rule.per_group:
        out = _keep(a, trace, {c: c}, f"they flow into {name!r} ({kind.__name__}) along a spatial axis")
    else:
        out = dict(trace)
    layout = trace.get(c)
    _read(a, name, layout)
    if layout is None:
        return [out]
    _register(a, name, op, "channelwise")
    dm = int(config.get("depth_multiplier", 1)) if kind in DEPTHWISES else (rule.per_group or 1)
    out[c] = _expand(layout, dm)
    return [out]


def _flatten(a, view, op, trace, name):
    shape = tuple(view.input_tensors[0].shape)
    rank = len(shape)
    if not trace:
        return {}
    order = list(range(rank))
    if _channels_first(op) and rank > 2:  # Keras moves the channels last before flattening
        order = [0] + list(range(2, rank)) + [1]
    if len(trace) != 1 or any(d is None for d in shape[1:]):
        a.block_trace(trace, f"they flow into {name!r} (Flatten), whose input layout kerasnb cannot follow")
        return {}
    (axis, layout), = trace.items()
    position = order.index(axis)
    dims = [shape[i] for i in order]
    outer = int(np.prod(dims[1:position])) if position > 1 else 1
    inner = int(np.prod(dims[position + 1:])) if position + 1 < rank else 1
    return {1: _repeat(_expand(layout, inner), outer)}


def _reshape(a, view, op, trace, name):
    if not trace:
        return {}
    if view.n_calls > 1:
        a.block_trace(trace, f"they flow into {name!r} (Reshape), which is shared")
        return {}
    in_shape = tuple(view.input_tensors[0].shape)
    out_shape = tuple(view.outputs[0].shape)
    target = tuple(_graph.settings(op)["target_shape"])
    in_rank, out_rank = len(in_shape), len(out_shape)
    out = {}
    for axis, layout in trace.items():
        if axis == in_rank - 1 and out_shape[-1] is not None and out_shape[-1] == in_shape[-1] and \
                None not in in_shape[1:] + out_shape[1:]:
            out[out_rank - 1] = layout
        elif axis == in_rank - 1 and in_rank == 2 and len(layout) == 1 and \
                out_shape[-1] == width(((1, layout[0][1]),)):
            out[out_rank - 1] = ((1, layout[0][1]),)  # un-flatten: the channel pattern becomes the last axis again
        elif axis < out_rank and in_shape[1:axis + 1] == out_shape[1:axis + 1] and None not in in_shape[1:axis + 1]:
            out[axis] = layout  # the axes up to this one are untouched
        else:
            a.block(layout, f"they flow into {name!r} (Reshape to {target}), which does not keep the channel axis")
    sized = {j: layout for j, layout in out.items() if target and target[j - 1] != -1}
    if sized:
        _register(a, name, op, "reshape")
        a.reads[name] = list(sized.values())
        a.reshape_layout[name] = sized
    return out


def _merge(a, view, op, ins, name, concat_axis):
    """Add / Multiply / ... (``concat_axis`` None) or Concatenate along ``concat_axis``."""
    kind = type(op).__name__
    tensors = view.input_tensors
    ranks = {len(t.shape) for t in tensors}
    if len(ranks) != 1:
        return _unknown(a, view, ins, f"they are joined by {name!r} ({kind}) with a tensor of another rank")[0]
    out = {}
    for axis in sorted({ax for trace in ins for ax in trace}):
        if axis == concat_axis:
            continue
        traced = [trace[axis] for trace in ins if axis in trace]
        others_broadcast = all(axis in trace or t.shape[axis] == 1 for trace, t in zip(ins, tensors))
        if others_broadcast and all(_pattern(l) == _pattern(traced[0]) for l in traced):
            for other in traced[1:]:
                for s1, s2 in zip(spaces_of(traced[0]), spaces_of(other)):
                    a.union(s1, s2)
            out[axis] = traced[0]
        else:
            why = (f"they are joined by {name!r} ({kind}) with channels laid out differently (broadcast, split, or a "
                   "tensor kerasnb cannot trace), so they cannot be resized together")
            for layout in traced:
                a.block(layout, why)
    if concat_axis is not None:
        blocks, record = [], []
        for trace, t in zip(ins, tensors):
            layout = trace.get(concat_axis)
            if layout is None:
                size = t.shape[concat_axis]
                if size is None:
                    return _unknown(a, view, ins, f"they are joined by {name!r} ({kind}) with a tensor of unknown "
                                                  "width")[0]
                layout = _single(a.new_space(size), size)  # opaque: stays whole
            record.append((id(t), layout))
            blocks.extend(layout)
        a.concats[id(view.node)] = (name, record)
        out[concat_axis] = _canonical(blocks)
    return out
