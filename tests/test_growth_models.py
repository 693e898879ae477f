"""widen and deepen on real models and on layer types beyond the tutorial ones: the outputs stay
the same (1e-5, float32), or the refusal names the layer in the way and why."""

import keras
import numpy as np
import pytest
from keras import layers as L

from kerasnb import deepen, widen
from kerasnb.errors import InvalidEdit, UnsupportedLayer, UnwidenableLayer

from conftest import sample_input, to_numpy

TOLERANCE = 1e-5


def _out(model, x):
    return to_numpy(model(x, training=False))


def _max_diff(result, model, x):
    """The largest difference of the outputs, relative to the outputs' size when that is above 1
    (float32 rounding grows with the values summed)."""
    expected = _out(model, x)
    return float(np.abs(_out(result.model, x) - expected).max() / max(1.0, np.abs(expected).max()))


# ----------------------------------------------------------------------------- keras.applications


def test_densenet121_three_groups_one_rebuild(densenet121):
    """The stem reaches every Concatenate of the first dense block (and the BatchNorms over them at
    growing offsets); a growth-rate conv is one branch of those Concatenates; a bottleneck is plain."""
    x = sample_input(densenet121, batch=1)
    result = widen(densenet121, {"conv1_conv": 80, "conv2_block1_2_conv": 40, "conv3_block2_1_conv": 160}, seed=0)
    report = result.report
    # Every widened channel is read by pool3_conv at the latest; the rest of the network is as it
    # was. Compared there: a first eager run of all 428 layers costs half a minute on JAX.
    old_part, new_part = (keras.Model(m.input, m.get_layer("pool3_conv").output) for m in (densenet121, result.model))
    assert np.abs(_out(new_part, x) - _out(old_part, x)).max() <= TOLERANCE
    later = [layer.name for layer in densenet121.layers[densenet121.layers.index(densenet121.get_layer("pool3_conv")):]]
    assert [name for name in later if report.status(name) == "adapted"] == []
    assert report.row("conv1_conv").reason == "filters 64 -> 80 (16 copies of existing filters)"
    # conv2_block2_0_bn normalises [stem 64 | block1 32]: both widened groups, one BatchNorm
    assert tuple(result.model.get_layer("conv2_block2_0_bn").gamma.shape) == (80 + 40,)
    assert report.status("conv2_block2_0_bn") == "adapted"
    assert tuple(result.model.get_layer("pool2_conv").kernel.shape)[2] == 256 + 16 + 8
    assert report.status("conv3_block2_2_conv") == "adapted"
    assert report.status("pool3_conv") != "adapted"  # reads no widened channel: its weights as they were


def test_resnet50_one_residual_stage(resnet50):
    """Stage 2's four convs joined by its Adds widen together; the next stage reads the copies."""
    x = sample_input(resnet50, batch=1)
    result = widen(resnet50, "conv2_block2_3_conv", filters=320, seed=1)
    assert _max_diff(result, resnet50, x) <= TOLERANCE
    widened = ("conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv", "conv2_block3_3_conv")
    assert [result.model.get_layer(n).filters for n in widened] == [320] * 4
    assert all(name in result.notes[0].split(" from ")[0] for name in widened)
    assert result.report.row("conv3_block1_0_conv").reason == \
        "incoming weights of 64 copied filters divided among copies"
    assert result.report.status("conv2_block1_1_conv") == "kept"


# ----------------------------------------------------------------------------- keras-hub


@pytest.fixture(scope="module")
def gpt2():
    hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    return hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                   intermediate_dim=32, max_sequence_length=12)


def test_keras_hub_block_refusals_say_why_and_what_works(gpt2):
    """A keras-hub transformer block calls its layers inside its own call(): what reads its
    feed-forward units is out of kerasnb's sight, so widen refuses and says so; the block itself
    and the token embedding make no plain channels."""
    with pytest.raises(InvalidEdit, match=r"is a TransformerDecoder.*widen cannot reach inside it \(widening a layer "
                                          r"there would need the layers that read it widened too.*What would work"):
        widen(gpt2, "transformer_layer_0/feedforward_intermediate_dense", units=48)
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 'transformer_layer_0': only layers that make "
                                               r"channels can be widened .*TransformerDecoder is not one"):
        widen(gpt2, "transformer_layer_0", units=48)
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 'token_embedding'.*ReversibleEmbedding is not one"):
        widen(gpt2, "token_embedding", units=24)


# ----------------------------------------------------------------------------- layer types


