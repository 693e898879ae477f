"""kerasnb.prune: remove units / filters and slice every layer that reads them.

The main check, on every model shape: make some channels dead (their producers' kernel and bias
set to zero, the BatchNormalization after them mapping zero to zero), prune exactly those
channels, and the model's outputs do not change. Everything else in the model has random
values, BatchNormalization statistics included, so a layer sliced at the wrong place shows up
as a different output.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb.pruning import CoupledChannels, UnprunableLayer, channel_groups, params_after, prunable, prunable_layers
from kerasnb.pruning import prune, unprunable_reason

from conftest import assert_unchanged, seed_mlp, sequential_net, snapshot

RTOL, ATOL = 1e-4, 1e-5


# ----------------------------------------------------------------------------- helpers


def randomize(model, seed=0):
    """Random, distinct values in every variable, BatchNormalization statistics included."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        else:
            for v in layer.trainable_weights:
                if len(v.shape) == 1:  # biases, LayerNormalization: non-zero so slicing errors show
                    v.assign(rng.normal(0, 0.2, tuple(v.shape)).astype("float32"))
    return model


def kill(model, channels, *names):
    """Make ``channels`` of the named layers output exactly zero (for a zero input, where they read one)."""
    c = np.asarray(channels)
    for name in names:
        layer = model.get_layer(name)
        if isinstance(layer, L.BatchNormalization):
            for v in (layer.beta, layer.moving_mean):
                value = np.array(keras.ops.convert_to_numpy(v))
                value[c] = 0
                v.assign(value)
            continue
        if isinstance(layer, (L.DepthwiseConv2D, L.DepthwiseConv1D)):
            kernel, axis = layer.kernel, -2
        elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
            kernel, axis = layer.pointwise_kernel, -1
        elif isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
            kernel, axis = layer.kernel, -2
        else:
            kernel, axis = layer.kernel, -1
        value = np.moveaxis(np.array(keras.ops.convert_to_numpy(kernel)), axis, 0)
        value[c] = 0
        kernel.assign(np.moveaxis(value, 0, axis))
        if getattr(layer, "bias", None) is not None:
            value = np.array(keras.ops.convert_to_numpy(layer.bias))
            value[c] = 0
            layer.bias.assign(value)


def outputs(model, x):
    out = model(x, training=False)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return keras.ops.convert_to_numpy(out)


def assert_same_outputs(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=RTOL, atol=ATOL)
    else:
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def image(size, channels=3, batch=2, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, size, size, channels)).astype("float32")


def shape_of(model, name, attr="kernel"):
    return tuple(getattr(model.get_layer(name), attr).shape)


def weight(model, name, attr="kernel"):
    return keras.ops.convert_to_numpy(getattr(model.get_layer(name), attr))


# ----------------------------------------------------------------------------- models


def small_cnn():
    inputs = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(5, 3, padding="same", use_bias=False, name="conv2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.Activation("relu", name="relu2")(x)
    x = L.Flatten(name="flat")(x)
    outputs_ = L.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs_, name="small_cnn")


def zoo_net():
    """Separable, depthwise and transposed convolutions, a Reshape and a squeeze-excite Multiply."""
    inputs = keras.Input((8, 8, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="up")(x)
    se = L.GlobalAveragePooling2D(name="se_pool")(x)
    se = L.Dense(3, activation="relu", name="se_down")(se)
    se = L.Dense(5, activation="sigmoid", name="se_up")(se)
    se = L.Reshape((1, 1, 5), name="se_shape")(se)
    x = L.Multiply(name="se_mul")([x, se])
    x = L.Conv1D(4, 1, name="c1d")(L.Reshape((256, 5), name="to_seq")(x))
    x = L.GlobalMaxPooling1D(name="gmp")(x)
    outputs_ = L.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs_, name="zoo")


def killed_copy(model):
    """An independent copy of ``model`` with the same weights, which the test may change.

    (kerasnb.apply with no edits: unlike clone_model it draws no random values first, which on
    JAX means one compilation less per variable shape.)
    """
    return kerasnb.apply(model, []).model


@pytest.fixture(scope="module")
def mobilenet(mobilenetv2):
    return randomize(killed_copy(mobilenetv2), seed=3)


@pytest.fixture(scope="module")
def resnet(resnet50):
    return randomize(killed_copy(resnet50), seed=4)


