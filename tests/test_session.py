"""The editor's Session without any widget: what a row offers and refuses, and what each action does
to the model and the history. The panel only draws these answers, so they are tested here as data.

Nothing in this file imports ipywidgets (and ``kerasnb.editor.session`` loads without it).
"""

import dataclasses
import os
import subprocess
import sys

import keras
import pytest
from conftest import assert_unchanged, sample_input, snapshot

import kerasnb
import kerasnb.catalog as catalog
import kerasnb.surgery
from kerasnb.editor.answers import Param, PruneInfo, RowActions
from kerasnb.editor.session import Session, change_text


@pytest.fixture
def mlp(make):
    return make("seed_mlp")


@pytest.fixture
def session(mlp):
    return Session(mlp)


@pytest.fixture
def rebuilds(monkeypatch):
    """The edit lists the core was asked to rebuild from, from here on."""
    seen, real = [], kerasnb.surgery.apply
    monkeypatch.setattr(kerasnb.surgery, "apply", lambda model, edits: seen.append(list(edits)) or real(model, edits))
    return seen


def state(session):
    """What an error must leave as it was."""
    return session.model, list(session.history), session.cursor, session.steps


def types(model):
    return [type(layer).__name__ for layer in model.layers]


class TestOptions:
    def test_a_row_offers_the_types_that_fit_and_says_why_the_others_do_not(self, session):
        offered, refused = session.answers.options("dense_1")
        assert offered[:4] == ["Keep", "Remove (identity)", "Dropout", "Dense"]
        assert "Conv1D block" in offered
        assert "needs images" in refused["VGG16 backbone (frozen)"] and "(None, 64)" in refused["VGG16 backbone (frozen)"]
        assert set(offered).isdisjoint(refused)

    def test_row_actions_answer_every_question_of_the_panel_as_plain_data(self, session):
        actions = session.answers.row_actions("dense_1")
        assert isinstance(actions, RowActions)
        assert actions.key == "dense_1" and actions.label == "Keep"
        assert actions.offered == tuple(session.answers.options("dense_1")[0])
        assert actions.refused == session.answers.options("dense_1")[1]
        assert actions.params == ()
        assert actions.can_choose and actions.can_delete and actions.can_freeze and actions.trainable
        assert "BatchNormalization" in actions.insertable and "Conv1D block" not in actions.insertable
        assert actions.can_insert and actions.insert_reason == ""
        assert actions.prune == PruneInfo(None, "", 2817, 2817) and actions.prune.can_prune
        with pytest.raises(dataclasses.FrozenInstanceError):
            actions.label = "Dropout"

    def test_an_input_row_can_only_have_something_inserted_after_it(self, session):
        actions = session.answers.row_actions("input_layer")
        assert actions.offered == ("Keep",) and not actions.can_choose
        assert "input layers stay" in actions.choose_reason
        assert not actions.can_delete and "input layers stay" in actions.delete_reason
        assert not actions.can_freeze and "input" in actions.freeze_reason
        assert not actions.prune.can_prune and "an input" in actions.prune.reason
        assert "Dropout" in actions.insertable

    def test_removing_a_layer_before_a_merge_is_refused_with_the_shapes(self, make):
        session = Session(make("residual"))
        actions = session.answers.row_actions("stem")  # (8, 8, 3) -> (8, 8, 8), feeding res_add
        assert "Remove (identity)" not in actions.offered and not actions.can_delete
        assert "res_add" in actions.delete_reason and "(None, 8, 8, 3)" in actions.delete_reason

    def test_the_chosen_type_shows_its_parameters_with_their_choices(self, session):
        session.replace("dense_1", "Dense", {"units": 16})
        actions = session.answers.row_actions("dense_1")
        assert actions.label == "Dense" and actions.offered[:2] == ("Keep", "Remove (identity)")
        units, activation = actions.params
        assert units == Param("units", 16, None)
        assert activation.name == "activation" and activation.value == "relu" and "tanh" in activation.choices
        assert session.answers.row_actions("dense_1_dense").params == actions.params  # its new layer leads to it

    def test_a_value_that_is_not_among_the_choices_is_shown_first(self):
        inputs = keras.Input((4,), name="x")
        out = keras.layers.Dense(3, activation="hard_sigmoid", name="odd")(inputs)
        session = Session(keras.Model(inputs, out))
        session.replace("odd", "Activation")  # starts from the replaced layer's own activation
        (activation,) = session.answers.row_actions("odd").params
        assert activation.value == "hard_sigmoid"
        assert activation.choices[0] == "hard_sigmoid" and "relu" in activation.choices

    def test_the_own_type_is_checked_with_its_own_values(self, session):
        """A Conv1D block with kernel_size=2 fits 2 steps even though the default (3) does not."""
        session.replace("dense", "Dense", {"units": 2})
        session.replace("dense_1", "Conv1D block", {"kernel_size": 2})
        offered, refused = session.answers.options("dense_1")
        assert "Conv1D block" in offered and "Conv1D block" not in refused

    def test_a_registered_type_whose_check_fails_is_refused_with_its_words(self, session):
        def broken(layer, input_shape):
            raise RuntimeError("my check broke")

        catalog.register_replacement("Broken (test)", check=broken)(lambda layer, input_shape: keras.layers.Dropout(0.1))
        try:
            offered, refused = session.answers.options("dense_1")
            assert "Broken (test)" not in offered and "my check broke" in refused["Broken (test)"]
        finally:
            catalog.unregister("Broken (test)")


