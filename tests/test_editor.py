"""The editor panel driven from Python: set widget values and click buttons as a user would.

Setting ``.value`` runs the same observers a browser change does, and ``Button.click()`` runs
the same handlers, so these tests exercise the panel itself, without a browser.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot

import kerasnb
import kerasnb.catalog as catalog
import kerasnb.editor.table
import kerasnb.surgery
from pathlib import Path

from editor_ui import (choose_type, fields, listed, offered, press_arrow, refused, row_of, row_type, rows, select_row,
                       set_fields, status_in_table)
from kerasnb.editor import Editor, show_editor


def no_error(editor):
    """The message line reports no failure (every action now says what it did)."""
    return "kn-error" not in editor.message.value and "kn-warn" not in editor.message.value


def pick(editor, path, label=None):
    """Click a row of the table (a call's sub-row for ``(path, call)``), then optionally choose a
    type in that row's Type dropdown."""
    if isinstance(path, tuple):
        select_row(editor, *path)
    else:
        select_row(editor, path)
    if label is not None:
        choose_type(editor, label)


@pytest.fixture
def mlp(make):
    return make("seed_mlp")


@pytest.fixture
def editor(mlp):
    return Editor(mlp)


class TestOpening:
    def test_table_lists_every_layer_in_graph_order_with_its_status(self, editor):
        assert rows(editor) == [("input_layer", "no_weights"), ("dense", "kept"), ("dense_1", "kept"), ("dense_2", "kept")]
        assert "3 layers kept weights (2,817 params)" in editor.summary.value
        assert row_of(editor, "dense")["shape"] == "(None, 64)" and row_of(editor, "dense_1")["params"] == 2080

    def test_starts_on_the_original_model_with_no_edits(self, editor, mlp):
        assert editor.model is mlp
        assert editor.edits == ()
        assert editor.undo_button.disabled and editor.redo_button.disabled and editor.reset_button.disabled

    def test_first_layer_is_selected_and_offers_fitting_types(self, editor):
        assert editor.selected == "dense"
        assert row_type(editor) == "Keep"
        assert offered(editor)[:3] == ("Keep", "Remove (identity)", "Dropout")
        assert editor.table.selected == "dense" and editor.table.rows[1]["path"] == "dense"

    def test_types_that_cannot_fit_are_not_offered_and_say_why(self, editor):
        assert "VGG16 backbone (frozen)" not in offered(editor)
        assert "VGG16 backbone (frozen)" in str(refused(editor))
        assert "needs images" in str(refused(editor))

    def test_legend_explains_every_status(self, editor):
        for status in kerasnb.STATUSES:
            assert f"data-status='{status}'" in editor.legend.value

    def test_show_editor_outside_a_notebook_returns_a_working_editor(self, mlp):
        editor = show_editor(mlp)
        assert isinstance(editor, Editor) and editor.model is mlp

    def test_returned_editor_does_not_draw_the_panel_twice_in_one_cell(self, editor, monkeypatch):
        import kerasnb.editor.panel as panel

        monkeypatch.setattr(panel, "_execution_count", lambda: 7)
        assert "application/vnd.jupyter.widget-view+json" in editor._repr_mimebundle_()
        editor._shown_in_cell = 7  # what show_editor records after drawing the panel in cell 7
        assert list(editor._repr_mimebundle_()) == ["text/plain"]

    def test_refuses_a_subclassed_model_in_plain_words(self):
        class Plain(keras.Model):
            def call(self, x):
                return x

        with pytest.raises(kerasnb.SurgeryError, match="not built|subclassed"):
            Editor(Plain())


class TestChoosingATypeRebuilds:
    def test_dropout_replaces_dense_1(self, editor, mlp):
        before = snapshot(mlp)
        pick(editor, "dense_1", "Dropout")
        types = [type(l).__name__ for l in editor.model.layers]
        assert types == ["InputLayer", "Dense", "Dropout", "Dense"]
        assert editor.report.status("dense_1") == "removed"
        assert editor.report.status("dense_2") == "reinitialized"  # its kernel was (32, 1), now (64, 1)
        assert "1 reinitialized (65 params), 1 new, 1 removed (2,080 params)" in editor.summary.value
        assert ("dense_1", "removed") in rows(editor) and ("dense_1_dropout", "new") in rows(editor)
        assert len(editor.edits) == 1 and isinstance(editor.edits[0], kerasnb.Replace)
        assert_unchanged(mlp, before)  # the user's model is never touched

    def test_parameter_widgets_appear_and_rebuild_on_change(self, editor):
        pick(editor, "dense_1", "Dropout")
        assert fields(editor) == [("rate", 0.2)]
        set_fields(editor, rate=0.5)
        assert editor.model.get_layer("dense_1_dropout").rate == 0.5
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.5)"]  # changed in place, not stacked

    def test_dense_parameters_change_the_shape_downstream(self, editor):
        pick(editor, "dense_1", "Dense")
        assert dict(fields(editor))["units"] == 32  # the replaced layer's width, so the next layer keeps its weights
        assert editor.report.status("dense_2") == "kept_input_changed"
        set_fields(editor, units=16)
        assert tuple(editor.model.get_layer("dense_1_dense").output.shape) == (None, 16)
        assert editor.report.status("dense_2") == "reinitialized"

    def test_switching_type_again_replaces_the_earlier_choice(self, editor):
        pick(editor, "dense_1", "Dropout")
        choose_type(editor, "LayerNormalization")
        assert editor.steps == ["replace 'dense_1' with LayerNormalization"]
        choose_type(editor, "Keep")
        assert editor.edits == () and editor.model is editor.original

    def test_selecting_a_replaced_row_shows_its_choice(self, editor):
        pick(editor, "dense_1", "Activation")
        pick(editor, "dense")
        pick(editor, "dense_1")  # the removed row still leads to its choice
        assert row_type(editor) == "Activation"
        pick(editor, "dense_1_activation")  # and so does the new layer
        assert row_type(editor) == "Activation"

    def test_conv1d_block_from_the_dropdown(self, editor):
        pick(editor, "dense_1", "Conv1D block")
        assert [type(l).__name__ for l in editor.model.layers][2:6] == ["Reshape", "Conv1D", "Flatten", "Dense"]
        assert tuple(editor.model.output.shape) == (None, 1)

    def test_registered_type_is_offered_and_used(self, editor):
        @kerasnb.catalog.register_replacement("Dropout 0.5 (test)")
        def half(layer, input_shape):
            return keras.layers.Dropout(0.5)

        try:
            pick(editor, "dense")
            pick(editor, "dense_1")
            assert "Dropout 0.5 (test)" in offered(editor)
            choose_type(editor, "Dropout 0.5 (test)")
            assert editor.model.get_layer("dense_1_dropout_0_5_test").rate == 0.5
        finally:
            catalog.unregister("Dropout 0.5 (test)")