def probe(model, name):
    """The model up to layer ``name``: where a test's changes end, to compute less on big models."""
    return keras.Model(model.input, model.get_layer(name).output)


# ----------------------------------------------------------------------------- zero channels


class TestZeroChannelsKeepOutputs:
    def test_mlp(self):
        """Pruning dead units of an MLP leaves its output unchanged; live ones change it."""
        model = randomize(seed_mlp())
        x = np.random.default_rng(0).normal(size=(4, 10)).astype("float32")
        live = prune(model, "dense", channels=[3, 7, 12]).model
        assert not np.allclose(outputs(live, x), outputs(model, x), rtol=RTOL, atol=ATOL)
        kill(model, [3, 7, 12], "dense")
        result = prune(model, "dense", channels=[3, 7, 12])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        assert shape_of(result.model, "dense") == (10, 61)
        assert shape_of(result.model, "dense_1") == (61, 32)

    def test_cnn_with_batchnorm_and_flatten(self):
        """Conv -> BN -> pool -> Conv -> BN -> Flatten -> Dense, pruned at both convs."""
        model = randomize(small_cnn())
        kill(model, [1, 4], "conv1", "bn1")
        kill(model, [0, 3], "conv2", "bn2")
        x = image(8)
        first = prune(model, "conv1", channels=[1, 4])
        assert_same_outputs(outputs(first.model, x), outputs(model, x))
        second = prune(first.model, "conv2", channels=[0, 3])
        assert_same_outputs(outputs(second.model, x), outputs(model, x))
        assert shape_of(second.model, "head") == (4 * 4 * 3, 3)  # Flatten kept its spatial layout

    def test_residual_add_prunes_the_coupled_group(self, make):
        """Channels of 'stem' joined by Add with 'res_conv2' are pruned in both, and outputs hold."""
        model = randomize(make("residual"))
        kill(model, [2, 6], "stem", "res_conv2")
        x = image(8)
        result = prune(model, "stem", channels=[2, 6])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        for name in ("stem", "res_conv2"):
            assert shape_of(result.model, name)[-1] == 6
            assert result.report.status(name) == "pruned"

    def test_residual_inner_conv_with_batchnorm(self, make):
        """The conv inside the residual branch: its BatchNormalization is sliced with it."""
        model = randomize(make("residual"))
        kill(model, [0, 5, 7], "res_conv1", "res_bn")
        x = image(8)
        result = prune(model, "res_conv1", channels=[0, 5, 7])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        assert shape_of(result.model, "res_bn", "gamma") == (5,)

    def test_concatenate_branch_uses_offsets(self, make):
        """'branch' sits after 8 channels in the Concatenate: the heads lose rows 8 + i."""
        model = randomize(make("residual"))
        kill(model, [1, 2], "branch")
        x = image(8)
        result = prune(model, "branch", channels=[1, 2])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        old = weight(model, "reg")
        new = weight(result.model, "reg")
        np.testing.assert_array_equal(new, old[[0, 1, 2, 3, 4, 5, 6, 7, 8, 11]])

    @pytest.mark.parametrize("target", ["c1", "sep", "up", "se_down", "c1d"])
    def test_separable_depthwise_transpose_reshape_multiply(self, target):
        """Each producer of a model with less common layers, pruned where its channels are dead."""
        model = randomize(zoo_net())
        group = next(g for g in channel_groups(model) if target in g.producers)
        dead = [0, 2] if group.channels > 3 else [1]
        kill(model, dead, *group.producers, *group.channelwise)
        x = image(8)
        result = prune(model, target, channels=dead)
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        assert "reinitialized" not in {row.status for row in result.report}

    def test_mobilenetv2_expand_and_coupled_project(self, mobilenet):
        """MobileNetV2: an expand conv (through depthwise) and a project group coupled by Adds."""
        model = killed_copy(mobilenet)
        kill(model, [1, 5, 9], "block_4_expand", "block_4_expand_BN", "block_4_depthwise", "block_4_depthwise_BN")
        project = ["block_3_project", "block_4_project", "block_5_project"]
        kill(model, [0, 7], *project, *(p + "_BN" for p in project))
        x = image(96, batch=1)
        result = prune(model, "block_4_expand", channels=[1, 5, 9])
        result = prune(result.model, "block_4_project", channels=[0, 7])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        assert shape_of(result.model, "block_4_depthwise") == (3, 3, 189, 1)
        assert shape_of(result.model, "block_6_expand") == (1, 1, 30, 192)

    def test_densenet121_concatenated_features(self, densenet121):
        """DenseNet121: a conv whose 32 channels sit at offset 96 of every later Concatenate."""
        model = randomize(killed_copy(densenet121), seed=5)
        kill(model, [0, 31], "conv2_block2_2_conv")
        later = ["conv2_block3_0_bn", "conv2_block4_0_bn", "conv2_block5_0_bn", "conv2_block6_0_bn", "pool2_bn"]
        kill(model, [96, 127], *later)  # the BatchNormalizations that read them map zero to zero
        x = image(64, batch=1)
        result = prune(model, "conv2_block2_2_conv", channels=[0, 31])
        # Every sliced layer comes before 'pool2_pool'; what follows is the same in both models.
        assert_same_outputs(outputs(probe(result.model, "pool2_pool"), x), outputs(probe(model, "pool2_pool"), x))
        assert result.report["pool2_conv"].reason == "kernel (1, 1, 256, 128) -> (1, 1, 254, 128)"
        assert shape_of(result.model, "conv2_block6_0_bn", "gamma") == (222,)

    def test_efficientnetb0_squeeze_excite_group(self, efficientnetb0):
        """EfficientNetB0: an expand conv coupled by the squeeze-excite Multiply with 'se_expand'."""
        model = randomize(killed_copy(efficientnetb0), seed=6)
        kill(model, [5, 50], "block2a_expand_conv", "block2a_expand_bn", "block2a_dwconv", "block2a_bn")
        x = image(64, batch=1)
        result = prune(model, "block2a_se_expand", channels=[5, 50])
        last = "block2a_project_bn"  # every sliced layer comes before it
        assert_same_outputs(outputs(probe(result.model, last), x), outputs(probe(model, last), x))
        assert result.report.status("block2a_expand_conv") == "pruned"
        assert shape_of(result.model, "block2a_se_reduce") == (1, 1, 94, 4)

    def test_resnet50_coupled_stage(self, resnet):
        """ResNet50: the four convs joined by conv2's Adds, and a bottleneck conv, pruned together."""
        model = killed_copy(resnet)
        stage = ["conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block2_3_conv", "conv2_block3_3_conv"]
        kill(model, [3, 100, 255], *stage, *(s.replace("_conv", "_bn") for s in stage))
        kill(model, [10, 11], "conv3_block1_2_conv", "conv3_block1_2_bn")
        x = image(224, batch=1)
        first = prune(model, "conv2_block2_3_conv", channels=[3, 100, 255])
        result = prune(first.model, "conv3_block1_2_conv", channels=[10, 11])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))
        assert result.report.status("conv3_block1_3_conv") == "pruned"
        assert result.report.status("conv2_block1_0_conv") == "kept"  # the report compares with first.model
        report = first.report
        for name in stage + ["conv2_block2_1_conv", "conv3_block1_0_conv", "conv3_block1_1_conv", "conv2_block1_0_bn"]:
            assert report.status(name) == "pruned", name
        assert report["conv3_block1_0_conv"].reason == "kernel (1, 1, 256, 512) -> (1, 1, 253, 512)"