class TestInsert:
    def test_insert_options_take_and_give_the_layers_output(self, session):
        offered, refused = session.answers.insert_options("dense")
        assert {"Dropout", "Dense", "BatchNormalization", "LayerNormalization", "Activation"} <= set(offered)
        assert "Conv1D block" not in offered and "Conv1D block" not in refused  # not an insertable type

    def test_an_inserted_row_can_change_type_or_be_removed(self, session, mlp):
        name = session.insert("dense", "BatchNormalization")
        assert name == "dense_batchnormalization" and types(session.model)[2] == "BatchNormalization"
        actions = session.answers.row_actions(name)
        assert actions.label == "BatchNormalization" and "Remove (identity)" in actions.offered
        assert session.replace(name, "Dropout") == "dense_dropout"
        assert [s.describe() for s in session.steps] == ["insert Dropout(rate=0.2) after 'dense'"]
        assert session.replace("dense_dropout", "Remove (identity)") is None
        assert session.steps == () and session.model is mlp

    def test_nothing_goes_after_a_replaced_layer(self, session):
        session.replace("dense_1", "Dropout")
        actions = session.answers.row_actions("dense_1")
        assert actions.insertable == () and "replaced or deleted" in actions.insert_reason
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="replaced or deleted"):
            session.insert("dense_1", "Dropout")
        assert state(session) == before
        assert "Dropout" in session.answers.row_actions("dense_1_dropout").insertable  # after what stands there now

    def test_a_type_that_cannot_be_inserted_is_refused_with_the_ones_that_can(self, session):
        with pytest.raises(kerasnb.InvalidEdit, match="'Conv1D block' cannot be inserted; insertable types: Dropout"):
            session.insert("dense", "Conv1D block")


class TestDelete:
    def test_delete_then_keep_brings_it_back(self, session, mlp):
        session.delete("dense_1")
        assert [l.name for l in session.model.layers] == ["input_layer", "dense", "dense_2"]
        assert isinstance(session.edits[0], kerasnb.Delete)
        actions = session.answers.row_actions("dense_1")
        assert actions.label == "Remove (identity)"
        assert not actions.can_delete and "deleted already" in actions.delete_reason
        assert not actions.can_freeze and actions.insertable == ()
        session.replace("dense_1", "Keep")
        assert session.model is mlp

    def test_a_delete_that_would_break_a_merge_is_refused_before_any_rebuild(self, make, rebuilds):
        session = Session(make("residual"))
        before = state(session)
        with pytest.raises(kerasnb.IncompatibleShape, match="res_add"):
            session.delete("stem")
        assert state(session) == before and rebuilds == []


