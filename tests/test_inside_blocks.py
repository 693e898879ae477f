"""Edits of layers held inside a block (a layer of the graph that calls its own sub-layers).

The block is made again with that one sub-layer changed and every other weight carried by
order. The checks: outputs against a hand-made copy of the original with the same change, the
block's row says what changed (never ``kept``), the layers after it ``kept_input_changed``, the
original untouched, and refusals that say what would work.
"""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb
from kerasnb import codegen
from kerasnb.errors import IncompatibleShape, InvalidEdit, LayerNotFound


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def outputs(model, x):
    return [to_numpy(t) for t in keras.tree.flatten(model(x))]


def assert_close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=atol)


def perturb(model, seed=3):
    """Weights moved off their initial values, so no initialiser can hide a weight that was not carried."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "float" in str(v.dtype):
            v.assign(to_numpy(v) + rng.normal(0, 0.1, v.shape).astype(v.dtype))


def zero_heads(mha, heads):
    kernel = to_numpy(mha.output_dense.kernel.value).copy()
    kernel[list(heads)] = 0
    mha.output_dense.kernel.assign(kernel)


def twin(model):
    """A copy of the model with the same weights: the expected result is made by hand on it."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# ----------------------------------------------------------------------------- a plain Keras block


@keras.saving.register_keras_serializable(package="test_inside_blocks")
class Block(keras.layers.Layer):
    """A pre-norm attention block whose sub-layers exist only inside its call()."""

    def __init__(self, heads=4, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.norm = L.LayerNormalization(epsilon=1e-3, name="norm")
        self.attention = L.MultiHeadAttention(heads, 3, name="attention")
        self.ffn = L.Dense(8, activation="relu", name="ffn")
        self.drop = L.Dropout(0.5, name="drop")

    def build(self, shape):
        self.norm.build(shape)
        self.attention.build(shape, shape)
        self.ffn.build(shape)

    def call(self, x, training=None):
        h = self.norm(x)
        x = x + self.attention(h, h)
        return x + self.drop(self.ffn(x), training=training)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}


@pytest.fixture(scope="module")
def block_model():
    keras.utils.set_random_seed(1)
    tokens = keras.Input((5, 8), name="tokens")
    x = L.Dense(8, name="proj")(tokens)
    x = Block(name="block")(x)
    model = keras.Model(tokens, L.Dense(2, name="head")(x), name="with_block")
    perturb(model)
    return model


