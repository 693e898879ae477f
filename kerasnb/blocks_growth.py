"""Block expansion: add transformer (or residual) blocks that start by adding nothing.

A pre-norm block computes ``x + attention(norm(x)) + ffn(norm(...))``: each branch ends in an output
projection. A copy of a trained block with those projections set to zero passes its input through
unchanged, so the grown model computes exactly what it did, and the new block starts from trained
weights everywhere else (LLaMA-Pro's block expansion). On a plain functional residual block
``x + f(x)`` (named by its Add layer) the last layer of ``f`` is zeroed instead.

``grow_blocks`` inserts one :class:`GrowBlock` edit per position. Its piece (:class:`BlockCopy` or
:class:`BranchCopy`) makes the new layers inside the rebuild, from the configs of the model's own
layers, and gives them the copied values through a weight rule, so a replayed edit is as exact as
the first one and no variable is ever shared. A keras-hub block is checked after the rebuild: run
on a random input with the call's own keyword tensors, the copy must give back its input exactly,
or the grow is refused (a post-norm block, a scaled residual, a projection kerasnb did not find).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import keras
import numpy as np

from . import _graph, _remake, _targets, activations, deepening
from ._pass import Record
from .edits import Insert
from .errors import IncompatibleShape, InvalidEdit, SurgeryError, UnsupportedLayer, first_line, surgery_errors_only
from .report import Status
from .weights import Outcome, carried_values

__all__ = ["grow_blocks", "grow_refusal", "GrowBlock", "BlockCopy", "BranchCopy"]

# The attribute names of the last projection of a block's branches in keras-hub's decoders (GPT-2,
# OPT, GPT-NeoX: _output_dense, _feedforward_output_dense; Gemma: output_dense, ffw_linear; Llama,
# Mistral, Qwen, Phi-3: the same pairs; Falcon: dense_4h_to_h; Bloom: _mlp_output_dense;
# SmolLM3: o_proj, down_proj). Finding them by name is checked by running the copy (see module doc).
_PROJECTION = re.compile(
    r"^_?(output_dense|o_proj|out_proj|c_proj|ffw_linear|dense_4h_to_h|mlp_output_dense|"
    r"feedforward_output_dense|down_proj|fc2|output_projection|attention_output|ffn_output)$")
# An expert bank (a mixture of experts) holds every expert's down projection as one variable.
_EXPERT_OUTPUT = re.compile(r"(output|down)")
# Layers that keep zero at zero, between the zeroed layer and the end of a residual branch.
_PASSES_ZERO = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                keras.layers.AlphaDropout, keras.layers.Identity, keras.layers.ReLU, keras.layers.LeakyReLU,
                keras.layers.Activation)
_ZEROABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D,
             keras.layers.Conv3D, keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
             keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
             keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, keras.layers.BatchNormalization,
             keras.layers.LayerNormalization)
_WHAT_WORKS = ("a pre-norm transformer block of a keras-hub model (GPT-2, OPT, GPT-NeoX, Gemma, Llama, Mistral, "
               "Mixtral, Qwen, Phi-3, Falcon, Bloom...), given by its path (e.g. 'gpt2_backbone/transformer_layer_1'), "
               "or the Add layer that closes a residual block x + f(x) of a functional model (or the relu after it, "
               "as in ResNet)")


@surgery_errors_only
def grow_blocks(model, after, copy_of=None):
    """Add blocks that start as the identity (block expansion): same outputs, more blocks to train.

    Each new block is a copy of a trained block with the projections that end its branches set to
    zero, so it adds nothing to the residual stream: the grown model computes exactly what it did.
    Blocks can go at any positions, several at once.

    Two kinds of block are grown:

    - a **pre-norm transformer block** of a keras-hub model (GPT-2, OPT, GPT-NeoX, Gemma, Llama,
      Mistral, Mixtral, Qwen, Phi-3, Falcon, Bloom, ...), named by its path
      (``"gpt2_backbone/transformer_layer_1"`` in a task, ``"transformer_layer_1"`` in a backbone):
      its attention output projection and its feed-forward output projection (every expert's, in
      a mixture of experts) are zeroed. The copy is called with the keyword tensors the block
      after which it sits receives (its padding mask). A task stays a task whose ``generate()``
      gives the same tokens. Post-norm blocks (BERT's) are refused: they normalise after adding
      their branches, so no copy of them passes its input through;
    - a **residual block** ``x + f(x)`` of a functional model, named by the Add layer that closes
      it: ``f``'s layers are copied and its last layer with weights is zeroed (Dense, EinsumDense,
      convolutions: kernel and bias; BatchNormalization and LayerNormalization: scale and
      offset), where what follows it in ``f`` keeps zero at zero. A block ``relu(x + f(x))``
      whose ``x`` is never negative (ResNet's identity blocks) can be named by its relu
      (``"conv2_block2_out"``): the copy ends with a relu too.

    Args:
        model: A built functional model, keras-hub backbone or task; it is not changed.
        after: The block after which a new one goes, or a list of them (the same block twice
            grows two). Target forms: ``"name"`` (or the layer object), ``"outer/inner"``.
        copy_of: The block every new one copies (the same kind and width as the one it follows),
            or None (the default) for a copy of the block it follows.

    Returns:
        SurgeryResult: ``.model``, ``.report`` (each new layer ``new``, reason ``copy of X,
        output projections zero``; the blocks after it ``kept_input_changed``, reading the same
        values), ``.edits``, ``.notes``.

    Raises:
        LayerNotFound: a target names no layer.
        UnsupportedLayer: the target is not a block kerasnb can grow (what works is named), a
            post-norm block, or a block whose zeroed copy does not pass its input through.
        IncompatibleShape: ``copy_of`` gives another width than the block it follows.
        InvalidEdit: ``after`` is empty or not targets.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
        >>> block = keras.layers.Add(name="block")([inputs, keras.layers.Dense(8, name="f")(hidden)])
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(block))
        >>> result = kerasnb.grow_blocks(model, after="block")
        >>> [(row.layer, str(row.status)) for row in result.report if row.status == "new"]
        [('hidden_copy', 'new'), ('f_copy', 'new'), ('block_copy', 'new')]
        >>> result.report.row("f_copy").reason
        'copy of f in block, zeroed: the block adds nothing until trained'
        >>> x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
        >>> bool(np.array_equal(model(x), result.model(x)))
        True
    """
    from .surgery import apply

    targets = list(after) if isinstance(after, list) else [after]
    if not targets:
        raise InvalidEdit(f"grow_blocks needs at least one block to grow after: {_WHAT_WORKS}. Received: after=[]")
    source = None if copy_of is None else _block_at(model, copy_of, "copy_of")
    edits, checks = [], {}  # checks: a transformer copy's reason -> (the block it follows, the block it copies)
    for target in targets:
        anchor = _block_at(model, target, "after")
        copied = source or anchor
        if copied.kind != anchor.kind:
            raise UnsupportedLayer(f"grow_blocks copies a block of the kind it follows; {copied.path!r} is a "
                                   f"{copied.what} and {anchor.path!r} a {anchor.what}. Received: after={target!r}, "
                                   f"copy_of={copy_of!r}")
        if copied.width != anchor.width:
            raise IncompatibleShape(f"grow_blocks: {copied.path!r} works on width {copied.width} and {anchor.path!r} "
                                    f"gives width {anchor.width}; a copy must fit the stream it joins. Received: "
                                    f"after={target!r}, copy_of={copy_of!r}")
        piece = copied.piece()
        edits.append(GrowBlock(piece, after=anchor.given))
        if isinstance(piece, BlockCopy):
            checks.setdefault(piece.reason, (anchor, copied))
    result = apply(model, edits)
    for row in result.report:  # each copy of a transformer block: checked by running it
        if row.status == Status.NEW and row.reason in checks:
            _check_identity(result.model, row.layer, *checks[row.reason])
    notes = [f"{len(targets)} block(s) grown, each a copy of a trained block that adds nothing yet: the model "
             "computes exactly what it did. Train it (the new blocks alone, or all) to use them."]
    return dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))


def grow_refusal(model, target) -> str:
    """Why ``grow_blocks(model, after=target)`` would be refused, without building anything; ``""``
    when a block can be grown there (its copy is still checked when it is made).

    Examples:
        >>> from kerasnb.blocks_growth import grow_refusal
        >>> inputs = keras.Input((4,), name="x")
        >>> block = keras.layers.Add(name="block")([inputs, keras.layers.Dense(4, name="f")(inputs)])
        >>> model = keras.Model(inputs, block)
        >>> grow_refusal(model, "block")
        ''
        >>> grow_refusal(model, "f")[:33]
        'grow_blocks grows blocks: a pre-n'
    """
    try:
        _block_at(model, target, "after")
    except SurgeryError as refusal:
        return str(refusal)
    return ""


@dataclass(frozen=True)
class GrowBlock(Insert):
    """Edit: :class:`kerasnb.Insert` of a copied block that starts as the identity (what
    ``grow_blocks`` returns in ``.edits``); it is called with the keyword tensors of the call it
    follows (a padding mask).

    Examples:
        >>> inputs = keras.Input((4,), name="x")
        >>> block = keras.layers.Add(name="block")([inputs, keras.layers.Dense(4, name="f")(inputs)])
        >>> model = keras.Model(inputs, block)
        >>> edit = kerasnb.grow_blocks(model, after="block").edits[0]
        >>> type(edit).__name__, edit.target
        ('GrowBlock', 'block')
    """

    keeps_call_keywords: bool = True


# ----------------------------------------------------------------------------- which block


@dataclass(frozen=True)
class _Block:
    kind: str  # "transformer" or "residual"
    path: str
    given: object
    layer: object
    width: int
    call: object  # the NodeView of its call
    projections: tuple = ()  # transformer: attribute paths of the zeroed sub-layers
    experts: tuple = ()  # transformer: attribute paths of expert banks (their output variables zeroed)
    branch: tuple = ()  # residual: the NodeViews of f, in order
    skip_first: bool = True  # residual: the Add reads x first
    stream_keyword: str | None = None  # transformer: the keyword its call gets the stream by, if not positional
    add_path: str = ""  # residual: the Add's path (``path`` is the block's last layer: the Add or its relu)
    activation: object = None  # residual: the relu after the Add that ends the block (ResNet's), or None
    zeroed: object = None  # residual: the NodeView of f whose layer is zeroed

    @property
    def skip(self):
        """Residual: the Add's input that is the block's input ``x``."""
        return self.call.input_tensors[0 if self.skip_first else 1]

    @property
    def out(self):
        """Residual: the Add's input that is ``f(x)``."""
        return self.call.input_tensors[1 if self.skip_first else 0]

    @property
    def what(self) -> str:
        return "transformer block" if self.kind == "transformer" else "residual block (an Add)"

    def piece(self):
        if self.kind == "transformer":
            return BlockCopy(self.path, self.projections, self.experts,
                             f"copy of {self.layer.name}, output projections zero", self.stream_keyword)
        return BranchCopy(self.add_path, self.path if self.activation is not None else None)