# ----------------------------------------------------------------------------- choosing channels


class TestKeep:
    def test_keep_half_by_l1_keeps_the_strongest(self):
        """keep=0.5, by='l1' keeps the units whose kernel columns have the largest L1 norm, in order."""
        model = randomize(seed_mlp())
        kernel = weight(model, "dense")
        strongest = np.sort(np.argsort(-np.abs(kernel).sum(axis=0))[:32])
        result = prune(model, "dense", keep=0.5, by="l1")
        np.testing.assert_array_equal(weight(result.model, "dense"), kernel[:, strongest])
        np.testing.assert_array_equal(
            weight(result.model, "dense_1"), weight(model, "dense_1")[strongest]
        )

    def test_keep_count_by_l2(self):
        """keep=<int> is a count of channels; by='l2' ranks by Euclidean norm."""
        model = randomize(seed_mlp())
        kernel = weight(model, "dense_1")
        strongest = np.sort(np.argsort(-np.sqrt((kernel ** 2).sum(axis=0)))[:5])
        result = prune(model, "dense_1", keep=5, by="l2")
        np.testing.assert_array_equal(weight(result.model, "dense_1"), kernel[:, strongest])

    def test_coupled_scores_sum_over_producers(self, make):
        """In a coupled group the ranking adds up each producer's norms."""
        model = randomize(make("residual"))
        score = sum(np.abs(weight(model, n)).reshape(-1, 8).sum(axis=0) for n in ("stem", "res_conv2"))
        strongest = np.sort(np.argsort(-score)[:4])
        result = prune(model, "res_conv2", keep=0.5)
        np.testing.assert_array_equal(
            weight(result.model, "stem", "bias"), weight(model, "stem", "bias")[strongest]
        )

    def test_keep_everything_is_a_plain_copy(self):
        """keep=1.0 removes no channel: every layer is kept, nothing is marked pruned."""
        result = prune(seed_mlp(), "dense", keep=1.0)
        assert result.report.with_status("pruned") == []
        assert result.report.status("dense_1") == "kept"

    def test_several_targets_in_one_rebuild(self, mobilenet):
        """A list of targets with keep= prunes every group once; nothing is reinitialised."""
        groups = [g for g in channel_groups(mobilenet) if g.prunable]
        targets = [g.producers[0] for g in groups]
        result = prune(mobilenet, targets + ["block_5_project"], keep=0.5)
        counts = result.report.counts()
        assert "reinitialized" not in counts
        assert result.model.count_params() < 0.5 * mobilenet.count_params()
        assert params_after(mobilenet, targets, keep=0.5) == (mobilenet.count_params(), result.model.count_params())
        assert outputs(result.model, image(96, batch=1)).shape == (1, 1000)
        # One Prune per group, naming the first target that reached it and the channels it lost.
        assert len(result.edits) == len(groups) and all(isinstance(e, kerasnb.Prune) for e in result.edits)
        assert [e.target for e in result.edits] == targets
        assert all(e.keep is None and len(e.channels) for e in result.edits)
        assert set(result.report.with_status("pruned")) >= {p for g in groups for p in g.producers}


    @staticmethod
    def weights_of(model):
        return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}

    @pytest.mark.parametrize("kind, target, kwargs", [
        ("seed_mlp", "dense_1", {"channels": [0, 5, 9]}),
        ("seed_mlp", ["dense", "dense_1"], {"keep": 0.5, "by": "l2"}),
        ("residual", "res_conv2", {"keep": 0.5}),  # a coupled group: one Prune for all its producers
        ("residual", ["stem", "res_conv1", "branch"], {"keep": 3}),
    ])
    def test_edits_replay_to_the_same_model(self, make, kind, target, kwargs):
        """``kerasnb.apply(model, prune(...).edits)`` prunes the same channels: same shapes and values."""
        model = randomize(make(kind))
        result = prune(model, target, **kwargs)
        assert result.edits and all(isinstance(e, kerasnb.Prune) and e.channels for e in result.edits)
        again = kerasnb.apply(model, result.edits)
        assert [l.name for l in again.model.layers] == [l.name for l in result.model.layers]
        mine, theirs = self.weights_of(result.model), self.weights_of(again.model)
        assert list(mine) == list(theirs)
        for path in mine:
            np.testing.assert_array_equal(mine[path], theirs[path], err_msg=path)
        assert again.report.with_status("pruned") == result.report.with_status("pruned")
        assert again.report.with_status("reinitialized") == []

    def test_keep_everything_has_no_edit(self):
        assert prune(seed_mlp(), "dense", keep=1.0).edits == ()


