"""Transformers in the editor: keras-hub backbones and tasks, dropping blocks, LoRA on and off, merging.

The Session (widget-free) decides: whether a row can be deleted follows the core (a block taking
the hidden states and a mask passes on its residual stream, as ``kerasnb.delete`` decides), which
layers LoRA goes on for a row (the layer itself, or a block's attention query and value
projections), and why not. Each action is one step of the history (undo, redo and reset take it
back; an error leaves the history as it was). The panel tests click as a user would and read what
the user sees. Tiny models built offline; skipped, with the reason, where keras-hub is missing.
"""

import re

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import layers as L

import kerasnb
from editor_ui import choices_text, listed, row_of
from kerasnb.editor import Editor, LoraInfo, Session, show_editor

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
kh = keras_hub.models

B = "gpt2_backbone/"  # where a GPT2CausalLM keeps its blocks
EVIL = "att<img src=x onerror=alert(1)>"


def gpt2_backbone(name="gpt2_backbone"):
    keras.utils.set_random_seed(0)
    return kh.GPT2Backbone(vocabulary_size=8, num_layers=3, num_heads=2, hidden_dim=16, intermediate_dim=32,
                           max_sequence_length=16, name=name)


def causal_lm():
    """A tiny GPT2CausalLM with a tokenizer from an in-memory vocabulary (nothing downloaded)."""
    vocabulary = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "\u0120a": 4, "\u0120b": 5, "\u0120c": 6, "ab": 7}
    tokenizer = kh.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b"])
    preprocessor = kh.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=8)
    return kh.GPT2CausalLM(backbone=gpt2_backbone(), preprocessor=preprocessor)


def attention_net(name="attention"):
    """A plain Keras model with an Embedding, a MultiHeadAttention and Dense layers."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(20, 8, name="embed")(tokens)
    x = L.MultiHeadAttention(2, 4, name=name)(x, x)
    x = L.LayerNormalization(name="norm")(x)
    x = L.Dense(8, activation="relu", name="ffn")(x)
    return keras.Model(tokens, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="pool")(x)), name="tiny")


@pytest.fixture(scope="module")
def backbone():
    return gpt2_backbone()


@pytest.fixture(scope="module")
def lm():
    return causal_lm()


def batch():
    return {"token_ids": np.array([[1, 2, 3, 4, 0, 0, 0, 0], [5, 6, 7, 1, 2, 0, 0, 0]], "int32"),
            "padding_mask": np.array([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]], "int32")}


def run(model, x):
    return to_numpy(model(x))


def state(session):
    """What an error must leave as it was."""
    return session.model, list(session.history), session.cursor, session.steps


def trainable_names(model):
    return sorted(v.path for v in model.trainable_variables)


def lora_of(model):
    return kerasnb.lora.lora_layers(model)


class TestRows:
    def test_blocks_are_rows_with_their_parameter_counts(self, backbone):
        """Each transformer block is one row, with the parameters of everything inside it."""
        session = Session(backbone)
        rows = {row.layer: row for row in session.report}
        for i in range(3):
            block = backbone.get_layer(f"transformer_layer_{i}")
            assert rows[f"transformer_layer_{i}"].params == block.count_params() > 0
            assert rows[f"transformer_layer_{i}"].type == "TransformerDecoder"

    def test_a_task_shows_its_backbone_as_a_group_and_the_tied_embedding_once(self, lm):
        session = Session(lm)
        rows = {row.layer: row for row in session.report}
        assert rows["gpt2_backbone"].is_container
        assert rows["gpt2_backbone"].params == lm.backbone.count_params()
        assert rows[B + "transformer_layer_1"].params == lm.backbone.get_layer("transformer_layer_1").count_params()
        # The head reuses the backbone's embedding: one row, before and after an edit, as the core reports it.
        assert [r for r in rows if r.endswith("token_embedding")] == [B + "token_embedding"]
        session.delete(B + "transformer_layer_2")
        assert [r.layer for r in session.report if r.layer.endswith("token_embedding")] == [B + "token_embedding"]

    def test_the_panel_draws_the_backbone_group_and_block_parameters(self, lm):
        editor = Editor(lm)
        assert row_of(editor, "gpt2_backbone")["group"]
        block = lm.backbone.get_layer("transformer_layer_0").count_params()
        assert row_of(editor, B + "transformer_layer_0")["params"] == block
        editor.table.collapsed = ["gpt2_backbone"]  # folding the backbone lists its row, not the rows inside
        assert not any(r["path"].startswith(B) for r in listed(editor)) and row_of(editor, "gpt2_backbone")
        editor.layer_picker.value = B + "transformer_layer_0"  # a row inside, selected elsewhere: the group opens
        assert editor.table.collapsed == [] and editor.table.selected == B + "transformer_layer_0"


class TestDropBlock:
    def test_delete_availability_follows_the_core_on_every_row(self, backbone):
        """The session offers deleting a row exactly where kerasnb.delete does it; for a layer taking
        several tensors, the reason it gives is the core's own."""
        session = Session(backbone)
        several = {"transformer_layer_0", "transformer_layer_1", "transformer_layer_2", "embeddings_add"}
        for path in session.original_rows:
            actions = session.answers.row_actions(path)
            try:
                kerasnb.delete(backbone, path)
            except kerasnb.SurgeryError as error:
                assert not actions.can_delete, path
                if path in several:
                    assert actions.delete_reason == kerasnb.errors.first_line(error), path
            else:
                assert actions.can_delete, (path, actions.delete_reason)

    def test_a_block_with_a_mask_is_dropped_as_the_core_drops_it(self, backbone):
        session = Session(backbone)
        actions = session.answers.row_actions("transformer_layer_1")
        assert actions.delete_label == "Drop block" and actions.can_delete and actions.delete_reason == ""
        assert "Remove (identity)" in actions.offered
        assert session.answers.row_actions("layer_norm").delete_label == "Delete"
        session.delete("transformer_layer_1")
        assert [s.describe() for s in session.steps] == ["drop block 'transformer_layer_1'"]
        assert session.report.status("transformer_layer_1") == "removed"
        assert any("passes on its input from 'transformer_layer_0'" in n for n in session.notes)
        direct = kerasnb.delete(backbone, "transformer_layer_1").model
        np.testing.assert_array_equal(run(session.model, batch()), run(direct, batch()))

    def test_an_add_with_two_equal_inputs_says_the_core_s_reason(self, backbone):
        actions = Session(backbone).answers.row_actions("embeddings_add")
        assert not actions.can_delete and "it is not clear which one to pass on" in actions.delete_reason

    def test_dropping_blocks_of_a_task_keeps_the_task(self, lm):
        session = Session(lm)
        session.delete(B + "transformer_layer_1")
        session.delete(B + "transformer_layer_2")
        assert type(session.model) is type(lm) and session.model.backbone.num_layers == 1
        assert isinstance(session.model.generate("a b", max_length=8), str)
        assert len(session.history) == 3 and lm.backbone.num_layers == 3
        session.undo()
        assert session.model.backbone.num_layers == 2

    def test_apply_to_all_blocks_like_this_one_follows_the_core_too(self, backbone):
        session = Session(backbone)
        session.delete("transformer_layer_0")
        like = session.answers.row_actions("transformer_layer_0").like
        assert like.can_apply and like.type == "TransformerDecoder" and like.others == 2
        assert session.replace_all("transformer_layer_0") == ("transformer_layer_1", "transformer_layer_2")
        assert set(session.report.with_status("removed")) == {f"transformer_layer_{i}" for i in range(3)}