def _block_at(model, target, argument):
    if isinstance(target, (list, tuple)) and not _targets.is_call_target(target):
        raise InvalidEdit(f"{argument}= takes one block per entry: a path or a layer. Received: {argument}={target!r}")
    found = _targets.resolve(model, target, what="grow_blocks")
    layer, path = found.layer, found.path
    if isinstance(layer, keras.layers.Add):
        return _residual_block(found, target)
    if _plain_relu(layer) and not _graph.is_input_layer(layer):
        return _residual_block_with_relu(model, found, target)
    if _graph.is_input_layer(layer) or _graph.is_graph_model(layer) or not _graph.tracked_layers(layer):
        raise UnsupportedLayer(f"grow_blocks grows blocks: {_WHAT_WORKS}. {path!r} is a {type(layer).__name__}. "
                               f"Received: {argument}={target!r}")
    return _transformer_block(found, target, argument)


def _transformer_block(found, target, argument):
    layer, path = found.layer, found.path
    received = f"Received: {argument}={target!r} ({type(layer).__name__})"
    if getattr(layer, "normalize_first", None) is False:
        raise UnsupportedLayer(
            f"grow_blocks: {path!r} is a post-norm block (normalize_first=False, as in BERT): it normalises after "
            "adding its branches to the stream, so even with its output projections zero a copy changes what "
            "flows on (LayerNorm(x) is not x). No copy of it can start as the identity. What works: "
            f"{_WHAT_WORKS}. {received}")
    call = found.single_call()
    inputs = [t for t in keras.tree.flatten(call.args) if isinstance(t, keras.KerasTensor)]
    outputs = [t for t in call.outputs if isinstance(t, keras.KerasTensor)]
    stream_keyword = None
    if not inputs and len(outputs) == 1:  # called with the stream by keyword (Falcon's inputs=x)
        stream_keyword = next((key for key, value in call.kwargs.items() if isinstance(value, keras.KerasTensor)
                               and tuple(value.shape) == tuple(outputs[0].shape)), None)
        inputs = [call.kwargs[stream_keyword]] if stream_keyword else []
    if len(inputs) != 1 or len(outputs) != 1 or tuple(inputs[0].shape) != tuple(outputs[0].shape):
        raise UnsupportedLayer(
            f"grow_blocks: {path!r} takes {len(inputs)} positional tensor(s) and gives {len(outputs)} "
            f"({[tuple(t.shape) for t in outputs]}); a block kerasnb grows reads the stream and gives it back in the "
            f"same shape (x -> x + branches). {received}")
    projections, experts = [], []
    for attribute, sub in _graph.named_sublayers(layer):
        name = attribute.rsplit(".", 1)[-1]
        if any(attribute.startswith(p + ".") for p in projections):
            continue
        if _PROJECTION.match(name) and sub.weights:
            projections.append(attribute)
        elif type(sub).__name__.endswith("Experts") and any(_EXPERT_OUTPUT.search(_short(v)) for v in sub.weights):
            experts.append(attribute)
    if not projections and not experts:
        raise UnsupportedLayer(
            f"grow_blocks: kerasnb found no output projection in {path!r} ({type(layer).__name__}): none of its "
            "sub-layers is named like one (output_dense, o_proj, out_proj, ffw_linear, down_proj, "
            f"feedforward_output_dense...). What works: {_WHAT_WORKS}. {received}")
    return _Block("transformer", path, found.given, layer, int(outputs[0].shape[-1]), call, tuple(projections),
                  tuple(experts), stream_keyword=stream_keyword)