class TestPrune:
    @pytest.mark.parametrize("kind, key, words", [
        ("seed_mlp", "dense_2", "output"),
        ("seed_mlp", "input_layer", "an input"),
        ("shared", ("shared", 1), "shared"),
        ("nested", "encoder", "a nested model"),
        ("nested", "encoder/inner_a", "inside a nested model"),
    ])
    def test_why_a_row_cannot_be_pruned(self, make, kind, key, words):
        session = Session(make(kind))
        info = session.answers.prune_info(key)
        assert not info.can_prune and words in info.reason and info.keep is None

    def test_prune_records_the_counts_and_one_step_per_layer(self, session, mlp):
        session.prune("dense", 0.5)
        assert session.answers.prune_info("dense") == PruneInfo(0.5, "", 2817, 1441)
        assert session.answers.row_actions("dense").prune.keep == 0.5
        session.prune("dense", 0.25)
        assert len(session.steps) == 1 and session.model.get_layer("dense").units == 16
        session.prune("dense", 1)
        assert session.steps == () and session.model is mlp

    def test_pruning_what_cannot_be_pruned_is_refused_in_plain_words(self, session):
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="output.*Received: key='dense_2'"):
            session.prune("dense_2", 0.5)
        with pytest.raises(kerasnb.InvalidEdit, match="0 < keep <= 1"):
            session.prune("dense", 0)
        with pytest.raises(kerasnb.InvalidEdit, match="'l1', 'l2'"):
            session.prune("dense", 0.5, by="random")
        assert state(session) == before

    def test_a_replaced_layer_is_not_pruned_but_its_new_dense_is(self, session):
        session.replace("dense_1", "Dense")
        assert not session.answers.prune_info("dense_1").can_prune
        assert session.answers.prune_info("dense_1_dense").can_prune


class TestFreeze:
    def test_freeze_and_unfreeze(self, session, mlp):
        session.set_trainable("dense", False)
        assert session.model.get_layer("dense").trainable is False
        assert session.answers.row_actions("dense").trainable is False
        assert [s.describe() for s in session.steps] == ["freeze 'dense'"]
        session.set_trainable("dense", True)
        assert session.edits == () and session.answers.row_actions("dense").trainable is True  # as the original: no edit

    def test_a_removed_row_or_a_bad_flag_is_refused(self, session):
        session.replace("dense_1", "Dropout")
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="not in the current model"):
            session.set_trainable("dense_1", False)
        with pytest.raises(kerasnb.InvalidEdit, match="True .* or False"):
            session.set_trainable("dense", "no")
        assert state(session) == before


