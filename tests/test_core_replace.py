"""kerasnb.replace: a layer, a list, a model or a callable in place of a layer or a span."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, layer_output, sample_input, snapshot, to_numpy
from keras import layers as L

import kerasnb


class TestSeedExample1:
    def test_statuses_match_the_documents_manual_copy(self, make):
        """Dense by Dropout: only the first Dense keeps weights, the last is re-initialised."""
        model = make("seed_mlp")
        r = kerasnb.replace(model, "dense_1", L.Dropout(0.2, name="dropout"))
        rep = r.report
        assert rep.status("dense") == "kept"
        assert rep.status("dense_1") == "removed"
        assert rep.status("dropout") == "new"
        assert rep.status("dense_2") == "reinitialized"
        assert rep.row("dense_2").reason == "kernel (32, 1) -> (64, 1)"
        assert [l.name for l in r.model.layers] == ["input_layer", "dense", "dropout", "dense_2"]

    def test_kept_layer_outputs_are_bit_identical(self, make):
        """A kept layer computes exactly what it did before."""
        model = make("seed_mlp")
        r = kerasnb.replace(model, "dense_1", L.Dropout(0.2, name="dropout"))
        x = sample_input(model)
        np.testing.assert_array_equal(layer_output(model, "dense", x), layer_output(r.model, "dense", x))

    def test_original_is_untouched(self, make):
        """The model passed in keeps its layers, weights and nodes."""
        model = make("seed_mlp")
        before = snapshot(model)
        kerasnb.replace(model, "dense_1", L.Dropout(0.2))
        assert_unchanged(model, before)

    def test_new_model_shares_no_variables(self, make):
        """Training the new model leaves the original's weights alone."""
        model = make("seed_mlp")
        before = snapshot(model)
        r = kerasnb.replace(model, "dense_1", L.Dropout(0.2))
        new = r.model
        new.compile(optimizer="sgd", loss="mse")
        new.fit(np.ones((8, 10), "float32"), np.ones((8, 1), "float32"), epochs=1, verbose=0)
        assert_unchanged(model, before)
        assert not np.array_equal(to_numpy(new.get_layer("dense").kernel), before["weights"][0])
        ids = {id(v) for v in model.weights}
        assert not any(id(v) in ids for v in new.weights)


class TestReplacementKinds:
    def test_list_of_layers_is_applied_in_order(self, make):
        """[Reshape, Conv1D, Flatten] replaces one Dense (seed example 2)."""
        model = make("seed_mlp")
        block = [L.Reshape((64, 1), name="reshape"), L.Conv1D(4, 3, name="conv1d"), L.Flatten(name="flatten")]
        r = kerasnb.replace(model, "dense_1", block)
        names = [l.name for l in r.model.layers]
        assert names == ["input_layer", "dense", "reshape", "conv1d", "flatten", "dense_2"]
        assert r.report.status("conv1d") == "new"
        assert r.report.row("dense_2").reason == "kernel (32, 1) -> (248, 1)"

    def test_model_as_block_brings_its_own_weights(self, make):
        """A keras.Model replacement is copied with its weights; the report says so."""
        model = make("seed_mlp")
        block_in = keras.Input((64,))
        block = keras.Model(block_in, L.Dense(32, name="pre")(block_in), name="pretrained")
        r = kerasnb.replace(model, "dense_1", block)
        assert r.report.status("pretrained") == "new"
        assert "own" in r.report.row("pretrained/pre").reason
        np.testing.assert_array_equal(
            to_numpy(r.model.get_layer("pretrained").get_layer("pre").kernel), to_numpy(block.get_layer("pre").kernel)
        )
        # Same width as before, so the consumer keeps its weights, with a changed input.
        assert r.report.status("dense_2") == "kept_input_changed"
        assert len(block.get_layer("pre")._inbound_nodes) == 1  # the user's block got no new calls

    def test_callable_builds_a_subgraph(self, make):
        """A tensor -> tensor function is called on the target's input."""
        model = make("seed_mlp")
        r = kerasnb.replace(model, "dense_1", lambda t: L.Dense(32, name="via_fn")(t) * 2.0)
        assert r.report.status("via_fn") == "new"
        assert r.report.status("dense_2") == "kept_input_changed"

    def test_span_is_replaced_as_one_piece(self, make):
        """(first, last) replaces a chain of layers."""
        model = make("seed_mlp")
        r = kerasnb.replace(model, ("dense", "dense_1"), L.Dense(32, name="merged"))
        assert r.report.status("dense") == "removed"
        assert r.report.status("dense_1") == "removed"
        assert r.report.status("dense_2") == "kept_input_changed"

    def test_replacement_object_is_not_used_itself(self, make):
        """The user's replacement layer is copied, so it can be reused in another edit."""
        model = make("seed_mlp")
        drop = L.Dropout(0.2, name="dropout")
        first = kerasnb.replace(model, "dense_1", drop)
        second = kerasnb.replace(model, "dense", drop)
        assert first.model.get_layer("dropout") is not drop
        assert second.report.status("dropout") == "new"

    def test_layer_object_as_target(self, make):
        """A target may be the layer object itself."""
        model = make("seed_mlp")
        r = kerasnb.replace(model, model.get_layer("dense_1"), L.Dense(32, name="d32"))
        assert r.report.status("dense_2") == "kept_input_changed"

    def test_new_layer_name_clash_is_resolved(self, make):
        """A replacement named like an existing layer gets a unique name."""
        model = make("seed_mlp")
        r = kerasnb.replace(model, "dense_1", L.Dense(32, name="dense"))
        names = [l.name for l in r.model.layers]
        assert names == ["input_layer", "dense", "dense_3", "dense_2"]
        assert r.report.status("dense_3") == "new"
        assert r.report.status("dense") == "kept"


