"""kerasnb.trace: every call's activations, equal to what Keras computes, from one pass per batch.

Values are checked against a hand-built ``keras.Model(inputs, layer.output)`` where Keras can
express the layer's output, and against a manual forward pass where it cannot (inside nested
models, a shared layer's second call); the model traced keeps its graph (no new call).
"""

import re

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from conftest import assert_unchanged, snapshot, to_numpy


def _image_net():
    inputs = keras.Input((6, 6, 2), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x), name="image_net")


def _deep_nested():
    """A Sequential inside a functional model inside the model: paths two levels down; a shared layer."""
    inner = keras.Sequential([keras.Input((4,), name="inner_in"), L.Dense(4, activation="relu", name="conv3")],
                             name="inner")
    mid_in = keras.Input((4,), name="mid_in")
    middle = keras.Model(mid_in, L.Dense(4, name="mid_dense")(inner(mid_in)), name="backbone")
    inputs = keras.Input((4,), name="x")
    shared = L.Dense(4, activation="tanh", name="shared")
    h = shared(shared(inputs))
    return keras.Model(inputs, L.Dense(2, name="head")(middle(h)), name="deep")


class Counting(L.Layer):
    """Counts its eager calls: how many passes a trace makes."""

    calls = 0

    def call(self, x):
        if not isinstance(x, keras.KerasTensor):
            Counting.calls += 1
        return x * 2.0


@pytest.fixture(scope="module")
def image_net():
    keras.utils.set_random_seed(0)
    return _image_net()


@pytest.fixture(scope="module")
def deep():
    keras.utils.set_random_seed(1)
    return _deep_nested()


@pytest.fixture(scope="module")
def gpt2():
    kh = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    return kh.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                                  max_sequence_length=12)


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _text(seed=0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(12)[None, :] < np.array([12, 7, 3])[:, None]).astype("int32")
    return {"token_ids": rng.integers(1, 50, size=(3, 12)).astype("int32") * mask, "padding_mask": mask}


def test_values_equal_a_hand_built_model_and_the_model_is_unchanged(image_net):
    x = _x((5, 6, 6, 2))
    before = snapshot(image_net)
    traced = kerasnb.trace(image_net, x)
    assert traced.paths == ["image", "conv", "bn", "relu", "gap", "head"]
    for layer in image_net.layers[1:]:
        expected = to_numpy(keras.Model(image_net.input, layer.output)(x))
        np.testing.assert_array_equal(traced[layer.name], expected)
    np.testing.assert_array_equal(traced["image"], x)
    assert_unchanged(image_net, before)  # no new call (inbound node), same weights


def test_one_pass_per_batch_and_batches_are_joined():
    Counting.calls = 0
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, L.Dense(2, name="out")(Counting(name="twice")(inputs)))
    built = Counting.calls
    x = _x((10, 3))
    traced = kerasnb.trace(model, x, batch_size=4)  # 3 batches
    assert Counting.calls - built == 3 and traced.batches == 3
    np.testing.assert_array_equal(traced["twice"], x * 2.0)
    assert traced["out"].shape == (10, 2)


def test_nested_models_at_any_depth_and_shared_layers_at_each_call(deep):
    x = _x((3, 4), seed=2)
    before = snapshot(deep)
    traced = kerasnb.trace(deep, x)
    assert traced.paths[:3] == ["x", "shared", "backbone"]
    assert "backbone/inner/conv3" in traced.paths
    shared = deep.get_layer("shared")
    first, second = traced["shared"]
    np.testing.assert_array_equal(first, to_numpy(shared(x)))  # by hand: the layer called eagerly
    np.testing.assert_array_equal(second, to_numpy(shared(first)))
    np.testing.assert_array_equal(traced[("shared", 1)], second)
    # Inside two nested models: a manual forward pass on what the call received.
    inner = deep.get_layer("backbone").get_layer("inner")
    conv3 = to_numpy(inner.get_layer("conv3")(second))
    np.testing.assert_array_equal(traced["backbone/inner/conv3"], conv3)
    np.testing.assert_array_equal(traced["conv3"], conv3)  # a name alone, when one path ends in it
    mid = to_numpy(deep.get_layer("backbone").get_layer("mid_dense")(conv3))
    np.testing.assert_array_equal(traced["backbone/mid_dense"], mid)
    np.testing.assert_array_equal(traced["backbone"], mid)
    np.testing.assert_array_equal(traced["head"], to_numpy(deep(x)))
    only = kerasnb.trace(deep, x, layers=[("shared", 1), "backbone/inner/conv3"])
    assert only.keys() == [("shared", 1), ("backbone/inner/conv3", 0)]
    np.testing.assert_array_equal(only[("shared", 1)], second)
    assert_unchanged(deep, before)


