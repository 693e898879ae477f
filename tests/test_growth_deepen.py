"""deepen (Net2DeeperNet, issue 20 item 2): a layer set to the identity goes in; the model computes what it did."""

import keras
import numpy as np
import pytest
from keras import layers as L

from kerasnb import deepen
from kerasnb.errors import IncompatibleShape, InvalidEdit, UnsupportedLayer


def _mlp():
    inputs = keras.Input((8,), name="x")
    x = L.Dense(6, activation="relu", name="h1")(inputs)
    x = L.Dense(6, name="h2")(x)
    inner_in = keras.Input((6,), name="inner_x")
    inner = keras.Model(inner_in, L.Dense(6, name="core")(inner_in), name="inner")
    x = inner(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x), name="mlp")


def _cnn():
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = L.Conv2D(4, 3, name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="cnn")


def _seq():
    inputs = keras.Input((10, 4), name="tokens")
    x = L.Conv1D(5, 3, padding="same", name="s1")(inputs)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="seq")


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    built = {"mlp": _mlp(), "cnn": _cnn(), "seq": _seq()}
    inputs = {"mlp": rng.normal(size=(4, 8)), "cnn": rng.normal(size=(2, 8, 8, 3)), "seq": rng.normal(size=(3, 10, 4))}
    out = {}
    for name, model in built.items():
        x = inputs[name].astype("float32")
        out[name] = (model, x, np.asarray(model(x)), [np.array(w) for w in model.get_weights()])
    return out


CASES = [  # (model, after, layer, activation, type of the added layer)
    ("mlp", "h2", None, None, "Dense"),
    ("mlp", "h1", None, "relu", "Dense"),
    ("mlp", "h2", lambda: L.Dense(6, name="square"), None, "Dense"),
    ("mlp", "inner/core", None, None, "Dense"),
    ("cnn", "c2", None, None, "Conv2D"),
    ("cnn", "c1", None, "relu", "Conv2D"),
    ("cnn", "c1", lambda: L.Conv2D(4, 3, padding="same", dilation_rate=2), None, "Conv2D"),
    ("cnn", "c2", lambda: L.BatchNormalization(epsilon=1e-3), None, "BatchNormalization"),
    ("cnn", "c2", lambda: L.DepthwiseConv2D(3, padding="same"), None, "DepthwiseConv2D"),
    ("seq", "s1", None, None, "Conv1D"),
    ("seq", "s1", lambda: L.Conv1D(5, 4, padding="causal", dilation_rate=2), None, "Conv1D"),
    ("seq", "tokens", None, None, "Conv1D"),
]


@pytest.mark.parametrize("name, after, make, activation, kind", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[4]}-{c[3] or 'given' if c[2] else c[3] or 'linear'}" for c in CASES])
def test_the_deeper_model_computes_what_the_model_did(models, name, after, make, activation, kind):
    model, x, before, weights = models[name]
    result = deepen(model, after, make() if make else None, activation=activation)
    diff = np.abs(np.asarray(result.model(x)) - before).max()
    assert diff <= 1e-5, diff
    new = [row for row in result.report if str(row.status) == "new"]
    assert [(row.type, row.reason) for row in new] == [(kind, "identity")]
    # the original is unchanged: its weights, its output, no new layer
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(weights, model.get_weights()))
    assert np.array_equal(np.asarray(model(x)), before)


def test_the_identity_is_not_trivial_and_trains(models):
    """A random start of the same layer would change the outputs; one training step changes the new layer."""
    model, x, before, weights = models["cnn"]
    result = deepen(model, "c1", activation="relu")
    added = result.model.get_layer("c1_identity")
    kernel = np.array(added.kernel)
    assert kernel.shape == (1, 1, 4, 4) and np.array_equal(kernel[0, 0], np.eye(4))
    new = result.model
    new.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    new.train_on_batch(x, np.ones((len(x), 2), "float32"))
    assert not np.array_equal(np.array(added.kernel), kernel)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(weights, model.get_weights()))
    assert np.array_equal(np.asarray(model(x)), before)


def test_relu_after_a_producer_that_can_be_negative_is_refused(models):
    model = models["mlp"][0]
    with pytest.raises(InvalidEdit, match="never negative.*'h2'"):
        deepen(model, "h2", activation="relu")
    with pytest.raises(InvalidEdit, match="never negative"):
        deepen(model, "h2", L.ReLU())


def test_a_non_square_dense_is_refused_naming_the_square_one(models):
    with pytest.raises(IncompatibleShape, match=r"units=3.*width is 6.*Dense\(6\)"):
        deepen(models["mlp"][0], "h2", L.Dense(3))


@pytest.mark.parametrize("layer, words", [
    (L.LayerNormalization(), "LayerNormalization divides each sample"),
    (L.Conv2D(4, 3, strides=2, padding="same"), "strides"),
    (L.Conv2D(4, 2, padding="same"), "odd kernel size"),
    (L.Dropout(0.5), "What works: Dense"),
])
def test_layers_that_cannot_start_as_the_identity_are_refused(models, layer, words):
    with pytest.raises(UnsupportedLayer, match=words):
        deepen(models["cnn"][0], "c2", layer)


def test_a_given_layer_with_weights_is_copied_not_used_and_said(models):
    model, x, before, _ = models["mlp"]
    given = L.Dense(6, name="mine")
    given.build((None, 6))
    kept = np.array(given.kernel)
    result = deepen(model, "h2", given)
    assert np.abs(np.asarray(result.model(x)) - before).max() <= 1e-5
    assert np.array_equal(np.array(given.kernel), kept)
    assert any("not used" in note for note in result.notes)


def test_after_the_output_layer_the_notes_say_the_output_moved(models):
    model, x, before, _ = models["mlp"]
    result = deepen(model, "out")
    assert np.abs(np.asarray(result.model(x)) - before).max() <= 1e-5
    assert any("now comes from 'out_identity'" in note for note in result.notes)


def test_its_edit_replays_with_the_same_reason_and_outputs(models):
    """The editor keeps a step as its edits and applies them again: the identity and its reason survive."""
    import kerasnb

    model, x, before, _ = models["seq"]
    edits = deepen(model, "s1").edits
    again = kerasnb.apply(model, list(edits))
    assert [(row.layer, row.reason) for row in again.report if str(row.status) == "new"] == [("s1_identity", "identity")]
    assert np.abs(np.asarray(again.model(x)) - before).max() <= 1e-5
