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
        ({"match": 3}, kerasnb.InvalidEdit, "match is a layer class .* a glob on paths and names"),
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


# ----------------------------------------------------------------------------- blocks with auto-named sub-layers


@keras.saving.register_keras_serializable(package="kerasnb_test_lora")
class GatedBlock(L.Layer):
    """A block whose sub-layers and own variable have auto-generated names, new at every rebuild."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.query, self.value, self.norm = L.Dense(units), L.Dense(units), L.LayerNormalization()

    def build(self, input_shape):
        self.query.build(input_shape)
        self.value.build(input_shape)
        self.norm.build(tuple(input_shape[:-1]) + (self.units,))
        self.gain = self.add_weight(shape=(self.units,), initializer="ones")

    def call(self, x):
        return self.norm(self.query(x) * keras.ops.sigmoid(self.value(x))) * self.gain

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kerasnb_test_lora")
class UnconfigurableBlock(GatedBlock):
    """Its get_config() raises (as keras-hub's Llama decoder's does): made again from its arguments."""

    def get_config(self):
        raise AttributeError("no attribute 'rope_scaling_factor'")


@keras.saving.register_keras_serializable(package="kerasnb_test_lora")
class ScaledBlock(L.Layer):
    """Its get_config() hands back one of its own variables (as keras-hub's D-FINE decoder does)."""

    def __init__(self, units, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, scale
        self.dense = L.Dense(units)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.scale), name="scale")

    def call(self, x):
        return self.dense(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


def block_model(block_class):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8), name="features")
    x = block_class(8, name="block")(inputs)
    x = block_class(8, name="block_b")(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(x), name="blocks")
    rng = np.random.default_rng(0)
    for variable in model.weights:  # no initialiser's value can stand in for a lost copy
        variable.assign(to_numpy(variable) + rng.normal(0, 0.3, tuple(variable.shape)).astype("float32"))
    return model


def features():
    return np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")


def shared_variables(a, b):
    return {id(v) for v in a.variables} & {id(v) for v in b.variables}


@pytest.mark.parametrize("block_class", [GatedBlock, UnconfigurableBlock])
def test_lora_inside_blocks_with_auto_named_sub_layers_keeps_every_value(block_class):
    original = block_model(block_class)
    before, want = snapshot(original), to_numpy(original(features()))
    # The targets are auto-named too ("block/dense_12"): found in the rebuilt block by position.
    lora = kerasnb.enable_lora(original, lambda path, layer: layer is original.get_layer("block").value, rank=2)
    assert list(kerasnb.lora.lora_layers(lora.model).values()) == [2]
    assert lora.report.status("block") == "kept" and lora.report.status("block_b") == "kept"
    np.testing.assert_array_equal(to_numpy(lora.model(features())), want)
    assert not shared_variables(original, lora.model)

    for variable in lora.model.weights:  # as if trained: the factors are no longer zero
        if variable.path.rsplit("/", 1)[-1].startswith("lora_"):
            variable.assign(np.full(tuple(variable.shape), 0.1, "float32"))
    trained = to_numpy(lora.model(features()))
    assert not np.allclose(trained, want)
    merged = kerasnb.merge_lora(lora.model)
    assert kerasnb.lora.lora_layers(merged.model) == {} and merged.report.status("block") == "folded"
    np.testing.assert_allclose(to_numpy(merged.model(features())), trained, rtol=1e-5, atol=1e-6)
    assert merged.model.count_params() == original.count_params()
    assert not shared_variables(lora.model, merged.model) and not shared_variables(original, merged.model)
    assert_unchanged(original, before)


def test_a_variable_in_a_config_is_never_shared_with_the_new_layer():
    original = block_model(ScaledBlock)
    want = to_numpy(original(features()))
    renamed = kerasnb.configure(original, "block", name="renamed")  # made from its config, no other route
    assert renamed.report.status("renamed") == "kept"
    for result in (renamed, kerasnb.apply(original, []), kerasnb.enable_lora(original, "block/dense*", rank=2)):
        assert not shared_variables(original, result.model)
        factors = sum(int(np.prod(v.shape)) for v in result.model.weights if v.name.startswith("lora_"))
        assert result.model.count_params() - factors == original.count_params()
        np.testing.assert_array_equal(to_numpy(result.model(features())), want)
    merged = kerasnb.merge_lora(result.model)
    assert not shared_variables(original, merged.model)
    assert merged.model.count_params() == original.count_params()


def test_pairing_by_structure_refuses_what_it_cannot_pair():
    from kerasnb.weights import carried_values, paired_variables

    old, other = GatedBlock(4), ScaledBlock(4)
    for layer in (old, other):
        layer.build((None, 3))
    twin = GatedBlock(4)
    twin.build((None, 3))
    pairs = paired_variables(old, twin)  # each variable with the one at its place in the other block
    assert {(id(a), id(b)) for a, b in pairs} == {(id(a), id(b)) for a, b in zip(old.weights, twin.weights)}
    assert len(pairs) == len(twin.weights) == 7
    with pytest.raises(kerasnb.InvalidEdit, match="other sub-layers than it had"):
        paired_variables(old, other)
    wider = GatedBlock(6)
    wider.build((None, 3))
    with pytest.raises(kerasnb.InvalidEdit, match=r"'gated_block.*' was made again with variable.* of shape \(6,\), not \(4,\)"):
        carried_values(old, wider)


def test_lora_on_a_layer_that_has_it_already_is_refused():
    lora = kerasnb.enable_lora(model(), "ffn_up", rank=2).model
    with pytest.raises(kerasnb.InvalidEdit, match="'ffn_up' already has LoRA enabled.*merge_lora"):
        kerasnb.enable_lora(lora, "ffn_*", rank=4)


def test_lora_on_convolutions_enables_survives_a_later_edit_and_merges():
    """Keras's Conv layers take no lora_rank in their constructor: LoRA goes on by the rule, and stays on."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(5, 3, name="c2")(L.Conv2D(4, 3, name="c1")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="d")(L.Flatten()(x)))
    before = snapshot(model)
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    lora = kerasnb.enable_lora(model, "c*", rank=2)
    assert kerasnb.lora.lora_layers(lora.model) == {"c1": 2, "c2": 2}
    assert lora.report.status("c1") == "kept" and lora.report.row("c1").reason == "LoRA rank 2"
    np.testing.assert_array_equal(to_numpy(lora.model(images)), to_numpy(model(images)))
    for variable in lora.model.weights:  # trained factors: the merge must fold something
        if "lora_kernel_b" in variable.path:
            variable.assign(np.random.default_rng(1).random(variable.shape).astype("float32"))
    trained = to_numpy(lora.model(images))
    later = kerasnb.replace(lora.model, "d", L.Dense(2, name="d2"))
    assert kerasnb.lora.lora_layers(later.model) == {"c1": 2, "c2": 2} and later.report.status("c2") == "kept"
    merged = kerasnb.merge_lora(lora.model)
    assert kerasnb.lora.lora_layers(merged.model) == {} and merged.model.count_params() == model.count_params()
    np.testing.assert_allclose(to_numpy(merged.model(images)), trained, rtol=1e-5, atol=1e-5)
    assert_unchanged(model, before)