class TestLoRARows:
    def test_a_block_row_means_its_attention_query_and_value(self, backbone):
        info = Session(backbone).answers.lora_info("transformer_layer_1")
        assert isinstance(info, LoraInfo) and info.can_enable and not info.can_disable
        assert set(info.targets) == {"transformer_layer_1/self_attention/query",
                                     "transformer_layer_1/self_attention/value"}
        assert info.what == "its 2 attention projection(s) (query, value)"

    def test_a_dense_or_embedding_row_means_the_layer_and_other_rows_say_why_not(self):
        session = Session(attention_net())
        assert session.answers.lora_info("ffn").targets == ("ffn",)
        assert session.answers.lora_info("embed").what == "this Embedding layer"
        assert set(session.answers.lora_info("attention").targets) == {"attention/query", "attention/value"}
        norm = session.answers.lora_info("norm")
        assert not norm.can_enable and "'norm' is a LayerNormalization" in norm.reason
        assert "no weights" in session.answers.lora_info("tokens").reason

    def test_lora_on_a_block_only_the_factors_train_and_outputs_stay(self, backbone):
        session = Session(backbone)
        assert session.enable_lora("transformer_layer_1", rank=4) == "transformer_layer_1"
        assert lora_of(session.model) == {"transformer_layer_1/self_attention/query": 4,
                                          "transformer_layer_1/self_attention/value": 4}
        assert [s.describe() for s in session.steps] == [
            "LoRA rank 4 on the attention projections (query, value) of 'transformer_layer_1': 2 layers"]
        assert sorted(n.rsplit("/", 1)[-1] for n in trainable_names(session.model)) == [
            "lora_kernel_a", "lora_kernel_a", "lora_kernel_b", "lora_kernel_b"]
        np.testing.assert_array_equal(run(session.model, batch()), run(backbone, batch()))
        assert session.report.status("transformer_layer_1") == "kept"
        assert "LoRA rank 4" in session.report.row("transformer_layer_1").reason
        info = session.answers.lora_info("transformer_layer_1")
        assert info.rank == 4 and info.can_disable and len(info.on) == 2
        assert lora_of(backbone) == {} and len(backbone.trainable_variables) > 4  # the original is untouched

    def test_the_same_rank_again_is_refused_another_rank_changes_the_step(self, backbone):
        session = Session(backbone)
        session.enable_lora("transformer_layer_0", 2)
        before = state(session)
        with pytest.raises(kerasnb.InvalidEdit, match="LoRA rank 2 is on 'transformer_layer_0' already"):
            session.enable_lora("transformer_layer_0", 2)
        assert state(session) == before
        session.enable_lora("transformer_layer_0", 8)
        assert len(session.steps) == 1 and set(lora_of(session.model).values()) == {8}

    def test_off_takes_the_row_s_step_back_and_undo_redo_reset_work(self, backbone):
        session = Session(backbone)
        session.enable_lora("transformer_layer_0", 2)
        session.disable_lora("transformer_layer_0")
        assert lora_of(session.model) == {} and session.steps == () and len(session.history) == 3
        assert len(session.model.trainable_variables) == len(backbone.trainable_variables)
        session.undo()
        assert len(lora_of(session.model)) == 2
        session.redo()
        assert lora_of(session.model) == {}
        session.undo()
        session.reset()
        assert session.steps == () and lora_of(session.model) == {}

    @pytest.mark.parametrize("call, error, words", [
        (lambda s: s.enable_lora("transformer_layer_0", 0), kerasnb.InvalidEdit, "rank is a whole number"),
        (lambda s: s.enable_lora("transformer_layer_0", True), kerasnb.InvalidEdit, "rank is a whole number"),
        (lambda s: s.enable_lora("transformer_layer_0", "4"), kerasnb.InvalidEdit, "Received: rank='4'"),
        (lambda s: s.enable_lora("layer_norm", 4), kerasnb.InvalidEdit, "LoRA cannot go on 'layer_norm'"),
        (lambda s: s.enable_lora("transformer_layer_0", 1000), kerasnb.InvalidEdit, "larger than every dimension"),
        (lambda s: s.enable_lora(None, 4), kerasnb.InvalidEdit, "No layer is selected"),
        (lambda s: s.enable_lora("transformer_layr_0", 4), kerasnb.LayerNotFound, "transformer_layer_0"),
        (lambda s: s.disable_lora("transformer_layer_0"), kerasnb.InvalidEdit, "LoRA is not on here"),
        (lambda s: s.enable_lora_attention(4, "every"), kerasnb.InvalidEdit, "projections is one of"),
        (lambda s: s.disable_lora_attention(), kerasnb.InvalidEdit, "no \u201cLoRA on attention\u201d step"),
        (lambda s: s.merge_lora(), kerasnb.InvalidEdit, "no layer with LoRA enabled"),
    ])
    def test_bad_input_is_refused_and_the_history_stays(self, backbone, call, error, words):
        session = Session(backbone)
        session.delete("transformer_layer_2")
        before = state(session)
        with pytest.raises(error, match=re.escape(words)):
            call(session)
        assert state(session) == before


