"""Edits of a layer held inside a layer of the graph: a block made again with one sub-layer changed.

A keras-hub block (TransformerEncoder, ViT's encoder...) is one layer of the graph; the layers it
holds are called inside its own ``call()``, where kerasnb cannot rewire anything. What it can do is
make the block again (by the rebuild's usual routes: its config, the arguments it was made with),
build it with the shapes the old one was built with, and then put one new layer where the block
holds the old one (same position among its tracked layers, so the order of its variables stays).
Every other variable is carried over by that order, never by name.

``replace``, ``configure``, ``delete`` (an ``Identity`` in its place) and a :class:`~kerasnb.Transform`
with a weight rule (``prune_heads``) on ``"block/sub"`` all become one ``Transform`` of the block
whose rule is an :class:`InsideRule`. The rebuild asks it to change the new block before the
block is called (:func:`remade`), and the block then remembers the change, so that a later rebuild
of the edited model makes it again the same way.
"""

from __future__ import annotations

import keras

from . import _graph, _targets, weights
from .edits import Configure, Delete, Replace, Transform
from .errors import IncompatibleShape, InvalidEdit, UnsupportedLayer, first_line
from .report import Status

_CHANGES = "_kerasnb_inside"  # on a remade block: ((child index path, layer class, layer config), ...)


class InsideRule:
    """The weight rule of a block made again with one sub-layer changed (see the module docstring)."""

    changes_computation = True  # the block computes something else: its consumers see changed inputs

    def __init__(self, found: _targets.Inside, edit, make, values, kind: Status, reason: str):
        self.found, self.edit = found, edit
        self.make = make  # old sub-layer -> the new one (unbuilt)
        self.values = values  # (old sub-layer, new sub-layer) -> [(variable, value)]
        self.kind, self.reason = kind, reason
        self.index = _index_path(found.block.layer, found.chain)
        self.made: dict = {}  # id(new block) -> (old sub-layer, new sub-layer)
        self.check = None  # (old sub-layer, new one built) -> None, or a refusal before the block is called
        self.__name__ = f"inside {found.relative!r}"

    def prepare(self, old_block, new_block) -> None:
        """Put the new sub-layer into ``new_block`` (made from ``old_block``, not yet called)."""
        old_sub = _at(old_block, self.index)
        with _scope_of(_at(new_block, self.index[:-1])):  # its variables' paths read as the old ones did
            new_sub = self.make(old_sub)
            _build_like(new_sub, old_sub, self.edit)
        if self.check is not None:
            self.check(old_sub, new_sub)
        _swap(new_block, self.index, new_sub)
        _remember(new_block, self.index, new_sub)
        self.made[id(new_block)] = (old_sub, new_sub)

    def __call__(self, old_block, new_block) -> weights.Outcome:
        """Every variable of the block by its order, the changed sub-layer's by its own rule."""
        old_sub, new_sub = self.made[id(new_block)]
        values = _carried_around(old_block, new_block, old_sub, new_sub, self.found)
        values += self.values(old_sub, new_sub)  # a Transform's rule says its kind and words here
        return weights.Outcome(self.kind, self.reason, values)

    def trace(self, block, args, kwargs, old_outputs) -> None:
        """Run the block's own call() on the new input symbolically: a block that declares its output
        shape (compute_output_shape) is otherwise called without running it, so a layer that does not
        fit inside would only fail when the model runs."""
        from . import _remake  # here: _remake imports this module

        spec = _remake.deferring(lambda: keras.Operation.compute_output_spec(block, *args, **kwargs))
        got = [tuple(t.shape) for t in keras.tree.flatten(spec)]
        wanted = [tuple(t.shape) for t in old_outputs]
        if got != wanted:
            raise ValueError(f"it now gives {got[0] if len(got) == 1 else got} where it gave "
                             f"{wanted[0] if len(wanted) == 1 else wanted}.")

    def call_failed(self, block, error) -> Exception:
        """The block made again refuses its call: the new sub-layer does not fit where it is called."""
        if isinstance(self.edit, Delete):
            return IncompatibleShape(
                f"{self.found.relative!r} cannot be deleted from {type(block).__name__} {self.found.block.path!r}: "
                f"its own call() calls it, and an Identity in its place (passing on its first input) does not fit: "
                f"{_what_keras_said(error)} What would work: replace it with a layer that takes what it took and "
                f"gives back its output's shape, or edit {self.found.block.path!r} as a whole. Received: {self.edit!r}")
        return IncompatibleShape(
            f"{type(block).__name__} {self.found.block.path!r} made again with {self.found.relative!r} changed "
            f"cannot be called as before: {_what_keras_said(error)} The layers inside it are called by its own call(), "
            "so a layer put there must take what the old one took and give back the same shape. What would work: "
            f"a layer with the same input and output shapes, or an edit of {self.found.block.path!r} as a whole. "
            f"Received: {self.edit!r}")


