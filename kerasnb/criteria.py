"""Importance criteria: how much each channel of a coupled group matters, the scores pruning keeps the strongest by.

(The module is not named ``importance`` so that ``kerasnb.importance`` stays the function.)

``importance(model, target, by=..., data=...)`` returns one score per output channel of the group
``target`` belongs to (higher = more important). Criteria:

- ``"l1"`` / ``"l2"``: the norm of each channel's outgoing kernel slice, summed over the producers
  of a coupled group (``kerasnb._slicing.kernel_norms``);
- ``"bn_scale"``: ``|gamma|`` of the BatchNormalization right after each producer (network
  slimming); refused when a producer has none;
- ``"apoz"``: ``1 - APoZ``, where APoZ is the average percentage of zeros of the channel after
  its ReLU-like activation (the producer's own, or the first ReLU / Activation("relu") after it)
  over ``data``; refused when no ReLU-like activation follows;
- ``"taylor"``: first-order Taylor expansion of the effect of removing the channel, ``|mean over
  positions of gradient * activation|`` averaged over the examples of ``data``, on the tensor the
  channel is read from (after its BatchNormalization and activation). The gradient is of the
  model's compiled loss when ``data`` has labels and the model a single output and a loss, else
  of ``0.5 * sum(outputs ** 2)`` (not the plain sum: a softmax's outputs always sum to one);
- a callable ``fn(layer) -> one score per output channel of that producer``; a coupled group's
  scores are summed over its producers.

``data`` is a numpy array of inputs, a tuple ``(x, y)`` of whole arrays, or any iterable of
batches (arrays, ``(x, y)`` / ``(x, y, sample_weight)`` tuples): a list, a generator, a
``tf.data.Dataset`` or a ``keras.utils.PyDataset``. The model is run by replaying its graph's
calls on concrete tensors in inference mode (as Keras's own Functional does), which adds no call
to its layers; a per-channel multiplier of ones is put on each tapped tensor, and the gradient
with respect to it is, per example, the sum over positions of gradient times activation.
Gradients need the backend's own autodiff: TensorFlow, JAX and PyTorch are supported.
"""

from __future__ import annotations

import keras
import numpy as np

from . import _channels, _graph, _slicing, tracing
from .errors import surgery_errors_only, IncompatibleShape, InvalidEdit, UnsupportedModel

CRITERIA = ("l1", "l2", "bn_scale", "apoz", "taylor")
NEEDS_DATA = ("apoz", "taylor")
BATCH_SIZE = 32  # when data is one array

L = keras.layers
# Identity at inference: a channel's values pass unchanged.
_INFERENCE_IDENTITY = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
                       L.GaussianDropout, L.AlphaDropout, L.Identity, L.ActivityRegularization)
_RELU_NAMES = ("relu", "relu6")


__all__ = ["CRITERIA", "importance", "group_scores"]


# ----------------------------------------------------------------------------- public API


