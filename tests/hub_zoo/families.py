"""Every keras-hub backbone family, tiny: how to build it and what to feed it.

The config values follow keras-hub's own ``*_backbone_test.py`` files (keras-team/keras-hub),
shrunk where those are large (224x224 images, 16,000 audio samples, 16 layers). One family per
distinct ``keras_hub.models.*Backbone`` class; ``ALIASES`` names the classes exported twice.
Multimodal families whose tests also build a text-only variant (Gemma3, Gemma3n, Gemma4) are
built text-only: the zoo is about the graph surgery, and the text path is what their tasks edit.
"""

from __future__ import annotations

import numpy as np

# Exported twice under another name: the same class, tested once.
ALIASES = {"ESM": "ESM2", "Qwen": "Qwen2", "SmolLM": "SmolLM3"}
# Exported base classes, not families.
NOT_FAMILIES = {"Backbone", "FeaturePyramidBackbone"}


def _kh():
    import keras_hub

    return keras_hub


def _m():
    return _kh().models


def _resnet(filters=(64, 8, 8), blocks=(1, 1, 1), strides=(1, 2, 2), block_type="basic_block", **kw):
    # keras-hub requires 64 filters in the first stack.
    return _m().ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=list(filters),
                               stackwise_num_blocks=list(blocks), stackwise_num_strides=list(strides),
                               block_type=block_type, use_pre_activation=False, **kw)


# ----------------------------------------------------------------------------- builders
# Each builder returns the backbone; INPUTS below says how to make a batch for it.

def _albert():
    return _m().AlbertBackbone(vocabulary_size=10, num_layers=2, num_heads=2, num_groups=1, num_inner_repetitions=1,
                               embedding_dim=16, hidden_dim=8, intermediate_dim=16, max_sequence_length=5)


def _bart():
    return _m().BartBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                             max_sequence_length=5)


def _basnet():
    encoder = _resnet(filters=(64, 64, 64, 64), blocks=(1, 1, 1, 1), strides=(1, 2, 2, 2))
    return _m().BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(32, 32, 3))


def _bert():
    return _m().BertBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                             max_sequence_length=5)


def _blip2():
    m = _m()
    vision = m.BLIP2VisionEncoder(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8,
                                  intermediate_dim=16, use_patch_bias=True, use_class_token=True, use_mha_bias=True,
                                  use_mlp_bias=True, dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_range=0.02,
                                  dtype="float32")
    qformer = m.BLIP2QFormer(num_query_tokens=2, num_layers=2, num_heads=2, hidden_dim=4, intermediate_dim=8,
                             vision_dim=8, cross_attention_frequency=1, dropout=0.0, layer_norm_epsilon=1e-6,
                             dtype="float32")
    language = m.BLIP2CustomOPT(vocabulary_size=14, num_layers=2, num_heads=2, hidden_dim=4, intermediate_dim=8,
                                num_query_tokens=2, qformer_hidden_dim=4, max_sequence_length=10, dropout=0.0,
                                language_projection=None, dtype="float32")
    return m.BLIP2Backbone(vision_encoder=vision, qformer=qformer, language_model=language)


def _bloom():
    return _m().BloomBackbone(vocabulary_size=10, num_layers=2, num_heads=4, hidden_dim=8, intermediate_dim=16)


def _clip():
    m = _m()
    vision = m.CLIPVisionEncoder(8, 16, 2, 2, 32, image_shape=(16, 16, 3), name="vision_encoder")
    text = m.CLIPTextEncoder(20, 16, 16, 2, 2, 32, max_sequence_length=8, name="text_encoder")
    return m.CLIPBackbone(vision_encoder=vision, text_encoder=text, projection_dim=16)


def _cspnet():
    return _m().CSPNetBackbone(stem_filters=8, stem_kernel_size=3, stem_strides=1, stackwise_strides=2,
                               stackwise_depth=[1, 1], stackwise_num_filters=[8, 16], image_shape=(32, 32, 3),
                               down_growth=True, bottle_ratio=(0.5,) + (1.0,), block_ratio=(1.0,) + (0.5,),
                               expand_ratio=(2.0,) + (1.0,), block_type="dark_block", stage_type="csp",
                               stem_padding="same")