def _plain_relu(layer) -> bool:
    """max(x, 0), nothing more: the identity on what a relu gave."""
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
    return type(layer) is keras.layers.Activation and activations.name_of(layer.activation) == "relu"


def _residual_block_with_relu(model, found, target):
    """A block ``relu(x + f(x))`` named by its relu (ResNet's ``conv2_block2_out``): where ``x`` is never
    negative, relu passes ``x + 0`` through unchanged, so the copy may end with the relu too."""
    received = f"Received: {target!r} ({type(found.layer).__name__} {found.layer.name!r})"
    call = found.single_call()
    index = _graph.graph_index(found.scope)
    producer = index.producer.get(id(call.input_tensors[0])) if len(call.input_tensors) == 1 else None
    if producer is None or not isinstance(producer.operation, keras.layers.Add):
        raise UnsupportedLayer(f"grow_blocks grows blocks: {_WHAT_WORKS}; a relu ends one when it follows the Add of "
                               f"x + f(x). {found.path!r} follows no Add. {received}")
    prefix = "/".join(scope.name for scope in found.scopes[1:])
    add_path = f"{prefix}/{producer.operation.name}" if prefix else producer.operation.name
    block = _residual_block(_targets.resolve(model, add_path, what="grow_blocks"), target)
    skip_producer = index.producer.get(id(block.skip))
    if skip_producer is None or not deepening.never_negative(skip_producer.operation):
        raise UnsupportedLayer(
            f"grow_blocks: {found.path!r} is relu(x + f(x)) with an x that can be negative, so a copy ending in the "
            f"relu would change it (relu(x + 0) is not x). What would work: grow after the Add {add_path!r} (the "
            f"copy then ends before the relu). {received}")
    return dataclasses.replace(block, path=found.path, given=found.given, add_path=add_path, activation=found.layer)


