"""Python source that rebuilds a model's architecture with the Keras functional API.

``code(model)`` walks the graph once (``kerasnb._graph.walk``) and writes one line per layer
call, naming each layer's arguments only where they differ from the layer's defaults, so the
result reads like code written by hand (the seed's examples). Weights are not part of the
source: load them with ``new_model.set_weights(model.get_weights())`` or from a ``.keras`` file.

The source is safe to run for any model, including one loaded from an untrusted file: every
text the model provides (layer, model and input names, config keys and values, registered
class names, dtypes) reaches the source only as a literal made from plain Python data
(``_literal``), config keys that are not plain identifiers are passed in a ``**{...}`` dict
literal, and variable and function names are made from the layer names by ``_identifier``,
never copied verbatim. A value with no literal form (an arbitrary object in a config) is
refused with :class:`~kerasnb.errors.UnsupportedLayer` rather than written as code.
"""

from __future__ import annotations

import inspect
import keyword
import math
import re
import unicodedata

import keras

from . import _graph
from .errors import SurgeryError, UnsupportedLayer

# Names the generated source itself uses at module level or inside every function: no variable
# or builder function may take them. `float` spells nan and infinities (`float('nan')`).
_RESERVED = frozenset({"keras", "layers", "model", "block", "float", "__debug__"})


def code(model, *, function_name: str | None = None) -> str:
    """Python source that rebuilds ``model``'s architecture with the Keras functional API.

    One line per layer call, each layer's arguments named only where they differ from its
    defaults, so it reads like code written by hand. Nested models become functions
    ``build_<name>()`` called where they are used. Executing the source leaves the rebuilt model
    (fresh weights) in a variable ``model``; the weights are not part of it: load them with
    ``model.set_weights(...)`` or from a ``.keras`` file. Every text the model provides (names,
    config values) reaches the source only as a literal, so it is safe to run for any model.

    Args:
        model: A built functional or Sequential model; it is only read.
        function_name: The name of the function that builds the model; default
            ``"build_model"``.

    Returns:
        str: the source, starting with ``import keras``.

    Raises:
        SurgeryError: ``function_name`` is not a Python identifier or is a name the source uses.
        UnsupportedLayer: a config holds a value that has no literal form.

    Examples:
        >>> from kerasnb.codegen import code
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden), name="tiny")
        >>> print(code(model))
        import keras
        from keras import layers
        <BLANKLINE>
        def build_model():
            x = keras.Input(shape=(8,), name='x')
            hidden = layers.Dense(units=4, activation='relu', name='hidden')(x)
            out = layers.Dense(units=2, name='out')(hidden)
            return keras.Model(x, out, name='tiny')
        <BLANKLINE>
        model = build_model()
        <BLANKLINE>
    """
    name = "build_model" if function_name is None else function_name
    if not _is_plain_name(name) or name in _RESERVED:
        raise SurgeryError(
            f"function_name must be a Python identifier (NFKC-normalised, not a keyword) other than "
            f"{', '.join(sorted(_RESERVED))}, such as 'build_model'. Received: function_name={function_name!r}"
        )
    writer = _Writer(model, name)
    body = writer.model_function(model, name)
    head = ["import keras", "from keras import layers", ""]
    return "\n".join(head + writer.functions + body + ["", f"model = {name}()", ""])


