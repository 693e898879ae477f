"""Read-only view of a Keras functional graph, and the few Keras internals kerasnb relies on.

This is the only module that touches Keras private attributes (``_nodes_by_depth``,
``_inbound_nodes``, ``_functional``, ``_inputs_struct``/``_outputs_struct``, deferred variable
initialisation). Everything else goes through the functions here.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any

import keras

from .errors import UnbuiltModel, UnsupportedModel, surgery_errors_only


@dataclass(frozen=True)
class NodeView:
    """One call of an operation (layer, nested model or raw ``keras.ops`` op) in a graph."""

    node: Any  # the Keras Node
    operation: Any
    call_index: int  # which call of `operation` inside this graph, in the order they were made
    n_calls: int  # how many times `operation` is called inside this graph

    @property
    def name(self) -> str:
        return self.operation.name

    @property
    def input_tensors(self) -> list:
        return list(self.node.input_tensors)

    @property
    def outputs(self) -> list:
        return list(self.node.outputs)

    @property
    def args(self) -> tuple:
        return tuple(self.node.arguments.args)

    @property
    def kwargs(self) -> dict:
        return dict(self.node.arguments.kwargs)

    def kwargs_tensors(self) -> list:
        """Keras tensors passed by keyword (masks, ``query=``...), flattened."""
        return [t for t in keras.tree.flatten(self.kwargs) if isinstance(t, keras.KerasTensor)]

    def fill_in(self, tensor_dict: dict):
        """``(args, kwargs)`` with every Keras tensor swapped by ``tensor_dict[id(tensor)]``."""
        return self.node.arguments.fill_in(tensor_dict)


def functional(model) -> keras.Model:
    """The functional graph behind ``model`` (a Sequential's inner Functional), or a clear error."""
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise UnbuiltModel(
                f"Sequential model {model.name!r} is not built, so it has no graph to edit. "
                "Give it an input shape (keras.Input as first layer) or call model.build(input_shape) first. "
                f"Received: model={model.name!r} with built={model.built}"
            )
        return inner
    if not isinstance(model, keras.Model):
        raise UnsupportedModel(
            f"kerasnb edits keras.Model objects. Received: {type(model).__name__}"
        )
    if not hasattr(model, "_nodes_by_depth") or not hasattr(model, "_outputs_struct"):
        if not model.built:
            raise UnbuiltModel(
                f"Model {model.name!r} is not built. Build it (call it on data or model.build(...)) first. "
                f"Received: model={model.name!r}"
            )
        raise UnsupportedModel(
            f"Model {model.name!r} is a subclassed {type(model).__name__} without a functional graph; "
            "kerasnb works on functional and Sequential models (and subclasses of Functional). "
            f"Received: {type(model).__name__}"
        )
    return model


def is_graph_model(layer) -> bool:
    """True for nested models whose inside kerasnb can walk (functional or built Sequential)."""
    if isinstance(layer, keras.Sequential):
        return getattr(layer, "_functional", None) is not None
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") and hasattr(layer, "_outputs_struct")


_MEMO: dict | None = None  # while `memo()` is active: (function name, id(model)) -> (model, result)


@contextlib.contextmanager
def memo():
    """Remember walks of graphs for the duration of one operation (the graphs do not change).

    An apply() asks for the calls and layers of the same graphs many times; a walk of DenseNet121
    costs about a millisecond each time. Results are handed out as fresh lists.
    """
    global _MEMO
    outer = _MEMO
    if outer is None:
        _MEMO = {}
    try:
        yield
    finally:
        if outer is None:
            _MEMO = None


def remembered(name, model, compute):
    """``compute(model)``, once per model while :func:`memo` is active (lists come back as copies)."""
    if _MEMO is None:
        return compute(model)
    key = (name, id(model))
    hit = _MEMO.get(key)
    if hit is None or hit[0] is not model:
        hit = _MEMO[key] = (model, compute(model))  # the model is kept, so its id is not reused
    return list(hit[1]) if isinstance(hit[1], list) else hit[1]


def settings(layer) -> dict:
    """``layer.get_config()`` for reading a setting (groups, axis, data_format...): taken once per
    layer while :func:`memo` is active (a Conv2D's config costs about 0.3 ms, and the channel
    analysis, the slicing plan and the scoring of a prune each read it). Never change the dict."""
    return remembered("config", layer, lambda op: op.get_config())


def read_only_values(variable):
    """The variable's values as a numpy array that must not be written to, read once per variable
    while :func:`memo` is active.

    No copy where the backend allows: on TensorFlow ``numpy()`` copies every value (about 0.1 s
    for ResNet50's 25M) while a read of the variable shares its buffer; a JAX array on the CPU
    is shared by ``numpy.asarray``. Torch (whose parameters track gradients) takes Keras's copy.
    """
    import numpy as np

    def read(v):
        value = v.value
        backend = keras.backend.backend()
        if backend == "tensorflow":
            if hasattr(value, "read_value"):
                value = value.read_value()  # a tensor on the variable's buffer, not a copy
        elif backend not in ("jax", "numpy"):
            return keras.ops.convert_to_numpy(value)
        array = np.asarray(value)
        array.flags.writeable = False
        return array

    return remembered("values", variable, read)


def walk(model) -> list[NodeView]:
    """Every non-input node of the graph, parents before children (Keras's own order)."""
    return remembered("walk", model, _walk)


def _walk(model) -> list[NodeView]:
    fn = functional(model)
    nodes_by_depth = fn._nodes_by_depth
    ordered = []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ordered.append(node)
    # A call index is the position among this graph's calls of the same op, in call order.
    own = {id(n) for n in ordered}
    per_op: dict[int, list] = {}
    for node in ordered:
        op = node.operation
        if id(op) not in per_op:
            per_op[id(op)] = [n for n in op._inbound_nodes if id(n) in own]
    views = []
    for node in ordered:
        calls = per_op[id(node.operation)]
        index = next(i for i, n in enumerate(calls) if n is node)
        views.append(NodeView(node, node.operation, index, len(calls)))
    return views


@dataclass(frozen=True)
class GraphIndex:
    """The calls of one graph and how its tensors connect them (read it, do not change it).

    ``order`` is :func:`walk` (parents first); ``producer`` maps ``id(tensor)`` to the call that made
    it; ``consumers`` maps ``id(tensor)`` to the calls that take it, once per time they take it (a
    call adding a tensor to itself is listed twice), in ``order``; ``outputs`` holds the ids of the
    graph's output tensors.
    """

    order: tuple
    producer: dict
    consumers: dict
    outputs: frozenset

    def takers(self, view) -> list:
        """The calls that take any output of ``view``, each once, in graph order."""
        found = {id(taker.node) for tensor in view.outputs for taker in self.consumers.get(id(tensor), ())}
        return [v for v in self.order if id(v.node) in found]

    def downstream(self, view) -> list:
        """The calls that read ``view``'s outputs, directly or further on, each once."""
        found, stack = {}, list(view.outputs)
        while stack:
            for taker in self.consumers.get(id(stack.pop()), ()):
                if id(taker.node) not in found:
                    found[id(taker.node)] = taker
                    stack.extend(taker.outputs)
        return list(found.values())


def graph_index(model) -> GraphIndex:
    """The :class:`GraphIndex` of ``model``'s graph: the one place the graph's producer and consumer
    maps are made (once per model while :func:`memo` is active)."""
    return remembered("index", model, _index)


def _index(model) -> GraphIndex:
    views = tuple(walk(model))
    producer, consumers = {}, {}
    for view in views:
        for tensor in view.outputs:
            producer[id(tensor)] = view
        for tensor in view.input_tensors:
            consumers.setdefault(id(tensor), []).append(view)
    return GraphIndex(views, producer, consumers, frozenset(id(t) for t in output_tensors(model)))


def replay_order(model) -> list[NodeView]:
    """The calls of :func:`walk` in an order that rebuilds each layer's calls in Keras's order.

    Depth order alone can call a shared layer's second call before its first (when the first
    sits deeper in the graph), which renumbers the calls and changes the model's config. The
    order in which the calls were made is itself a valid order to replay them, so each call
    waits for the calls of its layer made before it, and for its inputs; ties go by depth.
    """
    import heapq

    index = graph_index(model)
    views = list(index.order)
    position = {id(v.node): i for i, v in enumerate(views)}
    waits_for: dict[int, set] = {id(v.node): set() for v in views}
    by_op: dict[int, list] = {}
    for view in views:
        by_op.setdefault(id(view.operation), []).append(view)
    for view in views:
        for tensor in view.node.input_tensors:
            parent = index.producer.get(id(tensor))
            if parent is not None:
                waits_for[id(view.node)].add(id(parent.node))
    for calls in by_op.values():
        calls = sorted(calls, key=lambda v: v.call_index)
        for earlier, later in zip(calls, calls[1:]):
            waits_for[id(later.node)].add(id(earlier.node))
    blocking: dict[int, list] = {}
    for node_id, parents in waits_for.items():
        for parent in parents:
            blocking.setdefault(parent, []).append(node_id)
    remaining = {k: len(v) for k, v in waits_for.items()}
    ready = [position[k] for k, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        view = views[heapq.heappop(ready)]
        ordered.append(view)
        for child in blocking.get(id(view.node), ()):
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, position[child])
    if len(ordered) != len(views):  # cannot happen for a graph Keras built; keep depth order then
        return views
    return ordered


def input_tensors(model) -> list:
    return list(functional(model).inputs)


def output_tensors(model) -> list:
    return list(functional(model).outputs)


def input_layers(model) -> list:
    return [t._keras_history.operation for t in input_tensors(model)]


def pack_inputs(model, flat):
    return keras.tree.pack_sequence_as(functional(model)._inputs_struct, list(flat))


def pack_outputs(model, flat):
    return keras.tree.pack_sequence_as(functional(model)._outputs_struct, list(flat))


def producer(tensor):
    """(operation, node index, tensor index) that made a Keras tensor."""
    history = tensor._keras_history
    return history.operation, history.node_index, history.tensor_index


def layers_in_order(model) -> list:
    """Input layers first, then every operation of the graph in walk order, each once."""
    return remembered("layers", model, _layers_in_order)


def _layers_in_order(model) -> list:
    seen, out = set(), []
    for layer in input_layers(model) + [view.operation for view in walk(model)]:
        if id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def call_count(layer) -> int:
    """How many times a layer has been called, in any graph."""
    return len(getattr(layer, "_inbound_nodes", ()))


def forget_calls(layer, keep: int) -> None:
    """Drop the calls made after the first ``keep`` (a user's callable reused one of their layers)."""
    del layer._inbound_nodes[keep:]


def sublayers(layer) -> list:
    """The layer and every layer it tracks, parents before their children (Keras's own order).

    A raw ``keras.ops`` operation in a graph (Gemma's embedding scaling) tracks no layers.
    """
    if not hasattr(layer, "_flatten_layers"):
        return [layer]
    return list(layer._flatten_layers(include_self=True, recursive=True))


def tracked_layers(layer) -> list:
    """The layers ``layer`` tracks directly (its attributes, a graph model's layers), not theirs, in
    Keras's order (:func:`sublayers` one level deep)."""
    if not hasattr(layer, "_flatten_layers"):
        return []
    return list(layer._flatten_layers(include_self=False, recursive=False))


def named_sublayers(layer, prefix: str = "", seen: set | None = None):
    """``(attribute path, sub-layer)`` for every layer ``layer`` holds in its attributes, at any
    depth (``"attention.output_dense"``, ``"experts[0].down"``), each once, parents first."""
    seen = set() if seen is None else seen
    # Keras's own lists of what a layer tracks come last: a sub-layer is named by its attribute.
    bookkeeping = ("_layers", "_tracked")
    attributes = sorted(vars(layer).items(), key=lambda item: item[0] in bookkeeping)
    for key, value in attributes:
        if key.startswith("_inbound") or key.startswith("_outbound"):
            continue
        items = ([(f"{prefix}{key}", value)] if isinstance(value, keras.layers.Layer) else
                 [(f"{prefix}{key}[{i}]", v) for i, v in enumerate(value)
                  if isinstance(v, keras.layers.Layer)] if isinstance(value, (list, tuple)) else [])
        for path, sub in items:
            if id(sub) in seen or sub is layer:
                continue
            seen.add(id(sub))
            yield path, sub
            yield from named_sublayers(sub, path + ".", seen)


def swap_sublayer(parent, old, new) -> None:
    """Put ``new`` wherever ``parent`` holds ``old``: its tracked layers, attributes, lists and dicts.

    In place, so the order of ``parent``'s sub-layers (and so of its variables) stays as it was:
    the new layer takes the old one's position. Only for a ``parent`` kerasnb just made.
    """
    tracker = getattr(parent, "_tracker", None)
    if tracker is not None and tracker.is_in_store("layers", old):
        # First, so that the assignments below find ``new`` tracked already and append nothing.
        tracker.replace_tracked_value("layers", old, new)
    else:
        held = parent._layers
        held[next(i for i, layer in enumerate(held) if layer is old)] = new
    for name, value in list(vars(parent).items()):
        if name == "_layers":
            continue
        if value is old:
            setattr(parent, name, new)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
        elif isinstance(value, dict):
            for key, item in list(value.items()):
                if item is old:
                    value[key] = new
        elif isinstance(value, tuple) and not hasattr(value, "_fields") and any(item is old for item in value):
            setattr(parent, name, type(value)(new if item is old else item for item in value))


def serialize_as(cls, registered_name: str) -> None:
    """Make Keras write ``registered_name`` for instances of ``cls`` in saved configs (so that the
    class registered under that name, not ``cls``, reads them back)."""
    from keras.src.saving import object_registration

    object_registration.GLOBAL_CUSTOM_NAMES[cls] = registered_name


def set_flag(layer, value: bool) -> None:
    """Keras's own trainable setter on ``layer`` (which sets its sub-layers' flags too), called even
    when the flag already says ``value`` (see :func:`force_trainable`)."""
    keras.layers.Layer.trainable.fset(layer, bool(value))


def copy_flags(olds, news) -> None:
    """Each layer of ``news`` flagged as its partner in ``olds`` (parents first, as :func:`sublayers`
    lists them: setting a parent's flag sets its children's)."""
    for old, new in zip(olds, news):
        set_flag(new, old.trainable)


def force_trainable(layer, value: bool) -> None:
    """Set the flag of ``layer`` and of every sub-layer it tracks, whatever they say now.

    ``layer.trainable = value`` does nothing when the flag already equals ``value`` (TensorFlow's
    attribute tracking skips an assignment of the same object), so a layer made with
    ``trainable=False`` whose sub-layers were created later, in build(), kept them trainable.
    """
    for sub in sublayers(layer):
        set_flag(sub, value)


def set_own_trainable(layer, value: bool) -> None:
    """Set the flag of ``layer`` alone: every sub-layer keeps the flag it has (Keras's setter would
    set them all)."""
    inner = [(sub, sub.trainable) for sub in sublayers(layer)[1:]]
    set_flag(layer, value)
    for sub, flag in inner:  # parents first, as sublayers() lists them
        set_flag(sub, flag)


def fresh_copy(operation):
    """A copy of a stateless operation with no calls of its own (for ops without a config).

    Not ``copy.copy``: a Keras operation copies itself through Keras saving, which raises for one
    made with arguments its config cannot hold (``keras.ops.reshape(x, (-1, np.int64(2)))``).
    Its attributes are what its ``call`` reads, so a shallow copy of them computes the same.
    """
    new = object.__new__(type(operation))
    new.__dict__.update(operation.__dict__)
    new._inbound_nodes = []
    new._outbound_nodes = []
    return new


def drop_all_calls(layer) -> None:
    """Forget every call of a layer made by kerasnb itself, so a graph can call it afresh.

    Only for layers kerasnb just made, whose first graph is being thrown away.
    """
    del layer._inbound_nodes[:]
    del layer._outbound_nodes[:]


def rename(layer, name: str) -> None:
    """Give a layer kerasnb just made, not built yet, the name of the layer it stands for (its
    constructor takes no name); its variables take their paths from it when it is built."""
    layer.name = name


def constructor_arguments(layer):
    """The arguments ``layer`` was made with, as Keras recorded them when they were all plain data
    (its default get_config() is built from them); None when Keras did not record them."""
    recorded = getattr(layer, "_auto_config", None)
    config = getattr(recorded, "config", None)
    return dict(config) if isinstance(config, dict) else None


def remade_from_own_config(model):
    """A new model made from ``model``'s own config, as Keras reloads it (with fresh variables)."""
    return type(model).from_config(model.get_config())


def is_input_layer(layer) -> bool:
    return isinstance(layer, keras.layers.InputLayer)


def count_params(layer) -> int:
    return int(sum(int(size_of(v.shape)) for v in getattr(layer, "weights", ())))


def size_of(shape) -> int:
    """How many values a variable of ``shape`` holds."""
    out = 1
    for d in shape:
        out *= int(d)
    return out


def output_shape(layer) -> Any:
    """The output shape of a layer's first call (or of an InputLayer), or None if unknown."""
    try:
        nodes = layer._inbound_nodes
        if nodes:
            outs = keras.tree.map_structure(lambda t: tuple(t.shape), nodes[0].outputs)
            return outs[0] if len(outs) == 1 else outs
    except AttributeError:
        pass
    return None


def walk_layers(model, prefix: str = "", seen: set | None = None):
    """(path, layer) for every layer of a model, nested ones right after their container.

    A layer reached by several paths (tied: called in a nested model and outside it, like a
    task model's output head that reuses the backbone's embedding) comes once, at its first path.
    """
    seen = set() if seen is None else seen
    for layer in layers_in_order(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = prefix + layer.name
        yield path, layer
        if is_graph_model(layer):
            yield from walk_layers(layer, path + "/", seen)


def layer_aliases(model, prefix: str = "", first: dict | None = None) -> dict:
    """``{other path: first path}`` for the layers that :func:`walk_layers` gives only once."""
    first = {} if first is None else first
    aliases = {}
    for layer in layers_in_order(model):
        path = prefix + layer.name
        if id(layer) in first:
            if first[id(layer)] != path:
                aliases[path] = first[id(layer)]
            continue
        first[id(layer)] = path
        if is_graph_model(layer):
            aliases.update(layer_aliases(layer, path + "/", first))
    return aliases


# ----------------------------------------------------------------------------- layer table


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``kerasnb.describe``: what the editor's table shows for a layer.

    Attributes:
        path: ``"name"``, or ``"outer/inner"`` inside a nested model: the form targets take.
        name: The layer's own name.
        type: Its class name, e.g. ``"Dense"``.
        output_shape: Its output shape as text, e.g. ``"(None, 4)"`` (``""`` when unknown).
        params: Its number of parameters.
        trainable: Whether it trains.
        parent: The path of the nested model holding it, ``""`` at top level.
        depth: Its nesting level, 0 at top level.
        calls: How many times its graph calls it (more than 1: a shared layer, whose calls
            are targeted as ``("name", call_index)``).
        is_input: True for an InputLayer.
        is_container: True for a nested model; its layers follow as rows of their own.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> info = kerasnb.describe(model)[1]
        >>> info.path, info.type, info.output_shape, info.params, info.calls
        ('out', 'Dense', '(None, 2)', 18, 1)
    """

    path: str  # "name", or "outer/inner" inside a nested model
    name: str
    type: str
    output_shape: str
    params: int
    trainable: bool
    parent: str  # path of the enclosing nested model, "" at top level
    depth: int  # nesting level, 0 at top level
    calls: int  # number of calls of the layer in its graph
    is_input: bool
    is_container: bool  # a nested model whose layers follow as rows of their own


@surgery_errors_only
def describe(model, prefix: str = "", depth: int = 0) -> list[LayerInfo]:
    """One ``LayerInfo`` per layer, in graph order; a nested model's layers follow right after it.

    What the editor's table lists: each layer's path (the form every target takes), type,
    output shape, parameters, trainable flag and number of calls. The model is only read.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too).
        prefix: Put before every path; used when describing a nested model (``"outer/"``).
            Leave it empty.
        depth: The nesting level of ``model``'s own layers; leave it 0.

    Returns:
        list: ``LayerInfo`` rows.

    Raises:
        UnsupportedModel: the model has no graph (subclassed; ``UnbuiltModel`` when never
            built).

    Examples:
        >>> inner_in = keras.Input((4,), name="inner_x")
        >>> inner = keras.Model(inner_in, keras.layers.Dense(4, name="dense")(inner_in), name="inner")
        >>> inputs = keras.Input((4,), name="x")
        >>> model = keras.Model(inputs, inner(inputs))
        >>> [(info.path, info.depth) for info in kerasnb.describe(model)]
        [('x', 0), ('inner', 0), ('inner/inner_x', 1), ('inner/dense', 1)]
    """
    views = walk(model)
    calls: dict[int, int] = {}
    for view in views:
        calls[id(view.operation)] = view.n_calls
    rows = []
    for layer in layers_in_order(model):
        path = prefix + layer.name
        container = is_graph_model(layer)
        shape = output_shape(layer)
        rows.append(
            LayerInfo(
                path=path,
                name=layer.name,
                type=type(layer).__name__,
                output_shape="" if shape is None else str(shape),
                params=count_params(layer),
                trainable=bool(getattr(layer, "trainable", True)),
                parent=prefix[:-1],
                depth=depth,
                calls=calls.get(id(layer), 0),
                is_input=is_input_layer(layer),
                is_container=container,
            )
        )
        if container:
            rows.extend(describe(layer, prefix=path + "/", depth=depth + 1))
    return rows


# ----------------------------------------------------------------------------- weights


@contextlib.contextmanager
def deferred_variables():
    """Create variables without drawing their initial values until the block ends.

    Inside, layers build as usual but their variables stay uninitialised; values given with
    :func:`set_initial_value` are used when the block ends, the others are drawn from their own
    initialisers then. This skips drawing random values that would be thrown away at once.

    Keras keeps the pending variables in one process-wide list and, on its own, initialises the
    whole list when the scope closes, even after an error; one variable that fails to initialise
    then stays in the list and breaks every later scope. So the list is taken over here: the
    variables made inside the block are initialised only if the block succeeds, and whatever
    happens (an error, KeyboardInterrupt), the list is left exactly as it was found.
    """
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope

    key = "uninitialized_variables"
    found = list(global_state.get_global_attribute(key) or [])
    try:
        with StatelessScope(initialize_variables=False):
            yield
        pending = global_state.get_global_attribute(key) or []
        made_here = [v for v in pending[len(found):] if getattr(v, "_value", None) is None]
        global_state.set_global_attribute(key, list(found))
        for variable in made_here:
            try:
                variable._deferred_initialize()
            except Exception as error:
                from .errors import InvalidEdit, first_line

                raise InvalidEdit(
                    f"The new variable {variable.path!r} ({variable.dtype}, shape {tuple(variable.shape)}) could not "
                    f"be initialised: {type(error).__name__}: {first_line(error, 200).rstrip('.')}. Check the initializer of the "
                    f"layer that owns it. Received: a layer whose variable {variable.path!r} failed to initialise"
                ) from error
    finally:
        global_state.set_global_attribute(key, found)


@contextlib.contextmanager
def without_forced_collections():
    """Keras's ``Layer.__delattr__`` runs a full ``gc.collect()`` for every variable a layer drops
    (``quantize()`` drops each float kernel), to free its device buffer at once: about 0.5 s per
    layer with TensorFlow loaded. Inside a rebuild the dropped kernels were never given a buffer
    (their values are deferred), so those collections free nothing; here they are skipped, and
    ``gc.collect`` is put back however the block ends."""
    import gc

    collect = gc.collect
    gc.collect = lambda *args, **kwargs: 0
    try:
        yield
    finally:
        gc.collect = collect


def forget_deferred(variables) -> None:
    """Variables a layer dropped inside :func:`deferred_variables` (Keras's ``quantize()`` replaces a
    float kernel by an int8 one) are not initialised when the block ends: no memory drawn for them."""
    from keras.src.backend.common import global_state

    key = "uninitialized_variables"
    gone = {id(v) for v in variables if getattr(v, "_value", None) is None}
    pending = global_state.get_global_attribute(key)
    if gone and pending:
        global_state.set_global_attribute(key, [v for v in pending if id(v) not in gone])


@contextlib.contextmanager
def outside_deferral():
    """Suspend :func:`deferred_variables` for one layer that makes variables outside build().

    Such a layer refuses to be called inside the deferral; called outside it, its variables are
    made (and drawn) at once, and :func:`set_initial_value` assigns their values afterwards. The
    rest of the rebuild stays deferred.
    """
    from keras.src.backend.common import global_state

    scope = global_state.get_global_attribute("stateless_scope")
    global_state.set_global_attribute("stateless_scope", None)
    try:
        yield
    finally:
        global_state.set_global_attribute("stateless_scope", scope)


def set_initial_value(variable, value) -> None:
    """Give a variable created inside :func:`deferred_variables` its starting value."""
    if getattr(variable, "_value", None) is None and getattr(variable, "_initializer", None) is not None:
        variable._initializer = lambda shape, dtype=None: value
    else:
        # Made already (outside the deferral): inside a stateless scope an assign would only be
        # recorded in the scope, and lost.
        with outside_deferral():
            variable.assign(value)


def is_deferred_variable_error(error: Exception) -> bool:
    """True when a layer refused to build inside :func:`deferred_variables`."""
    return "stateless scope" in str(error)


def config_of(layer, where: str = "") -> dict:
    """``layer.get_config()``, or UnsupportedLayer naming the layer and the way out.

    Custom layers that take objects in ``__init__`` (a function, a tensor) and some published
    layers raise from ``get_config()``; kerasnb recreates layers from their configs, so such a
    layer cannot be carried into a new model. ``where`` says where it sits, for the message.
    """
    from .errors import UnsupportedLayer, first_line

    try:
        return layer.get_config()
    except Exception as error:
        place = where or f"Layer {layer.name!r}"
        raise UnsupportedLayer(
            f"{place} ({type(layer).__name__}) cannot be recreated: its get_config() raised "
            f"{type(error).__name__}: {first_line(error, 200).rstrip('.')}. kerasnb makes every layer of the new model "
            "from its config, and the model you pass in is never reused. What would work: give "
            f"{type(layer).__name__} a get_config() that returns its __init__ arguments, register the class with "
            "@keras.saving.register_keras_serializable(), and pass an instance built from plain arguments. "
            f"Received: layer={layer.name!r} of type {type(layer).__name__}"
        ) from None


_INIT_ARGUMENTS: dict = {}


def init_arguments(cls) -> tuple:
    """The named constructor arguments of a layer class (remembered per class)."""
    if cls not in _INIT_ARGUMENTS:
        try:
            params = inspect.signature(cls.__init__).parameters.values()
            _INIT_ARGUMENTS[cls] = tuple(p.name for p in params if p.name != "self"
                                         and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
        except (TypeError, ValueError):
            _INIT_ARGUMENTS[cls] = ()
    return _INIT_ARGUMENTS[cls]


def graph_config(model) -> dict:
    """The functional graph's own config (layers and wiring), even for a subclass that overrides get_config."""
    from keras.src.models.functional import Functional

    return Functional.get_config(model)


def model_from_graph_config(cls, config, custom_objects=None):
    """An instance of ``cls`` (a Functional subclass) from :func:`graph_config`; extra keys go to its constructor."""
    from keras.src.models.functional import functional_from_config

    return functional_from_config(cls, config, custom_objects=custom_objects)


def build_lazy_sublayers(model) -> None:
    """Build the sub-layers that ``model``'s layers create in ``__init__`` but build only in ``call``.

    A layer with no ``build()`` of its own and a ``compute_output_shape`` (DebertaV3's
    RelativeEmbedding and its LayerNormalization) is built by its build_config without them, and a
    symbolic call does not run ``call``; loading a graph that holds one then finds no variables for
    the sub-layer's saved weights. One eager call on zeros of the call's input shapes builds them."""
    for view in walk(model):
        layer = view.operation
        if is_graph_model(layer):
            build_lazy_sublayers(layer)
            continue
        if not isinstance(layer, keras.layers.Layer):
            continue
        if all(sub.built for sub in sublayers(layer)):
            continue
        zeros = {}
        for tensor in keras.tree.flatten((view.args, view.kwargs)):
            if isinstance(tensor, keras.KerasTensor):
                shape = tuple(1 if d is None else d for d in tensor.shape)
                zeros[id(tensor)] = keras.ops.zeros(shape, dtype=tensor.dtype)
        args, kwargs = view.fill_in(zeros)
        try:
            layer(*args, **kwargs)
        except Exception:  # leave it as Keras builds it: loading then says which layer is not built
            pass


def keras_op_name(op):
    """The class name of ``op`` when it is a raw ``keras.ops`` operation (``silu(x)``, ``x * 0.5``),
    not a layer; else None."""
    if isinstance(op, keras.layers.Layer) or not type(op).__module__.startswith("keras.src.ops"):
        return None
    return type(op).__name__


def keras_class(module: str, name: str):
    """Keras's own class ``name`` from its module ``module`` (``"applications.convnext"``), or None
    where this Keras has no such class."""
    import importlib

    try:
        return getattr(importlib.import_module("keras.src." + module), name, None)
    except ImportError:
        return None


def family_attributes(model, plain_model) -> dict:
    """The attributes ``model``'s own class set on it, beyond what every keras.Model has (those of
    ``plain_model``, a keras.Model): the public ones, and keras-hub's ``_token_embedding``, which
    backs the public ``token_embedding`` its tasks read."""
    keras_own = vars(plain_model)
    return {key: value for key, value in vars(model).items()
            if not (key.startswith("__") or (key.startswith("_") and key != "_token_embedding")
                    or key in keras_own)}
