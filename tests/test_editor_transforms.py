"""Whole-model actions in the editor: change the input, apply a choice to every layer like one,
swap an activation, fold BatchNorm, truncate the model at a layer, and compare outputs on a probe batch.

The Session (widget-free) decides and answers; each action is one step of the history, whose
edits are the transform's ``result.edits``, so undo, redo and reset take it back and
``kerasnb.apply(original, session.edits)`` makes the same model. The panel tests set widget
values and click buttons as a user would, and check what the user sees.
"""

import re

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot
from keras import layers as L

import kerasnb
from editor_ui import choose_type, row_of, rows
from kerasnb.editor import Editor, show_editor
from kerasnb.editor.answers import LikeInfo, ModelActions
from kerasnb.editor.session import Session, parse_shape


def small_cnn():
    """A grey-friendly CNN: conv, BatchNorm (with trained-looking statistics), ReLU, a fused relu, Dense head."""
    inputs = keras.Input((6, 6, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(4, 3, activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(6, activation="relu", name="d1")(x)
    x = L.Dense(6, activation="relu", name="d2")(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(x), name="cnn")
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2.0, 4)])
    return model


@pytest.fixture
def cnn():
    keras.utils.set_random_seed(0)
    return small_cnn()


@pytest.fixture
def session(cnn):
    return Session(cnn)


@pytest.fixture
def grey():
    return np.random.default_rng(0).random((4, 6, 6, 1)).astype("float32")


def state(session):
    """What an error must leave as it was."""
    return session.model, list(session.history), session.cursor, session.steps