class TestBackbones:
    def test_backbone_choice_says_which_weights_it_carries(self, tmp_path, monkeypatch):
        """The seed's third example: a frozen VGG16 for a Dense over pixels; no ImageNet file here."""
        monkeypatch.setenv("KERAS_HOME", str(tmp_path))
        inputs = keras.Input((40, 40, 3), name="image")
        x = keras.layers.Dense(8, activation="relu", name="pixels")(inputs)
        out = keras.layers.Dense(3, name="head")(keras.layers.Flatten(name="flat")(x))
        editor = Editor(keras.Model(inputs, out, name="cnn"))
        pick(editor, "pixels")
        assert "VGG16 backbone (frozen)" in offered(editor)
        choose_type(editor, "VGG16 backbone (frozen)")
        assert editor.model.get_layer("vgg16_random_init").trainable is False
        assert any("random weights" in note for note in editor.notes)
        assert "random weights" in editor.history_view.value
        assert status_in_table(editor, "vgg16_random_init") == "new"
        backbone = row_of(editor, "vgg16_random_init")
        assert backbone["group"] and row_of(editor, "vgg16_random_init/block1_conv1")["depth"] == 1  # a group of its own


class TestErrors:
    def test_bad_parameter_is_shown_and_nothing_changes(self, editor):
        pick(editor, "dense_1", "Dropout")
        model, history = editor.model, editor.history
        set_fields(editor, rate=1.5)
        assert "rate" in editor.message.value and "1.5" in editor.message.value
        assert "kn-error" in editor.message.value
        assert editor.model is model and editor.history == history
        assert fields(editor) == [("rate", 0.2)]  # the field shows the model again

    def test_edit_the_core_refuses_is_explained_and_the_panel_keeps_working(self, make):
        editor = Editor(make("residual"))
        pick(editor, "res_conv2")
        with pytest.raises(kerasnb.SurgeryError):
            editor.replace("Dense", units=3)  # (8, 8, 3) cannot be added to (8, 8, 8)
        assert "res_add" in editor.message.value
        assert editor.edits == () and editor.model is editor.original
        choose_type(editor, "BatchNormalization")  # the next choice works
        assert editor.report.status("res_conv2") == "removed" and no_error(editor)

    def test_message_clears_on_the_next_action(self, editor):
        pick(editor, "dense_1", "Dropout")
        set_fields(editor, rate=7.0)
        assert editor.message.value
        pick(editor, "dense")
        assert editor.message.value == ""


class TestHistory:
    def test_undo_redo_reset_buttons(self, editor, mlp):
        pick(editor, "dense_1", "Dropout")
        pick(editor, "dense", "BatchNormalization")
        assert len(editor.edits) == 2
        editor.undo_button.click()
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)"]
        assert status_in_table(editor, "dense") == "kept"
        editor.undo_button.click()
        assert editor.edits == () and editor.model is mlp and editor.undo_button.disabled
        editor.redo_button.click()
        editor.redo_button.click()
        assert len(editor.edits) == 2 and editor.redo_button.disabled
        assert editor.report.status("dense") == "removed"
        editor.reset_button.click()
        assert editor.edits == () and editor.model is mlp
        editor.undo_button.click()  # reset itself can be undone
        assert len(editor.edits) == 2

    def test_a_new_edit_after_undo_drops_the_redo_branch(self, editor):
        pick(editor, "dense_1", "Dropout")
        editor.undo_button.click()
        pick(editor, "dense_1", "Activation")
        assert editor.redo_button.disabled
        assert editor.history[-1][0].replacement.__class__.__name__ == "Activation"

    def test_history_view_lists_the_edits_in_words(self, editor):
        pick(editor, "dense_1", "Dropout")
        assert "replace &#x27;dense_1&#x27; with Dropout(rate=0.2)" in editor.history_view.value