def as_block_edit(found: _targets.Inside, edit):
    """``edit`` of the sub-layer ``found`` as a Transform of its block (with its note), or a refusal."""
    sub, where = found.layer, found.path
    kind = f"{type(sub).__name__} {found.relative!r} inside {type(found.block.layer).__name__} {found.block.path!r}"
    if isinstance(edit, Replace):
        piece = edit.replacement
        if not isinstance(piece, keras.layers.Layer) or isinstance(piece, keras.Model):
            raise InvalidEdit(
                f"{kind} is called by the block's own call(), so it can only be replaced by one layer that "
                f"takes what it took. Received: a replacement of type {type(piece).__name__} in {edit!r}")
        config = _graph.config_of(piece, f"The replacement {piece.name!r}")

        def make(old):
            from . import _remake  # here: _remake imports this module
            return _remake.from_config(type(piece), dict(config))

        rule = InsideRule(found, edit, make, None, Status.ADAPTED, "")

        def values(old, new):
            brought = ("its own weights" if piece.weights else "new weights, freshly initialised" if new.weights
                       else "no weights")
            rule.reason = (f"{found.relative!r} ({type(sub).__name__}) replaced inside by {type(piece).__name__} "
                           f"{piece.name!r} ({brought}); every other weight kept")
            return _own_weights(piece, new, edit) if piece.weights else []

        rule.values = values
        rule.check = lambda old, new: _own_weights(piece, new, edit) if piece.weights and new.built else None
        return _on_block(rule)
    if isinstance(edit, Delete):
        if edit.keep_input is not None:
            raise InvalidEdit(f"keep_input chooses among the inputs of a layer of the graph; {kind} passes on the "
                              f"first input of its call. Received: {edit!r}")

        def make(old):
            return keras.layers.Identity(name=old.name, dtype=old.dtype_policy.name)

        params = _graph.count_params(sub)
        reason = (f"{found.relative!r} ({type(sub).__name__}) deleted inside: its input passes on"
                  + (f" ({params:,} params removed)" if params else "") + "; every other weight kept")
        return _on_block(InsideRule(found, edit, make, lambda old, new: [], Status.ADAPTED, reason))
    if isinstance(edit, (Configure, Transform)):
        changes = dict(edit.changes)
        config = _graph.config_of(sub, f"Layer {where!r}")
        unknown = [k for k in changes if k not in config and k not in _graph.init_arguments(type(sub))]
        if unknown:
            raise InvalidEdit(f"{kind} has no config option {', '.join(map(repr, unknown))}. Options it has: "
                              f"{', '.join(sorted(config))}. Received: changes={changes!r}")
        if "name" in changes:
            raise InvalidEdit(f"A layer inside a block keeps its name (the block may look it up by it). "
                              f"Received: {edit!r}")

        def make(old):
            from . import _remake  # here: _remake imports this module
            try:
                return _remake.remake(old, {**_graph.config_of(old), **changes}, changes)
            except Exception as error:
                raise InvalidEdit(f"{kind} cannot be made again with {changes!r}: {first_line(error)} "
                                  f"Received: {edit!r}") from None

        if isinstance(edit, Transform):
            rule = InsideRule(found, edit, make, None, Status.ADAPTED, "")

            def values(old, new):
                outcome = edit.rule(old, new)
                rule.kind, rule.reason = outcome.kind, f"inside {found.relative!r}: {outcome.reason}"
                return list(outcome.values)

            rule.values = values
            return _on_block(rule)

        def values(old, new):
            outcome = weights.carry(old, new)
            if outcome.kind == Status.REINITIALIZED:  # see check below: never reached after it
                raise AssertionError(outcome.reason)
            return outcome.values

        def check(old, new):
            outcome = weights.carry(old, new) if new.built else weights.Outcome(Status.KEPT)
            if outcome.kind == Status.REINITIALIZED:
                raise InvalidEdit(
                    f"Configuring {kind} with {changes!r} changes its weights ({outcome.reason}). The layers that "
                    f"read it are called inside {found.block.path!r}'s own call(), which kerasnb cannot see to "
                    "slice, so the block would no longer fit together. What would work: configure "
                    f"{found.block.path!r} itself (its own config sets the sizes of what it holds), "
                    f"prune_heads for attention heads, or replace {found.block.path!r} whole. Received: {edit!r}")

        from . import _remake  # here: _remake imports this module
        words = _remake.describe_changes(sub, changes) or "config changed"
        rule = InsideRule(found, edit, make, values, Status.KEPT, f"inside {found.relative!r}: {words}")
        rule.check = check
        return _on_block(rule)
    raise InvalidEdit(f"{type(edit).__name__} cannot reach {kind}. Received: {edit!r}")


