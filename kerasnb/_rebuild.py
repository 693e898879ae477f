"""The one walk: rebuild a model call by call, with a plan applied.

It mirrors Keras's own ``Function._run_through_graph``: every call of the graph is replayed on
new tensors with all its arguments (positional and keyword, tensors or not), in an order that
keeps each layer's calls in Keras's order. A call the plan replaces or deletes runs the plan's
action instead. Every layer made is recorded (:class:`Record`): where it comes from, and whether
it computes what it did before on the same inputs.

New layers are built inside :func:`kerasnb._graph.deferred_variables`, so no random values are
drawn for variables that get old values: each layer's variables come from its weight rule
(:mod:`kerasnb.weights`), applied once all layers are built.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from dataclasses import dataclass
from typing import Any

import keras

from . import _graph, _inside, _invariants, weights
from ._plan import Block, DeleteCall, Plan, ReplaceSpan
from .errors import IncompatibleShape, InvalidEdit, NameClash, SurgeryError, UnsupportedLayer, first_line
from .report import Status


@dataclass
class Record:
    """What one pass did to one layer of the new model."""

    prev_path: str | None
    status: Status | None  # what its weight rule did (None until a Transform's rule has run)
    reason: str = ""
    faithful: bool = True  # computes the same as prev_path did, on the same inputs
    config_changed: str = ""
    note: str = ""  # words for a kept layer (e.g. "LoRA rank 8")
    inner: tuple = ()  # for a rebuilt nested model: its layers' new ids


class Pass:
    """State of one rebuild of ``model`` (None for the copy of a block model a user brings in)."""

    def __init__(self, model=None, overrides=None):
        self.records: dict[int, Record] = {}  # id(new layer) -> record
        self.layers: dict[int, Any] = {}  # id(new layer) -> new layer (keeps ids alive)
        self.copies: list = []  # (old layer, new layer) whose weights are copied if they fit
        self.clones: dict[int, Any] = {}  # id(old op) -> its one new op in this pass
        # every layer of the model being edited, nested ones too: a callable must not call them
        walked = list(_graph.walk_layers(model)) if model is not None else []
        self.source_layers: list = [layer for _, layer in walked]
        self.old_paths: dict[int, str] = {id(layer): path for path, layer in walked}  # one path per layer
        self.pretrained: list = []  # (user layer, new layer, edit) brought in with their own weights
        # id(new layer) -> (the layer its trainable flags come from, the flag an edit sets or None)
        self.sources: dict[int, tuple] = {}
        self.slices: list = []  # (old layer, new layer, (kept input indices, kept output indices))
        self.ruled: list = []  # (old layer, new layer, a Transform's weight rule)
        self.notes: list[str] = []
        self.outputs_faithful: dict[int, bool] = {}  # id(new nested model) -> its outputs unchanged
        # Untouched layers: id(old layer) -> the graph model holding it, and whether every call of
        # it saw inputs of the shapes it saw before (then its variables must come out the same).
        self.untouched: dict[int, Any] = {}
        self.same_input_shapes: dict[int, bool] = {}
        # id(old layer) -> (route, a function making its new layer) for layers whose own config
        # does not round-trip (see _faithful_twins)
        self.overrides: dict[int, Any] = overrides or {}
        # Every variable once, with its ties (see _invariants): (old owner, new owner, new sub-layer
        # called as a node), and id(old variable) -> new variable of layers tracked but never called.
        self.shared_sublayers: list = []
        self.carried: dict[int, Any] = {}
        self.accounted: set[int] = set()  # ids of old variables a note or a removed row accounts for

    def record(self, layer, rec: Record):
        self.records[id(layer)] = rec
        self.layers[id(layer)] = layer


_PROGRESS = contextvars.ContextVar("kerasnb_rebuild_progress", default=None)


@contextlib.contextmanager
def progress(callback):
    """Inside this block, every rebuild calls ``callback(done, total)`` as it replays the calls of
    the model being edited (``done`` of ``total``; once more at the end with ``done == total``).
    The editor draws a progress bar from it; anything ``callback`` raises stops the rebuild."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def run_pass(model, plan: Plan) -> tuple:
    """Rebuild ``model`` with ``plan`` applied: ``(new model, Pass)``; the Pass has the records."""
    overrides: dict = {}
    slow = False  # some layer creates variables outside build(): no deferral
    while True:
        state = Pass(model, overrides)
        try:
            if slow:  # as before: no check of lost arguments (a layer whose own config fails still retries)
                new_model = _GraphRebuild(model, plan, state, "").run()
                _invariants.carry_uncalled(model, new_model, state)
                _transfer_weights(state)
                break
            with _graph.deferred_variables():
                new_model = _GraphRebuild(model, plan, state, "").run()
                _invariants.carry_uncalled(model, new_model, state)
                lost = _lost_in_config(state)
                if lost:
                    raise _ConfigLost(lost)
                _transfer_weights(state)
        except _ConfigLost as retry:
            # The deferral dropped every variable of this attempt; try again with those layers
            # made another way (each layer takes each route once at most, so this ends).
            overrides = _faithful_twins(retry.layers, state, overrides, retry.refusals)
            continue
        except (ValueError, TypeError) as error:
            if slow or isinstance(error, SurgeryError) or not _graph.is_deferred_variable_error(error):
                raise
            slow = True  # rebuild the slow way
            continue
        break
    if overrides:
        routes = {"arguments": [], "model": [], "unsavable": []}
        for key, (route, _) in overrides.items():
            routes[route].append(repr(state.old_paths.get(key, "?")))
        if routes["arguments"]:
            state.notes.append(
                f"{', '.join(routes['arguments'])}: get_config() leaves out constructor arguments, so kerasnb made "
                "them again from the arguments Keras recorded, faithfully; the edited model's get_config() (and a "
                ".keras file of it) gives those arguments, so it loads back as it is."
            )
        if routes["model"]:
            state.notes.append(
                f"{', '.join(routes['model'])}: get_config() leaves out constructor arguments, so kerasnb made them "
                "again from their model's own config, faithfully. A .keras file of the edited model stores that "
                "incomplete config, so it would not load back as it is now; keep the weights with save_weights() "
                "and rebuild the architecture in code instead."
            )
        if routes["unsavable"]:
            state.notes.append(
                f"{', '.join(routes['unsavable'])}: their own get_config() or from_config() cannot make them again, so "
                "kerasnb made them again from their model's own config, faithfully. The edited model CANNOT be saved "
                "to a .keras file (Keras saves it layer by layer, from each layer's config; save() raises "
                "UnsupportedLayer): keep its weights with save_weights() and rebuild the architecture in code instead."
            )
    _apply_trainable(model, new_model, state)
    state.notes[:0] = plan.notes()
    _invariants.check(model, new_model, state)  # never a silently different model
    return new_model, state


def _apply_trainable(old_model, new_model, state: Pass) -> None:
    """Trainable flags as the original had them, sub-layers included, or as an edit set them.

    Done once every layer is built: a layer that makes sub-layers in build() (attention, a
    keras-hub block) would otherwise come back with trainable sub-layers under a frozen parent.
    """
    if new_model.trainable != old_model.trainable:
        new_model.trainable = old_model.trainable
    _flags_inside(new_model, state, inherited=None)


