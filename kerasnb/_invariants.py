"""Every variable of the model being edited ends up in the new model once, with its ties, or is reported.

Three things make that hold, all paired by structure (the order of tracked sub-layers and
variables) and object ids, never by the names Keras generates:

- :func:`shared_sublayer`: a layer that is called as a node of the graph and is also a sub-layer
  of another layer of that graph (SAM3's backbone calls ``detr_decoder.box_head`` itself; a
  language model's output layer holds the embedding it reuses) stays one object: the node calls
  the rebuilt owner's own sub-layer, so both share its variables as before.
- :func:`carry_uncalled`: layers a model tracks but never calls (BASNet tracks its encoder, whose
  stem it never calls) come along as copies with their values, so ``count_params()`` and
  ``weights`` stay the same; a note says so.
- :func:`check`: after every rebuild, a whole-model check in O(number of variables): no variable
  object of the old model is in the new one, each old variable went to at most one new variable
  and no two went to the same one (ties kept, none made), and every old variable is either in
  the new model or belongs to a layer the report lists (a row, ``removed`` when it is gone), or
  to a note. A violation is a bug of kerasnb: :class:`InternalError` names the variables.
"""

from __future__ import annotations

import keras

from . import _graph, weights
from .errors import InternalError, InvalidEdit, UnsupportedLayer
from ._pass import Record
from .report import Status

CARRIED_ATTRIBUTE = "uncalled_layers"  # where a new model keeps the copies of layers it never calls


# ----------------------------------------------------------------------------- shared sub-layers


def sublayer_owners(model) -> dict:
    """``{id(layer): (owner, index)}`` for each layer of ``model``'s graph that is also a sub-layer
    of another layer of that graph: ``index`` is its place in ``_graph.sublayers(owner)``."""
    ops = [op for op in _graph.layers_in_order(model)
           if isinstance(op, keras.layers.Layer) and not _graph.is_graph_model(op)]
    in_graph = {id(op) for op in ops}
    owners: dict = {}
    for op in ops:
        subs = _graph.sublayers(op)
        if len(subs) < 2:
            continue
        for index, sub in enumerate(subs[1:], 1):
            if id(sub) in in_graph and id(sub) not in owners and owners.get(id(op), (None,))[0] is not sub:
                owners[id(sub)] = (op, index)
    return owners


def shared_sublayer(rebuild, op):
    """The new layer for ``op`` when it is a sub-layer of another layer of the same graph that is
    replayed: the rebuilt owner's own sub-layer at the same place (made now if the owner's call
    comes later). None when ``op`` stands alone."""
    if rebuild.owners is None:
        rebuild.owners = sublayer_owners(rebuild.model)
    found = rebuild.owners.get(id(op))
    if found is None:
        return None
    owner, index = found
    if not _replayed(rebuild, owner):
        return None  # the owner's calls are replaced or deleted: the layer goes on alone
    plan, state = rebuild.plan, rebuild.state
    path = state.old_paths.get(id(op), rebuild.prefix + op.name)
    owner_path = state.old_paths.get(id(owner), rebuild.prefix + owner.name)
    if plan.changes_for(op) or id(op) in plan.rules or (plan.prune is not None and id(op) in plan.prune.slices):
        raise InvalidEdit(
            f"{type(op).__name__} {path!r} is called in the graph and is also a sub-layer of {owner_path!r}: both "
            "use the same variables, so changing it alone would untie them. What would work: an edit of "
            f"{owner_path!r} (its config rebuilds its sub-layers), or replacing the call of {path!r} with a new "
            f"layer. Received: an edit of {path!r}"
        )
    new_owner = state.clones.get(id(owner))
    if new_owner is None:
        new_owner = state.clones[id(owner)] = rebuild._clone(owner)
    olds, news = _graph.sublayers(owner), _graph.sublayers(new_owner)
    if len(olds) != len(news) or type(news[index]) is not type(op):
        raise UnsupportedLayer(
            f"{type(op).__name__} {path!r} is called in the graph and is also a sub-layer of {owner_path!r}, but the "
            f"rebuilt {owner_path!r} has other sub-layers ({len(news)} against {len(olds)}), so the two cannot be "
            f"kept as one layer. Received: layer={path!r}"
        )
    new_op = news[index]

    # Its owner's flag, where an edit sets one (freezing the owner freezes this same layer).
    state.sources[id(new_op)] = (op, plan.trainable.get(id(op), plan.trainable.get(id(owner))))
    state.record(new_op, Record(path, Status.KEPT))
    state.shared_sublayers.append((owner, new_owner, new_op))
    return new_op