def changed_variables(rule, new_block) -> set:
    """Ids of the variables of the sub-layers ``rule`` swapped in or out of ``new_block`` (none when it
    is no :class:`InsideRule`): a rebuild checks the rest of the block against the old one."""
    if not isinstance(rule, InsideRule) or id(new_block) not in rule.made:
        return set()
    return {id(v) for sub in rule.made[id(new_block)] for v in sub.weights}


def _on_block(rule: InsideRule) -> Transform:
    return Transform(rule.found.block.path, rule)


def plan_note(found: _targets.Inside) -> str:
    return (f"{found.block.path!r} was made again with {found.relative!r} changed inside it. Its config now lists "
            "that change, so a .keras file of the edited model loads back as edited where kerasnb is imported "
            "(import kerasnb before keras.saving.load_model).")


def remade(old_block, new_block, rule) -> None:
    """Called by the rebuild for every layer it makes, before the layer's first call.

    A block an earlier edit changed inside is changed again the same way; then ``rule``'s own
    change, when it is an :class:`InsideRule`.
    """
    earlier = getattr(old_block, _CHANGES, ())
    if not earlier and not isinstance(rule, InsideRule):
        return
    _build_like(new_block, old_block, None)  # made from an edited block's config, that applies its changes
    done = {index for index, _, _ in getattr(new_block, _CHANGES, ())}
    for index, cls, config in earlier:
        if index in done:
            continue
        from . import _remake  # here: _remake imports this module
        with _scope_of(_at(new_block, index[:-1])):
            new_sub = _remake.from_config(cls, dict(config))
            _build_like(new_sub, _at(old_block, index), None)
        _swap(new_block, index, new_sub)
        _remember(new_block, index, new_sub)
    if isinstance(rule, InsideRule):
        rule.prepare(old_block, new_block)


# ----------------------------------------------------------------------------- structure


def _index_path(block, chain) -> tuple:
    """Where each layer of ``chain`` sits among its parent's tracked layers: by position, not name."""
    index, parent = [], block
    for layer in chain:
        index.append(next(i for i, child in enumerate(_graph.tracked_layers(parent)) if child is layer))
        parent = layer
    return tuple(index)


def _at(block, index):
    layer = block
    for i in index:
        layer = _graph.tracked_layers(layer)[i]
    return layer


def _scope_of(parent):
    """Keras's name scope of ``parent``: layers made in it have the paths its own sub-layers have."""
    import contextlib

    stack = contextlib.ExitStack()
    for name in (getattr(parent, "path", None) or "").split("/"):
        if name:
            stack.enter_context(keras.name_scope(name))
    return stack


def _swap(block, index, new_sub) -> None:
    parent = _at(block, index[:-1])
    _graph.swap_sublayer(parent, _graph.tracked_layers(parent)[index[-1]], new_sub)


def _remember(block, index, new_sub) -> None:
    # A change at ``index`` replaces what an earlier one did there and below it.
    earlier = tuple(c for c in getattr(block, _CHANGES, ()) if c[0][:len(index)] != index)
    object.__setattr__(block, _CHANGES, earlier + ((index, type(new_sub), new_sub.get_config()),))
    object.__setattr__(block, "__class__", _edited_class(type(block)))


# ----------------------------------------------------------------------------- saving

# A block changed inside becomes an instance of a subclass of its class (same name, same
# behaviour) whose config also lists the changes; Keras writes it under one registered name, and
# the class registered under that name makes it again: its own class from its own config, built,
# then the same layers put in the same places. Loading needs kerasnb imported, like any custom
# object.
_REGISTERED = "kerasnb>BlockChangedInside"
_EDITED: dict = {}  # a block class -> its subclass that remembers changes inside


def _edited_class(base):
    if getattr(base, "_kerasnb_edited", False):
        return base
    cls = _EDITED.get(base)
    if cls is None:
        cls = type(base.__name__, (base,), {
            "_kerasnb_edited": True, "__module__": base.__module__, "__qualname__": base.__qualname__,
            "__doc__": base.__doc__, "get_config": _config_with_changes,
            "from_config": classmethod(_from_config_with_changes)})
        _graph.serialize_as(cls, _REGISTERED)
        _EDITED[base] = cls
    return cls


def _base(layer_or_class):
    cls = layer_or_class if isinstance(layer_or_class, type) else type(layer_or_class)
    return cls.__bases__[0] if getattr(cls, "_kerasnb_edited", False) else cls


def _config_with_changes(self):
    base = _base(self)
    config = base.get_config(self)
    config["kerasnb_base"] = _class_spec(base)
    config["kerasnb_inside"] = [{"index": list(index), "layer": {**_class_spec(cls), "config": layer_config}}
                                for index, cls, layer_config in getattr(self, _CHANGES, ())]
    return config


