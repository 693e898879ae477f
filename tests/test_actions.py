"""Every registered action, through the editor: applied, the table drawn, its foretold statuses shown.

``kerasnb.actions.registry()`` is the one list of capabilities. An action registered there but
missing from the session, the table's labels or the panel fails here (the way "Prune model..."
once emptied the table because its label was missed). Each record's ``example`` names the
editor method's arguments on the model below (``key`` selects a row first); ``needs`` are the
actions taken before it.
"""

import keras
import pytest
from keras import layers as L

import kerasnb
import kerasnb.actions as actions
import kerasnb.lora as lora


@pytest.fixture(scope="module")
def model():
    """Small, with something for every action: a conv + BatchNorm + activation to fold, swap and
    prune, attention for LoRA, Dense layers like each other for replace_all."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(8, 3, padding="same", name="conv_2")(x)
    x = L.Activation("relu", name="act")(x)
    x = L.Reshape((64, 8), name="tokens")(x)
    x = L.MultiHeadAttention(2, 4, name="attention")(x, x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    x = L.Dense(16, activation="relu", name="dense")(x)
    x = L.Dense(16, name="dense_1")(x)
    x = L.Add(name="block")([x, L.Dense(16, name="branch")(x)])  # a residual block: grow_blocks
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def _take(editor, name, example):
    """The example through the editor: a row action is given its row as ``key=`` (every row verb
    takes one), with another row selected, so a verb that ignored ``key`` would act elsewhere."""
    arguments = dict(example)
    key = arguments.pop("key", None)
    if key is not None:
        editor.select("head" if key != "head" else "dense")
        arguments["key"] = key
    getattr(editor, name)(**arguments)
    if key is not None:  # the step stands on that row (a LoRA on a block: on its projections)
        target = editor.session.steps[-1].target
        assert target in ("", key) or str(target).startswith(key + "/"), (name, target)


def test_every_row_verb_of_the_editor_takes_the_row_as_key():
    import inspect

    from kerasnb.editor.panel import Editor

    for name, action in actions.registry().items():
        if not action.whole_model:
            assert "key" in inspect.signature(getattr(Editor, name)).parameters, name


@pytest.mark.parametrize("name", list(actions.registry()))
def test_every_action_applies_through_the_editor_and_draws(model, name):
    action = actions.get(name)
    assert action.description and callable(action.label) and callable(action.core)
    editor = kerasnb.show_editor(model)
    try:
        for before, example in action.needs:
            _take(editor, before, example)
        steps_before, rows_before = editor.session.steps, editor.table.rows
        _take(editor, name, action.example)
        step = editor.session.steps[-1]
        assert step.action == name  # the step the session made is this action's
        rows = editor.table.rows
        assert rows, f"{name}: the table is empty"
        assert "Drawing problem" not in editor.message_text, editor.message_text
        statuses = {row["status"] for row in rows}
        assert set(map(str, action.foretells)) <= statuses, (name, statuses)
        if step.kind != "trainable":  # a freeze shows in the trainable column, not the edit column
            label = step.short()
            assert any(label in row["choice"] for row in rows), (label, [row["choice"] for row in rows])
        # The steps replay through the core as the editor says.
        assert len(kerasnb.apply(model, editor.edits).model.layers) == len(editor.model.layers)
        # Undo takes the step back: the history and the table are what they were before it.
        editor.undo()
        assert editor.session.steps == steps_before, (name, editor.session.steps)
        assert editor.table.rows == rows_before, name
        assert "Drawing problem" not in editor.message_text, editor.message_text
    finally:
        editor.close()


def _open_then(opener, **inputs):
    """A box's gesture: click ``opener`` (its box opens), set ``inputs`` (widget name -> value), then the
    action's control is clicked."""
    def gesture(editor):
        getattr(editor, opener).click()
        for name, value in inputs.items():
            setattr(getattr(editor, name), "value", value)
    return gesture