@surgery_errors_only
def importance(model, target, by="l1", data=None, *, loss=None) -> np.ndarray:
    """One score per output channel of ``target``'s channel group (higher = more important), as numpy.

    These are the scores ``kerasnb.prune`` and ``kerasnb.prune_global`` keep the strongest
    channels by. Channels tied through Add and the like form one group; its scores are summed
    over the group's producers. The model is run (for ``"apoz"`` and ``"taylor"``) by replaying
    its graph in inference mode, which adds no call to its layers.

    Args:
        model: A built functional or Sequential model; it is not changed.
        target: The layer whose output channels are scored: ``"name"`` (or the layer object) or
            ``"outer/inner"`` inside a nested model.
        by: The criterion:

            - ``"l1"`` (default) / ``"l2"``: the norm of each channel's kernel slice;
            - ``"bn_scale"``: ``|gamma|`` of the BatchNormalization right after each producer
              (network slimming); refused when a producer has none;
            - ``"apoz"``: ``1 - APoZ``, APoZ being the average percentage of zeros of the
              channel after its ReLU-like activation over ``data``; refused when none follows;
            - ``"taylor"``: ``|mean over positions of gradient * activation|``, averaged over
              the examples of ``data`` (first-order Taylor estimate of removing the channel).
              The gradient is of the model's compiled loss when ``data`` has labels and the
              model one output and a loss, else of ``0.5 * sum(outputs ** 2)``;
            - a callable ``fn(layer) -> one score per output channel of that layer``.
        data: Examples, needed by ``"apoz"`` and ``"taylor"``: an array of inputs, a tuple
            ``(x, y)`` of whole arrays, or an iterable of batches (arrays or ``(x, y)`` /
            ``(x, y, sample_weight)`` tuples: a list, a generator, a ``tf.data.Dataset``, a
            ``keras.utils.PyDataset``). Gradients need TensorFlow, JAX or PyTorch.
        loss: For ``"taylor"``, a ``loss(y_true, y_pred)`` to use instead of the compiled loss.

    Returns:
        numpy.ndarray: float64 scores, one per channel of the group.

    Raises:
        LayerNotFound: ``target`` names no layer.
        UnprunableLayer: the target's channels cannot be pruned (they reach the model output or
            a layer that cannot be sliced), so they have no group to score.
        InvalidEdit: an unknown ``by``; ``"apoz"`` / ``"taylor"`` without ``data``; a criterion
            that cannot score this group; a callable giving the wrong number of scores.
        IncompatibleShape: a batch of ``data`` does not fit the model's input.
        UnsupportedModel: gradients are not available on this backend.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.importance(model, "hidden").shape
        (4,)
        >>> x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
        >>> scores = kerasnb.importance(model, "hidden", by="apoz", data=x)
        >>> bool(((0 <= scores) & (scores <= 1)).all())
        True
    """
    with _graph.memo():
        analysis = _channels.analyse(model)
        root, group = _slicing.group_of(model, analysis, target)
        return group_scores(model, by, data, groups={root: group}, loss=loss, analysis=analysis)[root]


def group_scores(model, by="l1", data=None, *, groups=None, loss=None, analysis=None, unscorable=None) -> dict:
    """``{group root: scores}`` for ``groups`` (default: every prunable group), one pass over data.

    ``unscorable``: a list to collect ``(group, reason)`` of the groups the criterion cannot score
    (no BatchNorm after them for ``bn_scale``, no ReLU-like activation for ``apoz``), which are then
    left out; without it such a group raises :class:`InvalidEdit`.
    """
    _check_criterion(by, data)
    analysis = analysis or _channels.analyse(model)
    if groups is None:
        groups = {r: g for r, g in analysis.groups().items() if g.prunable}
    if by in ("l1", "l2"):
        return {r: _slicing.kernel_norms(analysis, g, by) for r, g in groups.items()}
    if callable(by):
        return {r: _callable_scores(analysis, g, by) for r, g in groups.items()}
    taps = _Taps(model, analysis)

    def each(score):
        out = {}
        for r, g in groups.items():
            try:
                out[r] = score(g)
            except InvalidEdit as error:
                if unscorable is None:
                    raise
                unscorable.append((g, str(error)))
        return out

    if by == "bn_scale":
        return each(taps.bn_scale)
    per_group = each(lambda g: taps.of(g, need_relu=(by == "apoz")))
    batches = _batches(model, data, by)
    if by == "apoz":
        return _apoz(model, per_group, batches)
    return _taylor(model, per_group, batches, loss)


def scorer(model, by, data=None, *, loss=None):
    """What ``kerasnb._slicing.choose`` takes as ``by``: ``"l1"`` / ``"l2"``, or a function of
    ``(analysis, group)`` that scores a group with any other criterion (each group once; only the
    groups asked for, so a criterion that cannot score some other group does not stand in the way)."""
    _check_criterion(by, data)
    if by in ("l1", "l2"):
        return by
    cache: dict = {}

    def score(analysis, group):
        root = next(r for r, g in analysis.groups().items() if g is group)
        if root not in cache:
            cache.update(group_scores(model, by, data, groups={root: group}, loss=loss, analysis=analysis))
        return cache[root]

    return score


# ----------------------------------------------------------------------------- checks


