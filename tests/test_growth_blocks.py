"""grow_blocks (block expansion, issue 20 item 3): copied blocks whose output projections are zero.

The grown model computes exactly what it did (compared bit for bit), on a functional residual
block and on tiny keras-hub decoders; a task stays a task that generates the same tokens and
saves; a training step moves only what is trainable; post-norm and unexact blocks are refused.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb.errors import IncompatibleShape, LayerNotFound, UnsupportedLayer


def _residual_net():
    inputs = keras.Input((8,), name="x")
    x = L.Dense(8, activation="relu", name="stem")(inputs)
    h = L.Dense(12, activation="relu", name="f1_in")(x)
    h = L.Dense(8, name="f1_out")(h)
    x = L.Add(name="block1")([x, h])
    h = L.Dense(8, activation="tanh", name="f2")(x)
    h = L.Dropout(0.2, name="f2_drop")(h)
    x = L.Add(name="block2")([h, x])  # the skip second
    shortcut = L.Dense(6, name="projection")(x)
    x = L.Add(name="projected")([shortcut, L.Dense(6, name="g")(x)])
    return keras.Model(inputs, L.Dense(3, name="out")(x), name="residual")


def _values(array):
    return keras.ops.convert_to_numpy(keras.ops.cast(array, "float32"))


@pytest.fixture(scope="module")
def residual():
    keras.utils.set_random_seed(0)
    model = _residual_net()
    x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    return model, x, _values(model(x)), [np.array(w) for w in model.get_weights()]


@pytest.fixture(scope="module")
def grown_residual(residual):
    return kerasnb.grow_blocks(residual[0], after=["block1", "block2"], copy_of="block1")


class TestResidualBlocks:
    def test_outputs_are_bit_identical(self, residual, grown_residual):
        model, x, before, weights = residual
        np.testing.assert_array_equal(_values(grown_residual.model(x)), before)
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))  # the original is untouched

    def test_report_says_what_each_new_layer_is(self, grown_residual):
        report = grown_residual.report
        new = [row.layer for row in report if row.status == "new"]
        assert new == ["f1_in_copy", "f1_out_copy", "block1_copy", "f1_in_copy_1", "f1_out_copy_1", "block1_copy_1"]
        assert report.row("f1_in_copy").reason == "copy of f1_in in block1"
        assert report.row("f1_out_copy").reason.startswith("copy of f1_out in block1, zeroed")
        assert report.status("stem") == "kept"
        assert report.status("f2") == "kept_input_changed"  # after a new block: same values, a new producer

    def test_copies_carry_the_trained_weights_and_share_no_variable(self, residual, grown_residual):
        model, new = residual[0], grown_residual.model
        for copy in ("f1_in_copy", "f1_in_copy_1"):
            for a, b in zip(new.get_layer(copy).weights, model.get_layer("f1_in").weights):
                np.testing.assert_array_equal(_values(a), _values(b))
        assert all(not np.any(_values(v)) for v in new.get_layer("f1_out_copy").weights)
        originals = {id(v) for v in model.weights}
        assert not any(id(v) in originals for v in new.weights)

    def test_the_branch_after_a_skip_given_second_and_a_dropout(self, residual):
        model, x, before, _ = residual
        result = kerasnb.grow_blocks(model, after="block2")
        assert result.report.row("f2_copy").reason.startswith("copy of f2 in block2, zeroed")
        np.testing.assert_array_equal(_values(result.model(x)), before)

    def test_one_training_step_moves_the_new_block_and_nothing_of_the_original(self, residual, grown_residual):
        model, x, _, weights = residual
        new = kerasnb.set_trainable(grown_residual.model, [layer.name for layer in grown_residual.model.layers
                                                           if not layer.name.endswith(("_copy", "_copy_1"))],
                                    False).model
        frozen = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in new.layers}
        new.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        new.train_on_batch(x, np.ones((4, 3), "float32"))
        moved = {layer.name for layer in new.layers
                 if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), frozen[layer.name]))}
        assert moved and moved <= {"f1_in_copy", "f1_out_copy", "f1_in_copy_1", "f1_out_copy_1"}
        assert "f1_out_copy" in moved  # the zeroed projection is what training moves first
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))

    def test_refusals_name_what_works(self, residual):
        model = residual[0]
        with pytest.raises(UnsupportedLayer, match=r"x \+ f\(x\).*projection shortcut"):
            kerasnb.grow_blocks(model, after="projected")  # a projection shortcut
        with pytest.raises(UnsupportedLayer, match="grow_blocks grows blocks.*Dense"):
            kerasnb.grow_blocks(model, after="stem")
        with pytest.raises(IncompatibleShape, match="width"):
            kerasnb.grow_blocks(_two_widths(), after="wide", copy_of="narrow")
        with pytest.raises(LayerNotFound):
            kerasnb.grow_blocks(model, after="nope")

    def test_a_branch_that_cannot_end_at_zero_is_refused(self):
        inputs = keras.Input((4,), name="x")
        out = L.Add(name="block")([inputs, L.Dense(4, activation="sigmoid", name="f")(inputs)])
        with pytest.raises(UnsupportedLayer, match="does not give zero at zero"):
            kerasnb.grow_blocks(keras.Model(inputs, out), after="block")


def test_resnet50_grows_after_identity_blocks_and_refuses_projection_ones(resnet50):
    """relu(x + f(x)) named by its relu (x is a relu's output, so the copy may end in a relu too) or by its Add."""
    model = resnet50
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype("float32")
    result = kerasnb.grow_blocks(model, after=["conv2_block2_out", "conv4_block2_add"])
    np.testing.assert_array_equal(_values(result.model(x)), _values(model(x)))
    new = [row.layer for row in result.report if row.status == "new"]
    assert new[-1] == "conv4_block2_add_copy" and "conv2_block2_out_copy" in new
    assert result.report.row("conv2_block2_3_bn_copy").reason.endswith("zeroed: the block adds nothing until trained")
    with pytest.raises(UnsupportedLayer, match="projection shortcut"):
        kerasnb.grow_blocks(model, after="conv2_block1_out")


def _two_widths():
    inputs = keras.Input((4,), name="x")
    narrow = L.Add(name="narrow")([inputs, L.Dense(4, name="f")(inputs)])
    wide_in = L.Dense(6, name="up")(narrow)
    wide = L.Add(name="wide")([wide_in, L.Dense(6, name="g")(wide_in)])
    return keras.Model(inputs, wide)


# ----------------------------------------------------------------------------- keras-hub decoders

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
kh = keras_hub.models
TOKENS = {"token_ids": np.array([[5, 7, 3, 7, 0, 0], [2, 4, 6, 1, 1, 3]], "int32"),
          "padding_mask": np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "int32")}


