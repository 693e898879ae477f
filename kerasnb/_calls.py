"""Calling what an edit puts into the graph: a replacement or an inserted block (a layer, a list of
layers, a keras.Model, or a callable), called with the call the layer it stands for received.

A layer is made again from its config (its own weights, if any, are copied after the rebuild), a
model is rebuilt by the same walk with nothing planned, and a callable is called on the new tensors
and must leave the user's layers without new calls. Every layer added is recorded as new.
"""

from __future__ import annotations

import inspect

import keras

from . import _graph, _remake
from ._pass import Pass, Record
from ._plan import Block, Plan
from .errors import IncompatibleShape, InvalidEdit, SurgeryError, UnsupportedLayer, first_line
from .report import Status


def call_block(rebuild, block: Block, args, anchor, kwargs=None):
    """Call a replacement / inserted piece with the call the replaced layer received.

    The positional arguments go to the first piece; each keyword argument (a mask, ``query=``,
    ``training=``) to the first piece that takes it. Records every layer it adds as new.
    """
    spec = block.spec
    pieces = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not pieces:
        raise InvalidEdit(f"An empty list is not a replacement; use kerasnb.delete to remove a layer. Received: {block.edit!r}")
    given = share_keywords(pieces, kwargs or {}, block, anchor, rebuild.state)
    x = args
    for piece, piece_kwargs in zip(pieces, given):
        x = _call_piece(rebuild, piece, x, block, anchor, piece_kwargs)
        x = (x,)
    return x[0]


def _call_piece(rebuild, piece, args, block: Block, anchor, kwargs=None):
    state, names = rebuild.state, rebuild.names
    kwargs = kwargs or {}
    made_by = f"added by {type(block.edit).__name__.lower()} at {anchor.name!r}"
    if isinstance(piece, keras.Model) and _graph.is_graph_model(piece):
        sub = Pass()
        copy = type(rebuild)(piece, Plan(), sub, "", name=names.unique(piece.name)).run()  # the same walk, nothing planned
        for new_id, layer in sub.layers.items():
            state.layers[new_id] = layer
            has_weights = bool(layer.weights) and not _graph.is_graph_model(layer)
            state.records[new_id] = Record(None, Status.NEW, f"{made_by}; brings its own weights from {piece.name!r}"
                                            if has_weights else made_by)
        state.copies.extend(sub.copies)
        state.sources.update(sub.sources)
        state.sources[id(copy)] = (piece, None)
        state.record(copy, Record(None, Status.NEW, f"{made_by}; brings its own weights from model {piece.name!r}"))
        return call_new(copy, args, block, kwargs)
    if isinstance(piece, keras.layers.Layer):
        config = _graph.config_of(piece, f"The replacement {piece.name!r}")
        config["name"] = names.unique(piece.name)
        try:
            layer = _remake.from_config(type(piece), config)
        except Exception as error:
            raise UnsupportedLayer(
                f"The replacement {piece.name!r} ({type(piece).__name__}) cannot be recreated from its config: "
                f"{first_line(error)}. Received: {block.edit!r}"
            ) from None
        state.sources[id(layer)] = (piece, None)  # the flags the user gave it, sub-layers included
        out = call_new(layer, args, block, kwargs)
        if piece.weights:
            state.pretrained.append((piece, layer, block.edit))
            state.record(layer, Record(None, Status.NEW, _new_reason(block, f"{made_by}; brings its own weights")))
        else:
            state.record(layer, Record(None, Status.NEW, _new_reason(block, made_by)))
        return out
    if hasattr(piece, "kerasnb_build"):
        # A piece that makes its own layers from the model's (a grown block): it records them.
        return piece.kerasnb_build(rebuild, args, kwargs, block, anchor)
    if callable(piece):
        calls_before = {id(layer): _graph.call_count(layer) for layer in state.source_layers}
        failure = None
        try:
            out = piece(*args, **kwargs)
        except SurgeryError:
            raise
        except Exception as error:
            failure = error
        finally:
            # Undo any call the callable made to the user's layers, whatever happened (an error,
            # KeyboardInterrupt): the user's model must end up as it was.
            reused = [layer for layer in state.source_layers if _graph.call_count(layer) > calls_before[id(layer)]]
            for layer in reused:
                _graph.forget_calls(layer, calls_before[id(layer)])
        if reused:
            raise InvalidEdit(
                f"The callable {getattr(piece, '__name__', piece)!r} calls {reused[0].name!r}, a layer of the model "
                "being edited. That would add calls to your model and share its weights; make new layers inside "
                f"the callable instead (e.g. keras.layers.Dense(...)(x)). Received: {block.edit!r}"
            )
        if failure is not None:
            raise IncompatibleShape(
                f"The callable {getattr(piece, '__name__', piece)!r} failed on input of shape "
                f"{fmt_shapes(tuple(t.shape) for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor))}: "
                f"{first_line(failure)} Received: {block.edit!r}"
            )
        check_callable_output(piece, out, block)
        return out
    raise InvalidEdit(
        "A replacement is a keras Layer, a list of layers, a keras.Model, or a callable tensor -> tensor. "
        f"Received: {piece!r} of type {type(piece).__name__}"
    )