def _from_config_with_changes(cls, config):
    config = dict(config)
    config.pop("kerasnb_base", None)
    pending = config.pop("kerasnb_inside", None)
    layer = _base(cls).from_config.__func__(cls, config)
    if pending:
        _change_when_built(layer, pending)
    return layer


def _change_when_built(layer, pending) -> None:
    """Once ``layer`` is built (from a saved build config, or by its first call), put the layers
    ``pending`` lists in their places."""
    import functools

    built_by = layer.build  # Keras's own wrapper of the class's build(), on this instance

    @functools.wraps(built_by)  # Keras reads build()'s signature to name the shapes it passes
    def build(*args, **kwargs):
        built_by(*args, **kwargs)
        object.__setattr__(layer, "build", built_by)
        _put_in(layer, pending)

    object.__setattr__(layer, "build", build)


def _put_in(self, pending) -> None:
    for item in pending:
        index = tuple(item["index"])
        with _scope_of(_at(self, index[:-1])):
            new_sub = keras.saving.deserialize_keras_object(item["layer"])
            _build_like(new_sub, _at(self, index), None)
        _swap(self, index, new_sub)
        _remember(self, index, new_sub)


def _class_spec(cls) -> dict:
    return {"module": cls.__module__, "class_name": cls.__name__,
            "registered_name": keras.saving.get_registered_name(cls)}


@keras.saving.register_keras_serializable(package="kerasnb", name="BlockChangedInside")
class _BlockChangedInside:
    """Reads back a block saved with changes inside (see :func:`_edited_class`)."""

    def get_config(self):  # never an instance: Keras wants the method to register the class
        return {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        spec = config.pop("kerasnb_base")
        pending = config.pop("kerasnb_inside", None)
        layer = keras.saving.deserialize_keras_object({**spec, "config": config})
        object.__setattr__(layer, "__class__", _edited_class(type(layer)))
        if pending:
            _change_when_built(layer, pending)
        return layer


def _build_like(new, old, edit) -> None:
    """Build ``new`` with the shapes ``old`` was built with (a layer that builds on its first call
    and has no weights, as Dropout, is left to its call)."""
    if new.built:
        return
    config = old.get_build_config() if old.built else None
    if not config:
        if old.weights:
            raise UnsupportedLayer(
                f"{type(old).__name__} {old.name!r} does not say the shapes it was built with (get_build_config() "
                "is empty), so kerasnb cannot make its block again around a changed layer. What would work: an "
                f"edit of the block as a whole. Received: {edit!r}")
        return
    from . import _remake  # here: _remake imports this module
    try:
        _remake.deferring(lambda: new.build_from_config(config))
    except Exception as error:
        raise IncompatibleShape(
            f"{type(new).__name__} {new.name!r} cannot be built for the input {old.name!r} was built for "
            f"({config}): {first_line(error)} What would work: a layer of the kind it replaces (its build() takes "
            f"those shapes), or an edit of the block as a whole. Received: {edit!r}") from None


def _carried_around(old_block, new_block, old_sub, new_sub, found) -> list:
    """The block's variables outside the changed sub-layer, paired by their order."""
    weights.mirror_lora(old_block, new_block)
    skip_old = {id(v) for v in old_sub.weights}
    skip_new = {id(v) for v in new_sub.weights}
    olds = [v for v in old_block.weights if id(v) not in skip_old]
    news = [v for v in new_block.weights if id(v) not in skip_new]
    if [tuple(v.shape) for v in olds] != [tuple(v.shape) for v in news]:
        raise UnsupportedLayer(
            f"{type(old_block).__name__} {found.block.path!r} made again does not hold the variables it held "
            f"({len(olds)} before, {len(news)} now, outside {found.relative!r}), so its weights cannot be carried "
            f"over by their order. What would work: an edit of {found.block.path!r} as a whole. "
            f"Received: target={found.path!r}")
    return [(nv, weights._copy_value(ov, nv.dtype)) for ov, nv in zip(olds, news)]


def _own_weights(piece, new, edit) -> list:
    """A replacement brought in with weights keeps them, when they fit where it is put."""
    outcome = weights.carry(piece, new)
    if outcome.kind == Status.REINITIALIZED:
        raise IncompatibleShape(
            f"The replacement {piece.name!r} brings weights that do not fit where it is put ({outcome.reason}). "
            f"What would work: a layer without weights yet (it is built for its place), or one whose weights "
            f"fit. Received: {edit!r}")
    return outcome.values


def _what_keras_said(error) -> str:
    """The line of a Keras call error that says what went wrong (its first line names only the call)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    useful = [line for line in lines[1:] if line and not line.startswith("Arguments received")
              and not line.startswith("•")]
    return first_line(useful[0] if useful else lines[0])