def _flags_inside(container, state: Pass, inherited) -> None:
    for layer in _graph.layers_in_order(container):
        source = state.sources.get(id(layer))
        if source is None:
            continue  # made by a callable: it follows its container
        old, explicit = source
        value = explicit if explicit is not None else inherited
        if _graph.is_graph_model(layer):
            if value is not None:
                _graph.set_flag(layer, value)
            elif layer.trainable != old.trainable:
                layer.trainable = old.trainable
            _flags_inside(layer, state, value)
        elif value is not None:
            _graph.force_trainable(layer, value)  # an edit's flag reaches every sub-layer
        else:
            _copy_flags(old, layer)


def _copy_flags(old, new) -> None:
    """Each sub-layer's flag as in ``old`` (parents first: setting a parent's flag sets its children's)."""
    olds, news = _graph.sublayers(old), _graph.sublayers(new)
    if len(olds) != len(news):  # a config change made other sub-layers: the layer's own flag only
        olds, news = olds[:1], news[:1]
    _graph.copy_flags(olds, news)  # not `n.trainable = ...`: see _graph.force_trainable
    # Flags set on single variables (a LoRA model where only the factors train) come along too.
    old_vars, new_vars = list(old.weights), list(new.weights)
    if len(old_vars) == len(new_vars):
        for ov, nv in zip(old_vars, new_vars):
            if nv.trainable != ov.trainable and tuple(nv.shape) == tuple(ov.shape):
                nv.trainable = ov.trainable


class _Dropped:
    """Stands for the input of a Concatenate whose branch a prune removed (filtered out of the call)."""

    shape = ()


_DROPPED = _Dropped()