def _new_reason(block: Block, default: str) -> str:
    """The report's reason for a layer an edit adds: the edit's own words (``new_reason``, e.g. deepen's
    ``"identity"``) where it has some, else ``default``."""
    return getattr(block.edit, "new_reason", None) or default


def share_keywords(pieces, kwargs: dict, block: Block, anchor, state: Pass) -> list[dict]:
    """The keyword arguments each piece gets: each to the first piece whose call takes it.

    A keyword tensor that no piece takes is refused (dropping a mask silently would change what
    the model computes); a non-tensor setting no piece takes (``use_causal_mask=True``) is left
    out and said in the result's notes. ``None`` and ``training`` need no taker.
    """
    given: list[dict] = [{} for _ in pieces]
    left_out = []
    for key, value in kwargs.items():
        taker = next((i for i, piece in enumerate(pieces) if _takes_keyword(piece, key)), None)
        if taker is not None:
            given[taker][key] = value
            continue
        if any(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten(value)):
            kinds = ", ".join(_piece_name(p) for p in pieces)
            raise InvalidEdit(
                f"{anchor.name!r} is called with the tensor {key}=..., and its replacement ({kinds}) has no call "
                f"argument {key!r} to receive it; dropping it would change what the model computes. What would "
                f"work: a replacement whose call() takes {key}= (or **kwargs), or a callable "
                f"`lambda x, {key}=None, **kwargs: ...` that uses it. Received: {block.edit!r}"
            )
        if value is not None and key != "training":
            left_out.append(f"{key}={_remake.short(value)}")
    if left_out:
        state.notes.append(
            f"{anchor.name!r} was called with {', '.join(left_out)}; its replacement takes no such argument, "
            "so it was not passed on."
        )
    return given

def _takes_keyword(piece, key: str) -> bool:
    if isinstance(piece, keras.Model):
        return key == "training"  # a model's call takes its inputs and training only
    target = type(piece).call if isinstance(piece, keras.layers.Layer) else piece
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return key in params or any(p.kind == p.VAR_KEYWORD for p in params.values())

def _piece_name(piece) -> str:
    if isinstance(piece, keras.layers.Layer):
        return f"{type(piece).__name__} {piece.name!r}"
    return f"callable {getattr(piece, '__name__', type(piece).__name__)!r}"

def check_callable_output(piece, out, block) -> None:
    """A callable replacement must hand back the tensor(s) it built, not None or a number."""
    flat = keras.tree.flatten(out) if out is not None else []
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        raise InvalidEdit(
            f"The callable {getattr(piece, '__name__', piece)!r} returned {_remake.short(out)} of type {type(out).__name__}; "
            "a callable replacement must return the Keras tensor(s) it computes from its input, e.g. "
            "lambda x: keras.layers.Dense(8)(x). Did it forget a return statement? "
            f"Received: {block.edit!r}"
        )

def call_new(layer, args, block, kwargs=None):
    try:
        return _remake.call_deferring(layer, args, kwargs or {})
    except Exception as error:
        got = fmt_shapes(tuple(t.shape) for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor))
        raise IncompatibleShape(
            f"{type(layer).__name__} {layer.name!r} cannot take an input of shape {got}: {first_line(error)} "
            f"Received: {block.edit!r}"
        ) from None

def fmt_shapes(shapes) -> str:
    return ", ".join(str(s) for s in shapes)
