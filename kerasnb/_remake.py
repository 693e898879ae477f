"""Making a layer of the graph again, new variables and all, and never one that silently differs.

The plain route is the layer's own config (plus the edit's changes). Some published layers'
configs do not make them again: a derived key their constructor refuses, a constructor argument
left out, a get_config() or from_config() that raises. For an untouched layer the rebuild then
takes the next route (:func:`faithful_twins`): the arguments it was made with, then its model's
own config; a layer that no route makes with the variables it had is refused.

Layers are made inside the rebuild's deferral of variables (:func:`deferring` steps outside it
for a layer that makes variables in ``__init__``).
"""

from __future__ import annotations

import inspect

import keras

from . import _graph, _inside, weights
from ._pass import Pass, Record
from .errors import InvalidEdit, UnsupportedLayer, first_line
from .report import Status


def layer_again(op, path: str, plan, state, model):
    """A new layer standing for ``op`` (at ``path`` of ``model``): from its config with the plan's
    changes, or, where its own config cannot make it again as it was, by the route the pass chose
    (``state.overrides``: the arguments it was made with, or its model's own config). Records it
    with the weight rule that gives it its variables (copy, a Transform's rule, or pruning's slices).
    """
    changes = plan.changes_for(op)
    override = state.overrides.get(id(op))
    if override is not None and not changes:
        new_op = override[1]()
        _graph.drop_all_calls(new_op)  # a call from an earlier, abandoned attempt
        _inside.remade(op, new_op, plan.rules.get(id(op)))  # a change inside it goes in on this route too
        state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
        state.untouched[id(op)] = model
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
        # its model's own config (see faithful_twins).
        if changes:
            raise
        new_op = from_arguments(op)
        if new_op is None:
            raise _another_route(op, state, model, refusal) from None
        config = None
    if config is not None:
        config.update(changes)
        if "trainable" in config and id(op) in plan.trainable:
            config["trainable"] = plan.trainable[id(op)]
    try:
        if config is not None:
            new_op = remake(op, config, changes)
    except Exception as error:
        if changes:
            raise InvalidEdit(
                f"{type(op).__name__} {op.name!r} cannot be rebuilt with {changes!r}: {first_line(error)} "
                f"Received: changes={changes!r}"
            ) from None
        raise _another_route(op, state, model, UnsupportedLayer(
            f"Layer {op.name!r} of type {type(op).__name__} cannot be recreated from its config "
            f"({first_line(error)}). Custom layers need get_config() and registration with "
            f"@keras.saving.register_keras_serializable(). Every edit rebuilds the whole model, so this layer "
            f"blocks edits anywhere in it. Received: layer={op.name!r}"
        )) from None
    state.sources[id(new_op)] = (op, plan.trainable.get(id(op)))
    rule = plan.rules.get(id(op))
    _inside.remade(op, new_op, rule)  # a block changed inside, now or by an earlier edit
    if rule is not None:  # a Transform's own weight rule (adapting an input kernel, folding a BatchNorm)
        if not changes:  # made as it was: checked like an untouched layer (see lost_in_config)
            state.untouched[id(op)] = model
        state.record(new_op, Record(state.old_paths.get(id(op), path), None, faithful=False,
                                    config_changed=describe_changes(op, changes)))
        state.ruled.append((op, new_op, rule))
        return new_op
    kept = plan.prune.slices.get(id(op)) if plan.prune is not None else None
    if kept is not None:
        # The weight rule of pruning: the surviving slices of the old values (see _transfer_weights).
        state.record(new_op, Record(state.old_paths.get(id(op), path), Status.PRUNED, faithful=False))
        state.slices.append((op, new_op, kept))
        return new_op
    if not changes:
        state.untouched[id(op)] = model
    described = describe_changes(op, changes)
    state.record(new_op, Record(state.old_paths.get(id(op), path), Status.KEPT, config_changed=described))
    state.copies.append((op, new_op))
    return new_op


def _another_route(op, state, model, refusal) -> ConfigLost:
    """The retry that makes ``op``, whose own config cannot make it, another way (the arguments it
    was made with, then its model's own config: :func:`faithful_twins`); ``refusal`` is raised if
    no route makes it faithfully."""
    state.untouched[id(op)] = model
    return ConfigLost([op], {id(op): refusal})


def computation_changes(op, changes) -> dict:
    """The changes that make the layer compute something else (a new name or flag does not)."""
    if not changes:
        return {}
    old = _graph.config_of(op)
    return {k: v for k, v in changes.items() if k not in ("name", "trainable") and old.get(k) != v}

def describe_changes(op, changes) -> str:
    effective = computation_changes(op, changes)
    if not effective:
        return ""
    old = _graph.config_of(op)
    parts = [f"{k}: {short(old.get(k))} -> {short(v)}" for k, v in effective.items()]
    return "config changed (" + ", ".join(parts) + ")"