def _randomised(model, seed=0):
    """Every float variable drawn at random (variances positive), so a copy that went wrong shows."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" in str(variable.dtype):
            value = rng.normal(size=variable.shape) * 0.5
            if "variance" in variable.path:
                value = np.abs(value) + 0.5
            variable.assign(value.astype("float32"))
    return model


def _chain(shape, *layers, dtype="float32"):
    """input -> layers -> Flatten (rank > 2) -> Dense(2) 'out'."""
    inputs = keras.Input(shape, dtype=dtype)
    x = inputs
    for layer in layers:
        x = layer(x)
    if len(x.shape) > 2:
        x = L.Flatten()(x)
    return _randomised(keras.Model(inputs, L.Dense(2, name="out")(x)))


WIDEN_EXACT = {  # name: (model maker, width keyword, new width); the target is always "t"
    "conv1d_causal_dilated": (lambda: _chain((8, 3), L.Conv1D(4, 3, padding="causal", dilation_rate=2, name="t"),
                                             L.Conv1D(3, 3, name="n")), "filters", 6),
    "conv3d": (lambda: _chain((5, 5, 5, 2), L.Conv3D(4, 3, name="t"), L.Conv3D(3, 2, name="n")), "filters", 6),
    "separable_conv1d_both_sides": (lambda: _chain((8, 3), L.SeparableConv1D(4, 3, depth_multiplier=2, name="t"),
                                                   L.SeparableConv1D(3, 3, depth_multiplier=2, name="n")),
                                    "filters", 6),
    "conv2d_transpose_strided": (lambda: _chain((4, 4, 3), L.Conv2DTranspose(4, 3, strides=2, name="t"),
                                                L.Conv2DTranspose(3, 3, name="n")), "filters", 6),
    "depthwise_conv1d_reader": (lambda: _chain((8, 3), L.Conv1D(4, 3, name="t"),
                                               L.DepthwiseConv1D(3, depth_multiplier=2), L.Conv1D(2, 1)),
                                "filters", 6),
    "simple_rnn": (lambda: _chain((5, 3), L.SimpleRNN(4, return_sequences=True, name="t"), L.SimpleRNN(3)),
                   "units", 7),
    "gru_reset_before": (lambda: _chain((5, 3), L.GRU(4, reset_after=False, return_sequences=True, name="t"),
                                        L.GRU(3)), "units", 7),
    "lstm_backwards": (lambda: _chain((5, 3), L.LSTM(4, go_backwards=True, return_sequences=True, name="t"),
                                      L.LSTM(3)), "units", 7),
    "bidirectional_sum": (lambda: _chain((5, 3), L.Bidirectional(L.LSTM(4, return_sequences=True),
                                                                 merge_mode="sum", name="t"), L.GRU(3)), "units", 6),
    "bidirectional_mul": (lambda: _chain((5, 3), L.Bidirectional(L.GRU(4), merge_mode="mul", name="t")), "units", 6),
    "bidirectional_reader": (lambda: _chain((5, 3), L.Dense(4, name="t"), L.Bidirectional(L.GRU(3))), "units", 6),
    "time_distributed_conv": (lambda: _chain((3, 6, 6, 2), L.TimeDistributed(L.Conv2D(4, 3), name="t"),
                                             L.TimeDistributed(L.Conv2D(3, 3))), "filters", 6),
    "embedding_masked_into_lstm": (lambda: _chain((5,), L.Embedding(10, 4, mask_zero=True, name="t"), L.LSTM(3),
                                                  dtype="int32"), "units", 6),
    "dense_rank4_batchnorm": (lambda: _chain((2, 5, 3), L.Dense(4, name="t"), L.BatchNormalization(),
                                             L.Dense(3)), "units", 6),
    "layernorm_over_another_axis": (lambda: _chain((5, 6), L.Dense(4, name="t"), L.LayerNormalization(axis=1)),
                                    "units", 6),
    "repeat_vector_into_lstm": (lambda: _chain((3,), L.Dense(4, name="t"), L.RepeatVector(3), L.LSTM(3)),
                                "units", 6),
}


@pytest.mark.parametrize("name", list(WIDEN_EXACT))
def test_widen_layer_types_exact(name):
    make, key, width = WIDEN_EXACT[name]
    model = make()
    x = sample_input(model, batch=2) if model.inputs[0].dtype == "float32" else \
        np.random.default_rng(0).integers(0, 10, (2,) + tuple(model.inputs[0].shape[1:]))
    result = widen(model, "t", seed=0, **{key: width})
    assert _max_diff(result, model, x) <= TOLERANCE
    assert result.report.status("t") == "adapted"


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="TensorFlow's CPU convolution does not run channels_first")
def test_widen_channels_first_conv_batchnorm_flatten_exact():
    """Channels on axis 1: the BatchNormalization's axis, and Flatten's (channel, row, column) order."""
    inputs = keras.Input((2, 6, 6))
    x = L.Conv2D(4, 3, data_format="channels_first", name="t")(inputs)
    x = L.BatchNormalization(axis=1, name="bn")(x)
    x = L.Conv2D(3, 3, data_format="channels_first", name="n")(x)
    model = _randomised(keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x))))
    x = sample_input(model, batch=2)
    for target, width in (("t", 7), ("n", 5)):
        assert _max_diff(widen(model, target, filters=width, seed=0), model, x) <= TOLERANCE, target


WIDEN_REFUSED = {  # name: (the layer after a Dense(4) 't', words of the refusal)
    "layer_normalization": (lambda: L.LayerNormalization(name="blocker"),
                            r"'blocker' \(LayerNormalization\) normalises over the widened channels"),
    "group_normalization": (lambda: L.GroupNormalization(groups=2, name="blocker"),
                            r"'blocker' \(GroupNormalization\), which normalises over them: the statistics"),
    "unit_normalization": (lambda: L.UnitNormalization(name="blocker"),
                           r"'blocker' \(UnitNormalization\), which normalises over them"),
    "softmax": (lambda: L.Softmax(name="blocker"), r"'blocker'"),
}


@pytest.mark.parametrize("name", list(WIDEN_REFUSED))
def test_widen_refuses_what_copies_would_change(name):
    make, words = WIDEN_REFUSED[name]
    model = _chain((6,), L.Dense(4, name="t"), make())
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 't'.*" + words + r".*Nothing was changed"):
        widen(model, "t", units=6)


@pytest.mark.parametrize("output_shape", [None, 5])
def test_widen_refuses_channels_read_by_attention(output_shape):
    inputs = keras.Input((5, 3))
    h = L.Dense(4, name="t")(inputs)
    attended = L.MultiHeadAttention(2, 3, output_shape=output_shape, name="mha")(h, h)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(attended)))
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 't'.*'mha' \(MultiHeadAttention\), an attention "
                                               r"layer: its query, key and value projections read them into its heads"):
        widen(model, "t", units=6)


DEEPEN_EXACT = {  # name: (model maker, layer= or None); deepen after "t"
    "conv1d_default": (lambda: _chain((8, 3), L.Conv1D(4, 3, activation="relu", name="t"), L.Conv1D(3, 3)), None),
    "conv3d_default": (lambda: _chain((5, 5, 5, 2), L.Conv3D(4, 3, name="t")), None),
    "dense_rank3_default": (lambda: _chain((5, 3), L.Dense(4, name="t"), L.Dense(3)), None),
    "lstm_sequences_default": (lambda: _chain((5, 3), L.LSTM(4, return_sequences=True, name="t"), L.GRU(3)), None),
    "time_distributed_default": (lambda: _chain((3, 6, 6, 2), L.TimeDistributed(L.Conv2D(4, 3), name="t")), None),
    "embedding_default": (lambda: _chain((5,), L.Embedding(10, 4, name="t"), dtype="int32"), None),
    "given_conv3d": (lambda: _chain((5, 5, 5, 2), L.Conv3D(4, 3, name="t")), lambda: L.Conv3D(4, 3, padding="same")),
    "given_separable": (lambda: _chain((6, 6, 3), L.Conv2D(4, 3, name="t")),
                        lambda: L.SeparableConv2D(4, 3, padding="same")),
    "given_depthwise1d": (lambda: _chain((8, 3), L.Conv1D(4, 3, name="t")),
                          lambda: L.DepthwiseConv1D(3, padding="same")),
    "given_dense_rank3": (lambda: _chain((5, 3), L.Dense(4, name="t")), lambda: L.Dense(4)),
}


@pytest.mark.parametrize("name", list(DEEPEN_EXACT))
def test_deepen_layer_types_exact(name):
    make, layer = DEEPEN_EXACT[name]
    model = make()
    x = sample_input(model, batch=2) if model.inputs[0].dtype == "float32" else \
        np.random.default_rng(0).integers(0, 10, (2,) + tuple(model.inputs[0].shape[1:]))
    result = deepen(model, after="t", layer=layer() if layer else None)
    assert _max_diff(result, model, x) <= TOLERANCE
    assert [row.reason for row in result.report if str(row.status) == "new"] == ["identity"]


@pytest.mark.parametrize("make", [lambda: L.GroupNormalization(2), lambda: L.UnitNormalization(),
                                  lambda: L.LayerNormalization(), lambda: L.LSTM(4, return_sequences=True),
                                  lambda: L.MultiHeadAttention(2, 2)],
                         ids=["GroupNormalization", "UnitNormalization", "LayerNormalization", "LSTM",
                              "MultiHeadAttention"])
def test_deepen_refuses_layers_that_are_never_the_identity(make):
    layer = make()
    model = _chain((5, 3), L.Dense(4, name="t"))
    with pytest.raises(UnsupportedLayer, match=rf"cannot set a {type(layer).__name__} to the identity.*What works"):
        deepen(model, after="t", layer=layer)