def test_layers_takes_the_one_matcher(deep):
    x = _x((2, 4))
    dense = kerasnb.trace(deep, x, layers=L.Dense).paths
    assert dense == ["shared", "backbone/inner/conv3", "backbone/mid_dense", "head"]
    assert kerasnb.trace(deep, x, layers="backbone/*").paths == [
        "backbone/mid_in", "backbone/inner", "backbone/inner/inner_in", "backbone/inner/conv3", "backbone/mid_dense"]
    assert kerasnb.trace(deep, x, layers=re.compile(r"conv\d$")).paths == ["backbone/inner/conv3"]
    assert kerasnb.trace(deep, x, layers=lambda path, layer: path.count("/") == 2).paths == [
        "backbone/inner/inner_in", "backbone/inner/conv3"]
    # the same selection as every other match=
    assert {e.target for e in kerasnb.replace_all(deep, "backbone/*", lambda layer: L.Identity()).edits} <= set(
        kerasnb.trace(deep, x, layers="backbone/*").paths)
    with pytest.raises(kerasnb.LayerNotFound, match=r"No layer named 'conv4'.*Did you mean 'conv3'"):
        kerasnb.trace(deep, x, layers="conv4")
    with pytest.raises(kerasnb.InvalidEdit, match="takes two arguments"):
        kerasnb.trace(deep, x, layers=lambda layer: True)


def test_keyword_called_blocks_of_a_hub_model(gpt2):
    x = _text()
    before = snapshot(gpt2)
    traced = kerasnb.trace(gpt2, x, layers=["transformer_layer_*", "layer_norm"])
    for name in ("transformer_layer_0", "transformer_layer_1", "layer_norm"):
        expected = to_numpy(keras.Model(gpt2.input, gpt2.get_layer(name).output)(x))
        np.testing.assert_array_equal(traced[name], expected)
    # a sub-layer a block calls inside its own call is no graph call: said, with what to trace
    with pytest.raises(kerasnb.LayerNotFound, match="trace the block"):
        kerasnb.trace(gpt2, x, layers="transformer_layer_0/self_attention")
    assert_unchanged(gpt2, before)


def test_stats_only_equals_the_statistics_of_the_full_trace(image_net):
    x = _x((12, 6, 6, 2), seed=3)
    batches = [x[:5], x[5:9], x[9:]]
    full = kerasnb.trace(image_net, batches).to_frame()  # the same batches: a backend may round by batch size
    running = kerasnb.trace(image_net, batches, stats_only=True)
    frame = running.to_frame()
    assert list(frame.columns) == ["path", "call", "type", "shape", "mean", "std", "min", "max", "zeros",
                                   "nonfinite"]
    assert frame.shape == full.shape
    assert list(frame["shape"]) == list(full["shape"]) == [(12, 6, 6, 2), (12, 6, 6, 4), (12, 6, 6, 4),
                                                           (12, 6, 6, 4), (12, 4), (12, 3)]
    columns = ["mean", "std", "min", "max", "zeros", "nonfinite"]
    np.testing.assert_allclose(frame[columns].to_numpy(float), full[columns].to_numpy(float), rtol=1e-9, atol=1e-12)
    relu = full.set_index("path").loc["relu"]
    values = kerasnb.trace(image_net, batches, layers="relu")["relu"]
    assert relu["zeros"] == pytest.approx((values == 0).mean()) and relu["zeros"] > 0
    assert relu["std"] == pytest.approx(values.astype("float64").std())
    with pytest.raises(kerasnb.InvalidEdit, match="stats_only=True"):
        running["relu"]


def test_inputs_dict_list_of_batches_and_tf_data(gpt2, image_net):
    x = _x((6, 6, 6, 2), seed=4)
    whole = kerasnb.trace(image_net, x, layers="head")["head"]
    np.testing.assert_array_equal(kerasnb.trace(image_net, [x[:2], x[2:]], layers="head")["head"], whole)
    np.testing.assert_array_equal(kerasnb.trace(image_net, (x, np.zeros(6)), layers="head")["head"], whole)
    tf = pytest.importorskip("tensorflow")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(6))).batch(4)
    np.testing.assert_array_equal(kerasnb.trace(image_net, dataset, layers="head")["head"], whole)
    with pytest.raises(kerasnb.IncompatibleShape, match=r"input shape is \(None, 6, 6, 2\)"):
        kerasnb.trace(image_net, _x((2, 5, 5, 2)))


def test_nonfinite_values_are_counted_apart_and_the_html_is_escaped():
    inputs = keras.Input((4,), name="in<b>")
    model = keras.Model(inputs, L.Activation("linear", name="lin<i>")(inputs), name="m&<s>")
    x = np.array([[1.0, np.nan, 3.0, 0.0]], "float32")
    row = kerasnb.trace(model, x).rows()[1]
    assert (row["mean"], row["min"], row["max"]) == (pytest.approx(4 / 3), 0.0, 3.0)
    assert (row["zeros"], row["nonfinite"]) == (0.25, 0.25)
    page = kerasnb.trace(model, x)._repr_html_()
    assert "lin&lt;i&gt;" in page and "m&amp;&lt;s&gt;" in page and "<i>" not in page and "<s>" not in page
