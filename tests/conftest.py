"""Model factories shared by the tests. Small models are built per test; big ones once per session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers as L  # noqa: E402


def seed_mlp():
    """Seed example 1's original model, with the layer names Keras gives in a fresh session."""
    inputs = keras.Input(shape=(10,), name="input_layer")
    x = L.Dense(64, activation="relu", name="dense")(inputs)
    x = L.Dense(32, activation="relu", name="dense_1")(x)
    outputs = L.Dense(1, activation="sigmoid", name="dense_2")(x)
    return keras.Model(inputs, outputs, name="mlp")


def residual_net():
    """Conv stem, a residual block joined by Add, a Concatenate branch, two heads."""
    inputs = keras.Input((8, 8, 3), name="image")
    stem = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="res_conv1")(stem)
    x = L.BatchNormalization(name="res_bn")(x)
    x = L.Conv2D(8, 3, padding="same", name="res_conv2")(x)
    x = L.Add(name="res_add")([stem, x])
    x = L.Activation("relu", name="res_relu")(x)
    branch = L.Conv2D(4, 1, name="branch")(x)
    x = L.Concatenate(name="concat")([x, branch])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.3, name="drop")(x, training=False)
    cls = L.Dense(5, activation="softmax", name="cls")(x)
    reg = L.Dense(1, name="reg")(x)
    return keras.Model(inputs, {"cls": cls, "reg": reg}, name="resnetish")


def two_input_net():
    a = keras.Input((6,), name="a_in")
    b = keras.Input((4,), name="b_in")
    x = L.Dense(8, name="a_dense")(a)
    y = L.Dense(8, name="b_dense")(b)
    z = keras.ops.relu(x + y)  # raw keras.ops calls in the graph
    z = L.Dense(3, name="joint")(z)
    return keras.Model([a, b], z, name="two_in")


def shared_net():
    inputs = keras.Input((4,), name="x")
    shared = L.Dense(4, activation="tanh", name="shared")
    h = shared(inputs)
    h2 = shared(h)
    out = L.Dense(2, name="out")(L.Concatenate(name="cat")([h, h2]))
    return keras.Model(inputs, out, name="shared_net")


def nested_net():
    inner = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, activation="relu", name="inner_a"), L.Dense(4, name="inner_b")],
        name="encoder",
    )
    inputs = keras.Input((6,), name="x")
    h = inner(inputs)
    out = L.Dense(2, name="head")(h)
    return keras.Model(inputs, out, name="outer")


def sequential_net():
    return keras.Sequential(
        [keras.Input((5,)), L.Dense(7, activation="relu", name="s1"), L.Dropout(0.1, name="sdrop"),
         L.Dense(3, name="s2")],
        name="seq",
    )


FACTORIES = {
    "seed_mlp": seed_mlp,
    "residual": residual_net,
    "two_input": two_input_net,
    "shared": shared_net,
    "nested": nested_net,
    "sequential": sequential_net,
}


def to_numpy(x):
    """A tensor or variable of any backend as a numpy array (torch's need detaching first)."""
    return keras.ops.convert_to_numpy(x)


def sample_input(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [tuple(t.shape) for t in model.inputs]
    xs = [rng.normal(size=(batch,) + s[1:]).astype("float32") for s in shapes]
    return xs[0] if len(xs) == 1 else xs


def snapshot(model):
    """What must not change in a model the user hands us: layers, weights, graph nodes."""
    every = list(_all_layers(model))
    return {
        "layers": [(l.name, type(l).__name__, l.trainable) for l in every],
        "weights": [np.array(w) for w in model.get_weights()],
        "nodes": [len(l._inbound_nodes) for l in every],
    }


def _all_layers(model):
    """Layers of a model and, recursively, of the models nested in it."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after["layers"] == before["layers"]
    assert after["nodes"] == before["nodes"]
    assert len(after["weights"]) == len(before["weights"])
    for a, b in zip(after["weights"], before["weights"]):
        np.testing.assert_array_equal(a, b)


def layer_output(model, name, x):
    """The output of layer `name` (top level) on input x."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # the structure calls give
    probe = keras.Model(inputs, model.get_layer(name).output)
    return to_numpy(probe(x))


@pytest.fixture
def make():
    keras.utils.set_random_seed(0)
    return lambda kind: FACTORIES[kind]()


@pytest.fixture(scope="session")
def resnet50():
    return keras.applications.ResNet50(weights=None)


@pytest.fixture(scope="session")
def mobilenetv2():
    return keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))


@pytest.fixture(scope="session")
def densenet121():
    return keras.applications.DenseNet121(weights=None, input_shape=(64, 64, 3))


@pytest.fixture(scope="session")
def efficientnetb0():
    return keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3))