def run(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def replays(session, x):
    """kerasnb.apply(original, session.edits) computes what the session's model computes."""
    again = kerasnb.apply(session.original, list(session.edits)).model
    np.testing.assert_allclose(run(again, x), run(session.model, x), rtol=1e-6, atol=1e-6)
    return True


class TestChangeInput:
    def test_the_input_row_says_its_shape_and_other_rows_say_why_not(self, session):
        actions = session.answers.row_actions("image")
        assert actions.can_change_input and actions.input_shape == (6, 6, 3)
        other = session.answers.row_actions("conv")
        assert not other.can_change_input and "input rows" in other.input_reason and other.input_shape is None

    def test_one_grey_channel_keeps_what_the_grey_copies_gave(self, session, cnn, grey):
        """The sum rule is exact: a 1-channel image gives what its 3-channel replicate gave."""
        before = snapshot(cnn)
        assert session.change_input("6, 6, 1") == "image"
        (step,) = session.steps
        assert step.kind == "transform" and step.describe() == "change input 'image' to (6, 6, 1) (channels: sum)"
        assert session.report.status("conv") == "adapted" and session.report.status("d1") == "kept_input_changed"
        assert session.answers.row_actions("image").input_shape == (6, 6, 1)
        np.testing.assert_allclose(run(session.model, grey), run(cnn, np.repeat(grey, 3, -1)), rtol=1e-5, atol=1e-6)
        assert any("summed over the 3 input channels" in n for n in session.notes)
        assert replays(session, grey)
        assert_unchanged(cnn, before)

    def test_changing_it_again_redoes_the_one_step_and_the_old_shape_takes_it_back(self, session, cnn):
        session.change_input((6, 6, 1))
        session.change_input("6, 6, 2", "repeat")
        assert [s.describe() for s in session.steps] == ["change input 'image' to (6, 6, 2) (channels: repeat)"]
        assert session.model.inputs[0].shape[-1] == 2
        session.change_input("(6, 6, 3)")
        assert session.steps == () and session.model is cnn
        assert len(session.history) == 4  # each one a step of the history

    def test_a_new_size_keeps_every_conv_weight(self, session):
        session.change_input("None, None, 3")
        assert session.model.inputs[0].shape[1:] == (None, None, 3)
        assert session.report.with_status("reinitialized") == []

    @pytest.mark.parametrize("shape, channels, words", [
        ("6, 6", None, "needs as many"),
        ("six, 6, 1", None, "positive whole numbers"),
        ("6, 0, 1", None, "positive whole numbers"),
        ("6, 6, 3", None, "already"),
        ("6, 6, 1", "average", "one of 'sum', 'repeat', 'reinit'"),
        ("6, 6, 2", "sum", "mode='repeat'"),
    ])
    def test_bad_input_is_refused_and_changes_nothing(self, session, shape, channels, words):
        before = state(session)
        with pytest.raises(kerasnb.SurgeryError, match=re.escape(words)):
            session.change_input(shape, channels)
        assert state(session) == before

    def test_parse_shape_takes_text_or_tuples(self):
        assert parse_shape("(8, 8, 1)") == (8, 8, 1) and parse_shape("[None, 4]") == (None, 4)
        assert parse_shape((2, np.int64(3))) == (2, 3)
        with pytest.raises(kerasnb.InvalidEdit, match="Received: shape=True"):
            parse_shape(True)


class TestApplyToAll:
    def test_offered_once_a_type_is_chosen_counting_this_one_and_the_others(self, session):
        assert not session.answers.row_actions("d1").like.can_apply
        assert "choose a type" in session.answers.row_actions("d1").like.reason
        session.replace("d1", "Dropout")
        assert session.answers.row_actions("d1").like == LikeInfo("Dropout", "Dense", 2, "")
        assert session.answers.row_actions("d1").like.count == 3

    def test_gives_the_type_and_parameters_to_every_layer_like_it_in_one_step(self, session, grey):
        session.change_input("6, 6, 1")
        session.replace("d1", "Dropout", {"rate": 0.3})
        assert session.replace_all("d1") == ("d2", "head")
        assert [s.describe() for s in session.steps][-1] == \
            "give Dropout(rate=0.3) to 2 more Dense layer(s) like 'd1': 'd2', 'head'"
        assert [l.rate for l in session.model.layers if isinstance(l, L.Dropout)] == [0.3, 0.3, 0.3]
        assert {session.report.status(n) for n in ("d1", "d2", "head")} == {"removed"}
        assert replays(session, grey)

    def test_keep_on_the_row_brings_it_back_and_the_others_stay_replaced(self, session):
        session.replace("d1", "Dropout")
        session.replace_all("d1")
        session.replace("d1", "Keep")
        assert [s.label for s in session.steps] == ["replace_all"]
        assert [type(l).__name__ for l in session.model.layers][-3:] == ["Dense", "Dropout", "Dropout"]
        assert session.report.status("d1") == "kept"

    def test_layers_it_does_not_fit_are_left_alone_and_named(self, make):
        session = Session(make("residual"))
        session.replace("res_conv1", "Remove (identity)")
        assert session.replace_all("res_conv1") == ("res_conv2",)
        notes = " ".join(session.notes)
        assert "'stem' left alone" in notes and "res_add" in notes and "'branch' left alone" in notes
        assert session.report.status("res_conv2") == "removed" and session.report.status("stem") == "kept"

    def test_refused_without_a_choice_or_without_others(self, session, make):
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="has no type chosen"):
            session.replace_all("d1")
        session.replace("bn", "Dropout")
        assert "no other BatchNormalization" in session.answers.row_actions("bn").like.reason
        before = state(session)
        with pytest.raises(kerasnb.LayerNotFound, match="no other BatchNormalization"):
            session.replace_all("bn")
        assert state(session) == before


