"""Pruning from the editor: a layer by the criterion of the user's choice, and "Prune model..."
to a budget with params and MACs before -> after worked out as the slider moves.

The session is driven without widgets; the panel is driven as a user would (set a widget's value,
click a button). Every number the info lines show is checked against the model built after Apply.
"""

import time

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, snapshot

import kerasnb
import kerasnb.surgery
from kerasnb.codegen import code
from editor_ui import select_row
from kerasnb.budget import BudgetNotReachable
from kerasnb.editor import Editor
from kerasnb.editor.session import Session
from kerasnb.flops import total_macs

L = keras.layers
WEAK_BY_NORM = 2  # c1's channel whose kernel is zero: the first to go by l1
WEAK_BY_SCALE = 5  # c1's channel whose BatchNorm scale is tiny: the first to go by bn_scale


def small_cnn():
    """conv -> BN -> relu -> conv -> BN -> relu -> pool -> dense, with a known weakest channel per criterion."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    x = L.Conv2D(16, 3, name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="r2")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    kernel, bias = model.get_layer("c1").get_weights()
    kernel[..., WEAK_BY_NORM] = 0.0
    kernel[..., WEAK_BY_SCALE] *= 10.0  # strong by its weights, silenced by its BatchNorm
    model.get_layer("c1").set_weights([kernel, bias])
    gamma, beta, mean, var = model.get_layer("bn1").get_weights()
    gamma[WEAK_BY_SCALE] = 1e-3
    model.get_layer("bn1").set_weights([gamma, beta, mean, var])
    return model


@pytest.fixture
def cnn():
    return small_cnn()


@pytest.fixture
def data():
    return np.random.default_rng(0).normal(size=(16, 12, 12, 3)).astype("float32")


def kept_channels(original, pruned, name="c1"):
    """Which of the original layer's output channels the pruned layer kept (matched by kernel)."""
    old = original.get_layer(name).get_weights()[0]
    new = pruned.get_layer(name).get_weights()[0]
    return [next(i for i in range(old.shape[-1]) if np.array_equal(old[..., i], new[..., j]))
            for j in range(new.shape[-1])]


def state(session):
    return len(session.history), session.cursor, session.steps


class TestLayerPruneSession:
    def test_criteria_measured_on_examples_are_offered_only_with_data(self, cnn, data):
        """apoz and taylor need examples: offered (and accepted) only when the session has data."""
        plain = Session(cnn)
        assert plain.criteria() == ("l1", "l2", "bn_scale")
        before = state(plain)
        with pytest.raises(kerasnb.InvalidEdit, match="open the editor with data=") as error:
            plain.prune("c1", 0.5, by="taylor")
        assert "by='taylor'" in str(error.value)
        assert state(plain) == before
        assert Session(cnn, data=data).criteria() == ("l1", "l2", "bn_scale", "apoz", "taylor")

    @pytest.mark.parametrize("by, weakest", [("l1", WEAK_BY_NORM), ("bn_scale", WEAK_BY_SCALE)])
    def test_the_criterion_decides_which_channel_goes(self, cnn, by, weakest):
        """Keeping 7 of 8 removes the zeroed channel by l1, the one BatchNorm silences by bn_scale."""
        session = Session(cnn)
        session.prune("c1", 7 / 8, by=by)
        kept = kept_channels(cnn, session.model)
        assert weakest not in kept and len(kept) == 7
        assert session.answers.prune_info("c1").by == by
        assert session.steps[0].describe() == f"prune 'c1' keeping 88% of its channels (by {by})"

    def test_info_counts_are_those_of_the_built_model(self, cnn):
        """Params and MACs before -> after: worked out before building, equal to the built model's."""
        session = Session(cnn)
        preview = session.answers.prune_preview("c1", 0.5, "bn_scale")
        assert preview.keep is None or preview.keep == 0.5
        assert (preview.before, preview.macs_before) == (cnn.count_params(), total_macs(cnn))
        session.prune("c1", 0.5, "bn_scale")
        info = session.answers.prune_info("c1")
        assert (info.before, info.macs_before) == (cnn.count_params(), total_macs(cnn))
        assert (info.after, info.macs_after) == (session.model.count_params(), total_macs(session.model))
        assert info.macs_after < info.macs_before and info.after < info.before
        assert (preview.after, preview.macs_after) == (info.after, info.macs_after)

    def test_a_criterion_by_examples_prunes_and_replays(self, cnn, data):
        """taylor on the session's data: the step names its channels; apply(original, edits) gives the model."""
        before = snapshot(cnn)
        session = Session(cnn, data=data)
        session.prune("c2", 0.5, by="taylor")
        assert session.model.get_layer("c2").filters == 8
        edit = session.edits[0]
        assert isinstance(edit, kerasnb.Prune) and len(edit.channels) == 8
        again = kerasnb.apply(cnn, session.edits).model
        assert again.count_params() == session.model.count_params() == session.answers.prune_info("c2").after
        assert_unchanged(cnn, before)

    def test_a_named_channel_choice_is_made_again_when_an_earlier_step_changes(self, cnn):
        """A bn_scale prune after another prune: changing the earlier one works the later one out again."""
        session = Session(cnn)
        session.prune("c2", 0.5, "l1")
        session.prune("c1", 0.5, "bn_scale")
        session.prune("c2", 0.75, "l1")  # the earlier step, changed in place
        assert session.model.get_layer("c2").filters == 12 and session.model.get_layer("c1").filters == 4
        info = session.answers.prune_info("c1")
        assert (info.after, info.macs_after) == (session.model.count_params(), total_macs(session.model))
        assert kerasnb.apply(cnn, session.edits).model.count_params() == session.model.count_params()