def _replayed(rebuild, owner) -> bool:
    """Some call of ``owner`` in this graph is replayed as it is (so its rebuilt self is in the graph)."""
    plan = rebuild.plan
    for view in _graph.walk(rebuild.model):
        if view.operation is not owner or id(view.node) in plan.skip:
            continue
        if rebuild.needed is not None and id(view.node) not in rebuild.needed:
            continue
        if plan.prune is not None and id(view.node) in plan.prune.dead:
            continue
        node_plan = plan.nodes.get(id(view.node))
        if node_plan is None or node_plan.action is None:
            return True
    return False


def follow_owners(state) -> None:
    """A shared sub-layer's record follows its owner's: re-initialised or changed with it."""
    for owner, new_owner, new_op in state.shared_sublayers:
        owned, rec = state.records[id(new_owner)], state.records[id(new_op)]
        if owned.status == Status.REINITIALIZED:
            rec.status, rec.faithful = owned.status, False
            rec.reason = f"re-initialised with {owner.name!r}, which holds it ({owned.reason})"
        elif owned.status not in (Status.KEPT, Status.NO_WEIGHTS):  # pruned, or a Transform's rule: its variables too
            rec.status, rec.faithful = owned.status, False
            rec.reason = f"with {owner.name!r}, which holds it: {owned.reason}"
        elif owned.config_changed:
            rec.faithful = False
            rec.config_changed = f"{owner.name!r}, which holds it, changed ({owned.config_changed})"


# ----------------------------------------------------------------------------- tracked, never called


def carry_uncalled(model, new_model, state) -> None:
    """Copies, with their values, of the layers ``model`` tracks but never calls, kept by the new
    graph model standing for the one that tracked them (attribute ``uncalled_layers``).

    Fills ``state.carried`` (id(old variable) -> new variable) and ``state.accounted`` (ids of old
    variables the report accounts for otherwise: their graph model was removed, or a note names
    them). Costs one pass over the variables when every layer is called (the usual case).
    """
    reached = _called_variables(state)
    unreached = {id(v): v for v in model.weights if id(v) not in reached}
    if not unreached:
        return
    walked = {id(layer) for layer in state.source_layers}
    graph_models = [model] + [layer for layer in state.source_layers if _graph.is_graph_model(layer)]
    seen: set = set()
    dropped, carried_names, carried_params = [], [], 0
    for graph_model in graph_models:
        found: list = []  # (path, old layer)
        prefix = "" if graph_model is model else state.old_paths[id(graph_model)] + "/"
        _find_uncalled(graph_model, prefix, unreached, walked, seen, found)
        if not found:
            continue
        new_graph = new_model if graph_model is model else state.clones.get(id(graph_model))
        if new_graph is None:  # the graph model that tracked them is removed (its row says so)
            state.accounted.update(id(v) for _, layer in found for v in layer.weights)
            continue
        copies = []
        for path, layer in found:
            copy = _copy(layer)
            if copy is None:
                dropped.append(path)
                state.accounted.update(id(v) for v in layer.weights)
                continue
            copies.append(copy)
            state.carried.update((id(o), n) for o, n in zip(layer.weights, copy.weights))
            carried_names.append(path)
            carried_params += _graph.count_params(layer)
        if copies:
            setattr(new_graph, CARRIED_ATTRIBUTE, list(getattr(new_graph, CARRIED_ATTRIBUTE, None) or []) + copies)
    left = [v for key, v in unreached.items() if key not in state.carried and key not in state.accounted]
    if left:  # variables a graph model holds itself, or a layer of which only some variables are unused
        dropped += [v.path for v in left]
        state.accounted.update(id(v) for v in left)
    if carried_names:
        state.notes.append(
            f"{_quoted(carried_names)} ({carried_params:,} params) are tracked by the model but never called in its "
            f"graph; the edited model carries copies of them with their values in `.{CARRIED_ATTRIBUTE}`, so "
            "count_params() and weights match the original's. They compute nothing; a .keras file stores their "
            "weights, but a model loaded from it does not track them."
        )
    if dropped:
        state.notes.append(
            f"{_quoted(dropped)}: tracked by the model but never called, and kerasnb could not copy them, so the "
            "edited model does not have them (count_params() is smaller by their size); they computed nothing."
        )