class TestSwapFoldCut:
    def test_the_session_says_what_can_be_swapped_and_folded(self, session):
        answer = session.answers.model_actions()
        assert isinstance(answer, ModelActions) and answer.activations == ("relu",)
        assert "gelu" in answer.swap_to and answer.can_swap and answer.batchnorms == 1 and answer.can_fold

    def test_swap_activation_everywhere_keeps_every_weight(self, session, cnn):
        session.swap_activation("relu", "gelu")
        assert session.steps[-1].describe() == "swap activation 'relu' for 'gelu' (4 layer(s))"
        assert session.report.with_status("reinitialized") == []
        assert session.answers.model_actions().activations == ("gelu",)
        assert session.model.get_layer("relu_gelu").get_config()["activation"] == "gelu"
        x = np.random.default_rng(2).random((2, 6, 6, 3)).astype("float32")
        assert replays(session, x)

    def test_swapping_what_the_model_does_not_apply_is_refused_with_what_it_does(self, session):
        before = state(session)
        with pytest.raises(kerasnb.LayerNotFound, match=r"applies 'tanh'.*relu \(4\)"):
            session.swap_activation("tanh", "gelu")
        with pytest.raises(kerasnb.InvalidEdit, match="same activation"):
            session.swap_activation("relu", "relu")
        with pytest.raises(kerasnb.InvalidEdit, match="activation's name"):
            session.swap_activation("", "gelu")
        assert state(session) == before

    def test_fold_batchnorm_keeps_the_outputs_and_the_bn_row_says_who_took_it(self, session, cnn):
        x = np.random.default_rng(3).random((4, 6, 6, 3)).astype("float32")
        session.fold_batchnorm()
        assert session.report.status("conv") == "folded" and session.report.status("bn") == "removed"
        want = run(cnn, x)
        assert np.abs(run(session.model, x) - want).max() / np.abs(want).max() < 1e-5
        actions = session.answers.row_actions("bn")
        assert not actions.can_choose and "fold 1 BatchNormalization" in actions.choose_reason
        assert "undo that step" in actions.choose_reason
        assert not session.answers.model_actions().can_fold

    def test_nothing_to_fold_is_refused_with_the_reasons(self, make):
        session = Session(make("seed_mlp"))
        assert session.answers.model_actions().fold_reason == "the model has no BatchNormalization layer"
        with pytest.raises(kerasnb.InvalidEdit, match="no BatchNormalization layer"):
            session.fold_batchnorm()
        assert session.steps == () and len(session.history) == 1

    def test_cut_here_makes_the_layer_the_output(self, session):
        assert session.answers.cut_reason("head") == "its output is the model's output already"
        assert "computes nothing" in session.answers.cut_reason("image")
        session.truncate("conv2")
        assert session.model.outputs[0].shape[1:] == (4, 4, 4)
        assert [session.report.status(n) for n in ("gap", "d1", "head")] == ["removed"] * 3
        assert session.steps[-1].describe() == "truncate the model at 'conv2' (its output is the model's output)"
        assert "truncate the model at 'conv2'" in session.answers.row_actions("d1").choose_reason
        with pytest.raises(kerasnb.InvalidEdit, match="output already"):
            session.truncate("conv2")


class TestHistory:
    def test_undo_redo_reset_take_whole_model_steps_back(self, session, cnn, grey):
        session.change_input("6, 6, 1")
        session.fold_batchnorm()
        folded = session.model
        session.undo()
        assert [s.label for s in session.steps] == ["change_input"] and session.report.status("bn") != "removed"
        session.redo()
        assert session.model is folded
        session.reset()
        assert session.model is cnn and session.steps == ()
        session.undo()
        assert session.model is folded and replays(session, grey)

    def test_an_earlier_step_changed_works_the_later_action_out_again(self, session, grey):
        session.replace("d1", "Dense", {"units": 5})
        session.fold_batchnorm()
        session.set_params("d1", {"units": 7})  # the choice before the fold changes in place
        assert [s.describe() for s in session.steps] == [
            "replace 'd1' with Dense(units=7, activation='relu')",
            "fold 1 BatchNormalization layer(s) into the layer before each"]
        assert session.steps[1].base == (session.steps[0],)
        assert session.model.get_layer("d1_dense").units == 7
        again = kerasnb.apply(session.original, list(session.edits)).model  # new weights differ: the same layers
        assert kerasnb.describe(again) == kerasnb.describe(session.model)

    def test_a_change_that_the_later_action_no_longer_fits_is_refused(self):
        """Folding needs a linear layer before the BatchNorm: making it relu afterwards is refused."""
        inputs = keras.Input((4,), name="x")
        h = L.BatchNormalization(name="bn")(L.Dense(3, name="lin")(inputs))
        session = Session(keras.Model(inputs, L.Dense(2, name="out")(h)))
        session.replace("lin", "Dense", {"activation": "linear"})
        session.fold_batchnorm()
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="could be folded.*'lin_dense' applies 'relu' before it"):
            session.set_params("lin", {"activation": "relu"})
        assert state(session) == before

    def test_one_call_of_a_shared_layer_waits_for_no_whole_model_action(self, make):
        session = Session(make("shared"))
        session.swap_activation("tanh", "gelu")
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="one call cannot be replaced on its own"):
            session.replace(("shared", 1), "Dropout")
        assert state(session) == before

    def test_edits_flatten_every_step(self, session):
        session.replace("d1", "Dropout")
        session.swap_activation("relu", "gelu")
        assert len(session.edits) == 1 + len(session.steps[1].edit)
        assert isinstance(session.edits[0], kerasnb.Replace)


