"""Whole-model transforms: change_input, replace_all, configure_all, swap_activation,
split_activations, fold_batchnorm, truncate, and result.compare."""

import re


import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb
from kerasnb.compare import BrokenPromiseWarning


# ----------------------------------------------------------------------------- models


@keras.saving.register_keras_serializable(package="kerasnb_transforms_tests")
class ClassToken(L.Layer):
    """Prepends one learned token (ViT's class token)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal", name="token")

    def call(self, x):
        token = keras.ops.broadcast_to(self.token, (keras.ops.shape(x)[0], 1, x.shape[-1]))
        return keras.ops.concatenate([token, x], axis=1)


@keras.saving.register_keras_serializable(package="kerasnb_transforms_tests")
class AddPositions(L.Layer):
    """A learned vector per position of its input (ViT's position embedding)."""

    def build(self, input_shape):
        self.positions = self.add_weight(shape=(1,) + tuple(input_shape[1:]), initializer="random_normal",
                                         name="positions")

    def call(self, x):
        return x + self.positions


def grey_cnn():
    """Per-channel Rescaling and Normalization in front of a valid conv: exactly foldable."""
    inputs = keras.Input((12, 12, 3), name="img")
    x = L.Rescaling([1 / 255, 1 / 200, 1 / 300], offset=[0.1, -0.2, 0.0], name="scale")(inputs)
    x = L.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.05, 0.06], name="norm")(x)
    x = L.Dropout(0.1, name="drop")(x)
    x = L.Conv2D(8, 3, name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu", name="act")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x), name="grey_cnn")


def classifier_around_backbone():
    """A backbone (with its own per-channel normalisation) nested inside a classifier."""
    keras.utils.set_random_seed(0)  # the same weights in every run and order: the check below is exact
    b_in = keras.Input((16, 16, 3))
    x = L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3000.0, 2500.0, 2800.0], name="norm")(b_in)
    x = L.Conv2D(8, 3, strides=2, name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    backbone = keras.Model(b_in, L.GlobalAveragePooling2D(name="gap")(x), name="backbone")
    inputs = keras.Input((16, 16, 3), name="image")
    return keras.Model(inputs, L.Dense(3, name="cls")(backbone(inputs)), name="classifier")


def vit_like(size=16):
    inputs = keras.Input((size, size, 3), name="img")
    x = L.Conv2D(8, 4, strides=4, name="patches")(inputs)
    x = L.Reshape((-1, 8), name="tokens")(x)
    x = ClassToken(name="cls_token")(x)
    x = AddPositions(name="pos")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="vit")


def randomize_batchnorms(model, seed=0):
    """Give every BatchNormalization statistics far from the identity, so folding is really tested."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
    return model


def forward(model, x):
    """A big model's output. On JAX, eager calls compile each op for each shape: predict compiles once."""
    if keras.backend.backend() == "jax":
        return model.predict(x, verbose=0, batch_size=len(x))
    return model(x)


def images(shape, batch=2, seed=0, scale=255.0):
    return (np.random.default_rng(seed).random((batch,) + tuple(shape)) * scale).astype("float32")


def relative(a, b):
    a, b = to_numpy(a).astype("float64"), to_numpy(b).astype("float64")
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def probe(model, name, x):
    return to_numpy(keras.Model(model.inputs[0], model.get_layer(name).output)(x))


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.fixture(scope="module")
def convnext():
    return keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def mobilenet_stats(mobilenetv2):
    """A copy of the session's MobileNetV2 (which others share), its BatchNorm statistics randomised."""
    return randomize_batchnorms(kerasnb.apply(mobilenetv2, []).model)


# ----------------------------------------------------------------------------- change_input


