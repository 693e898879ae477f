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
from typing import Any

import keras

from . import _calls, _graph, _invariants, _remake, weights
from ._pass import Pass, Record
from ._plan import Block, DeleteCall, Plan, ReplaceSpan
from .errors import IncompatibleShape, InvalidEdit, NameClash, SurgeryError, first_line
from .report import Status


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
                lost = _remake.lost_in_config(state)
                if lost:
                    raise _remake.ConfigLost(lost)
                _transfer_weights(state)
        except _remake.ConfigLost as retry:
            # The deferral dropped every variable of this attempt; try again with those layers
            # made another way (each layer takes each route once at most, so this ends).
            overrides = _remake.faithful_twins(retry.layers, state, overrides, retry.refusals)
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
        self.called_here: set[int] = set()  # ids of the old ops called in this graph
        self.op_faithful: dict[int, bool] = {}  # every call of the op computes what it did before
        self.op_inputs_faithful: dict[int, bool] = {}  # every call of the op sees the inputs it saw before

    def run(self):
        """The new model: inputs, then every call in order, then the outputs."""
        model = self.model
        new_inputs = [self._input(old_t, old_layer)
                      for old_t, old_layer in zip(_graph.input_tensors(model), _graph.input_layers(model))]
        self.needed, only_extra = self._needed()
        order = _graph.replay_order(model)
        # Progress is told for the model being edited (a nested model or a user's block is one call of it).
        tell = _PROGRESS.get() if not self.prefix and self.state.source_layers else None
        for done, view in enumerate(order):
            if tell is not None:
                tell(done, len(order))
            if not self._left_out(view):
                self.current_only_extra = id(view.node) in only_extra
                self._replay(view)
        if tell is not None:
            tell(len(order), len(order))
        self._settle_faithful()
        return self._model(new_inputs)

    def _left_out(self, view) -> bool:
        """A call the new graph does without: inside a replaced span, not needed by a Truncate's
        outputs, or on a branch pruned away."""
        plan, node = self.plan, view.node
        return (id(node) in plan.skip or (self.needed is not None and id(node) not in self.needed)
                or (plan.prune is not None and id(node) in plan.prune.dead))

    def _replay(self, view) -> None:
        """One call of the old graph on the new tensors: as it was, or the plan's action instead."""
        node_plan = self.plan.nodes.get(id(view.node))
        action = node_plan.action if node_plan else None
        if isinstance(action, ReplaceSpan):
            # The span's inner calls were skipped: feed what fed its first layer.
            x = self.tensors[id(action.first_node.input_tensors[0])]
            self._store(view, self.call_block(action.block, (x,), view.operation), False, node_plan)
            return
        args, kwargs, local, inputs_faithful = self._arguments(view, node_plan)
        if action is None:
            outputs, node_faithful = self._call_again(view, args, kwargs, local, inputs_faithful)
        elif isinstance(action, DeleteCall):
            outputs, node_faithful = local[id(view.input_tensors[action.keep])], False
        else:
            outputs, node_faithful = self.call_block(action.block, args, view.operation, kwargs), False
        self._store(view, outputs, node_faithful, node_plan, kwargs)

    def _arguments(self, view, node_plan):
        """``(args, kwargs, local, inputs_faithful)``: the call's arguments on the new tensors (after
        any block inserted before it, without a branch pruned away), the tensor map they came from,
        and whether every input computes what it did."""
        plan, op = self.plan, view.operation
        # A Concatenate that loses a pruned-away branch is called without that input.
        dropped = plan.prune.dropped.get(id(view.node)) if plan.prune is not None else None
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
        return args, kwargs, local, inputs_faithful

    def _call_again(self, view, args, kwargs, local, inputs_faithful: bool):
        """``(outputs, faithful)``: the call made on the operation's one new copy in this pass (made at
        its first call), and whether it computes what it did."""
        plan, state, op = self.plan, self.state, view.operation
        new_op = state.clones.get(id(op))  # one copy per op in the whole pass: ties across graphs stay
        if new_op is None:
            shapes = None
            if _graph.is_graph_model(op) and view.n_calls == 1:
                shapes = [tuple(t.shape) for t in keras.tree.flatten((args, kwargs))
                          if isinstance(t, keras.KerasTensor)]
            new_op = state.clones[id(op)] = self._clone(op, shapes)
        self.called_here.add(id(op))
        unchanged_op = not _remake.computation_changes(op, plan.changes_for(op)) and not getattr(
            plan.rules.get(id(op)), "changes_computation", False) and not (
            _graph.is_graph_model(op) and not plan.nested.get(id(op), Plan()).is_empty()
            and not state.outputs_faithful.get(id(new_op), False))
        node_faithful = inputs_faithful and unchanged_op
        outputs = self._call_op(new_op, args, kwargs, view, inputs_faithful, local)
        same_shapes = inputs_faithful or all(
            tuple(local[id(t)].shape) == tuple(t.shape) for t in view.input_tensors)
        state.same_input_shapes[id(op)] = state.same_input_shapes.get(id(op), True) and same_shapes
        self.op_faithful[id(op)] = self.op_faithful.get(id(op), True) and node_faithful
        self.op_inputs_faithful[id(op)] = self.op_inputs_faithful.get(id(op), True) and inputs_faithful
        return outputs, node_faithful

    def _settle_faithful(self) -> None:
        """A layer computes what it did only if every call of it here does; a nested model fed
        changed inputs changes the inputs of every layer inside it."""
        state = self.state
        for old_id in self.called_here:
            rec = state.records[id(state.clones[old_id])]
            rec.faithful = rec.faithful and self.op_faithful.get(old_id, False)
            if rec.inner and not self.op_inputs_faithful.get(old_id, False):
                for key in rec.inner:
                    state.records[key].faithful = False

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

    def _store(self, view, outputs, node_faithful: bool, node_plan, kwargs=None):
        """Map the old call's outputs to the new ones, then run any inserts placed after the call (an
        insert that asks for them, a grown transformer block, also gets the call's keyword tensors)."""
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
                keywords = kwargs if getattr(block.edit, "keeps_call_keywords", False) else None
                y = self.call_block(block, (y,), view.operation, keywords)
            self.tensors[id(view.outputs[0])] = y

    def _call_op(self, new_op, args, kwargs, view, inputs_faithful: bool, local: dict):
        """Replay one call; a layer refusing its new input says which input changed and how."""
        rule = self.plan.rules.get(id(view.operation))
        try:
            if hasattr(rule, "trace"):  # a block changed inside: its own call() must run on this input
                rule.trace(new_op, args, kwargs, view.outputs)
            return _remake.call_deferring(new_op, args, kwargs)
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
        """Call a replacement / inserted block where ``anchor`` was called (see :mod:`kerasnb._calls`)."""
        return _calls.call_block(self, block, args, anchor, kwargs)

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
        return _remake.layer_again(op, path, plan, state, self.model)


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