def _hgnetv2_for_dfine():
    return _m().HGNetV2Backbone(stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3],
                                                                                  [16, 8, 32, 1, 1, 3]],
                                apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
                                depths=[1, 1], hidden_sizes=[16, 32], embedding_size=8,
                                use_learnable_affine_block=True, hidden_act="relu", image_shape=(None, None, 3),
                                out_features=["stage1", "stage2"])


def _dfine():
    return _m().DFineBackbone(
        backbone=_hgnetv2_for_dfine(), decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=10,
        num_labels=4, hidden_dim=16, learn_initial_query=False, num_queries=10, anchor_image_size=(32, 32),
        feat_strides=[4, 8], num_feature_levels=2, encoder_in_channels=[16, 32], encode_proj_layers=[1],
        num_attention_heads=2, encoder_ffn_dim=32, num_encoder_layers=1, hidden_expansion=0.5, depth_multiplier=0.5,
        eval_idx=-1, num_decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=32, decoder_n_points=[2, 2],
        lqe_hidden_dim=16, num_lqe_layers=2, out_features=["stage1", "stage2"], image_shape=(32, 32, 3), seed=0)


def _dinov2():
    return _m().DINOV2Backbone(patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                               layer_scale_init_value=1.0, num_register_tokens=0, use_swiglu_ffn=False,
                               image_shape=(16, 16, 3), position_embedding_shape=(16, 16, 3))


def _dinov3():
    return _m().DINOV3Backbone(patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                               layer_scale_init_value=1.0, num_register_tokens=4, use_gated_mlp=False,
                               image_shape=(16, 16, 3))


def _deberta_v3():
    return _m().DebertaV3Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                  max_sequence_length=5)


def _deeplab_v3():
    encoder = _resnet(filters=(64, 64, 64), blocks=(1, 1, 1), strides=(1, 2, 2), image_shape=(32, 32, 3))
    return _m().DeepLabV3Backbone(image_encoder=encoder, low_level_feature_key="P2", spatial_pyramid_pooling_key="P4",
                                  dilation_rates=[6, 12, 18], upsampling_size=4, image_shape=(32, 32, 3))


def _deit():
    return _m().DeiTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, hidden_dim=16, num_heads=2,
                             intermediate_dim=32, use_mha_bias=True)


def _densenet():
    return _m().DenseNetBackbone(stackwise_num_repeats=[1, 2], compression_ratio=0.5, growth_rate=2,
                                 image_shape=(32, 32, 3))


def _depth_anything():
    encoder = _m().DINOV2Backbone(4, 4, 16, 2, 32, 1.0, 0, image_shape=(36, 36, 3),
                                  position_embedding_shape=(36, 36, 3), apply_layernorm=True, name="image_encoder")
    return _m().DepthAnythingBackbone(image_encoder=encoder, reassemble_factors=[4, 2, 1, 0.5],
                                      neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8, head_hidden_dim=8,
                                      head_in_index=-1, feature_keys=["stage1", "stage2", "stage3", "stage4"])


def _distil_bert():
    return _m().DistilBertBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                   max_sequence_length=5)


def _edrec():
    return _m().EdRecBackbone(vocab_size=10, num_layers_enc=2, num_layers_dec=2, num_heads=2, hidden_dim=8,
                              intermediate_dim=16, dropout=0.0)


def _efficientnet():
    return _m().EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1], stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16], stackwise_expansion_ratios=[1, 4], stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
        stackwise_strides=[1, 2], stackwise_block_types=["fused", "unfused"], stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False], width_coefficient=1.0, depth_coefficient=1.0, image_shape=(32, 32, 3))


def _electra():
    return _m().ElectraBackbone(vocab_size=10, num_layers=2, num_heads=2, hidden_dim=8, embedding_dim=8,
                                intermediate_dim=16, max_sequence_length=5)


def _esm():
    return _m().ESM2Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)


def _f_net():
    return _m().FNetBackbone(vocabulary_size=10, num_layers=2, hidden_dim=8, intermediate_dim=16,
                             max_sequence_length=5)


def _falcon():
    return _m().FalconBackbone(vocabulary_size=10, num_layers=2, num_attention_heads=2, hidden_dim=16,
                               intermediate_dim=32)


