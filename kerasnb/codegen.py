"""Python source that rebuilds a model's architecture with the Keras functional API.

``code(model)`` walks the graph once (``kerasnb._graph.walk``) and writes one line per layer
call, naming each layer's arguments only where they differ from the layer's defaults, so the
result reads like code written by hand (the seed's examples). Weights are not part of the
source: load them with ``new_model.set_weights(model.get_weights())`` or from a ``.keras`` file.
"""

from __future__ import annotations

import inspect
import keyword
import re

import keras

from . import _graph


def code(model, *, function_name: str | None = None) -> str:
    """Source that defines the model's layers and calls ``keras.Model(inputs, outputs)``.

    Executing it leaves the rebuilt model in a variable ``model``. Nested models become
    functions ``build_<name>()`` called where the nested model is used.
    """
    writer = _Writer()
    writer.defined.add(function_name or "build_model")
    body = writer.model_function(model, function_name or "build_model")
    head = ["import keras", "from keras import layers", ""]
    return "\n".join(head + writer.functions + body + ["", f"model = {function_name or 'build_model'}()", ""])


class _Writer:
    def __init__(self):
        self.functions: list[str] = []  # nested models' builder functions, defined first
        self.defined: set[str] = set()
        self.defined_for: dict = {}

    def model_function(self, model, name: str) -> list[str]:
        names = _Names()
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
            args, kwargs = view.args, _meaningful_kwargs(view.kwargs)
            rendered = [_render(a, var_of) for a in args] + [f"{k}={_render(v, var_of)}" for k, v in kwargs.items()]
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
        ins = _render(_graph.pack_inputs(model, inputs), var_of)
        outs = _render(_graph.pack_outputs(model, _graph.output_tensors(model)), var_of)
        lines.append(f"    return keras.Model({ins}, {outs}, name={model.name!r})")
        return lines

    def _constructor(self, op) -> str:
        if not isinstance(op, keras.layers.Layer):
            return _op_function(op)
        if isinstance(op, keras.Sequential) and op.trainable and _graph.is_graph_model(op) and _is_plain_chain(op):
            first = _graph.input_layers(op)[0]
            items = [_input_call(first)] + [self._constructor(layer) for layer in op.layers]
            inner = "".join(f"\n        {item}," for item in items)
            return f"keras.Sequential([{inner}\n    ], name={op.name!r})"
        if _graph.is_graph_model(op):
            fn = "build_" + _identifier(op.name)
            while fn in self.defined and self.defined_for.get(fn) is not op:
                fn += "_"
            if fn not in self.defined:
                self.defined_for[fn] = op
                self.defined.add(fn)
                lines = self.model_function(op, fn)
                if not op.trainable:
                    lines.insert(-1, "    # this block was frozen")
                    lines[-1] = lines[-1].replace("return keras.Model(", "block = keras.Model(")
                    lines += ["    block.trainable = False", "    return block"]
                self.functions += lines + [""]
            return f"{fn}()"
        return _layer_constructor(op)


def _op_function(op) -> str:
    """A raw ``keras.ops`` call recorded in the graph (``x + y``, ``keras.ops.relu(x)``)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", type(op).__name__).lower()
    if not callable(getattr(keras.ops, snake, None)):
        from .errors import UnsupportedLayer

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
    inner = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    return f"(lambda *a, **k: keras.ops.{snake}(*a, {inner}, **k))"


def _input_call(layer) -> str:
    shape = tuple(layer.batch_shape)
    args = [f"shape={shape[1:]!r}"] if shape and shape[0] is None else [f"batch_shape={shape!r}"]
    if layer.dtype and layer.dtype != "float32":
        args.append(f"dtype={layer.dtype!r}")
    if getattr(layer, "sparse", False):
        args.append("sparse=True")
    args.append(f"name={layer.name!r}")
    return f"keras.Input({', '.join(args)})"


def _layer_constructor(op) -> str:
    cls = type(op)
    if getattr(keras.layers, cls.__name__, None) is cls:
        qualified = f"layers.{cls.__name__}"
    else:
        registered = keras.saving.get_registered_name(cls)
        qualified = f"keras.saving.get_registered_object({registered!r})"
    config = op.get_config()
    shown = _non_default(cls, config)
    if shown is None:  # defaults unknown: the full config is always right
        return f"{qualified}.from_config({config!r})"
    return f"{qualified}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


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


def _render(value, var_of: dict) -> str:
    if isinstance(value, keras.KerasTensor):
        return var_of[id(value)]
    if isinstance(value, list):
        return "[" + ", ".join(_render(v, var_of) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_render(v, var_of) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_render(v, var_of)}" for k, v in value.items()) + "}"
    return repr(value)


class _Names:
    """Python variable names from layer names, each used once."""

    def __init__(self):
        self.used: set[str] = {"keras", "layers", "block"}  # names the generated code itself uses

    def new(self, base: str) -> str:
        name = _identifier(base)
        candidate, i = name, 1
        while candidate in self.used:
            i += 1
            candidate = f"{name}_{i}"
        self.used.add(candidate)
        return candidate


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", str(text)) or "x"
    if name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    return name