class TestChangeInput:
    def test_grey_image_gives_what_its_replicate_gave(self):
        """One channel: the conv's kernel is summed and the per-channel preprocessing folded in."""
        model = grey_cnn()
        before = snapshot(model)
        result = kerasnb.change_input(model, (12, 12, 1))
        assert result.model.input_shape == (None, 12, 12, 1)
        assert result.report.status("conv") == "adapted"
        assert result.report.row("conv").reason.startswith("kernel (3, 3, 3, 8) -> (3, 3, 1, 8): summed over input channels")
        assert "'scale', 'norm' folded in" in result.report.row("conv").reason
        assert result.report.status("scale") == result.report.status("norm") == "removed"
        assert result.report.status("bn") == result.report.status("head") == "kept_input_changed"
        grey = images((12, 12, 1))
        assert relative(result.model(grey), model(np.repeat(grey, 3, -1))) < 1e-5
        assert any("folded into the kernel and bias of 'conv'" in n for n in result.notes)
        assert_unchanged(model, before)

    @pytest.mark.parametrize("fixture, first", [("resnet50", "conv1_conv"), ("mobilenetv2", "Conv1"),
                                                ("densenet121", "conv1_conv"), ("efficientnetb0", "stem_conv")])
    def test_keras_applications(self, request, fixture, first):
        """The first conv of each application is adapted; on a grey image it gives what it gave on the replicate."""
        model = request.getfixturevalue(fixture)
        height, width, _ = model.input_shape[1:]
        result = kerasnb.change_input(model, (height, width, 1))
        assert result.report.with_status("adapted") == [first]
        assert not result.report.with_status("reinitialized")
        assert result.model.output_shape == model.output_shape
        grey = images((height, width, 1), batch=1)
        assert relative(probe(result.model, first, grey), probe(model, first, np.repeat(grey, 3, -1))) < 1e-5

    def test_efficientnet_whole_model(self, efficientnetb0):
        """EfficientNet's per-channel Normalization is folded into stem_conv: the whole model agrees."""
        result = kerasnb.change_input(efficientnetb0, (64, 64, 1))
        assert result.report.status("normalization") == "removed"
        assert result.report.status("rescaling") == "no_weights"  # one scale for every channel: it stays
        assert "'normalization' folded in" in result.report.row("stem_conv").reason
        assert any("'normalization' (Normalization)" in n for n in result.notes)
        grey = images((64, 64, 1), batch=1)
        assert relative(forward(result.model, grey), forward(efficientnetb0, np.repeat(grey, 3, -1))) < 1e-5

    def test_convnext_tiny(self, request):
        """ConvNeXt's first conv sits in a nested stem, behind a per-channel Normalization."""
        convnext = request.getfixturevalue("convnext")
        result = kerasnb.change_input(convnext, (32, 32, 1))
        assert result.report.with_status("adapted") == ["convnext_tiny_stem/convnext_tiny_stem_conv"]
        assert result.report.status("convnext_tiny_prestem_normalization") == "removed"
        grey, replicate = images((32, 32, 1), batch=1), np.repeat(images((32, 32, 1), batch=1), 3, -1)
        # Subtracting a mean of ~120 from pixels up to 255 after the conv instead of before it costs
        # float32 some digits (about 1e-5 relative at the stem already): float tolerance here is 1e-4.
        after_stem = "convnext_tiny_stage_0_block_0_depthwise_conv"
        assert relative(probe(result.model, after_stem, grey), probe(convnext, after_stem, replicate)) < 1e-4
        assert relative(forward(result.model, grey), forward(convnext, replicate)) < 1e-4

    def test_backbone_nested_in_a_classifier(self):
        """The layers inside the nested backbone are adapted; the classifier head keeps its weights."""
        model = classifier_around_backbone()
        result = kerasnb.change_input(model, (16, 16, 1))
        assert result.report.status("backbone/conv") == "adapted"
        assert result.report.status("backbone/norm") == "removed"
        assert result.report.status("cls") == "kept_input_changed"
        grey = images((16, 16, 1))
        assert relative(result.model(grey), model(np.repeat(grey, 3, -1))) < 1e-5

    def test_repeat_for_more_channels(self):
        """Six channels: kernel repeated cyclically, scaled by 3/6; the image tiled twice gives the original."""
        model = grey_cnn()
        result = kerasnb.change_input(model, (12, 12, 6))
        assert result.report.row("conv").reason.startswith(
            "kernel (3, 3, 3, 8) -> (3, 3, 6, 8): input channels repeated cyclically, scaled by 3/6")
        rgb = images((12, 12, 3))
        assert relative(result.model(np.concatenate([rgb, rgb], -1)), model(rgb)) < 1e-5
        assert any("approximation" in n for n in result.notes)

    def test_reinit(self):
        """mode='reinit': the readers start fresh, the per-channel preprocessing goes."""
        result = kerasnb.change_input(grey_cnn(), (12, 12, 1), mode="reinit")
        assert result.report.status("conv") == "reinitialized"
        assert result.report.row("conv").reason == "input channels 3 -> 1: re-initialised (mode='reinit')"
        assert result.report.status("norm") == "removed"
        assert result.model.get_layer("conv").kernel.shape == (3, 3, 1, 8)

    def test_depthwise_first_layer_changes_its_multiplier(self):
        """A depthwise first layer keeps each output's filter: one channel feeds them all."""
        inputs = keras.Input((8, 8, 3))
        x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)
        model = keras.Model(inputs, L.Conv2D(4, 1, name="pw")(x))
        result = kerasnb.change_input(model, (8, 8, 1))
        assert result.model.get_layer("dw").depth_multiplier == 6
        assert "depth_multiplier 2 -> 6" in result.report.row("dw").reason
        assert result.report.status("pw") == "kept_input_changed"
        grey = images((8, 8, 1))
        assert relative(result.model(grey), model(np.repeat(grey, 3, -1))) < 1e-5

    def test_offsets_and_zero_padding_are_exact_inside(self):
        """With padding after a per-channel offset, only the border differs, and the notes say so."""
        inputs = keras.Input((10, 10, 3))
        x = L.Normalization(mean=[100.0, 120.0, 140.0], variance=[900.0, 1600.0, 2500.0], name="norm")(inputs)
        x = L.ZeroPadding2D(1, name="pad")(x)
        model = keras.Model(inputs, L.Conv2D(4, 3, use_bias=False, name="conv")(x))
        result = kerasnb.change_input(model, (10, 10, 1))
        assert "bias added" in result.report.row("conv").reason
        assert any("Exact except near the border" in n for n in result.notes)
        grey = images((10, 10, 1))
        new, old = to_numpy(result.model(grey)), to_numpy(model(np.repeat(grey, 3, -1)))
        assert relative(new[:, 1:-1, 1:-1], old[:, 1:-1, 1:-1]) < 1e-5
        assert not np.allclose(new[:, 0], old[:, 0])

    def test_dense_after_flatten_is_reinitialised(self):
        """Flatten mixes the channels into features: the Dense after it starts fresh, with the shapes."""
        inputs = keras.Input((6, 6, 3))
        model = keras.Model(inputs, L.Dense(4, name="dense")(L.Flatten(name="flat")(inputs)))
        result = kerasnb.change_input(model, (6, 6, 1))
        assert result.report.status("dense") == "reinitialized"
        assert result.report.row("dense").reason == "kernel (108, 4) -> (36, 4)"
        assert any("'flat' (Flatten), which mixes them" in n for n in result.notes)

    def test_spatial_size_alone(self):
        """A new height and width: convolutions keep their weights, nothing is adapted."""
        model = grey_cnn()
        result = kerasnb.change_input(model, (20, 20, 3))
        assert result.report.status("conv") == "kept_input_changed"
        assert result.report.status("norm") == "no_weights"
        assert not result.report.with_status("reinitialized")
        assert result.model.output_shape == (None, 4)

    def test_position_embedding_refused_without_interpolate(self):
        """A per-position variable would lose its values: refused, naming the layer and interpolate=True."""
        model = vit_like()
        before = snapshot(model)
        with pytest.raises(kerasnb.InvalidEdit, match=r"'pos' \(AddPositions\) holds positions \(1, 17, 8\).*interpolate=True"):
            kerasnb.change_input(model, (32, 32, 3))
        assert_unchanged(model, before)

    def test_position_embedding_interpolated(self):
        """interpolate=True: the 4x4 grid is resized to 8x8 bilinearly, the class token kept."""
        model = vit_like()
        result = kerasnb.change_input(model, (32, 32, 3), interpolate=True)
        assert result.report.status("pos") == "adapted"
        assert result.report.row("pos").reason == (
            "positions (1, 17, 8) -> (1, 65, 8): resized bilinearly from a 4x4 grid to 8x8 (1 extra token kept)")
        assert result.report.status("cls_token") == "kept_input_changed"
        old, new = to_numpy(model.get_layer("pos").positions), to_numpy(result.model.get_layer("pos").positions)
        np.testing.assert_array_equal(new[0, 0], old[0, 0])
        expected = keras.ops.image.resize(old[:, 1:].reshape(1, 4, 4, 8), (8, 8), interpolation="bilinear")
        np.testing.assert_allclose(new[0, 1:], to_numpy(expected).reshape(64, 8), rtol=1e-6)
        assert result.model.output_shape == (None, 2)

    def test_channels_only_leaves_position_embeddings_alone(self):
        """Same spatial size: the per-position variable is copied, no interpolate needed."""
        result = kerasnb.change_input(vit_like(), (16, 16, 1))
        assert result.report.status("patches") == "adapted"
        assert result.report.status("pos") == "kept_input_changed"

    def test_edits_replay_to_the_same_model(self):
        """result.edits: ChangeInput, Delete of the folded layers, Transform of the readers."""
        model = grey_cnn()
        result = kerasnb.change_input(model, (12, 12, 1))
        assert [type(e).__name__ for e in result.edits] == ["ChangeInput", "Delete", "Delete", "Transform"]
        again = kerasnb.apply(model, result.edits)
        assert same_weights(again.model, result.model)

    @pytest.mark.parametrize("kwargs, words", [
        ({"shape": (12, 12)}, ["same rank", "(12, 12, 1)", "Received: shape=(12, 12)"]),
        ({"shape": "grey"}, ["tuple of positive ints", "Received: shape='grey'"]),
        ({"shape": (12, 12, 0)}, ["tuple of positive ints"]),
        ({"shape": (12, 12, 1), "mode": "mean"}, ["mode is 'sum', 'repeat' or 'reinit'", "Received: mode='mean'"]),
        ({"shape": (12, 12, 4), "mode": "sum"}, ["mode='repeat'", "Received: change_input"]),
        ({"shape": (12, 12, 1), "interpolate": "yes"}, ["True or False"]),
    ], ids=["rank", "not a shape", "zero", "mode", "sum for four", "interpolate"])
    def test_bad_arguments(self, kwargs, words):
        """Bad arguments are refused before anything is rebuilt, naming what was received."""
        with pytest.raises(kerasnb.InvalidEdit) as info:
            kerasnb.change_input(grey_cnn(), **kwargs)
        for word in words:
            assert word in str(info.value)

    def test_several_inputs_need_a_name(self, make):
        """A model with two inputs says which names input= takes."""
        model = make("two_input")
        with pytest.raises(kerasnb.InvalidEdit, match=r"say which.*\['a_in', 'b_in'\]"):
            kerasnb.change_input(model, (3,))
        with pytest.raises(kerasnb.LayerNotFound, match="Did you mean 'a_in'"):
            kerasnb.change_input(model, (3,), input="a_inn")
        result = kerasnb.change_input(model, (3,), input="a_in")
        assert "summed" not in result.report.row("a_dense").reason
        assert result.report.row("a_dense").reason.startswith("kernel (6, 8) -> (3, 8): input channels repeated")

    def test_a_layer_it_cannot_see_through(self):
        """LayerNormalization mixes the channels: refused, with mode='reinit' as the way out."""
        inputs = keras.Input((8, 8, 3))
        x = L.LayerNormalization(name="ln")(inputs)
        model = keras.Model(inputs, L.Conv2D(4, 3, name="conv")(x))
        with pytest.raises(kerasnb.InvalidEdit, match=r"'ln' \(LayerNormalization\).*mode='reinit'"):
            kerasnb.change_input(model, (8, 8, 1))
        result = kerasnb.change_input(model, (8, 8, 1), mode="reinit")
        assert result.report.status("conv") == "reinitialized"