def _random(model):
    for variable in model.weights:  # no zero or one initial value may hide a projection not zeroed
        variable.assign(variable + keras.random.uniform(variable.shape, -0.1, 0.1, seed=1, dtype=variable.dtype))
    return model


HUB = {  # tiny configs after keras-hub's own *_backbone_test.py
    "gemma": lambda: kh.GemmaBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=1,
                                      hidden_dim=16, intermediate_dim=32, head_dim=4),
    "llama": lambda: kh.LlamaBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                      hidden_dim=8, intermediate_dim=8),
    "mistral": lambda: kh.MistralBackbone(vocabulary_size=10, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                          hidden_dim=16, intermediate_dim=8, sliding_window=2),
}


# JAX runs keras-hub eagerly op by op (seconds per tiny model on CI): two families there, all on TensorFlow.
@pytest.mark.parametrize("family", sorted(HUB) if keras.backend.backend() == "tensorflow" else ["gemma", "llama"])
def test_hub_decoders_grow_exactly(family):
    keras.utils.set_random_seed(0)
    backbone = _random(HUB[family]())
    blocks = [layer.name for layer in backbone.transformer_layers]
    before = _values(backbone(TOKENS))
    result = kerasnb.grow_blocks(backbone, after=[blocks[0], blocks[0], blocks[1]])
    grown = result.model
    np.testing.assert_array_equal(_values(grown(TOKENS)), before)
    assert isinstance(grown, keras_hub.models.Backbone) and grown.num_layers == 5
    assert [layer.name for layer in grown.transformer_layers] == [
        blocks[0], f"{blocks[0]}_copy", f"{blocks[0]}_copy_1", blocks[1], f"{blocks[1]}_copy"]
    assert result.report.row(f"{blocks[1]}_copy").reason == f"copy of {blocks[1]}, output projections zero"
    assert result.report.status(blocks[1]) == "kept_input_changed"
    assert backbone.num_layers == 2


