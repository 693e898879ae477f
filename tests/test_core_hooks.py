"""The core edits that whole-model transforms stand on: ChangeInput, Transform (a weight rule), Truncate."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb
from kerasnb.weights import Outcome


def cnn():
    inputs = keras.Input((8, 8, 3), name="img")
    x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(inputs))
    x = L.Dense(5, name="mid")(L.Flatten(name="flat")(x))
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="cnn")


def summed(old, new):
    kernel = keras.ops.sum(old.kernel.value, axis=-2, keepdims=True)
    return Outcome("adapted", f"kernel {tuple(old.kernel.shape)} -> {tuple(kernel.shape)}: summed",
                   [(new.kernel, kernel), (new.bias, keras.ops.copy(old.bias.value))])


def probe(model, name, x):
    return to_numpy(keras.Model(model.inputs[0], model.get_layer(name).output)(x))


class TestChangeInput:
    def test_new_shape_with_an_adapting_rule(self):
        model = cnn()
        before = snapshot(model)
        result = kerasnb.apply(model, [kerasnb.ChangeInput("img", (8, 8, 1)), kerasnb.Transform("conv", summed)])
        assert result.report.status("conv") == "adapted"
        assert "summed" in result.report.row("conv").reason
        assert result.report.status("bn") == "kept_input_changed"
        grey = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
        np.testing.assert_allclose(probe(result.model, "bn", grey), probe(model, "bn", np.repeat(grey, 3, -1)),
                                   atol=1e-5)
        assert_unchanged(model, before)

    def test_spatial_change_reinitialises_what_depends_on_it(self):
        result = kerasnb.apply(cnn(), [kerasnb.ChangeInput("img", (10, 10, 3))])
        assert result.report.status("conv") == "kept_input_changed"
        assert result.report.status("mid") == "reinitialized"
        assert "kernel (144, 5) -> (256, 5)" in result.report.row("mid").reason

    @pytest.mark.parametrize("edit, words", [
        (kerasnb.ChangeInput("img", (8, 8)), ["same rank", "Received: shape=(8, 8)"]),
        (kerasnb.ChangeInput("conv", (8, 8, 1)), ["names an input layer", "['img']"]),
        (kerasnb.ChangeInput("img", "big"), ["tuple of positive ints"]),
    ], ids=["rank", "not an input", "not a shape"])
    def test_bad_input(self, edit, words):
        with pytest.raises(kerasnb.InvalidEdit) as info:
            kerasnb.apply(cnn(), [edit])
        for word in words:
            assert word in str(info.value)

    def test_a_rule_must_return_an_outcome(self):
        with pytest.raises(kerasnb.InvalidEdit, match="returns kerasnb.weights.Outcome"):
            kerasnb.apply(cnn(), [kerasnb.Transform("conv", lambda old, new: None)])


class TestTruncate:
    def test_top_level_layer(self):
        model = cnn()
        x = np.random.default_rng(1).random((2, 8, 8, 3)).astype("float32")
        result = kerasnb.apply(model, [kerasnb.Truncate("bn")])
        assert set(result.report.with_status("removed")) == {"flat", "mid", "head"}
        assert result.report.status("bn") == "kept"
        np.testing.assert_array_equal(to_numpy(result.model(x)), probe(model, "bn", x))

    def test_inside_a_nested_model_and_outside(self):
        block_in = keras.Input((8, 8, 3))
        x = L.Conv2D(4, 3, name="s2")(L.Conv2D(4, 3, name="s1")(block_in))
        backbone = keras.Model(block_in, L.GlobalAveragePooling2D(name="gap")(x), name="backbone")
        inputs = keras.Input((8, 8, 3), name="x")
        model = keras.Model(inputs, L.Dense(2, name="cls")(backbone(inputs)))
        x = np.random.default_rng(2).random((2, 8, 8, 3)).astype("float32")
        features = kerasnb.apply(model, [kerasnb.Truncate(["backbone/s1"])])
        assert set(features.report.with_status("removed")) == {"backbone/s2", "backbone/gap", "cls"}
        assert features.report.status("backbone/s1") == "kept"
        expected = to_numpy(keras.Model(backbone.input, backbone.get_layer("s1").output)(x))
        np.testing.assert_array_equal(to_numpy(features.model(x)), expected)
        both = kerasnb.apply(model, [kerasnb.Truncate(["backbone/s1", "cls"])])
        s1, cls = both.model(x)
        np.testing.assert_array_equal(to_numpy(s1), expected)
        np.testing.assert_array_equal(to_numpy(cls), to_numpy(model(x)))


def test_a_rule_after_another_rule_gives_the_latest_status_and_both_reasons():
    """Adapted in one rebuild, folded in the next (as change_input then fold_batchnorm): folded, both said."""
    def folded(old, new):
        return Outcome("folded", "folded a BatchNorm in", [(v, keras.ops.copy(o.value)) for v, o in
                                                           zip(new.weights, old.weights)])

    model = cnn()
    result = kerasnb.apply(model, [kerasnb.ChangeInput("img", (8, 8, 1)), kerasnb.Transform("conv", summed)])
    again = kerasnb.apply(result.model, [kerasnb.Transform("conv", folded)])
    both = kerasnb.apply(model, [kerasnb.ChangeInput("img", (8, 8, 1)), kerasnb.Transform("conv", summed),
                                 kerasnb.Transform("conv", folded)])
    assert again.report.status("conv") == "folded"
    assert both.report.status("conv") == "folded"
    assert "summed" in both.report.row("conv").reason and "folded a BatchNorm in" in both.report.row("conv").reason