def _residual_block(found, target):
    add, path = found.layer, found.path
    call = found.single_call()
    received = f"Received: {target!r} (Add {add.name!r})"
    inputs = call.input_tensors
    if len(inputs) != 2:
        raise UnsupportedLayer(f"grow_blocks: the Add {path!r} adds {len(inputs)} tensors; a residual block is "
                               f"x + f(x), two. {received}")
    index = _graph.graph_index(found.scope)
    tried = []
    for skip_first in (True, False):
        skip, out = (inputs[0], inputs[1]) if skip_first else (inputs[1], inputs[0])
        branch, why = _branch_between(index, skip, out)
        if branch is None:
            tried.append(why)
            continue
        zeroed = _zeroed_in(branch, out, received)  # refuses a branch whose end cannot be set to zero
        return _Block("residual", path, found.given, add, int(out.shape[-1]), call, branch=tuple(branch),
                      skip_first=skip_first, add_path=path, zeroed=zeroed)
    raise UnsupportedLayer(f"grow_blocks: {path!r} does not close a residual block x + f(x) that a copy can follow: "
                           f"{'; '.join(dict.fromkeys(tried))}. What works: {_WHAT_WORKS}. {received}")


def _branch_between(index, skip, out):
    """``(calls of f in graph order, None)`` where ``out = f(skip)`` reads nothing but ``skip``, or
    ``(None, why not)``."""
    if out is skip:
        return None, "it adds a tensor to itself"
    found, stack = {}, [out]
    while stack:
        tensor = stack.pop()
        if tensor is skip:
            continue
        view = index.producer.get(id(tensor))
        if view is None or _graph.is_input_layer(view.operation):
            return None, ("neither input is computed from the other alone (x + f(x) needs one input to be the "
                          "block's input and the other f of it; a projection shortcut, as in the first block of a "
                          "ResNet stage, is not)")
        if id(view.node) in found:
            continue
        if _graph.is_graph_model(view.operation):
            return None, f"its branch holds the nested model {view.operation.name!r}"
        found[id(view.node)] = view
        stack.extend(view.input_tensors)
    if not any(skip is t for v in found.values() for t in v.input_tensors):
        return None, "its branch does not read the block's input"
    return [v for v in index.order if id(v.node) in found], None