def _flux():
    return _m().FluxBackbone(input_channels=16, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=1,
                             depth_single_blocks=1, axes_dim=[4, 6, 6], theta=10_000, use_bias=True,
                             guidance_embed=True, image_shape=(4, 16), text_shape=(4, 16), image_ids_shape=(4, 3),
                             text_ids_shape=(4, 3), y_shape=(16,))


def _gemma():
    return _m().GemmaBackbone(vocabulary_size=20, num_layers=2, num_query_heads=4, num_key_value_heads=1,
                              hidden_dim=16, intermediate_dim=32, head_dim=4, layer_norm_epsilon=1e-6)


def _gemma3():
    return _m().Gemma3Backbone(vocabulary_size=20, image_size=16, num_layers=2, num_query_heads=2, num_key_value_heads=1,
                               hidden_dim=8, intermediate_dim=16, head_dim=4, query_head_dim_normalize=True,
                               use_query_key_norm=True, use_post_ffw_norm=True, use_post_attention_norm=True,
                               final_logit_soft_cap=None, attention_logit_soft_cap=None,
                               use_sliding_window_attention=True, sliding_window_size=1024, vision_encoder=None)


def _gemma3n():
    return _m().Gemma3nBackbone(
        text_vocab_size=10, text_hidden_size=4, num_hidden_layers=1, pad_token_id=0, num_attention_heads=1,
        num_key_value_heads=1, head_dim=4, intermediate_size=[8], hidden_activation="gelu_approximate",
        layer_types=["full_attention"], sliding_window=4, rope_theta=10000.0, max_position_embeddings=8,
        vocab_size_per_layer_input=10, hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1)


def _gemma4():
    return _m().Gemma4Backbone(vocabulary_size=20, image_size=16, num_layers=2, num_query_heads=2,
                               num_key_value_heads=1, hidden_dim=8, intermediate_dim=16, head_dim=4,
                               use_sliding_window_attention=True, sliding_window_size=16,
                               attention_logit_soft_cap=None, final_logit_soft_cap=None, vision_encoder=None)


def _gpt2():
    return _m().GPT2Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                             max_sequence_length=5)


def _gpt_neox():
    return _m().GPTNeoXBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=16,
                                max_sequence_length=5)


def _gpt_oss():
    return _m().GptOssBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                               hidden_dim=16, intermediate_dim=8, num_experts=2, top_k=2, sliding_window=2)


def _hgnetv2():
    return _m().HGNetV2Backbone(embedding_size=8, stem_channels=[3, 8, 8], hidden_act="relu",
                                use_learnable_affine_block=False, image_shape=(32, 32, 3), depths=[1, 1],
                                hidden_sizes=[16, 32], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3],
                                                                                [16, 8, 32, 1, 1, 3]],
                                apply_downsample=[False, True], use_lightweight_conv_block=[False, False],
                                out_features=["stem", "stage1", "stage2"])


def _llama():
    return _m().LlamaBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                              hidden_dim=8, intermediate_dim=8)


def _llama3():
    return _m().Llama3Backbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                               hidden_dim=8, intermediate_dim=16)


def _metaclip2():
    m = _m()
    vision = m.MetaCLIP2VisionEncoder(8, 16, 2, 2, 32, image_shape=(16, 16, 3), name="vision_encoder")
    text = m.MetaCLIP2TextEncoder(20, 16, 16, 2, 2, 32, max_sequence_length=8, name="text_encoder")
    return m.MetaCLIP2Backbone(vision_encoder=vision, text_encoder=text, projection_dim=16)


def _mistral():
    return _m().MistralBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                hidden_dim=16, intermediate_dim=8, sliding_window=2)


def _mit():
    return _m().MiTBackbone(layerwise_depths=[1, 1], image_shape=(32, 32, 3), hidden_dims=[4, 8], num_layers=2,
                            layerwise_num_heads=[1, 2], layerwise_sr_ratios=[8, 4], max_drop_path_rate=0.1,
                            layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2])


def _mixtral():
    return _m().MixtralBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                hidden_dim=16, intermediate_dim=8, num_experts=2, top_k=2, sliding_window=2)


