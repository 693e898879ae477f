"""kerasnb.codegen.code on hostile models: the source always parses, never runs model-provided text
as code, and rebuilds the same architecture (same layer names, types, shapes, configs, outputs).

Names and config keys here are what a model loaded from an untrusted .keras file can carry.
"""

import ast
import math

import keras
import numpy as np
import pytest
from conftest import sample_input, to_numpy

from kerasnb.codegen import code
from kerasnb.errors import SurgeryError, UnsupportedLayer

L = keras.layers
PACKAGE = "kerasnb_test_codegen_hostile"
_BASE_KEYS = {"name", "trainable", "dtype", "autocast", "activity_regularizer"}


# A registered name is any string: this one would close the quote and run code if written verbatim.
@keras.saving.register_keras_serializable(package=PACKAGE, name="PassThrough')\nimport os\n#\"")
class PassThrough(L.Layer):
    """Returns its input; keeps whatever extra config keys it is given, and accepts any call kwargs."""

    def __init__(self, **kwargs):
        self.extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in _BASE_KEYS}
        super().__init__(**kwargs)

    def call(self, x, **kwargs):
        return x

    def compute_output_shape(self, input_shape, **kwargs):  # JAX cannot trace string call kwargs
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.extra}


@keras.saving.register_keras_serializable(package=PACKAGE, name="NeedsSpec")
class NeedsSpec(PassThrough):
    """A required __init__ argument missing from its config: only from_config can rebuild it."""

    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)

    @classmethod
    def from_config(cls, config):
        return cls(spec=None, **config)


def crafted_keys(tmp_path):
    """Config keys that run code if written as `key=value`: one writes a file, one marks `keras`."""
    flag = tmp_path / "pwned.txt"
    return flag, {
        f"a=open({str(flag)!r}, 'w').write('pwned') or 1, b": 1,
        "c=setattr(keras, 'KERASNB_PWNED', 1) or 1, d": 2,
        "class": 3,  # a keyword
        "ﬁx": 4,  # Python would read ﬁx=... as fix=...
        "fix": 5,
        "a b": [1, (2, "three")],
        "1": {"nested": None},
        "__debug__": True,
        "": "empty",
        "big": 10**5000,  # more digits than repr() prints
        "nan": float("nan"),
        "neg_inf": float("-inf"),
    }


def rebuild(model, **kwargs):
    source = code(model, **kwargs)
    ast.parse(source)  # always valid Python
    namespace = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace["model"], source


def plain(config, tuples_as_lists=False):
    """A config with NaN made comparable (NaN != NaN), and tuples as lists if asked (JSON has no tuples)."""
    if isinstance(config, dict):
        return {k: plain(v, tuples_as_lists) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        kind = list if tuples_as_lists else type(config)
        return kind(plain(v, tuples_as_lists) for v in config)
    if isinstance(config, float) and math.isnan(config):
        return "NaN"
    return config


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def describe(model):
    return [(l.name, type(l).__name__, l.trainable, str(getattr(l, "output", None) is not None and l.output.shape))
            for l in all_layers(model)]


def assert_same_model(rebuilt, model, tuples_as_lists=False):
    assert rebuilt.name == model.name
    assert describe(rebuilt) == describe(model)
    assert plain(rebuilt.get_config(), tuples_as_lists) == plain(model.get_config(), tuples_as_lists)
    rebuilt.set_weights(model.get_weights())
    x = sample_input(model)
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(rebuilt(x))):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)


def test_hostile_layer_model_and_input_names_round_trip():
    """Keywords, quotes, newlines, triple quotes, digits first, `x²`, names of the code's own helpers."""
    names = ["x²", "class", "lambda", "None", "__debug__", 'q"\'\n"""', "'''", "\\", "1st", "", " ", "a-b", "名前",
             "model", "keras", "layers", "block", "float", "build_model", "\x00",
             "x'); open('pwned', 'w'); ('", "x = 1\nimport os"]
    inputs = keras.Input((3,), name="class\n'\"")
    x = inputs
    for name in names:
        x = L.Dense(3, name=name)(x)
    model = keras.Model(inputs, x, name='m"""\nimport os')
    rebuilt, _ = rebuild(model)
    assert_same_model(rebuilt, model)


