"""kerasnb.count_macs / layer_macs / total_macs / layer_cost: MACs per layer against hand formulas."""

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb import _graph, flops


def one_layer(layer, shape):
    inputs = keras.Input(shape, name="x")
    return keras.Model(inputs, layer(inputs), name="one")


def macs_of(layer, shape):
    return flops.layer_macs(one_layer(layer, shape))[layer.name]


# ----------------------------------------------------------------------------- convolutions


class TestConvolutions:
    def test_conv2d_stride_and_padding(self):
        """Output positions x filters x input channels x kernel size, after stride and padding."""
        assert macs_of(L.Conv2D(4, 3, strides=2, padding="valid", name="c"), (9, 9, 3)) == 4 * 4 * 4 * 3 * 9
        assert macs_of(L.Conv2D(4, 3, strides=2, padding="same", name="c"), (9, 9, 3)) == 5 * 5 * 4 * 3 * 9
        assert macs_of(L.Conv2D(4, (3, 1), dilation_rate=(2, 1), name="c"), (9, 9, 3)) == 5 * 9 * 4 * 3 * 3

    def test_conv1d_conv3d_and_channels_first(self):
        """Every rank, and the channel axis taken from data_format."""
        assert macs_of(L.Conv1D(6, 5, name="c"), (20, 2)) == 16 * 6 * 2 * 5
        assert macs_of(L.Conv3D(2, 2, name="c"), (4, 4, 4, 3)) == 27 * 2 * 3 * 8
        assert macs_of(L.Conv2D(4, 3, data_format="channels_first", name="c"), (3, 9, 7)) == 7 * 5 * 4 * 3 * 9

    def test_grouped_conv(self):
        """Each filter reads only its group's input channels."""
        assert macs_of(L.Conv2D(16, 3, groups=4, name="c"), (6, 6, 8)) == 16 * 16 * (8 // 4) * 9

    def test_depthwise_with_multiplier(self):
        assert macs_of(L.DepthwiseConv2D(3, depth_multiplier=3, name="c"), (7, 7, 4)) == 25 * 4 * 3 * 9
        assert macs_of(L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", name="c"), (10, 5)) == 10 * 5 * 2 * 3

    def test_separable(self):
        """The depthwise part, then the pointwise part on channels x multiplier."""
        expected = 25 * 4 * 2 * 9 + 25 * 4 * 2 * 6
        assert macs_of(L.SeparableConv2D(6, 3, depth_multiplier=2, name="c"), (7, 7, 4)) == expected
        assert macs_of(L.SeparableConv1D(6, 3, name="c"), (10, 4)) == 8 * 4 * 3 + 8 * 4 * 6

    def test_transpose(self):
        """Every input position scatters the whole kernel: input positions x in x filters x kernel."""
        assert macs_of(L.Conv2DTranspose(5, 3, strides=2, name="c"), (4, 6, 2)) == 24 * 2 * 5 * 9
        assert macs_of(L.Conv1DTranspose(5, 4, strides=2, padding="same", name="c"), (6, 3)) == 6 * 3 * 5 * 4
        assert macs_of(L.Conv3DTranspose(2, 2, name="c"), (2, 2, 2, 3)) == 8 * 3 * 2 * 8


# ----------------------------------------------------------------------------- dense, attention, recurrent


class TestDenseAttentionRecurrent:
    def test_dense_on_sequences(self):
        """A Dense on (T, d) runs at each of the T positions."""
        assert macs_of(L.Dense(7, name="d"), (5,)) == 35
        assert macs_of(L.Dense(7, name="d"), (3, 4, 5)) == 12 * 5 * 7

    def test_einsum_dense(self):
        assert macs_of(L.EinsumDense("abc,cd->abd", output_shape=(None, 5), name="e"), (4, 6)) == 4 * 6 * 5
        assert macs_of(L.EinsumDense("abc,cde->abde", output_shape=(None, 2, 5), name="e"), (4, 6)) == 4 * 6 * 2 * 5
        assert macs_of(L.EinsumDense("...b,bc->...c", output_shape=5, name="e"), (3, 4, 6)) == 12 * 6 * 5

    def test_multi_head_attention_with_its_sequence_lengths(self):
        """Projections, QK^T, attention x values and the output projection, with query length 5, key length 7."""
        q, v, k = keras.Input((5, 8), name="q"), keras.Input((7, 6), name="v"), keras.Input((7, 4), name="k")
        mha = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4, output_shape=10, name="mha")
        model = keras.Model([q, v, k], mha(q, v, key=k), name="att")
        heads, tq, tk = 2, 5, 7
        expected = (tq * 8 * heads * 3 + tk * 4 * heads * 3 + tk * 6 * heads * 4  # projections
                    + heads * tq * tk * 3 + heads * tq * tk * 4  # QK^T and attention x values
                    + tq * heads * 4 * 10)  # output projection
        assert flops.layer_macs(model)["mha"] == expected

    def test_gated_attention_counts_the_gate(self):
        """use_gate=True adds a projection of the query to heads x value size."""
        q = keras.Input((5, 8))
        plain = flops.layer_macs(keras.Model(q, L.MultiHeadAttention(2, 3, value_dim=4, name="mha")(q, q)))["mha"]
        gated = flops.layer_macs(keras.Model(q, L.MultiHeadAttention(2, 3, value_dim=4, use_gate=True,
                                                                     name="mha")(q, q)))["mha"]
        assert gated - plain == 5 * 8 * 2 * 4

    def test_self_attention_shared_layer_sums_calls(self):
        """A layer called twice counts both calls, with each call's own lengths."""
        a, b = keras.Input((4, 6), name="a"), keras.Input((9, 6), name="b")
        mha = L.MultiHeadAttention(num_heads=3, key_dim=2, name="mha")
        model = keras.Model([a, b], [mha(a, a), mha(b, b)])

        def one(t):
            return 3 * t * 6 * 2 * 3 + 3 * t * t * 2 * 2 + t * 3 * 2 * 6

        assert flops.layer_macs(model)["mha"] == one(4) + one(9)

    def test_recurrent_layers(self):
        """Per step: gates x units x (input dim + units)."""
        steps, d, units = 6, 5, 7
        assert macs_of(L.LSTM(units, name="r"), (steps, d)) == steps * 4 * units * (d + units)
        assert macs_of(L.GRU(units, name="r"), (steps, d)) == steps * 3 * units * (d + units)
        assert macs_of(L.SimpleRNN(units, return_sequences=True, name="r"), (steps, d)) == steps * units * (d + units)
        bi = L.Bidirectional(L.LSTM(units), name="r")
        assert macs_of(bi, (steps, d)) == 2 * steps * 4 * units * (d + units)

    def test_time_distributed_and_embedding(self):
        assert macs_of(L.TimeDistributed(L.Dense(3), name="td"), (4, 5)) == 4 * 5 * 3
        assert macs_of(L.TimeDistributed(L.Conv2D(2, 3), name="td"), (3, 5, 5, 1)) == 3 * 9 * 2 * 1 * 9
        assert macs_of(L.Embedding(100, 8, name="emb"), (12,)) == 0


# ----------------------------------------------------------------------------- the table and the walk


def small_cnn():
    inputs = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="cnn")