class _Writer:
    def __init__(self, model, function_name: str):
        self.functions: list[str] = []  # nested models' builder functions, defined first
        self.written: set[str] = set()
        # Every builder function's name is chosen before any variable, so that no variable (a
        # layer called `build_encoder`) can hide the function of a nested model `encoder`.
        self.builder_of: dict[int, str] = {id(model): function_name}
        self.taken: set[str] = set(_RESERVED) | {function_name}
        self._plan(model, set())

    def _plan(self, model, seen: set) -> None:
        for view in _graph.walk(model):
            self._plan_operation(view.operation, seen)

    def _plan_operation(self, op, seen: set) -> None:
        if id(op) in seen or not isinstance(op, keras.layers.Layer):
            return
        seen.add(id(op))
        if _is_inlined_sequential(op):
            for layer in op.layers:
                self._plan_operation(layer, seen)
        elif _graph.is_graph_model(op):
            if id(op) not in self.builder_of:
                self.builder_of[id(op)] = _unique("build_" + _identifier(op.name), self.taken)
            self._plan(op, seen)

    def model_function(self, model, name: str, frozen: bool = False) -> list[str]:
        names = _Names(self.taken)
        lines = [f"def {name}():"]
        var_of: dict[int, str] = {}
        inputs = _graph.input_tensors(model)
        for tensor in inputs:
            layer = _graph.producer(tensor)[0]
            var = names.new(layer.name)
            var_of[id(tensor)] = var
            lines.append(f"    {var} = {_input_call(layer)}")
        layer_var: dict[int, str] = {}
        for view in _graph.walk(model):
            op = view.operation
            if id(op) not in layer_var:
                constructor = self._constructor(op)
                if view.n_calls > 1:  # a shared layer: make it once, call it several times
                    var = names.new(op.name + "_layer")
                    lines.append(f"    {var} = {constructor}")
                    layer_var[id(op)] = var
                else:
                    layer_var[id(op)] = constructor
            try:
                rendered = [_render(a, var_of) for a in view.args]
                rendered += _keyword_arguments(_meaningful_kwargs(view.kwargs), lambda v: _render(v, var_of))
            except _NotPlainData as error:
                raise _refusal(op, error, "the call argument") from None
            call = f"{layer_var[id(op)]}({', '.join(rendered)})"
            outs = view.outputs
            if len(outs) == 1:
                var = names.new(op.name)
                var_of[id(outs[0])] = var
                lines.append(f"    {var} = {call}")
            else:
                result = names.new(op.name + "_out")
                lines.append(f"    {result} = keras.tree.flatten({call})")
                for i, tensor in enumerate(outs):
                    var_of[id(tensor)] = f"{result}[{i}]"
        try:
            ins = _render(_graph.pack_inputs(model, inputs), var_of)
            outs = _render(_graph.pack_outputs(model, _graph.output_tensors(model)), var_of)
            model_name = _literal(model.name)
        except _NotPlainData as error:
            raise _refusal(model, error, "the inputs/outputs structure") from None
        built = f"keras.Model({ins}, {outs}, name={model_name})"
        if frozen:
            lines += ["    # this block was frozen", f"    block = {built}", "    block.trainable = False",
                      "    return block"]
        else:
            lines.append(f"    return {built}")
        return lines

    def _constructor(self, op) -> str:
        if not isinstance(op, keras.layers.Layer):
            return _op_function(op)
        if _is_inlined_sequential(op):
            first = _graph.input_layers(op)[0]
            items = [_input_call(first)] + [self._constructor(layer) for layer in op.layers]
            inner = "".join(f"\n        {item}," for item in items)
            return f"keras.Sequential([{inner}\n    ], name={_literal_name(op)})"
        if _graph.is_graph_model(op):
            fn = self.builder_of[id(op)]
            if fn not in self.written:
                self.written.add(fn)
                self.functions += self.model_function(op, fn, frozen=not op.trainable) + [""]
            return f"{fn}()"
        return _layer_constructor(op)


def _is_inlined_sequential(op) -> bool:
    """A trainable plain-chain Sequential is written inline as ``keras.Sequential([...])``."""
    return isinstance(op, keras.Sequential) and op.trainable and _graph.is_graph_model(op) and _is_plain_chain(op)