def test_names_equal_after_nfkc_stay_apart():
    """Python reads `ﬁx` as `fix`: two branches so named must stay two variables."""
    inputs = keras.Input((4,), name="ﬁ")
    a = L.Dense(3, name="ﬁx")(inputs)
    b = L.Dense(5, name="fix")(L.Dense(4, name="fi")(inputs))
    c = L.Dense(2, name="x²")(inputs)
    d = L.Dense(6, name="x2")(inputs)
    out = L.Concatenate(name="ｃａｔ")([a, b, c, d])
    model = keras.Model(inputs, L.Dense(1, name="cat")(out), name="nfkc")
    rebuilt, _ = rebuild(model)
    assert_same_model(rebuilt, model)


def test_no_variable_hides_a_builder_function():
    """A layer `build_encoder` next to a nested model `encoder`, a nested model called `model`,
    nested models whose builder names are NFKC twins, a frozen one with code-like names, and a
    Sequential written inline with a nested model inside."""
    def nested(name, inner_names, trainable=True):
        i = keras.Input((4,), name=inner_names[0])
        h = i
        for n in inner_names[1:]:
            h = L.Dense(4, name=n)(h)
        block = keras.Model(i, h, name=name)
        block.trainable = trainable
        return block

    encoder = nested("encoder", ["model", "build_encoder", "build_model"])
    inner_model = nested("model", ["x", "build_ﬁlter"])
    fi = nested("ﬁlter", ["y", "build_filter"])
    plain_f = nested("filter", ["z", "keras"])
    frozen = nested("return keras.Model(", ["block", "return keras.Model(x"], trainable=False)
    # written inline as keras.Sequential([...]), with a builder function for the model inside it
    seq = keras.Sequential([keras.Input((4,)), L.Dense(4, name="class"), nested("build_model", ["i", "float"])],
                           name='seq"""\n')
    inputs = keras.Input((4,), name="build_model")
    h = L.Dense(4, name="build_encoder")(inputs)
    h = encoder(h)
    h = inner_model(h)
    h = fi(h)
    h = plain_f(h)
    h = frozen(h)
    h = seq(h)
    model = keras.Model(inputs, L.Dense(2, name="build_return_keras_Model_")(h), name="outer")
    rebuilt, source = rebuild(model)
    assert_same_model(rebuilt, model)
    assert rebuilt.get_layer("return keras.Model(").trainable is False
    defined = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    assert len(defined) == 7 and len(set(defined)) == 7
    assert "keras.Sequential([" in source


def test_code_in_a_config_key_is_never_run(tmp_path):
    """Written as `key=value`, these keys would write a file and set keras.KERASNB_PWNED."""
    flag, extra = crafted_keys(tmp_path)
    extra = {k: v for k, v in extra.items() if "=" in k}
    inputs = keras.Input((3,), name="in")
    model = keras.Model(inputs, PassThrough(name="pass", **extra)(inputs), name="injection")
    rebuilt, _ = rebuild(model)
    assert not flag.exists() and not hasattr(keras, "KERASNB_PWNED")
    assert rebuilt.get_layer("pass").get_config() == model.get_layer("pass").get_config()


def test_crafted_config_keys_never_run(tmp_path):
    """A pass-through layer whose config keys are code: kept as quoted strings, the config intact."""
    flag, extra = crafted_keys(tmp_path)
    inputs = keras.Input((3,), name="in")
    x = PassThrough(name="pass", **extra)(inputs)
    x = NeedsSpec(spec=object(), name="needs_spec", **extra)(x)  # written with from_config
    model = keras.Model(inputs, L.Dense(2, name="out")(x), name="crafted")
    rebuilt, source = rebuild(model)
    assert not flag.exists() and not hasattr(keras, "KERASNB_PWNED")
    assert "from_config" in source
    for name in ("pass", "needs_spec"):
        assert plain(rebuilt.get_layer(name).get_config()) == plain(model.get_layer(name).get_config())
        assert set(rebuilt.get_layer(name).get_config()) >= {"ﬁx", "fix", "class", ""}
    assert_same_model(rebuilt, model)