class TestRowActions:
    def test_insert_after(self, editor):
        pick(editor, "dense")
        editor.insert_picker.value = "BatchNormalization"
        editor.insert_button.click()
        assert [type(l).__name__ for l in editor.model.layers][1:3] == ["Dense", "BatchNormalization"]
        assert editor.selected == "dense_batchnormalization"
        assert status_in_table(editor, "dense_batchnormalization") == "new"
        choose_type(editor, "Dropout")  # an inserted row's type can still change
        assert editor.steps == ["insert Dropout(rate=0.2) after 'dense'"]
        editor.delete_button.click()  # and deleting it drops the insert
        assert editor.edits == ()

    def test_delete_button_removes_the_layer(self, editor):
        pick(editor, "dense_1")
        editor.delete_button.click()
        assert [l.name for l in editor.model.layers] == ["input_layer", "dense", "dense_2"]
        assert isinstance(editor.edits[0], kerasnb.Delete)
        assert status_in_table(editor, "dense_1") == "removed"

    def test_trainable_checkbox_freezes_and_unfreezes(self, editor):
        pick(editor, "dense")
        editor.trainable_box.value = False
        assert editor.model.get_layer("dense").trainable is False
        assert row_of(editor, "dense")["trainable"] is False
        editor.trainable_box.value = True
        assert editor.edits == ()  # back to how the original was: no edit needed

    def test_input_layer_cannot_be_replaced_or_deleted(self, editor):
        pick(editor, "input_layer")
        assert editor.table.inline["disabled"] and editor.delete_button.disabled
        assert not editor.insert_button.disabled  # but something can go after it

    def test_the_controls_draw_what_the_session_answers(self, editor, monkeypatch):
        """The panel decides nothing about a row: a made-up answer of the session is what it shows."""
        from kerasnb.editor.answers import Param, PruneInfo, RowActions

        answer = RowActions(
            key="dense_1", label="Dropout", offered=("Dropout", "Keep"), refused={"Dense": "not today"},
            params=(Param("rate", 0.3),), can_choose=True, choose_reason="", insertable=(),
            insert_reason="nothing goes here", can_delete=False, delete_reason="kept on purpose", trainable=False,
            can_freeze=False, freeze_reason="fixed", prune=PruneInfo(None, "no channels", 5, 5))
        monkeypatch.setattr(editor.session.answers, "row_actions", lambda key: answer)
        pick(editor, "dense_1")
        assert offered(editor) == ("Dropout", "Keep") and row_type(editor) == "Dropout"
        assert refused(editor) == {"Dense": "not today"}
        assert fields(editor) == [("rate", 0.3)]
        assert editor.insert_button.disabled and editor.insert_button.tooltip == "nothing goes here"
        assert editor.delete_button.disabled and editor.delete_button.tooltip == "kept on purpose"
        assert editor.trainable_box.value is False and editor.trainable_box.disabled
        assert editor.prune_button.disabled and editor.prune_button.tooltip == "no channels"

    def test_a_replaced_row_offers_what_fits_after_an_upstream_change(self, editor):
        pick(editor, "dense_1", "Dropout")
        pick(editor, "dense", "Dense")
        set_fields(editor, units=2)
        pick(editor, "dense_1")  # its place now receives (None, 2)
        assert "Conv1D block" not in offered(editor)
        assert "2 steps" in str(refused(editor))


class TestStepsAimedAtLayersThatAreGone:
    """A freeze or prune aimed at a layer that a later change takes away leaves the steps with it."""

    def test_changing_a_replacement_type_drops_the_freeze_of_its_old_layer(self, editor):
        pick(editor, "dense_1", "Dense")
        pick(editor, "dense_1_dense")
        editor.trainable_box.value = False
        assert editor.steps[-1] == "freeze 'dense_1_dense'"
        pick(editor, "dense_1")
        editor.replace("Dropout")  # dense_1_dense is gone: its freeze would not find it
        assert no_error(editor)
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)"]
        assert [type(e).__name__ for e in editor.edits] == ["Replace"]
        editor.undo_button.click()  # undo brings both back
        assert editor.steps == ["replace 'dense_1' with Dense(units=32, activation='relu')", "freeze 'dense_1_dense'"]
        assert editor.model.get_layer("dense_1_dense").trainable is False

    def test_changing_an_inserted_type_drops_its_freeze_and_prune(self, editor):
        pick(editor, "dense")
        editor.insert_picker.value = "Dense"
        editor.insert_button.click()
        assert editor.selected == "dense_dense"
        editor.trainable_box.value = False
        editor.prune(0.5)
        assert len(editor.steps) == 3
        choose_type(editor, "Dropout")
        assert no_error(editor)
        assert editor.steps == ["insert Dropout(rate=0.2) after 'dense'"]
        assert editor.selected == "dense_dropout"
        assert [type(l).__name__ for l in editor.model.layers] == ["InputLayer", "Dense", "Dropout", "Dense", "Dense"]

    def test_freeze_and_prune_of_a_layer_then_replaced_are_dropped(self, editor, mlp):
        pick(editor, "dense")
        editor.trainable_box.value = False
        editor.prune(0.5)
        assert editor.steps == ["freeze 'dense'", "prune 'dense' keeping 50% of its channels (by l1)"]
        choose_type(editor, "Dropout")
        assert editor.steps == ["replace 'dense' with Dropout(rate=0.2)"]
        assert [type(e).__name__ for e in editor.edits] == ["Replace"]
        # The model is what that one step makes on the original.
        alone = kerasnb.apply(mlp, editor.edits).model
        assert [l.get_config() for l in alone.layers[1:]] == [l.get_config() for l in editor.model.layers[1:]]
        choose_type(editor, "Keep")  # taking the choice back does not bring a forgotten freeze back
        assert editor.edits == () and editor.model is mlp

    def test_deleting_a_frozen_layer_drops_its_freeze(self, editor):
        pick(editor, "dense_1")
        editor.trainable_box.value = False
        editor.delete_button.click()
        assert editor.steps == ["delete 'dense_1'"]

    def test_freeze_of_a_shared_layer_stays_until_every_call_is_replaced(self, make):
        shared = Editor(make("shared"))
        pick(shared, ("shared", 0))
        shared.trainable_box.value = False
        pick(shared, ("shared", 0), "Dropout")
        assert shared.steps == ["freeze 'shared'", "replace 'shared' (call 0) with Dropout(rate=0.2)"]
        assert shared.model.get_layer("shared").trainable is False  # call 1 still uses it
        pick(shared, ("shared", 1), "Activation")
        assert [step.split(" with ")[0] for step in shared.steps] == ["replace 'shared' (call 0)",
                                                                       "replace 'shared' (call 1)"]

    def test_nested_layer_freeze_is_dropped_when_its_new_layer_goes(self, make):
        editor = Editor(make("nested"))
        pick(editor, "encoder/inner_a", "Dense")
        new = next(p for p, s in rows(editor) if s == "new")
        assert new.startswith("encoder/")
        pick(editor, new)
        editor.trainable_box.value = False
        pick(editor, "encoder/inner_a", "Dropout")
        assert no_error(editor)
        assert editor.steps == ["replace 'encoder/inner_a' with Dropout(rate=0.2)"]