def _op_function(op) -> str:
    """A raw ``keras.ops`` call recorded in the graph (``x + y``, ``keras.ops.relu(x)``)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", type(op).__name__).lower()
    if not _is_plain_name(snake) or not callable(getattr(keras.ops, snake, None)):
        raise UnsupportedLayer(
            f"No keras.ops function matches the operation {type(op).__name__} ({op.name!r}), so its code "
            f"cannot be written. Received: operation={op.name!r}"
        )
    try:
        settings = {k: v for k, v in op.get_config().items() if k != "name"}
    except Exception:
        settings = {}
    if not settings:
        return f"keras.ops.{snake}"
    try:
        inner = ", ".join(_keyword_arguments(settings, _literal))
    except _NotPlainData as error:
        raise _refusal(op, error, "the config value") from None
    return f"(lambda *a, **k: keras.ops.{snake}(*a, {inner}, **k))"


def _input_call(layer) -> str:
    try:
        shape = tuple(layer.batch_shape)
        args = [f"shape={_literal(shape[1:])}"] if shape and shape[0] is None else [f"batch_shape={_literal(shape)}"]
        if layer.dtype and layer.dtype != "float32":
            args.append(f"dtype={_literal(layer.dtype)}")
        if getattr(layer, "sparse", False):
            args.append("sparse=True")
        args.append(f"name={_literal(layer.name)}")
    except _NotPlainData as error:
        raise _refusal(layer, error, "the input setting") from None
    return f"keras.Input({', '.join(args)})"


def _layer_constructor(op) -> str:
    cls = type(op)
    if _is_plain_name(cls.__name__) and getattr(keras.layers, cls.__name__, None) is cls:
        qualified = f"layers.{cls.__name__}"
    else:
        registered = keras.saving.get_registered_name(cls)
        try:
            qualified = f"keras.saving.get_registered_object({_literal(registered)})"
        except _NotPlainData as error:
            raise _refusal(op, error, "the registered class name") from None
    config = _graph.config_of(op)
    shown = _non_default(cls, config)
    try:
        # Defaults unknown, or a quantized layer (its quantization_config is a serialized object only
        # from_config reads back): the full config is always right.
        if shown is None or getattr(op, "quantization_mode", None) is not None:
            return f"{qualified}.from_config({_literal(config)})"
        return f"{qualified}({', '.join(_keyword_arguments(shown, _literal))})"
    except _NotPlainData as error:
        raise _refusal(op, error, "the config value") from None


def _non_default(cls, config: dict) -> dict | None:
    """The config entries that differ from a layer made with only its required arguments."""
    try:
        params = inspect.signature(cls.__init__).parameters
        required = {
            k: config[k] for k, p in params.items()
            if k != "self" and p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        reference = cls(**required).get_config()
        accepted = set(params) | {"name", "dtype", "trainable"}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()) and not set(config) <= accepted:
            return None
        shown = {k: v for k, v in config.items() if k in required or reference.get(k, _MISSING) != v}
        # Round trip: some defaults follow other arguments (MaxPooling's strides = pool_size), so
        # add whatever a layer made from `shown` still gets wrong.
        for _ in range(3):
            rebuilt = cls(**shown).get_config()
            missing = {k: v for k, v in config.items() if rebuilt.get(k, _MISSING) != v and k not in shown}
            if not missing:
                break
            shown.update(missing)
        # Required arguments first and the name last, as one would write it by hand.
        shown = {**{k: shown[k] for k in required if k in shown},
                 **{k: v for k, v in shown.items() if k not in required and k != "name"},
                 **({"name": shown["name"]} if "name" in shown else {})}
        if "dtype" in shown and _is_default_dtype(shown["dtype"]):
            shown.pop("dtype")
        if cls(**shown).get_config() != config:
            return None
        return shown
    except Exception:
        return None


def _meaningful_kwargs(kwargs: dict) -> dict:
    # Nodes record call context (training=..., mask=None); a functional model passes its own
    # training flag to every layer when called, so these add nothing but noise.
    return {k: v for k, v in kwargs.items() if not (k == "training" or (k == "mask" and v is None))}


def _is_plain_chain(model) -> bool:
    views = _graph.walk(model)
    return all(v.n_calls == 1 and len(v.input_tensors) == 1 and len(v.outputs) == 1 for v in views) and \
        len(_graph.input_tensors(model)) == 1


def _is_default_dtype(dtype) -> bool:
    policy = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    return policy == keras.config.dtype_policy().name


_MISSING = object()


# ----------------------------------------------------------------------------- literals


class _NotPlainData(Exception):
    """A value with no literal form; ``where`` locates it (``['key'][0]``)."""

    def __init__(self, value, where: str = ""):
        super().__init__(where)
        self.value, self.where = value, where

    def inside(self, prefix: str) -> "_NotPlainData":
        self.where = prefix + self.where
        return self


def _literal(value) -> str:
    """Python literal source for plain data, built from the values themselves, never their repr.

    Only None, bool, int, float, str, bytes and lists, tuples and dicts of them are written
    (subclasses as their base type, numpy scalars as Python numbers); anything else raises
    ``_NotPlainData``, since its ``repr`` could be any text, code included.
    """
    return _render(value, None)


def _render(value, var_of: dict | None) -> str:
    """Source for a call argument: Keras tensors by their variable (``var_of``), the rest as literals."""
    if isinstance(value, keras.KerasTensor) and var_of is not None:
        return var_of[id(value)]
    if value is None or type(value) is bool:
        return repr(value)
    if _is_numpy_scalar(value):
        value = value.item()
        if not isinstance(value, (bool, int, float, str, bytes)):
            raise _NotPlainData(value)
        return _literal(value)
    if isinstance(value, int):
        number = int.__index__(value)  # the plain int, whatever a subclass overrides
        try:
            return repr(number)
        except ValueError:  # more digits than Python prints in decimal: hexadecimal has no limit
            return ("-" if number < 0 else "") + "0x" + format(abs(number), "x")
    if isinstance(value, float):
        number = float.__float__(value)
        if math.isnan(number):
            return "float('nan')"
        if math.isinf(number):
            return "float('inf')" if number > 0 else "-float('inf')"
        return repr(number)
    if isinstance(value, str):
        return repr(str.__str__(value))  # an exact str: a subclass's __repr__ is never called
    if isinstance(value, bytes):
        return repr(bytes(memoryview(value)))  # the bytes themselves, not a subclass's __bytes__
    if isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_render(item, var_of))
            except _NotPlainData as error:
                raise error.inside(f"[{i}]") from None
        if isinstance(value, list):
            return "[" + ", ".join(items) + "]"
        return f"({items[0]},)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(_dict_items(value, lambda v: _render(v, var_of))) + "}"
    raise _NotPlainData(value)


def _dict_items(mapping: dict, render) -> list[str]:
    items = []
    for key, item in mapping.items():
        try:
            items.append(f"{_literal(key)}: {render(item)}")
        except _NotPlainData as error:
            raise error.inside(f"[{_safe_repr(key)}]") from None
    return items


def _keyword_arguments(arguments: dict, render) -> list[str]:
    """``key=value`` for keys that are plain identifiers; the others in one ``**{...}`` literal.

    A key is written bare only if Python reads it back as the same string: an identifier, not a
    keyword, and unchanged by the NFKC normalisation Python applies to identifiers (``ﬁx`` would
    arrive as ``fix``). Any other key, whatever it contains, stays a quoted string.
    """
    plain, other = [], {}
    for key, value in arguments.items():
        if isinstance(key, str) and _is_plain_name(key):
            try:
                plain.append(f"{str.__str__(key)}={render(value)}")
            except _NotPlainData as error:
                raise error.inside(f"[{_safe_repr(key)}]") from None
        else:
            other[key] = value
    if other:
        plain.append("**{" + ", ".join(_dict_items(other, render)) + "}")
    return plain


def _safe_repr(key) -> str:
    return repr(str.__str__(key)) if isinstance(key, str) else f"<{type(key).__name__}>"


def _is_numpy_scalar(value) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "shape", None) == ()


def _literal_name(layer) -> str:
    try:
        return _literal(layer.name)
    except _NotPlainData as error:
        raise _refusal(layer, error, "the name") from None


def _refusal(op, error: _NotPlainData, what: str) -> UnsupportedLayer:
    """The error for a value that has no safe literal form, naming the layer and where the value is."""
    name = _safe_repr(getattr(op, "name", ""))
    kind, found = type(op).__name__, type(error.value).__name__
    return UnsupportedLayer(
        f"The code for layer {name} ({kind}) cannot be written: {what}{error.where} is a {found}, not plain "
        "Python data (None, numbers, strings, bytes, lists, tuples, dicts), so it has no literal form that is "
        "safe to run. What would work: make get_config() return plain data (keras.saving.serialize_keras_object(...) "
        "for Keras objects), or save the model to a .keras file instead of writing its code. "
        f"Received: layer={name} with {what}{error.where} of type {found}"
    )


# ----------------------------------------------------------------------------- names


class _Names:
    """Python variable names from layer names, each used once in a function."""

    def __init__(self, taken: set[str]):
        # The names the generated code itself uses, and every builder function's name.
        self.used: set[str] = set(taken)

    def new(self, base) -> str:
        return _unique(_identifier(base), self.used)


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... whichever is free; then marked used."""
    candidate, i = name, 1
    while candidate in used:
        i += 1
        candidate = f"{name}_{i}"
    used.add(candidate)
    return candidate


