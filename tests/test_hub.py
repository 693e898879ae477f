"""keras-hub transformer backbones, tiny and random, built offline from their constructors.

Round trips must be bit-identical on a padded batch, or say plainly which layer they could not
carry (never silently different). Skipped, with the reason, where keras-hub is not installed.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy

import kerasnb

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
kh = keras_hub.models


def text_batch(vocabulary=50, length=12):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocabulary, size=(3, length)).astype("int32")
    mask = (np.arange(length)[None, :] < np.array([12, 7, 3])[:, None]).astype("int32")
    return ids * mask, mask


BACKBONES = {
    "bert": lambda: kh.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                    intermediate_dim=32, max_sequence_length=12),
    "gpt2": lambda: kh.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                    intermediate_dim=32, max_sequence_length=12),
    "gemma": lambda: kh.GemmaBackbone(vocabulary_size=50, num_layers=2, num_query_heads=2, num_key_value_heads=1,
                                      hidden_dim=16, intermediate_dim=32, head_dim=8),
    "llama": lambda: kh.LlamaBackbone(vocabulary_size=50, num_layers=2, num_query_heads=2, num_key_value_heads=1,
                                      hidden_dim=16, intermediate_dim=32),
    "vit": lambda: kh.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                                  mlp_dim=32),
    "dinov2": lambda: kh.DINOV2Backbone(patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                        image_shape=(16, 16, 3)),
    # MiT's encoder block leaves sr_ratio out of its get_config(): the round trip must still be exact.
    "mit": lambda: kh.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                  layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[3, 3],
                                  layerwise_strides=[2, 2], hidden_dims=[8, 16], image_shape=(16, 16, 3)),
}


def inputs_for(name, model):
    if name in ("vit", "dinov2", "mit"):
        images = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")
        return {key: images for key in model.input} if isinstance(model.input, dict) else images
    ids, mask = text_batch()
    names = [t.name for t in model.inputs]
    return {n: (ids if "token" in n else mask if "mask" in n else np.zeros_like(ids)) for n in names}


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def backbone(request):
    keras.utils.set_random_seed(0)
    return request.param, BACKBONES[request.param]()


def test_round_trip_is_bit_identical(backbone):
    name, model = backbone
    x = inputs_for(name, model)
    result = kerasnb.apply(model, [])
    assert set(r.status for r in result.report) <= {"kept", "no_weights"}, result.report
    for old, new in zip(keras.tree.flatten(model(x)), keras.tree.flatten(result.model(x))):
        np.testing.assert_array_equal(to_numpy(old), to_numpy(new))
    ids = {id(v) for v in model.weights}
    assert not any(id(v) in ids for v in result.model.weights)


def test_a_block_replaced_by_an_identical_copy(backbone):
    """The block is called with its mask keyword: the copy receives it and computes the same."""
    name, model = backbone
    blocks = [l for l in model.layers if "transformer_layer" in l.name or "encoder_layer" in l.name
              or "decoder_block" in l.name or "transformer_block" in l.name]
    if not blocks:
        pytest.skip(f"{name}: its blocks are not top-level layers")
    block = blocks[-1]
    twin = type(block).from_config({**kerasnb._graph.config_of(block), "name": block.name + "_copy"}) \
        if name != "llama" else None
    if twin is None:
        pytest.skip("LlamaTransformerDecoder.get_config() raises in this keras-hub version")
    result = kerasnb.replace(model, block.name, twin)
    new_block = result.model.get_layer(block.name + "_copy")
    for old_var, new_var in zip(block.weights, new_block.weights):
        new_var.assign(old_var)
    x = inputs_for(name, model)
    for old, new in zip(keras.tree.flatten(model(x)), keras.tree.flatten(result.model(x))):
        np.testing.assert_array_equal(to_numpy(old), to_numpy(new))


def test_frozen_backbone_stays_frozen():
    keras.utils.set_random_seed(0)
    model = BACKBONES["bert"]()
    model.trainable = False
    result = kerasnb.apply(model, [])
    assert len(result.model.trainable_variables) == 0
    thawed = kerasnb.apply(model, [])  # the user's model is not changed by the round trip
    assert len(model.trainable_variables) == 0 and len(thawed.model.weights) == len(model.weights)


def test_mit_block_whose_config_drops_an_argument_is_made_again_faithfully_edit_after_edit():
    """MiT's encoder block leaves sr_ratio out of its config: made from the recorded arguments instead,
    so the block stays exact through a second edit too, and the notes warn that a .keras file would not
    load back."""
    keras.utils.set_random_seed(0)
    model = BACKBONES["mit"]()
    x = inputs_for("mit", model)
    first = kerasnb.apply(model, [])
    assert any("get_config() leaves out" in n and "hierarchical_encoder_0_0" in n
               for n in first.notes), first.notes
    second = kerasnb.delete(first.model, "hierarchical_encoder_1_0")
    assert second.report.status("hierarchical_encoder_0_0") == "kept"
    inner = keras.Model(model.inputs, model.get_layer("hierarchical_encoder_0_0").output)
    inner_new = keras.Model(second.model.inputs, second.model.get_layer("hierarchical_encoder_0_0").output)
    np.testing.assert_array_equal(to_numpy(inner(x)), to_numpy(inner_new(x)))


class TestDropBlocks:
    @pytest.fixture(scope="class")
    def gpt2(self):
        keras.utils.set_random_seed(0)
        return BACKBONES["gpt2"]()

    def test_a_block_with_a_mask_passes_on_the_residual_stream(self, gpt2):
        ids, mask = text_batch()
        result = kerasnb.delete(gpt2, "transformer_layer_1")
        assert result.report.status("transformer_layer_1") == "removed"
        assert result.report.status("transformer_layer_0") == "kept"
        assert any("passes on its input from 'transformer_layer_0'" in n for n in result.notes)
        # Without block 1, the final norm reads block 0's output, bit for bit.
        x = {"token_ids": ids, "padding_mask": mask}
        before = keras.Model(gpt2.input, gpt2.get_layer("transformer_layer_0").output)(x)
        after = keras.Model(result.model.input, result.model.get_layer("layer_norm").input)(x)
        np.testing.assert_array_equal(to_numpy(after), to_numpy(before))

    def test_several_blocks_in_one_rebuild(self, gpt2):
        result = kerasnb.delete(gpt2, ["transformer_layer_0", "transformer_layer_1"])
        assert set(result.report.with_status("removed")) == {"transformer_layer_0", "transformer_layer_1"}
        assert result.model.count_params() < gpt2.count_params()

    def test_keep_input_names_the_input_and_bad_names_are_refused(self, gpt2):
        with pytest.raises(kerasnb.InvalidEdit, match="keep_input names one input of 'transformer_layer_1'"):
            kerasnb.delete(gpt2, "transformer_layer_1", keep_input="nothing")
        result = kerasnb.delete(gpt2, "transformer_layer_1", keep_input="transformer_layer_0")
        assert result.report.status("transformer_layer_1") == "removed"


class TestLoRAInsideBlocks:
    def test_enable_train_merge_on_gpt2_attention(self):
        keras.utils.set_random_seed(0)
        gpt2 = BACKBONES["gpt2"]()
        ids, mask = text_batch()
        x = {"token_ids": ids, "padding_mask": mask}
        lora = kerasnb.enable_lora(gpt2, "*self_attention/query", rank=2)
        assert set(kerasnb.lora.lora_layers(lora.model)) == {
            "transformer_layer_0/self_attention/query", "transformer_layer_1/self_attention/query"}
        assert lora.report.status("transformer_layer_0") == "kept"
        assert "LoRA rank 2" in lora.report.row("transformer_layer_0").reason
        np.testing.assert_array_equal(to_numpy(lora.model(x)), to_numpy(gpt2(x)))
        assert kerasnb.lora.lora_layers(gpt2) == {}
        again = kerasnb.apply(lora.model, [])  # a round trip keeps LoRA inside the blocks
        assert set(kerasnb.lora.lora_layers(again.model)) == set(kerasnb.lora.lora_layers(lora.model))
        assert again.report.status("transformer_layer_0") == "kept"
        for variable in lora.model.trainable_variables:  # move the factors away from zero
            variable.assign(variable + 0.05)
        merged = kerasnb.merge_lora(lora.model)
        assert kerasnb.lora.lora_layers(merged.model) == {}
        assert merged.report.status("transformer_layer_0") == "folded"
        np.testing.assert_allclose(to_numpy(merged.model(x)), to_numpy(lora.model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_float16"])
def test_dtype_policy_is_kept_and_the_edited_model_saves(dtype, tmp_path):
    keras.utils.set_random_seed(0)
    gpt2 = kh.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                           max_sequence_length=12, dtype=dtype)
    result = kerasnb.delete(gpt2, "transformer_layer_1")
    policies = {l.name: l.dtype_policy.name for l in gpt2.layers if l.name != "transformer_layer_1"}
    assert {l.name: l.dtype_policy.name for l in result.model.layers} == policies
    ids, mask = text_batch()
    x = {"token_ids": ids, "padding_mask": mask}
    path = tmp_path / "edited.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x)).astype("float32"),
                                  keras.ops.convert_to_numpy(result.model(x)).astype("float32"))


class TestTaskModels:
    @pytest.fixture(scope="class")
    def causal_lm(self):
        keras.utils.set_random_seed(0)
        vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġa": 4, "Ġb": 5, "Ġc": 6, "ab": 7}
        tokenizer = kh.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b"])
        preprocessor = kh.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=8)
        backbone = kh.GPT2Backbone(vocabulary_size=len(vocabulary), num_layers=3, num_heads=2, hidden_dim=16,
                                   intermediate_dim=32, max_sequence_length=16)
        return kh.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)

    def batch(self):
        return {"token_ids": np.array([[1, 2, 3, 0, 0, 0, 0, 0]], "int32"),
                "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], "int32")}

    def test_round_trip_keeps_the_class_and_the_tied_embedding_row(self, causal_lm):
        result = kerasnb.apply(causal_lm, [])
        assert type(result.model) is type(causal_lm)
        assert result.model.preprocessor is causal_lm.preprocessor
        np.testing.assert_array_equal(to_numpy(result.model(self.batch())), to_numpy(causal_lm(self.batch())))
        rows = [row.layer for row in result.report if row.layer.endswith("token_embedding")]
        assert rows == [f"{causal_lm.backbone.name}/token_embedding"]
        assert result.report.status("token_embedding") == "kept"

    def test_lora_leaves_the_tied_embedding_kept(self, causal_lm):
        """LoRA starts as a no-op, so the logits call of the tied embedding sees what it saw: kept."""
        result = kerasnb.enable_lora(causal_lm, "*attention/query", rank=2)
        assert type(result.model) is type(causal_lm)
        assert result.report.status("token_embedding") == "kept"
        assert result.report.status(causal_lm.backbone.name) == "kept"
        np.testing.assert_array_equal(to_numpy(result.model(self.batch())), to_numpy(causal_lm(self.batch())))
        dropped = kerasnb.delete(causal_lm, [f"{causal_lm.backbone.name}/transformer_layer_1"])
        assert dropped.report.status("token_embedding") == "kept_input_changed"  # its logits call sees new input

    # Keras says so of every keras-hub task it loads (their compile() is their own): not ours to fix.
    @pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called:UserWarning")
    def test_dropped_block_still_generates_and_saves(self, causal_lm, tmp_path):
        result = kerasnb.delete(causal_lm, [f"{causal_lm.backbone.name}/transformer_layer_1"])
        assert type(result.model) is type(causal_lm)
        assert result.model.backbone.num_layers == 2 and len(result.model.backbone.transformer_layers) == 2
        assert isinstance(result.model.generate("a b", max_length=8), str)
        path = tmp_path / "edited_lm.keras"
        result.model.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(causal_lm)
        np.testing.assert_array_equal(to_numpy(loaded(self.batch())), to_numpy(result.model(self.batch())))
        assert causal_lm.backbone.num_layers == 3  # the user's task is untouched

    def test_a_block_named_without_its_backbone_gets_the_path_suggested(self, causal_lm):
        with pytest.raises(kerasnb.LayerNotFound, match=f"did you mean '{causal_lm.backbone.name}/transformer_layer_1'"):
            kerasnb.delete(causal_lm, "transformer_layer_1")

    def test_classifier_keeps_its_head(self):
        keras.utils.set_random_seed(0)
        backbone = BACKBONES["bert"]()
        classifier = kh.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)
        ids, mask = text_batch()
        x = {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}
        result = kerasnb.apply(classifier, [])
        assert type(result.model) is type(classifier)
        np.testing.assert_array_equal(to_numpy(result.model(x)), to_numpy(classifier(x)))

    def test_a_frozen_classifier_stays_frozen_layer_by_layer(self):
        """Every flag as the user left it: the task's own, its weightless head layers', the backbone's."""
        keras.utils.set_random_seed(0)
        classifier = kh.BertTextClassifier(backbone=BACKBONES["bert"](), num_classes=3, preprocessor=None)
        classifier.trainable = False
        result = kerasnb.apply(classifier, [])

        def flags(model):
            return [layer.trainable for layer in model._flatten_layers(include_self=True, recursive=True)]

        assert type(result.model) is type(classifier) and flags(result.model) == flags(classifier)
        assert result.model.trainable is False and result.model.get_layer("classifier_dropout").trainable is False


def test_lora_on_gemma_whose_graph_has_raw_ops():
    """Gemma scales its embeddings with a raw keras.ops multiply in the graph: LoRA still goes on."""
    keras.utils.set_random_seed(0)
    gemma = BACKBONES["gemma"]()
    x = inputs_for("gemma", gemma)
    lora = kerasnb.enable_lora(gemma, "*attention/query", rank=2)
    assert len(kerasnb.lora.lora_layers(lora.model)) == 2
    np.testing.assert_array_equal(to_numpy(lora.model(x)), to_numpy(gemma(x)))
    merged = kerasnb.merge_lora(lora.model)
    assert kerasnb.lora.lora_layers(merged.model) == {}