# ----------------------------------------------------------------------------- replace_all, configure_all


def with_dropouts():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6, name="inner_dense"), L.Dropout(0.1, name="inner_drop")],
                             name="block")
    inputs = keras.Input((6,), name="x")
    x = L.Dropout(0.2, name="drop_1")(L.Dense(6, name="dense_1")(inputs))
    x = inner(x)
    return keras.Model(inputs, L.Dense(2, name="head")(L.Dropout(0.3, name="drop_2")(x)), name="drops")


class TestReplaceAll:
    def test_every_match_at_any_depth(self):
        """A class matches top-level and nested layers; one Replace each, in one apply."""
        model = with_dropouts()
        result = kerasnb.replace_all(model, L.Dropout, lambda layer: L.GaussianNoise(0.1, name=f"noise_{layer.name}"))
        assert sorted(e.target for e in result.edits) == ["block/inner_drop", "drop_1", "drop_2"]
        assert all(isinstance(e, kerasnb.Replace) for e in result.edits)
        assert sorted(result.report.with_status("removed")) == ["block/inner_drop", "drop_1", "drop_2"]
        assert result.report.status("block/noise_inner_drop") == "new"
        assert result.report.status("head") == "kept_input_changed"
        again = kerasnb.apply(model, result.edits)
        assert [l.name for l in again.model.layers] == [l.name for l in result.model.layers]
        assert same_weights(again.model, result.model)

    @pytest.mark.parametrize("match", ["drop_*", "*/inner_drop", re.compile(r"(block/)?\w+_drop|drop_\d"),
                                       lambda path, layer: isinstance(layer, L.Dropout),
                                       lambda path, layer: "drop" in path, (L.Dropout, L.GaussianNoise),
                                       ["drop_1", "drop_2", "block/inner_drop"], ["drop_1", "drop_2", "inner_drop"]],
                             ids=["glob on name", "glob on path", "regex", "predicate", "path predicate", "classes",
                                  "paths", "names"])
    def test_ways_to_match(self, match):
        """Globs, regexes, predicates and class tuples select layers by path or name."""
        result = kerasnb.replace_all(with_dropouts(), match, L.Identity())
        expected = {"drop_1", "drop_2", "block/inner_drop"} if match != "drop_*" else {"drop_1", "drop_2"}
        if match == "*/inner_drop":
            expected = {"block/inner_drop"}
        assert set(result.report.with_status("removed")) == expected

    def test_a_shared_layer_gets_one_replacement_per_call(self, make):
        """Each call of a shared layer is replaced; the edits name (path, call)."""
        result = kerasnb.replace_all(make("shared"), "shared", lambda layer: L.Dense(4, name="solo"))
        assert [e.target for e in result.edits] == [("shared", 0), ("shared", 1)]
        assert result.report.status("shared") == "removed"

    def test_a_match_of_nothing(self):
        """A pattern that matches nothing names the closest paths; a class names the layer types."""
        with pytest.raises(kerasnb.LayerNotFound, match=r"No layer of model 'drops' matches 'dropp_\*'.*Did you mean") as info:
            kerasnb.replace_all(with_dropouts(), "dropp_*", L.Identity())
        assert "Received: match='dropp_*'" in str(info.value)
        with pytest.raises(kerasnb.LayerNotFound, match=r"matches a Conv2D. Its layers are: Dense \(3\), Dropout \(3\)"):
            kerasnb.replace_all(with_dropouts(), L.Conv2D, L.Identity())

    @pytest.mark.parametrize("match, make, words", [
        (3, L.Identity(), ["match is a layer class", "Received: match=3"]),
        ("", L.Identity(), ["non-empty"]),
        (int, L.Identity(), ["Keras layer class"]),
        (L.Dropout, "identity", ["make is a function", "Received: make='identity'"]),
        (L.Dropout, lambda layer: None, ["returned None"]),
        (lambda layer: True, L.Identity(), ["takes two arguments, (path, layer)", "Received: match=<function"]),
        ("dropp", L.Identity(), ["No layer named 'dropp'", "Did you mean 'drop_2' or 'drop_1'"]),
    ], ids=["number", "empty", "not a layer class", "make", "make returns None", "one-argument predicate",
            "unknown name"])
    def test_bad_arguments(self, match, make, words):
        """Bad arguments are refused with what was received and what would work."""
        with pytest.raises(kerasnb.SurgeryError) as info:
            kerasnb.replace_all(with_dropouts(), match, make)
        for word in words:
            assert word in str(info.value)