def _check_criterion(by, data) -> None:
    if callable(by):
        return
    if not isinstance(by, str) or by not in CRITERIA:
        raise InvalidEdit(
            f"by= is one of {', '.join(repr(c) for c in CRITERIA)} or a callable fn(layer) returning one score "
            f"per output channel. Received: by={by!r}"
        )
    if by in NEEDS_DATA and data is None:
        raise InvalidEdit(
            f"by={by!r} measures the channels on examples, so it needs data=: an array of inputs, a tuple (x, y), "
            "or an iterable of batches (a list, a tf.data.Dataset). Use by='l1' to score by weights alone. "
            "Received: data=None"
        )


def _callable_scores(analysis, group, fn) -> np.ndarray:
    total = np.zeros(group.channels)
    for name in group.producers:
        layer = analysis.layers[name]
        try:
            scores = np.asarray(keras.ops.convert_to_numpy(fn(layer)), dtype="float64").reshape(-1)
        except (TypeError, ValueError) as error:
            raise InvalidEdit(
                f"by= as a callable is called as fn(layer) and returns one score per output channel; for "
                f"{name!r} it failed: {error}. Received: by={fn!r}"
            ) from error
        if scores.shape != (group.channels,) or not np.all(np.isfinite(scores)):
            raise InvalidEdit(
                f"by= as a callable must return {group.channels} finite scores for {name!r} (one per output "
                f"channel). Received: {scores.shape[0]} value(s) from by={fn!r}"
            )
        total += scores
    return total


# ----------------------------------------------------------------------------- where channels are read


class _Taps:
    """For each producer: the BatchNormalization right after it, and the tensor its channels are read from."""

    def __init__(self, model, analysis):
        self.analysis = analysis
        self.readers: dict = {}  # id(tensor) -> views that read it
        self.made_by: dict = {}  # layer path ("conv", "backbone/conv") -> its calls
        self.continues: dict = {}  # id(output of a nested model's graph) -> the tensor its call returns
        self.outputs = {id(t) for t in _graph.output_tensors(model)}  # a chain stops at the model's outputs
        self._index(model, "")

    def _index(self, model, prefix):
        for view in _graph.walk(model):
            if _graph.is_graph_model(view.operation):
                self._index(view.operation, prefix + view.name + "/")
                inner = _graph.output_tensors(view.operation)
                if view.n_calls == 1 and len(inner) == len(view.outputs):
                    self.continues.update((id(a), b) for a, b in zip(inner, view.outputs))
                continue
            self.made_by.setdefault(prefix + view.name, []).append(view)
            for tensor in list(view.input_tensors) + view.kwargs_tensors():
                self.readers.setdefault(id(tensor), []).append(view)

    def chain(self, name, call=0):
        """``(tensor, batchnorm or None, relu_like)``: follow the producer's output through a
        BatchNormalization, inference-time identities, merges of its own group and one elementwise
        activation; stop at anything else."""
        view = self.made_by[name][call]
        layer = view.operation
        tensor, bn = view.outputs[0], None
        activation = _graph.settings(layer).get("activation", "linear")
        if activation not in (None, "linear"):  # read after its own activation; a BatchNorm may still follow
            readers = self.readers.get(id(tensor), [])
            if len(readers) == 1 and isinstance(readers[0].operation, L.BatchNormalization):
                bn = readers[0].operation
            return tensor, bn, activation in _RELU_NAMES
        while id(tensor) not in self.outputs:
            if id(tensor) in self.continues:  # out of a nested model: follow the call's output
                tensor = self.continues[id(tensor)]
                continue
            readers = self.readers.get(id(tensor), [])
            if len(readers) != 1:
                break
            reader = readers[0]
            op = reader.operation
            if isinstance(op, L.BatchNormalization) and bn is None:
                bn = op
            elif isinstance(op, _INFERENCE_IDENTITY) or (
                    isinstance(op, _channels.MERGES) and not isinstance(op, L.Concatenate)):
                pass
            elif _elementwise_activation(op):
                return reader.outputs[0], bn, _relu_like(op)
            else:
                break
            tensor = reader.outputs[0]
        return tensor, bn, False

    def bn_scale(self, group) -> np.ndarray:
        total = np.zeros(group.channels)
        for name in group.producers:
            _, bn, _ = self.chain(name)
            if bn is None or bn.gamma is None:
                what = "a BatchNormalization without a scale (scale=False)" if bn is not None else "none"
                raise InvalidEdit(
                    f"by='bn_scale' scores channels by |gamma| of the BatchNormalization right after the producer; "
                    f"{name!r} has {what}. Use by='l1' (or ignore={name!r} in prune_global). "
                    f"Received: by='bn_scale', target={name!r}"
                )
            total += np.abs(keras.ops.convert_to_numpy(bn.gamma)).astype("float64")
        return total

    def of(self, group, need_relu: bool) -> list:
        """``[(tensor, channel axis)]`` read for the group (shared tensors once)."""
        seen, out = set(), []
        calls = [(name, i) for name in group.producers for i in range(len(self.made_by[name]))]
        for name, call in calls:  # a shared producer: every call's channels
            tensor, _, relu_like = self.chain(name, call)
            if need_relu and not relu_like:
                raise InvalidEdit(
                    f"by='apoz' counts zeros after a ReLU-like activation, and none follows {name!r} (its own "
                    "activation or a ReLU / Activation('relu') after it, through BatchNormalization). Use "
                    f"by='taylor' or 'l1' (or ignore={name!r} in prune_global). Received: by='apoz', target={name!r}"
                )
            axis = 1 if _graph.settings(self.analysis.layers[name]).get("data_format") == "channels_first" else -1
            if len(tensor.shape) < 2 or tensor.shape[axis] != group.channels:
                raise InvalidEdit(
                    f"Cannot measure the channels of {name!r}: the tensor they are read from has shape "
                    f"{tuple(tensor.shape)}, not {group.channels} channels. Use by='l1'. Received: target={name!r}"
                )
            if id(tensor) not in seen:
                seen.add(id(tensor))
                out.append((tensor, axis))
        return out