class _GraphRebuild:
    """Rebuilding one graph (the model, a nested model, or a block a user brings in).

    Holds what every step of the walk shares: the plan of this graph, the pass's records, the
    new tensor standing for each old one, and which new tensors compute exactly what their old
    ones did (``faithful``), which is what decides ``kept`` against ``kept_input_changed``.
    """

    def __init__(self, model, plan: Plan, state: Pass, prefix: str, name: str | None = None,
                 only_extra: bool = False, call_shapes=None):
        self.call_shapes = call_shapes  # a nested model called once: the shapes its call now receives
        _graph.functional(model)  # clear error for an unbuilt nested model
        self.model, self.plan, self.state, self.prefix = model, plan, state, prefix
        self.only_extra = only_extra  # a Truncate needs only the inner outputs it takes out
        self.current_only_extra = False  # the call being replayed is such a nested model
        self.name = name or model.name
        self.names = _NameBook(_graph.layers_in_order(model))
        self.tensors: dict[int, Any] = {}  # id(old tensor) -> new tensor
        self.faithful: dict[int, int] = {}  # id(new tensor) -> id(old tensor) it stands for exactly
        self.taken_out: dict[int, Any] = {}  # id(old inner tensor of a nested model) -> new tensor (Truncate)
        self.outputs_faithful = False  # set by _model: every output computes what it did
        self.owners = None  # sub-layers also called as nodes of this graph (see _invariants.sublayer_owners)
        self.needed = None  # with a Truncate, the calls its outputs need

    def run(self):
        """The new model: inputs, then every call in order, then the outputs."""
        model, plan, state = self.model, self.plan, self.state
        new_inputs = [self._input(old_t, old_layer)
                      for old_t, old_layer in zip(_graph.input_tensors(model), _graph.input_layers(model))]
        clones = state.clones  # one clone per original op in the whole pass: layers tied across graphs stay tied
        called_here: set[int] = set()  # ids of the old ops called in this graph
        op_faithful: dict[int, bool] = {}  # every call of the op computes what it did before
        op_inputs_faithful: dict[int, bool] = {}  # every call of the op sees the inputs it saw before
        needed, only_extra = self._needed()
        self.needed = needed
        order = _graph.replay_order(model)
        # Progress is told for the model being edited (a nested model or a user's block is one call of it).
        tell = _PROGRESS.get() if not self.prefix and state.source_layers else None
        for done, view in enumerate(order):
            if tell is not None:
                tell(done, len(order))
            node, op = view.node, view.operation
            if id(node) in plan.skip or (needed is not None and id(node) not in needed) or (
                    plan.prune is not None and id(node) in plan.prune.dead):  # a pruned-away branch
                continue
            self.current_only_extra = id(node) in only_extra
            node_plan = plan.nodes.get(id(node))
            action = node_plan.action if node_plan else None
            if isinstance(action, ReplaceSpan):
                # The span's inner calls were skipped: feed what fed its first layer.
                x = self.tensors[id(action.first_node.input_tensors[0])]
                self._store(view, self.call_block(action.block, (x,), op), False, node_plan)
                continue
            # A Concatenate that loses a pruned-away branch is called without that input.
            dropped = plan.prune.dropped.get(id(node)) if plan.prune is not None else None
            inputs_faithful = not dropped and all(
                self.faithful.get(id(self.tensors[id(t)])) == id(t) for t in view.input_tensors)
            local = {**self.tensors, **dict.fromkeys(dropped, _DROPPED)} if dropped else self.tensors
            if node_plan and node_plan.before:
                x = self.tensors[id(view.input_tensors[0])]
                for block in node_plan.before:
                    x = self.call_block(block, (x,), op)
                local = dict(self.tensors)
                local[id(view.input_tensors[0])] = x
                inputs_faithful = False
            args, kwargs = view.fill_in(local)
            if not isinstance(op, keras.layers.Layer):
                args, kwargs = _savable_constants(args, kwargs)
            if dropped:
                args = tuple([v for v in a if v is not _DROPPED] if isinstance(a, (list, tuple)) else a for a in args)
            if action is None:
                new_op = clones.get(id(op))
                if new_op is None:
                    shapes = None
                    if _graph.is_graph_model(op) and view.n_calls == 1:
                        shapes = [tuple(t.shape) for t in keras.tree.flatten((args, kwargs))
                                  if isinstance(t, keras.KerasTensor)]
                    new_op = clones[id(op)] = self._clone(op, shapes)
                called_here.add(id(op))
                unchanged_op = not _computation_changes(op, plan.changes_for(op)) and not getattr(
                    plan.rules.get(id(op)), "changes_computation", False) and not (
                    _graph.is_graph_model(op) and not plan.nested.get(id(op), Plan()).is_empty()
                    and not state.outputs_faithful.get(id(new_op), False))
                node_faithful = inputs_faithful and unchanged_op
                outputs = self._call_op(new_op, args, kwargs, view, inputs_faithful, local)
                same_shapes = inputs_faithful or all(
                    tuple(local[id(t)].shape) == tuple(t.shape) for t in view.input_tensors)
                state.same_input_shapes[id(op)] = state.same_input_shapes.get(id(op), True) and same_shapes
                op_faithful[id(op)] = op_faithful.get(id(op), True) and node_faithful
                op_inputs_faithful[id(op)] = op_inputs_faithful.get(id(op), True) and inputs_faithful
            elif isinstance(action, DeleteCall):
                outputs = local[id(view.input_tensors[action.keep])]
                node_faithful = False
            else:
                outputs = self.call_block(action.block, args, op, kwargs)
                node_faithful = False
            self._store(view, outputs, node_faithful, node_plan)

        if tell is not None:
            tell(len(order), len(order))
        for old_id in called_here:
            new_op = clones[old_id]
            rec = state.records[id(new_op)]
            rec.faithful = rec.faithful and op_faithful.get(old_id, False)
            if rec.inner and not op_inputs_faithful.get(old_id, False):
                # A nested model fed changed inputs changes the inputs of every layer inside it.
                for key in rec.inner:
                    state.records[key].faithful = False
        return self._model(new_inputs)

    def _needed(self):
        """With a Truncate: (the calls its outputs need, the nested calls needed for inner outputs only)."""
        outputs = self.plan.outputs
        if outputs is None:
            return None, set()
        index = _graph.graph_index(self.model)
        views, producer = index.order, index.producer
        wanted, inner_only = [], set()
        for out in outputs:
            if isinstance(out, tuple):  # ("inner", target): the nested model's call is needed
                container = out[1].scopes[1]
                call = next(v for v in views if v.operation is container)
                wanted.append(call)
                inner_only.add(id(call.node))
            elif id(out) in producer:
                wanted.append(producer[id(out)])
        needed, stack = set(), list(wanted)
        uses = {id(o) for o in outputs if not isinstance(o, tuple)}  # old tensors still read or given out
        while stack:
            view = stack.pop()
            if id(view.node) in needed:
                continue
            needed.add(id(view.node))
            for t in view.node.input_tensors:
                uses.add(id(t))
                if id(t) in producer:
                    stack.append(producer[id(t)])
        only_extra = {id(v.node) for v in views
                      if id(v.node) in inner_only and not any(id(t) in uses for t in v.outputs)}
        return needed, only_extra

    def _input(self, old_t, old_layer):
        shape = tuple(old_t.shape)
        given = self.call_shapes
        if given is not None and len(given) == len(_graph.input_tensors(self.model)):
            # A nested model now fed another shape (a new input upstream) takes it; a shape its own
            # input already admits (None where the call has a size) stays as it was.
            now = given[_graph.input_layers(self.model).index(old_layer)]
            if len(now) != len(shape) or any(o is not None and o != n for o, n in zip(shape, now)):
                # A rank one off with a trailing 1 is Keras's own adjustment at the call (SD3 feeds its
                # diffuser timesteps of shape (batch,) for an input of (batch, 1)): the input stays.
                if not _rank_adjusted(shape, now):
                    shape = tuple(now)
        shape = self.plan.input_shapes.get(id(old_layer), shape)
        new_t = keras.Input(batch_shape=shape, dtype=old_t.dtype, sparse=getattr(old_t, "sparse", False),
                            name=old_layer.name)
        new_layer = _graph.producer(new_t)[0]
        self.state.record(new_layer, Record(self.state.old_paths.get(id(old_layer), self.prefix + old_layer.name),
                                            "none"))
        if tuple(shape) == tuple(old_t.shape):
            self.faithful[id(new_t)] = id(old_t)
        out = new_t
        for block in self.plan.after_input.get(id(old_layer), []):
            out = self.call_block(block, (out,), old_layer)
        self.tensors[id(old_t)] = out
        return new_t

    def _model(self, new_inputs):
        model, plan = self.model, self.plan
        if plan.outputs is not None:  # Truncate: the layers named, in the order named
            outs = [self.taken_out[id(o[1].single_call().outputs[0])] if isinstance(o, tuple) else self.tensors[id(o)]
                    for o in plan.outputs]
            packed = outs[0] if len(outs) == 1 else outs
        else:
            olds = _graph.output_tensors(model)
            outs = [self.tensors[id(t)] for t in olds]
            packed = _graph.pack_outputs(model, outs)
            # A nested model whose edits left every output computing what it did (LoRA not trained
            # yet): its callers see unchanged inputs.
            self.outputs_faithful = all(self.faithful.get(id(n)) == id(o) for o, n in zip(olds, outs))
        if plan.extra_outputs:  # a Truncate takes inner outputs out of this nested model
            extra = [self.tensors[id(t)] for t in plan.extra_outputs]
            packed = extra if self.only_extra else keras.tree.flatten(packed) + extra
        try:
            new_model = keras.Model(_graph.pack_inputs(model, new_inputs), packed, name=self.name)
            if isinstance(model, keras.Sequential):
                new_model = _as_sequential(new_model, self.state) or new_model
            _same_model_policy(model, new_model)
        except ValueError as error:
            if "unique" in str(error):
                raise NameClash(
                    f"The edited model would have two layers with one name ({first_line(error)}). Layers a callable "
                    "replacement makes keep the names it gives them; kerasnb renames only the layers it makes "
                    f"itself. What would work: a unique name for each layer a callable makes. Received: {error}"
                ) from None
            raise
        return new_model

    def _store(self, view, outputs, node_faithful: bool, node_plan):
        """Map the old call's outputs to the new ones, then run any inserts placed after the call."""
        flat = keras.tree.flatten(outputs)
        extra = self.plan.nested.get(id(view.operation))
        if extra is not None and extra.extra_outputs:  # the nested model gives inner outputs too (Truncate)
            inner = flat[-len(extra.extra_outputs):]
            flat = [] if self.current_only_extra else flat[:-len(extra.extra_outputs)]
            self.taken_out.update({id(t): n for t, n in zip(extra.extra_outputs, inner)})
            if not flat:
                return
        if len(flat) != len(view.outputs):
            edit = node_plan.action.edit if node_plan and node_plan.action else None
            raise IncompatibleShape(
                f"{view.name!r} had {len(view.outputs)} output(s) but its replacement gives {len(flat)}; its "
                f"consumers need the same number. Received: {edit!r}"
            )
        for old_t, new_t in zip(view.outputs, flat):
            if node_faithful:
                self.faithful[id(new_t)] = id(old_t)
            self.tensors[id(old_t)] = new_t
        if node_plan and node_plan.after:
            if len(flat) != 1:
                raise InvalidEdit(
                    f"Cannot insert after {view.name!r}: it has {len(flat)} outputs. Received: {node_plan.after[0].edit!r}"
                )
            y = flat[0]
            for block in node_plan.after:
                y = self.call_block(block, (y,), view.operation)
            self.tensors[id(view.outputs[0])] = y

    def _call_op(self, new_op, args, kwargs, view, inputs_faithful: bool, local: dict):
        """Replay one call; a layer refusing its new input says which input changed and how."""
        rule = self.plan.rules.get(id(view.operation))
        try:
            if hasattr(rule, "trace"):  # a block changed inside: its own call() must run on this input
                rule.trace(new_op, args, kwargs, view.outputs)
            return _call_deferring(new_op, args, kwargs)
        except SurgeryError:
            raise
        except Exception as error:
            if hasattr(rule, "call_failed"):  # a block made again with a layer inside it changed
                raise rule.call_failed(view.operation, error) from None
            if inputs_faithful:
                raise
            changed = []
            for old_t in view.input_tensors:
                new_t = local[id(old_t)]
                if self.faithful.get(id(new_t)) != id(old_t):
                    changed.append((_graph.producer(old_t)[0].name, tuple(old_t.shape), tuple(new_t.shape)))
            what = "; ".join(f"from {name!r} it took {was} and now receives {now}" for name, was, now in changed)
            wants = " and ".join(str(was) for _, was, _ in changed)
            raise IncompatibleShape(
                f"After the edit, {view.name!r} ({type(view.operation).__name__}) cannot take its new input: {what}. "
                f"Keras says: {first_line(error)} What would work: an edit whose output keeps shape {wants}, "
                f"or also replace {view.name!r}. Received: an edit upstream of {view.name!r}."
            ) from None

    def call_block(self, block: Block, args, anchor, kwargs=None):
        """Call a replacement / inserted piece with the call the replaced layer received.

        The positional arguments go to the first piece; each keyword argument (a mask, ``query=``,
        ``training=``) to the first piece that takes it. Records every layer it adds as new.
        """
        spec = block.spec
        pieces = list(spec) if isinstance(spec, (list, tuple)) else [spec]
        if not pieces:
            raise InvalidEdit(f"An empty list is not a replacement; use kerasnb.delete to remove a layer. Received: {block.edit!r}")
        given = _share_keywords(pieces, kwargs or {}, block, anchor, self.state)
        x = args
        for piece, piece_kwargs in zip(pieces, given):
            x = self._call_piece(piece, x, block, anchor, piece_kwargs)
            x = (x,)
        return x[0]

    def _call_piece(self, piece, args, block: Block, anchor, kwargs=None):
        state, names = self.state, self.names
        kwargs = kwargs or {}
        made_by = f"added by {type(block.edit).__name__.lower()} at {anchor.name!r}"
        if isinstance(piece, keras.Model) and _graph.is_graph_model(piece):
            sub = Pass()
            copy = _GraphRebuild(piece, Plan(), sub, "", name=names.unique(piece.name)).run()
            for new_id, layer in sub.layers.items():
                state.layers[new_id] = layer
                has_weights = bool(layer.weights) and not _graph.is_graph_model(layer)
                state.records[new_id] = Record(None, Status.NEW, f"{made_by}; brings its own weights from {piece.name!r}"
                                                if has_weights else made_by)
            state.copies.extend(sub.copies)
            state.sources.update(sub.sources)
            state.sources[id(copy)] = (piece, None)
            state.record(copy, Record(None, Status.NEW, f"{made_by}; brings its own weights from model {piece.name!r}"))
            return _call_new(copy, args, block, kwargs)
        if isinstance(piece, keras.layers.Layer):
            config = _graph.config_of(piece, f"The replacement {piece.name!r}")
            config["name"] = names.unique(piece.name)
            try:
                layer = _from_config(type(piece), config)
            except Exception as error:
                raise UnsupportedLayer(
                    f"The replacement {piece.name!r} ({type(piece).__name__}) cannot be recreated from its config: "
                    f"{first_line(error)}. Received: {block.edit!r}"
                ) from None
            state.sources[id(layer)] = (piece, None)  # the flags the user gave it, sub-layers included
            out = _call_new(layer, args, block, kwargs)
            if piece.weights:
                state.pretrained.append((piece, layer, block.edit))
                state.record(layer, Record(None, Status.NEW, f"{made_by}; brings its own weights"))
            else:
                state.record(layer, Record(None, Status.NEW, made_by))
            return out
        if callable(piece):
            calls_before = {id(layer): _graph.call_count(layer) for layer in state.source_layers}
            failure = None
            try:
                out = piece(*args, **kwargs)
            except SurgeryError:
                raise
            except Exception as error:
                failure = error
            finally:
                # Undo any call the callable made to the user's layers, whatever happened (an error,
                # KeyboardInterrupt): the user's model must end up as it was.
                reused = [layer for layer in state.source_layers if _graph.call_count(layer) > calls_before[id(layer)]]
                for layer in reused:
                    _graph.forget_calls(layer, calls_before[id(layer)])
            if reused:
                raise InvalidEdit(
                    f"The callable {getattr(piece, '__name__', piece)!r} calls {reused[0].name!r}, a layer of the model "
                    "being edited. That would add calls to your model and share its weights; make new layers inside "
                    f"the callable instead (e.g. keras.layers.Dense(...)(x)). Received: {block.edit!r}"
                )
            if failure is not None:
                raise IncompatibleShape(
                    f"The callable {getattr(piece, '__name__', piece)!r} failed on input of shape "
                    f"{_fmt_shapes(tuple(t.shape) for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor))}: "
                    f"{first_line(failure)} Received: {block.edit!r}"
                )
            _check_callable_output(piece, out, block)
            return out
        raise InvalidEdit(
            "A replacement is a keras Layer, a list of layers, a keras.Model, or a callable tensor -> tensor. "
            f"Received: {piece!r} of type {type(piece).__name__}"
        )

    def _clone(self, op, call_shapes=None):
        """A fresh copy of an existing operation: same config (plus changes), new variables."""
        plan, state = self.plan, self.state
        path = self.prefix + op.name
        if _graph.is_graph_model(op):
            sub_plan = plan.nested.get(id(op), Plan())
            before = set(state.records)
            nested = _GraphRebuild(op, sub_plan, state, path + "/", only_extra=self.current_only_extra,
                                   call_shapes=call_shapes)
            new_op = nested.run()
            state.outputs_faithful[id(new_op)] = nested.outputs_faithful
            inner = tuple(k for k in state.records if k not in before)
            # "Unfreeze the backbone" means every layer in it: _apply_trainable hands the flag down.
            state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
            state.record(new_op, Record(state.old_paths.get(id(op), path), Status.NO_WEIGHTS, inner=inner))
            return new_op
        if not isinstance(op, keras.layers.Layer):
            # A raw keras.ops call in the graph: stateless, so a copy from its config is exact. Never
            # the user's own op object: calling it would add a call to their model.
            try:
                new_op = type(op).from_config(op.get_config())
            except Exception:
                new_op = _graph.fresh_copy(op)
            state.record(new_op, Record(path, Status.NO_WEIGHTS))
            return new_op
        shared = _invariants.shared_sublayer(self, op)
        if shared is not None:  # a sub-layer of another layer here: one object, as in the original
            return shared
        changes = plan.changes_for(op)
        override = state.overrides.get(id(op))
        if override is not None and not changes:
            new_op = override[1]()
            _graph.drop_all_calls(new_op)  # a call from an earlier, abandoned attempt
            _inside.remade(op, new_op, plan.rules.get(id(op)))  # a change inside it goes in on this route too
            state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
            state.untouched[id(op)] = self.model
            if id(op) in plan.rules:  # a weight rule on a layer made as it was (LoRA inside a block)
                state.record(new_op, Record(state.old_paths.get(id(op), path), None, faithful=False))
                state.ruled.append((op, new_op, plan.rules[id(op)]))
                return new_op
            state.record(new_op, Record(state.old_paths.get(id(op), path), Status.KEPT))
            state.copies.append((op, new_op))
            return new_op
        try:
            config = _graph.config_of(op, f"Layer {path!r}")
        except UnsupportedLayer as refusal:
            # Its get_config() raises (as some published layers' do): an untouched layer can still
            # be made again from the arguments it keeps, where every one of them is found, or from
            # its model's own config (see _faithful_twins).
            if changes:
                raise
            new_op = _from_arguments(op)
            if new_op is None:
                raise self._another_route(op, refusal) from None
            config = None
        if config is not None:
            config.update(changes)
            if "trainable" in config and id(op) in plan.trainable:
                config["trainable"] = plan.trainable[id(op)]
        try:
            if config is not None:
                new_op = _remake(op, config, changes)
        except Exception as error:
            if changes:
                raise InvalidEdit(
                    f"{type(op).__name__} {op.name!r} cannot be rebuilt with {changes!r}: {first_line(error)} "
                    f"Received: changes={changes!r}"
                ) from None
            raise self._another_route(op, UnsupportedLayer(
                f"Layer {op.name!r} of type {type(op).__name__} cannot be recreated from its config "
                f"({first_line(error)}). Custom layers need get_config() and registration with "
                f"@keras.saving.register_keras_serializable(). Every edit rebuilds the whole model, so this layer "
                f"blocks edits anywhere in it. Received: layer={op.name!r}"
            )) from None
        state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
        rule = plan.rules.get(id(op))
        _inside.remade(op, new_op, rule)  # a block changed inside, now or by an earlier edit
        if rule is not None:  # a Transform's own weight rule (adapting an input kernel, folding a BatchNorm)
            if not changes:  # made as it was: checked like an untouched layer (see _lost_in_config)
                state.untouched[id(op)] = self.model
            state.record(new_op, Record(state.old_paths.get(id(op), path), None, faithful=False,
                                        config_changed=_describe_changes(op, changes)))
            state.ruled.append((op, new_op, rule))
            return new_op
        kept = plan.prune.slices.get(id(op)) if plan.prune is not None else None
        if kept is not None:
            # The weight rule of pruning: the surviving slices of the old values (see _transfer_weights).
            state.record(new_op, Record(state.old_paths.get(id(op), path), Status.PRUNED, faithful=False))
            state.slices.append((op, new_op, kept))
            return new_op
        if not changes:
            state.untouched[id(op)] = self.model
        described = _describe_changes(op, changes)
        state.record(new_op, Record(state.old_paths.get(id(op), path), Status.KEPT, config_changed=described))
        state.copies.append((op, new_op))
        return new_op

    def _another_route(self, op, refusal):
        """The retry that makes ``op``, whose own config cannot make it, another way (the arguments it
        was made with, then its model's own config: :func:`_faithful_twins`); ``refusal`` is raised if
        no route makes it faithfully."""
        self.state.untouched[id(op)] = self.model
        return _ConfigLost([op], {id(op): refusal})