def _zeroed_in(branch, out, received):
    """The call of ``f`` whose layer is zeroed: the last one with weights, where every call after it
    keeps zero at zero."""
    by_output = {id(t): v for v in branch for t in v.outputs}
    view = by_output[id(out)]
    while True:
        layer = view.operation
        if isinstance(layer, _ZEROABLE) and layer.weights:
            _check_zeroable(layer, received)
            return view
        if not isinstance(layer, _PASSES_ZERO) or not _keeps_zero(layer) or len(view.input_tensors) != 1:
            raise UnsupportedLayer(
                f"grow_blocks: the residual branch ends in {layer.name!r} ({type(layer).__name__}), which kerasnb "
                "cannot set to give zero (it zeroes Dense, EinsumDense, convolutions, BatchNormalization and "
                f"LayerNormalization, followed only by layers that keep zero at zero). {received}")
        inner = view.input_tensors[0]
        if id(inner) not in by_output:
            raise UnsupportedLayer(f"grow_blocks: the residual branch has no layer with weights to zero. {received}")
        view = by_output[id(inner)]


def _check_zeroable(layer, received) -> None:
    if isinstance(layer, keras.layers.BatchNormalization) and not (layer.scale and layer.center):
        raise UnsupportedLayer(f"grow_blocks: the branch ends in {layer.name!r}, a BatchNormalization without "
                               f"scale and offset, which always gives a normalised value, never zero. {received}")
    if isinstance(layer, keras.layers.LayerNormalization) and not (layer.scale and layer.center):
        raise UnsupportedLayer(f"grow_blocks: the branch ends in {layer.name!r}, a LayerNormalization without "
                               f"scale and offset, which never gives zero. {received}")
    if hasattr(layer, "activation") and not _keeps_zero(layer):
        raise UnsupportedLayer(f"grow_blocks: the branch ends in {layer.name!r}, whose activation does not give "
                               f"zero at zero, so zeroing its weights does not make it add nothing. {received}")


def _keeps_zero(layer) -> bool:
    """Zero in gives zero out (an activation's value at 0)."""
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.threshold) <= 0.0 and (layer.max_value is None or float(layer.max_value) >= 0.0)
    function = getattr(layer, "activation", None)
    if function is None:
        return True
    value = keras.ops.convert_to_numpy(function(keras.ops.zeros((1,), "float32")))
    return bool(np.all(value == 0))