class TestFindingLayers:
    def test_search_filters_table_and_layer_dropdown(self, editor):
        editor.search.value = "dense_"
        assert [p for p, _ in rows(editor)] == ["dense_1", "dense_2"]
        assert editor.table.total == 2
        assert "input_layer" not in [v for _, v in editor.layer_picker.options]

    def test_search_by_type(self, editor):
        editor.search.value = "inputlayer"
        assert [p for p, _ in rows(editor)] == ["input_layer"]

    def test_nested_model_is_a_collapsible_group(self, make):
        editor = Editor(make("nested"))
        encoder = row_of(editor, "encoder")
        assert encoder["group"] and [r["depth"] for r in listed(editor) if r["path"].startswith("encoder/")] == [1, 1, 1]
        pick(editor, "encoder/inner_a", "Dropout")
        assert editor.report.status("encoder/inner_a") == "removed"
        assert status_in_table(editor, "encoder/inner_b") == "reinitialized"
        assert editor.report.status("encoder/inner_a_dropout") == "new"
        pick(editor, "x")
        pick(editor, "encoder/inner_a_dropout")  # the new layer inside the group leads to its choice
        assert row_type(editor) == "Dropout"


class TestTheTable:
    """The table widget's traits, set as its JavaScript sets them (see tests/editor_ui.py)."""

    def test_a_click_selects_the_row_and_the_layer_list_and_graph_follow(self, editor):
        select_row(editor, "dense_2")
        assert editor.selected == "dense_2" and editor.layer_picker.value == "dense_2"
        assert editor.table.inline["path"] == "dense_2" and editor.table.inline["type"] == "Keep"
        assert editor.graph is None or editor.graph.selected == "dense_2"
        editor.layer_picker.value = "dense"  # and the other way round
        assert (editor.table.selected, editor.table.selected_call) == ("dense", -1)
        if editor.graph is not None:
            editor.graph.selected = "dense_1"  # a click on a node
            assert editor.selected == "dense_1" and editor.table.selected == "dense_1"
            assert editor.table.inline["path"] == "dense_1"

    def test_the_selected_row_carries_its_type_and_fields(self, editor):
        select_row(editor, "dense_1")
        assert "Dropout" in offered(editor) and fields(editor) == []
        choose_type(editor, "Dropout")
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)"] and no_error(editor)
        assert row_type(editor) == "Dropout" and fields(editor) == [("rate", 0.2)]
        assert editor.table.inline["fields"][0]["kind"] == "float"
        set_fields(editor, rate=0.4)
        assert editor.model.get_layer("dense_1_dropout").rate == 0.4
        assert [(r["path"], r["status"]) for r in editor.table.rows][2:4] == [("dense_1", "removed"),
                                                                             ("dense_1_dropout", "new")]

    def test_an_action_for_another_row_selects_it_first(self, editor):
        select_row(editor, "dense")
        editor.table.action = {"kind": "replace", "layer": "dense_1", "call": None, "type": "Activation",
                               "params": {}, "seq": 1}
        assert editor.steps == ["replace 'dense_1' with Activation(activation='relu')"]
        assert editor.selected == "dense_1"

    def test_an_unknown_action_is_said_not_raised(self, editor):
        editor.table.action = {"kind": "explode", "layer": "dense", "call": None, "seq": 1}
        assert "kn-error" in editor.message.value and "'explode'" in editor.message_text and editor.edits == ()

    def test_rows_say_why_their_status(self, editor):
        pick(editor, "dense_1", "Dropout")
        reason = row_of(editor, "dense_2")["reason"]
        assert "(32, 1)" in reason and "(64, 1)" in reason  # the kernel shapes, shown as text on expanding
        editor.table.expanded = ["dense_2"]  # expanded in the browser: kept through the next redraw
        pick(editor, "dense", "BatchNormalization")
        assert editor.table.expanded == ["dense_2"]

    def test_nested_models_fold(self, make):
        editor = Editor(make("nested"))
        assert row_of(editor, "encoder")["group"] and not row_of(editor, "head")["group"]
        editor.table.collapsed = ["encoder"]
        assert [p for p, _ in rows(editor)] == ["x", "encoder", "head"]
        pick(editor, "head", "Dropout")  # a redraw keeps the fold
        assert [p for p, _ in rows(editor)] == ["x", "encoder", "head", "head_dropout"]
        editor.layer_picker.value = "encoder/inner_b"  # selected from elsewhere: its group opens
        assert editor.table.collapsed == [] and "encoder/inner_b" in [p for p, _ in rows(editor)]

    def test_a_shared_layers_calls_are_sub_rows(self, make):
        shared = Editor(make("shared"))
        subs = [r for r in listed(shared) if r["call"] is not None]
        assert [(r["path"], r["call"]) for r in subs] == [("shared", 0), ("shared", 1)]
        select_row(shared, "shared", 1)
        assert shared.selected == ("shared", 1) and shared.table.inline["call"] == 1
        choose_type(shared, "Dropout")
        assert shared.steps == ["replace 'shared' (call 1) with Dropout(rate=0.2)"]
        assert [r["choice"] for r in listed(shared) if r["call"] is not None] == ["", "Dropout(rate=0.2)"]

    def test_arrow_keys_across_a_page_edge(self):
        editor = Editor(chain(230))
        assert editor.table.pages == 3 and len(editor.table.rows) == editor.table.page_size == 100
        editor.layer_picker.value = "act_98"  # the last row of the first page (the input is row 0)
        assert editor.table.page == 0 and editor.table.rows[-1]["path"] == "act_98"
        press_arrow(editor, 1)  # the browser moves within a page itself; at its edge it asks
        assert editor.selected == "act_99" and editor.table.page == 1 and editor.table.rows[0]["path"] == "act_99"
        press_arrow(editor, -1)
        assert editor.selected == "act_98" and editor.table.page == 0

    def test_a_thousand_rows_are_sent_a_page_at_a_time(self):
        editor = Editor(chain(1000))
        table = editor.table
        assert table.total == 1001 and table.pages == 11 and len(table.rows) == 100
        assert [r["path"] for r in listed(editor)] == ["x"] + [f"act_{i}" for i in range(1000)]
        editor.layer_picker.value = "act_949"
        assert table.page == 9 and any(r["path"] == "act_949" for r in table.rows)
        table.page = 10  # the pager's "next"
        assert [r["path"] for r in table.rows] == [f"act_{i}" for i in range(999, 1000)]
        assert editor.selected == "act_949"  # turning a page selects nothing
        editor.search.value = "act_99"
        assert table.total == 11 and table.page == 0  # act_99 and act_990 ... act_999, on one page

    def test_hostile_names_reach_the_browser_as_text_and_are_set_as_text(self):
        inputs = keras.Input((6,), name="x")
        h = keras.layers.Dense(8, name=EVIL)(inputs)
        editor = Editor(keras.Model(inputs, keras.layers.Dense(2, name="head")(h)))
        row = row_of(editor, EVIL)
        assert row["name"] == EVIL and row["path"] == EVIL  # unescaped text: the browser sets textContent
        script = (Path(kerasnb.editor.table.__file__).parent / "static" / "table.js").read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, sink

    def test_the_controls_are_disabled_while_the_model_is_rebuilt(self, editor, monkeypatch):
        seen = []
        real = kerasnb.surgery.apply

        def watched(*args, **kwargs):
            seen.append((editor.table.busy, editor.delete_button.disabled, editor.layer_picker.disabled))
            return real(*args, **kwargs)

        monkeypatch.setattr(kerasnb.surgery, "apply", watched)
        pick(editor, "dense", "Dropout")
        assert seen == [(True, True, True)]
        assert not editor.table.busy and not editor.delete_button.disabled

    def test_statuses_foretold_from_shapes_show_before_the_rebuild_and_match_it(self, make, monkeypatch):
        editor = Editor(make("residual"))
        shown = []
        real = kerasnb.surgery.apply

        def watched(*args, **kwargs):  # what the table shows when the rebuild starts
            shown.append({r["path"]: r["status"] for r in editor.table.listed if r["call"] is None})
            return real(*args, **kwargs)

        monkeypatch.setattr(kerasnb.surgery, "apply", watched)
        pick(editor, "res_bn", "LayerNormalization")
        after = {r["path"]: r["status"] for r in editor.table.listed if r["call"] is None}
        assert shown == [after] and after["res_bn"] == "removed" and after["res_conv2"] == "kept_input_changed"
        assert editor.graph is None or editor.graph.statuses["res_conv2"] == "kept_input_changed"

    def test_a_failed_rebuild_takes_the_foretold_statuses_back(self, make, monkeypatch):
        editor = Editor(make("residual"))

        def broken(*args, **kwargs):
            raise RuntimeError("the rebuild broke")

        monkeypatch.setattr(kerasnb.surgery, "apply", broken)
        pick(editor, "res_bn", "LayerNormalization")
        assert "the rebuild broke" in editor.message_text and editor.edits == ()
        assert status_in_table(editor, "res_bn") == "kept" and status_in_table(editor, "res_conv2") == "kept"
        assert "from shapes" not in editor.summary.value