class TestGraphShapes:
    def test_residual_branch(self, make):
        """Editing inside a residual block keeps the stem and re-checks the Add."""
        model = make("residual")
        r = kerasnb.replace(model, "res_conv2", L.Conv2D(8, 1, padding="same", name="res_conv2_1x1"))
        assert r.report.status("stem") == "kept"
        assert r.report.status("res_conv1") == "kept"
        assert r.report.status("res_bn") == "kept"
        assert r.report.status("branch") == "kept_input_changed"
        assert r.report.status("cls") == "kept_input_changed"
        x = sample_input(model)
        np.testing.assert_array_equal(layer_output(model, "res_bn", x), layer_output(r.model, "res_bn", x))
        assert set(r.model.output.keys()) == {"cls", "reg"}

    def test_multi_input_with_raw_ops(self, make):
        """Raw keras.ops calls are carried over; untouched inputs' layers stay kept."""
        model = make("two_input")
        r = kerasnb.replace(model, "b_dense", L.Dense(8, activation="relu", name="b_dense2"))
        assert r.report.status("a_dense") == "kept"
        assert r.report.status("joint") == "kept_input_changed"
        x = sample_input(model)
        np.testing.assert_array_equal(layer_output(model, "a_dense", x), layer_output(r.model, "a_dense", x))

    def test_untouched_output_is_identical(self, make):
        """An output that no edit reaches computes exactly as before."""
        model = make("residual")
        r = kerasnb.replace(model, "cls", L.Dense(5, name="cls2"))
        x = sample_input(model)
        np.testing.assert_array_equal(to_numpy(model(x)["reg"]), to_numpy(r.model(x)["reg"]))

    def test_shared_layer_one_call(self, make):
        """(name, call_index) replaces one call; the other calls stay shared and kept."""
        model = make("shared")
        r = kerasnb.replace(model, ("shared", 1), L.Dense(4, name="second"))
        assert r.report.status("shared") == "kept"
        assert r.report.status("second") == "new"
        assert len(r.model.get_layer("shared")._inbound_nodes) == 1

    def test_nested_model_path(self, make):
        """'outer/inner' edits a layer inside a nested model."""
        model = make("nested")
        r = kerasnb.replace(model, "encoder/inner_b", L.Dense(4, name="inner_b2"))
        assert r.report.status("encoder/inner_a") == "kept"
        assert r.report.status("encoder/inner_b2") == "new"
        assert r.report.status("encoder/inner_b") == "removed"
        assert r.report.status("head") == "kept_input_changed"
        inner = r.model.get_layer("encoder")
        assert [l.name for l in inner.layers][-1] == "inner_b2"

    def test_sequential_stays_sequential(self, make):
        """A built Sequential model is edited; the result is a Sequential as long as it is a chain."""
        model = make("sequential")
        r = kerasnb.replace(model, "sdrop", L.Dropout(0.5, name="sdrop2"))
        assert isinstance(r.model, keras.Sequential)
        assert r.report.status("s1") == "kept"
        assert r.report.status("s2") == "kept_input_changed"

    def test_layer_shared_by_a_nested_model_and_the_outer_graph_stays_tied(self):
        """One layer called inside a nested model and outside it is still one layer afterwards."""
        tied = L.Dense(4, name="tied")
        inner_in = keras.Input((4,))
        inner = keras.Model(inner_in, tied(inner_in), name="inner")
        inputs = keras.Input((4,))
        model = keras.Model(inputs, tied(inner(inputs)))
        r = kerasnb.apply(model, [])
        assert r.model.get_layer("tied") is r.model.get_layer("inner").get_layer("tied")
        assert len(r.model.weights) == len(model.weights) == 2

    def test_compile_follows_a_renamed_output(self):
        """Losses keyed by output name move to the new name when an edit renames the output."""
        inputs = keras.Input((3,))
        model = keras.Model(inputs, [L.Dense(2, name="o1")(inputs), L.Dense(2, name="o2")(inputs)])
        model.compile(optimizer="sgd", loss={"o1": "mse", "o2": "mae"})
        r = kerasnb.insert(model, L.Activation("relu", name="act"), after="o1")
        assert r.model.output_names == ["act", "o2"]
        assert "'o1' -> 'act'" in r.notes[0]
        x = np.ones((4, 3), "float32")
        r.model.fit(x, [np.ones((4, 2), "float32")] * 2, epochs=1, verbose=0)

    def test_compiled_sequential_stays_compiled(self, make):
        model = make("sequential")
        model.compile(optimizer="sgd", loss="mse")
        r = kerasnb.delete(model, "sdrop")
        assert r.model.compiled and r.notes == ()

    def test_compile_config_is_kept(self, make):
        """A compiled model gives a compiled model."""
        model = make("seed_mlp")
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        r = kerasnb.replace(model, "dense_1", L.Dropout(0.2))
        assert r.model.compiled
        assert r.model.get_compile_config()["loss"] == "binary_crossentropy"
