"""One parser and finder of targets, for the core, pruning, the catalog and the editor.

A target is one of:
- a layer name (``"dense_1"``) or the layer object itself;
- ``(name, call_index)``: the call_index-th call of a layer, as Keras counts the layer's calls
  (its nodes) inside the graph that holds it;
- ``"outer/inner"``: a layer inside a nested model (any depth; combines with a call index);
- ``(first, last)``: two names, a linear chain of layers handled as one span (Replace only).

A *match* selects many layers at once (every ``match=`` and ``ignore=`` of the package goes
through :func:`matcher` and :func:`select`; its forms are documented there).

Every "no layer named ..." message is written here, once.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

from . import _graph
from .errors import AmbiguousTarget, InvalidEdit, LayerNotFound, SurgeryError, suggest


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

    def call_outputs(self) -> list:
        """The Keras tensors the one call meant gives (an input layer: its own output)."""
        if _graph.is_input_layer(self.layer):
            return keras.tree.flatten(self.layer.output)
        return [t for t in keras.tree.flatten(self.single_call().outputs) if isinstance(t, keras.KerasTensor)]

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
                f"A tuple of two names is one target, a (first, last) span, which can only be replaced as a whole; "
                f"several layers are a list: [{', '.join(map(repr, target))}]. Received: {what} with target={given!r}"
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
                + (f" ({'pruning' if what == 'prune' else 'widening'} a layer there would need the layers that read "
                   f"it {'sliced' if what == 'prune' else 'widened'} too, and kerasnb cannot see them)"
                   if what in ("prune", "widen") else "") + ". What "
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


def layer_at(model, path):
    """The layer at graph path ``path`` (``"outer/inner"``, as the report names it), or None."""
    try:
        return resolve(model, path).layer
    except SurgeryError:
        return None


def deep_layers(model):
    """``(path, layer, owner)`` for every layer of the graphs and every sub-layer of their layers.

    ``owner`` is the path of the graph layer a sub-layer belongs to (a keras-hub block), or None.
    A sub-layer's path is its owner's container path followed by Keras's own ``layer.path``
    (``"transformer_layer_0/self_attention_layer/query"``).
    """
    for path, layer in _graph.walk_layers(model):
        yield path, layer, None
        if _graph.is_graph_model(layer):
            continue
        prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        for sub in _graph.sublayers(layer)[1:]:
            sub_path = getattr(sub, "path", None)
            if sub_path:
                yield prefix + sub_path, sub, path


# ----------------------------------------------------------------------------- matching many layers

_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_FORMS = ("a layer class (keras.layers.Conv2D) or a tuple of classes, a name or path ('head', 'block/conv'), a "
          "glob on paths and names ('conv*', 'backbone/*'), a compiled regex searched in paths "
          "(re.compile(r'block\\d+/conv')), a layer object, a predicate (path, layer) -> bool, or a list of these")


@dataclass(frozen=True)
class Matcher:
    """A ``match=`` (or ``ignore=``) value made into one test on ``(path, layer)``; see :func:`matcher`."""

    given: Any  # the value as the user wrote it, for messages
    argument: str  # "match", "ignore": how messages name it
    test: Callable  # (path, layer) -> bool
    text: str  # how it reads in a message: "a Conv2D", "'conv*'", "the predicate 'is_big'"
    exact: tuple = ()  # its plain names and paths: each must name a layer of the model
    patterns: tuple = ()  # its globs and regexes, as text (for "did you mean")

    def __call__(self, path: str, layer) -> bool:
        return self.test(path, layer)


def matcher(match, argument: str = "match") -> Matcher:
    r"""One test on ``(path, layer)`` for every way kerasnb lets you choose many layers.

    ``path`` is the layer's path at any depth (``"backbone/conv1"`` inside a nested model,
    ``"block/self_attention/query"`` for a layer a block holds); its *name* is the path's last
    segment. ``match`` is one of:

    - a layer class or tuple of classes: the layers that are instances of it;
    - a string with a glob character (``*``, ``?``, ``[``): a shell-style glob (``fnmatch``, case
      sensitive) that matches the whole path or the whole name (``"conv*"``, ``"backbone/*"``);
    - any other string: that exact path or name (``"head"`` also selects ``"block/head"``); a name
      that is no layer of the model is an error, as everywhere else;
    - a compiled regex (``re.compile(...)``): searched in the path (``re.search``), so anchor it
      for a whole path: ``re.compile(r"^block_\d+/query$")``, or ``r"(^|/)query$"`` for a name;
    - a layer object: that layer;
    - a predicate ``(path, layer) -> bool``;
    - a list (or set, or tuple) of these: a layer any of them selects. An empty list selects none.

    Raises :class:`kerasnb.InvalidEdit` for anything else, naming what was received.

    >>> import keras
    >>> m = matcher(["head", keras.layers.Conv2D, "block_*"])
    >>> m("outer/head", keras.layers.Dense(1)), m("dense", keras.layers.Dense(1))
    (True, False)
    """
    if isinstance(match, keras.layers.Layer):
        return Matcher(match, argument, lambda path, layer: layer is match, f"the layer {match.name!r}")
    if isinstance(match, type):
        if not issubclass(match, keras.Operation):
            raise InvalidEdit(f"A class to match is a Keras layer class, e.g. keras.layers.Conv2D. "
                              f"Received: {argument}={match!r}")
        return Matcher(match, argument, lambda path, layer: isinstance(layer, match), f"a {match.__name__}")
    if isinstance(match, str):
        if not match:
            raise InvalidEdit(f"A name or glob to match is a non-empty string, e.g. 'conv*' or 'backbone/*'. "
                              f"Received: {argument}=''")
        if _GLOB_CHARACTERS.search(match):
            return Matcher(match, argument, lambda path, layer: fnmatch.fnmatchcase(path, match)
                           or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], match), repr(match), patterns=(match,))
        return Matcher(match, argument, lambda path, layer: path == match or path.rsplit("/", 1)[-1] == match,
                       repr(match), exact=(match,))
    if isinstance(match, re.Pattern):
        return Matcher(match, argument, lambda path, layer: match.search(path) is not None,
                       f"re.compile({match.pattern!r})", patterns=(match.pattern,))
    if isinstance(match, (list, tuple, set, frozenset)):
        parts = [matcher(m, argument) for m in match]
        if parts and all(isinstance(m, type) for m in match):
            text = "a " + " or ".join(m.__name__ for m in match)
        else:
            text = " or ".join(p.text for p in parts) or "nothing (an empty list)"
        return Matcher(match, argument, lambda path, layer: any(p.test(path, layer) for p in parts), text,
                       tuple(n for p in parts for n in p.exact), tuple(t for p in parts for t in p.patterns))
    if callable(match):
        return _predicate(match, argument)
    raise InvalidEdit(f"{argument} is {_FORMS}. Received: {argument}={match!r} of type {type(match).__name__}")


def _predicate(function, argument) -> Matcher:
    name = getattr(function, "__name__", repr(function))
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        raise InvalidEdit(
            f"A predicate to match takes two arguments, (path, layer), and returns True or False, e.g. "
            f"lambda path, layer: isinstance(layer, keras.layers.Dense) and path.startswith('head'). The "
            f"predicate {name!r} does not take (path, layer). Received: {argument}={function!r}"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): it is called and its errors said as below

    def test(path, layer):
        try:
            return bool(function(path, layer))
        except SurgeryError:
            raise
        except Exception as error:
            raise InvalidEdit(
                f"The {argument} predicate {name!r} raised {type(error).__name__}: {error} on layer {path!r} "
                f"({type(layer).__name__}). A predicate takes (path, layer) and returns True or False. "
                f"Received: {argument}={function!r}"
            ) from None

    return Matcher(function, argument, test, f"the predicate {name!r}")


def select(model, match, candidates, *, argument: str = "match", kind: str = "layer", condition: str = "",
           required: bool = True) -> list:
    """The candidates ``(path, layer, ...)`` that ``match`` selects (see :func:`matcher`), in order.

    ``candidates``: the layers a verb can act on, each a tuple starting with its path and layer.
    A plain name in ``match`` that names no layer of ``model`` raises :class:`kerasnb.LayerNotFound`
    with the closest names; so does a match of nothing when ``required``, saying ``No {kind} of
    model ... matches ...{condition}`` and what would have matched.
    """
    m = match if isinstance(match, Matcher) else matcher(match, argument)
    candidates = list(candidates)
    if m.exact:
        paths = [p for p, _, _ in deep_layers(model)]
        known = set(paths) | {p.rsplit("/", 1)[-1] for p in paths}
        for name in m.exact:
            if name not in known:
                raise LayerNotFound(f"No layer named {name!r} in model {model.name!r}."
                                    f"{suggest(name, sorted(known))} Received: {m.argument}={m.given!r}")
    found = [c for c in candidates if m(c[0], c[1])]
    if not found and required:
        raise LayerNotFound(f"No {kind} of model {model.name!r} matches {m.text}{condition}."
                            f"{_nothing_hint(m, candidates)} Received: {m.argument}={m.given!r}")
    return found


def _nothing_hint(m: Matcher, candidates) -> str:
    """What would have matched: the closest paths for a name or pattern, the layer types otherwise."""
    if m.exact or m.patterns:
        text = (m.exact + m.patterns)[0]
        text = re.sub(r"[*?\[\]^$\\()|+]", "", text) or text  # compare the letters, not the wildcards
        paths = [c[0] for c in candidates]
        names = list(dict.fromkeys(paths + [p.rsplit("/", 1)[-1] for p in paths]))
        return suggest(text, names) or (" It can choose from: " + ", ".join(map(repr, paths[:12]))
                                        + (" ..." if len(paths) > 12 else "") + ".")
    types: dict = {}
    for c in candidates:
        types[type(c[1]).__name__] = types.get(type(c[1]).__name__, 0) + 1
    common = sorted(types.items(), key=lambda kv: -kv[1])[:8]
    return " Its layers are: " + ", ".join(f"{name} ({n})" for name, n in common) + "."
