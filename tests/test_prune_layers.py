"""kerasnb.prune on every layer and graph shape of issue 12 (layer coverage).

One check does the work (:func:`check_prune`): give every variable random values, make the
chosen channels dead in a copy (the producers' outgoing slices and what must go with them set
to zero), prune those channels from the original, and the pruned model computes what the
zeroed copy computes. The user's model is unchanged afterwards.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb import _channels, _slicing
from kerasnb.errors import InvalidEdit, UnprunableLayer

from conftest import assert_unchanged, snapshot

RTOL, ATOL = 1e-4, 1e-5
BACKEND = keras.backend.backend()
# TensorFlow's CPU kernels have no channels_first convolution: those models are pruned on every
# backend, their outputs compared where they run (JAX).
CF_CONV_RUNS = BACKEND != "tensorflow"


# ----------------------------------------------------------------------------- the one check


def randomize(model, seed=0):
    """Distinct random values in every variable (biases and BatchNormalization statistics included)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        name = v.path.split("/")[-1]
        if name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif np.issubdtype(np.dtype(keras.backend.standardize_dtype(v.dtype)), np.floating):
            value = rng.normal(0, 0.5, shape)
        else:
            continue
        v.assign(value.astype(keras.backend.standardize_dtype(v.dtype)))
    return model


def _layer(model, path):
    return kerasnb._targets.resolve(model, path, what="test").layer


def zero_channels(model, target, channels, allow_output_change=False):
    """Make ``channels`` of ``target``'s group dead in ``model``: every producer's outgoing slices
    (kernel columns, bias, each recurrent gate, recurrent rows) and what would bring them back
    after it (BatchNormalization beta and mean, depthwise biases) become zero."""
    analysis = _channels.analyse(model)
    _, group = _slicing.group_of(model, analysis, target, allow_output_change=allow_output_change)
    n = group.channels
    idx = np.unique([c % n for c in channels])
    for name in group.producers:
        _zero(_layer(model, name), "out", idx)
    for name in group.channelwise:
        layout = analysis.in_layout[name]
        if len(layout) == 1 and layout[0][0] == 1 and len(layout[0][1]) == 1:
            _zero(_layer(model, name), "in", idx, only=("beta", "moving_mean", "bias"))
    return model


def _zero(layer, role, idx, only=None):
    rule = _channels.rule_for(layer)
    for attr, cuts in rule.variables.items():
        if only is not None and attr.split(".")[-1] not in only:
            continue
        variable = _channels.variable_at(layer, attr)
        if variable is None:
            continue
        value = np.array(keras.ops.convert_to_numpy(variable))
        for cut in cuts:
            if cut.role == role:
                where = [slice(None)] * value.ndim
                where[cut.axis] = _slicing._indices(cut, variable, idx)
                value[tuple(where)] = 0
        variable.assign(value)


def run(model, x):
    out = model(x, training=False)
    return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(out)]


def check_prune(model, target, channels, x, *, allow_output_change=False, expect=None, compute=True, seed=0):
    """Prune ``channels`` of ``target``; the result computes what a copy with those channels zeroed
    computes (``expect`` maps the zeroed copy's outputs when the outputs narrow). Returns the result."""
    randomize(model, seed)
    zeroed = zero_channels(kerasnb.apply(model, []).model, target, channels, allow_output_change)
    before = snapshot(model)
    result = kerasnb.prune(model, target, channels=channels, allow_output_change=allow_output_change)
    assert_unchanged(model, before)
    if compute:
        want = run(zeroed, x)
        if expect is not None:
            want = expect(want)
        got = run(result.model, x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
        # A check that can fail: the unzeroed original differs (the channels carried signal).
        assert any(not np.allclose(a, b, rtol=RTOL, atol=ATOL) if a.shape == b.shape else True
                   for a, b in zip(run(model, x), got))
    status = {row.layer: row.status for row in result.report.rows}
    assert "reinitialized" not in status.values(), status  # every layer whose variables changed shape was sliced
    whole = len(set(c % _n_channels(model, target) for c in channels)) == _n_channels(model, target)
    assert status[_slicing.path_of(model, target)] == ("removed" if whole else "pruned")
    return result


def _n_channels(model, target):
    return _slicing.group_of(model, _channels.analyse(model), target, allow_output_change=True)[1].channels


def data(shape, seed=1, batch=2):
    return np.random.default_rng(seed).normal(size=(batch,) + tuple(shape)).astype("float32")


# ----------------------------------------------------------------------------- channels_first


def cf_net_2d(flatten_format):
    inputs = keras.Input((3, 8, 8))
    x = L.Conv2D(6, 3, padding="same", data_format="channels_first", name="conv1")(inputs)
    x = L.BatchNormalization(axis=1, name="bn1")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D(data_format="channels_first")(x)
    x = L.ZeroPadding2D(1, data_format="channels_first")(x)
    x = L.Cropping2D(1, data_format="channels_first")(x)
    x = L.UpSampling2D(data_format="channels_first")(x)
    x = L.AveragePooling2D(2, data_format="channels_first")(x)
    x = L.SeparableConv2D(5, 3, depth_multiplier=2, data_format="channels_first", name="sep")(x)
    x = L.DepthwiseConv2D(1, data_format="channels_first", name="dw")(x)
    x = L.Conv2DTranspose(4, 3, data_format="channels_first", name="convt")(x)
    x = L.Flatten(data_format=flatten_format)(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x))