# ----------------------------------------------------------------------------- report


class TestReport:
    def test_statuses_upstream_pruned_downstream(self):
        """Before: kept; sliced: pruned with shapes; after: kept_input_changed."""
        model = seed_mlp()
        result = prune(model, "dense_1", channels=[0, 1])
        report = result.report
        assert report["dense"].status == "kept"
        assert report["dense_1"].status == "pruned"
        assert report["dense_1"].reason == "kernel (64, 32) -> (64, 30), bias (32,) -> (30,)"
        assert report["dense_2"].status == "pruned"
        assert report["dense_2"].reason == "kernel (32, 1) -> (30, 1)"
        assert report["dense_2"].params == 31
        assert "pruned" in report.summary()

    def test_layer_after_the_consumers_is_kept_input_changed(self, make):
        """A layer behind the sliced ones keeps its weights and says its input changed."""
        model = make("residual")
        report = prune(model, "res_conv1", channels=[0]).report
        assert report.status("stem") == "kept"
        assert report.status("res_bn") == "pruned"
        assert report.status("branch") == "kept_input_changed"

    def test_layernorm_says_its_statistics_change(self):
        """LayerNormalization is sliced, and its reason says it now averages fewer channels."""
        inputs = keras.Input((4,))
        x = L.LayerNormalization(name="ln")(L.Dense(6, name="d")(inputs))
        model = keras.Model(inputs, L.Dense(2, name="out")(x))
        report = prune(model, "d", channels=[5]).report
        assert report.status("ln") == "pruned"
        assert "gamma (6,) -> (5,)" in report["ln"].reason and "fewer channels" in report["ln"].reason

    @pytest.mark.parametrize("kind, target", [("residual", "stem"), ("residual", "branch"), ("seed_mlp", "dense")])
    def test_params_after_matches_the_pruned_model(self, make, kind, target):
        """params_after, for a slider, predicts the pruned model's size without building it."""
        model = make(kind)
        pruned = prune(model, target, keep=0.5).model
        assert params_after(model, target, keep=0.5) == (model.count_params(), pruned.count_params())

    def test_pruned_layers_keep_their_config(self, make):
        """Apart from units / filters, the pruned layers' configs are the original ones (initialisers too)."""
        model = make("residual")
        result = prune(model, "stem", keep=0.5)
        for name in ("stem", "res_conv1", "cls"):
            old, new = model.get_layer(name).get_config(), result.model.get_layer(name).get_config()
            old.pop("filters" if name == "stem" else "name"), new.pop("filters" if name == "stem" else "name")
            assert new == old, name
        clone = keras.models.Model.from_config(result.model.get_config())
        assert clone.count_params() == result.model.count_params()
        (edit,) = result.edits
        assert edit.target == "stem" and len(edit.channels) == 4 and edit.keep is None

    def test_original_model_untouched(self, make):
        """The model passed in keeps its layers, weights and graph."""
        model = make("residual")
        before = snapshot(model)
        prune(model, "stem", keep=0.5)
        assert_unchanged(model, before)

    def test_sequential_model(self):
        """A Sequential model is pruned like a functional one."""
        model = randomize(sequential_net())
        kill(model, [2], "s1")
        x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
        result = prune(model, "s1", channels=[2])
        assert_same_outputs(outputs(result.model, x), outputs(model, x))