class TestConfigureAll:
    def test_every_match_configured(self):
        """Each matching layer is rebuilt with the changes; the edits are Configure, one per layer."""
        model = with_dropouts()
        before = snapshot(model)
        result = kerasnb.configure_all(model, L.Dropout, rate=0.5)
        assert all(isinstance(e, kerasnb.Configure) and e.changes == {"rate": 0.5} for e in result.edits)
        assert len(result.edits) == 3
        assert result.model.get_layer("block").get_layer("inner_drop").rate == 0.5
        assert result.model.get_layer("drop_2").rate == 0.5
        assert result.report.status("dense_1") == "kept"
        assert_unchanged(model, before)

    def test_widths_change_and_the_report_says_what_follows(self):
        """Wider Dense layers: their kernels no longer fit, the report gives the shapes."""
        result = kerasnb.configure_all(with_dropouts(), "*inner_dense", units=12)
        assert [e.target for e in result.edits] == ["block/inner_dense"]
        assert result.report.row("block/inner_dense").reason == "kernel (6, 6) -> (6, 12), bias (6,) -> (12,)"
        assert result.report.row("head").reason == "kernel (6, 2) -> (12, 2)"

    def test_an_option_the_layer_lacks(self):
        """The core names the layer and the options it has."""
        with pytest.raises(kerasnb.InvalidEdit, match="has no config option 'units'"):
            kerasnb.configure_all(with_dropouts(), L.Dropout, units=3)
        with pytest.raises(kerasnb.InvalidEdit, match="needs config changes"):
            kerasnb.configure_all(with_dropouts(), L.Dropout)


