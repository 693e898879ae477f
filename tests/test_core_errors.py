"""Bad input: a typed error naming what was received and what would work; nothing half-applied."""

import keras
import pytest
import numpy as np
from conftest import assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb


def test_unknown_layer_suggests_close_names(make):
    model = make("seed_mlp")
    with pytest.raises(kerasnb.LayerNotFound) as info:
        kerasnb.delete(model, "dens_1")
    text = str(info.value)
    assert "No layer named 'dens_1' in model 'mlp'" in text
    assert "Did you mean 'dense_1'" in text
    assert "Received: target='dens_1'" in text
    assert isinstance(info.value, KeyError) and isinstance(info.value, kerasnb.SurgeryError)


def test_shared_layer_needs_call_index(make):
    model = make("shared")
    with pytest.raises(kerasnb.AmbiguousTarget, match=r"called 2 times.*\('shared', 0\), \('shared', 1\)"):
        kerasnb.replace(model, "shared", L.Dense(4))


def test_call_index_out_of_range(make):
    model = make("shared")
    with pytest.raises(kerasnb.LayerNotFound, match="index from 0 to 1"):
        kerasnb.replace(model, ("shared", 5), L.Dense(4))


def test_delete_multi_input_layer(make):
    model = make("residual")
    with pytest.raises(kerasnb.InvalidEdit, match=r"takes 2 inputs and 2 of them have the shape.*keep_input=: "
                                                r"0 or 'stem' \(None, 8, 8, 8\) float32; 1 or 'res_conv2'"):
        kerasnb.delete(model, "res_add")


def test_replacement_that_cannot_feed_consumers(make):
    model = make("residual")
    before = snapshot(model)
    with pytest.raises(kerasnb.IncompatibleShape) as info:
        kerasnb.replace(model, "res_conv2", L.Conv2D(5, 1, name="narrow"))
    text = str(info.value)
    assert "'res_add'" in text and "(None, 8, 8, 8)" in text and "(None, 8, 8, 5)" in text
    assert "keeps shape (None, 8, 8, 8)" in text
    assert_unchanged(model, before)


def test_replacement_that_cannot_take_the_input(make):
    model = make("seed_mlp")
    with pytest.raises(kerasnb.IncompatibleShape, match=r"Conv2D 'c2d' cannot take an input of shape \(None, 64\)"):
        kerasnb.replace(model, "dense_1", L.Conv2D(3, 3, name="c2d"))


@pytest.mark.parametrize("edit", [
    kerasnb.Replace("input_layer", L.Dense(3)),
    kerasnb.Delete("input_layer"),
    kerasnb.Configure("input_layer", {"name": "x"}),
    kerasnb.Insert(L.Dense(3), before="input_layer"),
])
def test_input_layer_cannot_be_edited(make, edit):
    model = make("seed_mlp")
    with pytest.raises(kerasnb.InputLayerEdit, match="'input_layer' is an InputLayer.*Insert after it"):
        kerasnb.apply(model, [edit])


def test_unbuilt_model():
    model = keras.Sequential([L.Dense(3), L.Dense(1)])
    with pytest.raises(kerasnb.UnbuiltModel, match=r"not built.*model.build"):
        kerasnb.delete(model, "dense")


def test_subclassed_model_is_refused():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    model = Tiny()
    model(keras.ops.ones((1, 3)))
    with pytest.raises(kerasnb.UnsupportedModel, match="subclassed Tiny without a functional graph"):
        kerasnb.delete(model, "dense")


def test_span_with_branch_out_is_refused(make):
    model = make("residual")
    with pytest.raises(kerasnb.InvalidEdit, match="inputs; a span must be a linear chain|also used outside the span"):
        kerasnb.replace(model, ("stem", "res_conv2"), L.Conv2D(8, 1))


def test_bad_edit_in_a_list_applies_none(make):
    """A failing edit late in the list leaves nothing changed and raises."""
    model = make("seed_mlp")
    before = snapshot(model)
    with pytest.raises(kerasnb.LayerNotFound):
        kerasnb.apply(model, [kerasnb.Delete("dense_1"), kerasnb.Delete("nope")])
    assert_unchanged(model, before)


def test_not_a_replacement(make):
    model = make("seed_mlp")
    with pytest.raises(kerasnb.InvalidEdit, match="Received: 42 of type int"):
        kerasnb.replace(model, "dense_1", 42)


def test_insert_needs_one_anchor():
    with pytest.raises(kerasnb.InvalidEdit, match="exactly one of after= or before="):
        kerasnb.Insert(L.Dense(1))


def test_configure_rename_clash(make):
    model = make("seed_mlp")
    with pytest.raises(kerasnb.NameClash, match="dense_2"):
        kerasnb.configure(model, "dense_1", name="dense_2")


def test_callable_must_make_its_own_layers(make):
    """A callable that calls a layer of the model is refused, and the model gets no new call."""
    model = make("seed_mlp")
    before = snapshot(model)
    with pytest.raises(kerasnb.InvalidEdit, match="calls 'dense_1', a layer of the model being edited"):
        kerasnb.replace(model, "dense_1", lambda t: model.get_layer("dense_1")(t) * 2.0)
    assert_unchanged(model, before)