class TestLoRAWholeModel:
    def test_every_attention_projection_and_a_row_s_own_rank_stays(self, backbone):
        session = Session(backbone)
        session.enable_lora("transformer_layer_1", 4)
        answer = session.answers.model_actions()
        assert answer.can_lora and answer.lora_projections == {"query, value": 6, "query, key, value, output": 12}
        session.enable_lora_attention(rank=2)
        on = lora_of(session.model)
        assert len(on) == 6 and on["transformer_layer_1/self_attention/query"] == 4
        assert on["transformer_layer_0/self_attention/value"] == 2
        assert any("has LoRA already (rank 4); left as it is" in n for n in session.notes)
        block0 = session.answers.lora_info("transformer_layer_0")
        assert not block0.can_enable and "from the step" in block0.reason
        assert not block0.can_disable and "take that back instead" in block0.off_reason
        answer = session.answers.model_actions()
        assert (answer.lora_rank, answer.lora_which, answer.lora_on) == (2, "query, value", 6)
        assert answer.trainable_params == sum(int(np.prod(v.shape)) for v in session.model.trainable_variables)
        assert all("lora_kernel" in n for n in trainable_names(session.model))

    def test_all_four_projections_then_off(self, backbone):
        session = Session(backbone)
        session.enable_lora_attention(rank=2, projections="query, key, value, output")
        assert len(lora_of(session.model)) == 12
        session.disable_lora_attention()
        assert lora_of(session.model) == {} and session.steps == ()

    def test_an_earlier_step_changed_works_the_lora_step_out_again(self, backbone):
        session = Session(backbone)
        session.delete("transformer_layer_1")
        session.enable_lora_attention(rank=2)
        assert len(lora_of(session.model)) == 4
        session.replace("transformer_layer_1", "Keep")  # the block is back: LoRA reaches it too
        assert len(lora_of(session.model)) == 6 and len(session.steps) == 1

    def test_merge_folds_the_factors_and_everything_trains_again(self, backbone):
        session = Session(backbone)
        session.enable_lora_attention(rank=2)
        session.merge_lora()
        assert lora_of(session.model) == {}
        assert session.report.status("transformer_layer_0") == "folded"
        assert session.steps[-1].describe() == "merge LoRA into the kernels of 6 layer(s)"
        assert len(session.model.trainable_variables) == len(backbone.trainable_variables)
        np.testing.assert_allclose(run(session.model, batch()), run(backbone, batch()), rtol=1e-5, atol=1e-5)
        assert not session.answers.model_actions().can_merge
        session.undo()
        assert len(lora_of(session.model)) == 6

    def test_the_edits_replay_the_model(self, backbone):
        session = Session(backbone)
        session.delete("transformer_layer_2")
        session.enable_lora("transformer_layer_0", 2)
        again = kerasnb.apply(backbone, list(session.edits)).model
        assert lora_of(again) == lora_of(session.model)
        np.testing.assert_array_equal(run(again, batch()), run(session.model, batch()))

    def test_lora_on_a_task_keeps_the_task_and_generates(self, lm):
        session = Session(lm)
        session.delete(B + "transformer_layer_2")
        session.enable_lora_attention(rank=2)
        assert type(session.model) is type(lm)
        assert set(lora_of(session.model)) == {f"{B}transformer_layer_{i}/self_attention/{p}"
                                               for i in (0, 1) for p in ("query", "value")}
        assert all("lora_kernel" in n for n in trainable_names(session.model))
        assert isinstance(session.model.generate("a b", max_length=8), str)

    def test_merge_on_a_task_keeps_the_task(self, lm):
        session = Session(lm)
        session.enable_lora(B + "transformer_layer_0", 2)
        session.merge_lora()
        assert type(session.model) is type(lm) and lora_of(session.model) == {}
        assert session.report.status(B + "transformer_layer_0") == "folded"
        assert len(session.model.trainable_variables) == len(lm.trainable_variables)
        assert isinstance(session.model.generate("a b", max_length=8), str)