def _elementwise_activation(op) -> bool:
    if isinstance(op, L.Activation):
        return _graph.settings(op).get("activation") in _channels.ELEMENTWISE
    return isinstance(op, (L.ReLU, L.LeakyReLU, L.ELU, L.PReLU))


def _relu_like(op) -> bool:
    if isinstance(op, L.Activation):
        return _graph.settings(op).get("activation") in _RELU_NAMES
    if isinstance(op, L.ReLU):
        return not _graph.settings(op).get("negative_slope")
    return False


# ----------------------------------------------------------------------------- data


def _batches(model, data, by):
    """A list of ``(inputs as a list of numpy arrays, labels or None)``, shapes checked (read by
    :func:`kerasnb.tracing.batches`, the one reader of examples)."""
    items = list(tracing.batches(model, data, argument="data", batch_size=BATCH_SIZE))
    if not items:
        raise InvalidEdit(f"by={by!r} needs examples, and data= yielded none. Received: an empty {type(data).__name__}")
    return items


# ----------------------------------------------------------------------------- running the graph


def _run(model, xs, taps: dict, masks=None):
    """Outputs (flat list) and ``{id(tapped tensor): value}`` of one inference pass.

    The pass is :func:`kerasnb.tracing.replay` (eager calls add no node to a layer); with
    ``masks`` (``{id(tensor): multiplier}``) a tapped tensor is multiplied by its mask before
    anything reads it.
    """
    tapped: dict = {}

    def on_output(path, view, index, tensor, value):
        if id(tensor) in taps:
            if masks is not None:
                value = value * keras.ops.cast(masks[id(tensor)], value.dtype)
            tapped[id(tensor)] = value
        return value

    outputs = tracing.replay(model, xs, on_output, descend=lambda prefix, op: _holds(op, taps))
    return outputs, tapped


def _holds(model, taps) -> bool:
    for view in _graph.walk(model):
        if any(id(t) in taps for t in view.outputs):
            return True
        if _graph.is_graph_model(view.operation) and _holds(view.operation, taps):
            return True
    return False


