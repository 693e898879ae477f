"""LoRA through Keras's own implementation: on for matching layers of a new model, then merged."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb


def model():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(20, 8, name="embed")(tokens)
    x = L.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = L.Dense(16, activation="relu", name="ffn_up")(x)
    x = L.Dense(8, name="ffn_down")(x)
    return keras.Model(tokens, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x)), name="tiny")


def tokens():
    return np.random.default_rng(0).integers(0, 20, size=(4, 5)).astype("int32")


class TestEnable:
    def test_matching_layers_get_lora_and_compute_the_same(self):
        original = model()
        before = snapshot(original)
        result = kerasnb.enable_lora(original, "ffn_*", rank=2)
        assert kerasnb.lora.lora_layers(result.model) == {"ffn_up": 2, "ffn_down": 2}
        assert result.report.status("ffn_up") == "kept" and result.report.row("ffn_up").reason == "LoRA rank 2"
        np.testing.assert_array_equal(to_numpy(result.model(tokens())), to_numpy(original(tokens())))
        assert kerasnb.lora.lora_layers(original) == {}
        assert_unchanged(original, before)

    def test_only_the_lora_factors_train(self):
        result = kerasnb.enable_lora(model(), "ffn_*", rank=2)
        names = sorted(v.path.split("/")[-1] for v in result.model.trainable_variables)
        assert names == ["lora_kernel_a", "lora_kernel_a", "lora_kernel_b", "lora_kernel_b"]
        both = kerasnb.enable_lora(model(), "ffn_*", rank=2, train_others=True)
        assert len(both.model.trainable_variables) > 4

    def test_inside_attention_by_class_and_by_regex(self):
        import re

        by_class = kerasnb.enable_lora(model(), keras.layers.Embedding, rank=2)
        assert kerasnb.lora.lora_layers(by_class.model) == {"embed": 2}
        by_regex = kerasnb.enable_lora(model(), re.compile(r"^head$"), rank=1)
        assert kerasnb.lora.lora_layers(by_regex.model) == {"head": 1}

    @pytest.mark.parametrize("kwargs, error, words", [
        ({"match": "nothing*"}, kerasnb.LayerNotFound, "No Dense, EinsumDense, Embedding or convolution layer"),
        ({"match": "ffn_*", "rank": 0}, kerasnb.InvalidEdit, "rank is a whole number"),
        ({"match": 3}, kerasnb.InvalidEdit, "match is a glob or regex"),
    ])
    def test_bad_input(self, kwargs, error, words):
        with pytest.raises(error, match=words):
            kerasnb.enable_lora(model(), **kwargs)


class TestMerge:
    def test_merged_model_equals_the_trained_lora_model(self):
        lora = kerasnb.enable_lora(model(), "ffn_*", rank=2).model
        lora.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
        lora.fit(tokens(), np.array([0, 1, 2, 1]), epochs=3, verbose=0)  # the factors move away from zero
        merged = kerasnb.merge_lora(lora)
        assert kerasnb.lora.lora_layers(merged.model) == {}
        assert merged.report.status("ffn_up") == "folded"
        assert "LoRA rank 2 merged" in merged.report.row("ffn_up").reason
        np.testing.assert_allclose(to_numpy(merged.model(tokens())), to_numpy(lora(tokens())), rtol=1e-5, atol=1e-6)
        assert len(merged.model.trainable_variables) == len(model().trainable_variables)

    def test_nothing_to_merge(self):
        with pytest.raises(kerasnb.InvalidEdit, match="no layer with LoRA enabled"):
            kerasnb.merge_lora(model())


def test_only_the_factors_train_after_a_later_edit():
    """Which variables train is carried through every later rebuild, not only the first."""
    lora = kerasnb.enable_lora(model(), "ffn_*", rank=2).model
    trainable = len(lora.trainable_variables)
    assert trainable == 4
    assert len(kerasnb.apply(lora, []).model.trainable_variables) == trainable
    assert len(kerasnb.configure(lora, "head", name="head_2").model.trainable_variables) == trainable