def carry_into_task(rebuilt, task, backbone_name: str) -> None:
    """A keras-hub task made again around the edited backbone keeps the carried copies: those of
    the rebuilt graph go to the task, those of its backbone to the task's backbone."""
    pairs = [(rebuilt, task)]
    try:
        pairs.append((rebuilt.get_layer(backbone_name), task.backbone))
    except (ValueError, AttributeError):
        pass
    for source, target in pairs:
        carried = getattr(source, CARRIED_ATTRIBUTE, None)
        if carried and target is not source:
            setattr(target, CARRIED_ATTRIBUTE, list(carried))


def carry_into_backbone(rebuilt, backbone) -> None:
    """An EditedBackbone made over the rebuilt graph keeps the copies that graph carries."""
    carried = getattr(rebuilt, CARRIED_ATTRIBUTE, None)
    if carried and backbone is not rebuilt:
        setattr(backbone, CARRIED_ATTRIBUTE, list(carried))


def check_wrapped(rebuilt, final) -> None:
    """Raise :class:`InternalError` unless ``final`` (the task or backbone made around the checked
    ``rebuilt`` graph) holds as many variables, of the same shapes, as ``rebuilt``: the whole-model
    check ran on ``rebuilt``, and this keeps it true of what the user gets."""
    if final is rebuilt:
        return
    def shapes(model):
        return sorted((tuple(v.shape), str(v.dtype)) for v in _unique(model.weights))
    before, after = shapes(rebuilt), shapes(final)
    if before != after:
        _fail(f"the {type(final).__name__} made around the edited graph has {len(after)} variables "
              f"({sum(_graph.size_of(s) for s, _ in after):,} values) where the graph has {len(before)} "
              f"({sum(_graph.size_of(s) for s, _ in before):,})")


def _unique(variables) -> list:
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _called_variables(state) -> set:
    """Ids of the variables of every layer called in the graph (nested graphs too)."""
    return {id(v) for layer in state.source_layers if not _graph.is_graph_model(layer)
            for v in getattr(layer, "weights", ())}


def _find_uncalled(container, prefix, unreached, walked, seen, found) -> None:
    """Tracked layers under ``container`` holding only unreached variables (a mixed one is looked into)."""
    for layer in _graph.tracked_layers(container):
        if id(layer) in walked or id(layer) in seen:
            continue  # called in a graph (a nested graph model is looked into as its own graph)
        seen.add(id(layer))
        variables = layer.weights
        loose = [v for v in variables if id(v) in unreached]
        if not loose:
            continue
        if len(loose) == len(variables):
            found.append((prefix + layer.name, layer))
        else:
            _find_uncalled(layer, f"{prefix}{layer.name}/", unreached, walked, seen, found)