def _rank_adjusted(own, given) -> bool:
    """A graph model input of shape ``own`` takes ``given`` by squeezing or adding a last axis of 1
    (as Keras's Functional does when called), so its own shape stays."""
    own, given = tuple(own), tuple(given)
    if len(given) == len(own) + 1 and given[-1] == 1:
        given = given[:-1]
    elif len(given) == len(own) - 1 and own[-1] == 1:
        own = own[:-1]
    else:
        return False
    return all(o is None or o == n for o, n in zip(own, given))


def _as_sequential(functional, state: Pass):
    """The same chain of layers as a keras.Sequential, or None when the edit made it branch.

    A Sequential stays a Sequential (its class, its config, and how the panel labels it) as long
    as the edited graph is still one chain of layers, each called once on the previous output.
    """
    views = _graph.walk(functional)
    if len(_graph.input_tensors(functional)) != 1 or len(_graph.output_tensors(functional)) != 1:
        return None
    previous = _graph.input_tensors(functional)[0]
    for view in views:
        if (not isinstance(view.operation, keras.layers.Layer) or view.n_calls != 1 or view.kwargs_tensors()
                or len(view.input_tensors) != 1 or view.input_tensors[0] is not previous or len(view.outputs) != 1):
            return None
        previous = view.outputs[0]
    if previous is not _graph.output_tensors(functional)[0]:
        return None
    source = _graph.input_tensors(functional)[0]
    walked_input = _graph.input_layers(functional)[0]
    start = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=walked_input.name)
    state.record(_graph.producer(start)[0], state.records[id(walked_input)])
    layers = [view.operation for view in views]
    # The functional graph is thrown away: its calls go, so that `layer.output` and the like
    # read the Sequential's own graph. Keras calls each layer again on `start`; they are
    # built already, so no variable is made twice.
    for layer in layers:
        _graph.drop_all_calls(layer)
    return keras.Sequential([start] + layers, name=functional.name)


