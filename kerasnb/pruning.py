"""Prune units and channels, and fix up every layer that reads them, across skip connections.

``prune(model, target, channels=[...])`` or ``prune(model, target, keep=0.5, by="l1")``:

1. :func:`kerasnb._channels.analyse` follows the target's output channels through the graph to
   every layer that reads them, joining producers coupled by Add / Multiply / ... into one group;
   anything that cannot be sliced safely stops the operation before any model is built;
2. the chosen channels become :class:`kerasnb.Prune` edits, and :func:`kerasnb.apply` carries
   them out in its one rebuild (together with any other edits): every producer of the group gets
   fewer units / filters (and Reshapes that name the channel count a new ``target_shape``), and
   every layer whose variables change shape gets the surviving slices of its values as its
   weight rule (``kerasnb._slicing``); its report row says ``pruned`` with the shapes.

Layers after the pruned ones keep their weights; the report marks them ``kept_input_changed``
because in general the removed channels carried signal. (If the removed channels were all zero,
the outputs are unchanged; kerasnb does not check values to claim that.)
LayerNormalization over the pruned axis is sliced too, but its mean and variance are taken over
fewer channels afterwards, so it does not compute exactly what it did: its reason says so.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from . import _channels, _graph, _slicing
from . import criteria
from .edits import Prune
from .errors import surgery_errors_only, CoupledChannels, InvalidEdit, LayerNotFound, UnprunableLayer
from .surgery import SurgeryResult, apply

ChannelGroup = _channels.ChannelGroup
ChannelRule = _channels.Rule
Cut = _channels.Cut

__all__ = ["ChannelGroup", "ChannelRule", "CoupledChannels", "Cut", "UnprunableLayer", "channel_groups",
           "params_after", "prunable", "prunable_layers", "prune", "register_channel_rule", "unprunable_reason"]


# ----------------------------------------------------------------------------- public API


@surgery_errors_only
def channel_groups(model) -> list:
    """Every group of tied channels, in graph order: a :class:`ChannelGroup` per group.

    A group holds one producer, or several whose outputs are joined by Add / Subtract / Multiply
    / Average / Maximum / Minimum (a *coupled* group). ``group.reason`` says why a group cannot be
    pruned (``""`` when it can).
    """
    return list(_channels.analyse(model).groups().values())


def prunable_layers(model) -> dict:
    """``{layer name: reason}`` for every Dense / Conv that makes channels; reason ``""`` if prunable.

    One analysis for the whole model: what an editor calls to decide where to offer "prune...".
    """
    out = {}
    for group in channel_groups(model):
        for name in group.producers:
            out[name] = group.reason
    return out


def unprunable_reason(model, target) -> str:
    """Why ``target`` cannot be pruned, or ``""`` when it can."""
    analysis = _channels.analyse(model)
    try:
        _slicing.group_of(model, analysis, target)
    except (UnprunableLayer, LayerNotFound) as error:
        return str(error)
    return ""


def prunable(model, target) -> bool:
    """True when :func:`prune` can remove channels of ``target`` (see :func:`unprunable_reason`)."""
    return not unprunable_reason(model, target)


@surgery_errors_only
def prune(model, target, channels=None, *, keep=None, by="l1", coupled=True, data=None,
          allow_output_change=False) -> SurgeryResult:
    """Remove output channels (units, filters) of ``target`` and slice every layer that reads them.

    - ``channels``: indices of the channels to remove, e.g. ``[3, 7, 12]`` (``-1`` is the last);
    - or ``keep``: how many to keep, a fraction in (0, 1] (``0.5``) or a count (``48``), chosen by
      ``by``: ``"l1"`` or ``"l2"``, the norm of each channel's outgoing kernel slice, summed over
      the coupled producers (the strongest are kept); or any criterion of :func:`kerasnb.importance`
      (``"bn_scale"``, ``"apoz"`` and ``"taylor"`` with ``data=``, or a callable).

    ``target`` is a layer name (or layer), ``"backbone/conv3"`` for one inside a nested model, or a
    list of them with ``keep`` to prune several groups in one rebuild. Channels coupled by Add /
    Multiply / a shared layer are pruned in every producer of the group; with ``coupled=False``
    such a target is refused instead. Channels that reach a model output are refused unless
    ``allow_output_change=True``: then that output narrows, and ``result.notes`` says so.
    Removing every channel of a producer works for a branch that reaches nothing but a
    Concatenate input: the branch drops out (its layers are ``removed`` in the report); with
    ``allow_output_change=True`` that Concatenate may be a model output, which narrows.
    A DepthwiseConv, or a grouped convolution with one input channel per group (ConvNeXt's
    ``Conv2D(groups=channels)``), makes no channels of its own: it loses whole groups with the
    channels it reads, and naming it as ``target`` prunes those channels where they are made.
    Returns a :class:`kerasnb.SurgeryResult`; ``model`` is not changed. Its ``edits`` are one
    :class:`kerasnb.Prune` per pruned group, naming the channels removed, so that
    ``kerasnb.apply(model, result.edits)`` gives the same model again.
    """
    with _graph.memo():  # the channel analysis and graph walks are shared with apply()
        by = criteria.scorer(model, by, data) if keep is not None else by
        notes: list = []
        analysis, removed, named = _slicing.choose(model, target, channels, keep, by, coupled,
                                                   allow_output_change=allow_output_change, notes=notes)
        edits = tuple(Prune(named[root], channels=tuple(int(i) for i in idx), allow_output_change=allow_output_change)
                      for root, idx in removed.items())
        result = apply(model, edits)  # one rebuild: the core slices every layer the channels reach
        if notes:
            result = dataclasses.replace(result, notes=tuple(notes) + tuple(result.notes))
        return result


def params_after(model, target, channels=None, *, keep=None, by="l1", coupled=True,
                 allow_output_change=False, data=None) -> tuple:
    """``(params before, params after)`` of :func:`prune` with the same arguments, without building.

    Cheap enough to follow a slider: one graph analysis and some shape arithmetic.
    """
    by = criteria.scorer(model, by, data) if keep is not None else by
    analysis, removed, _ = _slicing.choose(model, target, channels, keep, by, coupled,
                                           allow_output_change=allow_output_change)
    before = int(model.count_params())
    after = _slicing.params_after_removal(analysis, removed, before)
    return before, after


def register_channel_rule(layer_class, rule) -> None:
    """Tell pruning how the variables of your own layer class follow channels.

    kerasnb slices the layers it knows (Dense, convolutions, normalisations, RNNs...) and refuses
    a channel that reaches any other layer, since it cannot see into its ``call()``. A rule says,
    for every variable of ``layer_class`` (by attribute path: ``"kernel"``, ``"cell.kernel"``),
    which axes follow channels: :class:`Cut` ``(axis, "in")`` for the channels the layer reads,
    ``(axis, "out")`` for those it makes.

    - A layer that makes channels (like Dense) gives ``size_key``, its config key of the number
      of output channels: ``ChannelRule({"w": (Cut(0, "in"), Cut(1, "out"))}, size_key="units")``.
      Its input channels are on its input's last axis (the second for ``data_format=
      "channels_first"``); its ``activation`` config, if any, must act on each value alone.
    - A channel-wise layer (one weight per channel of its input's ``axis`` config, else the last
      axis; its output keeps the channels) gives only ``"in"`` cuts, and ``count_key`` if its
      config holds the channel count.

    ``rule`` may also be a function ``layer -> ChannelRule | None`` (None: this layer cannot be
    sliced), or None to forget the class's rule. The rule holds for exactly ``layer_class``, not
    its subclasses, and replaces any rule the class had (built-in ones included). The layer is
    made again from its config with the changed count, and must then have the variables the rule
    names, of the sliced shapes. Raises :class:`kerasnb.errors.InvalidEdit` for a class that is not
    a Keras layer or a rule that is none of these.

    Example: a layer scaling each channel of its input by a weight of its own::

        >>> import keras, kerasnb
        >>> from kerasnb.pruning import ChannelRule, Cut, register_channel_rule
        >>> class Scale(keras.layers.Layer):
        ...     def build(self, shape):
        ...         self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")
        ...     def call(self, x):
        ...         return x * self.gamma
        >>> register_channel_rule(Scale, ChannelRule({"gamma": (Cut(0, "in"),)}))
        >>> x = keras.Input((4,))
        >>> y = keras.layers.Dense(2, name="head")(Scale(name="scale")(keras.layers.Dense(8, name="fc")(x)))
        >>> result = kerasnb.prune(keras.Model(x, y), "fc", channels=[0, 1])
        >>> tuple(result.model.get_layer("scale").gamma.shape), result.report.status("scale")
        ((6,), 'pruned')
        >>> register_channel_rule(Scale, None)
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InvalidEdit("register_channel_rule takes a Keras layer class (not an instance), e.g. "
                          f"register_channel_rule(MyLayer, rule). Received: layer_class={layer_class!r}")
    if rule is not None and not isinstance(rule, ChannelRule) and not callable(rule):
        raise InvalidEdit("A channel rule is a kerasnb.pruning.ChannelRule, a function layer -> ChannelRule | None, "
                          f"or None. Received: rule={rule!r}")
    if isinstance(rule, ChannelRule):
        wrong = [cut for cuts in rule.variables.values() for cut in cuts
                 if not isinstance(cut, Cut) or cut.role not in ("in", "out")]
        if wrong:
            raise InvalidEdit("Each variable of a ChannelRule maps to a tuple of Cut(axis, role) with role \"in\" or "
                              f"\"out\". Received: {wrong[0]!r} in rule={rule!r}")
    _channels.register(layer_class, rule)