# ----------------------------------------------------------------------------- activations


def act_net(activation="relu"):
    inputs = keras.Input((6, 6, 3), name="img")
    x = L.Conv2D(4, 3, activation=activation, name="conv")(inputs)
    x = L.Activation(activation, name="act")(L.Conv2D(4, 1, name="conv_2")(x))
    x = L.ReLU(name="relu_layer")(x)
    x = L.ReLU(6.0, name="relu6_layer")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(5, activation="tanh", name="dense")(x)
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="acts")


class TestSwapActivation:
    def test_layers_and_fused_activations(self):
        """Activation layers, ReLU layers and fused activations all swap; every weight is kept."""
        model = act_net()
        result = kerasnb.swap_activation(model, "relu", "gelu")
        new = result.model
        assert new.get_layer("conv").get_config()["activation"] == "gelu"
        assert new.get_layer("act").get_config()["activation"] == "gelu"
        assert result.report.status("relu_layer") == "removed"
        assert new.get_layer("relu_layer_gelu").get_config()["activation"] == "gelu"
        assert isinstance(new.get_layer("relu6_layer"), L.ReLU)  # relu6 is another activation
        assert result.report.status("conv") == "kept_input_changed"
        assert result.report.status("conv_2") == "kept_input_changed"
        # The same architecture written with gelu, given the original's weights, computes the same.
        x = images((6, 6, 3), scale=1.0)
        expected = act_net("gelu")
        expected.set_weights(model.get_weights())
        hand = keras.Model(expected.input, expected.get_layer("act").output)  # what reaches relu_layer
        np.testing.assert_allclose(probe(new, "relu_layer_gelu", x), to_numpy(keras.activations.gelu(hand(x))), rtol=1e-6)

    def test_aliases_resolve_as_keras_resolves_them(self, efficientnetb0):
        """'swish' is 'silu': EfficientNet's Activation layers and its squeeze-excite convs swap."""
        result = kerasnb.swap_activation(efficientnetb0, "swish", "gelu")
        assert result.model.get_layer("stem_activation").get_config()["activation"] == "gelu"
        assert result.model.get_layer("block1a_se_reduce").get_config()["activation"] == "gelu"
        assert result.model.get_layer("block1a_se_expand").get_config()["activation"] == "sigmoid"
        assert not result.report.with_status("reinitialized")
        assert result.report.status("stem_conv") == "kept"

    def test_relu6_layers_of_mobilenet(self, mobilenetv2):
        """ReLU(6.) layers are 'relu6'; each becomes an Activation layer, weights kept."""
        result = kerasnb.swap_activation(mobilenetv2, "relu6", "relu")
        assert len([e for e in result.edits if isinstance(e, kerasnb.Replace)]) == 35
        assert result.report.status("Conv1") == "kept"
        assert result.report.status("bn_Conv1") == "kept"
        assert result.report.status("expanded_conv_depthwise") == "kept_input_changed"

    def test_nothing_to_swap(self):
        """An activation the model does not use: the error lists the ones it uses."""
        with pytest.raises(kerasnb.LayerNotFound, match=r"applies 'elu'.*Activations it uses: relu \(3\)"):
            kerasnb.swap_activation(act_net(), "elu", "gelu")

    @pytest.mark.parametrize("old, new, words", [
        ("relu", "not_an_activation", ["new 'not_an_activation' is not an activation", "'gelu'"]),
        ("relu", "relu", ["the same activation"]),
    ], ids=["unknown", "same"])
    def test_bad_arguments(self, old, new, words):
        """Unknown names and no-op swaps are refused."""
        with pytest.raises(kerasnb.InvalidEdit) as info:
            kerasnb.swap_activation(act_net(), old, new)
        for word in words:
            assert word in str(info.value)


