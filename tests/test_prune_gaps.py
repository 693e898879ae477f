"""Pruning and rebuilding gaps of issue 17 (sections 6-8), each on a tiny model.

The exactness checks reuse :func:`test_prune_layers.check_prune`: the pruned model computes what a
copy with the removed channels zeroed computes.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb.errors import SurgeryError, UnprunableLayer

from test_prune_layers import check_prune, data, randomize, run


def _statuses(result):
    return {row.layer: row.status for row in result.report.rows}


# ----------------------------------------------------------------------------- an op Keras cannot copy


def test_op_made_with_arguments_its_config_cannot_hold_is_copied():
    """keras.ops.reshape with a numpy integer in its shape (as keras-cv-attention-models' MobileViT,
    CAFormer and DaViT make): its get_config() raises and so did copying it; now it is copied."""
    inputs = keras.Input((4, 6))
    x = L.Dense(6, name="d")(inputs)
    x = keras.ops.reshape(x, (-1, np.int64(2), 12))
    model = keras.Model(inputs, L.Dense(3, name="e")(x))
    op = next(o for o in model.operations if type(o).__name__ == "Reshape")
    with pytest.raises(NotImplementedError):
        op.get_config()  # what made every edit fail
    randomize(model)
    x = data((4, 6))
    result = kerasnb.apply(model, [])
    np.testing.assert_array_equal(run(result.model, x)[0], run(model, x)[0])
    assert op not in result.model.operations
    assert len(op._inbound_nodes) == 1  # no call added to the user's op
    assert kerasnb.delete(model, "e").model.output.shape == (None, 2, 12)


# ----------------------------------------------------------------------------- one channel per group


def convnext_block(norm="bn"):
    """ConvNeXt-style: a pointwise conv, a grouped conv with groups == channels, a norm, an MLP."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="pw0")(inputs)
    x = L.Conv2D(8, 3, padding="same", groups=8, name="dw")(x)
    x = L.BatchNormalization(name="bn")(x) if norm == "bn" else L.LayerNormalization(name="ln")(x)
    x = L.Dense(16, activation="gelu", name="fc1")(x)
    return keras.Model(inputs, L.Dense(4, name="fc2")(x))


def test_grouped_conv_with_one_channel_per_group_loses_whole_groups():
    model = convnext_block()
    result = check_prune(model, "pw0", [1, 2, 6], data((6, 6, 3)))
    dw = result.model.get_layer("dw")
    assert (dw.groups, dw.filters, tuple(dw.kernel.shape)) == (5, 5, (3, 3, 1, 5))
    status = _statuses(result)
    assert status["dw"] == status["bn"] == status["fc1"] == "pruned", status
    assert status["fc2"] == "kept_input_changed"
    assert "(3, 3, 1, 8) -> (3, 3, 1, 5)" in result.report.row("dw").reason


def test_pruning_the_grouped_conv_prunes_the_channels_it_passes_on():
    """Targeting the grouped conv itself (ConvNeXt's depthwise_conv): its channels are those of the
    layer before it; they are pruned there, and the note says so (it used to report `kept`)."""
    model = convnext_block()
    result = check_prune(model, "dw", [0, 7], data((6, 6, 3)))
    assert result.model.get_layer("dw").groups == 6
    assert _statuses(result)["pw0"] == "pruned"
    assert any("'dw' (Conv2D) makes no channels of its own" in n and "['pw0']" in n for n in result.notes)
    again = kerasnb.apply(model, result.edits).model  # the edits replay
    np.testing.assert_array_equal(run(again, data((6, 6, 3)))[0], run(result.model, data((6, 6, 3)))[0])
    by_keep = kerasnb.prune(model, "dw", keep=0.5)
    assert by_keep.model.get_layer("dw").groups == 4 and by_keep.report.status("dw") == "pruned"


def test_grouped_conv_with_channel_multiplier_loses_whole_groups():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="pw0")(inputs)
    x = L.Conv2D(8, 3, groups=4, name="dw")(x)  # two outputs per group
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    result = check_prune(model, "pw0", [2], data((6, 6, 3)))
    dw = result.model.get_layer("dw")
    assert (dw.groups, dw.filters) == (3, 6)


def test_grouped_conv_reading_untraceable_channels_is_refused_naming_why():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="pw0")(inputs)
    x = L.Activation("softmax", name="mix")(x)
    x = L.Conv2D(8, 3, groups=8, name="dw")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    with pytest.raises(UnprunableLayer, match=r"Cannot prune 'dw': Conv2D makes no channels of its own .*"
                                              r"'pw0': .*'mix' \(Activation 'softmax'\)"):
        kerasnb.prune(model, "dw", keep=0.5)