def _mobilenet():
    return _m().MobileNetBackbone(
        stackwise_expansion=[[16, 24], [32]], stackwise_num_blocks=[2, 1], stackwise_num_filters=[[8, 8], [16]],
        stackwise_kernel_size=[[3, 3], [5]], stackwise_num_strides=[[2, 1], [2]],
        stackwise_se_ratio=[[None, None], [0.25]], stackwise_activation=[["relu", "relu"], ["hard_swish"], ["hard_swish"]],
        stackwise_padding=[[1, 1], [2]], output_num_filters=32, input_activation="hard_swish",
        output_activation="hard_swish", input_num_filters=8, image_shape=(32, 32, 3), depthwise_filters=8,
        depthwise_stride=2, depthwise_residual=False, squeeze_and_excite=0.5, last_layer_filter=32)


def _mobilenetv5():
    return _m().MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir", "uir"]], stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[8], [16, 16]], stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]], stackwise_exp_ratios=[[4.0], [2.0, 2.0]],
        stackwise_se_ratios=[[0.0], [0.0, 0.0]], stackwise_dw_kernel_sizes=[[0], [5, 5]],
        stackwise_dw_start_kernel_sizes=[[0], [0, 0]], stackwise_dw_end_kernel_sizes=[[0], [0, 0]],
        stackwise_exp_kernel_sizes=[[3], [0, 0]], stackwise_pw_kernel_sizes=[[1], [0, 0]],
        stackwise_num_heads=[[0], [0, 0]], stackwise_key_dims=[[0], [0, 0]], stackwise_value_dims=[[0], [0, 0]],
        stackwise_kv_strides=[[0], [0, 0]], stackwise_use_cpe=[[False], [False, False]], image_shape=(32, 32, 3),
        stem_size=8, use_msfa=False)


def _moonshine():
    return _m().MoonshineBackbone(
        vocabulary_size=20, filter_dim=16, encoder_num_layers=2, decoder_num_layers=2, hidden_dim=16,
        intermediate_dim=32, encoder_num_heads=2, decoder_num_heads=2, feedforward_expansion_factor=4,
        encoder_use_swiglu_activation=False, decoder_use_swiglu_activation=True, max_position_embeddings=64,
        pad_head_dim_to_multiple_of=None, partial_rotary_factor=0.62, dropout=0.0, initializer_range=0.02,
        rope_theta=10000.0, attention_bias=False, attention_dropout=0.0)


def _opt():
    return _m().OPTBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                            max_sequence_length=5)


def _pali_gemma():
    return _m().PaliGemmaBackbone(vocabulary_size=20, image_size=16, num_layers=2, num_query_heads=2,
                                  num_key_value_heads=1, hidden_dim=8, intermediate_dim=16, head_dim=4,
                                  vit_patch_size=4, vit_num_layers=2, vit_num_heads=2, vit_hidden_dim=8,
                                  vit_intermediate_dim=16)


def _parseq():
    m = _m()
    encoder = m.ViTBackbone(image_shape=(16, 32, 3), patch_size=(4, 8), num_layers=2, num_heads=2, hidden_dim=16,
                            mlp_dim=32, use_class_token=False, name="image_encoder")
    return m.PARSeqBackbone(image_encoder=encoder, vocabulary_size=20, max_label_length=6, decoder_hidden_dim=16,
                            num_decoder_layers=1, num_decoder_heads=2, decoder_mlp_dim=32, dropout_rate=0.0,
                            attention_dropout=0.0)


def _phi3():
    return _m().Phi3Backbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                             hidden_dim=8, intermediate_dim=8)


def _qwen2():
    return _m().Qwen2Backbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                              hidden_dim=8, intermediate_dim=16)


def _qwen3():
    return _m().Qwen3Backbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2, head_dim=2,
                              hidden_dim=8, intermediate_dim=8)


_QWEN3_5_LINEAR = dict(layer_types=["linear_attention", "full_attention"], partial_rotary_factor=0.25,
                       linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=4,
                       linear_value_head_dim=4, linear_conv_kernel_dim=4)


def _qwen3_5():
    return _m().Qwen3_5Backbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                head_dim=8, hidden_dim=16, intermediate_dim=32, **_QWEN3_5_LINEAR)