def fused_net():
    inner = keras.Sequential([keras.Input((5,)), L.Dense(5, activation="relu", name="inner")], name="block")
    inputs = keras.Input((6, 6, 3), name="img")
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = L.SeparableConv2D(4, 3, activation="selu", name="sep")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(5, activation="gelu", name="dense")(x)
    shared = L.Dense(5, activation="tanh", name="shared")
    x = shared(shared(x))
    return keras.Model(inputs, L.Dense(2, activation="softmax", name="head")(inner(x)), name="fused")


class TestSplitActivations:
    def test_bit_identical(self):
        """Every fused activation becomes its own layer; the outputs are exactly the original's."""
        model = fused_net()
        result = kerasnb.split_activations(model)
        new = result.model
        for name in ("conv", "sep", "dense", "shared", "head"):
            assert new.get_layer(name).get_config()["activation"] == "linear"
        assert new.get_layer("conv_relu").get_config()["activation"] == "relu"
        assert new.get_layer("block").get_layer("inner_relu").get_config()["activation"] == "relu"
        assert result.report.status("shared_tanh") == "new" and result.report.status("shared_tanh_1") == "new"
        assert result.report.status("conv") == "kept_input_changed"
        x = images((6, 6, 3), batch=3, scale=2.0)
        np.testing.assert_array_equal(to_numpy(new(x)), to_numpy(model(x)))
        np.testing.assert_array_equal(probe(new, "conv_relu", x), probe(model, "conv", x))

    def test_match_selects(self):
        """Only the matching layers are split; a match without fused activations is refused."""
        result = kerasnb.split_activations(fused_net(), match=L.Conv2D)
        assert [e.target for e in result.edits] == ["conv", "conv"]
        assert result.model.get_layer("dense").get_config()["activation"] == "gelu"
        with pytest.raises(kerasnb.LayerNotFound, match="has a fused activation"):
            kerasnb.split_activations(fused_net(), match="flat")

    def test_a_sequential_stays_sequential(self, make):
        """Inserting Activation layers keeps a chain a chain."""
        model = make("sequential")
        result = kerasnb.split_activations(model)
        assert isinstance(result.model, keras.Sequential)
        x = images((5,), scale=1.0)
        np.testing.assert_array_equal(to_numpy(result.model(x)), to_numpy(model(x)))
        frame = result.compare(x).set_index("layer")
        assert frame.loc["s2", "max_abs_diff"] == 0 and frame.loc["s1", "status"] == "kept_input_changed"


# ----------------------------------------------------------------------------- fold_batchnorm