def test_convnext_layer_scale_is_sliced():
    """keras.applications ConvNeXt's LayerScale (x * gamma per channel) is channel-wise."""
    from keras.src.applications.convnext import LayerScale

    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="pw0")(inputs)
    x = L.Conv2D(8, 3, padding="same", groups=8, name="dw")(x)
    x = LayerScale(0.5, 8, name="scale")(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    result = check_prune(model, "dw", [3], data((6, 6, 3)))
    assert result.model.get_layer("scale").projection_dim == 7
    assert result.report.status("scale") == "pruned"


# ----------------------------------------------------------------------------- Masking


def test_masking_whose_mask_a_later_layer_reads_is_sliced():
    """Masking's mask is any(x != 0) over the channels: a reduction, so it slices; a zero channel
    removed leaves every step's mask, and the LSTM's output, as it was."""
    inputs = keras.Input((5, 4))
    x = L.Dense(6, use_bias=False, name="d1")(inputs)
    x = L.Masking(0.0, name="mask")(x)
    x = L.LSTM(3, name="lstm")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    x = data((5, 4))
    x[:, 3:] = 0  # masked steps: the mask matters
    result = check_prune(model, "d1", [1, 4], x)
    status = _statuses(result)
    assert status["lstm"] == "pruned" and status["out"] == "kept_input_changed", status
    assert "kernel (6, 12) -> (4, 12)" in result.report.row("lstm").reason


# ----------------------------------------------------------------------------- a Concatenate output


def test_whole_branch_of_an_output_concatenate_goes_when_the_output_may_narrow():
    inputs = keras.Input((6,))
    a = L.Dense(3, name="a")(inputs)
    b = L.Dense(4, name="b")(L.Dense(5, name="b_in")(inputs))
    model = keras.Model(inputs, L.Concatenate(name="cat")([a, b]))
    with pytest.raises(UnprunableLayer, match=r"reach the model output at 'cat'.*allow_output_change=True"):
        kerasnb.prune(model, "b", channels=[0, 1, 2, 3])
    randomize(model)
    x = data((6,))
    result = kerasnb.prune(model, "b", channels=[0, 1, 2, 3], allow_output_change=True)
    assert result.model.output.shape == (None, 3)
    np.testing.assert_array_equal(run(result.model, x)[0], run(model, x)[0][:, :3])
    status = _statuses(result)
    assert status["b"] == status["b_in"] == "removed" and status["a"] == "kept", status
    note = " ".join(result.notes)
    assert "The model output 'cat' narrows from (7,) to (3,)" in note and "Removed (they fed only that branch)" in note


def test_every_channel_of_an_output_itself_stays_refused():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, [L.Dense(3, name="a")(inputs), L.Dense(2, name="b")(inputs)])
    with pytest.raises(SurgeryError, match=r"Removing all 2 channels of 'b'.*the model output 'b'"):
        kerasnb.prune(model, "b", channels=[0, 1], allow_output_change=True)


# ----------------------------------------------------------------------------- inputs listed in call order


class _KeywordBlock(L.Layer):
    """Called with keywords only; Keras keeps its input tensors in keyword (alphabetical) order."""

    def call(self, decoder_sequence, decoder_padding_mask=None):
        return decoder_sequence * decoder_padding_mask

    def compute_output_shape(self, shape):
        return shape


def test_inputs_of_a_call_are_listed_and_chosen_in_call_order():
    seq, mask = keras.Input((5, 4), name="seq"), keras.Input((5, 4), name="mask")
    h = L.Dense(4, name="d")(seq)
    model = keras.Model([seq, mask], _KeywordBlock(name="block")(decoder_sequence=h, decoder_padding_mask=mask))
    with pytest.raises(kerasnb.InvalidEdit, match=r"keep_input=: 0 or 'decoder_sequence' \(None, 5, 4\) float32; "
                                                  r"1 or 'decoder_padding_mask'"):
        kerasnb.delete(model, "block")
    randomize(model)
    x = [data((5, 4)), data((5, 4), seed=2)]
    kept_first = kerasnb.delete(model, "block", keep_input=0).model
    np.testing.assert_array_equal(run(kept_first, x)[0], run(model.get_layer("d"), x[0])[0])
    assert "d" in [layer.name for layer in kept_first.layers]


# ----------------------------------------------------------------------------- keras-hub tasks


def test_prune_on_keras_hub_tasks():
    """A BertTextClassifier (frozen too) and a ResNetImageClassifier, tiny: prune inside the backbone
    gives the task back, pruned, still frozen."""
    keras_hub = pytest.importorskip("keras_hub")
    kh = keras_hub.models
    keras.utils.set_random_seed(0)
    backbone = kh.BertBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
                               max_sequence_length=6)
    classifier = kh.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)
    classifier.trainable = False
    pooled = f"{backbone.name}/pooled_dense"  # the name Keras gave depends on what the session built before
    result = kerasnb.prune(classifier, pooled, channels=[0, 5])
    assert type(result.model) is kh.BertTextClassifier and not result.model.trainable_weights
    assert result.model.trainable is False
    assert result.report.status(pooled) == "pruned"
    assert result.report.status("logits") == "pruned"  # its kernel lost the rows of the removed channels
    assert result.model.get_layer("logits").kernel.shape == (6, 3)
    resnet = kh.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64],
                               stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
                               use_pre_activation=False, image_shape=(16, 16, 3))
    images = kh.ResNetImageClassifier(backbone=resnet, num_classes=3)
    conv = f"{resnet.name}/stack1_block0_1_conv"
    result = kerasnb.prune(images, conv, keep=0.5)
    assert type(result.model) is kh.ResNetImageClassifier
    assert result.report.status(conv) == "pruned"
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype("float32")
    assert tuple(result.model(x).shape) == (1, 3)