def _short(variable) -> str:
    return variable.path.rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- the pieces the rebuild calls


def _source(rebuild, path):
    """The layer of the model being edited at ``path`` (paths are the top model's)."""
    for layer in rebuild.state.source_layers:
        if rebuild.state.old_paths.get(id(layer)) == path:
            return layer
    raise InvalidEdit(f"grow_blocks copies {path!r}, which the model being edited no longer has (an earlier step "
                      f"removed or replaced it). Received: copy of {path!r}")


def _remade(rebuild, layer, name):
    """A new, unbuilt layer made as ``layer`` was (by the route the rebuild makes that layer again:
    its config, else the arguments it was made with, else its model's config), named ``name``."""
    name = rebuild.names.unique(name)
    override = rebuild.state.overrides.get(id(layer))
    failure = None
    if override is None:
        try:
            config = _graph.config_of(layer, f"The layer {layer.name!r}")
        except UnsupportedLayer as refusal:  # a get_config() that raises (keras-hub's Llama block)
            config, failure = None, refusal
        if config is not None:
            config["name"] = name
            try:
                return _remake.from_config(type(layer), config)
            except Exception as error:  # a config that does not make the layer again
                failure = error
    made = override[1]() if override is not None else _remake.from_arguments(layer)
    if made is None:
        raise UnsupportedLayer(f"grow_blocks cannot make {layer.name!r} ({type(layer).__name__}) again, neither from "
                               f"its config nor from the arguments it was made with ({first_line(failure)}). "
                               f"Received: a copy of {layer.name!r}") from None
    _graph.drop_all_calls(made)  # a call from an earlier, abandoned attempt of the rebuild
    _graph.rename(made, name)
    return made


def _copying(zeroed_variables, reason):
    """A weight rule: the old layer's values, zero for the variables ``zeroed_variables(new)`` picks."""
    def rule(old, new):
        zero = {id(v) for v in zeroed_variables(new)}
        values = [(variable, keras.ops.zeros(variable.shape, variable.dtype) if id(variable) in zero else value)
                  for variable, value in carried_values(old, new)]
        return Outcome(Status.NEW, reason, values)
    return rule


@dataclass(frozen=True)
class BlockCopy:
    """A copy of the transformer block at ``source`` with the sub-layers at ``projections`` (and the
    output variables of the expert banks at ``experts``) zero."""

    source: str
    projections: tuple
    experts: tuple
    reason: str
    stream_keyword: str | None = None  # the block takes the stream by this keyword (Falcon's inputs=)

    def __call__(self, *args, **kwargs):  # the rebuild hands it every keyword the block's call had
        raise TypeError("a BlockCopy is called by the rebuild (kerasnb_build)")

    def kerasnb_build(self, rebuild, args, kwargs, block, anchor):
        old = _source(rebuild, self.source)
        new = _remade(rebuild, old, f"{old.name}_copy")
        if self.stream_keyword is not None:  # the stream goes in by keyword, as the copied block's call had it
            args, kwargs = (), {**kwargs, self.stream_keyword: args[0]}
        out = _remake.call_deferring(new, args, kwargs)
        state = rebuild.state
        state.record(new, Record(None, Status.NEW, self.reason))
        state.sources[id(new)] = (old, None)  # trainable flags as the copied block's
        state.ruled.append((old, new, _copying(self._zeroed, self.reason)))
        return out

    def _zeroed(self, new):
        subs = dict(_graph.named_sublayers(new))
        zero = [v for path in self.projections for v in subs[path].weights]
        zero += [v for path in self.experts for v in subs[path].weights if _EXPERT_OUTPUT.search(_short(v))]
        return zero


