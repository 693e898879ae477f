"""A layer whose own config cannot make it again is made from its arguments or from its model's own
config, faithfully, or refused: never silently different (keras-hub's Qwen3, Swin, Flux blocks)."""

import os
import tempfile

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb.errors import UnsupportedLayer


@keras.saving.register_keras_serializable(package="kerasnb_own_config")
class DropsAnArgument(L.Layer):
    """Keeps ``scale`` but leaves it out of get_config(), so from_config() raises (Qwen3's head_dim)."""

    def __init__(self, units, scale, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale
        self.dense = L.Dense(units, name="dense")

    def call(self, x):
        return self.dense(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kerasnb_own_config")
class NoConfig(L.Layer):
    """get_config() raises and the arguments are kept nowhere (Flux's blocks, Swin's patch embedding)."""

    def __init__(self, units, activation, **kwargs):
        super().__init__(**kwargs)
        self.dense = L.Dense(units, activation=activation, name="dense")

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        raise NotImplementedError("NoConfig has no config")


@keras.saving.register_keras_serializable(package="kerasnb_own_config")
class Net(keras.Model):
    """A functional model whose own config (its constructor arguments) makes it again, as a
    keras-hub backbone's does."""

    def __init__(self, units=3, **kwargs):
        inputs = keras.Input((4,), name="x")
        h = DropsAnArgument(units, 0.5, name="drops")(inputs)
        h = NoConfig(units, keras.activations.tanh, name="no_config")(h)
        super().__init__(inputs, L.Dense(2, name="head")(h), **kwargs)
        self.units = units

    def get_config(self):
        return {"units": self.units, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _perturbed(model):
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(keras.ops.convert_to_numpy(v) + rng.normal(size=tuple(v.shape)).astype("float32"))
    return model


@pytest.fixture(scope="module")
def net_and_trip():
    keras.utils.set_random_seed(0)
    net = _perturbed(Net(name="net"))
    x = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
    before = [keras.ops.convert_to_numpy(v).copy() for v in net.weights]
    return net, x, before, kerasnb.apply(net, [])


def test_round_trip_is_bit_identical_through_the_other_routes(net_and_trip):
    net, x, before, result = net_and_trip
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(net(x)), keras.ops.convert_to_numpy(result.model(x)))
    assert {str(result.report.status(name)) for name in ("drops", "no_config", "head")} == {"kept"}
    assert result.model.count_params() == net.count_params()
    mine = {id(v) for v in net.weights}
    assert not any(id(v) in mine for v in result.model.weights)
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(v)) for a, v in zip(before, net.weights))
    notes = " ".join(result.notes)
    assert "'no_config'" in notes and "model's own config" in notes and "CANNOT be saved" in notes


def test_layer_taken_from_the_model_config_refuses_save_clearly(net_and_trip):
    _, _, _, result = net_and_trip
    with tempfile.TemporaryDirectory() as folder, pytest.raises(UnsupportedLayer, match="no_config.*save_weights"):
        result.model.save(os.path.join(folder, "edited.keras"))


def test_an_edit_of_the_result_takes_the_same_routes(net_and_trip):
    net, x, _, result = net_and_trip
    again = kerasnb.set_trainable(result.model, ["head"], False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(net(x)), keras.ops.convert_to_numpy(again.model(x)))
    assert str(again.report.status("no_config")) == "kept"


def test_layer_made_from_its_arguments_saves_and_loads():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    model = _perturbed(keras.Model(inputs, DropsAnArgument(3, 0.25, name="drops")(inputs), name="plain"))
    x = np.ones((2, 4), "float32")
    result = kerasnb.apply(model, [])
    out = keras.ops.convert_to_numpy(result.model(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), out)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "edited.keras")
        result.model.save(path)
        loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(out, keras.ops.convert_to_numpy(loaded(x)))


def test_no_route_is_refused_naming_the_layer():
    inputs = keras.Input((4,), name="x")
    plain = keras.Model(inputs, NoConfig(3, keras.activations.tanh, name="no_config")(inputs), name="plain")
    with pytest.raises(UnsupportedLayer, match="no_config.*Neither the arguments it was made with nor the config of its model"):
        kerasnb.apply(plain, [])