def _qwen3_5_moe():
    return _m().Qwen3_5MoeBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                   head_dim=8, hidden_dim=16, moe_intermediate_dim=8, shared_expert_intermediate_size=8,
                                   num_experts=4, top_k=2, router_aux_loss_coefficient=0.01, dtype="float32",
                                   **_QWEN3_5_LINEAR)


def _qwen3_moe():
    return _m().Qwen3MoeBackbone(vocabulary_size=20, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                 hidden_dim=16, intermediate_dim=32, head_dim=2, moe_intermediate_dim=16,
                                 num_experts=4, top_k=2, norm_top_k_prob=True, decoder_sparse_step=1,
                                 layer_norm_epsilon=1e-6, rope_max_wavelength=10000, rope_scaling_factor=1.0,
                                 dropout=0.0, sliding_window_size=4096, router_aux_loss_coefficient=0.01,
                                 tie_word_embeddings=False, mlp_only_layers=[], dtype="float32")


def _qwen_moe():
    return _m().QwenMoeBackbone(vocabulary_size=20, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                hidden_dim=16, intermediate_dim=32, moe_intermediate_dim=16,
                                shared_expert_intermediate_dim=32, num_experts=4, top_k=2, norm_top_k_prob=True,
                                decoder_sparse_step=1, layer_norm_epsilon=1e-6, rope_max_wavelength=10000,
                                rope_scaling_factor=1.0, dropout=0.0, use_sliding_window_attention=False,
                                sliding_window_size=4096, router_aux_loss_coefficient=0.01, tie_word_embeddings=False,
                                output_router_logits=False, mlp_only_layers=[], dtype="float32")


def _rwkv7():
    return _m().RWKV7Backbone(vocabulary_size=10, hidden_size=16, num_layers=2, head_size=4, intermediate_dim=32,
                              gate_lora=8, mv_lora=8, aaa_lora=8, decay_lora=8)


def _resnet_family():
    return _resnet(filters=(64, 8, 8), blocks=(1, 1, 1), strides=(1, 2, 2), block_type="bottleneck_block",
                   image_shape=(32, 32, 3))


def _retinanet():
    encoder = _resnet(filters=(64, 64, 64, 64), blocks=(1, 1, 1, 1), strides=(1, 2, 2, 2), image_shape=(64, 64, 3))
    return _m().RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=5, use_p5=True,
                                  image_shape=(64, 64, 3))


def _roberta():
    return _m().RobertaBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                max_sequence_length=5)


def _roformer_v2():
    return _m().RoformerV2Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                   head_size=4)


def _sam():
    kh = _kh()
    encoder = kh.models.ViTDetBackbone(hidden_size=16, num_layers=2, intermediate_dim=32, num_heads=2,
                                       global_attention_layer_indices=[1], patch_size=4, num_output_channels=8,
                                       window_size=2, image_shape=(16, 16, 3))
    prompt = kh.layers.SAMPromptEncoder(hidden_size=8, image_embedding_size=(4, 4), input_image_size=(16, 16),
                                        mask_in_channels=16)
    decoder = kh.layers.SAMMaskDecoder(num_layers=2, hidden_size=16, intermediate_dim=32, num_heads=2, embedding_dim=8,
                                       num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=8)
    return kh.models.SAMBackbone(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder)


def _sam3():
    kh = _kh()
    L = kh.layers
    image = (28, 28, 3)
    return kh.models.SAM3PromptableConceptBackbone(
        vision_encoder=L.SAM3VisionEncoder(image_shape=image, patch_size=14, num_layers=2, hidden_dim=16,
                                           intermediate_dim=32, num_heads=2, fpn_hidden_dim=16,
                                           fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(42, 42, 3),
                                           window_size=2, global_attn_indexes=[1, 2]),
        text_encoder=L.SAM3TextEncoder(vocabulary_size=32, embedding_dim=16, hidden_dim=16, num_layers=2, num_heads=2,
                                       intermediate_dim=32),
        geometry_encoder=L.SAM3GeometryEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32, num_heads=2,
                                               roi_size=7),
        detr_encoder=L.SAM3DetrEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32, num_heads=2),
        detr_decoder=L.SAM3DetrDecoder(image_shape=image, patch_size=14, num_layers=2, hidden_dim=16,
                                       intermediate_dim=32, num_heads=2, num_queries=8),
        mask_decoder=L.SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=16, num_heads=2))


