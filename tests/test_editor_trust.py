"""The editor and untrusted input, bad calls, its lifetime, and what a new user meets.

One test class per kind of problem; every assertion is on what a user sees: the panel's HTML,
its message line, its rows and history, the models it hands back, the widgets left open.
"""

import gc
import weakref

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot

import ipywidgets as w
import kerasnb
import kerasnb.catalog as catalog
import kerasnb.editor.panel as panel
import kerasnb.plotting
import kerasnb.surgery
from editor_ui import choose_type, row_of, row_type, set_fields
from kerasnb.editor import Editor, show_editor

EVIL = "d1<img src=x onerror=alert(1)>"


def live_widgets() -> int:
    """How many widgets the ipywidgets registry holds open (its name differs across versions)."""
    from ipywidgets.widgets import widget as module

    # Editors dropped by earlier tests close their widgets when collected: collect them now, not
    # in the middle of a count.
    gc.collect()
    registry = getattr(module, "_instances", None)
    return len(registry if registry is not None else w.Widget.widgets)


def html_values(editor) -> dict:
    """Every HTML string the panel shows, by a readable key."""
    out, stack = {}, [editor.widget]
    while stack:
        widget = stack.pop()
        stack.extend(getattr(widget, "children", ()) or ())
        if isinstance(widget, w.HTML):
            out[f"{id(widget)}:{' '.join(widget._dom_classes)}"] = widget.value
    return out


