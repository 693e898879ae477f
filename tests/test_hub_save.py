"""Edited keras-hub backbones save, load and stay backbones.

Tiny backbones with random weights, built once each, offline. After an edit the result is still a
keras-hub Backbone (an EditedBackbone): it saves to .keras and loads back computing the same, goes
through save_to_preset / Backbone.from_preset, keeps its dtype policy at model and layer level,
and can be wrapped in its family's task. Skipped, with the reason, where keras-hub is missing.
"""

from collections import Counter

import keras
import numpy as np
import pytest

import kerasnb
from kerasnb._graph import sublayers

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
kh = keras_hub.models

TOKENS = {"token_ids": np.array([[5, 7, 3, 7, 0, 0], [2, 4, 6, 1, 1, 3]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")}
IMAGES = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")


def numbers(outputs):
    """Every output as float32 NumPy (float16 and bfloat16 compare exactly once widened)."""
    return [keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")) for t in keras.tree.flatten(outputs)]


def assert_same_outputs(a, b, x):
    for left, right in zip(numbers(a(x)), numbers(b(x)), strict=True):
        np.testing.assert_array_equal(left, right)


def saved_and_loaded(model, tmp_path, name="edited"):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return keras.saving.load_model(path)


def policies(model, leave_out=None):
    """How many layers of each type have each dtype policy, sub-layers of blocks included (some
    sub-layers have no path and names the rebuild numbers anew), less those of ``leave_out``."""
    def count(layers):
        return Counter((type(layer).__name__, layer.dtype_policy.name) for layer in layers)

    return count(sublayers(model)[1:]) - count(sublayers(leave_out) if leave_out is not None else [])


def built(make):
    keras.utils.set_random_seed(0)
    model = make()
    for variable in model.weights:  # no initial value (ones, zeros) may hide a weight that was not carried
        variable.assign(variable + keras.random.uniform(variable.shape, -0.1, 0.1, seed=1, dtype=variable.dtype))
    return model


@pytest.fixture(scope="module")
def llama():
    return built(lambda: kh.LlamaBackbone(vocabulary_size=10, num_layers=2, num_query_heads=2, num_key_value_heads=1,
                                          hidden_dim=8, intermediate_dim=16))


@pytest.fixture(scope="module")
def vit():
    return built(lambda: kh.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2,
                                        hidden_dim=8, mlp_dim=16))


@pytest.fixture(scope="module")
def mit():
    return built(lambda: kh.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                        layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0,
                                        layerwise_patch_sizes=[3, 3], layerwise_strides=[2, 2], hidden_dims=[4, 8],
                                        image_shape=(16, 16, 3)))


@pytest.fixture(scope="module")
def gpt2():
    return built(lambda: kh.GPT2Backbone(vocabulary_size=8, num_layers=2, num_heads=2, hidden_dim=8,
                                         intermediate_dim=16, max_sequence_length=16))


@pytest.fixture(scope="module", params=["float16", "bfloat16", "mixed_float16", "mixed_bfloat16"])
def gemma(request):
    return request.param, built(lambda: kh.GemmaBackbone(
        vocabulary_size=10, num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=8,
        intermediate_dim=16, head_dim=4, dtype=request.param))


@pytest.fixture(scope="module")
def rwkv7():
    return built(lambda: kh.RWKV7Backbone(vocabulary_size=10, hidden_size=16, num_layers=2, head_size=4,
                                          intermediate_dim=32, gate_lora=8, mv_lora=8, aaa_lora=8, decay_lora=8))


@pytest.fixture(scope="module")
def deberta():
    return built(lambda: kh.DebertaV3Backbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8,
                                              intermediate_dim=16, max_sequence_length=6, bucket_size=4))


class TestEditedBackbonesSave:
    def test_llama_whose_blocks_are_made_from_their_arguments(self, llama, tmp_path):
        """LlamaTransformerDecoder.get_config() raises: its blocks are made from their arguments, and
        the saved file holds those arguments."""
        result = kerasnb.replace(llama, "sequence_output_layernorm",
                                 keras.layers.LayerNormalization(epsilon=1e-5, rms_scaling=True, name="new_norm"))
        edited = result.model
        assert isinstance(edited, kh.Backbone) and edited.layer_norm is None
        assert any("['layer_norm']" in note and "None" in note for note in result.notes), result.notes
        loaded = saved_and_loaded(edited, tmp_path)
        assert_same_outputs(edited, loaded, TOKENS)
        # The untouched blocks compute what the original's did, after loading too.
        inner = keras.Model(llama.inputs, llama.get_layer("transformer_layer_1").output)
        inner_loaded = keras.Model(loaded.inputs, loaded.get_layer("transformer_layer_1").output)
        assert_same_outputs(inner, inner_loaded, TOKENS)

    def test_vit_whose_patching_config_lists_arguments_its_constructor_refuses(self, vit, tmp_path):
        result = kerasnb.replace(vit, "vit_encoder", keras.layers.LayerNormalization(name="plain_norm"))
        loaded = saved_and_loaded(result.model, tmp_path)
        assert type(loaded) is type(result.model)
        assert_same_outputs(result.model, loaded, IMAGES)
        patched = keras.Model(vit.inputs, vit.get_layer("vit_patching_and_embedding").output)
        patched_loaded = keras.Model(loaded.inputs, loaded.get_layer("vit_patching_and_embedding").output)
        assert_same_outputs(patched, patched_loaded, IMAGES)

    def test_mit_whose_block_config_drops_sr_ratio_round_trips_through_a_file(self, mit, tmp_path):
        last_norm = [layer.name for layer in mit.layers if isinstance(layer, keras.layers.LayerNormalization)][-1]
        result = kerasnb.replace(mit, last_norm, keras.layers.LayerNormalization(epsilon=1e-5, name="new_norm"))
        assert any("hierarchical_encoder_0_0" in note and "loads back" in note for note in result.notes), result.notes
        loaded = saved_and_loaded(result.model, tmp_path)
        assert_same_outputs(result.model, loaded, IMAGES)
        # The block with sr_ratio=2 loads back as the original's: same variables, same outputs.
        block = keras.Model(mit.inputs, mit.get_layer("hierarchical_encoder_0_0").output)
        block_loaded = keras.Model(loaded.inputs, loaded.get_layer("hierarchical_encoder_0_0").output)
        assert_same_outputs(block, block_loaded, IMAGES)

    def test_gemma_keeps_every_dtype_policy_through_an_edit_and_a_file(self, gemma, tmp_path):
        dtype, model = gemma
        assert policies(model)[("ReversibleEmbedding", dtype)] == 1
        result = kerasnb.apply(model, [])  # Gemma's raw op scales by a 0-d constant of the policy's dtype
        assert {row.status for row in result.report} <= {"kept", "no_weights"}, result.report
        round_trip = result.model
        assert_same_outputs(model, round_trip, TOKENS)
        for edited, gone in ((round_trip, None),
                             (kerasnb.delete(model, "decoder_block_1").model, model.get_layer("decoder_block_1"))):
            loaded = saved_and_loaded(edited, tmp_path)
            for each in (edited, loaded):
                assert each.dtype_policy.name == dtype
                assert policies(each) == policies(model, leave_out=gone)
            assert_same_outputs(edited, loaded, TOKENS)

    def test_rwkv7_whose_blocks_build_from_a_shape_tuple_loads_from_a_file(self, rwkv7, tmp_path):
        """The blocks' saved input shape comes back from JSON as a list, which RWKV7's build reads
        as a list of several shapes: the edited backbone loads them as tuples again."""
        result = kerasnb.replace(rwkv7, "output_norm", keras.layers.LayerNormalization(epsilon=1e-5, name="new_norm"))
        tokens = {"token_ids": np.tile(np.arange(1, 9, dtype="int32"), (2, 2)),
                  "padding_mask": np.ones((2, 16), "int32")}
        loaded = saved_and_loaded(result.model, tmp_path)
        assert isinstance(loaded, kh.Backbone)
        assert_same_outputs(result.model, loaded, tokens)

    def test_deberta_whose_relative_embedding_builds_its_norm_only_when_called(self, deberta, tmp_path):
        """RelativeEmbedding has no build(): its LayerNormalization is built by a call, which a
        symbolic call of a loaded graph does not make. The dropped-block result loads all the same."""
        result = kerasnb.delete(deberta, "disentangled_attention_encoder_layer_0")
        tokens = {"token_ids": TOKENS["token_ids"], "padding_mask": TOKENS["padding_mask"]}
        loaded = saved_and_loaded(result.model, tmp_path)
        assert loaded.count_params() == result.model.count_params()
        assert_same_outputs(result.model, loaded, tokens)

    def test_a_backbone_keeps_the_layers_it_tracks_but_never_calls(self, tmp_path):
        """BASNet tracks its encoder's unused stem, D-FINE a denoising embedding: the edited
        backbone (an EditedBackbone) carries their copies, values included."""
        inputs = keras.Input((4,), name="features")
        backbone = kh.Backbone(inputs=inputs, outputs=keras.layers.Dense(3, name="head")(inputs))
        backbone.unused_stem = keras.layers.Dense(5, name="unused_stem")
        backbone.unused_stem.build((None, 2))
        backbone.unused_stem.kernel.assign(np.arange(10, dtype="float32").reshape(2, 5))
        result = kerasnb.apply(backbone, [])
        edited = result.model
        assert isinstance(edited, kh.Backbone) and edited is not backbone
        assert edited.count_params() == backbone.count_params() == 4 * 3 + 3 + 2 * 5 + 5
        (carried,) = edited.uncalled_layers
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(carried.kernel), np.arange(10).reshape(2, 5))
        assert carried.kernel is not backbone.unused_stem.kernel

    def test_a_layer_whose_config_gives_the_variable_it_made_from_an_argument_loads(self, tmp_path):
        """D-FINE's decoder makes a variable from upsampling_factor in build() and stores it where its
        config reads the number: the saved config holds a tensor, which loads as its value."""
        if keras.backend.backend() == "jax":
            pytest.skip("Keras on JAX cannot serialize a variable in a layer's config, so such a graph does not save")

        @keras.saving.register_keras_serializable(package="kerasnb_tests")
        class Scale(keras.layers.Layer):
            def __init__(self, factor, **kwargs):
                super().__init__(**kwargs)
                self.factor = factor

            def build(self, input_shape):
                self.factor = self.add_weight(shape=(1,), initializer=keras.initializers.Constant(self.factor),
                                              trainable=False)

            def call(self, x):
                return x * self.factor

            def get_config(self):
                return {**super().get_config(), "factor": self.factor}

        inputs = keras.Input((4,), name="features")
        backbone = kh.Backbone(inputs=inputs, outputs=Scale(0.5, name="scale")(keras.layers.Dense(3)(inputs)))
        edited = kerasnb.apply(backbone, []).model
        loaded = saved_and_loaded(edited, tmp_path)
        assert_same_outputs(backbone, loaded, np.ones((2, 4), "float32"))