@pytest.fixture(scope="module")
def gpt2_lm():
    keras.utils.set_random_seed(0)
    vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġa": 4, "Ġb": 5, "Ġc": 6, "ab": 7}
    tokenizer = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b"])
    preprocessor = kh.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=8)
    backbone = _random(kh.GPT2Backbone(vocabulary_size=8, num_layers=2, num_heads=2, hidden_dim=8,
                                       intermediate_dim=16, max_sequence_length=8))
    lm = kh.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    lm.compile(sampler="greedy")
    return lm


@pytest.fixture(scope="module")
def grown_lm(gpt2_lm):
    name = gpt2_lm.backbone.name
    result = kerasnb.grow_blocks(gpt2_lm, after=[f"{name}/transformer_layer_0", f"{name}/transformer_layer_1"])
    result.model.compile(sampler="greedy")
    return result


class TestGPT2Task:
    def test_stays_a_task_that_generates_the_same_tokens(self, gpt2_lm, grown_lm):
        lm = grown_lm.model
        assert isinstance(lm, kh.GPT2CausalLM) and lm.backbone.num_layers == 4
        x = {key: value[:, :6] for key, value in TOKENS.items()}
        np.testing.assert_array_equal(_values(lm(x)), _values(gpt2_lm(x)))
        prompts = ["a b", "c a b c"]
        assert lm.generate(prompts, max_length=8) == gpt2_lm.generate(prompts, max_length=8)
        assert gpt2_lm.backbone.num_layers == 2

    def test_saves_and_loads_computing_the_same(self, grown_lm, tmp_path):
        backbone = grown_lm.model.backbone
        path = tmp_path / "grown.keras"
        backbone.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.num_layers == 4
        np.testing.assert_array_equal(_values(loaded(TOKENS)), _values(backbone(TOKENS)))

    def test_the_bert_block_is_refused_as_post_norm(self):
        bert = kh.BertBackbone(vocabulary_size=10, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                               max_sequence_length=6)
        with pytest.raises(UnsupportedLayer, match="post-norm"):
            kerasnb.grow_blocks(bert, after="transformer_layer_0")

    def test_a_block_whose_copy_is_not_the_identity_is_refused(self):
        @keras.saving.register_keras_serializable(package="test_growth_blocks")
        class HalfResidual(L.Layer):  # x / 2 + ...: zero projections still change the stream
            def __init__(self, width=8, **kwargs):
                super().__init__(**kwargs)
                self.width = width
                self.output_dense = L.Dense(width, name="output_dense")

            def build(self, shape):
                self.output_dense.build(shape)

            def call(self, x):
                return 0.5 * x + self.output_dense(x)

            def get_config(self):
                return {**super().get_config(), "width": self.width}

        inputs = keras.Input((3, 8), name="x")
        model = keras.Model(inputs, HalfResidual(name="half")(inputs))
        with pytest.raises(UnsupportedLayer, match="does not pass its input through"):
            kerasnb.grow_blocks(model, after="half")