class TestProgress:
    def test_the_rebuild_tells_its_progress(self, make):
        from kerasnb import _rebuild

        model = make("residual")
        told = []
        with _rebuild.progress(lambda done, total: told.append((done, total))):
            kerasnb.replace(model, "res_bn", keras.layers.LayerNormalization())
        calls = len(model.layers) - 1  # one call per layer but the input
        assert told[0] == (0, calls) and told[-1] == (calls, calls)
        assert [d for d, _ in told] == sorted(d for d, _ in told) and len(told) == calls + 1
        kerasnb.replace(model, "res_bn", keras.layers.LayerNormalization())
        assert len(told) == calls + 1  # outside the block nobody is told

    def test_a_long_rebuild_shows_layers_rebuilt_of_total_then_hides_it(self, editor, monkeypatch):
        import kerasnb.editor.panel as panel

        monkeypatch.setattr(panel, "PROGRESS_AFTER", 0.0)  # every rebuild counts as long here
        shown = []
        editor.table.observe(lambda change: shown.append(change["new"]), "progress")
        pick(editor, "dense_1", "Dropout")
        assert shown[-1] == {} and {"done": 3, "total": 3} in shown
        assert all(p["total"] == 3 for p in shown[:-1]) and len(shown) >= 2


def chain(n):
    """A model of ``n`` weightless layers in a row: many rows, built in a moment."""
    inputs = keras.Input((4,), name="x")
    h = inputs
    for i in range(n):
        h = keras.layers.Activation("relu", name=f"act_{i}")(h)
    # Keras maps a functional graph recursively, a frame or more per layer: a chain of 1,000 needs
    # more than Python's default limit of 1,000 frames on some interpreters (Debian's 3.11).
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * n))
    try:
        return keras.Model(inputs, h, name=f"chain{n}")
    finally:
        sys.setrecursionlimit(limit)


