"""LoRA on keras-hub backbones whose blocks make auto-named sub-layers: enabled and merged, nothing lost.

Each family is built once, tiny (the configs of keras-hub's own backbone tests, shrunk where only
speed is at stake), with every weight perturbed after building so that no initialiser can hide a
variable left at its initial value. LoRA goes on the attention projections inside the blocks;
rebuilt blocks get new auto-generated sub-layer names, so only pairing by structure keeps every
trained value. Skipped, with the reason, where keras-hub is not installed.
"""

import re

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, to_numpy

import kerasnb
from kerasnb.weights import is_lora_factor

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
kh = keras_hub.models


def _siglip():
    from keras_hub.src.models.siglip.siglip_text_encoder import SigLIPTextEncoder
    from keras_hub.src.models.siglip.siglip_vision_encoder import SigLIPVisionEncoder

    return kh.SigLIPBackbone(
        vision_encoder=SigLIPVisionEncoder(16, 64, 2, 2, 128, image_shape=(32, 32, 3), name="vision_encoder"),
        text_encoder=SigLIPTextEncoder(64, 64, 64, 2, 2, 128, max_sequence_length=8, name="text_encoder"))


def _sam():
    from keras_hub.src.models.sam.sam_mask_decoder import SAMMaskDecoder
    from keras_hub.src.models.sam.sam_prompt_encoder import SAMPromptEncoder

    encoder = kh.ViTDetBackbone(hidden_size=16, num_layers=2, intermediate_dim=64, num_heads=2,
                                global_attention_layer_indices=[1], patch_size=16, num_output_channels=8,
                                window_size=2, image_shape=(16, 16, 3))
    return kh.SAMBackbone(
        image_encoder=encoder,
        prompt_encoder=SAMPromptEncoder(hidden_size=8, image_embedding_size=(1, 1), input_image_size=(16, 16),
                                        mask_in_channels=16),
        mask_decoder=SAMMaskDecoder(num_layers=2, hidden_size=8, intermediate_dim=32, num_heads=2, embedding_dim=8,
                                    num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=8))


def _dfine():
    stages = kh.HGNetV2Backbone(
        stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False], depths=[1, 1],
        hidden_sizes=[16, 32], embedding_size=8, use_learnable_affine_block=True, hidden_act="relu",
        image_shape=(None, None, 3), out_features=["stage1", "stage2"])
    return kh.DFineBackbone(
        backbone=stages, decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=10, num_labels=4,
        hidden_dim=16, learn_initial_query=False, num_queries=10, anchor_image_size=(32, 32), feat_strides=[4, 8],
        num_feature_levels=2, encoder_in_channels=[16, 32], encode_proj_layers=[1], num_attention_heads=2,
        encoder_ffn_dim=32, num_encoder_layers=1, hidden_expansion=0.5, depth_multiplier=0.5, eval_idx=-1,
        num_decoder_layers=3, decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2],
        lqe_hidden_dim=16, num_lqe_layers=2, out_features=["stage1", "stage2"], image_shape=(None, None, 3), seed=0)


QUERY_VALUE = "*self_attention/[qv]*"
# family: (builder, LoRA match, how many layers get LoRA)
FAMILIES = {
    "mixtral": (lambda: kh.MixtralBackbone(vocabulary_size=10, num_layers=2, num_query_heads=8, num_key_value_heads=4,
                                           hidden_dim=16, intermediate_dim=8, num_experts=2, top_k=2,
                                           sliding_window=2), QUERY_VALUE, 4),
    "qwen_moe": (lambda: kh.QwenMoeBackbone(vocabulary_size=20, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                            hidden_dim=16, intermediate_dim=32, moe_intermediate_dim=16,
                                            shared_expert_intermediate_dim=32, num_experts=4, top_k=2,
                                            norm_top_k_prob=True, decoder_sparse_step=1), QUERY_VALUE, 4),
    "qwen3_moe": (lambda: kh.Qwen3MoeBackbone(vocabulary_size=20, num_layers=2, num_query_heads=4,
                                              num_key_value_heads=2, hidden_dim=16, intermediate_dim=32, head_dim=2,
                                              moe_intermediate_dim=16, num_experts=4, top_k=2, norm_top_k_prob=True,
                                              decoder_sparse_step=1), QUERY_VALUE, 4),
    "siglip": (_siglip, re.compile(r"/(query|value)$"), 10),
    "t5": (lambda: kh.T5Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=2, intermediate_dim=4),
           re.compile(r"self_attention/(query|value)_projector$"), 8),
    # keras-hub's test has a vocabulary of 10,000: 100 computes the same way, faster.
    "moonshine": (lambda: kh.MoonshineBackbone(vocabulary_size=100, filter_dim=64, encoder_num_layers=2,
                                               decoder_num_layers=2, hidden_dim=64, intermediate_dim=512,
                                               encoder_num_heads=8, decoder_num_heads=8),
                  re.compile(r"/(query|value)$"), 12),
    # Every attention projection of SAM's ViTDet encoder is auto-named (".../dense_9").
    "sam": (_sam, re.compile(r"multi_head_attention_with_relative_pe[^/]*/"), 4),
    # MiT's blocks auto-name their projections too, and their get_config() drops sr_ratio.
    "mit": (lambda: kh.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                   layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[3, 3],
                                   layerwise_strides=[2, 2], hidden_dims=[8, 16], image_shape=(16, 16, 3)),
            re.compile(r"seg_former_multihead_attention[^/]*/"), 9),
    # D-FINE's decoder config holds one of its own variables.
    "dfine": (_dfine, re.compile(r"(q|v)_proj$"), 8),
    # LlamaTransformerDecoder.get_config() raises: made again from its recorded arguments.
    "llama": (lambda: kh.LlamaBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                       hidden_dim=8, intermediate_dim=8), QUERY_VALUE, 4),
    # DeiTEncoder.get_config() raises too.
    "deit": (lambda: kh.DeiTBackbone(image_shape=(28, 28, 3), patch_size=4, num_layers=2, hidden_dim=12, num_heads=2,
                                     intermediate_dim=24, use_mha_bias=True),
             re.compile(r"mha/(query|value)$"), 4),
}