class TestAnEditedBackboneStaysABackbone:
    @pytest.fixture(scope="class")
    def preprocessor(self):
        vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġa": 4, "Ġb": 5, "Ġc": 6, "ab": 7}
        tokenizer = kh.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b"])
        return kh.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=8)

    @pytest.fixture(scope="class")
    def edited(self, gpt2):
        return kerasnb.delete(gpt2, "transformer_layer_1").model

    def greedy_lm(self, backbone, preprocessor):
        lm = kh.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
        lm.compile(sampler="greedy")
        return lm

    def test_its_task_wraps_it_and_generates_as_the_edited_task_does(self, gpt2, edited, preprocessor):
        assert isinstance(edited, kh.Backbone) and edited.num_layers == 1
        assert [layer.name for layer in edited.transformer_layers] == ["transformer_layer_0"]
        lm = self.greedy_lm(edited, preprocessor)
        # The same edit made on the task instead of its backbone.
        # The backbone by the name Keras gave it (gpt2_backbone_1 after an earlier file built one).
        task_way = kerasnb.delete(self.greedy_lm(gpt2, preprocessor), f"{gpt2.name}/transformer_layer_1").model
        task_way.compile(sampler="greedy")
        x = {key: value[:, :6] for key, value in TOKENS.items()}
        assert_same_outputs(lm, task_way, x)
        prompts = ["a b", "c a b c"]
        generated = lm.generate(prompts, max_length=8)
        assert generated == task_way.generate(prompts, max_length=8)
        assert gpt2.num_layers == 2  # the user's backbone is untouched

    def test_it_saves_loads_and_goes_through_a_preset(self, gpt2, edited, preprocessor, tmp_path):
        x = {key: value[:, :6] for key, value in TOKENS.items()}
        loaded = saved_and_loaded(edited, tmp_path)
        assert type(loaded) is type(edited) and loaded.num_layers == 1
        assert_same_outputs(edited, loaded, x)
        edited.save_to_preset(tmp_path / "preset")
        again = kh.Backbone.from_preset(str(tmp_path / "preset"))
        assert isinstance(again, kh.Backbone) and again.token_embedding is not None
        assert_same_outputs(edited, again, x)
        prompts = ["a b"]
        assert (self.greedy_lm(again, preprocessor).generate(prompts, max_length=8)
                == self.greedy_lm(edited, preprocessor).generate(prompts, max_length=8))

    def test_a_new_process_loads_the_preset_whichever_package_it_imports_first(self, edited, tmp_path):
        """kerasnb imported before keras-hub: Backbone.from_preset still finds the edited backbone's class."""
        import os
        import subprocess
        import sys

        x = {key: value[:, :6] for key, value in TOKENS.items()}
        edited.save_to_preset(tmp_path / "preset")
        np.save(tmp_path / "expected.npy", numbers(edited(x))[0])
        np.savez(tmp_path / "x.npz", **x)
        code = (
            "import kerasnb, keras_hub, numpy as np\n"
            f"m = keras_hub.models.Backbone.from_preset({str(tmp_path / 'preset')!r})\n"
            f"x = dict(np.load({str(tmp_path / 'x.npz')!r}))\n"
            f"print(type(m).__name__, float(np.abs(np.asarray(m(x)) - np.load({str(tmp_path / 'expected.npy')!r})).max()))"
        )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split()[-2:] == ["EditedBackbone", "0.0"]

    def test_edited_again_it_stays_the_family_s_backbone(self, edited):
        again = kerasnb.delete(edited, "transformer_layer_0").model
        assert isinstance(again, kh.Backbone) and again.num_layers == 0
        # the family's name stays in what it says
        gone = kerasnb.replace(again, "token_embedding", keras.layers.Embedding(8, 8, name="plain_embedding"))
        assert gone.model.token_embedding is None
        assert any("['token_embedding']" in note and "GPT2Backbone" in note for note in gone.notes), gone.notes