def _segformer():
    encoder = _mit()
    return _m().SegFormerBackbone(projection_filters=16, image_encoder=encoder)


def _siglip():
    m = _m()
    vision = m.SigLIPVisionEncoder(8, 16, 2, 2, 32, image_shape=(16, 16, 3), name="vision_encoder")
    text = m.SigLIPTextEncoder(20, 16, 16, 2, 2, 32, max_sequence_length=8, name="text_encoder")
    return m.SigLIPBackbone(vision_encoder=vision, text_encoder=text)


def _smollm3():
    return _m().SmolLM3Backbone(vocabulary_size=20, hidden_dim=16, intermediate_dim=32, num_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, attention_bias=False,
                                attention_dropout=0.0, rope_layer_enabled_list=[True, True],
                                layer_types=["attention", "attention"], mlp_bias=False, layer_norm_epsilon=1e-5,
                                max_position_embeddings=32, rope_theta=10000.0, partial_rotary_factor=1.0)


def _stable_diffusion_3():
    from keras_hub.src.models.vae.vae_backbone import VAEBackbone

    m = _m()
    vae = VAEBackbone([32, 32], [1, 1], [32, 32], [1, 1], sampler_method="mode", name="vae")  # 32 groups
    clip_l = m.CLIPTextEncoder(20, 16, 16, 2, 2, 32, "quick_gelu", -2, max_sequence_length=5, name="clip_l")
    clip_g = m.CLIPTextEncoder(20, 16, 16, 2, 2, 32, "gelu", -2, max_sequence_length=5, name="clip_g")
    return m.StableDiffusion3Backbone(mmdit_patch_size=2, mmdit_hidden_dim=16, mmdit_num_layers=2, mmdit_num_heads=2,
                                      mmdit_position_size=16, mmdit_qk_norm=None, mmdit_dual_attention_indices=None,
                                      vae=vae, clip_l=clip_l, clip_g=clip_g, image_shape=(16, 16, 3))


def _swin():
    return _m().SwinTransformerBackbone(image_shape=(32, 32, 3), embed_dim=8, depths=(2, 2), num_heads=(2, 2),
                                        window_size=4)


def _t5():
    return _m().T5Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)


_T5GEMMA = dict(
    vocabulary_size=20, encoder_hidden_dim=16, encoder_intermediate_dim=32, encoder_num_layers=2,
    encoder_num_attention_heads=2, encoder_num_key_value_heads=1, encoder_head_dim=8,
    encoder_layer_types=["sliding_attention", "full_attention"], decoder_hidden_dim=16, decoder_intermediate_dim=32,
    decoder_num_layers=2, decoder_num_attention_heads=2, decoder_num_key_value_heads=1, decoder_head_dim=8,
    decoder_layer_types=["sliding_attention", "full_attention"], dropout_rate=0.1, rms_norm_eps=1e-6,
    tie_word_embeddings=True, query_pre_attn_scalar=1.0, attention_bias=False, hidden_activation="gelu_approximate",
    sliding_window=16, cross_attention_hidden_size=16, attn_logit_softcapping=50.0, rope_max_wavelength=10000.0,
    initializer_range=0.04, attention_dropout=0.1)


def _t5gemma():
    return _m().T5GemmaBackbone(**_T5GEMMA)


def _t5gemma2():
    return _m().T5Gemma2Backbone(**_T5GEMMA, use_query_key_norm=True)


def _vgg():
    return _m().VGGBackbone(stackwise_num_repeats=[1, 2], stackwise_num_filters=[8, 16], image_shape=(16, 16, 3))


def _video_prism():
    return _m().VideoPrismBackbone(image_shape=(16, 16, 3), num_frames=2, patch_size=4, hidden_dim=16,
                                   intermediate_dim=32, num_heads=2, num_spatial_layers=1, num_temporal_layers=1,
                                   num_auxiliary_layers=1, vocabulary_size=0, num_text_layers=0)


def _vit():
    return _m().ViTBackbone(image_shape=(16, 16, 3), patch_size=(4, 4), num_layers=2, hidden_dim=16, num_heads=2,
                            mlp_dim=32, use_mha_bias=True)