class TestHistory:
    def test_undo_redo_reset(self, session, mlp, rebuilds):
        assert not (session.can_undo or session.can_redo or session.can_reset)
        session.replace("dense_1", "Dropout")
        session.replace("dense", "BatchNormalization")
        assert session.can_undo and session.can_reset and not session.can_redo
        assert session.undo() and [s.describe() for s in session.steps] == ["replace 'dense_1' with Dropout(rate=0.2)"]
        assert session.undo() and session.model is mlp and not session.undo()
        assert session.redo() and session.redo() and not session.redo()
        assert types(session.model) == ["InputLayer", "BatchNormalization", "Dropout", "Dense"]
        session.reset()
        assert session.model is mlp and session.can_undo
        session.undo()  # reset itself can be undone
        assert len(session.steps) == 2
        assert len(rebuilds) == 2  # undo and redo reuse the results they already have

    def test_a_new_edit_after_undo_drops_the_redo_branch(self, session):
        session.replace("dense_1", "Dropout")
        session.undo()
        session.replace("dense_1", "Activation")
        assert not session.can_redo and len(session.history) == 2

    BAD = {
        "unknown type": (lambda s: s.replace("dense_1", "NoSuchType"), catalog.UnknownType),
        "bad parameter": (lambda s: s.replace("dense_1", "Dropout", {"rate": 5}), catalog.InvalidParameter),
        "unknown parameter": (lambda s: s.replace("dense_1", "Dropout", {"units": 3}), catalog.InvalidParameter),
        "misfit": (lambda s: s.replace("dense_1", "VGG16 backbone (frozen)"), kerasnb.IncompatibleShape),
        "input": (lambda s: s.replace("input_layer", "Dropout"), kerasnb.InputLayerEdit),
        "no row": (lambda s: s.replace("nope", "Dropout"), kerasnb.SurgeryError),
        "no selection": (lambda s: s.replace(None, "Dropout"), kerasnb.InvalidEdit),
        "parameters without a type": (lambda s: s.set_params("dense_2", {"rate": 0.1}), kerasnb.InvalidEdit),
        "bad keep": (lambda s: s.prune("dense", "abc"), kerasnb.InvalidEdit),
    }

    @pytest.mark.parametrize("case", list(BAD))
    def test_history_is_intact_after_an_error(self, case, session, mlp, rebuilds):
        """Refused before any rebuild, as a SurgeryError; the model, steps and history as they were."""
        snap = snapshot(mlp)
        session.replace("dense", "BatchNormalization")
        before, rebuilt = state(session), len(rebuilds)
        call, kind = self.BAD[case]
        with pytest.raises(kind) as caught:
            call(session)
        assert isinstance(caught.value, kerasnb.SurgeryError) and "Received" in str(caught.value)
        assert state(session) == before and len(rebuilds) == rebuilt
        assert_unchanged(mlp, snap)

    @pytest.mark.parametrize("error", [kerasnb.IncompatibleShape("the core refused"), KeyboardInterrupt()])
    def test_history_is_intact_when_the_rebuild_fails_or_is_interrupted(self, session, monkeypatch, error):
        session.replace("dense", "BatchNormalization")
        before = state(session)

        def failing(model, edits):
            raise error

        monkeypatch.setattr(kerasnb.surgery, "apply", failing)
        with pytest.raises(type(error)):
            session.replace("dense_1", "Dropout")
        assert state(session) == before
        monkeypatch.undo()
        session.replace("dense_1", "Dropout")  # and the next edit works
        assert len(session.steps) == 2

    def test_set_params_changes_the_step_in_place(self, session):
        session.replace("dense_1", "Dense")
        session.set_params("dense_1_dense", {"units": 8})
        assert [s.describe() for s in session.steps] == ["replace 'dense_1' with Dense(units=8, activation='relu')"]

    def test_change_text_says_what_an_action_did(self, session):
        old = session.steps
        session.replace("dense_1", "Dropout")
        assert change_text(old, session.steps) == "Done: replace 'dense_1' with Dropout(rate=0.2)."
        middle = session.steps
        session.replace("dense_1", "Dropout", {"rate": 0.5})
        assert change_text(middle, session.steps) == (
            "Done: replace 'dense_1' with Dropout(rate=0.5) (was Dropout(rate=0.2)).")
        assert change_text(session.steps, ()) == "Took back: replace 'dense_1' with Dropout(rate=0.5)."
        assert change_text((), ()) == "No change."


class TestSharedLayers:
    """``shared = Dense(4); y = shared(shared(x))``: each call has its own key."""

    @pytest.fixture
    def shared(self, make):
        return Session(make("shared"))

    def test_keys_name_each_call(self, shared):
        assert shared.calls("shared") == 2 and shared.keys("shared") == [("shared", 0), ("shared", 1)]
        assert shared.key("shared") == ("shared", 0) and shared.key(["shared", 1]) == ("shared", 1)
        assert shared.keys("out") == ["out"] and shared.key(("out", 0)) == "out"
        assert shared.default_key() == ("shared", 0)

    def test_each_call_is_checked_and_replaced_on_its_own(self, shared):
        assert shared.answers.site(("shared", 1)).merges == ("cat",)
        shared.replace(("shared", 1), "Dropout")
        assert shared.edits[0].target == ("shared", 1)
        one, zero = shared.answers.row_actions(("shared", 1)), shared.answers.row_actions(("shared", 0))
        assert one.label == "Dropout" and one.insertable == () and one.can_freeze  # the layer is still there
        assert zero.label == "Keep" and "Dropout" in zero.insertable
        assert "shared" in one.prune.reason

    def test_a_call_renumbered_by_the_core_is_found_in_the_current_model(self, shared):
        shared.replace(("shared", 0), "Dropout")  # the other call is now call 0 of the rebuilt layer
        site = shared.answers.site(("shared", 1))
        assert site.layer is shared.model.get_layer("shared")
        assert site.merges == ("cat",) and site.input_shape == (None, 4)
        name = shared.insert(("shared", 1), "LayerNormalization")
        assert name == "shared_call1_layernormalization"
        assert [l.name for l in shared.model.layers] == ["x", "shared_call0_dropout", "shared", name, "cat", "out"]

    def test_freezing_is_per_layer_from_any_call(self, shared):
        shared.set_trainable(("shared", 1), False)
        assert [s.describe() for s in shared.steps] == ["freeze 'shared'"]
        assert shared.answers.row_actions(("shared", 0)).trainable is False