def _savable_constants(args, kwargs):
    """A raw op's constant scalar operand that Keras cannot write to a .keras file (on TensorFlow, a
    0-d bfloat16 tensor does not convert to NumPy: Gemma scales its embeddings by one) as the Python
    number it holds, where every tensor operand has its dtype: Keras then converts it back to that
    dtype, so the op computes exactly what it did."""
    flat = keras.tree.flatten((args, kwargs))
    dtypes = {t.dtype for t in flat if isinstance(t, keras.KerasTensor)}

    def savable(value):
        if isinstance(value, keras.KerasTensor) or not keras.ops.is_tensor(value) or len(value.shape) != 0:
            return value
        try:
            keras.ops.convert_to_numpy(value)
            return value
        except Exception:
            pass
        if dtypes != {keras.backend.standardize_dtype(value.dtype)}:
            return value
        number = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32")).item()
        return int(number) if "int" in next(iter(dtypes)) else number

    if not any(keras.ops.is_tensor(v) and not isinstance(v, keras.KerasTensor) for v in flat):
        return args, kwargs
    return keras.tree.map_structure(savable, (args, kwargs))


def _same_model_policy(old, new) -> None:
    """The model-level dtype policy of ``old`` (a float16 keras-hub backbone is float16 as a whole,
    not only layer by layer); keras.Model(inputs, outputs) would give the global default."""
    policy = old.dtype_policy
    if (policy.name != new.dtype_policy.name and policy.quantization_mode is None
            and not isinstance(policy, keras.dtype_policies.DTypePolicyMap)):
        new.dtype_policy = policy


def _fmt_shapes(shapes) -> str:
    return ", ".join(str(s) for s in shapes)