def test_crafted_call_keywords_never_run(tmp_path):
    """Keyword arguments of a layer call are model-provided too."""
    flag, extra = crafted_keys(tmp_path)
    extra = {k: v for k, v in extra.items() if k not in ("big", "nan", "neg_inf")}  # call values are traced
    inputs = keras.Input((3,), name="in")
    x = PassThrough(name="pass")(inputs, **extra)
    model = keras.Model(inputs, L.Dense(2, name="out")(x), name="crafted_call")
    rebuilt, _ = rebuild(model)
    assert not flag.exists() and not hasattr(keras, "KERASNB_PWNED")
    assert_same_model(rebuilt, model)
    node_kwargs = rebuilt.get_layer("pass")._inbound_nodes[0].arguments.kwargs
    assert set(node_kwargs) == set(extra)


def test_hostile_output_keys_round_trip():
    inputs = keras.Input((3,), name="in")
    outputs = {"a'\n\"\"\"b": L.Dense(2, name="a")(inputs), "class": L.Dense(1, name="b")(inputs)}
    model = keras.Model(inputs, outputs, name="dict_out")
    rebuilt, _ = rebuild(model)
    assert_same_model(rebuilt, model)
    assert set(rebuilt(sample_input(model))) == set(outputs)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __repr__(self):
        return f"open({str(self.path)!r}, 'w').write('pwned')"


class _EvilStr(str):
    def __repr__(self):
        return "__import__('os').getcwd()"

    def __str__(self):
        return "__import__('os').getcwd()"


def test_value_without_a_literal_form_is_refused(tmp_path):
    """An object in a config whose repr is code is never written: UnsupportedLayer names layer and key."""
    flag = tmp_path / "pwned.txt"
    inputs = keras.Input((3,), name="in")
    layer = PassThrough(name="evil_layer", settings={"inner": [1, _Evil(flag)]})
    model = keras.Model(inputs, layer(inputs), name="evil")
    with pytest.raises(UnsupportedLayer) as info:
        code(model)
    assert isinstance(info.value, SurgeryError)
    message = str(info.value)
    assert "'evil_layer'" in message and "['settings']['inner'][1]" in message and "_Evil" in message
    assert "What would work" in message
    assert not flag.exists()


def test_str_subclass_value_is_written_as_its_text():
    """A str whose __repr__ is code is written as the string it holds."""
    inputs = keras.Input((3,), name="in")
    layer = PassThrough(name=_EvilStr("evil_str"), note=_EvilStr("hello"), **{_EvilStr("key"): 1})
    model = keras.Model(inputs, layer(inputs), name="str_sub")
    rebuilt, source = rebuild(model)
    assert "__import__" not in source
    assert rebuilt.get_layer("evil_str").get_config()["note"] == "hello"
    assert_same_model(rebuilt, model)


def test_model_loaded_from_a_file(tmp_path):
    """The case the trust issue is about: a saved model with crafted names and config keys."""
    flag, extra = crafted_keys(tmp_path)
    extra.pop("big")  # JSON cannot hold it
    inputs = keras.Input((3,), name="in'\n")
    x = PassThrough(name='pass"""', **extra)(inputs)
    x = L.Dense(2, name="ﬁx")(x)
    model = keras.Model(inputs, L.Dense(2, name="fix")(x), name="from_file\n")
    path = tmp_path / "hostile.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    rebuilt, _ = rebuild(loaded)
    assert not flag.exists() and not hasattr(keras, "KERASNB_PWNED")
    # A loaded model's build_config holds lists where the rebuilt one has tuples: a Keras detail.
    assert_same_model(rebuilt, loaded, tuples_as_lists=True)


@pytest.mark.parametrize("bad", ["x; import os", "class", "keras", "model", "ﬁx", "1x", ""])
def test_function_name_must_be_a_plain_identifier(bad):
    inputs = keras.Input((3,), name="in")
    model = keras.Model(inputs, L.Dense(2, name="d")(inputs), name="m")
    with pytest.raises(SurgeryError, match="function_name"):
        code(model, function_name=bad)
    rebuilt, source = rebuild(model, function_name="make")
    assert "def make():" in source
    assert_same_model(rebuilt, model)