class TestChannelsFirst:
    @pytest.mark.parametrize("flatten_format", ["channels_first", "channels_last"])
    @pytest.mark.parametrize("target, channels", [("conv1", [0, 4]), ("sep", [1, -1]), ("convt", [2])])
    def test_2d_chain(self, flatten_format, target, channels):
        """Conv, BatchNorm(axis=1), pooling, padding, cropping, upsampling, separable, depthwise, transpose, Flatten."""
        check_prune(cf_net_2d(flatten_format), target, channels, data((3, 8, 8)), compute=CF_CONV_RUNS)

    def test_1d_and_global_pooling(self):
        inputs = keras.Input((4, 10))
        x = L.Conv1D(6, 3, data_format="channels_first", name="c1")(inputs)
        x = L.MaxPooling1D(data_format="channels_first")(x)
        x = L.SeparableConv1D(5, 1, data_format="channels_first", name="sep1")(x)
        x = L.DepthwiseConv1D(2, data_format="channels_first", name="dw1")(x)
        x = L.Conv1DTranspose(4, 2, data_format="channels_first", name="t1")(x)
        x = L.GlobalAveragePooling1D(data_format="channels_first")(x)
        model = keras.Model(inputs, L.Dense(2, name="head")(x))
        for target, channels in (("c1", [0, 5]), ("sep1", [3]), ("t1", [0])):
            check_prune(keras.models.clone_model(model), target, channels, data((4, 10)), compute=CF_CONV_RUNS)

    def test_3d(self):
        inputs = keras.Input((2, 6, 6, 6))
        x = L.Conv3D(5, 3, padding="same", data_format="channels_first", name="c3")(inputs)
        x = L.BatchNormalization(axis=1)(x)
        x = L.MaxPooling3D(data_format="channels_first")(x)
        x = L.ZeroPadding3D(1, data_format="channels_first")(x)
        x = L.Cropping3D(1, data_format="channels_first")(x)
        x = L.UpSampling3D(data_format="channels_first")(x)
        x = L.Conv3DTranspose(3, 2, data_format="channels_first", name="t3")(x)
        x = L.GlobalMaxPooling3D(data_format="channels_first", keepdims=True)(x)
        x = L.Flatten()(x)
        model = keras.Model(inputs, L.Dense(2)(x))
        check_prune(model, "c3", [1, 3], data((2, 6, 6, 6)), compute=CF_CONV_RUNS)

    def test_pooling_and_batchnorm_without_convolutions(self):
        """channels_first through layers TensorFlow runs on CPU: a Dense makes the axis-1 channels."""
        inputs = keras.Input((5, 6, 6))
        x = L.Permute((2, 3, 1))(inputs)
        x = L.Dense(4, name="d")(x)  # (6, 6, 4)
        x = L.Permute((3, 1, 2))(x)  # channels first
        x = L.BatchNormalization(axis=1)(x)
        x = L.MaxPooling2D(data_format="channels_first")(x)
        x = L.ZeroPadding2D(1, data_format="channels_first")(x)
        x = L.UpSampling2D(data_format="channels_first")(x)
        x = L.Cropping2D(2, data_format="channels_first")(x)
        x = L.DepthwiseConv2D(1, data_format="channels_first")(x)
        x = L.Flatten(data_format="channels_first")(x)
        model = keras.Model(inputs, L.Dense(3, name="head")(x))
        result = check_prune(model, "d", [0, -1], data((5, 6, 6)))
        assert result.model.get_layer("head").kernel.shape[0] == 2 * 6 * 6