# ----------------------------------------------------------------------------- groups


class TestChannelGroups:
    def test_resnet_like_block(self, make):
        """The residual block's groups: Add couples 'stem' and 'res_conv2'; heads end at the outputs."""
        groups = {g.producers: g for g in channel_groups(make("residual"))}
        assert set(groups) == {("stem", "res_conv2"), ("res_conv1",), ("branch",), ("cls",), ("reg",)}
        coupled = groups[("stem", "res_conv2")]
        assert coupled.coupled and coupled.prunable and coupled.channels == 8
        assert set(coupled.consumers) == {"res_conv1", "branch", "cls", "reg"}
        assert groups[("res_conv1",)].channelwise == ("res_bn",)
        assert set(groups[("branch",)].consumers) == {"cls", "reg"}
        assert "model output" in groups[("reg",)].reason and not groups[("reg",)].prunable

    def test_resnet50_groups(self, resnet):
        """ResNet50: one coupled group per stage; only the classifier cannot be pruned."""
        groups = channel_groups(resnet)
        coupled = [g for g in groups if g.coupled]
        assert [len(g.producers) for g in coupled] == [4, 5, 7, 4]
        assert [g.producers for g in groups if not g.prunable] == [("predictions",)]

    def test_prunable_and_reasons(self, make):
        """prunable / unprunable_reason / prunable_layers agree and say why not."""
        model = make("residual")
        assert prunable(model, "stem") and unprunable_reason(model, "stem") == ""
        assert not prunable(model, "reg")
        assert "model output" in unprunable_reason(model, "reg")
        assert not prunable(model, "res_bn") and "prune that layer instead" in unprunable_reason(model, "res_bn")
        layers = prunable_layers(model)
        assert set(layers) == {"stem", "res_conv1", "res_conv2", "branch", "cls", "reg"}
        assert layers["branch"] == "" and layers["cls"] != ""


# ----------------------------------------------------------------------------- errors