def _apoz(model, per_group, batches) -> dict:
    taps = {id(t): axis for entries in per_group.values() for t, axis in entries}
    zeros = {k: 0.0 for k in taps}
    counts = {k: 0 for k in taps}
    for xs, _ in batches:
        _, tapped = _run(model, [keras.ops.convert_to_tensor(x) for x in xs], taps)
        for key, value in tapped.items():
            axis = taps[key]
            v = keras.ops.convert_to_numpy(value)
            v = np.moveaxis(v, axis, -1).reshape(-1, v.shape[axis])
            zeros[key] = zeros[key] + (v == 0).sum(axis=0)
            counts[key] += v.shape[0]
    out = {}
    for root, entries in per_group.items():
        # 1 - APoZ, averaged over the tensors the group is read from
        out[root] = sum(1.0 - zeros[id(t)] / counts[id(t)] for t, _ in entries) / len(entries)
    return out


def _loss_fn(model, loss):
    """A function ``(y, outputs) -> per-example losses`` from ``loss`` or the model's compiled loss."""
    chosen = loss if loss is not None else getattr(model, "loss", None)
    if chosen is None or isinstance(chosen, (dict, list, tuple)) or len(_graph.output_tensors(model)) != 1:
        return None
    if isinstance(chosen, str):
        chosen = keras.losses.get(chosen)
    if isinstance(chosen, keras.losses.Loss):
        return chosen.call  # unreduced: one value per example
    return chosen if callable(chosen) else None


def _taylor(model, per_group, batches, loss) -> dict:
    taps = {id(t): (t, axis) for entries in per_group.values() for t, axis in entries}
    loss_fn = _loss_fn(model, loss)
    sums = {k: 0.0 for k in taps}
    n_examples = 0
    for xs, y in batches:
        xs = [keras.ops.convert_to_tensor(x) for x in xs]
        batch = int(xs[0].shape[0])
        keys = list(taps)
        shapes = []
        for key in keys:
            tensor, axis = taps[key]
            shape = [batch] + [1] * (len(tensor.shape) - 1)
            shape[axis] = tensor.shape[axis]
            shapes.append(shape)

        def objective(masks):
            outputs, _ = _run(model, xs, taps, dict(zip(keys, masks)))
            if loss_fn is not None and y is not None:
                return keras.ops.sum(loss_fn(keras.ops.convert_to_tensor(y), outputs[0]))
            return 0.5 * sum(keras.ops.sum(keras.ops.square(keras.ops.cast(o, "float32"))) for o in outputs)

        masks = [keras.ops.ones(shape, dtype="float32") for shape in shapes]
        grads = _gradients(objective, masks)
        for key, grad, shape in zip(keys, grads, shapes):
            if grad is None:
                continue
            tensor, axis = taps[key]
            positions = int(np.prod([d for i, d in enumerate(tensor.shape[1:], 1)
                                     if i != (axis % len(tensor.shape))]))
            g = np.abs(keras.ops.convert_to_numpy(grad)).reshape(batch, -1) / max(positions, 1)
            sums[key] = sums[key] + g.sum(axis=0)
        n_examples += batch
    return {root: sum(np.asarray(sums[id(t)], dtype="float64") for t, _ in entries) / n_examples
            for root, entries in per_group.items()}


def _gradients(fn, masks) -> list:
    """Gradients of the scalar ``fn(masks)`` with respect to each mask, by the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for m in masks:
                tape.watch(m)
            value = fn(masks)
        return tape.gradient(value, masks)
    if backend == "jax":
        import jax

        return jax.grad(lambda ms: fn(ms))(list(masks))
    if backend == "torch":
        import torch

        masks = [m.detach().requires_grad_(True) for m in masks]
        value = fn(masks)
        return list(torch.autograd.grad(value, masks, allow_unused=True))
    raise UnsupportedModel(
        f"by='taylor' needs gradients, which kerasnb takes from TensorFlow, JAX or PyTorch; the {backend!r} "
        f"backend has none it can use. Use by='apoz' or 'l1'. Received: backend {backend!r}"
    )
