"""kerasnb.quantize on a tiny keras-hub backbone (random weights, offline): the layers inside its
blocks are quantized, the result stays a backbone, and it saves and loads computing the same (a
plain Functional copy of a quantized backbone does not: keras-team/keras #21378)."""

import keras
import numpy as np
import pytest

import kerasnb

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")

TOKENS = {"token_ids": np.array([[5, 7, 3, 7, 0, 0], [2, 4, 6, 1, 1, 3]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")}


@pytest.fixture(scope="module")
def gpt2():
    keras.utils.set_random_seed(0)
    return keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=8)


def out(model):
    return keras.ops.convert_to_numpy(model(TOKENS))


def test_a_backbone_quantized_inside_its_blocks_saves_and_loads(gpt2, tmp_path):
    reference = out(gpt2)
    result = kerasnb.quantize(gpt2, "int8")
    assert isinstance(result.model, keras_hub.models.Backbone)
    report = result.report
    assert report.status("transformer_layer_0") == "quantized"
    assert "int8 on 6 layer(s) inside" in report.row("transformer_layer_0").reason
    assert report.status("layer_norm") == "kept_input_changed"
    inner = [layer for layer in result.model.get_layer("transformer_layer_1")._flatten_layers()
             if isinstance(layer, keras.layers.EinsumDense)]
    assert inner and all(layer.quantization_mode == "int8" for layer in inner)
    frame = report.to_frame().set_index("layer")
    assert frame.loc["transformer_layer_0", "bytes_after"] < 0.4 * frame.loc["transformer_layer_0", "bytes_before"]
    got = out(result.model)
    assert 0 < np.max(np.abs(got - reference)) < 0.05 * np.max(np.abs(reference))
    np.testing.assert_array_equal(out(gpt2), reference)  # the original untouched
    assert all(v.dtype == "float32" for v in gpt2.weights)
    path = tmp_path / "gpt2_int8.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(out(loaded), got)


def test_naming_a_block_quantizes_what_is_inside_it_and_later_edits_keep_it(gpt2):
    result = kerasnb.quantize(gpt2, "int4", match="transformer_layer_1")
    assert result.report.with_status("quantized") == ["transformer_layer_1"]
    assert result.report.status("transformer_layer_0") == "kept"
    dropped = kerasnb.delete(result.model, "transformer_layer_0")
    assert dropped.report.status("transformer_layer_1") == "kept_input_changed"
    block = dropped.model.get_layer("transformer_layer_1")
    assert {layer.quantization_mode for layer in block._flatten_layers()
            if isinstance(layer, keras.layers.Dense)} == {"int4"}