def _mlp_into(layer_fn):
    inputs = keras.Input((5, 8), name="seq")
    x = L.Dense(8, name="proj")(inputs)
    x = layer_fn(x)
    return keras.Model(inputs, L.Dense(2, name="out")(L.Flatten(name="flat")(x)), name="m")


@keras.saving.register_keras_serializable(package="kerasnb_tests")
class Mix(L.Layer):
    """A custom layer: kerasnb cannot know how it uses its input channels."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1) * 2.0  # torch tensors refuse negative slice steps


class TestErrors:
    def test_model_output(self):
        """The last Dense feeds the output: refused, saying so."""
        with pytest.raises(UnprunableLayer, match=r"'dense_2'.*model output"):
            prune(seed_mlp(), "dense_2", channels=[0])

    def test_attention_layer(self):
        """Channels reaching MultiHeadAttention are refused, naming the layer and the heads."""
        mha = L.MultiHeadAttention(2, 4, name="mha")
        model = _mlp_into(lambda x: mha(x, x))
        with pytest.raises(UnprunableLayer, match=r"'proj'.*'mha'.*heads"):
            prune(model, "proj", channels=[0])

    def test_custom_layer(self):
        """A custom layer in the channel path is refused by name, and the model stays as it was."""
        model = _mlp_into(Mix(name="mix"))
        before = snapshot(model)
        with pytest.raises(UnprunableLayer, match=r"'mix' \(Mix\)"):
            prune(model, "proj", keep=0.5)
        assert_unchanged(model, before)

    def test_custom_subclass_of_a_known_layer(self):
        """A subclass of Dense is not trusted to use its kernel like Dense."""

        class MyDense(L.Dense):
            pass

        model = _mlp_into(MyDense(3, name="mine"))
        with pytest.raises(UnprunableLayer, match=r"'mine', a custom subclass of Dense"):
            prune(model, "proj", channels=[0])

    def test_coupled_group_refused_when_asked(self, make):
        """coupled=False refuses a coupled target and names the other producers of the group."""
        with pytest.raises(CoupledChannels, match=r"'stem'.*'res_conv2'"):
            prune(make("residual"), "stem", channels=[0], coupled=False)

    def test_coupled_group_with_a_blocked_member(self):
        """One member of a coupled group reaching an unknown layer blocks the whole group, by name."""
        inputs = keras.Input((6,))
        a = L.Dense(4, name="a")(inputs)
        b = L.Dense(4, name="b")(inputs)
        s = L.Add(name="sum")([a, b])
        weird = Mix(name="mix")(b)
        model = keras.Model(inputs, L.Dense(1, name="out")(L.Concatenate(name="cat")([s, weird])))
        with pytest.raises(UnprunableLayer, match=r"'a' \(coupled with 'b'.*'mix'"):
            prune(model, "a", channels=[0])

    def test_not_a_producer(self, make):
        """A BatchNormalization or an Add is not a pruning target; the message says what is."""
        with pytest.raises(UnprunableLayer, match=r"res_bn.*prune that layer instead"):
            prune(make("residual"), "res_bn", channels=[0])
        with pytest.raises(UnprunableLayer, match=r"Add is not one"):
            prune(make("residual"), "res_add", channels=[0])

    def test_shared_layer(self, make):
        """A layer called on the model input and then on its own output: one set of weights reads both, so its
        channels are tied to the input's, which cannot be pruned: refused, naming the input."""
        with pytest.raises(UnprunableLayer, match=r"'shared'.*model input 'x'"):
            prune(make("shared"), "shared", channels=[0])

    def test_channels_into_a_nested_model_called_twice(self):
        """Channels into a nested model called twice cannot narrow its one input: refused, naming it.
        (A nested model called once is pruned into and inside: tests/test_prune_layers.py.)"""
        inner = keras.Sequential([keras.Input((4,)), L.Dense(2, name="inner_d")], name="inner")
        inputs = keras.Input((3,))
        h = L.Dense(4, name="d")(inputs)
        model = keras.Model(inputs, L.Dense(1, name="out")(L.Concatenate()([inner(h), inner(h)])))
        with pytest.raises(UnprunableLayer, match=r"nested model 'inner'.*called 2 times"):
            prune(model, "d", channels=[0])

    def test_unknown_name(self):
        with pytest.raises(kerasnb.LayerNotFound, match="Did you mean 'dense_1'"):
            prune(seed_mlp(), "dens_1", channels=[0])

    @pytest.mark.parametrize(
        "kwargs, text",
        [
            ({"channels": [64]}, r"64 channels \(0 to 63\).*\[64\]"),
            ({"channels": list(range(64))}, "keep at least one"),
            ({"channels": []}, "removes nothing"),
            ({}, "either channels="),
            ({"channels": [1], "keep": 0.5}, "either channels="),
            ({"keep": 1.5}, r"fraction must be in \(0, 1\]"),
            ({"keep": 0}, "between 1 and 64"),
            ({"keep": 0.5, "by": "random"}, "by= is one of 'l1', 'l2'.*Received: by='random'"),
        ],
    )
    def test_bad_arguments(self, kwargs, text):
        """Bad indices or amounts are refused with what was received."""
        with pytest.raises(kerasnb.InvalidEdit, match=text):
            prune(seed_mlp(), "dense", **kwargs)

    def test_errors_are_surgery_errors(self):
        assert issubclass(UnprunableLayer, kerasnb.SurgeryError)
        assert issubclass(CoupledChannels, UnprunableLayer)