class TestPlainBlock:
    def test_prune_heads_inside_equals_zeroed_heads(self, block_model):
        x = rand(2, 5, 8)
        before, expected_original = snapshot(block_model), outputs(block_model, x)
        result = kerasnb.prune_heads(block_model, "block/attention", heads=[0, 2])
        inner = result.model.get_layer("block").attention
        assert inner.num_heads == 2 and inner.output_dense.kernel.shape == (2, 3, 8)
        expected = twin(block_model)
        zero_heads(expected.get_layer("block").attention, [0, 2])
        assert_close(outputs(result.model, x), outputs(expected, x))
        assert not np.allclose(outputs(result.model, x)[0], expected_original[0])  # the heads carried signal
        row = result.report.row("block")
        assert row.status == "pruned" and "inside 'attention': heads [0, 2] of 4 removed" in row.reason
        assert result.report.status("proj") == "kept"
        assert result.report.status("head") == "kept_input_changed"
        assert_unchanged(block_model, before)
        assert block_model.get_layer("block").attention.num_heads == 4
        ids = {id(v) for v in block_model.weights}
        assert not any(id(v) in ids for v in result.model.weights)

    def test_configure_replace_and_delete_inside(self, block_model):
        x = rand(2, 5, 8, seed=1)
        result = kerasnb.configure(block_model, "block/norm", epsilon=0.5)
        expected = twin(block_model)
        expected.get_layer("block").norm.epsilon = 0.5
        assert_close(outputs(result.model, x), outputs(expected, x))
        row = result.report.row("block")
        assert row.status == "kept_input_changed" and "inside 'norm'" in row.reason and "0.5" in row.reason

        # Dropout out: in inference the same outputs, yet the block is not 'kept' (it trains differently).
        deleted = kerasnb.delete(block_model, "block/drop")
        assert isinstance(deleted.model.get_layer("block").drop, L.Identity)
        assert_close(outputs(deleted.model, x), outputs(block_model, x), atol=0)
        assert deleted.report.status("block") == "adapted" and "'drop' (Dropout) deleted" in \
            deleted.report.row("block").reason

        replaced = kerasnb.replace(block_model, "block/ffn", L.Dense(8, name="wider_ffn"))
        new_ffn = replaced.model.get_layer("block").ffn
        assert new_ffn.name == "wider_ffn" and new_ffn.activation is keras.activations.linear
        expected = twin(block_model)  # the same block with the new Dense's (fresh) weights put in
        expected.get_layer("block").ffn.activation = keras.activations.linear
        for target, value in zip(expected.get_layer("block").ffn.weights, new_ffn.weights):
            target.assign(to_numpy(value))
        assert_close(outputs(replaced.model, x), outputs(expected, x))
        assert "replaced inside by Dense 'wider_ffn' (new weights, freshly initialised)" in \
            replaced.report.row("block").reason

    def test_a_later_edit_keeps_the_change_inside(self, block_model):
        x = rand(2, 5, 8, seed=2)
        pruned = kerasnb.prune_heads(block_model, "block/attention", heads=[1])
        again = kerasnb.configure(pruned.model, "head", name="renamed_head")
        assert again.model.get_layer("block").attention.num_heads == 3
        assert again.report.status("block") == "kept"
        assert_close(outputs(again.model, x), outputs(pruned.model, x), atol=0)
        both = kerasnb.apply(block_model, [kerasnb.Configure("block/norm", {"epsilon": 0.5}),
                                           kerasnb.Delete("block/drop")])  # one block, two rebuilds
        inner = both.model.get_layer("block")
        assert inner.norm.epsilon == 0.5 and isinstance(inner.drop, L.Identity)

    def test_refusals_say_what_would_work(self, block_model):
        before = snapshot(block_model)
        with pytest.raises(InvalidEdit, match="layers that read it are called inside 'block'.*What would work"):
            kerasnb.configure(block_model, "block/ffn", units=4)
        with pytest.raises(InvalidEdit, match="prune cannot reach inside it.*What would work: kerasnb.replace"):
            kerasnb.prune(block_model, "block/ffn", keep=0.5)
        with pytest.raises(IncompatibleShape, match="must take what the old one took.*What would work"):
            kerasnb.replace(block_model, "block/ffn", L.Dense(4))
        with pytest.raises(InvalidEdit, match="only be replaced by one layer"):
            kerasnb.replace(block_model, "block/ffn", lambda t: t)
        with pytest.raises(LayerNotFound, match="holds no layer 'fnn'.*did you mean 'ffn'|holds no layer 'fnn'"):
            kerasnb.delete(block_model, "block/fnn")
        assert_unchanged(block_model, before)

    def test_saved_and_loaded_as_edited(self, block_model, tmp_path):
        """The block's config lists the change inside: a .keras file loads back what was edited."""
        x = rand(2, 5, 8, seed=3)
        result = kerasnb.apply(block_model, [kerasnb.Configure("block/norm", {"epsilon": 0.5}),
                                             kerasnb.Delete("block/drop")])
        pruned = kerasnb.prune_heads(result.model, "block/attention", heads=[0])
        assert any("loads back as edited" in n for n in pruned.notes)
        path = tmp_path / "edited.keras"
        pruned.model.save(path)
        loaded = keras.saving.load_model(path)
        block = loaded.get_layer("block")
        assert (block.attention.num_heads, block.norm.epsilon, type(block.drop)) == (3, 0.5, L.Identity)
        assert_close(outputs(loaded, x), outputs(pruned.model, x), atol=0)
        again = kerasnb.apply(loaded, [])  # and it is edited again like any other model
        assert again.report.status("block") == "kept"
        assert_close(outputs(again.model, x), outputs(pruned.model, x), atol=0)
        namespace: dict = {}
        exec(codegen.code(pruned.model), namespace)  # its Python source makes the edited block too
        built = namespace["model"].get_layer("block")
        assert (built.attention.num_heads, built.norm.epsilon, type(built.drop)) == (3, 0.5, L.Identity)