class TestCompare:
    def test_a_probe_that_does_not_fit_is_refused(self, cnn):
        with pytest.raises(kerasnb.SurgeryError, match=r"a batch of \(6, 6, 3\).*Received: \(2, 6, 6, 1\)"):
            Session(cnn, probe=np.zeros((2, 6, 6, 1), "float32"))
        with pytest.raises(kerasnb.SurgeryError, match="No probe batch"):
            Session(cnn).answers.compare()

    def test_folded_outputs_held_on_the_probe(self, cnn):
        x = np.random.default_rng(4).random((3, 6, 6, 3)).astype("float32")
        session = Session(cnn, probe=x)
        assert session.answers.compare().frame is None and "No edit yet" in session.answers.compare().note
        session.fold_batchnorm()
        comparison = session.answers.compare()
        frame = comparison.frame.set_index("layer")
        assert list(frame.index) == ["image", "conv", "relu", "conv2", "gap", "d1", "d2", "head"]
        assert frame.status["conv"] == "folded" and frame.max_rel_diff["conv"] > 1e-2  # it now does the BN's work too
        assert frame.max_rel_diff.drop("conv").max() < 1e-5 and not frame.broken_promise.any()

    def test_a_grey_input_is_compared_on_grey_copies(self, cnn):
        x = np.random.default_rng(5).random((3, 6, 6, 3)).astype("float32")
        session = Session(cnn, probe=x)
        session.change_input("6, 6, 1")
        comparison = session.answers.compare()
        assert "averaged over its 3 channels" in comparison.note
        assert comparison.frame.set_index("layer").max_rel_diff.drop("image").max() < 1e-5
        session.change_input("3, 3, 3")  # a new size: no comparison, and why
        assert session.answers.compare().frame is None and "cannot be compared" in session.answers.compare().note


# ----------------------------------------------------------------------------- the panel




@pytest.fixture
def editor(cnn):
    return Editor(cnn)