def _vit_det():
    return _m().ViTDetBackbone(image_shape=(16, 16, 3), patch_size=2, hidden_size=8, num_layers=2,
                               global_attention_layer_indices=[1], intermediate_dim=16, num_heads=2,
                               num_output_channels=4, window_size=2)


def _whisper():
    return _m().WhisperBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                num_mels=8, max_encoder_sequence_length=6, max_decoder_sequence_length=6)


def _xception():
    return _m().XceptionBackbone(stackwise_conv_filters=[[8, 16], [16, 16]],
                                 stackwise_pooling=[False, True], image_shape=(None, None, 3))


def _xlm_roberta():
    return _m().XLMRobertaBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                                   max_sequence_length=5)


def _xlnet():
    return _m().XLNetBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16)


BUILDERS = {
    "Albert": _albert, "BASNet": _basnet, "BLIP2": _blip2, "Bart": _bart, "Bert": _bert, "Bloom": _bloom,
    "CLIP": _clip, "CSPNet": _cspnet, "DFine": _dfine, "DINOV2": _dinov2, "DINOV3": _dinov3,
    "DebertaV3": _deberta_v3, "DeepLabV3": _deeplab_v3, "DeiT": _deit, "DenseNet": _densenet,
    "DepthAnything": _depth_anything, "DistilBert": _distil_bert, "ESM2": _esm, "EdRec": _edrec,
    "EfficientNet": _efficientnet, "Electra": _electra, "FNet": _f_net, "Falcon": _falcon, "Flux": _flux,
    "GPT2": _gpt2, "GPTNeoX": _gpt_neox, "Gemma": _gemma, "Gemma3": _gemma3, "Gemma3n": _gemma3n,
    "Gemma4": _gemma4, "GptOss": _gpt_oss, "HGNetV2": _hgnetv2, "Llama": _llama, "Llama3": _llama3,
    "MetaCLIP2": _metaclip2, "MiT": _mit, "Mistral": _mistral, "Mixtral": _mixtral, "MobileNet": _mobilenet,
    "MobileNetV5": _mobilenetv5, "Moonshine": _moonshine, "OPT": _opt, "PARSeq": _parseq,
    "PaliGemma": _pali_gemma, "Phi3": _phi3, "Qwen2": _qwen2, "Qwen3": _qwen3, "Qwen3Moe": _qwen3_moe,
    "Qwen3_5": _qwen3_5, "Qwen3_5Moe": _qwen3_5_moe, "QwenMoe": _qwen_moe, "RWKV7": _rwkv7,
    "ResNet": _resnet_family, "RetinaNet": _retinanet, "Roberta": _roberta, "RoformerV2": _roformer_v2,
    "SAM": _sam, "SAM3PromptableConcept": _sam3, "SegFormer": _segformer, "SigLIP": _siglip,
    "SmolLM3": _smollm3, "StableDiffusion3": _stable_diffusion_3, "SwinTransformer": _swin, "T5": _t5,
    "T5Gemma": _t5gemma, "T5Gemma2": _t5gemma2, "VGG": _vgg, "ViT": _vit, "ViTDet": _vit_det,
    "VideoPrism": _video_prism, "Whisper": _whisper, "Xception": _xception, "XLMRoberta": _xlm_roberta,
    "XLNet": _xlnet,
}

# ----------------------------------------------------------------------------- inputs
# Most inputs follow from the model's own input specs: integer ids below the vocabulary, masks
# of ones with the second row padded, zero segment ids, float tensors from a normal draw.
# Unknown (None) sizes take the family's length or image size. Overrides below for the rest.