def perturbed(model, seed=0, only=lambda variable: True):
    """Every float variable moved off its initial value (LoRA's zero factor included, where asked)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "float" in str(variable.dtype) and only(variable):
            value = to_numpy(variable)
            variable.assign(value + rng.normal(0, 0.1, value.shape).astype(value.dtype))
    return model


# Sizes an input leaves open (None), where the family needs a particular one.
OPEN_SIZES = {"moonshine": {"encoder_input_values": (1600, 1), "encoder_padding_mask": (1600,)},
              "dfine": {"pixel_values": (32, 32, 3)},
              "sam": {"points": (1, 2), "labels": (1,), "boxes": (1, 2, 2), "masks": (0, 16, 16, 1)}}


def inputs_for(family, model):
    """Two examples; token ids in range, the second one padded where the model takes a padding mask."""
    rng = np.random.default_rng(1)
    batch = {}
    for tensor in model.inputs:
        name = tensor.name
        shape = OPEN_SIZES.get(family, {}).get(name) or tuple(8 if d is None else d for d in tensor.shape[1:])
        if name.endswith("padding_mask"):
            mask = np.ones((2,) + shape, dtype=tensor.dtype)
            mask[1, shape[0] // 2:] = 0
            batch[name] = mask
        elif "int" in str(tensor.dtype):
            batch[name] = rng.integers(1, 4, (2,) + shape).astype(tensor.dtype)
        else:
            batch[name] = rng.normal(0, 1, (2,) + shape).astype(tensor.dtype)
    return next(iter(batch.values())) if len(batch) == 1 else batch


def outputs(model, x):
    return [to_numpy(t).astype("float64") for t in keras.tree.flatten(model(x))]


def shared(a, b):
    """Variables that two models hold as one object."""
    return {id(v) for v in a.variables} & {id(v) for v in b.variables}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request):
    family = request.param
    build, match, _ = FAMILIES[family]
    keras.utils.set_random_seed(0)
    original = perturbed(build())
    x = inputs_for(family, original)
    before = outputs(original, x)
    state = snapshot(original)
    lora = kerasnb.enable_lora(original, match, rank=2)
    lora_outputs = outputs(lora.model, x)
    # Factors moved off zero (as training would), so that merging has something to fold in.
    perturbed(lora.model, seed=2, only=is_lora_factor)
    trained_outputs = outputs(lora.model, x)
    merged = kerasnb.merge_lora(lora.model)
    return dict(family=family, original=original, x=x, before=before, state=state, lora=lora,
                lora_outputs=lora_outputs, trained_outputs=trained_outputs, merged=merged,
                merged_outputs=outputs(merged.model, x))


def test_lora_model_computes_what_the_original_did(case):
    lora = case["lora"]
    assert len(kerasnb.lora.lora_layers(lora.model)) == FAMILIES[case["family"]][2]
    assert len(case["lora_outputs"]) == len(case["before"])
    for got, want in zip(case["lora_outputs"], case["before"]):
        np.testing.assert_array_equal(got, want)  # Keras adds the zero factor's product: exact
    assert set(lora.report.to_frame()["status"]) <= {"kept", "no_weights"}
    assert not shared(case["original"], lora.model)


def test_merged_model_computes_what_the_lora_model_did(case):
    merged, lora = case["merged"], case["lora"].model
    assert kerasnb.lora.lora_layers(merged.model) == {}
    assert any(a.shape and not np.allclose(a, b) for a, b in zip(case["trained_outputs"], case["before"])), \
        "the perturbed factors change the outputs, so a merge that dropped them would show"
    for got, want in zip(case["merged_outputs"], case["trained_outputs"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    factors = sum(int(np.prod(v.shape)) for v in lora.weights if is_lora_factor(v))
    assert merged.model.count_params() == lora.count_params() - factors
    expected = case["original"].count_params()
    if case["family"] == "dfine":
        # The backbone tracks denoising_class_embed (used in training only) but no graph layer calls it, so no
        # rebuild carries it yet (issue 17, "weights dropped"); every other variable is there once.
        unused = sum(int(np.prod(v.shape)) for v in case["original"].weights
                     if v.path.startswith("denoising_class_embed/"))
        assert merged.model.count_params() in (expected, expected - unused)
    else:
        assert merged.model.count_params() == expected
    assert not shared(lora, merged.model) and not shared(case["original"], merged.model)


def test_the_original_is_unchanged(case):
    original = case["original"]
    assert_unchanged(original, case["state"])
    assert kerasnb.lora.lora_layers(original) == {}
    for got, want in zip(outputs(original, case["x"]), case["before"]):
        np.testing.assert_array_equal(got, want)