def softmax_mlp():
    inputs = keras.Input((6,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    out = keras.layers.Dense(4, activation="softmax", name="probs")(h)
    return keras.Model(inputs, out, name="mlp")


class TestUntrustedNames:
    """Section 2: layer names come from model files; they are text, never markup."""

    def test_no_raw_markup_reaches_any_html_widget(self):
        inputs = keras.Input((6,), name="x<b>")
        h = keras.layers.Dense(8, activation="relu", name=EVIL)(inputs)
        out = keras.layers.Dense(2, name="head")(h)
        editor = Editor(keras.Model(inputs, out, name="m<img src=y>"))

        @catalog.register_replacement("Noise <img src=z>", note=lambda shape, **_: "note <img src=n>")
        def noise(layer, input_shape):
            return keras.layers.GaussianNoise(0.1)

        try:
            editor.layer_picker.value = EVIL
            with pytest.raises(kerasnb.SurgeryError):
                editor.replace("VGG16 backbone (frozen)")  # the refusal names the layer
            assert "onerror" in editor.message.value  # the name is there, as text
            choose_type(editor, "Noise <img src=z>")  # label, note and new layer names
            assert "note <img src=n>" in editor.notes
            for index in (0, 1, 2):
                editor.details.selected_index = index
            values = html_values(editor)
            assert any("&lt;img src=x onerror=alert(1)&gt;" in v for v in values.values())
            assert any("&lt;img src=n&gt;" in v for v in values.values())
            assert {k: v for k, v in values.items() if "<img" in v} == {}
        finally:
            catalog.unregister("Noise <img src=z>")

    def test_chart_draws_names_with_dollar_signs_as_written(self):
        name = "d$\\foo{$"
        inputs = keras.Input((6,), name="x")
        h = keras.layers.Dense(8, name=name)(inputs)
        editor = Editor(keras.Model(inputs, keras.layers.Dense(2, name="head")(h)))
        figure = kerasnb.plotting.params_chart(editor.report)
        figure.savefig(__import__("io").BytesIO(), format="png")  # mathtext would raise here
        assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == [name, "head"]
        editor.details.selected_index = 1
        editor.layer_picker.value = "head"
        choose_type(editor, "Dropout")
        assert "kn-ok" in editor.message.value and editor.chart_view.value[:4] == b"\x89PNG"


class TestCommitAndMessagesAgree:
    """Section 2: an error is shown only for an action that did not happen."""

    def test_drawing_failure_after_a_commit_is_a_drawing_problem_not_a_failed_edit(self, make, monkeypatch):
        editor = Editor(make("seed_mlp"))

        def broken(report, **kwargs):
            raise ValueError("the chart broke")

        monkeypatch.setattr(kerasnb.plotting, "params_chart", broken)
        editor.details.selected_index = 1  # opening it: said as a drawing problem
        assert "kn-warn" in editor.message.value and "the chart broke" in editor.message_text
        editor.layer_picker.value = "dense_1"
        editor.replace("Dropout")  # committed, so no exception
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)"]
        assert len(editor.history) == 2
        assert "kn-error" not in editor.message.value and "kn-warn" in editor.message.value
        assert editor.message_text.startswith("Done: replace 'dense_1' with Dropout(rate=0.2).")
        assert "could not draw the chart" in editor.message_text
        # The rest of the panel shows the committed state.
        assert row_of(editor, "dense_1_dropout")["status"] == "new"
        assert row_type(editor) == "Dropout" and not editor.undo_button.disabled
        assert "Dropout(rate=0.2)" in editor.history_view.value


class TestPythonMethodsRefuseInPlainWords:
    """Section 4: each bad call raises a SurgeryError naming what it got and what would work."""

    BAD = {
        "unknown type": (lambda e, tmp: e.replace("NoSuchType"),
                         catalog.UnknownType, ["'NoSuchType'", "Known types:", "Dropout", "Dense"]),
        "rate out of range": (lambda e, tmp: e.replace("Dropout", rate=5),
                              catalog.InvalidParameter, ["0 <= rate < 1", "rate=5"]),
        "unknown parameter": (lambda e, tmp: e.replace("Dropout", units=3),
                              catalog.InvalidParameter, ["no parameter units", "it takes rate"]),
        "negative units": (lambda e, tmp: e.replace("Dense", units=-3),
                           catalog.InvalidParameter, ["1 <= units", "units=-3"]),
        "type that does not fit": (lambda e, tmp: e.replace("VGG16 backbone (frozen)"),
                                   kerasnb.IncompatibleShape, ["needs images", "Types that fit there:", "Dropout"]),
        "bad keep": (lambda e, tmp: e.prune("abc"),
                     kerasnb.InvalidEdit, ["0 < keep <= 1", "keep='abc'"]),
        "missing folder": (lambda e, tmp: e.save(str(tmp / "missing" / "m.keras")),
                           panel.SaveFailed, ["does not exist", "os.makedirs", "m.keras"]),
    }

    @pytest.mark.parametrize("case", list(BAD))
    def test_refused_and_nothing_changes(self, case, make, tmp_path, monkeypatch):
        call, kind, words = self.BAD[case]
        mlp = make("seed_mlp")
        before = snapshot(mlp)
        editor = Editor(mlp)
        editor.select("dense")
        editor.replace("BatchNormalization")  # a history to keep intact
        editor.select("dense_1")
        model, history, steps = editor.model, editor.history, editor.steps
        rebuilds = []
        real = kerasnb.surgery.apply
        monkeypatch.setattr(kerasnb.surgery, "apply", lambda *a, **k: rebuilds.append(a) or real(*a, **k))
        with pytest.raises(kind) as caught:
            call(editor, tmp_path)
        assert isinstance(caught.value, kerasnb.SurgeryError)
        for word in words:
            assert word in str(caught.value), (word, str(caught.value))
        assert rebuilds == []  # refused from the dry run, before any rebuild
        assert "kn-error" in editor.message.value and words[-1] in editor.message_text
        assert editor.model is model and editor.history == history and editor.steps == steps
        assert_unchanged(mlp, before)


class TestLifetime:
    """Section 5: edits leak no widgets; a closed or dropped editor is freed."""

    def test_edits_do_not_grow_the_number_of_live_widgets(self, make):
        editor = Editor(make("seed_mlp"))
        editor.layer_picker.value = "dense_1"
        choose_type(editor, "Dropout")
        before = live_widgets()
        for rate in (0.1, 0.3, 0.5):
            set_fields(editor, rate=rate)
        choose_type(editor, "Dense")  # other parameter widgets ...
        choose_type(editor, "Dropout")  # ... and back
        assert len(editor.history) == 7
        assert live_widgets() == before
        editor.close()

    def test_close_closes_every_widget_and_frees_the_editor_and_its_models(self, make):
        model = make("seed_mlp")
        before = live_widgets()
        editor = Editor(model)
        editor.layer_picker.value = "dense_1"
        choose_type(editor, "Dense")
        edited = weakref.ref(editor.model)
        editor.close()
        assert live_widgets() == before
        assert repr(editor) == "<kerasnb Editor on model 'mlp': 1 edit (closed)>"
        freed = weakref.ref(editor)
        del editor
        gc.collect()
        assert freed() is None and edited() is None

    def test_a_dropped_editor_is_freed_and_its_widgets_closed(self, make):
        model = make("seed_mlp")
        before = live_widgets()
        editor = Editor(model)
        editor.layer_picker.value = "dense_1"
        choose_type(editor, "Dropout")
        freed = weakref.ref(editor)
        del editor
        gc.collect()
        assert freed() is None and live_widgets() == before

    def test_show_editor_again_on_the_same_model_closes_the_earlier_panel(self, make, monkeypatch):
        shown = []
        monkeypatch.setattr(panel, "_in_notebook", lambda: True)
        monkeypatch.setattr(panel, "_display", shown.append)
        model = make("seed_mlp")
        before = live_widgets()
        first = show_editor(model)
        assert shown == [first.widget]
        first = weakref.ref(first)  # the notebook holds no variable: the panel is kept alive while shown
        gc.collect()
        assert first() is not None
        second = show_editor(model)  # re-running the cell
        gc.collect()
        assert first() is None and shown[-1] is second.widget
        opened = live_widgets() - before
        second.close()
        assert live_widgets() == before and opened > 0

    def test_an_interrupted_rebuild_leaves_the_panel_usable(self, make, monkeypatch):
        editor = Editor(make("seed_mlp"))
        editor.layer_picker.value = "dense_1"

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(kerasnb.surgery, "apply", interrupted)
        with pytest.raises(KeyboardInterrupt):
            editor.replace("Dropout")
        choose_type(editor, "Dropout")  # from the panel: the callback ends, the panel says why
        assert "Rebuilding" not in editor.message_text and "Interrupted" in editor.message_text
        assert editor.history == [()] and editor.model is editor.original
        assert row_type(editor) == "Keep"  # the controls show the model as it is
        for control in (editor.layer_picker, editor.search, editor.delete_button,
                        editor.insert_button, editor.save_button, editor.trainable_box):
            assert not control.disabled, control.description
        assert not editor.table.busy and not editor.table.inline["disabled"] and editor.table.progress == {}
        assert row_of(editor, "dense_1")["status"] == "kept"  # no foretold status is left behind
        monkeypatch.undo()
        choose_type(editor, "Dropout")
        assert editor.steps == ["replace 'dense_1' with Dropout(rate=0.2)"]


class TestWhatANewUserMeets:
    """Section 6."""

    def test_every_action_shows_its_own_fresh_outcome(self, make, tmp_path):
        editor = Editor(make("seed_mlp"))
        editor.layer_picker.value = "dense_1"
        choose_type(editor, "Dropout")
        set_fields(editor, rate=7.0)  # an error stays on screen ...
        assert "kn-error" in editor.message.value
        seen = [editor.message.value]

        def outcome(*words):
            assert editor.message.value not in seen, "no fresh message"
            seen.append(editor.message.value)
            for word in words:
                assert word in editor.message_text, (word, editor.message_text)

        editor.save_path.value = str(tmp_path / "m.h5")
        editor.save_button.click()  # ... and each later action still says what happened
        outcome(".keras")
        editor.save_button.click()  # the same refusal again is a new message
        outcome(".keras")
        editor.layer_picker.value = "dense"
        editor.insert_picker.value = "BatchNormalization"
        editor.insert_button.click()
        outcome("Done: insert BatchNormalization after 'dense'")
        editor.layer_picker.value = "dense_2"
        editor.prune_button.click()  # not prunable: says why
        outcome("output")
        editor.layer_picker.value = "dense"
        editor.prune_button.click()
        outcome("Pruning 'dense'", "slider")
        editor.save_path.value = str(tmp_path / "m.keras")
        editor.save_button.click()
        outcome("Saved the edited model to", "m.keras")
        editor.undo_button.click()
        outcome("Undo.", "Took back: insert BatchNormalization after 'dense'")

    def test_dense_and_conv1d_block_keep_the_softmax_of_the_output_they_replace(self):
        model = softmax_mlp()
        editor = Editor(model)
        editor.layer_picker.value = "probs"
        choose_type(editor, "Dense")
        assert editor.steps == ["replace 'probs' with Dense(units=4, activation='softmax')"]
        x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
        np.testing.assert_allclose(np.asarray(editor.model(x)).sum(axis=1), 1.0, rtol=1e-5)
        choose_type(editor, "Conv1D block")
        assert "output_activation='softmax'" in editor.steps[0]
        np.testing.assert_allclose(np.asarray(editor.model(x)).sum(axis=1), 1.0, rtol=1e-5)
        editor.layer_picker.value = "hidden"
        choose_type(editor, "Dense")  # a relu layer stays relu
        assert editor.steps[-1] == "replace 'hidden' with Dense(units=8, activation='relu')"

    def test_no_label_is_cut_to_a_fixed_width(self, make):
        """Buttons grow with their label ("Save .keras", "Apply to all 3 Dense layers like this one"),
        and descriptions ("projections", "LoRA rank") get the room they need."""
        editor = Editor(make("seed_mlp"))
        editor.layer_picker.value = "dense_1"
        choose_type(editor, "Dropout")
        widgets = list(panel._tree(editor.widget))
        buttons = [b for b in widgets if isinstance(b, w.Button)]
        assert len(buttons) > 15 and editor.save_button in buttons
        assert {b.description: b.layout.width for b in buttons if b.layout.width not in (None, "auto")} == {}
        described = [c for c in widgets if hasattr(getattr(c, "style", None), "description_width")
                     and getattr(c, "description", "")]
        assert described and {c.description for c in described if c.style.description_width != "initial"} == set()
        editor.close()

    def test_show_editor_in_a_script_prints_nothing_and_reads_short(self, capsys):
        editor = show_editor(softmax_mlp())
        assert capsys.readouterr().out == ""
        assert repr(editor) == "<kerasnb Editor on model 'mlp': 0 edits>"
        assert editor._repr_mimebundle_()["text/plain"] == repr(editor)
        editor.select("hidden")
        editor.replace("Dropout")
        assert repr(editor) == "<kerasnb Editor on model 'mlp': 1 edit>"
        assert capsys.readouterr().out == ""
        editor.close()