class TestPanel:
    def test_change_input_from_the_input_row(self, editor):
        editor.layer_picker.value = "conv"
        assert editor.input_button.disabled and "input rows" in editor.input_button.tooltip
        editor.layer_picker.value = "image"
        assert not editor.input_button.disabled and editor.input_box.layout.display == "none"
        editor.input_button.click()
        assert editor.input_box.layout.display is None and editor.input_shape.value == "6, 6, 3"
        editor.input_shape.value = "6, 6, 1"
        editor.input_apply.click()
        assert editor.message_text.startswith("Done: change input 'image' to (6, 6, 1) (channels: sum).")
        assert "summed over the 3 input channels" in editor.message_text
        assert dict(rows(editor))["conv"] == "adapted" and editor.input_shape.value == "6, 6, 1"
        assert "change input &#x27;image&#x27;" in editor.history_view.value and not editor.undo_button.disabled

    def test_a_bad_shape_is_said_and_nothing_changes(self, editor):
        editor.layer_picker.value = "image"
        editor.input_button.click()
        editor.input_shape.value = "6, 6"
        editor.input_apply.click()  # a click never raises into the front end
        assert "kn-error" in editor.message.value and "needs as many" in editor.message_text
        assert editor.edits == () and len(editor.history) == 1

    def test_apply_to_all_like_this_one(self, editor):
        editor.layer_picker.value = "d1"
        assert editor.like_button.disabled and "choose a type" in editor.like_button.tooltip
        choose_type(editor, "Dropout")
        assert editor.like_button.description == "Apply to all 3 Dense layers like this one"
        editor.like_button.click()
        assert editor.message_text.startswith("Done: give Dropout(rate=0.2) to 2 more Dense layer(s) like 'd1'")
        shown = dict(rows(editor))
        assert [shown[n] for n in ("d1_dropout", "d2_dropout", "head_dropout")] == ["new"] * 3
        assert row_of(editor, "d2_dropout")["choice"] == "Dropout (like d1) (new)"

    def test_swap_activation_and_fold_batchnorm(self, editor):
        assert editor.swap_box.layout.display == "none"
        editor.swap_button.click()
        assert editor.swap_box.layout.display is None
        assert editor.swap_from.options == ("relu",) and editor.swap_to.value == "gelu"
        assert "relu" not in editor.swap_to.options
        editor.swap_to.value = "silu"
        editor.swap_apply.click()
        assert editor.message_text.startswith("Done: swap activation 'relu' for 'silu' (4 layer(s)).")
        assert editor.swap_from.options == ("silu",)
        editor.fold_button.click()
        assert editor.message_text.startswith("Done: fold 1 BatchNormalization layer(s)")
        assert dict(rows(editor))["conv"] == "folded"
        assert editor.fold_button.disabled and "no BatchNormalization" in editor.fold_button.tooltip
        editor.undo_button.click()
        assert editor.message_text == "Undo. Took back: fold 1 BatchNormalization layer(s) into the layer before each."
        assert not editor.fold_button.disabled

    def test_a_refused_action_says_why_and_keeps_the_history(self, make):
        editor = Editor(make("seed_mlp"))
        assert editor.fold_button.disabled and editor.fold_button.tooltip == "the model has no BatchNormalization layer"
        with pytest.raises(kerasnb.SurgeryError):
            editor.fold_batchnorm()  # from Python: raised, and said in the panel
        assert "kn-error" in editor.message.value and "could be folded" in editor.message_text
        assert editor.edits == () and editor.undo_button.disabled

    def test_cut_here(self, editor):
        editor.layer_picker.value = "head"
        assert editor.cut_button.disabled and "output already" in editor.cut_button.tooltip
        editor.layer_picker.value = "gap"
        editor.cut_button.click()
        assert editor.message_text == "Done: truncate the model at 'gap' (its output is the model's output)."
        assert [s for p, s in rows(editor) if p in ("d1", "d2", "head")] == ["removed"] * 3
        assert editor.model.outputs[0].shape[1:] == (4,)

    def test_the_report_section_compares_outputs_on_the_probe(self, cnn):
        x = np.random.default_rng(6).random((2, 6, 6, 3)).astype("float32")
        editor = Editor(cnn, probe=x)
        editor.details.selected_index = 0
        assert "No edit yet" in editor.compare_view.value
        editor.fold_button.click()
        assert "kn-compare-row" in editor.compare_view.value
        assert "data-layer='conv'" in editor.compare_view.value and "reported kept, but moved" not in editor.compare_view.value
        with pytest.raises(kerasnb.SurgeryError, match="probe batch must fit"):
            show_editor(cnn, probe=np.zeros((2, 5), "float32"))

    def test_model_strings_in_the_comparison_are_escaped(self):
        evil = "d<img src=x onerror=alert(1)>"
        inputs = keras.Input((4,), name="x")
        h = L.Dense(3, activation="relu", name=evil)(inputs)
        model = keras.Model(inputs, L.Dense(2, name="out")(h))
        editor = Editor(model, probe=np.ones((2, 4), "float32"))
        editor.details.selected_index = 0
        editor.swap_button.click()
        editor.swap_apply.click()
        assert "&lt;img src=x onerror=alert(1)&gt;" in editor.compare_view.value
        assert "<img" not in editor.compare_view.value and "<img" not in editor.message.value