class TestNestedModels:
    @pytest.fixture
    def nested(self, make):
        return Session(make("nested"))

    def test_rows_inside_a_nested_model_are_edited_by_path(self, nested):
        paths = [p for p in nested.rows() if "input_layer" not in p]  # the inner input's name varies
        assert paths == ["x", "encoder", "encoder/inner_a", "encoder/inner_b", "head"]
        assert "Dropout" in nested.answers.row_actions("encoder/inner_a").offered
        nested.replace("encoder/inner_a", "Dropout")
        assert "encoder/inner_a_dropout" in nested.rows()
        assert nested.answers.row_actions("encoder/inner_a_dropout").label == "Dropout"
        assert nested.report.status("encoder/inner_b") == "reinitialized"

    def test_rows_of_a_replaced_nested_model_have_nothing_to_act_on(self, nested, make):
        nested.replace("encoder", "Dense", {"units": 4})
        actions = nested.answers.row_actions("encoder/inner_b")
        assert actions.offered == ("Keep",) and not (actions.can_choose or actions.can_delete or actions.can_freeze)
        assert actions.insertable == () and not actions.prune.can_prune
        assert "replace 'encoder' with Dense" in actions.choose_reason
        before = state(nested)
        with pytest.raises(kerasnb.InvalidEdit, match="not in the edited model"):
            nested.replace("encoder/inner_b", "Dropout")
        assert state(nested) == before
        nested.replace("encoder", "Keep")
        assert nested.answers.row_actions("encoder/inner_b").can_choose


class TestShapesAsTheLayerSeesThemNow:
    """A row's types are checked with the shapes its layer really gets in the edited model."""

    def test_a_replaced_row_sees_an_upstream_width_change(self, session, rebuilds):
        session.replace("dense_1", "Dropout")
        session.replace("dense", "Dense", {"units": 2})  # dense_1's place now receives (None, 2), not (None, 64)
        assert session.answers.site("dense_1").input_shape == (None, 2)
        offered, refused = session.answers.options("dense_1")
        assert "Conv1D block" not in offered and "2 steps" in refused["Conv1D block"]
        before, rebuilt = state(session), len(rebuilds)
        with pytest.raises(kerasnb.IncompatibleShape, match="2 steps"):
            session.replace("dense_1", "Conv1D block")
        assert state(session) == before and len(rebuilds) == rebuilt  # refused by the dry run, not the rebuild
        session.replace("dense_1", "Conv1D block", {"kernel_size": 2})
        assert session.model.get_layer("dense_1_conv1d_block_1").target_shape == (2, 1)
        assert session.model(sample_input(session.model)).shape == (3, 1)

    def test_an_inserted_row_before_a_merge_keeps_the_merge_shape(self, make, rebuilds):
        session = Session(make("residual"))
        name = session.insert("res_conv2", "BatchNormalization")  # res_conv2 -> new -> res_add
        assert "Dense" in session.answers.options(name)[0]  # with its default width, 8: fits
        before, rebuilt = state(session), len(rebuilds)
        with pytest.raises(kerasnb.IncompatibleShape, match="merge 'res_add'"):
            session.replace(name, "Dense", {"units": 3})
        assert state(session) == before and len(rebuilds) == rebuilt

    def test_notes_speak_of_the_shape_the_replacement_was_made_for(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path))
        inputs = keras.Input((40, 40, 3), name="image")
        x = keras.layers.Dense(8, activation="relu", name="pixels")(inputs)
        out = keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flat")(x))
        session = Session(keras.Model(inputs, out))
        session.replace("pixels", "VGG16 backbone (frozen)")
        assert session.steps[0].input_shape == (None, 40, 40, 3)
        assert any("random weights" in note for note in session.notes)


