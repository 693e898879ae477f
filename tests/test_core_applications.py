"""keras.applications models (weights=None), each built once per session."""

import numpy as np
import pytest
from keras import layers as L

import kerasnb
from conftest import to_numpy


def _check(model, target, replacement, kept_probe):
    r = kerasnb.replace(model, target, replacement)
    report = r.report
    assert report.status(target) == "removed"
    assert report.status(kept_probe) == "kept"
    x = np.random.default_rng(0).normal(size=(1,) + tuple(model.input_shape[1:])).astype("float32")
    import keras

    before = keras.Model(model.input, model.get_layer(kept_probe).output)(x)
    after = keras.Model(r.model.input, r.model.get_layer(kept_probe).output)(x)
    np.testing.assert_array_equal(to_numpy(before), to_numpy(after))
    assert len(r.model.layers) == len(model.layers)
    return r


def test_resnet50_skip_connections(resnet50):
    r = _check(resnet50, "conv3_block2_1_conv", L.Conv2D(128, 1, name="swap"), "conv3_block1_3_bn")
    # Same shape out, so the block's later layers keep weights with changed input.
    assert r.report.status("conv3_block2_1_bn") == "kept_input_changed"
    assert r.report.status("predictions") == "kept_input_changed"
    assert r.report.status("conv1_conv") == "kept"


def test_mobilenetv2(mobilenetv2):
    r = _check(mobilenetv2, "block_5_project_BN", L.LayerNormalization(name="ln"), "block_5_project")
    assert r.report.status("block_5_add") == "no_weights"


def test_densenet121_concatenations(densenet121):
    r = _check(densenet121, "conv3_block3_1_conv", L.Conv2D(128, 1, use_bias=False, name="swap"), "conv3_block2_2_conv")
    assert r.report.status("conv3_block3_1_bn") == "kept_input_changed"


def test_efficientnetb0_raw_ops_and_rescaling(efficientnetb0):
    r = _check(efficientnetb0, "block2a_project_conv", L.Conv2D(24, 1, use_bias=False, name="swap"), "block2a_se_expand")
    assert r.report.status("stem_conv") == "kept"


def test_deleting_a_block_layer_in_resnet(resnet50):
    r = kerasnb.delete(resnet50, "conv4_block3_2_relu")
    assert r.report.status("conv4_block3_3_conv") == "kept_input_changed"
    assert r.report.status("conv4_block3_2_relu") == "removed"