# ----------------------------------------------------------------------------- recurrent


def recurrent_net(kind, **kw):
    inputs = keras.Input((7, 3))
    x = L.Conv1D(6, 2, padding="same", name="conv")(inputs)
    x = kind(5, return_sequences=True, name="rnn1", **kw)(x)
    x = kind(4, name="rnn2", **kw)(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x))


RNNS = [(L.SimpleRNN, {}), (L.GRU, {"reset_after": True}), (L.GRU, {"reset_after": False}), (L.LSTM, {})]


class TestRecurrent:
    @pytest.mark.parametrize("kind, kw", RNNS, ids=["simple", "gru_after", "gru_before", "lstm"])
    @pytest.mark.parametrize("target, channels", [("conv", [0, 3]), ("rnn1", [1, 4]), ("rnn2", [0])])
    def test_units_and_inputs(self, kind, kw, target, channels):
        """Conv1D -> RNN (input side), RNN -> RNN (units: every gate, recurrent kernel, bias), RNN -> Dense."""
        result = check_prune(recurrent_net(kind, **kw), target, channels, data((7, 3)))
        if target == "rnn1" and kind is L.GRU and kw["reset_after"]:
            assert tuple(result.model.get_layer("rnn1").cell.bias.shape) == (2, 9)

    def test_return_state_and_masking(self):
        inputs = keras.Input((6, 4))
        x = L.Masking(0.0)(inputs)
        x = L.Dense(5, name="d")(x)
        seq, h, c = L.LSTM(4, return_sequences=True, return_state=True, name="lstm")(x)
        y = L.Concatenate()([L.GlobalAveragePooling1D()(seq), h, c])
        model = keras.Model(inputs, L.Dense(2)(y))
        check_prune(model, "d", [2], data((6, 4)))
        check_prune(keras.models.clone_model(model), "lstm", [0, 3], data((6, 4)))

    @pytest.mark.parametrize("mode", ["concat", "sum"])
    def test_bidirectional(self, mode):
        inputs = keras.Input((5, 3))
        x = L.Dense(4, name="d")(inputs)
        x = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode=mode, name="bi")(x)
        x = L.Bidirectional(L.GRU(2), name="bi2")(x)
        model = keras.Model(inputs, L.Dense(2)(x))
        check_prune(model, "d", [1], data((5, 3)))
        twin = keras.models.clone_model(model)
        result = check_prune(twin, "bi", [0], data((5, 3)))
        assert kerasnb.pruning.params_after(twin, "bi", [0])[1] == result.model.count_params()
        assert result.model.get_layer("bi").forward_layer.units == 2


# ----------------------------------------------------------------------------- outputs, branches, sharing