def bn_zoo():
    """A BatchNormalization after each kind of layer it folds into, and some it must leave alone."""
    inputs = keras.Input((10, 10, 3), name="img")
    x = L.BatchNormalization(name="bn_input")(inputs)  # reads the input
    x = L.BatchNormalization(name="bn_conv")(L.Conv2D(6, 3, name="conv")(x))
    x = L.BatchNormalization(name="bn_nobias")(L.Conv2D(6, 3, use_bias=False, padding="same", name="conv_nobias")(x))
    x = L.BatchNormalization(name="bn_dw")(L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x))
    x = L.BatchNormalization(name="bn_sep")(L.SeparableConv2D(8, 3, name="sep")(x))
    relu = L.Conv2D(8, 1, activation="relu", name="conv_relu")(x)
    x = L.BatchNormalization(name="bn_relu")(relu)  # a non-linear activation comes first
    branch = L.Conv2D(8, 1, name="conv_branch")(x)
    x = L.Add(name="add")([L.BatchNormalization(name="bn_branch")(branch), branch])  # its input feeds Add too
    x = L.Conv2DTranspose(4, 3, strides=2, name="up")(x)
    x = L.BatchNormalization(name="bn_up")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.BatchNormalization(name="bn_dense")(L.Dense(5, name="dense")(x))
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="zoo")


class TestFoldBatchnorm:
    def test_folds_what_it_can(self):
        """Conv, Conv without bias, Depthwise, Separable, ConvTranspose and Dense absorb their BatchNorm."""
        model = randomize_batchnorms(bn_zoo())
        before = snapshot(model)
        result = kerasnb.fold_batchnorm(model)
        folded = {"conv", "conv_nobias", "dw", "sep", "up", "dense"}
        assert set(result.report.with_status("folded")) == folded
        assert set(result.report.with_status("removed")) == {"bn_conv", "bn_nobias", "bn_dw", "bn_sep", "bn_up",
                                                            "bn_dense"}
        assert result.report.row("conv").reason.startswith("'bn_conv' folded in: kernel (3, 3, 3, 6) scaled per output channel")
        assert "bias (6,) (added)" in result.report.row("conv_nobias").reason
        x = images((10, 10, 3), scale=1.0)
        assert relative(forward(result.model, x), forward(model, x)) < 1e-5
        assert_unchanged(model, before)

    def test_notes_say_why_the_others_stay(self):
        """Every BatchNorm left alone is in the notes, with its reason."""
        notes = " ".join(kerasnb.fold_batchnorm(bn_zoo()).notes)
        assert "6 BatchNormalization layer(s) folded" in notes
        assert "3 BatchNormalization layer(s) not folded" in notes
        assert "'bn_input': it reads the input of model 'zoo'" in notes
        assert "'bn_relu': 'conv_relu' applies 'relu' before it" in notes
        assert "'bn_branch': the output of 'conv_branch' also feeds 'add'" in notes

    def test_mobilenet_v2(self, mobilenet_stats):
        """MobileNetV2's 52 BatchNorms fold away; outputs within 1e-5 relative."""
        result = kerasnb.fold_batchnorm(mobilenet_stats)
        assert len(result.report.with_status("removed")) == 52
        assert not [l for l in result.model.layers if isinstance(l, L.BatchNormalization)]
        x = images((96, 96, 3), batch=1, scale=1.0)
        probe_old = keras.Model(mobilenet_stats.input, mobilenet_stats.get_layer("out_relu").output)
        probe_new = keras.Model(result.model.input, result.model.get_layer("out_relu").output)
        assert relative(forward(probe_new, x), forward(probe_old, x)) < 1e-5
        assert relative(forward(result.model, x), forward(mobilenet_stats, x)) < 1e-5

    def test_resnet50_and_densenet(self, resnet50, densenet121):
        """ResNet50 folds all 53; DenseNet's pre-activation BatchNorms stay, each with its reason."""
        result = kerasnb.fold_batchnorm(resnet50)
        assert len(result.report.with_status("folded")) == 53
        dense = kerasnb.fold_batchnorm(densenet121)
        assert "'conv2_block1_0_bn': it follows 'pool1' (MaxPooling2D)" in " ".join(dense.notes)
        assert len(dense.report.with_status("folded")) == 59

    def test_inside_a_nested_model(self):
        """A nested backbone's BatchNorm folds into its conv; paths name both."""
        model = randomize_batchnorms(classifier_around_backbone())
        result = kerasnb.fold_batchnorm(model)
        assert result.report.status("backbone/conv") == "folded"
        assert result.report.status("backbone/bn") == "removed"
        x = images((16, 16, 3))
        assert relative(result.model(x), model(x)) < 1e-5

    def test_training_mode_is_refused(self):
        """A BatchNorm called with training=True normalises by batch: refused, nothing built."""
        inputs = keras.Input((4,))
        x = L.BatchNormalization(name="bn")(L.Dense(4, name="d")(inputs), training=True)
        with pytest.raises(kerasnb.InvalidEdit, match=r"'bn' is called with training=True.*Received"):
            kerasnb.fold_batchnorm(keras.Model(inputs, x))

    def test_no_batchnorm(self, make):
        """Nothing to fold is not an error: the note says so and the model is an unchanged copy."""
        result = kerasnb.fold_batchnorm(make("seed_mlp"))
        assert "no BatchNormalization layer" in result.notes[0]
        assert set(result.report.with_status("kept")) == {"dense", "dense_1", "dense_2"}

    def test_edits_replay(self):
        """result.edits are a Transform and a Delete per BatchNorm; applied again they give the same weights."""
        model = randomize_batchnorms(bn_zoo())
        result = kerasnb.fold_batchnorm(model)
        assert [type(e).__name__ for e in result.edits[:2]] == ["Transform", "Delete"]
        assert same_weights(kerasnb.apply(model, result.edits).model, result.model)