class TestTable:
    def test_frame_columns_rows_and_total(self):
        """One row per layer (inputs left out), the total in attrs; importable lazily from kerasnb."""
        frame = kerasnb.count_macs(small_cnn())
        assert list(frame.columns) == ["layer", "type", "macs", "params", "counted"]
        assert list(frame["layer"]) == ["conv", "bn", "gap", "head"]
        assert dict(zip(frame["layer"], frame["macs"])) == {"conv": 64 * 4 * 27, "bn": 0, "gap": 0, "head": 8}
        assert frame.set_index("layer").loc["conv", "params"] == 4 * 27 + 4
        assert frame.attrs["total"] == 64 * 4 * 27 + 8 == flops.total_macs(small_cnn())

    def test_nested_model_by_path_counted_per_call(self):
        inner_in = keras.Input((6,))
        inner = keras.Model(inner_in, L.Dense(4, name="proj")(inner_in), name="backbone")
        a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
        out = L.Concatenate(name="cat")([inner(a), inner(b)])
        model = keras.Model([a, b], L.Dense(3, name="head")(out))
        assert flops.layer_macs(model) == {"backbone/proj": 2 * 24, "cat": 0, "head": 24}

    def test_nested_backbone_of_any_size_takes_the_outer_size(self):
        """A backbone built for any resolution, called on 10x10 images, counts at 10x10."""
        b_in = keras.Input((None, None, 3))
        backbone = keras.Model(b_in, L.Conv2D(2, 3, padding="same", name="c")(b_in), name="backbone")
        inputs = keras.Input((10, 10, 3))
        model = keras.Model(inputs, backbone(inputs))
        assert flops.layer_macs(model)["backbone/c"] == 100 * 2 * 27

    def test_unknown_size_refused_then_given(self):
        """An unknown spatial size names the layer and how to give one; input_shape= fixes it."""
        inputs = keras.Input((None, None, 3), name="img")
        model = keras.Model(inputs, L.Conv2D(4, 3, name="conv")(inputs))
        with pytest.raises(flops.UnknownShape, match=r"'conv'.*unknown spatial size.*count_macs\(model, "
                                                     r"input_shape=\(224, 224, 3\)\).*Received: input_shape=None"):
            kerasnb.count_macs(model)
        assert flops.total_macs(model, input_shape=(10, 12, 3)) == 8 * 10 * 4 * 27
        assert isinstance(flops.UnknownShape("x"), kerasnb.SurgeryError)

    def test_input_shape_does_not_touch_the_model(self):
        inputs = keras.Input((None, 3), name="seq")
        model = keras.Model(inputs, L.Dense(2, name="d")(L.Conv1D(4, 3, name="c")(inputs)))
        before = [_graph.call_count(layer) for layer in model.layers]
        assert flops.layer_macs(model, input_shape=(10, 3)) == {"c": 8 * 4 * 9, "d": 8 * 4 * 2}
        assert [_graph.call_count(layer) for layer in model.layers] == before
        assert model.output.shape == (None, None, 2)

    def test_bad_input_shape(self):
        with pytest.raises(kerasnb.SurgeryError, match=r"3 sizes.*Received: input_shape=\(8, 8\)"):
            flops.total_macs(small_cnn(), input_shape=(8, 8))
        with pytest.raises(kerasnb.SurgeryError, match=r"axis 3 is fixed at 3, and input_shape gives 5.*change_input"):
            flops.total_macs(small_cnn(), input_shape=(8, 8, 5))
        with pytest.raises(kerasnb.SurgeryError, match=r"one such shape per input \(1 here\)"):
            flops.total_macs(small_cnn(), input_shape=[(8, 8, 3), (8, 8, 3)])

    def test_custom_layer_with_weights_is_marked_uncounted(self):
        class Scale(L.Layer):
            def build(self, shape):
                self.w = self.add_weight(shape=(shape[-1], shape[-1]))

            def call(self, x):
                return keras.ops.matmul(x, self.w)

        frame = kerasnb.count_macs(one_layer(Scale(name="custom"), (4,)))
        row = frame.set_index("layer").loc["custom"]
        assert row["macs"] == 0 and not row["counted"]