VOCAB = {"Albert": 10, "Bart": 10, "Bert": 10, "BLIP2": 14, "Bloom": 10, "CLIP": 20, "DebertaV3": 10,
         "DistilBert": 10, "ESM2": 10, "EdRec": 10, "Electra": 10, "FNet": 10, "Falcon": 10, "GPT2": 10,
         "GPTNeoX": 10, "Gemma": 20, "Gemma3": 20, "Gemma3n": 10, "Gemma4": 20, "GptOss": 10, "Llama": 10,
         "Llama3": 10, "MetaCLIP2": 20, "Mistral": 10, "Mixtral": 10, "Moonshine": 20, "OPT": 10,
         "PARSeq": 20, "PaliGemma": 20, "Phi3": 10, "Qwen2": 10, "Qwen3": 10, "Qwen3Moe": 20, "Qwen3_5": 10,
         "Qwen3_5Moe": 10, "QwenMoe": 20, "RWKV7": 10, "Roberta": 10, "RoformerV2": 10,
         "SAM3PromptableConcept": 32, "SigLIP": 20, "SmolLM3": 20, "StableDiffusion3": 20, "T5": 10,
         "T5Gemma": 20, "T5Gemma2": 20, "XLMRoberta": 10, "XLNet": 10}
LENGTH = {"Xception": 64, "CLIP": 8, "MetaCLIP2": 8, "SigLIP": 8, "PARSeq": 7, "Gemma3n": 8, "RWKV7": 16,
          "SAM3PromptableConcept": 32, "Whisper": 5}
# Per input name, where one family has several lengths (Moonshine's audio: three strided convolutions).
LENGTH_OF_INPUT = {("Moonshine", "encoder_input_values"): 2000, ("Moonshine", "encoder_padding_mask"): 2000}
MASK_UNPADDED = {"XLNet", "RWKV7", "Gemma3n", "SAM3PromptableConcept", "BLIP2", "PaliGemma"}


def _special(family, name, shape, rng):
    """Inputs whose values matter beyond their spec (prompt points, diffusion time steps ...)."""
    batch = shape[0]
    if family == "SAM":
        return {"points": rng.random((batch, 1, 2)).astype("float32") * 16,
                "labels": np.ones((batch, 1), "float32"),
                "boxes": rng.random((batch, 1, 2, 2)).astype("float32") * 16,
                "masks": np.zeros((batch, 0, 16, 16, 1), "float32")}.get(name)
    if family == "SAM3PromptableConcept":
        return {"boxes": rng.random((batch, 1, 5)).astype("float32"),
                "box_labels": np.ones((batch, 1), "int32")}.get(name)
    if family == "PaliGemma" and name == "response_mask":
        return np.zeros(shape, "int32")
    if family in ("Flux",) and name in ("timesteps", "guidance"):
        return np.full(shape, 0.5, "float32")
    if family == "StableDiffusion3" and name == "num_steps":
        return np.full(shape, 4, "int32")
    if family == "StableDiffusion3" and name == "guidance_scale":
        return np.full(shape, 2.0, "float32")
    if name == "position_ids":
        return np.broadcast_to(np.arange(shape[1], dtype="int32"), shape).copy()
    return None


def make_inputs(family, model, batch=2, seed=1):
    """A batch for ``model`` as a dict by input name (or one array for a single unnamed input)."""
    rng = np.random.default_rng(seed)
    vocab = VOCAB.get(family, 10)
    length = LENGTH.get(family, 5)
    out = {}
    specs = model.input if isinstance(model.input, dict) else None
    tensors = list(specs.items()) if specs else [(t.name, t) for t in model.inputs]
    for key, tensor in tensors:
        shape = tuple(tensor.shape)
        name = key
        size = LENGTH_OF_INPUT.get((family, name), length)
        shape = (batch,) + tuple(size if d is None else d for d in shape[1:])
        special = _special(family, name, shape, rng)
        if special is not None:
            out[key] = special
            continue
        dtype = str(tensor.dtype)
        if "mask" in name:
            mask = np.ones(shape, "int32")
            if family not in MASK_UNPADDED and len(shape) == 2 and shape[1] > 2:
                mask[1, -2:] = 0  # the second row is padded
            out[key] = mask.astype("bool") if dtype == "bool" else mask.astype(dtype)
        elif "segment" in name:
            out[key] = np.zeros(shape, dtype)
        elif "int" in dtype:
            out[key] = rng.integers(1, vocab, size=shape).astype(dtype)
        else:
            out[key] = rng.normal(size=shape).astype("float32" if dtype in ("float16", "bfloat16") else dtype)
    if specs is None and len(out) == 1:
        return next(iter(out.values()))
    if specs is None:
        return [out[t.name] for t in model.inputs]
    return out