def _copy(layer):
    """A built copy of ``layer`` with its values (given when the rebuild's variables are made), or None."""
    def make():
        new = type(layer).from_config(_graph.config_of(layer))
        if not new.built:
            build_config = layer.get_build_config()
            if build_config:
                new.build_from_config(build_config)
        return new

    try:
        try:
            new = make()
        except (ValueError, TypeError) as error:
            if not _graph.is_deferred_variable_error(error):
                raise
            with _graph.outside_deferral():
                new = make()
    except Exception:
        return None
    outcome = weights.carry(layer, new)
    if outcome.kind != Status.KEPT or len(outcome.values) != len(new.weights):
        return None
    outcome.assign()
    olds, news = _graph.sublayers(layer), _graph.sublayers(new)
    if len(olds) == len(news):
        _graph.copy_flags(olds, news)
    return new


def _quoted(names) -> str:
    return ", ".join(repr(n) for n in names)


# ----------------------------------------------------------------------------- the check


def given_every_variable(old, new, outcome) -> None:
    """A copy rule must give every variable of the new layer a value (none left at its initialiser)."""
    if outcome.kind != Status.KEPT:
        return
    given = {id(variable) for variable, _ in outcome.values}
    missed = [v.path for v in new.weights if id(v) not in given]
    if missed:
        raise InternalError(
            f"kerasnb bug: the weights of {old.name!r} were reported copied, but its new variables {missed} got no "
            "value; the edited model would start them at random while the report says kept. Nothing was returned; "
            "please report this with the model."
        )


def check(model, new_model, state) -> None:
    """Raise :class:`InternalError` unless every variable of ``model`` is in ``new_model`` once, with
    its ties, or belongs to a layer the report lists, and no variable object is in both."""
    old_ids = {id(v): v for v in model.weights}
    new_vars = new_model.weights
    shared = [v.path for v in new_vars if id(v) in old_ids]
    if shared:
        _fail(f"the edited model holds variables of the model it was made from: {_few(shared)}; training one would "
              "change the other")
    old_by_path = {state.old_paths[id(layer)]: layer for layer in state.source_layers}
    new_ids = {id(v) for v in new_vars}
    went_to: dict = {}  # id(old variable) -> new variable
    came_from: dict = {}  # id(new variable) -> old variable
    untied, merged = [], []

    def pair(old_var, new_var):
        before = went_to.setdefault(id(old_var), new_var)
        if before is not new_var:
            untied.append(old_var.path)
        source = came_from.setdefault(id(new_var), old_var)
        if source is not old_var:
            merged.append(f"{source.path} and {old_var.path}")

    for _, layer in _graph.walk_layers(new_model):
        if _graph.is_graph_model(layer):
            continue  # its layers have records of their own
        rec = state.records.get(id(layer))
        if rec is None or rec.prev_path is None or rec.status == Status.REINITIALIZED:
            continue  # new, or re-initialised (its row says so)
        old = old_by_path.get(rec.prev_path)
        if old is None:
            continue
        olds, news = getattr(old, "weights", ()), getattr(layer, "weights", ())
        if len(olds) != len(news):
            continue  # another set of variables (LoRA factors, a config change): its row says so
        for o, n in zip(olds, news):
            pair(o, n)
    for key, new_var in state.carried.items():
        if id(new_var) not in new_ids:
            _fail(f"the copy of the uncalled variable {old_ids[key].path!r} is not in the edited model")
        pair(old_ids[key], new_var)
    if untied:
        _fail(f"variables shared by several layers of the original are separate copies in the edited model: "
              f"{_few(sorted(set(untied)))}; training would let the copies drift apart")
    if merged:
        _fail(f"separate variables of the original became one variable of the edited model: {_few(merged)}")
    called = _called_variables(state)
    lost = [v.path for key, v in old_ids.items() if key not in called and key not in went_to and key not in state.accounted]
    if lost:
        _fail(f"variables of the original are neither in the edited model nor in the report: {_few(lost)}")


def _few(items, limit: int = 8) -> str:
    items = list(items)
    text = ", ".join(repr(i) for i in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _fail(what: str):
    raise InternalError(
        f"kerasnb bug: {what}. The edited model would silently differ from what the report says, so nothing was "
        "returned; please report this with the model."
    )