def test_the_session_loads_and_works_without_ipywidgets():
    """In a fresh process: the Session answers a row's questions with no widget library loaded."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    code = (
        "import sys, keras\n"
        "from kerasnb.editor import Session\n"
        "from kerasnb.editor.answers import RowActions\n"
        "inputs = keras.Input((4,))\n"
        "model = keras.Model(inputs, keras.layers.Dense(2, name='d')(keras.layers.Dense(3, name='h')(inputs)))\n"
        "session = Session(model)\n"
        "assert isinstance(session.answers.row_actions('h'), RowActions)\n"
        "session.replace('h', 'Dropout')\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets loaded by the session'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]


class TestStatusesForetoldFromShapes:
    """``Session.predict``: the statuses shown while a model is rebuilt, worked out from shapes.
    Whenever it answers, its statuses are the real report's; where it cannot be exact it says None."""

    @staticmethod
    def foretold(session):
        """Every prediction made while ``session`` commits, with the steps it was made for."""
        seen = []
        session.on_predict = lambda report, step: seen.append((report, session.steps))
        return seen

    @staticmethod
    def statuses(report):
        return {row.layer: str(row.status) for row in report.rows}

    def check(self, session, seen, action):
        """Run ``action``; it was foretold, and the foretelling equals the report after the rebuild."""
        before = len(seen)
        action()
        assert len(seen) == before + 1, "no prediction for this edit"
        assert self.statuses(seen[-1][0]) == self.statuses(session.report)

    def test_edits_in_a_row_on_branches_and_merges(self, make):
        session = Session(make("residual"))
        seen = self.foretold(session)
        self.check(session, seen, lambda: session.replace("res_bn", "LayerNormalization"))
        self.check(session, seen, lambda: session.replace("res_relu", "Dropout"))  # after an edit: from its result
        self.check(session, seen, lambda: session.insert("stem", "BatchNormalization"))
        self.check(session, seen, lambda: session.delete("drop"))
        self.check(session, seen, lambda: session.set_params("res_relu", {"rate": 0.5}))  # the row's own step again
        assert {s: self.statuses(session.report)[s] for s in ("res_conv2", "branch", "cls", "stem")} == {
            "res_conv2": "kept_input_changed", "branch": "kept_input_changed", "cls": "kept_input_changed",
            "stem": "kept"}

    def test_a_dense_of_the_same_width_keeps_every_weight_downstream(self, mlp):
        session = Session(mlp)
        seen = self.foretold(session)
        self.check(session, seen, lambda: session.replace("dense", "Dense"))
        assert session.report.status("dense_1") == "kept_input_changed"

    def test_no_prediction_where_it_could_be_wrong(self, make, mlp):
        session = Session(mlp)
        seen = self.foretold(session)
        session.replace("dense_1", "Dropout")  # (None, 32) -> (None, 64): dense_2's kernel changes shape
        session.replace("dense", "Dense", {"units": 16})  # a new width
        assert seen == [] and session.report.status("dense_2") == "reinitialized"
        nested = Session(make("nested"))
        seen = self.foretold(nested)
        nested.replace("encoder/inner_a", "Dropout")  # inside a nested model
        shared = Session(make("shared"))
        seen += self.foretold(shared)
        shared.replace(("shared", 1), "Dropout")  # one call of a shared layer
        assert seen == []

    def test_predicting_builds_nothing(self, session, rebuilds):
        step_count = len(rebuilds)
        session.replace("dense", "Dense")
        assert len(rebuilds) == step_count + 1  # only the rebuild itself
        assert session.predict(session.steps) is not None
        assert len(rebuilds) == step_count + 1