# How a user reaches each control on the model above before its gesture (the others: just clicked).
# An action added with an open/apply pair and no entry here fails the test below: its Apply refuses.
_BEFORE = {
    "insert": lambda editor: setattr(editor.insert_picker, "value", "Dropout"),
    "configure": _open_then("configure_button", configure_text="units=12"),
    "prune": _open_then("prune_button"),
    "prune_global": _open_then("global_prune_button", global_budget="keep", global_target=0.5),
    "change_input": _open_then("input_button", input_shape="8, 8, 1"),
    "swap_activation": _open_then("swap_button", swap_from="relu", swap_to="gelu"),
    "enable_lora": lambda editor: setattr(editor.lora_rank, "value", 2),
    "prune_heads": _open_then("heads_button", heads_slider=1),
    "widen": _open_then("widen_button", widen_width=24),
}


def _gesture(editor, name, widget):
    """The user's gesture on ``widget``: a new value for a slider or checkbox, the Type dropdown of
    the selected row in the table, a click for a button."""
    import ipywidgets as w

    from editor_ui import choose_type

    if name == "replace":
        choose_type(editor, actions.get(name).example["label"])
    elif isinstance(widget, w.Checkbox):
        widget.value = not widget.value
    elif isinstance(widget, w.FloatSlider):
        widget.value = actions.get(name).example["keep"]
    else:
        widget.click()


@pytest.mark.parametrize("name", list(actions.registry()))
def test_every_action_has_a_panel_control_that_makes_its_step(model, name):
    """Every registered action is reachable in the panel: its ``control`` is a widget of the editor,
    and the user's gesture on it (after selecting the example's row and opening its box) makes a
    step of that action, drawn without a drawing problem."""
    import ipywidgets as w

    action = actions.get(name)
    editor = kerasnb.show_editor(model)
    try:
        widget = getattr(editor, action.control, None) if action.control else None
        assert isinstance(widget, w.Widget), f"{name}: no panel control (control={action.control!r})"
        for before, example in action.needs:
            _take(editor, before, example)
        if "key" in action.example:
            editor.select(action.example["key"])
        if name == "change_input":
            editor.select("image")
        _BEFORE.get(name, lambda editor: None)(editor)
        made = len(editor.session.history)
        _gesture(editor, name, widget)
        assert len(editor.session.history) > made, (name, editor.message_text)
        assert editor.session.steps[-1].action == name, (name, editor.message_text)
        assert editor.table.rows and "Drawing problem" not in editor.message_text, editor.message_text
    finally:
        editor.close()


def test_the_new_controls_are_offered_only_where_they_apply(model):
    """"Split activations" only while a layer has a fused activation, "Heads..." only on a
    MultiHeadAttention row with heads to spare, "Configure..." on a layer's row but not an input's;
    a Configure text that is no option=value list is refused in the message line, nothing changed."""
    editor = kerasnb.show_editor(model)
    try:
        assert not editor.split_button.disabled
        editor.split_button.click()
        assert editor.split_button.disabled and "fused activation" in editor.split_button.tooltip
        editor.select("dense")
        assert editor.heads_button.disabled and "MultiHeadAttention" in editor.heads_button.tooltip
        assert not editor.configure_button.disabled
        editor.select("image")
        assert editor.configure_button.disabled and "input" in editor.configure_button.tooltip
        editor.select("attention")
        assert not editor.heads_button.disabled
        editor.heads_button.click()
        assert (editor.heads_slider.min, editor.heads_slider.max, editor.heads_slider.value) == (1, 1, 1)
        editor.heads_apply.click()
        assert editor.model.get_layer("attention").num_heads == 1
        assert "1 of 2 heads" in editor.heads_info.value  # counted from the layer before its heads step
        editor.configure_button.click()
        before = editor.session.steps
        for text, said in (("units=gelu", "quote a string"), ("units=__import__('os')", "not a literal"),
                           ("12", "option=value")):
            editor.configure_text.value = text
            editor.configure_apply.click()
            assert editor.session.steps is before, text
            assert said in editor.message_text and repr(text) in editor.message_text, editor.message_text
    finally:
        editor.close()