# ----------------------------------------------------------------------------- after pruning


class TestScaling:
    def test_conv_dense_scale_with_both_depthwise_with_input(self):
        inputs = keras.Input((6, 6, 8))
        x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
        x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
        x = L.GlobalAveragePooling2D(name="gap")(x)
        model = keras.Model(inputs, L.Dense(4, name="head")(x))
        costs = flops.layer_cost(model)
        conv, dw, head = costs["conv"], costs["dw"], costs["head"]
        assert (conv.in_channels, conv.out_channels, dw.in_channels, dw.out_channels) == (8, 8, 8, 8)
        assert conv.macs_at(0.5, 0.5) == conv.macs / 4
        assert dw.macs_at(0.5, 1.0) == dw.macs / 2 and dw.macs_at(1.0, 0.5) == dw.macs
        # conv keeps half its filters; dw and head read half as many channels
        after = flops.macs_with_channels(costs, in_fraction={"dw": 0.5, "head": 0.5}, out_fraction={"conv": 0.5})
        assert after == conv.macs // 2 + dw.macs // 2 + head.macs // 2
        assert flops.macs_with_channels(model) == flops.total_macs(model)

    def test_grouped_conv_losing_whole_groups(self):
        """Half the groups gone: half the filters, each still reading in/groups channels."""
        cost = flops.layer_cost(one_layer(L.Conv2D(8, 1, groups=4, name="g"), (3, 3, 8)))["g"]
        assert cost.macs == 9 * 8 * 2
        assert cost.macs_at(0.5, 0.5, groups_fraction=0.5) == cost.macs / 2  # 2 groups of 2 filters
        assert cost.macs_at(0.5, 0.5) == cost.macs / 4  # 4 groups of 1 filter reading 1 channel each

    def test_recurrent_term_scales_with_units_squared(self):
        cost = flops.layer_cost(one_layer(L.LSTM(8, name="r"), (5, 4)))["r"]
        assert cost.macs_at(1.0, 0.5) == 5 * 4 * 8 * 4 * 0.5 + 5 * 4 * 8 * 8 * 0.25

    def test_unknown_layer_in_fraction_refused(self):
        with pytest.raises(kerasnb.LayerNotFound, match="Did you mean 'conv'"):
            flops.macs_with_channels(small_cnn(), in_fraction={"cnv": 0.5})


# ----------------------------------------------------------------------------- a published figure


@pytest.fixture(scope="session")
def mobilenet_v2():
    return keras.applications.MobileNetV2(weights=None)


def test_mobilenet_v2_matches_published_300m(mobilenet_v2):
    """MobileNetV2 1.0 at 224x224: about 300M multiply-adds (Sandler et al., 2018, table 3)."""
    total = flops.total_macs(mobilenet_v2)
    assert abs(total - 300e6) / 300e6 < 0.03
    frame = kerasnb.count_macs(mobilenet_v2)
    assert frame["counted"].all()
    assert frame.attrs["total"] == total
    assert frame.set_index("layer").loc["predictions", "macs"] == 1280 * 1000


def test_any_resolution_model_counts_at_the_given_size():
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(None, None, 3))
    with pytest.raises(flops.UnknownShape, match="Conv1"):
        flops.total_macs(model)
    at_224 = flops.total_macs(model, input_shape=(224, 224, 3))
    at_112 = flops.total_macs(model, input_shape=(112, 112, 3))
    assert abs(at_224 - (300e6 - 1280 * 1000)) / 300e6 < 0.03
    assert 0.22 < at_112 / at_224 < 0.25  # about a quarter of the positions (7x7 -> 4x4 at the end)
    np.testing.assert_equal(model.input_shape, (None, None, None, 3))
