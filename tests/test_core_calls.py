"""Whole calls: replacements receive every argument the replaced call received; fidelity of flags,
tied layers, call order and the user's op objects."""

import keras
import numpy as np
import pytest
from conftest import FACTORIES, assert_unchanged, snapshot, to_numpy
from keras import layers as L

import kerasnb
from kerasnb import _graph


def attention_model():
    """A MultiHeadAttention called with query=, value= and an attention_mask keyword tensor."""
    tokens = keras.Input((6, 8), name="tokens")
    mask = keras.Input((6, 6), dtype="bool", name="mask")
    att = L.MultiHeadAttention(2, 4, name="mha")(tokens, tokens, attention_mask=mask)
    out = L.Dense(3, name="head")(L.Add(name="residual")([tokens, att]))
    return keras.Model([tokens, mask], out, name="attn")


def padded_batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 6, 8)).astype("float32")
    lengths = np.array([6, 4, 2, 1])
    valid = np.arange(6)[None, :] < lengths[:, None]
    return [x, valid[:, None, :] & valid[:, :, None]]


@keras.saving.register_keras_serializable(package="kerasnb_calls")
class MaskedBlock(L.Layer):
    """A transformer-style block called as block(hidden, padding_mask=mask)."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.attention = L.MultiHeadAttention(2, width // 2, name="attention")
        self.dense = L.Dense(width, name="ffn")

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.dense.build(input_shape)

    def call(self, hidden, padding_mask=None):
        mask = None
        if padding_mask is not None:
            valid = keras.ops.cast(padding_mask, "bool")
            mask = keras.ops.logical_and(valid[:, None, :], valid[:, :, None])
        return hidden + self.dense(self.attention(hidden, hidden, attention_mask=mask))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def block_model():
    hidden = keras.Input((6, 8), name="hidden")
    padding = keras.Input((6,), dtype="int32", name="padding_mask")
    x = MaskedBlock(name="block_0")(hidden, padding_mask=padding)
    x = MaskedBlock(name="block_1")(x, padding_mask=padding)
    return keras.Model([hidden, padding], L.Dense(2, name="head")(x), name="blocks")


def block_batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 6, 8)).astype("float32")
    return [x, (np.arange(6)[None, :] < np.array([6, 4, 2, 1])[:, None]).astype("int32")]


def copy_of(layer):
    """An identical layer with the same weights, as a user would make it to test a replacement."""
    twin = type(layer).from_config({**layer.get_config(), "name": layer.name + "_copy"})
    return twin


class TestKeywordTensorsReachTheReplacement:
    def test_attention_mask_on_a_padded_batch(self):
        """An identical copy of a masked attention layer gives bit-identical outputs."""
        model = attention_model()
        batch = padded_batch()
        expected = to_numpy(model(batch))
        twin = copy_of(model.get_layer("mha"))
        result = kerasnb.replace(model, "mha", twin)
        new = result.model.get_layer("mha_copy")
        for old_var, new_var in zip(model.get_layer("mha").weights, new.weights):
            new_var.assign(old_var)
        np.testing.assert_array_equal(to_numpy(result.model(batch)), expected)

    def test_mask_changes_the_output_so_the_test_can_fail(self):
        """Without the mask the same weights compute something else (what the old core did)."""
        model = attention_model()
        x, mask = padded_batch()
        assert not np.allclose(to_numpy(model([x, mask])), to_numpy(model([x, np.ones_like(mask)])))

    def test_block_called_with_padding_mask(self):
        model = block_model()
        batch = block_batch()
        expected = to_numpy(model(batch))
        twin = copy_of(model.get_layer("block_1"))
        result = kerasnb.replace(model, "block_1", twin)
        new = result.model.get_layer("block_1_copy")
        for old_var, new_var in zip(model.get_layer("block_1").weights, new.weights):
            new_var.assign(old_var)
        np.testing.assert_array_equal(to_numpy(result.model(batch)), expected)
        assert result.report.status("block_0") == "kept"
        assert result.report.status("head") == "kept_input_changed"

    def test_callable_receives_the_keywords(self):
        model = block_model()
        seen = {}

        def replacement(hidden, padding_mask=None):
            seen["padding_mask"] = padding_mask
            return L.Dense(8, name="plain")(hidden)

        result = kerasnb.replace(model, "block_1", replacement)
        assert isinstance(seen["padding_mask"], keras.KerasTensor)
        assert tuple(seen["padding_mask"].shape) == (None, 6)
        assert result.report.status("plain") == "new"

    def test_a_list_gives_the_keyword_to_its_first_layer_that_takes_it(self):
        model = block_model()
        result = kerasnb.replace(model, "block_1", [L.Dense(8, name="pre"), MaskedBlock(name="masked")])
        assert to_numpy(result.model(block_batch())).shape == (4, 6, 2)
        inner = _graph.walk(result.model)
        masked_call = next(v for v in inner if v.name == "masked")
        assert list(masked_call.kwargs) == ["padding_mask"]

    def test_replacement_without_the_keyword_is_refused(self):
        model = block_model()
        before = snapshot(model)
        with pytest.raises(kerasnb.InvalidEdit) as info:
            kerasnb.replace(model, "block_1", L.Dense(8, name="plain"))
        text = str(info.value)
        assert "'block_1' is called with the tensor padding_mask=..." in text
        assert "Dense 'plain'" in text and "What would work" in text
        assert_unchanged(model, before)

    def test_non_tensor_setting_that_cannot_be_passed_is_noted(self):
        tokens = keras.Input((5, 8), name="tokens")
        att = L.MultiHeadAttention(2, 4, name="mha")(tokens, tokens, use_causal_mask=True)
        model = keras.Model(tokens, att)
        result = kerasnb.replace(model, "mha", lambda query, value: L.Dense(8, name="plain")(query))
        assert any("use_causal_mask=True" in note and "not passed on" in note for note in result.notes)


class TestFidelity:
    def test_frozen_layer_keeps_its_sub_layers_frozen(self):
        tokens = keras.Input((5, 8))
        mha = L.MultiHeadAttention(2, 4, name="mha")
        model = keras.Model(tokens, L.Dense(3, name="d")(mha(tokens, tokens)))
        mha.trainable = False  # frozen after it was built: every sub-layer is frozen
        result = kerasnb.apply(model, [])
        assert len(result.model.trainable_variables) == len(model.trainable_variables) == 2
        result = kerasnb.configure(model, "d", units=4)
        assert len(result.model.trainable_variables) == 2

    def test_frozen_nested_model_and_frozen_whole_model(self):
        inner_in = keras.Input((5, 8))
        block = keras.Model(inner_in, L.MultiHeadAttention(2, 4, name="m2")(inner_in, inner_in), name="block")
        block.trainable = False
        outer_in = keras.Input((5, 8))
        model = keras.Model(outer_in, L.Dense(2, name="d")(block(outer_in)))
        assert len(kerasnb.apply(model, []).model.trainable_variables) == len(model.trainable_variables) == 2
        unfrozen = kerasnb.set_trainable(model, "block", True).model
        assert len(unfrozen.trainable_variables) == 10
        model.trainable = False
        assert len(kerasnb.apply(model, []).model.trainable_variables) == 0

    def test_tied_layer_has_one_row(self):
        tied = L.Dense(4, name="tied")
        inner_in = keras.Input((4,))
        inner = keras.Model(inner_in, tied(inner_in), name="inner")
        inputs = keras.Input((4,), name="x")
        model = keras.Model(inputs, L.Dense(2, name="out")(tied(inner(inputs))))
        report = kerasnb.apply(model, []).report
        rows = [row.layer for row in report if row.layer.endswith("tied")]
        assert rows == ["inner/tied"]
        assert report.status("tied") == report.status("inner/tied") == "kept"
        assert report.with_status("removed") == []

    @pytest.mark.parametrize("kind", sorted(FACTORIES))
    def test_round_trip_config_equals_the_original(self, kind):
        keras.utils.set_random_seed(0)
        model = FACTORIES[kind]()
        assert kerasnb.apply(model, []).model.get_config() == model.get_config()

    def test_shared_layer_calls_keep_keras_order(self):
        """Call 0 deeper in the graph than call 1: the rebuild still makes them in that order."""
        x = keras.Input((4,), name="x")
        shared = L.Dense(4, name="s")
        deep = shared(L.Dense(4, name="a")(x))  # call 0
        shallow = shared(x)  # call 1
        model = keras.Model(x, L.Concatenate(name="c")([deep, shallow]))
        result = kerasnb.apply(model, [])
        assert result.model.get_config() == model.get_config()
        changed = kerasnb.replace(model, ("s", 1), L.Dense(4, name="t"))
        assert changed.report.status("t") == "new"
        new_s = changed.model.get_layer("s")
        # the call left is call 0, on a's output
        assert _graph.producer(new_s._inbound_nodes[0].input_tensors[0])[0].name == "a"

    def test_no_call_is_added_to_the_users_ops(self):
        a = keras.Input((3,))
        model = keras.Model(a, keras.ops.relu(a + a))
        ops = [v.operation for v in _graph.walk(model)]
        calls = [len(op._inbound_nodes) for op in ops]
        kerasnb.apply(model, [])
        kerasnb.replace(model, ops[-1].name, L.Activation("tanh"))
        assert [len(op._inbound_nodes) for op in ops] == calls


@keras.saving.register_keras_serializable(package="kerasnb_calls")
class MadeInInit(L.Layer):
    """A layer that makes its variable in __init__ from a concrete value (not an initializer)."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = keras.Variable(np.ones((units,), "float32"), name="scale")

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class TestVariablesMadeOutsideBuild:
    def model(self):
        inputs = keras.Input((4,), name="x")
        scaled = MadeInInit(name="scaled")(L.Dense(4, name="d0")(inputs))
        model = keras.Model(inputs, L.Dense(2, name="d1")(scaled))
        model.get_layer("scaled").scale.assign(np.arange(4, dtype="float32"))
        return model

    def test_round_trip_keeps_their_values(self):
        model = self.model()
        x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
        result = kerasnb.apply(model, [])
        assert result.report.status("scaled") == "kept"
        np.testing.assert_array_equal(to_numpy(result.model.get_layer("scaled").scale), np.arange(4))
        np.testing.assert_array_equal(to_numpy(result.model(x)), to_numpy(model(x)))

    def test_an_edit_elsewhere(self):
        model = self.model()
        result = kerasnb.configure(model, "d1", units=3)
        assert result.report.status("scaled") == "kept"
        np.testing.assert_array_equal(to_numpy(result.model.get_layer("scaled").scale), np.arange(4))


class TestFreezingLayersWithSubLayers:
    def test_set_trainable_reaches_sub_layers_made_in_build(self):
        tokens = keras.Input((5, 8))
        mha = L.MultiHeadAttention(2, 4, name="mha")
        model = keras.Model(tokens, L.Dense(3, name="d")(mha(tokens, tokens)))
        frozen = kerasnb.set_trainable(model, ["mha"], False).model
        assert len(frozen.trainable_variables) == 2  # only d's kernel and bias
        assert all(not layer.trainable for layer in _graph.sublayers(frozen.get_layer("mha")))
        thawed = kerasnb.set_trainable(frozen, ["mha"], True).model
        assert len(thawed.trainable_variables) == 10