# ----------------------------------------------------------------------------- public names


def test_prune_through_the_package():
    """kerasnb.prune(...) and kerasnb.channel_groups(...) are the functions, after kerasnb.pruning is imported."""
    result = kerasnb.prune(seed_mlp(), "dense", channels=[0])
    assert result.report.status("dense") == "pruned"
    assert len(kerasnb.channel_groups(seed_mlp())) == 3


def test_public_names_from_a_fresh_import():
    """`import kerasnb; kerasnb.prune(...)` works in a fresh process."""
    code = (
        "import keras, kerasnb\n"
        "i = keras.Input((3,)); m = keras.Model(i, keras.layers.Dense(1)(keras.layers.Dense(4, name='d')(i)))\n"
        "assert kerasnb.prune(m, 'd', channels=[0]).report.status('d') == 'pruned'\n"
        "assert kerasnb.channel_groups(m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


class TestOneRebuild:
    """A prune is a weight rule inside the one rebuild of apply(), batched with other edits."""

    def count_rebuilds(self, monkeypatch):
        import kerasnb._rebuild as rebuild

        calls = []
        real = rebuild.run_pass

        def counting(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(rebuild, "run_pass", counting)
        return calls

    def test_prune_and_other_edits_share_one_rebuild(self, monkeypatch):
        model = small_cnn()
        x = image(8)
        killed = killed_copy(model)
        kill(killed, [1, 4], "conv1", "bn1")  # those channels are zero: removing them changes nothing
        expected = outputs(killed, x)
        rebuilds = self.count_rebuilds(monkeypatch)
        result = kerasnb.apply(killed, [kerasnb.Prune("conv1", channels=[1, 4]),
                                        kerasnb.Replace("relu2", L.Activation("relu", name="relu2b")),
                                        kerasnb.SetTrainable(["head"], False)])
        assert len(rebuilds) == 1
        assert result.report.status("conv1") == "pruned" and result.report.status("bn1") == "pruned"
        assert result.report.status("relu2b") == "new"
        assert result.model.get_layer("head").trainable is False
        assert_same_outputs(outputs(result.model, x), expected)

    def test_several_groups_in_one_rebuild(self, monkeypatch):
        model = small_cnn()
        rebuilds = self.count_rebuilds(monkeypatch)
        result = kerasnb.prune(model, ["conv1", "conv2"], keep=0.6)
        assert len(rebuilds) == 1
        assert shape_of(result.model, "conv1") == (3, 3, 3, 4) and shape_of(result.model, "conv2") == (3, 3, 4, 3)
        assert len(result.edits) == 2 and kerasnb.apply(model, result.edits).model.get_config() == \
            result.model.get_config()

    def test_an_edit_of_a_sliced_layer_waits_for_the_next_rebuild(self, monkeypatch):
        """Configuring a layer the prune slices is planned on the pruned model, not the old widths."""
        model = small_cnn()
        rebuilds = self.count_rebuilds(monkeypatch)
        result = kerasnb.apply(model, [kerasnb.Prune("conv1", channels=[0]), kerasnb.Configure("conv2", {"filters": 7})])
        assert len(rebuilds) == 2
        assert shape_of(result.model, "conv2") == (3, 3, 5, 7)
        assert result.report.status("conv2") == "reinitialized"