class _NameBook:
    """Layer names used in one graph, to give new layers names that clash with none."""

    def __init__(self, layers):
        self.used = {layer.name for layer in layers}

    def unique(self, name: str) -> str:
        if name not in self.used:
            self.used.add(name)
            return name
        base, i = name, 1
        while f"{base}_{i}" in self.used:
            i += 1
        self.used.add(f"{base}_{i}")
        return f"{base}_{i}"


def _computation_changes(op, changes) -> dict:
    """The changes that make the layer compute something else (a new name or flag does not)."""
    if not changes:
        return {}
    old = _graph.config_of(op)
    return {k: v for k, v in changes.items() if k not in ("name", "trainable") and old.get(k) != v}


def _describe_changes(op, changes) -> str:
    effective = _computation_changes(op, changes)
    if not effective:
        return ""
    old = _graph.config_of(op)
    parts = [f"{k}: {_short(old.get(k))} -> {_short(v)}" for k, v in effective.items()]
    return "config changed (" + ", ".join(parts) + ")"


def _short(value) -> str:
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = value.get("config", {}).get("name", value)  # a dtype policy reads as its name
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


def _share_keywords(pieces, kwargs: dict, block: Block, anchor, state: Pass) -> list[dict]:
    """The keyword arguments each piece gets: each to the first piece whose call takes it.

    A keyword tensor that no piece takes is refused (dropping a mask silently would change what
    the model computes); a non-tensor setting no piece takes (``use_causal_mask=True``) is left
    out and said in the result's notes. ``None`` and ``training`` need no taker.
    """
    given: list[dict] = [{} for _ in pieces]
    left_out = []
    for key, value in kwargs.items():
        taker = next((i for i, piece in enumerate(pieces) if _takes_keyword(piece, key)), None)
        if taker is not None:
            given[taker][key] = value
            continue
        if any(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten(value)):
            kinds = ", ".join(_piece_name(p) for p in pieces)
            raise InvalidEdit(
                f"{anchor.name!r} is called with the tensor {key}=..., and its replacement ({kinds}) has no call "
                f"argument {key!r} to receive it; dropping it would change what the model computes. What would "
                f"work: a replacement whose call() takes {key}= (or **kwargs), or a callable "
                f"`lambda x, {key}=None, **kwargs: ...` that uses it. Received: {block.edit!r}"
            )
        if value is not None and key != "training":
            left_out.append(f"{key}={_short(value)}")
    if left_out:
        state.notes.append(
            f"{anchor.name!r} was called with {', '.join(left_out)}; its replacement takes no such argument, "
            "so it was not passed on."
        )
    return given


def _takes_keyword(piece, key: str) -> bool:
    if isinstance(piece, keras.Model):
        return key == "training"  # a model's call takes its inputs and training only
    target = type(piece).call if isinstance(piece, keras.layers.Layer) else piece
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return key in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _piece_name(piece) -> str:
    if isinstance(piece, keras.layers.Layer):
        return f"{type(piece).__name__} {piece.name!r}"
    return f"callable {getattr(piece, '__name__', type(piece).__name__)!r}"


def _check_callable_output(piece, out, block) -> None:
    """A callable replacement must hand back the tensor(s) it built, not None or a number."""
    flat = keras.tree.flatten(out) if out is not None else []
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        raise InvalidEdit(
            f"The callable {getattr(piece, '__name__', piece)!r} returned {_short(out)} of type {type(out).__name__}; "
            "a callable replacement must return the Keras tensor(s) it computes from its input, e.g. "
            "lambda x: keras.layers.Dense(8)(x). Did it forget a return statement? "
            f"Received: {block.edit!r}"
        )


def _remake(op, config: dict, changes: dict):
    """A new layer like ``op`` from ``config``, and never one that silently differs.

    - Some layers' configs hold derived values their constructor refuses (keras-hub's ViT
      patching layer lists ``num_patches``): Keras reloads such a model from the model's own
      arguments, never from that layer's config. Those keys are left out.
    - Some configs leave out a constructor argument, so the layer made from them would use the
      default: caught here by comparing every argument missing from the config with the attribute
      the old layer keeps of it (an argument kept nowhere, as keras-hub's MiT encoder does with
      ``sr_ratio``, shows only in the variables: see :func:`_lost_in_config`).
    Either way, an untouched layer is then made from the arguments it was made with
    (:func:`_from_arguments`); otherwise it is refused.
    """
    cls = type(op)
    failure = layer = None
    made_from = config
    try:
        layer = _from_config(cls, config)
    except Exception as error:
        refused = _refused_keys(error) & set(config)
        if not refused or refused & set(changes):
            raise
        failure = error
        made_from = {k: v for k, v in config.items() if k not in refused}
        try:
            layer = _from_config(cls, made_from)
        except Exception:
            layer = None
    if layer is not None and not _lost_arguments(op, layer, config):
        if made_from is not config or isinstance(getattr(op, "get_config", None), _MadeFrom):
            _carry_config(layer, made_from)  # its class's own config would not make it again
        return layer
    again = None if changes else _from_arguments(op)
    if again is not None:
        return again
    if failure is not None:
        raise failure
    missing = ", ".join(sorted(_lost_arguments(op, layer, config)))
    raise UnsupportedLayer(
        f"{cls.__name__} {op.name!r} cannot be rebuilt faithfully: its get_config() leaves out {missing}, so a "
        "layer made from it would use other values. What would work: a get_config() that returns every "
        f"constructor argument. Received: config keys {sorted(config)}"
    )


def _lost_arguments(old, new, config) -> set:
    """Constructor arguments missing from ``config`` whose kept values differ between the layers."""
    lost = set()
    for name in _graph.init_arguments(type(old)):
        # Names that every layer has (weights, name, dtype...) say nothing about the argument.
        if name in config or hasattr(keras.layers.Layer, name) or not hasattr(old, name) or not hasattr(new, name):
            continue
        a, b = getattr(old, name), getattr(new, name)
        if not (_plain(a) and _plain(b)):
            continue  # only plain values can be compared with confidence
        if a != b:
            lost.add(name)
    return lost


def _plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def _refused_keys(error) -> set:
    """The top-level keys of Keras's "Unrecognized keyword arguments passed to X: {...}"."""
    text = str(error)
    marker = "Unrecognized keyword arguments passed to "
    start = text.find(marker)
    if start < 0:
        return set()
    start = text.find("{", start)
    keys, depth, i = set(), 0, start
    while 0 <= i < len(text):
        char = text[i]
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth == 0:
                break
        elif char == "'" and depth == 1:
            end = text.find("'", i + 1)
            if end < 0:
                break
            if text[end + 1:end + 2] == ":":
                keys.add(text[i + 1:end])
            i = end
        i += 1
    return keys