# ----------------------------------------------------------------------------- truncate


class TestTruncate:
    def test_outputs_at_layers(self):
        """truncate wraps Truncate: the named layers' outputs, the rest removed."""
        model = grey_cnn()
        result = kerasnb.truncate(model, ["bn", "gap"])
        assert set(result.report.with_status("removed")) == {"head"}
        x = images((12, 12, 3))
        bn, gap = result.model(x)
        np.testing.assert_array_equal(to_numpy(bn), probe(model, "bn", x))
        np.testing.assert_array_equal(to_numpy(gap), probe(model, "gap", x))

    def test_unknown_layer(self):
        """A name that is not there suggests the closest."""
        with pytest.raises(kerasnb.LayerNotFound, match="Did you mean 'gap'"):
            kerasnb.truncate(grey_cnn(), "gapp")


# ----------------------------------------------------------------------------- compare


class TestCompare:
    def test_one_row_per_layer_in_both(self):
        """Kept layers show zero difference; the adapted ones a float-rounding one; nested layers included."""
        model = classifier_around_backbone()
        result = kerasnb.fold_batchnorm(randomize_batchnorms(model))
        frame = result.compare(images((16, 16, 3)))
        assert list(frame.columns) == ["layer", "source", "type", "status", "output_shape", "max_abs_diff",
                                       "max_rel_diff", "broken_promise"]
        rows = frame.set_index("layer")
        assert "backbone/bn" not in rows.index  # removed: not in both
        assert rows.loc["backbone/norm", "status"] == "no_weights"
        assert rows.loc["backbone/norm", "max_abs_diff"] == 0
        assert rows.loc["backbone/relu", "max_rel_diff"] < 1e-5
        assert rows.loc["backbone/conv", "output_shape"] == (2, 7, 7, 8)
        assert not frame.broken_promise.any()

    def test_a_nested_sequential(self, make):
        """Layers inside a nested Sequential get rows of their own."""
        model = make("nested")
        result = kerasnb.swap_activation(model, "relu", "gelu")
        frame = result.compare(images((6,), scale=1.0)).set_index("layer")
        assert frame.loc["encoder/inner_a", "status"] == "kept_input_changed"
        assert frame.loc["encoder/inner_a", "max_abs_diff"] > 0
        assert not frame.broken_promise.any()

    def test_inputs_that_differ(self):
        """original_x feeds the original when its input differs (a grey image and its replicate)."""
        model = grey_cnn()
        result = kerasnb.change_input(model, (12, 12, 1))
        grey = images((12, 12, 1))
        frame = result.compare(grey, original_x=np.repeat(grey, 3, -1)).set_index("layer")
        assert np.isnan(frame.loc["img", "max_abs_diff"])  # shapes differ
        assert frame.loc["head", "max_rel_diff"] < 1e-5

    def test_a_broken_promise_is_flagged_and_warned(self, make):
        """A layer reported kept whose output differs: broken_promise and a warning."""
        model = make("seed_mlp")
        result = kerasnb.apply(model, [])
        result.model.get_layer("dense_1").kernel.assign(np.zeros((64, 32), "float32"))
        with pytest.warns(BrokenPromiseWarning, match="'dense_1'"):
            frame = result.compare(images((10,), scale=1.0), original=model)
        broken = frame.set_index("layer").broken_promise
        assert broken["dense_1"] and broken["dense_2"] and not broken["dense"]

    def test_results_of_apply_know_their_original(self, make):
        """compare needs no original= for a result of kerasnb.apply: the result keeps it."""
        model = make("seed_mlp")
        frame = kerasnb.delete(model, "dense_1").compare(images((10,), scale=1.0))
        assert frame.set_index("layer").loc["dense", "status"] == "kept"
        assert not frame.broken_promise.any()

    def test_wrong_input(self, make):
        """An input the model cannot take names both shapes."""
        with pytest.raises(kerasnb.InvalidEdit, match=r"cannot run on the input.*Received: arrays of shape \[\(2, 7\)\]"):
            kerasnb.fold_batchnorm(make("seed_mlp")).compare(images((7,)))
        with pytest.raises(kerasnb.InvalidEdit, match="takes 2 input"):
            kerasnb.fold_batchnorm(make("two_input")).compare(images((6,)))
