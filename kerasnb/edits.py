"""Edits as small immutable requests. They hold no logic: `kerasnb.surgery` carries them out.

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
    """Put ``replacement`` where ``target`` was; the target's input flows into it."""

    target: Any
    replacement: Any


@dataclass(frozen=True)
class Insert:
    """Add ``layer`` right after (or before) ``target``."""

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
    """Remove ``target``; its input flows on to its consumers.

    A layer called with several inputs (a transformer block takes the hidden states and a mask)
    passes on the one whose shape and dtype equal its output's: the residual stream. Name it with
    ``keep_input`` (the producing layer's name, the keyword it was passed by, or its position
    among the call's input tensors) where there is no such single input.
    """

    target: Any
    keep_input: Any = None


@dataclass(frozen=True)
class Configure:
    """Rebuild ``target`` from its config with ``changes`` (e.g. units=128); weights kept if they fit."""

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
    """Freeze (``trainable=False``) or unfreeze one target or a list of targets."""

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
    """Remove output channels (units / filters) of ``target`` and slice every layer they feed.

    Give either ``channels`` (indices to remove) or ``keep`` (fraction to keep, the weakest by
    ``by`` go). Channels coupled through Add and the like are pruned together. Channels that reach
    a model output are refused unless ``allow_output_change=True`` (then that output narrows).
    """

    target: Any
    channels: Any = None
    keep: float | None = None
    by: str = "l1"
    allow_output_change: bool = False


@dataclass(frozen=True)
class ChangeInput:
    """Give the input layer ``target`` a new shape (without the batch axis), e.g. ``(None, None, 1)``.

    Layers whose weights still fit keep them (and see a changed input); the others are
    re-initialised with a reason. Pair it with :class:`Transform` edits to adapt the layers
    that read the changed axis (what :func:`kerasnb.change_input` does).
    """

    target: Any
    shape: tuple


@dataclass(frozen=True)
class Transform:
    """Rebuild ``target`` with config ``changes`` and make its variables with ``rule``.

    ``rule(old_layer, new_layer)`` is called once the new layer is built and returns a
    :class:`kerasnb.weights.Outcome`: the values for the new variables and, in words, what it
    did (``kind`` ``"adapted"`` or ``"folded"`` gives the layer that status).
    """

    target: Any
    rule: Any
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Truncate:
    """Make the outputs of ``outputs`` (layer targets) the model's outputs; drop what they do not need."""

    outputs: Any


Edit = Replace | Insert | Delete | Configure | SetTrainable | Prune | ChangeInput | Transform | Truncate