def _from_arguments(op):
    """``type(op)(**arguments)`` made again from the arguments ``op`` was made with, for a layer
    whose get_config() raises or leaves one out; None unless every argument is known, so a
    silently defaulted argument can never slip in. The arguments come from:

    1. the attributes a layer keeps of them (``self.units = units``), all of them found;
    2. else those Keras recorded when the layer was made (when all were plain data).
    """
    cls = type(op)
    names = _graph.init_arguments(cls)
    arguments = {name: getattr(op, name) for name in names if hasattr(op, name)}
    if len(arguments) == len(names) and all(_carried_safely(value) for value in arguments.values()):
        own = dict(name=op.name, dtype=op.dtype_policy, trainable=op.trainable)
    else:  # an argument missing, or one that would share a layer, variable or array with the user's model
        arguments = _graph.constructor_arguments(op)
        if arguments is None:
            return None
        # The policy by name: plain data, so Keras records these arguments of the new layer too,
        # and the next edit of the new model finds them again.
        own = dict(name=op.name, dtype=op.dtype_policy.name)
    # A constructor that takes no name or dtype (Flux's MLPEmbedder takes its width only): the name
    # is given after, and a layer that would compute in another dtype is not made.
    taken = _takes_arguments(cls)
    arguments.update({key: value for key, value in own.items() if taken is None or key in taken})
    arguments = _without_variables(arguments)
    try:
        layer = _deferring(lambda: cls(**arguments))
    except Exception:
        return None
    if layer.name != op.name:
        _graph.rename(layer, op.name)
    if layer.dtype_policy.name != op.dtype_policy.name:
        return None
    _carry_config(layer, arguments)
    return layer


def _takes_arguments(cls):
    """The names ``cls(...)`` takes, or None when it takes any keyword (``**kwargs``)."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


class _MadeFrom:
    """A layer's get_config(): the config or arguments it was made from (see :func:`_carry_config`)."""

    def __init__(self, config: dict):
        self.config = config

    def __call__(self) -> dict:
        return dict(self.config)


def _carry_config(layer, config: dict) -> None:
    """Make ``layer.get_config()`` give ``config``, what it was made from, for a layer whose class's own
    get_config() raises or gives a config that does not make it again (keras-hub's Llama block reads
    attributes it never set; ViT's patching layer lists arguments its constructor refuses; MiT's block
    leaves out ``sr_ratio``). A .keras file of the edited model then loads it back as it is, and the
    next edit makes it again from that config."""
    layer.get_config = _MadeFrom(dict(config))


def _carried_safely(value) -> bool:
    """Values a new layer may receive as they are: plain data, functions, stateless Keras objects."""
    import types

    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_carried_safely(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _carried_safely(v) for k, v in value.items())
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return True
    return isinstance(value, (keras.initializers.Initializer, keras.regularizers.Regularizer,
                              keras.constraints.Constraint, keras.DTypePolicy))


def _deferring(make):
    """``make()`` inside the deferral; a layer that makes variables in __init__ or outside build()
    refuses that, and is then made (or called) outside it: the rest of the rebuild stays deferred."""
    try:
        return make()
    except (ValueError, TypeError) as error:
        if not _graph.is_deferred_variable_error(error):
            raise
    with _graph.outside_deferral():
        return make()


def _from_config(cls, config):
    """A new layer from its config (see :func:`_deferring`), holding no variable of the old one."""
    config = _without_variables(config)
    return _deferring(lambda: cls.from_config(config))


def _without_variables(value):
    """``value`` with each variable in it replaced by a copy of its value (a plain number for a scalar).

    Some configs hand back a variable (keras-hub's D-FINE decoder returns its ``upsampling_factor``
    weight, which its build() then makes again from that number): passed on as it is, the new layer
    would track the user's variable as its own, sharing it with the original.
    """
    if not _holds_variable(value):
        return value  # the config as it came, untouched
    if _is_variable(value):
        array = keras.ops.convert_to_numpy(value).copy()
        return array.item() if array.ndim == 0 else array
    if isinstance(value, dict):
        return {k: _without_variables(v) for k, v in value.items()}
    return (tuple if isinstance(value, tuple) else list)(_without_variables(v) for v in value)


def _holds_variable(value) -> bool:
    if isinstance(value, dict):
        return any(_holds_variable(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_variable(v) for v in value)
    return _is_variable(value)


def _is_variable(value) -> bool:
    """A Keras variable, or a backend's own variable (it can be assigned to, unlike a tensor)."""
    return isinstance(value, keras.Variable) or (
        callable(getattr(value, "assign", None)) and hasattr(value, "shape") and hasattr(value, "dtype"))


def _call_deferring(layer, args, kwargs):
    """Call a new layer (see :func:`_deferring`)."""
    return _deferring(lambda: layer(*args, **kwargs))


def _call_new(layer, args, block, kwargs=None):
    try:
        return _call_deferring(layer, args, kwargs or {})
    except Exception as error:
        got = _fmt_shapes(tuple(t.shape) for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor))
        raise IncompatibleShape(
            f"{type(layer).__name__} {layer.name!r} cannot take an input of shape {got}: {first_line(error)} "
            f"Received: {block.edit!r}"
        ) from None


class _ConfigLost(Exception):
    """Untouched layers came out of their own configs with other variables (a config that does
    not round-trip); raised inside the deferral so the attempt's variables are dropped."""

    def __init__(self, layers, refusals=None):
        super().__init__(", ".join(layer.name for layer in layers))
        self.layers = layers
        self.refusals = refusals or {}  # id(old layer) -> the refusal for a layer its config cannot make


def _lost_in_config(state: Pass) -> list:
    """Old layers rebuilt untouched, fed inputs of their old shapes, whose variables differ."""
    lost = []
    for old, new in state.copies:
        if id(old) not in state.untouched or not state.same_input_shapes.get(id(old), False):
            continue
        weights.mirror_lora(old, new)  # LoRA on a block's sub-layers is not in the block's config
        if not _same_variables(old, new):
            lost.append(old)
    # A layer a weight rule maps, made from its config unchanged: its variables apart from LoRA
    # factors (which the rule adds or folds) and a sub-layer changed inside it (whose variables the
    # change makes anew) must come out the same, or another route makes it.
    for old, new, rule in state.ruled:
        if id(old) not in state.untouched or not state.same_input_shapes.get(id(old), False):
            continue
        changed = _inside.changed_variables(rule, new)
        if not _same_variables(old, new, lambda v: weights.is_lora_factor(v) or id(v) in changed):
            lost.append(old)
    return lost


