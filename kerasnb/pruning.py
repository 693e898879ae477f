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

import numpy as np

from . import _channels, _graph, _slicing
from . import criteria
from .edits import Prune
from .errors import surgery_errors_only, CoupledChannels, LayerNotFound, UnprunableLayer
from .surgery import SurgeryResult, apply

ChannelGroup = _channels.ChannelGroup

__all__ = ["ChannelGroup", "CoupledChannels", "UnprunableLayer", "channel_groups", "params_after", "prunable",
           "prunable_layers", "prune", "unprunable_reason"]


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