EVIL = "d1<img src=x onerror=alert(1)>"


class TestTakingTheResultOut:
    def test_code_rebuilds_the_edited_model(self, editor):
        pick(editor, "dense_1", "Dropout")
        namespace = {}
        exec(editor.code(), namespace)
        rebuilt = namespace["model"]
        assert [type(l).__name__ for l in rebuilt.layers] == [type(l).__name__ for l in editor.model.layers]
        assert tuple(rebuilt.output.shape) == (None, 1)

    def test_save_button_writes_a_keras_file(self, editor, tmp_path):
        pick(editor, "dense_1", "Dropout")
        editor.save_path.value = str(tmp_path / "edited.keras")
        editor.save_button.click()
        assert "Saved" in editor.message.value
        loaded = keras.saving.load_model(tmp_path / "edited.keras")
        assert [type(l).__name__ for l in loaded.layers] == ["InputLayer", "Dense", "Dropout", "Dense"]

    def test_save_refuses_other_extensions(self, editor, tmp_path):
        editor.save_path.value = str(tmp_path / "edited.h5")
        editor.save_button.click()
        assert ".keras" in editor.message.value and not (tmp_path / "edited.h5").exists()

    def test_report_chart_and_code_sections_draw_when_opened(self, editor):
        pick(editor, "dense_1", "Dropout")
        editor.details.selected_index = 0
        assert "Weight report" in editor.report_view.value and "reinitialized" in editor.report_view.value
        editor.details.selected_index = 1
        assert editor.chart_view.value[:8] == b"\x89PNG\r\n\x1a\n"
        editor.details.selected_index = 2
        assert "keras.Model(" in editor.code_view.value

    def test_chart_colours_bars_by_status(self, editor):
        import matplotlib.colors as mcolors

        from kerasnb.report import STATUS_COLORS

        pick(editor, "dense_1", "Dropout")
        figure = editor.chart()
        bars = figure.axes[0].patches
        assert len(bars) == 3  # dense, dense_2 and the removed dense_1: the layers with parameters
        colours = {mcolors.to_hex(b.get_facecolor()) for b in bars}
        assert colours == {STATUS_COLORS["kept"], STATUS_COLORS["reinitialized"], STATUS_COLORS["removed"]}


class TestBigModels:
    """Speed is measured by the benchmarks; here, what opening and selecting compute."""

    @pytest.fixture
    def analyses(self, monkeypatch):
        """The models a channel analysis (what pruning checks cost) was run on."""
        import kerasnb._channels as channels

        seen, real = [], channels.analyse
        monkeypatch.setattr(channels, "analyse", lambda model: seen.append(model) or real(model))
        return seen

    def test_densenet_opens_with_one_row_per_layer_and_no_per_row_work(self, densenet121, analyses, monkeypatch):
        import kerasnb.fitting as fitting

        fits, real = [], fitting.fits
        monkeypatch.setattr(fitting, "fits", lambda *a, **k: fits.append(a[2]) or real(*a, **k))
        editor = Editor(densenet121)
        assert len(rows(editor)) == len(densenet121.layers) == 429
        assert len(editor.layer_picker.options) == 429
        assert analyses == []  # no channel analysis until a row asks about pruning
        assert set(fits) == {editor.selected}  # the types offered are worked out for the selected row only

    def test_densenet_prune_check_is_asked_only_for_the_selected_row(self, densenet121, analyses):
        editor = Editor(densenet121)
        pick(editor, "conv5_block16_2_conv")
        assert not editor.prune_button.disabled
        assert analyses == [densenet121]  # one analysis, for the row asked about
        pick(editor, "conv5_block16_1_relu")
        assert editor.prune_button.disabled  # makes no channels of its own: said without an analysis
        pick(editor, "conv5_block16_2_conv")
        assert len(analyses) == 1  # the answer is kept while the model is the same

    def test_densenet_edit_and_undo(self, densenet121):
        editor = Editor(densenet121)
        pick(editor, "conv5_block16_1_relu", "Activation")
        assert editor.report.status("conv5_block16_1_relu") == "removed"
        assert status_in_table(editor, "conv5_block16_1_relu_activation") == "new"
        editor.undo_button.click()
        assert editor.model is densenet121