def _is_plain_name(text: str) -> bool:
    """True if Python reads ``text`` back as this very identifier (see ``_keyword_arguments``)."""
    if not isinstance(text, str):
        return False
    text = str.__str__(text)
    return (
        text.isidentifier() and not keyword.iskeyword(text)
        and unicodedata.normalize("NFKC", text) == text and text != "__debug__"
    )


def _identifier(text) -> str:
    """A valid Python identifier made from a layer name, already in the NFKC form Python uses.

    Python's parser NFKC-normalises identifiers, so ``ﬁx`` and ``fix`` are the same variable:
    names are normalised first, then compared (``_unique``), and so never merge silently.
    Characters that cannot appear in an identifier (``²`` normalises to ``2``; ``-`` cannot)
    become ``_``.
    """
    text = unicodedata.normalize("NFKC", str.__str__(text) if isinstance(text, str) else type(text).__name__)
    chars = [ch if ("_" + ch).isidentifier() else "_" for ch in text]
    name = "".join(chars) or "x"
    if not (name[0] == "_" or name[0].isidentifier()):
        name = "_" + name
    if unicodedata.normalize("NFKC", name) != name or not name.isidentifier():
        name = "_" + re.sub(r"[^0-9A-Za-z_]", "_", name)  # rare combining-mark cases: plain ASCII
    if keyword.iskeyword(name) or name == "__debug__":
        name = "_" + name
    return name