def test_layer_that_cannot_be_rebuilt_from_its_config(make):
    class NoConfig(L.Layer):
        def __init__(self, fn):  # a function: Keras records no arguments, and it is kept under another name
            super().__init__()
            self._fn = fn

        def call(self, x):
            return x * 2.0

    inputs = keras.Input((3,), name="x")
    h = NoConfig(lambda x: x)(inputs)
    model = keras.Model(inputs, L.Dense(1, name="out")(h))
    with pytest.raises(kerasnb.UnsupportedLayer) as info:
        kerasnb.delete(model, "out")
    text = str(info.value)
    assert "cannot be recreated" in text and "register_keras_serializable" in text
    assert "Neither the arguments it was made with nor the config of its model" in text
    assert "Received: layer='no_config" in text


class LossyConfig(L.Layer):
    """Its get_config() leaves out `units`, and it keeps it under another name: a rebuild from the
    config alone would silently make a layer of 4 units."""

    def __init__(self, units=4, init=None, **kwargs):
        super().__init__(**kwargs)
        self._width, self.init = units, init

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self._width), initializer=self.init or "glorot_uniform")

    def call(self, x):
        return x @ self.w

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}


def lossy_model(**arguments):
    inputs = keras.Input((3,), name="x")
    h = LossyConfig(6, name="lossy", **arguments)(inputs)
    return keras.Model(inputs, L.Dense(2, name="out")(h))


def test_layer_whose_config_drops_an_argument_is_made_from_its_recorded_arguments():
    model = lossy_model()
    x = np.random.default_rng(0).random((2, 3)).astype("float32")
    result = kerasnb.apply(model, [])
    assert result.report.status("lossy") == "kept"
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(result.model(x)))
    assert any("'lossy'" in note and "get_config() leaves out" in note for note in result.notes)
    again = kerasnb.configure(result.model, "out", name="head")  # the new layer can be made again too
    np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(again.model(x)))


def test_layer_whose_config_drops_an_argument_and_no_route_remakes_it_is_refused():
    # An initializer object among the arguments: Keras records no arguments, and the model's own
    # config (a plain functional one) rebuilds it from the lossy config too.
    model = lossy_model(init=keras.initializers.Ones())
    before = snapshot(model)
    with pytest.raises(kerasnb.UnsupportedLayer) as info:
        kerasnb.delete(model, "out")
    text = str(info.value)
    assert "'lossy' cannot be rebuilt faithfully" in text and "Received: layer='lossy'" in text
    assert_unchanged(model, before)
    assert kerasnb.apply(lossy_model(), []).report.status("lossy") == "kept"  # Keras state is fine after


def test_an_unexpected_failure_inside_is_a_surgery_error_and_the_model_is_unchanged(make, monkeypatch):
    """Whatever kerasnb does not handle surfaces as InternalError naming the function and the cause."""
    model = make("seed_mlp")
    before = snapshot(model)

    def broken(*args, **kwargs):
        raise AttributeError("'Thing' object has no attribute 'units'")

    monkeypatch.setattr(kerasnb._rebuild, "run_pass", broken)
    for call in (lambda: kerasnb.apply(model, []), lambda: kerasnb.replace(model, "dense_1", L.Dense(3)),
                 lambda: kerasnb.prune(model, "dense", keep=0.5), lambda: kerasnb.enable_lora(model, "dense")):
        with pytest.raises(kerasnb.SurgeryError) as info:
            call()
        text = str(info.value)
        assert type(info.value).__name__ == "InternalError" and isinstance(info.value.__cause__, AttributeError)
        assert "AttributeError: 'Thing' object has no attribute 'units'" in text and "line" in text
    assert_unchanged(model, before)


def test_an_interrupt_is_not_turned_into_an_error(make, monkeypatch):
    model = make("seed_mlp")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kerasnb._rebuild, "run_pass", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kerasnb.apply(model, [])


def test_every_error_class_is_defined_in_errors_and_exported():
    """Every SurgeryError subclass of the package lives in kerasnb/errors.py and is importable from kerasnb."""
    import importlib
    import pkgutil

    pytest.importorskip("ipywidgets")  # the editor's modules import it
    for module in pkgutil.walk_packages(kerasnb.__path__, "kerasnb."):
        importlib.import_module(module.name)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = {cls for cls in subclasses(kerasnb.SurgeryError) if cls.__module__.startswith("kerasnb")}
    assert len(ours) >= 20  # the walk found the package's classes
    elsewhere = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in ours if cls.__module__ != "kerasnb.errors")
    assert elsewhere == []
    missing = sorted(cls.__name__ for cls in ours | {kerasnb.SurgeryError}
                     if getattr(kerasnb, cls.__name__, None) is not cls or cls.__name__ not in kerasnb.__all__)
    assert missing == []
    # Their old homes still name them.
    old = {name: importlib.import_module(f"kerasnb.{name}") for name in ("budget", "catalog", "fitting", "flops")}
    assert old["catalog"].UnknownType is kerasnb.UnknownType and old["fitting"].DoesNotFit is kerasnb.DoesNotFit
    assert old["budget"].BudgetNotReachable is kerasnb.BudgetNotReachable
    assert old["flops"].UnknownShape is kerasnb.UnknownShape
    assert importlib.import_module("kerasnb.editor.panel").SaveFailed is kerasnb.SaveFailed
