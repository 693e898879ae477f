"""One parser and finder of targets, for the core, pruning, the catalog and the editor.

A target is one of:
- a layer name (``"dense_1"``) or the layer object itself;
- ``(name, call_index)``: the call_index-th call of a layer, as Keras counts the layer's calls
  (its nodes) inside the graph that holds it;
- ``"outer/inner"``: a layer inside a nested model (any depth; combines with a call index);
- ``(first, last)``: two names, a linear chain of layers handled as one span (Replace only).

Every "no layer named ..." message is written here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from . import _graph
from .errors import AmbiguousTarget, InvalidEdit, LayerNotFound, suggest


@dataclass(frozen=True)
class Target:
    """Where a target is: the models from the top down to the one holding it, the layer, its calls."""

    scopes: tuple  # (model, nested model, ...): scopes[-1] holds the layer
    layer: Any
    calls: tuple  # NodeViews of the chosen calls: all of them when no call index was given
    call_index: int | None = None
    span_first: Any = None  # NodeView of a span's first layer
    given: Any = None  # the target as the user wrote it, for messages

    @property
    def scope(self):
        return self.scopes[-1]

    @property
    def path(self) -> str:
        """``"outer/inner"``: the names of the nested models and of the layer."""
        return "/".join([s.name for s in self.scopes[1:]] + [self.layer.name])

    def single_call(self):
        """The one call meant, or AmbiguousTarget listing the ``(name, i)`` targets to choose from."""
        if len(self.calls) == 1:
            return self.calls[0]
        if not self.calls:
            raise InvalidEdit(
                f"Layer {self.layer.name!r} is never called in the graph of {self.scope.name!r}, so there is "
                f"nothing to edit. Received: target={self.given!r}"
            )
        options = ", ".join(repr((self.path, i)) for i in range(len(self.calls)))
        raise AmbiguousTarget(
            f"Layer {self.layer.name!r} is shared: it is called {len(self.calls)} times in model "
            f"{self.scope.name!r}. Say which call to edit with a (name, call_index) target: {options}. "
            f"Received: target={self.given!r}"
        )


def is_call_target(target) -> bool:
    """True for ``(name, call_index)``."""
    return (isinstance(target, tuple) and len(target) == 2 and isinstance(target[1], (int, np.integer))
            and not isinstance(target[1], (bool, np.bool_)))


def is_span_target(target) -> bool:
    return isinstance(target, tuple) and len(target) == 2 and all(isinstance(t, str) for t in target)


def resolve(model, target, *, allow_span: bool = False, what: str = "an edit") -> Target:
    """Find the layer (and calls) ``target`` names in ``model``; typed errors say what would work."""
    given = target
    if isinstance(target, keras.layers.Layer):
        path = path_of_layer(model, target)
        if path is None:
            raise LayerNotFound(
                f"The layer object {target.name!r} ({type(target).__name__}) is not part of model {model.name!r}. "
                f"Pass a layer of this model or its name. Received: target=<{type(target).__name__} {target.name!r}>"
            )
        target = path
    call_index = None
    span_last = None
    if is_call_target(target):
        target, call_index = target[0], int(target[1])
        if isinstance(target, keras.layers.Layer):
            target = path_of_layer(model, target) or target.name
    elif is_span_target(target):
        if not allow_span:
            raise InvalidEdit(
                f"A (first, last) span can only be replaced as a whole. Received: {what} with target={given!r}"
            )
        target, span_last = target
    elif isinstance(target, tuple):
        raise InvalidEdit(
            "A tuple target is (name, call_index) or (first_name, last_name). "
            f"Received: target={given!r}"
        )
    if not isinstance(target, str) or not target:
        several = (" A list of targets is taken by replace, delete, configure, set_trainable, prune and truncate; "
                   "here give one." if isinstance(given, list) else "")
        raise InvalidEdit(
            "A target is a layer name, a layer object, (name, call_index), 'outer/inner' or (first, last)."
            f"{several} Received: target={given!r} of type {type(given).__name__}"
        )
    *outer, name = target.split("/")
    scopes = [model]
    for part in outer:
        container = layer_named(scopes[-1], part, given)
        if not _graph.is_graph_model(container):
            rest = target.split("/")[len(scopes):]
            sub_layers(container, "/".join(rest), given)  # LayerNotFound when it holds no such layer
            raise InvalidEdit(
                f"{part!r} in path {target!r} is a {type(container).__name__}: a layer of the graph whose layers "
                f"are called inside its own call(), not a nested model. {what} cannot reach inside it"
                + (" (pruning a layer there would need the layers that read it sliced too, and kerasnb cannot see "
                   "them)" if what == "prune" else "") + ". What "
                f"would work: kerasnb.replace, configure, delete or prune_heads on {target!r} (kerasnb makes "
                f"{part!r} again with that one layer changed), or an edit of {part!r} as a whole. "
                f"Received: target={given!r}"
            )
        scopes.append(container)
    scope = scopes[-1]
    layer = layer_named(scope, name, given)
    calls = _calls_of(scope, layer)
    if call_index is not None:
        if not calls or not 0 <= call_index < len(calls):
            last = f"Use an index from 0 to {len(calls) - 1}." if calls else "It is never called."
            raise LayerNotFound(
                f"Layer {name!r} is called {len(calls)} time(s) in model {scope.name!r}; call index {call_index} "
                f"does not exist. {last} Received: target={given!r}"
            )
        calls = [calls[call_index]]
    first = None
    if span_last is not None:
        if "/" in span_last:
            head, _, rest = span_last.rpartition("/")
            if head != "/".join(outer):
                raise InvalidEdit(
                    f"A span's first and last layers must be in the same model. Received: target={given!r}"
                )
            span_last = rest
        last = layer_named(scope, span_last, given)
        last_calls = _calls_of(scope, last)
        if len(calls) != 1 or len(last_calls) != 1:
            raise AmbiguousTarget(
                f"A span's first and last layers must each be called once. Received: target={given!r}"
            )
        first = calls[0]
        layer, calls = last, last_calls
    return Target(tuple(scopes), layer, tuple(calls), call_index, first, given)


@dataclass(frozen=True)
class Inside:
    """A layer held inside a layer of the graph (a keras-hub block): ``"block/sub"``, at any depth."""

    block: Target  # the layer of the graph (a block) that holds it
    chain: tuple  # the sub-layers from the block's own down to the one named
    relative: str  # its path inside the block: "self_attention_layer", "transformer_block_1/mha"

    @property
    def layer(self):
        return self.chain[-1]

    @property
    def path(self) -> str:
        return f"{self.block.path}/{self.relative}"


def inside(model, target) -> Inside | None:
    """The sub-layer ``target`` names inside a layer of the graph, or None when it names no such path.

    ``"transformer_layer_0/self_attention_layer"``: the graph layer, then the names of the layers it
    tracks, one level at a time (Keras's own ``layer.path`` below the block reads the same).
    """
    if not isinstance(target, str) or "/" not in target:
        return None
    parts = target.split("/")
    scope = model
    for i, part in enumerate(parts[:-1]):
        layer = next((l for l in _graph.layers_in_order(scope) if l.name == part), None)
        if layer is None:
            return None
        if _graph.is_graph_model(layer):
            scope = layer
            continue
        block = resolve(model, "/".join(parts[:i + 1]), what="an edit inside a block")
        relative = "/".join(parts[i + 1:])
        return Inside(block, tuple(sub_layers(layer, relative, target)), relative)
    return None


def sub_layers(block, relative: str, given) -> list:
    """The chain of layers ``block`` tracks down to ``relative`` ("a/b"), or LayerNotFound."""
    chain, current = [], block
    for name in relative.split("/"):
        found = [c for c in _graph.tracked_layers(current) if c.name == name]
        if len(found) != 1:
            options = [p for p, _ in _relative_paths(block)]
            if found:
                raise AmbiguousTarget(f"{current.name!r} holds {len(found)} layers named {name!r}, so "
                                      f"{relative!r} is ambiguous. Received: target={given!r}")
            raise LayerNotFound(
                f"{type(block).__name__} {block.name!r} holds no layer {relative!r}.{suggest(relative, options)} "
                f"Layers it holds: {', '.join(options[:12])}{' ...' if len(options) > 12 else ''}. "
                f"Received: target={given!r}")
        current = found[0]
        chain.append(current)
    return chain


def _relative_paths(layer, prefix: str = ""):
    for child in _graph.tracked_layers(layer):
        yield prefix + child.name, child
        yield from _relative_paths(child, prefix + child.name + "/")


def _calls_of(scope, layer) -> list:
    """The layer's calls in ``scope`` in Keras's order (its nodes), not in graph-depth order."""
    return sorted((v for v in _graph.walk(scope) if v.operation is layer), key=lambda v: v.call_index)


def layer_named(model, name: str, given=None):
    """The layer of ``model``'s own graph called ``name`` (inputs included), or LayerNotFound."""
    layers = _graph.layers_in_order(model)
    for layer in layers:
        if layer.name == name:
            return layer
    raise not_found(model, name, [l.name for l in layers], given if given is not None else name)


def not_found(model, name, candidates, given) -> LayerNotFound:
    """The one "no layer named ..." error, with the closest names (inside nested models too)."""
    inside = [path for path, _ in _graph.walk_layers(model) if path.endswith("/" + str(name))]
    hint = (" It is inside a nested model: did you mean " + " or ".join(repr(p) for p in inside[:3]) + "?"
            if inside else suggest(str(name), list(candidates)))
    return LayerNotFound(f"No layer named {name!r} in model {model.name!r}.{hint} Received: target={given!r}")


def path_of_layer(model, layer, prefix: str = "") -> str | None:
    """``"outer/inner"`` of a layer object anywhere in ``model``, or None."""
    for candidate in _graph.layers_in_order(model):
        if candidate is layer:
            return prefix + candidate.name
    for candidate in _graph.layers_in_order(model):
        if _graph.is_graph_model(candidate):
            found = path_of_layer(candidate, layer, prefix + candidate.name + "/")
            if found is not None:
                return found
    return None
