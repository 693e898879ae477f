"""BatchNormalization folded into the Conv / Depthwise / Separable / Dense layer before it (:func:`fold_batchnorm`)."""

from __future__ import annotations

import keras
import numpy as np

from . import _graph
from .activations import function_in_model, name_of
from .edits import Delete, Transform
from .errors import surgery_errors_only, InvalidEdit
from .surgery import SurgeryResult, apply
from .transforms import KERNEL_LAYERS, _finish, _frames, _give, _host
from .report import Status
from .weights import Outcome

__all__ = ["fold_batchnorm"]

L = keras.layers


@surgery_errors_only
def fold_batchnorm(model) -> SurgeryResult:
    """Fold each BatchNormalization into the Conv / Depthwise / Separable / Dense layer before it.

    A BatchNormalization is folded when it directly follows such a layer, in the same graph,
    that has a linear activation, is called once, and feeds nothing but this BatchNormalization;
    and when it normalises that layer's channel axis. In inference, BN computes
    ``(x - mean) * gamma / sqrt(var + eps) + beta``: the layer's kernel is scaled per output
    channel by ``gamma / sqrt(var + eps)`` and its bias (added if it had none) becomes
    ``(bias - mean) * gamma / sqrt(var + eps) + beta``. The BN is removed, the layer reports
    ``folded``; the new model's inference outputs equal the original's up to float rounding.
    (Training the folded model no longer normalises by batch statistics.)

    Every BatchNormalization left alone is listed in ``result.notes`` with the reason. A
    BatchNormalization called with ``training=True`` (its batch statistics are part of what the
    model computes) is refused with :class:`kerasnb.InvalidEdit`. Nested models are folded too.
    """
    edits, notes, skipped = [], [], []
    n_bn = 0
    for frame in _frames(model):
        for view in frame.views:
            bn = view.operation
            if not isinstance(bn, L.BatchNormalization):
                continue
            n_bn += 1
            path = frame.path(bn)
            if view.kwargs.get("training") is True:
                raise InvalidEdit(
                    f"BatchNormalization {path!r} is called with training=True, so it normalises with the statistics "
                    "of each batch, even in predict(); that cannot be folded into fixed weights. What would work: "
                    f"call it without training=True, or delete it (kerasnb.delete(model, {path!r})) if that is what "
                    f"you mean. Received: fold_batchnorm on model {model.name!r}"
                )
            why, producer = _why_not_fold(frame, view)
            if why:
                skipped.append(f"{path!r}: {why}")
                continue
            changes = {} if producer.operation.use_bias else {"use_bias": True}
            edits.append(Transform(frame.path(producer.operation), _fold_rule(bn, path), changes))
            edits.append(Delete(path))
    if not n_bn:
        notes.append(f"Model {model.name!r} has no BatchNormalization layer; nothing was folded.")
    if skipped:
        notes.append(f"{len(skipped)} BatchNormalization layer(s) not folded: " + "; ".join(skipped) + ".")
    if edits:
        notes.insert(0, f"{len(edits) // 2} BatchNormalization layer(s) folded into the layer before them; "
                        "inference outputs are unchanged up to float rounding.")
    return _finish(model, apply(model, edits), notes)


def _why_not_fold(frame, view):
    """('', producer view) when the BN of ``view`` can be folded, else (the reason, None)."""
    bn = view.operation
    if view.n_calls != 1:
        return f"it is called {view.n_calls} times", None
    tensor = view.input_tensors[0]
    producer = frame.by_output.get(id(tensor))
    if producer is None:
        where = f"model {frame.scope.name!r}" if frame.parent is None else f"nested model {frame.scope.name!r}"
        return f"it reads the input of {where}, not a Conv / Dense layer", None
    op = producer.operation
    if not isinstance(op, KERNEL_LAYERS):
        return f"it follows {op.name!r} ({type(op).__name__}), not a Conv / Depthwise / Separable / Dense layer", None
    if _graph.is_graph_model(op):
        return f"it follows the nested model {op.name!r}", None
    activation = op.get_config().get("activation")
    if activation is not None and function_in_model(activation) is not keras.activations.linear:
        return f"{op.name!r} applies {name_of(activation)!r} before it", None
    if producer.n_calls != 1:
        return f"{op.name!r} is called {producer.n_calls} times", None
    others = [v.name for v in frame.consumers.get(id(tensor), []) if v is not view]
    if others or id(tensor) in frame.outputs:
        feeds = ", ".join(repr(n) for n in others) or "the model output"
        return f"the output of {op.name!r} also feeds {feeds}", None
    rank = len(tensor.shape)
    channel = 1 if getattr(op, "data_format", "channels_last") == "channels_first" else rank - 1
    if bn.axis % rank != channel:
        return f"it normalises axis {bn.axis}, not the channel axis of {op.name!r}", None
    return "", producer


def _fold_rule(bn, bn_path):
    """The weight rule that folds ``bn`` (the user's layer, read when the rule runs) into its producer.

    The arithmetic is per channel and done in numpy (float64): on JAX, keras.ops run eagerly
    compile every op for every new shape, which costs more than the whole rebuild.
    """

    def rule(old, new):
        scale = 1.0 / np.sqrt(_host(bn.moving_variance) + bn.epsilon)
        if bn.gamma is not None:
            scale = scale * _host(bn.gamma)
        shift = -_host(bn.moving_mean) * scale
        if bn.beta is not None:
            shift = shift + _host(bn.beta)
        values = []
        if isinstance(old, (L.SeparableConv1D, L.SeparableConv2D)):
            values.append(_give(new.depthwise_kernel, _host(old.depthwise_kernel)))
            kernel_name, kernel = "pointwise_kernel", _host(old.pointwise_kernel) * scale
            values.append(_give(new.pointwise_kernel, kernel))
        elif isinstance(old, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
            k = _host(old.kernel)
            kernel_name, kernel = "kernel", k * scale.reshape(k.shape[-2:])
            values.append(_give(new.kernel, kernel))
        elif isinstance(old, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
            kernel_name, kernel = "kernel", _host(old.kernel) * scale[:, None]
            values.append(_give(new.kernel, kernel))
        else:
            kernel_name, kernel = "kernel", _host(old.kernel) * scale
            values.append(_give(new.kernel, kernel))
        bias = shift if old.bias is None else _host(old.bias) * scale + shift
        values.append(_give(new.bias, bias))
        added = "" if old.bias is not None else " (added)"
        reason = (f"{bn_path!r} folded in: {kernel_name} {tuple(kernel.shape)} scaled per output channel by "
                  f"gamma / sqrt(moving_variance + {bn.epsilon:g}); bias {tuple(bias.shape)}{added} = "
                  "(bias - moving_mean) * that scale + beta")
        return Outcome(Status.FOLDED, reason, values)

    rule.__name__ = f"fold_{bn.name}"
    return rule