class TestGraphShapes:
    def test_output_refused_then_allowed(self):
        inputs = keras.Input((4,))
        h = L.Dense(6, activation="relu", name="hidden")(inputs)
        model = keras.Model(inputs, [L.Dense(5, name="out")(h), L.Dense(2, name="aux")(h)])
        with pytest.raises(UnprunableLayer, match=r"'out'.*model output.*allow_output_change=True.*Received"):
            kerasnb.prune(model, "out", channels=[1])
        result = check_prune(model, "out", [1, -1], data((4,)), allow_output_change=True,
                             expect=lambda outs: [np.delete(outs[0], [1, 4], axis=-1), outs[1]])
        assert any("'out' narrows from (5,) to (3,)" in n for n in result.notes)

    def test_output_change_through_apply(self):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, L.Dense(3, name="out")(inputs))
        with pytest.raises(UnprunableLayer, match="allow_output_change"):
            kerasnb.apply(model, [kerasnb.Prune("out", channels=(0,))])
        result = kerasnb.apply(model, [kerasnb.Prune("out", channels=(0,), allow_output_change=True)])
        assert result.model.output.shape == (None, 2)

    def test_whole_concatenate_branch_drops_out(self):
        inputs = keras.Input((6, 6, 3))
        a = L.Conv2D(4, 1, name="a")(inputs)
        b = L.Conv2D(3, 3, padding="same", name="b")(L.ReLU()(a))
        b = L.BatchNormalization(name="b_bn")(b)
        c = L.Conv2D(5, 1, name="c")(inputs)
        x = L.Concatenate(name="cat")([b, c])
        model = keras.Model(inputs, L.Conv2D(2, 1, name="head")(x))
        result = check_prune(model, "b", [0, 1, 2], data((6, 6, 3)))
        status = {row.layer: row.status for row in result.report.rows}
        assert status["a"] == status["b_bn"] == "removed"
        assert "a" not in [l.name for l in result.model.layers]
        assert result.model.get_layer("head").kernel.shape[-2] == 5
        assert any("drops out of 'cat'" in n for n in result.notes)
        assert kerasnb.pruning.params_after(model, "b", [0, 1, 2])[1] == result.model.count_params()

    def test_removing_everything_elsewhere_is_refused(self):
        inputs = keras.Input((4,))
        h = L.Dense(3, name="h")(inputs)
        model = keras.Model(inputs, L.Dense(2, name="out")(L.Concatenate()([h, L.Dense(2, name="h2")(h)])))
        with pytest.raises(InvalidEdit, match=r"Removing all 3 channels of 'h'.*'h2'.*Concatenate.*Received"):
            kerasnb.prune(model, "h", channels=[0, 1, 2])

    def test_shared_producer(self):
        x1, x2 = keras.Input((4,)), keras.Input((4,))
        shared = L.Dense(5, activation="relu", name="shared")
        y = L.Concatenate()([shared(x1), shared(x2)])
        model = keras.Model([x1, x2], L.Dense(2, name="out")(y))
        check_prune(model, "shared", [0, 3], [data((4,)), data((4,), seed=2)])

    def test_producers_feeding_a_shared_layer(self):
        inputs = keras.Input((4,))
        p1, p2 = L.Dense(5, name="p1")(inputs), L.Dense(5, name="p2")(inputs)
        shared = L.Dense(3, name="shared")
        model = keras.Model(inputs, L.Add()([shared(p1), shared(p2)]))
        assert set(kerasnb.channel_groups(model)[0].producers) == {"p1", "p2"}
        result = check_prune(model, "p1", [1, 2], data((4,)))
        assert result.model.get_layer("shared").kernel.shape == (3, 3)


# ----------------------------------------------------------------------------- layers in the channel path