class HiddenWidthBlock(keras.layers.Layer):
    """Its config leaves out ``width`` and no attribute keeps it (as keras-hub's MiT block does with
    ``sr_ratio``): made from its config it would have other variables, so a rebuild makes it from
    the arguments Keras recorded, and a change inside must go in on that route too."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.attention = L.MultiHeadAttention(4, 3, name="attention")
        self.up = L.Dense(width, activation="relu", name="up")
        self.down = L.Dense(8, name="down")

    def build(self, shape):
        self.attention.build(shape, shape)
        self.up.build(shape)
        self.down.build(shape[:-1] + (self.up.units,))

    def call(self, x):
        x = x + self.attention(x, x)
        return x + self.down(self.up(x))

    def get_config(self):
        config = super().get_config()
        config.pop("width", None)  # Keras's own record of the arguments would have it
        return config


def hidden_width_model():
    keras.utils.set_random_seed(2)
    tokens = keras.Input((5, 8))
    return keras.Model(tokens, L.Dense(2, name="head")(HiddenWidthBlock(width=16, name="block")(tokens)))


def test_prune_heads_inside_a_block_made_from_its_recorded_arguments():
    model = hidden_width_model()
    perturb(model)
    x, before = rand(2, 5, 8, seed=4), snapshot(model)
    result = kerasnb.prune_heads(model, "block/attention", heads=[0, 2])
    block = result.model.get_layer("block")
    assert block.attention.num_heads == 2 and block.up.kernel.shape == (8, 16)
    assert any("from the arguments Keras recorded" in n for n in result.notes)
    expected = hidden_width_model()
    expected.set_weights(model.get_weights())
    zero_heads(expected.get_layer("block").attention, [0, 2])
    assert_close(outputs(result.model, x), outputs(expected, x))
    assert result.report.status("block") == "pruned" and result.report.status("head") == "kept_input_changed"
    assert_unchanged(model, before)


# ----------------------------------------------------------------------------- keras-hub blocks


@pytest.fixture(scope="module")
def hub():
    return pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)").models


def text_batch(model):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(2, 12)).astype("int32")
    mask = (np.arange(12)[None, :] < np.array([12, 7])[:, None]).astype("int32")
    names = [t.name for t in model.inputs]
    return {n: (ids * mask if "token" in n else mask if "mask" in n else np.zeros_like(ids)) for n in names}


@pytest.fixture(scope="module")
def bert(hub):
    keras.utils.set_random_seed(0)
    model = hub.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                             max_sequence_length=12)
    perturb(model)
    return model


@pytest.fixture(scope="module")
def gpt2(hub):
    keras.utils.set_random_seed(0)
    model = hub.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                             max_sequence_length=12)
    perturb(model)
    return model


@pytest.fixture(scope="module")
def vit(hub):
    keras.utils.set_random_seed(0)
    model = hub.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                            mlp_dim=32)
    perturb(model)
    return model


@pytest.mark.parametrize("family, name", [("bert", "self_attention_layer"), ("gpt2", "self_attention")])
def test_prune_heads_inside_a_keras_hub_block(family, name, request):
    model = request.getfixturevalue(family)
    x = text_batch(model)
    before = snapshot(model)
    attention = "_self_attention_layer"  # the attribute both blocks keep it in
    result = kerasnb.prune_heads(model, f"transformer_layer_0/{name}", heads=[0])
    assert getattr(result.model.get_layer("transformer_layer_0"), attention).num_heads == 1
    expected = twin(model)
    zero_heads(getattr(expected.get_layer("transformer_layer_0"), attention), [0])
    assert_close(outputs(result.model, x), outputs(expected, x))
    assert not np.allclose(outputs(result.model, x)[0], outputs(model, x)[0])
    assert result.report.status("transformer_layer_0") == "pruned"
    assert result.report.status("transformer_layer_1") == "kept_input_changed"
    assert result.report.status("token_embedding") == "kept"
    assert_unchanged(model, before)
    assert getattr(model.get_layer("transformer_layer_0"), attention).num_heads == 2


def test_a_pruned_bert_saves_and_loads(bert, tmp_path):
    x = text_batch(bert)
    result = kerasnb.prune_heads(bert, "transformer_layer_1/self_attention_layer", heads=[1])
    path = tmp_path / "pruned.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("transformer_layer_1")._self_attention_layer.num_heads == 1
    assert_close(outputs(loaded, x), outputs(result.model, x), atol=0)


def test_configure_and_replace_inside_bert(bert):
    x = text_batch(bert)
    result = kerasnb.configure(bert, "transformer_layer_1/feedforward_layer_norm", epsilon=0.25)
    expected = twin(bert)
    expected.get_layer("transformer_layer_1")._feedforward_layer_norm.epsilon = 0.25
    assert_close(outputs(result.model, x), outputs(expected, x))
    assert result.report.status("transformer_layer_1") == "kept_input_changed"
    assert result.report.status("transformer_layer_0") == "kept"
    # A Dropout in place of the block's Dropout: the same outputs in inference, a row that says so.
    swapped = kerasnb.replace(bert, "transformer_layer_0/feedforward_dropout", L.Dropout(0.3, name="drop"))
    assert swapped.model.get_layer("transformer_layer_0")._feedforward_dropout.rate == 0.3
    assert_close(outputs(swapped.model, x), outputs(bert, x), atol=0)
    assert swapped.report.status("transformer_layer_0") == "adapted"
    assert "'feedforward_dropout' (Dropout) replaced inside by Dropout 'drop' (no weights)" in \
        swapped.report.row("transformer_layer_0").reason
    # The block declares its output shape, so only running its call() shows the Identity does not fit.
    with pytest.raises(IncompatibleShape, match="cannot be deleted.*expected axis -1.*What would work"):
        kerasnb.delete(bert, "transformer_layer_0/feedforward_intermediate_dense")
    with pytest.raises(IncompatibleShape, match="cannot be deleted.*What would work"):  # called with query=, value=
        kerasnb.delete(bert, "transformer_layer_0/self_attention_layer")


def test_delete_and_replace_a_block_inside_the_vit_encoder(vit, tmp_path):
    images = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")
    before = snapshot(vit)
    result = kerasnb.delete(vit, "vit_encoder/transformer_block_2")
    encoder = vit.get_layer("vit_encoder")
    by_hand = encoder.layer_norm(encoder.encoder_layers[0](encoder.dropout(
        vit.get_layer("vit_patching_and_embedding")(images))))
    np.testing.assert_allclose(to_numpy(result.model(images)), to_numpy(by_hand), rtol=1e-6, atol=1e-6)
    row = result.report.row("vit_encoder")
    assert row.status == "adapted" and "'transformer_block_2' (ViTEncoderBlock) deleted inside" in row.reason
    assert result.model.count_params() == vit.count_params() - keras_params(encoder.encoder_layers[1])
    assert_unchanged(vit, before)
    assert len(vit.get_layer("vit_encoder").encoder_layers) == 2
    with pytest.raises(IncompatibleShape, match="What would work"):
        kerasnb.replace(vit, "vit_encoder/transformer_block_1", L.Dense(4))


def keras_params(layer):
    return sum(int(np.prod(v.shape)) for v in layer.weights)
