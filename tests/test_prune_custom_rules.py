"""Pruning through a user's own layers once a channel rule says how their variables slice."""
import doctest

import keras
import numpy as np
import pytest

import kerasnb
from kerasnb.pruning import ChannelRule, Cut, register_channel_rule


class Scale(keras.layers.Layer):
    """x * gamma: one weight per channel of the last axis."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="random_normal")

    def call(self, x):
        return x * self.gamma


class Project(keras.layers.Layer):
    """A Dense of its own: makes ``units`` channels from the last axis."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), initializer="random_normal")
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal")

    def call(self, x):
        return keras.ops.relu(keras.ops.matmul(x, self.w) + self.b)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@pytest.fixture(scope="module")
def model():
    x = keras.Input((5,), name="x")
    h = Project(6, name="project")(x)
    h = Scale(name="scale")(h)
    y = keras.layers.Dense(3, name="head")(h)
    return keras.Model(x, y)


@pytest.fixture
def rules():
    register_channel_rule(Scale, ChannelRule({"gamma": (Cut(0, "in"),)}))
    register_channel_rule(Project, ChannelRule({"w": (Cut(0, "in"), Cut(1, "out")), "b": (Cut(0, "out"),)},
                                               size_key="units"))
    yield
    register_channel_rule(Scale, None)
    register_channel_rule(Project, None)


def _outputs(model, name, x):
    return keras.Model(model.inputs, model.get_layer(name).output)(x)


def test_prune_through_registered_layers(model, rules):
    result = kerasnb.prune(model, "project", channels=[1, 4])
    new = result.model
    kept = [0, 2, 3, 5]
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    for name in ("project", "scale"):
        before = keras.ops.convert_to_numpy(_outputs(model, name, x))[:, kept]
        after = keras.ops.convert_to_numpy(_outputs(new, name, x))
        np.testing.assert_array_equal(before, after)
    assert new.get_layer("project").units == 4 and tuple(new.get_layer("scale").gamma.shape) == (4,)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(new.get_layer("scale").gamma),
                                  keras.ops.convert_to_numpy(model.get_layer("scale").gamma)[kept])
    assert [result.report.status(n) for n in ("project", "scale", "head")] == ["pruned", "pruned", "pruned"]
    assert model.get_layer("project").units == 6  # the user's model is unchanged


def test_without_a_rule_the_layer_is_refused(model):
    with pytest.raises(kerasnb.errors.UnprunableLayer, match="project"):
        kerasnb.prune(model, "project", channels=[1])
    register_channel_rule(Project, ChannelRule({"w": (Cut(0, "in"), Cut(1, "out")), "b": (Cut(0, "out"),)},
                                               size_key="units"))
    try:  # Scale has no rule: the channels stop there
        with pytest.raises(kerasnb.errors.UnprunableLayer, match="scale"):
            kerasnb.prune(model, "project", channels=[1])
    finally:
        register_channel_rule(Project, None)


def test_a_bad_rule_is_refused():
    with pytest.raises(kerasnb.errors.InvalidEdit, match="layer class"):
        register_channel_rule(Scale(), ChannelRule({}))
    with pytest.raises(kerasnb.errors.InvalidEdit, match="Cut"):
        register_channel_rule(Scale, ChannelRule({"gamma": (Cut(0, "sideways"),)}))
    with pytest.raises(kerasnb.errors.InvalidEdit, match="ChannelRule"):
        register_channel_rule(Scale, {"gamma": 0})


def test_the_docstring_example_runs():
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(register_channel_rule, globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).attempted > 0 and runner.summarize(verbose=False).failed == 0