class TestChannelPath:
    def test_permute_repeatvector_dense_on_3d(self):
        inputs = keras.Input((5,))
        x = L.Dense(4, name="d")(inputs)
        x = L.RepeatVector(3)(x)  # (3, 4)
        x = L.Permute((2, 1))(x)  # (4, 3): channels on axis 1
        # acts on axis 2, keeps axis 1 (no bias: a bias would give the zeroed rows values again)
        x = L.Dense(6, use_bias=False, name="per_channel")(x)
        x = L.Permute((2, 1))(x)  # (6, 4)
        x = L.Dense(2, use_bias=False, name="reader")(x)  # (6, 2), keeps the axis of 'per_channel'

        x = L.Permute((2, 1))(x)  # (2, 6)
        model = keras.Model(inputs, L.Dense(3, name="final")(x))
        check_prune(model, "d", [0, 2], data((5,)))
        check_prune(keras.models.clone_model(model), "per_channel", [5], data((5,)))

    def test_time_distributed_consumer_and_producer(self):
        inputs = keras.Input((4, 3))
        x = L.TimeDistributed(L.Dense(6), name="td1")(inputs)
        x = L.TimeDistributed(L.Dense(5), name="td2")(x)
        model = keras.Model(inputs, L.Dense(2, name="out")(x))
        check_prune(model, "td1", [0, -2], data((4, 3)))
        check_prune(keras.models.clone_model(model), "td2", [3], data((4, 3)))

    def test_time_distributed_conv(self):
        inputs = keras.Input((3, 6, 6, 2))
        x = L.TimeDistributed(L.Conv2D(4, 3), name="tdc")(inputs)
        x = L.TimeDistributed(L.Conv2D(3, 3), name="tdc2")(x)
        model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
        check_prune(model, "tdc", [1], data((3, 6, 6, 2)))

    def test_embedding(self):
        inputs = keras.Input((5,), dtype="int32")
        x = L.Embedding(10, 6, mask_zero=True, name="emb")(inputs)
        x = L.GRU(3, name="gru")(x)
        model = keras.Model(inputs, L.Dense(2)(x))
        ids = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 9]], dtype="int32")
        check_prune(model, "emb", [0, 5], ids)

    @pytest.mark.parametrize("rank", [1, 2, 3])
    def test_padding_cropping_upsampling_channels_last(self, rank):
        shape = (6,) * rank + (2,)
        pad, crop, up = ((L.ZeroPadding1D, L.Cropping1D, L.UpSampling1D), (L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D),
                         (L.ZeroPadding3D, L.Cropping3D, L.UpSampling3D))[rank - 1]
        conv = (L.Conv1D, L.Conv2D, L.Conv3D)[rank - 1]
        inputs = keras.Input(shape)
        x = conv(4, 1, name="conv")(inputs)
        x = crop(1)(up(2)(pad(1)(x)))
        model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
        check_prune(model, "conv", [1, -1], data(shape))

    def test_negative_indices(self):
        inputs = keras.Input((4,))
        model = keras.Model(inputs, L.Dense(2, name="out")(L.Dense(5, name="h")(inputs)))
        a = kerasnb.prune(model, "h", channels=[-1, 0])
        b = kerasnb.prune(model, "h", channels=[4, 0])
        np.testing.assert_array_equal(a.model.get_layer("out").kernel.numpy() if BACKEND == "tensorflow" else
                                      np.asarray(a.model.get_layer("out").kernel),
                                      np.asarray(keras.ops.convert_to_numpy(b.model.get_layer("out").kernel)))
        assert a.edits[0].channels == (0, 4)
        with pytest.raises(InvalidEdit, match=r"5 channels \(0 to 4\), or -5 to -1.*\[-6\].*Received"):
            kerasnb.prune(model, "h", channels=[-6])


# ----------------------------------------------------------------------------- nested models