def test_lora_on_bert_attention_past_its_raw_operations():
    """BERT's graph has operations that are not layers (a GetItem for the pooled output)."""
    keras.utils.set_random_seed(0)
    bert = kh.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                           max_sequence_length=12)
    session = Session(bert)
    assert session.answers.model_actions().lora_projections["query, value"] == 4
    assert session.answers.row_actions("transformer_layer_1").delete_label == "Drop block"
    session.enable_lora_attention(rank=2)
    assert session.answers.model_actions().lora_on == 4 and len(lora_of(session.model)) == 4


@pytest.fixture
def editor(backbone):
    return Editor(backbone)


class TestPanel:
    def test_drop_block_from_the_panel(self, lm):
        editor = Editor(lm)
        editor.layer_picker.value = B + "transformer_layer_1"
        assert editor.delete_button.description == "Drop block" and not editor.delete_button.disabled
        assert "hidden states" in editor.delete_button.tooltip
        editor.delete_button.click()
        assert editor.message_text.startswith(f"Done: drop block '{B}transformer_layer_1'.")
        assert type(editor.model) is type(lm) and editor.model.backbone.num_layers == 2
        assert row_of(editor, B + "transformer_layer_1")["choice"] == "block dropped"
        editor.layer_picker.value = B + "embeddings_add"
        assert editor.delete_button.description == "Delete" and editor.delete_button.disabled
        assert "not clear which one to pass on" in editor.delete_button.tooltip

    def test_grow_a_block_from_the_panel_and_undo_it(self, lm):
        editor = Editor(lm)
        x = {"token_ids": np.array([[1, 2, 3, 0]], "int32"), "padding_mask": np.array([[1, 1, 1, 0]], "int32")}
        editor.layer_picker.value = B + "embeddings_add"
        assert editor.grow_button.disabled and "cannot set to give zero" in editor.grow_button.tooltip
        editor.layer_picker.value = B + "transformer_layer_1"
        assert not editor.grow_button.disabled
        editor.grow_button.click()
        assert editor.message_text.startswith("Done: grow a block after"), editor.message_text
        assert type(editor.model) is type(lm) and editor.model.backbone.num_layers == 4
        new = row_of(editor, B + "transformer_layer_1_copy")
        assert new["status"] == "new" and "output projections zero" in new["reason"]
        np.testing.assert_array_equal(to_numpy(editor.model(x)), to_numpy(lm(x)))
        editor.undo_button.click()
        assert editor.model.backbone.num_layers == 3 and lm.backbone.num_layers == 3

    def test_lora_on_a_row_then_off(self, editor):
        editor.layer_picker.value = "transformer_layer_1"
        assert not editor.lora_button.disabled and editor.lora_off_button.disabled
        assert "would go on its 2 attention projection(s)" in editor.lora_info.value
        editor.lora_rank.value = 4
        assert editor.lora_button.description == "LoRA (rank 4)"
        editor.lora_button.click()
        assert editor.message_text.startswith(
            "Done: LoRA rank 4 on the attention projections (query, value) of 'transformer_layer_1': 2 layers.")
        assert "LoRA on 2 layer(s) here (rank 4)" in editor.lora_info.value
        assert "LoRA rank 4" in choices_text(editor) and not editor.lora_off_button.disabled
        editor.lora_off_button.click()
        assert editor.message_text.startswith("Took back: LoRA rank 4")
        assert lora_of(editor.model) == {} and len(editor.history) == 3
        editor.undo_button.click()
        assert editor.message_text.startswith("Undo. Done: LoRA rank 4") and len(lora_of(editor.model)) == 2

    def test_a_row_without_lora_says_why_and_a_bad_rank_is_said(self, editor):
        editor.layer_picker.value = "layer_norm"
        assert editor.lora_button.disabled and "is a LayerNormalization" in editor.lora_button.tooltip
        editor.layer_picker.value = "transformer_layer_0"
        editor.lora_rank.value = 0
        editor.lora_button.click()  # a click never raises into the front end
        assert "kn-error" in editor.message.value and "rank is a whole number" in editor.message_text
        assert editor.session.steps == () and len(editor.history) == 1
        with pytest.raises(kerasnb.InvalidEdit):
            editor.enable_lora(-1)

    def test_lora_on_attention_and_merge_from_the_whole_model_row(self, editor, backbone):
        assert editor.merge_button.disabled and "turn it on first" in editor.merge_button.tooltip
        assert editor.lora_box.layout.display == "none"
        editor.lora_all_button.click()
        assert editor.lora_box.layout.display is None and "Apply LoRA" in editor.message_text
        editor.lora_all_rank.value = 2
        editor.lora_all_apply.click()
        assert editor.message_text.startswith(
            "Done: LoRA rank 2 on the attention projections (query, value): 6 layers.")
        trainable = sum(int(np.prod(v.shape)) for v in editor.model.trainable_variables)
        assert f"6 layer(s) with LoRA; {trainable:,} parameters train" in editor.lora_all_info.value
        assert not editor.merge_button.disabled and not editor.lora_all_off.disabled
        editor.merge_button.click()
        assert editor.message_text == "Done: merge LoRA into the kernels of 6 layer(s)."
        assert lora_of(editor.model) == {} and editor.report.status("transformer_layer_2") == "folded"
        editor.undo_button.click()
        editor.lora_all_off.click()
        assert editor.message_text.startswith("Took back: LoRA rank 2 on the attention projections")
        assert editor.steps == [] and len(editor.history) == 3  # the merge after it was undone: gone from the history

    def test_a_refused_merge_says_why_and_keeps_the_history(self, editor):
        with pytest.raises(kerasnb.InvalidEdit):
            editor.merge_lora()
        assert "kn-error" in editor.message.value and "no layer with LoRA enabled" in editor.message_text
        assert len(editor.history) == 1

    def test_names_from_the_model_are_text(self):
        editor = show_editor(attention_net(EVIL))
        editor.layer_picker.value = EVIL
        editor.lora_button.click()
        assert f"'{EVIL}'" in editor.message_text and len(lora_of(editor.model)) == 2
        values = [editor.message.value, editor.lora_info.value, editor.history_view.value, editor.lora_all_info.value]
        assert row_of(editor, EVIL)["name"] == EVIL  # the table gets text; the browser sets it as text
        assert all("<img" not in v for v in values)
        assert any("&lt;img src=x onerror=alert(1)&gt;" in v for v in values)
        editor.close()