def short(value) -> str:
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = value.get("config", {}).get("name", value)  # a dtype policy reads as its name
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."

def remake(op, config: dict, changes: dict):
    """A new layer like ``op`` from ``config``, and never one that silently differs.

    - Some layers' configs hold derived values their constructor refuses (keras-hub's ViT
      patching layer lists ``num_patches``): Keras reloads such a model from the model's own
      arguments, never from that layer's config. Those keys are left out.
    - Some configs leave out a constructor argument, so the layer made from them would use the
      default: caught here by comparing every argument missing from the config with the attribute
      the old layer keeps of it (an argument kept nowhere, as keras-hub's MiT encoder does with
      ``sr_ratio``, shows only in the variables: see :func:`lost_in_config`).
    Either way, an untouched layer is then made from the arguments it was made with
    (:func:`from_arguments`); otherwise it is refused.
    """
    cls = type(op)
    failure = layer = None
    made_from = config
    try:
        layer = from_config(cls, config)
    except Exception as error:
        refused = _refused_keys(error) & set(config)
        if not refused or refused & set(changes):
            raise
        failure = error
        made_from = {k: v for k, v in config.items() if k not in refused}
        try:
            layer = from_config(cls, made_from)
        except Exception:
            layer = None
    if layer is not None and not _lost_arguments(op, layer, config):
        if made_from is not config or isinstance(getattr(op, "get_config", None), _MadeFrom):
            _carry_config(layer, made_from)  # its class's own config would not make it again
        return layer
    again = None if changes else from_arguments(op)
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

def from_arguments(op):
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
        layer = deferring(lambda: cls(**arguments))
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

def deferring(make):
    """``make()`` inside the deferral; a layer that makes variables in __init__ or outside build()
    refuses that, and is then made (or called) outside it: the rest of the rebuild stays deferred."""
    try:
        return make()
    except (ValueError, TypeError) as error:
        if not _graph.is_deferred_variable_error(error):
            raise
    with _graph.outside_deferral():
        return make()

def from_config(cls, config):
    """A new layer from its config (see :func:`deferring`), holding no variable of the old one."""
    config = _without_variables(config)
    return deferring(lambda: cls.from_config(config))

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

def call_deferring(layer, args, kwargs):
    """Call a new layer (see :func:`deferring`)."""
    return deferring(lambda: layer(*args, **kwargs))

class ConfigLost(Exception):
    """Untouched layers came out of their own configs with other variables (a config that does
    not round-trip); raised inside the deferral so the attempt's variables are dropped."""

    def __init__(self, layers, refusals=None):
        super().__init__(", ".join(layer.name for layer in layers))
        self.layers = layers
        self.refusals = refusals or {}  # id(old layer) -> the refusal for a layer its config cannot make

def lost_in_config(state: Pass) -> list:
    """Old layers rebuilt untouched, fed inputs of their old shapes, whose variables differ."""
    lost = []
    for old, new in state.copies:
        if id(old) not in state.untouched or not state.same_input_shapes.get(id(old), False):
            continue
        weights.mirror_lora(old, new)  # LoRA on a block's sub-layers is not in the block's config
        if not same_variables(old, new):
            lost.append(old)
    # A layer a weight rule maps, made from its config unchanged: its variables apart from LoRA
    # factors (which the rule adds or folds) and a sub-layer changed inside it (whose variables the
    # change makes anew) must come out the same, or another route makes it.
    for old, new, rule in state.ruled:
        if id(old) not in state.untouched or not state.same_input_shapes.get(id(old), False):
            continue
        changed = _inside.changed_variables(rule, new)
        if not same_variables(old, new, lambda v: weights.is_lora_factor(v) or id(v) in changed):
            lost.append(old)
    return lost

def faithful_twins(layers, state: Pass, overrides: dict, refusals=None) -> dict:
    """``overrides`` with, for each layer whose own config does not make it again, the next way to
    make it: ``{id(old layer): (route, a function making the new layer)}``.

    Some published layers leave a constructor argument out of their get_config() (keras-hub's MiT
    encoder block drops ``sr_ratio``, Qwen3's block ``head_dim``), or their get_config() or
    from_config() raises (Swin's patch embedding, Flux's MLP embedder), although the model that
    holds them reloads faithfully from its own arguments. Such a layer is made again, in this
    order, from:

    1. the arguments it was made with (:func:`from_arguments`);
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
        if route is None and from_arguments(old) is not None:
            # A fresh layer at every attempt: an abandoned attempt leaves its variables unmade.
            overrides[id(old)] = ("arguments", lambda old=old: from_arguments(old))
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
            if twin is not None and same_variables(old, twin):
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

def same_variables(old, new, leave_out=None) -> bool:
    def listed(layer):
        return [(tuple(v.shape), v.dtype) for v in layer.weights if leave_out is None or not leave_out(v)]
    return listed(old) == listed(new)