def nested_net():
    inner_in = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inner_in)
    x = L.Conv2D(5, 3, padding="same", name="conv2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.Conv2D(6, 1, name="conv3")(x)
    backbone = keras.Model(inner_in, x, name="backbone")
    inputs = keras.Input((8, 8, 3))
    y = L.Conv2D(3, 1, name="stem")(inputs)
    y = backbone(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(inputs, L.Dense(2, name="head")(y))


class TestNested:
    @pytest.mark.parametrize("target, channels", [("backbone/conv3", [0, 5]), ("backbone/conv2", [1]),
                                                  ("stem", [2])])
    def test_prune_inside_and_into_a_backbone(self, target, channels):
        model = nested_net()
        result = check_prune(model, target, channels, data((8, 8, 3)))
        assert kerasnb.pruning.params_after(model, target, channels)[1] == result.model.count_params()
        if target == "backbone/conv3":
            assert result.model.get_layer("head").kernel.shape == (4, 2)
        if target == "stem":
            assert result.model.get_layer("backbone").get_layer("conv1").kernel.shape[-2] == 2


# ----------------------------------------------------------------------------- gates, groups


class TestGatesAndGroups:
    @pytest.mark.parametrize("raw_ops", [False, True])
    def test_swiglu_mlp(self, raw_ops):
        """LLaMA's MLP: down(silu(gate(x)) * up(x)) + x; gate and up are one coupled group."""
        inputs = keras.Input((5, 8))
        h = L.LayerNormalization(name="norm")(inputs)
        if raw_ops:
            g = keras.ops.silu(L.Dense(12, use_bias=False, name="gate")(h))
            m = g * L.Dense(12, use_bias=False, name="up")(h)
        else:
            g = L.Dense(12, activation="silu", use_bias=False, name="gate")(h)
            m = L.Multiply()([g, L.Dense(12, use_bias=False, name="up")(h)])
        out = L.Add()([inputs, L.Dense(8, use_bias=False, name="down")(m)])
        model = keras.Model(inputs, out)
        group = next(g for g in kerasnb.channel_groups(model) if "gate" in g.producers)
        assert set(group.producers) == {"gate", "up"} and group.prunable
        check_prune(model, "gate", [0, 3, 11], data((5, 8)))

    def test_grouped_convolution(self):
        inputs = keras.Input((6, 6, 2))
        x = L.Conv2D(8, 1, name="c1")(inputs)
        x = L.Conv2D(8, 3, groups=4, name="g")(x)
        model = keras.Model(inputs, L.Conv2D(3, 1, name="c3")(x))
        check_prune(model, "c1", [0, 3, 4, 7], data((6, 6, 2)))  # one of each group of 2
        check_prune(keras.models.clone_model(model), "g", [1, 2, 5, 6], data((6, 6, 2)))
        with pytest.raises(InvalidEdit, match=r"'g' is a grouped convolution \(groups=4.*\[0, 2, 2, 2\].*Received"):
            kerasnb.prune(model, "c1", channels=[0, 1])
        result = kerasnb.prune(model, "c1", keep=0.3)
        assert result.model.get_layer("c1").filters == 4
        assert any("rounded to 4" in n for n in result.notes)

    def test_depth_multiplier(self):
        inputs = keras.Input((6, 6, 2))
        x = L.Conv2D(4, 1, name="c1")(inputs)
        x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
        model = keras.Model(inputs, L.Conv2D(3, 1, name="c3")(x))
        result = check_prune(model, "c1", [1], data((6, 6, 2)))
        assert result.model.get_layer("c3").kernel.shape[-2] == 6  # (4 - 1) * 2


# ----------------------------------------------------------------------------- more shapes, and refusals


class TestMoreShapes:
    def test_bidirectional_without_merge(self):
        inputs = keras.Input((5, 3))
        forward, backward = L.Bidirectional(L.GRU(4), merge_mode=None, name="bi")(L.Dense(3, name="d")(inputs))
        model = keras.Model(inputs, L.Dense(2)(L.Add()([forward, backward])))
        check_prune(model, "bi", [1], data((5, 3)))

    def test_raw_concatenate_and_scalar_ops(self):
        inputs = keras.Input((4,))
        a, c = L.Dense(3, name="a")(inputs), L.Dense(2, name="c")(inputs)
        y = keras.ops.concatenate([a * 0.5, c], axis=-1)
        check_prune(keras.Model(inputs, L.Dense(2)(y)), "a", [0], data((4,)))

    def test_initial_state_is_refused_on_both_sides(self):
        inputs = keras.Input((5, 3))
        h0 = L.Dense(4, name="h0")(L.Flatten()(inputs))
        out = L.GRU(4, name="g")(L.Dense(3, name="d")(inputs), initial_state=[h0])
        model = keras.Model(inputs, L.Dense(2)(out))
        with pytest.raises(UnprunableLayer, match=r"Cannot prune 'h0'.*'g'.*initial_state=.*Received: target='h0'"):
            kerasnb.prune(model, "h0", channels=[0])
        with pytest.raises(UnprunableLayer, match=r"Cannot prune 'g'.*initial_state.*Received: target='g'"):
            kerasnb.prune(model, "g", channels=[0])
        check_prune(model, "d", [1], data((5, 3)))  # its input side is fine

    def test_flatten_of_two_traced_axes_is_refused(self):
        inputs = keras.Input((5,))
        x = L.RepeatVector(3)(L.Dense(4, name="d")(inputs))
        x = L.Permute((2, 1))(x)
        x = L.Dense(6, name="per_channel")(x)  # (4, 6): both axes come from channels
        model = keras.Model(inputs, L.Dense(2)(L.Flatten(name="flat")(x)))
        with pytest.raises(UnprunableLayer, match=r"'flat' \(Flatten\).*Received"):
            kerasnb.prune(model, "d", channels=[0])
