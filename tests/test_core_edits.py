"""insert, delete, configure, set_trainable and apply (several edits, one result)."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, layer_output, sample_input, snapshot, to_numpy
from keras import layers as L

import kerasnb


class TestInsert:
    def test_insert_after_keeps_everything_before(self, make):
        """A layer inserted after 'dense' leaves 'dense' kept and its consumer with changed input."""
        model = make("seed_mlp")
        r = kerasnb.insert(model, L.Dropout(0.5, name="extra_drop"), after="dense")
        assert [l.name for l in r.model.layers] == ["input_layer", "dense", "extra_drop", "dense_1", "dense_2"]
        assert r.report.status("dense") == "kept"
        assert r.report.status("extra_drop") == "new"
        # Dropout is the identity at inference, but the report cannot know; it says the input changed.
        assert r.report.status("dense_1") == "kept_input_changed"

    def test_insert_before(self, make):
        """before= puts the new layer between the target and its input."""
        model = make("seed_mlp")
        r = kerasnb.insert(model, L.Dense(64, name="pre"), before="dense_1")
        assert [l.name for l in r.model.layers][2:4] == ["pre", "dense_1"]

    def test_insert_after_input_layer(self, make):
        """Inserting right after an input (e.g. a normalisation) is allowed."""
        model = make("seed_mlp")
        r = kerasnb.insert(model, L.LayerNormalization(name="norm"), after="input_layer")
        assert r.report.status("norm") == "new"
        assert r.report.status("dense") == "kept_input_changed"

    def test_insert_inside_nested_model(self, make):
        model = make("nested")
        r = kerasnb.insert(model, L.Dense(5, name="mid"), after="encoder/inner_a")
        assert [l.name for l in r.model.get_layer("encoder").layers][-2:] == ["mid", "inner_b"]
        assert r.report.status("encoder/inner_a") == "kept"
        assert r.report.status("encoder/inner_b") == "kept_input_changed"  # still 5 features in


class TestDelete:
    def test_delete_passes_input_on(self, make):
        """Deleting 'dense_1' feeds 'dense' straight into 'dense_2'."""
        model = make("seed_mlp")
        r = kerasnb.delete(model, "dense_1")
        assert [l.name for l in r.model.layers] == ["input_layer", "dense", "dense_2"]
        assert r.report.status("dense_1") == "removed"
        assert r.report.row("dense_2").reason == "kernel (32, 1) -> (64, 1)"

    def test_delete_shape_preserving_layer_keeps_consumers_weights(self, make):
        model = make("residual")
        r = kerasnb.delete(model, "res_bn")
        assert r.report.status("res_conv2") == "kept_input_changed"
        assert r.report.status("res_conv1") == "kept"

    def test_delete_original_untouched(self, make):
        model = make("residual")
        before = snapshot(model)
        kerasnb.delete(model, "drop")
        assert_unchanged(model, before)

    def test_delete_that_would_pass_on_integers_where_floats_were_read_is_refused(self):
        """Like Moonshine's rotary embedding: int positions in, floats of the same declared shape out.
        Passing the positions on would give the consumer other values; the plan says so."""

        class Frequencies(L.Layer):
            def call(self, positions):
                return keras.ops.sin(keras.ops.cast(positions, "float32"))

        positions = keras.Input((4,), dtype="int32", name="positions")
        model = keras.Model(positions, L.Dense(2, name="head")(Frequencies(name="frequencies")(positions)))
        with pytest.raises(kerasnb.errors.InvalidEdit, match=r"'frequencies'.*int32.*float32"):
            kerasnb.delete(model, "frequencies")


class TestConfigure:
    def test_units_change_reinitialises_and_explains(self, make):
        model = make("seed_mlp")
        r = kerasnb.configure(model, "dense_1", units=16)
        assert r.report.status("dense_1") == "reinitialized"
        assert r.report.row("dense_1").reason == "kernel (64, 32) -> (64, 16), bias (32,) -> (16,)"
        assert r.report.row("dense_2").reason == "kernel (32, 1) -> (16, 1)"

    def test_activation_change_keeps_weights(self, make):
        """Same shapes: the weights are copied, and the report says the config changed."""
        model = make("seed_mlp")
        r = kerasnb.configure(model, "dense_1", activation="tanh")
        assert r.report.status("dense_1") == "kept_input_changed"
        assert "activation" in r.report.row("dense_1").reason
        np.testing.assert_array_equal(
            to_numpy(model.get_layer("dense_1").kernel), to_numpy(r.model.get_layer("dense_1").kernel)
        )
        assert r.model.get_layer("dense_1").activation.__name__ == "tanh"

    def test_unknown_option_names_valid_ones(self, make):
        model = make("seed_mlp")
        with pytest.raises(kerasnb.InvalidEdit, match=r"no config option 'unit'.*units"):
            kerasnb.configure(model, "dense_1", unit=3)


class TestConfigureWithoutNewComputation:
    def test_same_value_or_new_name_keeps_the_layer_kept(self, make):
        """A change that computes the same (a value it already had, a name) leaves it and its consumers kept."""
        model = make("seed_mlp")
        r = kerasnb.configure(model, "dense_1", activation="relu")
        assert r.report.status("dense_1") == "kept" and r.report.status("dense_2") == "kept"
        r = kerasnb.configure(model, "dense_1", name="hidden")
        assert r.report.status("hidden") == "kept" and r.report.row("hidden").source == "dense_1"
        assert r.report.status("dense_2") == "kept"

    def test_nested_model_cannot_be_configured(self, make):
        with pytest.raises(kerasnb.InvalidEdit, match="'encoder' is a nested model; configure its layers"):
            kerasnb.configure(make("nested"), "encoder", name="enc2")


class TestSetTrainable:
    def test_unfreezing_a_frozen_nested_model_unfreezes_its_layers(self, make):
        model = make("nested")
        model.get_layer("encoder").trainable = False
        r = kerasnb.set_trainable(model, "encoder", True)
        inner = r.model.get_layer("encoder")
        assert all(layer.trainable for layer in inner.layers)
        assert len(r.model.trainable_weights) == len(model.weights)

    def test_unfreezing_inside_a_frozen_model_is_refused(self, make):
        model = make("nested")
        model.get_layer("encoder").trainable = False
        with pytest.raises(kerasnb.InvalidEdit, match="inside 'encoder', which is frozen.*Unfreeze 'encoder' first"):
            kerasnb.set_trainable(model, "encoder/inner_a", True)

    def test_a_tuple_of_names_is_one_target_as_in_every_verb(self, make):
        # A list is several targets; a tuple of two names is a (first, last) span in every verb.
        for verb in (lambda m, t: kerasnb.set_trainable(m, t, False), kerasnb.delete,
                     lambda m, t: kerasnb.configure(m, t, activation="gelu")):
            with pytest.raises(kerasnb.InvalidEdit, match=r"span.*a list: \['dense', 'dense_1'\]"):
                verb(make("seed_mlp"), ("dense", "dense_1"))
        r = kerasnb.set_trainable(make("seed_mlp"), ["dense", "dense_1"], False)
        assert not r.model.get_layer("dense").trainable and not r.model.get_layer("dense_1").trainable

    def test_freeze_keeps_outputs(self, make):
        model = make("residual")
        r = kerasnb.set_trainable(model, ["stem", "res_conv1"], False)
        assert not r.model.get_layer("stem").trainable
        assert r.model.get_layer("res_conv2").trainable
        assert r.report.status("stem") == "kept"
        assert r.report.row("stem").trainable is False
        x = sample_input(model)
        np.testing.assert_array_equal(to_numpy(model(x)["cls"]), to_numpy(r.model(x)["cls"]))

    def test_frozen_flags_are_carried_through_edits(self, make):
        model = make("seed_mlp")
        model.get_layer("dense").trainable = False
        r = kerasnb.delete(model, "dense_1")
        assert not r.model.get_layer("dense").trainable


class TestListTargets:
    """replace, configure and delete take a list of targets alike: one rebuild, each target its own layer."""

    def test_replace_a_list_gives_each_target_its_own_layer(self, make):
        model = make("residual")
        before = snapshot(model)
        given = L.Conv2D(8, 1, padding="same", name="pointwise")
        r = kerasnb.replace(model, ["res_conv1", "res_conv2"], given)
        new = [l for l in r.model.layers if isinstance(l, L.Conv2D) and l.name.startswith("pointwise")]
        assert sorted(l.name for l in new) == ["pointwise", "pointwise_1"]
        assert new[0] is not given and new[1] is not given and new[0].kernel is not new[1].kernel
        assert r.report.status("pointwise") == "new" and r.report.status("pointwise_1") == "new"
        assert r.report.status("res_conv1") == "removed" and r.report.status("res_conv2") == "removed"
        assert r.report.status("stem") == "kept"
        assert [type(e).__name__ for e in r.edits] == ["Replace", "Replace"]
        assert_unchanged(model, before)

    def test_replace_a_list_with_a_callable_calls_it_at_each_target(self, make):
        """A callable is tensor -> tensor at each target, as for one target."""
        model = make("seed_mlp")
        made = []

        def block(x):
            made.append(L.Dropout(0.1, name=f"drop_{len(made)}"))
            return made[-1](x)

        r = kerasnb.replace(model, ["dense", "dense_1"], block)
        assert [l.name for l in r.model.layers] == ["input_layer", "drop_0", "drop_1", "dense_2"]

    def test_one_string_target_works_as_before(self, make):
        r = kerasnb.replace(make("seed_mlp"), "dense_1", L.Dense(32, name="hidden"))
        assert [l.name for l in r.model.layers] == ["input_layer", "dense", "hidden", "dense_2"]

    def test_configure_a_list(self, make):
        model = make("seed_mlp")
        r = kerasnb.configure(model, ["dense", "dense_1"], activation="tanh")
        assert [r.model.get_layer(n).activation.__name__ for n in ("dense", "dense_1")] == ["tanh", "tanh"]
        assert r.report.status("dense") == "kept_input_changed" and r.report.status("dense_1") == "kept_input_changed"
        x = sample_input(model)
        np.testing.assert_array_equal(to_numpy(model.get_layer("dense").kernel),
                                      to_numpy(r.model.get_layer("dense").kernel))
        assert not np.array_equal(to_numpy(model(x)), to_numpy(r.model(x)))

    @pytest.mark.parametrize("verb", ["replace", "configure", "delete"])
    @pytest.mark.parametrize("targets, match", [
        ([], r"empty list of targets: it would change nothing.*Received: target=\[\]"),
        (["dense_1", "dense_1"], r"'dense_1' is named twice in the targets of {verb}\(\).*Received: target="),
        ([["dense_1"]], r"holds targets .*not lists.*Received: target=\[\['dense_1'\]\]"),
    ])
    def test_list_misuse_is_refused_alike(self, make, verb, targets, match):
        model = make("seed_mlp")
        call = {"replace": lambda: kerasnb.replace(model, targets, L.Dense(32)),
                "configure": lambda: kerasnb.configure(model, targets, activation="tanh"),
                "delete": lambda: kerasnb.delete(model, targets)}[verb]
        with pytest.raises(kerasnb.InvalidEdit, match=match.format(verb=verb)):
            call()

    def test_a_verb_of_one_target_says_which_take_a_list(self, make):
        with pytest.raises(kerasnb.InvalidEdit, match=r"A list of targets is taken by replace, delete, configure.*"
                                                      r"Received: target=\['dense', 'dense_1'\] of type list"):
            kerasnb.insert(make("seed_mlp"), L.Dropout(0.1), after=["dense", "dense_1"])


class TestOneVocabulary:
    def test_set_trainable_needs_trainable(self, make):
        with pytest.raises(kerasnb.InvalidEdit, match=r"missing 1 required positional argument: 'trainable'.*"
                                                      r"It takes set_trainable\(model, targets, trainable"):
            kerasnb.set_trainable(make("seed_mlp"), ["dense"])
        with pytest.raises(TypeError):
            kerasnb.SetTrainable(["dense"])

    @pytest.mark.parametrize("old, new", [("ratio", "keep="), ("flops", "macs=")])
    def test_an_old_budget_name_says_the_new_one(self, make, old, new):
        with pytest.raises(kerasnb.InvalidEdit, match=rf"unexpected keyword argument '{old}'.*{old}= is now {new}"):
            kerasnb.prune_global(make("seed_mlp"), **{old: 0.5})

    def test_count_macs_is_the_name(self):
        assert "count_macs" in kerasnb.__all__ and "count_flops" not in kerasnb.__all__
        with pytest.raises(AttributeError, match="it is called 'count_macs' now"):
            kerasnb.count_flops


class TestApply:
    def test_several_edits_one_result(self, make):
        model = make("residual")
        r = kerasnb.apply(model, [
            kerasnb.Replace("res_conv2", L.Conv2D(8, 1, padding="same", name="pointwise")),
            kerasnb.Insert(L.Dropout(0.1, name="late_drop"), after="gap"),
            kerasnb.SetTrainable(["stem"], False),
        ])
        assert r.report.status("pointwise") == "new"
        assert r.report.status("late_drop") == "new"
        assert r.report.status("stem") == "kept"
        assert r.edits[0].target == "res_conv2"

    def test_later_edit_may_target_a_layer_made_by_an_earlier_one(self, make):
        """The report still compares with the original model across rebuilds."""
        model = make("seed_mlp")
        r = kerasnb.apply(model, [
            kerasnb.Replace("dense_1", L.Dropout(0.2, name="dropout")),
            kerasnb.Configure("dropout", {"rate": 0.5}),
            kerasnb.Insert(L.Dense(64, name="after_drop"), after="dropout"),
        ])
        assert r.model.get_layer("dropout").rate == 0.5
        assert r.report.status("dense") == "kept"
        assert r.report.status("dense_1") == "removed"
        assert r.report.status("dropout") == "new"
        assert r.report.status("after_drop") == "new"
        assert r.report.status("dense_2") == "reinitialized"

    def test_an_edit_on_a_layer_the_list_already_replaced_is_refused(self, make):
        """Later edits see the model as earlier ones left it: a replaced layer is gone."""
        model = make("seed_mlp")
        with pytest.raises(kerasnb.LayerNotFound, match="No layer named 'dense_1'"):
            kerasnb.apply(model, [kerasnb.Replace("dense_1", L.Dense(32, name="d32")),
                                  kerasnb.Configure("dense_1", {"units": 3})])
        with pytest.raises(kerasnb.LayerNotFound, match="No layer named 'dense_1'"):
            kerasnb.apply(model, [kerasnb.Delete("dense_1"), kerasnb.Insert(L.Dropout(0.1), after="dense_1")])

    def test_a_single_edit_is_accepted(self, make):
        r = kerasnb.apply(make("seed_mlp"), kerasnb.Delete("dense_1"))
        assert r.report.status("dense_1") == "removed"

    def test_no_edits_is_a_faithful_copy(self, make):
        model = make("residual")
        r = kerasnb.apply(model, [])
        assert set(r.report.counts()) <= {"kept", "no_weights"}
        x = sample_input(model)
        np.testing.assert_array_equal(to_numpy(model(x)["cls"]), to_numpy(r.model(x)["cls"]))

    def test_identity_replacement_round_trip(self, make):
        """Replacing a layer by a fresh copy of itself: it is new; upstream kept, downstream input changed."""
        model = make("residual")
        layer = model.get_layer("res_conv1")
        r = kerasnb.replace(model, "res_conv1", layer.__class__.from_config(layer.get_config()))
        assert r.report.status("res_bn") == "kept_input_changed"
        assert r.report.status("stem") == "kept"


class TestPruneInApply:
    def test_prune_composes_with_other_edits(self, make):
        """A Prune edit in a list: statuses still compare with the original model."""
        model = make("seed_mlp")
        r = kerasnb.apply(model, [
            kerasnb.Replace("dense_2", L.Dense(1, name="head")),
            kerasnb.Prune("dense", channels=[0, 5, 7]),
        ])
        assert r.report.status("dense") == "pruned"
        assert r.report.row("dense").reason == "kernel (10, 64) -> (10, 61), bias (64,) -> (61,)"
        assert r.report.status("dense_1") == "pruned"
        assert r.report.status("head") == "new"
        assert r.report.row("head").reason.startswith("added by replace")
        assert r.report.status("dense_2") == "removed"
        assert r.model.get_layer("dense").units == 61
