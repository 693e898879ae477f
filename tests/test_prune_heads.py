"""kerasnb.prune_heads: attention heads removed from a MultiHeadAttention.

The check of correctness: a copy of the model with the removed heads' output-projection slices
set to zero computes what the pruned model computes.
"""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb


def zeroed_copy(model, path, heads):
    """The model with the given heads of the MultiHeadAttention at ``path`` writing nothing."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    layer = copy
    for part in path.split("/"):
        layer = layer.get_layer(part)
    kernel = to_numpy(layer.output_dense.kernel.value).copy()
    kernel[list(heads)] = 0
    layer.output_dense.kernel.assign(kernel)
    return copy


def same_outputs(a, b, x):
    out_a, out_b = keras.tree.flatten(a(x)), keras.tree.flatten(b(x))
    assert len(out_a) == len(out_b)
    for u, v in zip(out_a, out_b):
        np.testing.assert_allclose(to_numpy(u), to_numpy(v), rtol=1e-5, atol=1e-5)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def self_attention(heads=4, **options):
    keras.utils.set_random_seed(1)
    tokens = keras.Input((6, 8), name="tokens")
    x = L.MultiHeadAttention(heads, 3, name="mha", **options)(tokens, tokens)
    x = L.LayerNormalization(name="norm")(x + tokens)
    return keras.Model(tokens, L.Dense(2, name="head")(x), name="encoder")


class TestHeads:
    def test_removed_heads_equal_zeroed_output_slices(self):
        """The pruned model computes what the original does with those heads writing zeros."""
        model = self_attention()
        before = snapshot(model)
        x = rand(2, 6, 8)
        expected = to_numpy(model(x))
        result = kerasnb.prune_heads(model, "mha", heads=[0, 3])
        mha = result.model.get_layer("mha")
        assert mha.num_heads == 2 and mha.output_dense.kernel.shape == (2, 3, 8)
        assert mha.query_dense.kernel.shape == (8, 2, 3) and mha.value_dense.bias.shape == (2, 3)
        same_outputs(result.model, zeroed_copy(model, "mha", [0, 3]), x)
        assert not np.allclose(to_numpy(result.model(x)), expected)  # the heads did carry signal
        assert result.report.status("mha") == "pruned"
        assert "heads [0, 3] of 4 removed" in result.report["mha"].reason
        assert result.report.status("norm") == "kept_input_changed"
        assert result.report.status("head") == "kept_input_changed"
        assert "2 of 4 attention heads removed" in result.notes[0]
        assert_unchanged(model, before)
        np.testing.assert_array_equal(to_numpy(model(x)), expected)

    def test_negative_indices_and_single_int(self):
        model = self_attention()
        x = rand(2, 6, 8)
        a = kerasnb.prune_heads(model, "mha", heads=[-1, -4])
        b = kerasnb.prune_heads(model, "mha", heads=[0, 3])
        same_outputs(a.model, b.model, x)
        c = kerasnb.prune_heads(model, "mha", heads=-2)
        same_outputs(c.model, zeroed_copy(model, "mha", [2]), x)

    def test_macs_drop_with_the_heads(self):
        """Half the heads: half of every projection and of the attention products."""
        model = self_attention()
        result = kerasnb.prune_heads(model, "mha", heads=[1, 2])
        assert kerasnb.flops.layer_macs(result.model)["mha"] * 2 == kerasnb.flops.layer_macs(model)["mha"]


class TestCalls:
    def test_attention_mask_and_causal_mask(self):
        keras.utils.set_random_seed(2)
        tokens, mask = keras.Input((5, 4), name="tokens"), keras.Input((5, 5), name="mask", dtype="bool")
        mha = L.MultiHeadAttention(3, 2, name="mha")
        x = mha(tokens, tokens, attention_mask=mask, use_causal_mask=True)
        model = keras.Model([tokens, mask], x)
        data = [rand(2, 5, 4), np.random.default_rng(3).random((2, 5, 5)) > 0.3]
        result = kerasnb.prune_heads(model, "mha", heads=[1])
        same_outputs(result.model, zeroed_copy(model, "mha", [1]), data)

    def test_cross_attention_with_own_key_and_output_shape(self):
        """query, key and value of different sizes and lengths; value_dim and output_shape set."""
        keras.utils.set_random_seed(3)
        q, v, k = keras.Input((4, 6), name="q"), keras.Input((7, 5), name="v"), keras.Input((7, 3), name="k")
        # Keras 3.15's JAX attention refuses value_dim != key_dim (the unpruned layer fails too).
        value_dim = 2 if keras.backend.backend() == "jax" else 5
        mha = L.MultiHeadAttention(4, key_dim=2, value_dim=value_dim, output_shape=(9,), name="mha")
        model = keras.Model([q, v, k], mha(q, v, key=k))
        result = kerasnb.prune_heads(model, "mha", heads=[0, 2])
        assert result.model.output.shape == (None, 4, 9)
        data = [rand(2, 4, 6), rand(2, 7, 5, seed=1), rand(2, 7, 3, seed=2)]
        same_outputs(result.model, zeroed_copy(model, "mha", [0, 2]), data)

    def test_gated_attention(self):
        model = self_attention(use_gate=True)
        result = kerasnb.prune_heads(model, "mha", heads=[2])
        same_outputs(result.model, zeroed_copy(model, "mha", [2]), rand(2, 6, 8))

    def test_shared_layer_changed_once_for_every_call(self):
        keras.utils.set_random_seed(4)
        a, b = keras.Input((5, 4), name="a"), keras.Input((3, 4), name="b")
        mha = L.MultiHeadAttention(2, 3, name="mha")
        model = keras.Model([a, b], [mha(a, a), mha(b, a)])
        result = kerasnb.prune_heads(model, "mha", heads=[0])
        assert result.model.get_layer("mha").num_heads == 1
        same_outputs(result.model, zeroed_copy(model, "mha", [0]), [rand(2, 5, 4), rand(2, 3, 4, seed=1)])

    def test_inside_a_nested_model(self):
        keras.utils.set_random_seed(5)
        inner = self_attention()
        inputs = keras.Input((6, 8), name="x")
        model = keras.Model(inputs, L.Dense(3, name="out")(inner(inputs)), name="outer")
        before = snapshot(model)
        result = kerasnb.prune_heads(model, "encoder/mha", heads=[1, 2])
        assert result.model.get_layer("encoder").get_layer("mha").num_heads == 2
        assert result.report.status("encoder/mha") == "pruned"
        assert result.report.status("out") == "kept_input_changed"
        same_outputs(result.model, zeroed_copy(model, "encoder/mha", [1, 2]), rand(2, 6, 8))
        assert_unchanged(model, before)


class TestKeep:
    def set_head_strengths(self, model, strengths):
        kernel = model.get_layer("mha").output_dense.kernel
        value = np.ones(tuple(kernel.shape), "float32") * np.asarray(strengths, "float32")[:, None, None]
        kernel.assign(value)

    def test_keep_fraction_by_l1_drops_the_weakest_output_slices(self):
        model = self_attention()
        self.set_head_strengths(model, [0.5, 0.1, 2.0, 0.3])
        result = kerasnb.prune_heads(model, "mha", keep=0.5)
        assert "([1, 3])" in result.notes[0]
        same_outputs(result.model, zeroed_copy(model, "mha", [1, 3]), rand(2, 6, 8))

    def test_keep_count_l2_and_callable(self):
        model = self_attention()
        self.set_head_strengths(model, [0.5, 0.1, 2.0, 0.3])
        assert "([0, 1, 3])" in kerasnb.prune_heads(model, "mha", keep=1, by="l2").notes[0]
        by_index = kerasnb.prune_heads(model, "mha", keep=3, by=lambda layer: np.arange(layer.num_heads))
        assert "([0])" in by_index.notes[0]


class TestRefusals:
    def test_out_of_range_names_the_valid_range(self):
        model = self_attention()
        with pytest.raises(kerasnb.InvalidEdit, match=r"4 heads: indices run from 0 to 3 \(or -4 to -1.*"
                                                      r"Received: heads=\[1, 4\]"):
            kerasnb.prune_heads(model, "mha", heads=[1, 4])
        with pytest.raises(kerasnb.InvalidEdit, match="from 0 to 3"):
            kerasnb.prune_heads(model, "mha", heads=["0"])

    def test_all_heads_or_none(self):
        model = self_attention(heads=2)
        with pytest.raises(kerasnb.InvalidEdit, match="removes all 2 heads.*at least one must stay"):
            kerasnb.prune_heads(model, "mha", heads=[0, -1])
        with pytest.raises(kerasnb.InvalidEdit, match="removes none"):
            kerasnb.prune_heads(model, "mha", keep=1.0)

    def test_bad_arguments(self):
        model = self_attention()
        with pytest.raises(kerasnb.InvalidEdit, match=r"either heads= .* or keep="):
            kerasnb.prune_heads(model, "mha")
        with pytest.raises(kerasnb.InvalidEdit, match=r"keep is a fraction.*Received: keep=1.5"):
            kerasnb.prune_heads(model, "mha", keep=1.5)
        with pytest.raises(kerasnb.InvalidEdit, match=r"'l1', 'l2' or a callable.*Received: by='l3'"):
            kerasnb.prune_heads(model, "mha", keep=0.5, by="l3")
        with pytest.raises(kerasnb.InvalidEdit, match=r"'head' is a Dense"):
            kerasnb.prune_heads(model, "head", heads=[0])
        with pytest.raises(kerasnb.LayerNotFound, match="Did you mean 'mha'"):
            kerasnb.prune_heads(model, "mhaa", heads=[0])

    def test_lora_refused(self):
        model = self_attention()
        lora = kerasnb.enable_lora(model, "mha/query", rank=2).model
        with pytest.raises(kerasnb.UnsupportedLayer, match="merge LoRA first"):
            kerasnb.prune_heads(lora, "mha", heads=[0])