class TestSharedLayers:
    """``shared = Dense(4); y = shared(shared(x))``: each call is edited on its own."""

    @pytest.fixture
    def shared(self, make):
        return Editor(make("shared"))

    def test_layer_dropdown_lists_each_call_and_the_row_says_how_many(self, shared):
        options = dict(shared.layer_picker.options)
        assert options["shared \u2014 Dense (call 0)"] == ("shared", 0)
        assert options["shared \u2014 Dense (call 1)"] == ("shared", 1)
        assert shared.selected == ("shared", 0)  # opens on the first call of the first layer
        assert [p for p, _ in rows(shared)] == ["x", "shared", "cat", "out"]  # still one row per layer
        assert row_of(shared, "shared")["calls"] == 2
        calls = [(r["name"], r["call"]) for r in listed(shared) if r["path"] == "shared" and r["call"] is not None]
        assert calls == [("call 0", 0), ("call 1", 1)]  # one sub-row per call, right after the layer's row

    def test_replacing_one_call_keeps_the_other_and_its_weights(self, shared):
        original = shared.model
        pick(shared, ("shared", 1), "Dropout")
        assert no_error(shared)
        assert shared.steps == ["replace 'shared' (call 1) with Dropout(rate=0.2)"]
        (edit,) = shared.edits
        assert edit.target == ("shared", 1)
        assert [l.name for l in shared.model.layers] == ["x", "shared", "shared_call1_dropout", "cat", "out"]
        assert shared.report.status("shared") == "kept" and shared.report.status("out") == "kept_input_changed"
        assert "call 1: Dropout(rate=0.2)" in row_of(shared, "shared")["choice"]
        sub = next(r for r in listed(shared) if r["path"] == "shared" and r["call"] == 1)
        assert sub["choice"] == "Dropout(rate=0.2)" and (shared.table.selected, shared.table.selected_call) == ("shared", 1)
        assert shared.selected == ("shared", 1) and row_type(shared) == "Dropout"
        # What the user sees: the second call's output is now the first call's, passed through Dropout.
        x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
        h = np.asarray(original.get_layer("shared")(x))
        expected = np.asarray(original.get_layer("out")(np.concatenate([h, h], axis=-1)))
        np.testing.assert_allclose(np.asarray(shared.model(x)), expected, rtol=1e-5, atol=1e-6)

    def test_each_call_gets_its_own_type_and_undo_takes_them_back(self, shared):
        pick(shared, ("shared", 0), "Dense")
        pick(shared, ("shared", 1), "Activation")
        assert shared.report.status("shared") == "removed"  # no call of it is left
        assert ("shared_call0_dense", "new") in rows(shared) and ("shared_call1_activation", "new") in rows(shared)
        # The Dense entry starts from the replaced layer's activation (tanh), not relu.
        assert "call 0: Dense(units=4, activation='tanh'); call 1: Activation" in row_of(shared, "shared")["choice"]
        pick(shared, ("shared", 0))
        assert row_type(shared) == "Dense"  # a replaced call still leads to its choice
        assert shared.insert_picker.options == () and shared.insert_button.disabled  # that call is gone
        shared.undo_button.click()
        assert shared.steps == ["replace 'shared' (call 0) with Dense(units=4, activation='tanh')"]
        shared.undo_button.click()
        assert shared.model is shared.original

    def test_delete_one_call_and_insert_after_the_other(self, shared):
        pick(shared, ("shared", 0))
        shared.delete_button.click()
        assert [l.name for l in shared.model.layers] == ["x", "shared", "cat", "out"]
        assert "call 0: deleted" in row_of(shared, "shared")["choice"]
        pick(shared, ("shared", 1))
        shared.insert_picker.value = "LayerNormalization"
        shared.insert_button.click()
        assert shared.selected == "shared_call1_layernormalization"
        assert ("shared_call1_layernormalization", "new") in rows(shared)
        assert "(inserted after call 1)" in row_of(shared, "shared_call1_layernormalization")["choice"]
        # editor.edits replays to the same model (call edits run while the original calls exist).
        again = kerasnb.apply(shared.original, shared.edits).model
        assert [l.name for l in again.layers] == [l.name for l in shared.model.layers]

    def test_calls_renumbered_by_the_core_are_still_the_users_calls(self, shared):
        """Replace call 0, insert after its new layer (a second rebuild), then replace call 1."""
        pick(shared, ("shared", 0), "Dropout")
        pick(shared, "shared_call0_dropout")
        shared.insert_picker.value = "BatchNormalization"
        shared.insert_button.click()
        pick(shared, ("shared", 1), "LayerNormalization")
        assert no_error(shared)
        assert [type(l).__name__ for l in shared.model.layers] == [
            "InputLayer", "Dropout", "BatchNormalization", "LayerNormalization", "Concatenate", "Dense"]

    def test_freezing_is_per_layer_from_any_call(self, shared):
        pick(shared, ("shared", 1))
        shared.trainable_box.value = False
        assert shared.model.get_layer("shared").trainable is False
        assert shared.steps == ["freeze 'shared'"]
        pick(shared, ("shared", 0))
        assert shared.trainable_box.value is False

    def test_shared_layer_is_not_offered_for_pruning(self, shared):
        pick(shared, ("shared", 1))
        assert shared.prune_button.disabled and "shared" in shared.prune_button.tooltip