def test_register_action_once_and_it_is_in_the_registry():
    before = actions.registry()
    try:
        record = actions.register_action("identity_for_test", "surgery:apply", "nothing, for the test",
                                         lambda step: "nothing", whole_model=True,
                                         plan=lambda model, settings, context: (None, ""))
        assert actions.get("identity_for_test") is record and record.core is kerasnb.apply
        with pytest.raises(kerasnb.InvalidEdit, match="plan="):
            actions.register_action("no_plan_for_test", "surgery:apply", "x", lambda step: "", whole_model=True)
        with pytest.raises(kerasnb.InvalidEdit, match="registered: replace"):
            actions.get("nope")
    finally:
        actions._REGISTRY.clear()
        actions._REGISTRY.update(before)


def test_prune_global_budgets_are_fractions_kept():
    assert actions.check_global(keep=0.25) == {"keep": 0.25, "by": "l1", "round_to": None}
    assert actions.check_global(macs=1, round_to=8)["round_to"] == 8
    for wrong in ({}, {"keep": 0.5, "params": 0.5}, {"keep": 1.0}, {"macs": 0}, {"params": True}):
        with pytest.raises(kerasnb.InvalidEdit, match="Received"):
            actions.check_global(**wrong)


def test_lora_on_attention_from_plain_python(model):
    """What the editor's "LoRA on attention" does, without the editor: the query and value projections."""
    import numpy as np

    projections = lora.attention_projections(model)
    assert projections == ["attention/query", "attention/value"]
    assert len(lora.attention_projections(model, "query, key, value, output")) == 4
    # This model's attention layer is itself named "attention": the word is refused as ambiguous.
    with pytest.raises(kerasnb.AmbiguousTarget, match=r"attention_projections\(model\).*\['attention'\]"):
        kerasnb.enable_lora(model, "attention", rank=2)
    result = kerasnb.enable_lora(model, projections, rank=2)
    assert lora.lora_layers(result.model) == {"attention/query": 2, "attention/value": 2}
    inputs = keras.Input((4, 8))  # where no layer is named "attention", the word means the projections
    mha_model = keras.Model(inputs, L.MultiHeadAttention(2, 4, name="mha")(inputs, inputs))
    other = kerasnb.enable_lora(mha_model, "attention", rank=2)
    assert lora.lora_layers(other.model) == {"mha/query": 2, "mha/value": 2}
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    assert np.allclose(result.model(x), model(x), atol=1e-6)  # one factor starts at zero
    assert lora.lora_layers(model) == {}  # the original is untouched
    with pytest.raises(kerasnb.InvalidEdit, match="which is one of"):
        lora.attention_projections(model, "query")


def test_the_editor_reaches_the_core_through_public_names_and_the_facade():
    """The session, its answers and steps, the panel and the table import no private core module
    (``kerasnb._plan``, ``_slicing``, ``_graph`` ...): what they need is named in kerasnb.actions."""
    import pathlib
    import re

    editor = pathlib.Path(kerasnb.__file__).parent / "editor"
    private = re.compile(r"from \.\.(\s+import\s+_\w|_\w)|kerasnb\._\w+|import kerasnb\._")
    for name in ("session.py", "answers.py", "steps.py", "panel.py", "table.py"):
        lines = [line for line in (editor / name).read_text().splitlines()
                 if private.search(line.split("#")[0]) and not line.lstrip().startswith(('"', "`"))]
        assert lines == [], (name, lines)


def test_a_row_s_configure_and_heads_steps_are_one_each(model):
    from kerasnb.editor import Session

    session = Session(model)
    session.configure("dense", units=12)
    session.configure("dense", units=10)  # the row's earlier step is replaced, not stacked
    session.prune_heads("attention", [0])
    assert [s.action for s in session.steps] == ["configure", "prune_heads"]
    assert session.model.get_layer("dense").units == 10 and session.model.get_layer("attention").num_heads == 1
    before = session.steps
    for wrong in (lambda: session.configure(None, units=3), lambda: session.configure("nope", units=3),
                  lambda: session.prune_heads("attention"), lambda: session.prune_heads("attention", 0)):
        with pytest.raises(kerasnb.SurgeryError, match="Received"):
            wrong()
    assert session.steps == before
