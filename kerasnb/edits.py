"""Edits as small immutable requests, for ``kerasnb.apply``. They hold no logic: `kerasnb.surgery` carries them out.

A *target* is one of:
- a layer name (``"dense_1"``) or the layer object itself;
- ``(name, call_index)`` for one call of a layer that is called more than once (calls are counted
  in the graph the edit meets: inside ``apply``, the model as the earlier edits left it);
- ``"outer/inner"`` for a layer inside a nested model;
- ``(first, last)``, two names, for a linear chain of layers handled as one span (Replace only).

A *replacement* (or inserted *layer*) is a Layer, a list of layers applied in order, a
``keras.Model`` used as a block, or a callable ``tensor -> tensor`` that builds a subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Replace:
    """Edit: put ``replacement`` where ``target`` was; the target's input flows into it.

    ``kerasnb.replace(model, target, replacement)`` is ``apply(model, [Replace(target, replacement)])``.

    Args:
        target: The layer replaced: ``"name"`` (or the layer object), ``"outer/inner"`` inside
            a nested model, ``("name", call_index)`` for one call of a layer called several
            times, or ``(first, last)``, two names, for a linear chain of layers replaced as one.
        replacement: A Layer, a list of layers applied in order, a ``keras.Model`` used as a
            block, or a callable ``tensor -> tensor`` that builds a subgraph.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.Replace("hidden", keras.layers.Dense(4, name="wide"))])
        >>> result.report.status("wide"), result.report.status("hidden")
        ('new', 'removed')
    """

    target: Any
    replacement: Any


@dataclass(frozen=True)
class Insert:
    """Edit: add ``layer`` right after (or before) a target.

    ``kerasnb.insert(model, layer, after=...)`` is ``apply(model, [Insert(layer, after=...)])``.
    Give exactly one of ``after`` and ``before``; ``edit.target`` is the one given.

    Args:
        layer: What to add: a Layer, a list of layers, a ``keras.Model`` used as a block, or a
            callable ``tensor -> tensor``.
        after: The target whose output flows into ``layer``. Target forms: ``"name"`` (or the
            layer object), ``"outer/inner"`` inside a nested model, ``("name", call_index)`` for
            one call of a layer called several times.
        before: The target whose input passes through ``layer`` first (not an InputLayer).

    Raises:
        InvalidEdit: neither or both of ``after`` and ``before`` are given.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> edit = kerasnb.Insert(keras.layers.Dropout(0.5, name="drop"), after="hidden")
        >>> edit.target, kerasnb.apply(model, [edit]).report.status("drop")
        ('hidden', 'new')
    """

    layer: Any
    after: Any = None
    before: Any = None

    def __post_init__(self):
        if (self.after is None) == (self.before is None):
            from .errors import InvalidEdit

            raise InvalidEdit(
                "Insert needs exactly one of after= or before=. "
                f"Received: after={self.after!r}, before={self.before!r}"
            )

    @property
    def target(self):
        return self.after if self.after is not None else self.before


@dataclass(frozen=True)
class Delete:
    """Edit: remove ``target``; its input flows on to its consumers.

    ``kerasnb.delete(model, target)`` is ``apply(model, [Delete(target)])``. A layer called
    with several inputs (a transformer block takes the hidden states and a mask) passes on the
    one whose shape and dtype equal its output's: the residual stream.

    Args:
        target: The layer removed. Target forms: ``"name"`` (or the layer object),
            ``"outer/inner"`` inside a nested model, ``("name", call_index)`` for one call of a
            layer called several times.
        keep_input: Which input passes on where no single one has the output's shape: the
            producing layer's name, the keyword it was passed by, or its position among the
            call's input tensors.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.apply(model, [kerasnb.Delete("hidden")]).report.status("hidden")
        'removed'
    """

    target: Any
    keep_input: Any = None


@dataclass(frozen=True)
class Configure:
    """Edit: rebuild ``target`` from its config with ``changes``; weights kept if they fit.

    ``kerasnb.configure(model, target, units=128)`` is
    ``apply(model, [Configure(target, {"units": 128})])``.

    Args:
        target: The layer reconfigured. Target forms: ``"name"`` (or the layer object),
            ``"outer/inner"`` inside a nested model, ``("name", call_index)`` for one call of a
            layer called several times.
        changes: ``{config option: new value}``, e.g. ``{"units": 128}`` or ``{"name": "head"}``.

    Raises:
        InvalidEdit: ``changes`` is not a dict with string keys.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.Configure("out", {"activation": "softmax"})])
        >>> result.report.status("out"), result.model.get_layer("out").activation.__name__
        ('kept_input_changed', 'softmax')
    """

    target: Any
    changes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from .errors import InvalidEdit

        if not isinstance(self.changes, Mapping):
            raise InvalidEdit(
                "Configure takes the changes as a dict of config options, e.g. Configure('dense', {'units': 128}) "
                f"(or kerasnb.configure(model, 'dense', units=128)). Received: changes={self.changes!r}"
            )
        bad = [k for k in self.changes if not isinstance(k, str)]
        if bad:
            raise InvalidEdit(
                f"Config options are named by strings, e.g. {{'units': 128}}. Received: a key {bad[0]!r} of type "
                f"{type(bad[0]).__name__} in changes={dict(self.changes)!r}"
            )


@dataclass(frozen=True)
class SetTrainable:
    """Edit: freeze (``trainable=False``) or unfreeze one target or a list of targets.

    ``kerasnb.set_trainable(model, targets, trainable)`` is
    ``apply(model, [SetTrainable(targets, trainable)])``.

    Args:
        targets: A target or a list of them. Target forms: ``"name"`` (or the layer object),
            ``"outer/inner"`` inside a nested model, ``("name", call_index)`` for one call of a
            layer called several times.
        trainable: True (unfreeze) or False (freeze); a real bool.

    Raises:
        InvalidEdit: ``trainable`` is not a bool (``"False"`` would be true).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.SetTrainable(["hidden"], False)])
        >>> result.report.row("hidden").trainable, result.report.row("out").trainable
        (False, True)
    """

    targets: Any
    trainable: bool  # required: no silent freeze

    def __post_init__(self):
        # bool("False") is True: only a real bool says what the user meant.
        if not isinstance(self.trainable, (bool, np.bool_)):
            from .errors import InvalidEdit

            raise InvalidEdit(
                "trainable is True (unfreeze) or False (freeze). "
                f"Received: trainable={self.trainable!r} of type {type(self.trainable).__name__}"
            )


@dataclass(frozen=True)
class Prune:
    """Edit: remove output channels (units / filters) of ``target``; slice every layer they feed.

    ``kerasnb.prune`` makes these (one per channel group, naming the channels removed). Channels
    coupled through Add and the like are pruned together.

    Args:
        target: The producer whose channels go: ``"name"`` (or the layer object) or
            ``"outer/inner"`` inside a nested model.
        channels: Indices of the channels to remove. Give this or ``keep``.
        keep: The fraction of the channels kept; the weakest by ``by`` go.
        by: ``"l1"`` (default) or ``"l2"``: how ``keep`` ranks the channels.
        allow_output_change: False (default) refuses channels that reach a model output; True
            lets that output narrow.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.Prune("hidden", channels=[0])])
        >>> result.report.status("hidden"), result.model.get_layer("hidden").units
        ('pruned', 3)
    """

    target: Any
    channels: Any = None
    keep: float | None = None
    by: str = "l1"
    allow_output_change: bool = False


@dataclass(frozen=True)
class ChangeInput:
    """Edit: give the input layer ``target`` a new shape (without the batch axis).

    Layers whose weights still fit keep them (and see a changed input); the others are
    re-initialised with a reason. ``kerasnb.change_input`` pairs it with ``Transform`` edits
    that adapt the layers reading the changed axis.

    Args:
        target: The InputLayer's name (or the layer object).
        shape: The new shape without the batch axis, e.g. ``(None, None, 1)``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.ChangeInput("x", (6,))])
        >>> result.model.input.shape, result.report.status("hidden")
        ((None, 6), 'reinitialized')
    """

    target: Any
    shape: tuple


@dataclass(frozen=True)
class Transform:
    """Edit: rebuild ``target`` with config ``changes`` and make its variables with ``rule``.

    What LoRA, BatchNorm folding, head pruning and input adaptation are made of.

    Args:
        target: The layer rebuilt. Target forms: ``"name"`` (or the layer object),
            ``"outer/inner"`` inside a nested model, ``("name", call_index)`` for one call of a
            layer called several times; or ``"block/sub"`` for a sub-layer held inside a layer
            of the graph.
        rule: ``rule(old_layer, new_layer) -> kerasnb.weights.Outcome``, called once the new
            layer is built: the values for the new variables (paired by structure, e.g. with
            ``kerasnb.weights.carried_values``) and, in words, what it did; the Outcome's
            status (``adapted``, ``folded``, ``pruned``, ...) becomes the layer's.
        changes: ``{config option: new value}`` for the rebuilt layer (default none).

    Examples:
        >>> from kerasnb.weights import Outcome, carried_values
        >>> def doubled(old, new):
        ...     values = [(v, 2 * value) for v, value in carried_values(old, new)]
        ...     return Outcome("adapted", "weights doubled", values)
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.Transform("hidden", doubled)])
        >>> result.report.status("hidden"), result.report.row("hidden").reason
        ('adapted', 'weights doubled')
    """

    target: Any
    rule: Any
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Truncate:
    """Edit: make the outputs of ``outputs`` the model's outputs; drop what they do not need.

    ``kerasnb.truncate(model, outputs)`` is ``apply(model, [Truncate(outputs)])``.

    Args:
        outputs: A target or a list of them, each ``"name"`` (or the layer object),
            ``"outer/inner"`` or ``("name", call_index)``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.Truncate("hidden")])
        >>> result.model.output.shape, result.report.status("out")
        ((None, 4), 'removed')
    """

    outputs: Any


Edit = Replace | Insert | Delete | Configure | SetTrainable | Prune | ChangeInput | Transform | Truncate