def small_cnn():
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, out, name="small_cnn")


class TestPrune:
    def test_prune_from_the_panel_then_undo(self, editor, mlp):
        before = snapshot(mlp)
        pick(editor, "dense")
        assert not editor.prune_button.disabled
        assert editor.prune_box.layout.display == "none"  # nothing shown until asked
        editor.prune_button.click()
        assert editor.prune_box.layout.display != "none" and editor.prune_slider.value == 1.0
        assert "2,817" in editor.prune_info.value
        editor.prune_slider.value = 0.5
        assert no_error(editor)
        assert editor.steps == ["prune 'dense' keeping 50% of its channels (by l1)"]
        assert isinstance(editor.edits[0], kerasnb.Prune) and editor.edits[0].keep == 0.5
        assert editor.report.status("dense") == "pruned" and editor.report.status("dense_1") == "pruned"
        assert editor.model.get_layer("dense").units == 32
        assert editor.model.count_params() == 1441 < mlp.count_params()
        assert "<b>2,817</b> before pruning &rarr; <b>1,441</b> after" in editor.prune_info.value
        assert ("dense", "pruned") in rows(editor) and row_of(editor, "dense")["choice"] == "pruned to 50%"
        assert "pruned" in editor.summary.value
        editor.prune_slider.value = 0.25  # moving it again changes the same step
        assert len(editor.edits) == 1 and editor.model.get_layer("dense").units == 16
        editor.undo_button.click()
        assert editor.model.get_layer("dense").units == 32 and editor.prune_slider.value == 0.5
        editor.undo_button.click()
        assert editor.model is mlp and status_in_table(editor, "dense") == "kept"
        editor.redo_button.click()
        assert editor.report.status("dense") == "pruned"
        assert_unchanged(mlp, before)

    def test_slider_back_to_all_channels_drops_the_prune(self, editor):
        pick(editor, "dense_1")
        editor.prune_button.click()
        editor.prune_slider.value = 0.5
        assert editor.report.status("dense_1") == "pruned"
        editor.prune_slider.value = 1.0
        assert editor.edits == () and editor.model is editor.original

    def test_small_cnn_prunes_the_batchnorm_and_next_conv_with_it(self):
        model = small_cnn()
        editor = Editor(model)
        pick(editor, "conv1")
        editor.prune_button.click()
        editor.prune_slider.value = 0.5
        statuses = {p: s for p, s in rows(editor)}
        assert statuses["conv1"] == statuses["bn1"] == statuses["conv2"] == "pruned"
        assert statuses["head"] == "kept_input_changed"  # same shapes, but what it reads changed
        assert tuple(editor.model.get_layer("conv2").kernel.shape) == (3, 3, 4, 16)
        assert tuple(editor.model.output.shape) == (None, 3)
        assert editor.model.count_params() < model.count_params()
        editor.undo_button.click()
        assert editor.model is model

    def test_prune_together_with_other_edits(self, editor):
        pick(editor, "dense_1", "Dropout")
        pick(editor, "dense")
        editor.prune_button.click()
        editor.prune_slider.value = 0.5
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)",
                                "prune 'dense' keeping 50% of its channels (by l1)"]
        assert editor.report.status("dense") == "pruned"
        assert tuple(editor.model.get_layer("dense_2").kernel.shape) == (32, 1)
        editor.undo_button.click()
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)"]

    def test_not_offered_where_it_cannot_apply_and_says_why(self, editor):
        pick(editor, "dense_2")  # its channels are the model's output
        assert editor.prune_button.disabled and "output" in editor.prune_button.tooltip
        assert editor.prune_box.layout.display == "none"
        pick(editor, "input_layer")
        assert editor.prune_button.disabled
        pick(editor, "dense_2")
        with pytest.raises(kerasnb.SurgeryError):
            editor.prune(0.5)
        assert "output" in editor.message.value and editor.edits == ()

    def test_a_replaced_layer_is_not_pruned_but_its_new_dense_is(self, editor):
        pick(editor, "dense_1", "Dense")
        pick(editor, "dense_1")  # the removed row
        assert editor.prune_button.disabled
        pick(editor, "dense_1_dense")
        assert not editor.prune_button.disabled
        editor.prune(0.5)
        assert editor.model.get_layer("dense_1_dense").units == 16
        pick(editor, "dense_1_dense", "Keep")  # taking the choice back takes its pruning too
        assert editor.edits == ()


def test_public_names_lead_to_the_panel_and_import_stays_light():
    """In a fresh process: import kerasnb loads no ipywidgets; kerasnb.catalog, register_replacement
    and show_editor are what a user types first, with nothing else imported before."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    code = (
        "import sys, kerasnb\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets loaded by import kerasnb'\n"
        "assert kerasnb.catalog.entries()[0].label == 'Keep'\n"
        "assert kerasnb.register_replacement is kerasnb.catalog.register_replacement\n"
        "import kerasnb.editor\n"
        "assert kerasnb.show_editor is kerasnb.editor.show_editor\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