@dataclass(frozen=True)
class BranchCopy:
    """A copy of the residual block closed by the Add at ``source``: ``f`` copied, its last layer
    with weights zero, and a new Add."""

    source: str
    activation: str | None = None  # the relu after the Add that ends the block, copied too

    def __call__(self, *args, **kwargs):
        raise TypeError("a BranchCopy is called by the rebuild (kerasnb_build)")

    def kerasnb_build(self, rebuild, args, kwargs, block, anchor):
        add = _source(rebuild, self.source)
        found = _residual_block(_targets.resolve(rebuild.model, add, what="grow_blocks"), self.source)
        (x,) = args
        local, state = {id(found.skip): x}, rebuild.state
        for view in found.branch:
            op = view.operation
            zero = view is found.zeroed
            reason = (f"copy of {op.name} in {add.name}, zeroed: the block adds nothing until trained" if zero
                      else f"copy of {op.name} in {add.name}")
            if isinstance(op, keras.layers.Layer):
                new = _remade(rebuild, op, f"{op.name}_copy")
                rule = _copying((lambda layer: list(layer.weights)) if zero else (lambda layer: []), reason)
                state.ruled.append((op, new, rule))
                state.sources[id(new)] = (op, None)
            else:  # a raw keras.ops call: stateless
                new = type(op).from_config(op.get_config())
            call_args, call_kwargs = view.fill_in(local)
            outputs = _remake.call_deferring(new, call_args, call_kwargs)
            state.record(new, Record(None, Status.NEW, reason))
            for old_t, new_t in zip(view.outputs, keras.tree.flatten(outputs)):
                local[id(old_t)] = new_t
        new_add = _remade(rebuild, add, f"{add.name}_copy")
        summed = [x, local[id(found.out)]] if found.skip_first else [local[id(found.out)], x]
        result = _remake.call_deferring(new_add, (summed,), {})
        state.record(new_add, Record(None, Status.NEW, f"copy of {add.name}: the copied block's residual add"))
        if self.activation is not None:
            relu = _source(rebuild, self.activation)
            new_relu = _remade(rebuild, relu, f"{relu.name}_copy")
            result = _remake.call_deferring(new_relu, (result,), {})
            state.record(new_relu, Record(None, Status.NEW, f"copy of {relu.name}: the block's relu (its input "
                                                             "is never negative, so it passes it through)"))
        return result


# ----------------------------------------------------------------------------- the check


def _check_identity(model, path, anchor, copied) -> None:
    """Run the grown copy of ``copied`` at ``path`` on a random input with the keyword tensors of the
    call of ``anchor`` (the block it follows): it must give its input back exactly, or the grow is refused."""
    layer = _targets.layer_at(model, path)
    x_tensor = ([t for t in keras.tree.flatten(anchor.call.args) if isinstance(t, keras.KerasTensor)]
                or [anchor.call.kwargs[anchor.stream_keyword]])[0]
    rng = np.random.default_rng(0)
    length = 5
    shape = tuple(2 if i == 0 else (length if d is None else d) for i, d in enumerate(x_tensor.shape))
    x = keras.ops.cast(rng.normal(size=shape).astype("float32"), layer.compute_dtype)
    kwargs = {key: _sample(value, length) for key, value in anchor.call.kwargs.items()
              if key != anchor.stream_keyword}
    try:
        y = layer(**{anchor.stream_keyword: x}, **kwargs) if anchor.stream_keyword else layer(x, **kwargs)
    except Exception as error:
        raise UnsupportedLayer(f"grow_blocks could not check the copy {path!r} of {copied.path!r} on a random input "
                               f"({type(error).__name__}: {first_line(error)}), so it "
                               f"cannot promise it adds nothing. Received: copy of {copied.path!r}") from None
    y = keras.tree.flatten(y)[0]
    gap = float(np.max(np.abs(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
                              - keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))))
    if gap != 0.0:
        raise UnsupportedLayer(
            f"grow_blocks: a copy of {copied.path!r} ({type(copied.layer).__name__}) with "
            f"{', '.join(copied.projections + copied.experts)} zeroed does not pass its input through (largest "
            f"difference {gap:.3g}): its output is not x + branches (a post-norm block, a scaled residual, or a "
            f"branch ending in a projection kerasnb did not find). What works: {_WHAT_WORKS}. "
            f"Received: after={anchor.given!r}")


def _sample(value, length):
    """A concrete value for a keyword argument of the block's call: masks and ids as ones."""
    def one(v):
        if not isinstance(v, keras.KerasTensor):
            return v
        shape = tuple(2 if i == 0 else (length if d is None else d) for i, d in enumerate(v.shape))
        return keras.ops.ones(shape, v.dtype)
    return keras.tree.map_structure(one, value)