class TestGlobalPruneSession:
    @pytest.mark.parametrize("budget, target", [("macs", 0.5), ("params", 0.6), ("keep", 0.6)])
    def test_plan_numbers_are_the_built_models(self, cnn, budget, target):
        """The plan's params and MACs after equal those of the model Apply builds; code and edits agree."""
        before = snapshot(cnn)
        session = Session(cnn)
        plan = session.answers.global_prune_plan(**{budget: target})
        counts = session.prune_global(**{budget: target})
        model = session.model
        assert counts == (plan.params_before, plan.params_after, plan.macs_before, plan.macs_after)
        assert (model.count_params(), total_macs(model)) == (plan.params_after, plan.macs_after)
        if budget == "macs":
            assert plan.macs_after <= 0.5 * plan.macs_before
        if budget == "params":
            assert plan.params_after <= 0.6 * plan.params_before
        assert session.steps[-1].kind == "transform" and session.steps[-1].label == "prune_global"
        assert kerasnb.apply(cnn, session.edits).model.count_params() == plan.params_after
        scope = {}
        exec(compile(code(model), "<edited>", "exec"), scope)
        assert scope["model"].count_params() == plan.params_after
        assert_unchanged(cnn, before)

    def test_one_undoable_step(self, cnn):
        session = Session(cnn)
        session.prune_global(macs=0.5)
        assert len(session.steps) == 1 and session.model.count_params() < cnn.count_params()
        assert session.undo() and session.model is cnn and session.steps == ()
        assert session.redo() and session.model.count_params() < cnn.count_params()

    def test_an_unreachable_budget_is_refused_and_nothing_changes(self, cnn):
        session = Session(cnn)
        session.prune("c1", 0.5)
        before = state(session)
        with pytest.raises(BudgetNotReachable, match="smallest reachable"):
            session.prune_global(params=0.01)
        assert state(session) == before
        with pytest.raises(kerasnb.InvalidEdit, match="Give one budget"):
            session.prune_global(keep=0.5, macs=0.5)
        with pytest.raises(kerasnb.InvalidEdit, match="fraction of the channels to keep"):
            session.prune_global(keep=1.0)
        with pytest.raises(TypeError):  # the old (budget, target) form is gone
            session.prune_global("flops", 0.5)
        assert state(session) == before

    def test_scores_are_reused_between_slider_moves(self, cnn, monkeypatch):
        """Only the first plan of a model scores its channels; later targets reuse the scores."""
        import kerasnb.criteria

        calls = []
        real = kerasnb.criteria.group_scores
        monkeypatch.setattr(kerasnb.criteria, "group_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
        session = Session(cnn)
        plans = [session.answers.global_prune_plan(macs=t) for t in (0.8, 0.6, 0.4)]
        assert len(calls) == 1
        assert plans[0].macs_after > plans[1].macs_after > plans[2].macs_after

    def test_later_step_after_global_prune_keeps_counts_true(self, cnn):
        """An earlier step changed after the global prune: the global step is worked out again."""
        session = Session(cnn)
        session.prune("c1", 0.75)
        session.prune_global(macs=0.6)
        session.prune("c1", 0.5)  # the first step, changed: the global prune is planned again after it
        counts = session.steps[-1].counts
        assert (counts[1], counts[3]) == (session.model.count_params(), total_macs(session.model))


@pytest.fixture
def editor(cnn):
    return Editor(cnn)


def numbers_in(html_text):
    import re

    return [int(n.replace(",", "")) for n in re.findall(r"<b>([\d,]+)</b>", html_text)]


class TestPanel:
    def test_layer_prune_by_the_chosen_criterion_with_macs(self, editor, cnn):
        select_row(editor, "c1")
        editor.prune_button.click()
        assert editor.prune_by.options == ("l1", "l2", "bn_scale")
        assert f"{total_macs(cnn):,}" in editor.prune_info.value
        editor.prune_by.value = "bn_scale"
        assert editor.edits == ()  # choosing a criterion alone prunes nothing
        editor.prune_slider.value = 0.5
        assert editor.steps == ["prune 'c1' keeping 50% of its channels (by bn_scale)"]
        assert numbers_in(editor.prune_info.value) == [cnn.count_params(), editor.model.count_params(),
                                                       total_macs(cnn), total_macs(editor.model)]
        assert WEAK_BY_SCALE not in kept_channels(cnn, editor.model)
        editor.prune_slider.value = 0.9  # 0.9 of 8 channels keeps 7
        editor.prune_by.value = "l1"  # the pruned layer is pruned again by the new criterion
        assert editor.steps == ["prune 'c1' keeping 90% of its channels (by l1)"]
        assert WEAK_BY_NORM not in kept_channels(cnn, editor.model) and WEAK_BY_SCALE in kept_channels(cnn, editor.model)
        editor.undo_button.click()
        assert editor.prune_by.value == "bn_scale"

    def test_data_criteria_are_offered_with_data(self, cnn, data):
        editor = Editor(cnn, data=data)
        assert editor.prune_by.options == ("l1", "l2", "bn_scale", "apoz", "taylor")
        assert "taylor" in editor.global_by.options
        select_row(editor, "c2")
        editor.prune_button.click()
        editor.prune_by.value = "apoz"
        editor.prune_slider.value = 0.5
        assert editor.model.get_layer("c2").filters == 8 and "by apoz" in editor.prune_info.value

    def test_prune_model_live_then_apply_then_undo(self, editor, cnn):
        assert editor.global_prune_box.layout.display == "none"
        editor.global_prune_button.click()
        assert editor.global_prune_box.layout.display != "none"
        first = editor.global_info.value
        editor.global_target.value = 0.3
        plan = editor.session.answers.global_prune_plan(macs=0.3)
        assert editor.global_info.value != first
        assert numbers_in(editor.global_info.value) == [plan.params_before, plan.params_after, plan.macs_before,
                                                        plan.macs_after]
        assert editor.edits == ()  # moving the slider only shows what would happen
        editor.global_apply.click()
        assert "kn-error" not in editor.message.value and len(editor.steps) == 1
        # the table is drawn again after the whole-model step, each pruned layer saying by what
        drawn = {row["path"]: row for row in editor.table.rows}
        assert "Drawing problem" not in editor.message_text and set(drawn) >= {"c1", "c2"}
        assert drawn["c1"]["status"] == "pruned" and "pruned by" in drawn["c1"]["choice"]
        assert "Pruned:" in editor.global_info.value
        assert numbers_in(editor.global_info.value) == [cnn.count_params(), editor.model.count_params(),
                                                        total_macs(cnn), total_macs(editor.model)]
        assert editor.model.count_params() == plan.params_after
        assert f"{editor.model.get_layer('c1').filters}" in editor.code()
        editor.undo_button.click()
        assert editor.model is cnn and "Pruned:" not in editor.global_info.value

    def test_budget_kinds_change_the_slider(self, editor):
        editor.global_prune_button.click()
        editor.global_budget.value = "keep"
        assert editor.global_target.description == "keep" and editor.global_target.max < 1
        editor.global_target.value = 0.75
        plan = editor.session.answers.global_prune_plan(keep=0.75)
        assert numbers_in(editor.global_info.value)[1] == plan.params_after
        editor.global_round.value = 8
        editor.global_apply.click()
        assert editor.model.get_layer("c2").filters % 8 == 0

    def test_an_unreachable_budget_shows_the_error_and_changes_nothing(self, editor):
        editor.global_prune_button.click()
        editor.global_budget.value = "params"
        editor.global_round.value = 8  # c1 (8 channels) cannot shrink, c2 only to 8
        editor.global_target.value = 0.05
        assert "smallest reachable" in editor.global_info.value
        history = editor.history
        editor.global_apply.click()
        assert "kn-error" in editor.message.value and "smallest reachable" in editor.message_text
        assert editor.history == history and editor.edits == ()

    def test_controls_are_disabled_while_the_global_prune_rebuilds(self, editor, monkeypatch):
        seen = []
        real = kerasnb.surgery.apply

        def watched(*args, **kwargs):
            seen.append((editor.global_apply.disabled, editor.global_target.disabled, editor.prune_by.disabled,
                         editor.global_prune_button.disabled))
            return real(*args, **kwargs)

        monkeypatch.setattr(kerasnb.surgery, "apply", watched)
        editor.global_prune_button.click()
        editor.global_apply.click()
        assert seen and all(s == (True, True, True, True) for s in seen)
        assert not editor.global_apply.disabled and not editor.global_target.disabled


def test_slider_moves_on_resnet50_are_fast(resnet50):
    """A move of the "Prune model..." slider on ResNet50 plans again from the kept scores: well under a second."""
    editor = Editor(resnet50)
    editor.global_prune_button.click()  # the first plan scores the channels
    times = []
    for target in (0.7, 0.6, 0.5, 0.4):
        started = time.perf_counter()
        editor.global_target.value = target
        times.append(time.perf_counter() - started)
    assert "kn-error" not in editor.message.value and "MACs per sample" in editor.global_info.value
    assert max(times) < 1.0, times