def _faithful_twins(layers, state: Pass, overrides: dict, refusals=None) -> dict:
    """``overrides`` with, for each layer whose own config does not make it again, the next way to
    make it: ``{id(old layer): (route, a function making the new layer)}``.

    Some published layers leave a constructor argument out of their get_config() (keras-hub's MiT
    encoder block drops ``sr_ratio``, Qwen3's block ``head_dim``), or their get_config() or
    from_config() raises (Swin's patch embedding, Flux's MLP embedder), although the model that
    holds them reloads faithfully from its own arguments. Such a layer is made again, in this
    order, from:

    1. the arguments it was made with (:func:`_from_arguments`);
    2. its model's own serialisation: the model holding it is made again from its config once,
       and the layer at the same place in it is taken, cut loose from that throwaway graph.

    The next attempt checks that the layer then has the old layer's variables; a layer that no
    route makes faithfully is refused (``refusals`` holds the refusal of a layer whose config
    cannot make it at all), since rebuilding it would silently change what it computes.
    """
    overrides, refusals = dict(overrides), refusals or {}
    fresh_models: dict = {}
    for old in layers:
        route = overrides.get(id(old), (None, None))[0]
        if route is None and _from_arguments(old) is not None:
            # A fresh layer at every attempt: an abandoned attempt leaves its variables unmade.
            overrides[id(old)] = ("arguments", lambda old=old: _from_arguments(old))
            continue
        owner = state.untouched[id(old)]
        if route in (None, "arguments"):
            if id(owner) not in fresh_models:
                try:
                    with _graph.outside_deferral():
                        fresh_models[id(owner)] = _graph.remade_from_own_config(owner)
                except Exception:
                    fresh_models[id(owner)] = None
            recipe = old.get_config if isinstance(old.get_config, _TakenFromModel) else None
            if recipe is not None:  # taken from a model's config by an earlier edit: from that model again
                try:
                    with _graph.outside_deferral():
                        twin = recipe.take()
                except Exception:
                    twin = None
            else:
                twin = _twin_in(fresh_models[id(owner)], owner, old)
            if twin is not None and _same_variables(old, twin):
                _graph.drop_all_calls(twin)  # cut loose from the throwaway model's graph
                if id(old) in refusals or recipe is not None:
                    # Its class cannot give a config that makes it: save() says so, and the next edit
                    # takes it from the same model's config again.
                    path = state.old_paths.get(id(old), old.name)
                    twin.get_config = recipe or _TakenFromModel(owner, old, path)
                    overrides[id(old)] = ("unsavable", lambda twin=twin: twin)
                else:
                    overrides[id(old)] = ("model", lambda twin=twin: twin)
                continue
        path = state.old_paths.get(id(old), old.name)
        if id(old) in refusals:
            text, marker = str(refusals[id(old)]), " Received: "
            cut = text.rfind(marker) if marker in text else len(text)
            raise type(refusals[id(old)])(
                f"{text[:cut]} Neither the arguments it was made with nor the config of its model {owner.name!r} "
                f"make it again as it was.{text[cut:]}"
            ) from None
        raise UnsupportedLayer(
            f"{type(old).__name__} {path!r} cannot be rebuilt faithfully: made again from its get_config() it "
            "has other variables (its config leaves out a constructor argument), and neither the arguments "
            f"Keras recorded nor its model {owner.name!r} make it again as it was. What would "
            f"work: a get_config() that returns every constructor argument. Received: layer={path!r}"
        )
    return overrides


class _TakenFromModel:
    """The get_config() of a layer taken from its model made again from the model's own config, for a
    layer whose class cannot give a config that makes it: it raises a clear UnsupportedLayer (so
    saving the edited model says why it cannot), and keeps how to take such a layer again (``take``)."""

    def __init__(self, owner, old, path: str):
        self.owner_class, self.owner_config = type(owner), owner.get_config()
        self.index = next(i for i, layer in enumerate(_graph.layers_in_order(owner)) if layer is old)
        self.message = (
            f"Layer {path!r} ({type(old).__name__}) has no config that makes it again: its class's get_config() "
            f"or from_config() fails, so kerasnb made it from its model's own config ({self.owner_class.__name__}). "
            "Keras saves a model layer by layer from each layer's config, so this model cannot be saved to a "
            "'.keras' file. What would work: model.save_weights(...), and load_weights(...) into the model built "
            f"again in code. Received: layer={path!r}"
        )

    def take(self):
        fresh = self.owner_class.from_config(self.owner_config)
        return _graph.layers_in_order(fresh)[self.index]

    def __call__(self):
        raise UnsupportedLayer(self.message)


def _twin_in(fresh, owner, old):
    """The layer of ``fresh`` (``owner`` made again from its config) at ``old``'s place in ``owner``'s
    graph, paired by structure (auto-generated names differ between the two), or None."""
    if fresh is None:
        return None
    olds, news = _graph.layers_in_order(owner), _graph.layers_in_order(fresh)
    if len(olds) != len(news) or [type(a) for a in olds] != [type(b) for b in news]:
        return None
    index = next((i for i, layer in enumerate(olds) if layer is old), None)
    return None if index is None else news[index]


def _same_variables(old, new, leave_out=None) -> bool:
    def listed(layer):
        return [(tuple(v.shape), v.dtype) for v in layer.weights if leave_out is None or not leave_out(v)]
    return listed(old) == listed(new)


def _transfer_weights(state: Pass) -> None:
    """Give every new layer its variables by its weight rule; record what each rule did."""
    for old, new in state.copies:
        rec = state.records[id(new)]
        outcome = weights.carry(old, new)
        _invariants.given_every_variable(old, new, outcome)
        outcome.assign()
        if outcome.kind == Status.REINITIALIZED:
            rec.status, rec.reason, rec.faithful = outcome.kind, outcome.reason, False
        elif outcome.kind == Status.NO_WEIGHTS:
            rec.status = outcome.kind
        elif outcome.reason:  # cast to another float dtype
            rec.config_changed = "; ".join(s for s in (rec.config_changed, outcome.reason) if s)
    for old, new, (k_in, k_out) in state.slices:
        outcome = weights.slice_channels(old, new, k_in, k_out)
        outcome.assign()
        state.records[id(new)].reason = outcome.reason
    for old, new, rule in state.ruled:
        rec = state.records[id(new)]
        outcome = rule(old, new)
        if not isinstance(outcome, weights.Outcome):
            raise InvalidEdit(f"The weight rule {getattr(rule, '__name__', rule)!r} for {old.name!r} returned "
                              f"{type(outcome).__name__}; a rule returns kerasnb.weights.Outcome. "
                              f"Received: {outcome!r}")
        wrong = [(v.path, tuple(v.shape), tuple(value.shape)) for v, value in outcome.values
                 if tuple(value.shape) != tuple(v.shape)]
        if wrong:
            raise InvalidEdit(f"The weight rule {getattr(rule, '__name__', rule)!r} for {old.name!r} gives values of "
                              f"the wrong shape: {wrong} (variable, its shape, the value's). Received: {outcome!r}")
        outcome.assign()
        rec.status, rec.reason = outcome.kind, outcome.reason
        if outcome.kind == Status.KEPT and outcome.reason and not outcome.faithful:
            rec.config_changed = outcome.reason  # weights copied, computing something else: the words say what
        if outcome.faithful and outcome.kind == Status.KEPT:  # the same computation: kept, with a note
            rec.faithful, rec.config_changed, rec.note, rec.reason = True, "", outcome.reason, ""
    for piece, new, edit in state.pretrained:
        rec = state.records[id(new)]
        outcome = weights.carry(piece, new)
        outcome.assign()
        if outcome.kind == Status.REINITIALIZED:
            rec.reason = f"{rec.reason.split(';')[0]}; its own weights did not fit ({outcome.reason}), so it starts fresh"
        elif outcome.reason:
            rec.reason = f"{rec.reason}; {outcome.reason}"
    _invariants.follow_owners(state)
