"""The dry run: can a replacement type stand where a layer is, judged from shapes alone.

The editor asks this for every type of its dropdowns, for the one row the user selects, so it
must be cheap on big models: only the shapes around that one layer are worked out
(``compute_output_shape`` of the replacement and of the next layers); no weight is made and
nothing is rebuilt. The types themselves live in :mod:`kerasnb.catalog`; targets are found by the
core's one resolver, :func:`kerasnb._targets.resolve` (a shared layer needs its call index)::

    site = fitting.locate(model, "dense_1")       # what the layer receives and gives
    fitting.fits("Dropout", model, "dense_1")     # (True, "")
    fitting.fits("VGG16 backbone (frozen)", model, "dense_1")
    # (False, "needs images (batch, height, width, 3); this layer receives (None, 64)")

:func:`fits` answers with ``(ok, reason)``; what it cannot answer (no such layer, a shared layer
without its call index, no such type) is raised as a :class:`kerasnb.SurgeryError`. The lower
steps (:func:`dry_run`, :func:`output_shape_of`) raise :class:`DoesNotFit` (an
:class:`kerasnb.IncompatibleShape`) whose ``reason`` is the short text a dropdown shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from . import _graph, _targets, errors
from .catalog import Entry, get
from .errors import DoesNotFit

__all__ = ["DoesNotFit", "Site", "dry_run", "fits", "fits_after", "locate", "output_shape_of", "shape_reason"]


@dataclass(frozen=True)
class Site:
    """Where a layer sits: what it receives and gives, and whether a shape change would break a merge."""

    layer: Any
    input_shape: tuple | None  # None when the layer takes several tensors
    output_shape: tuple | None
    feeds_merge: bool  # a consumer takes several tensors, so the output shape must stay the same
    is_input: bool
    consumers: tuple = ()  # layers that take this layer's output as their only input
    merges: tuple = ()  # names of the layers that take this output together with others (Add, ...)

    def after(self) -> "Site":
        """The site of a layer inserted right after this one: it takes and gives this output."""
        return Site(self.layer, self.output_shape, self.output_shape, self.feeds_merge, False,
                    self.consumers, self.merges)


def locate(model, target) -> Site:
    """The :class:`Site` of ``target`` in ``model``.

    ``target`` is anything :func:`kerasnb._targets.resolve` takes: a name, an ``"outer/inner"``
    path, a layer object, or ``(name or path, call_index)``. A shared layer needs its call index,
    as everywhere in kerasnb (:class:`kerasnb.AmbiguousTarget` lists the ones there are).
    """
    if model is None:
        raise errors.InvalidEdit(f"locate needs the model that holds the layer. Received: model=None, target={target!r}")
    found = _targets.resolve(model, target, what="a type")
    if _graph.is_input_layer(found.layer):
        layer = found.layer
        shape = tuple(layer.batch_shape) if hasattr(layer, "batch_shape") else None
        return Site(layer, None, shape, False, True)
    call = found.single_call()
    inputs = call.input_tensors
    in_shape = tuple(inputs[0].shape) if len(inputs) == 1 else None
    outs = call.outputs
    out_shape = tuple(outs[0].shape) if len(outs) == 1 else None
    takers = _graph.graph_index(found.scope).takers(call)
    feeds_merge = any(len(v.input_tensors) > 1 for v in takers)
    consumers = tuple(v.operation for v in takers if len(v.input_tensors) == 1)
    merges = tuple(dict.fromkeys(v.name for v in takers if len(v.input_tensors) > 1))
    return Site(call.operation, in_shape, out_shape, feeds_merge, False, consumers, merges)


def fits(entry: Entry | str, model, target, site: Site | None = None, **params) -> tuple[bool, str]:
    """``(True, "")`` if ``entry`` can stand where ``target`` is, else ``(False, reason)``.

    ``site`` (from :func:`locate`) saves finding the target again; ``params`` are the type's
    parameters (its defaults otherwise). Bad parameter values and a type's own failing checks are
    answers too (``False`` with their reason); an unknown type or target is raised.
    """
    entry = _entry(entry)
    site = site if site is not None else locate(model, target)
    if entry.kind == "keep":
        return True, ""
    if site.is_input:
        return False, "input layers stay; insert after them instead"
    if site.input_shape is None:
        return False, "the layer takes several tensors"
    if entry.kind == "remove":
        if site.feeds_merge and site.input_shape != site.output_shape:
            return False, (f"removing it would change {site.output_shape} into {site.input_shape} before "
                           f"{_merge_text(site)}")
        return shape_reason(site, site.input_shape)
    try:
        if entry.check is not None:  # entries too big to dry-run (backbones) say what they need
            reason = entry.check(site.layer, site.input_shape)
            if reason:
                return False, str(reason)
        out_shape = dry_run(entry, site.layer, site.input_shape, **params)
    except DoesNotFit as error:
        return False, error.reason
    except Exception as error:  # bad values, or a registered type's own check failed: in their words
        return False, first_line(error)
    return shape_reason(site, out_shape)


def fits_after(entry: Entry | str, site: Site, **params) -> tuple[bool, str]:
    """Whether ``entry`` can be inserted right after the layer at ``site``: it takes the layer's
    output, and what it gives must flow on to the layer's consumers (a merge needs the same shape).

    Defaults that follow a replaced layer (``Choices(..., from_layer=...)``) start from their first
    value: the layer at ``site`` is the one before the new layer, not one it stands in for.
    """
    entry = _entry(entry)
    if entry.kind != "replace" or not entry.insertable:
        return False, f"{entry.label!r} cannot be inserted"
    after = site.after()
    if after.input_shape is None:
        return False, "the layer gives several tensors"
    try:
        out = dry_run(entry, site.layer, after.input_shape, replacing=False, **params)
    except DoesNotFit as error:
        return False, error.reason
    except Exception as error:  # a type that cannot take the shape is simply not offered
        return False, first_line(error)
    return shape_reason(after, out)


def shape_reason(site: Site, out_shape) -> tuple[bool, str]:
    """Whether a replacement's output shape can flow on to the layer's consumers."""
    if out_shape is None or site.output_shape is None or tuple(out_shape) == site.output_shape:
        return True, ""
    out_shape = tuple(out_shape)
    if site.feeds_merge:
        return False, f"gives {out_shape} but {_merge_text(site)} after it needs {site.output_shape}"
    # A new shape is fine if every next layer, rebuilt fresh, still accepts it.
    for consumer in site.consumers:
        if _graph.is_graph_model(consumer):
            continue
        try:
            output_shape_of(type(consumer).from_config(consumer.get_config()), out_shape)
        except Exception as error:
            why = error.reason if isinstance(error, DoesNotFit) else first_line(error)
            return False, f"gives {out_shape}, which the next layer {consumer.name!r} cannot take ({why})"
    return True, ""


def dry_run(entry: Entry | str, layer, input_shape, *, replacing: bool = True, **params) -> tuple:
    """Output shape of ``entry``'s replacement for ``input_shape``, found without making weights.

    Raises :class:`kerasnb.catalog.InvalidParameter` for bad values and :class:`DoesNotFit`
    when the replacement cannot be made for that shape or cannot take it.
    """
    entry = _entry(entry)
    values = entry.check_params(params, layer, replacing=replacing)
    try:
        if entry.output is not None:  # declared, so big blocks need not be built to be checked
            return tuple(entry.output(input_shape))
        replacement = entry.build(layer, input_shape, **values)
        shape = tuple(input_shape)
        for part in replacement if isinstance(replacement, (list, tuple)) else [replacement]:
            shape = output_shape_of(part, shape)
        return shape
    except errors.SurgeryError:  # DoesNotFit from a part, or the type's own typed refusal
        raise
    except Exception as error:
        reason = first_line(error)
        args = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise DoesNotFit(
            f"{entry.label}({args}) cannot be made for input {input_shape}: {reason}. "
            f"Its parameters take: {entry.accepts()}. Received: input_shape={input_shape!r}, params={params!r}",
            reason,
        ) from error


def output_shape_of(part, shape: tuple) -> tuple:
    """What ``part`` (a layer, model or callable) gives for ``shape``; :class:`DoesNotFit` if it
    cannot take it.

    Layers answer from ``compute_output_shape`` (no variables, so a 16M-weight Dense costs
    nothing). Only parts that cannot say are called on a symbolic tensor.
    """
    shape = tuple(shape)
    what = type(part).__name__ if isinstance(part, keras.layers.Layer) else getattr(part, "__name__", "the callable")
    try:
        if isinstance(part, keras.layers.Layer) and not isinstance(part, keras.Model):
            problem = _input_spec_problem(part, shape)
            if problem:
                raise DoesNotFit(f"{problem}. Received: shape={shape!r}", problem)
            try:
                out = tuple(part.compute_output_shape(shape))
            except NotImplementedError:
                out = None
            if out is not None:
                if any(isinstance(d, int) and d <= 0 for d in out):
                    reason = f"{what} would give the empty shape {out} for {shape}"
                    raise DoesNotFit(f"{reason}. Received: shape={shape!r}", reason)
                return out
        with keras.StatelessScope():
            return tuple(part(keras.KerasTensor(shape)).shape)
    except DoesNotFit:
        raise
    except Exception as error:
        reason = first_line(error)
        raise DoesNotFit(f"{what} cannot take {shape}: {reason}. Received: shape={shape!r}", reason) from error


def _input_spec_problem(layer, shape: tuple) -> str:
    """What a layer's declared ``input_spec`` says against ``shape`` ('' if nothing)."""
    specs = layer.input_spec
    spec = specs[0] if isinstance(specs, (list, tuple)) and specs else specs
    if spec is None or isinstance(spec, (list, tuple)):
        return ""
    rank = len(shape)
    if getattr(spec, "ndim", None) is not None and rank != spec.ndim:
        return f"{type(layer).__name__} expects rank {spec.ndim}, got {shape}"
    if getattr(spec, "min_ndim", None) is not None and rank < spec.min_ndim:
        return f"{type(layer).__name__} expects rank >= {spec.min_ndim}, got {shape}"
    if getattr(spec, "max_ndim", None) is not None and rank > spec.max_ndim:
        return f"{type(layer).__name__} expects rank <= {spec.max_ndim}, got {shape}"
    return ""


def _merge_text(site: Site) -> str:
    names = " and ".join(repr(n) for n in site.merges)
    return f"the merge {names}" if names else "a merge"


def _entry(entry) -> Entry:
    return entry if isinstance(entry, Entry) else get(entry)


def first_line(error: Exception) -> str:
    """An error's reason in one short line (a reason in a dropdown's tooltip stays short)."""
    return errors.first_line(error, limit=200)

