"""kerasnb.quantize and quantization_sensitivity: Keras's own quantize() on kerasnb's copy.

One small model with an Embedding, an EinsumDense, a Conv1D (which Keras cannot quantize) and
Dense layers, built once; the original is checked untouched after every call.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb.compare import BrokenPromiseWarning

TOKENS = np.random.default_rng(0).integers(0, 40, size=(6, 4)).astype("int32")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    x = L.Embedding(40, 16, name="embed")(tokens)
    x = L.EinsumDense("abc,cd->abd", output_shape=(4, 32), bias_axes="d", name="ein")(x)
    x = L.Conv1D(8, 3, padding="same", name="conv")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(64, activation="relu", name="hidden")(x)
    return keras.Model(tokens, L.Dense(5, name="out")(x), name="small")


@pytest.fixture(scope="module")
def before(model):
    """What the original computes and holds before any call: checked untouched afterwards."""
    return (keras.ops.convert_to_numpy(model(TOKENS)), [(v.path, v.dtype) for v in model.weights],
            {layer.name: len(layer._inbound_nodes) for layer in model.layers})


@pytest.fixture(scope="module")
def int8(model):
    return kerasnb.quantize(model, "int8")


def out(m, x=TOKENS):
    return keras.ops.convert_to_numpy(m(x))


def assert_untouched(model, before):
    outputs, variables, nodes = before
    np.testing.assert_array_equal(out(model), outputs)
    assert [(v.path, v.dtype) for v in model.weights] == variables
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == nodes
    assert all(layer.quantization_mode is None for layer in model.layers)


def test_int8_statuses_bytes_and_drift(model, before, int8):
    report = int8.report
    assert report.with_status("quantized") == ["embed", "ein", "hidden", "out"]
    assert report.status("conv") == "kept_input_changed"  # Keras has no quantized convolution
    assert report.row("hidden").reason == "int8: kernel 8.0 KB -> 2.0 KB (+ scales 256 B)"
    assert report.row("embed").reason.startswith("int8: embeddings 2.5 KB -> 640 B")
    frame = report.to_frame().set_index("layer")
    assert frame.loc["hidden", "bytes_before"] == 32 * 64 * 4 + 64 * 4  # kernel and bias in float32
    assert frame.loc["hidden", "bytes_after"] == 32 * 64 + 64 * 4 + 64 * 4  # int8 kernel, bias, one scale per unit
    assert frame.loc["conv", "bytes_after"] == frame.loc["conv", "bytes_before"]
    assert int8.model.get_layer("hidden").kernel.dtype == "int8"
    notes = " ".join(int8.notes)
    assert "'conv': it is a Conv1D" in notes and "the model's" in notes and "->" in notes
    drift = np.max(np.abs(out(int8.model) - before[0])) / np.max(np.abs(before[0]))
    assert 0 < drift < 0.05, drift
    assert_untouched(model, before)


def test_compare_shows_drift_as_expected_not_as_a_broken_promise(int8):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BrokenPromiseWarning)
        frame = int8.compare(TOKENS).set_index("layer")
    assert frame.loc["hidden", "status"] == "quantized" and frame.loc["hidden", "max_abs_diff"] > 0
    assert not frame["broken_promise"].any()


def test_saves_and_loads_computing_the_same(int8, tmp_path):
    path = tmp_path / "int8.keras"
    int8.model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(out(loaded), out(int8.model))
    assert loaded.get_layer("ein").quantization_mode == "int8"


def test_a_later_edit_keeps_the_quantized_layers(int8):
    again = kerasnb.insert(int8.model, L.Dropout(0.1, name="drop"), after="hidden")
    assert again.report.status("hidden") == "kept" and again.report.status("embed") == "kept"
    assert again.model.get_layer("hidden").kernel.dtype == "int8"
    np.testing.assert_array_equal(out(again.model), out(int8.model))  # Dropout is the identity in inference


def test_a_dict_of_modes_and_float8_growth(model, before):
    result = kerasnb.quantize(model, {"ein": "int4", "hidden": "float8", "o*": "int8"})
    rows = {r.layer: r for r in result.report}
    assert rows["ein"].reason.startswith("int4: ") and rows["out"].reason.startswith("int8: ")
    assert rows["hidden"].reason.startswith("float8: ") and "grows" in rows["hidden"].reason
    assert rows["hidden"].bytes_after > rows["hidden"].bytes_before
    assert rows["embed"].status == "kept"
    assert any("float8 is Keras's training scheme" in n for n in result.notes)
    with pytest.raises(kerasnb.QuantizationRefused, match="'out' is selected for 'int8' and for 'int4'"):
        kerasnb.quantize(model, {"out": "int8", "o*": "int4"})
    assert_untouched(model, before)


@pytest.mark.parametrize("mode, match, said", [
    ("int8", "conv", "'conv' cannot be quantized: it is a Conv1D"),
    ("float8", "embed", "no float8 mode for embeddings"),
    ("gptq", None, "calibrates the whole model"),
    ("int2", None, "mode is one of 'int8', 'int4', 'float8'"),
    ("int8", ["conv", "flat"], "'conv' cannot be quantized"),
])
def test_refusals_name_what_was_received_and_what_works(model, mode, match, said):
    with pytest.raises(kerasnb.QuantizationRefused, match=said) as caught:
        kerasnb.quantize(model, mode, match=match)
    assert "Received" in str(caught.value)


def test_a_pattern_leaves_what_keras_cannot_quantize_and_says_so(model):
    result = kerasnb.quantize(model, "float8", match="e*")  # embed (no float8) and ein
    assert result.report.with_status("quantized") == ["ein"]
    assert any("'embed': Keras has no float8 mode for embeddings" in n for n in result.notes)


def test_already_quantized_and_lora_layers_are_refused_by_name(model, int8):
    with pytest.raises(kerasnb.QuantizationRefused, match="quantized already"):
        kerasnb.quantize(int8.model, "int4", match="hidden")
    lora = kerasnb.enable_lora(model, "hidden", rank=2).model
    with pytest.raises(kerasnb.QuantizationRefused, match=r"LoRA enabled: merge it first"):
        kerasnb.quantize(lora, "int8", match="hidden")


def test_keep_float_keeps_the_most_drift_per_byte_saved(model, before):
    frame = kerasnb.quantization_sensitivity(model, TOKENS, "int8")
    assert list(frame["layer"]) and set(frame["layer"]) == {"embed", "ein", "hidden", "out"}
    assert list(frame["drift_per_mb_saved"]) == sorted(frame["drift_per_mb_saved"])
    assert (frame["bytes_saved"] > 0).all() and (frame["rel_drift"] > 0).all()
    result = kerasnb.quantize(model, "int8", data=TOKENS, keep_float=1)
    kept = frame["layer"].iloc[-1]
    assert result.report.status(kept) != "quantized"
    assert len(result.report.with_status("quantized")) == 3
    assert any(f"kept float" in n and repr(kept) in n for n in result.notes)
    with pytest.raises(kerasnb.InvalidEdit, match="give data=x"):
        kerasnb.quantize(model, "int8", keep_float=1)
    with_metric = kerasnb.quantization_sensitivity(model, TOKENS, "int4", match="hidden",
                                                   metric=lambda m: float(np.mean(out(m))))
    assert list(with_metric.columns[-2:]) == ["metric", "metric_change"] and "metric" in with_metric.attrs
    assert_untouched(model, before)


def test_undo_in_the_editor_restores_the_float_model(model):
    from kerasnb.editor.session import Session

    session = Session(model)
    session.quantize("hidden", "int4")
    assert session.report.status("hidden") == "quantized"
    assert session.model.get_layer("hidden").quantization_mode == "int4"
    session.quantize_model("int8")  # the rest; 'hidden' stays int4 (its own step), conv is left
    assert session.model.get_layer("ein").quantization_mode == "int8"
    assert session.model.get_layer("hidden").quantization_mode == "int4"
    session.undo()
    session.undo()
    assert session.steps == () and session.model.get_layer("hidden").quantization_mode is None
    session.redo()
    assert session.model.get_layer("hidden").quantization_mode == "int4"


def test_the_panel_quantizes_a_row_and_the_model_and_undo_restores_floats(model):
    editor = kerasnb.show_editor(model, data=TOKENS)
    try:
        editor.select("conv")
        assert editor.quantize_button.disabled and "Conv1D" in editor.quantize_button.tooltip
        editor.select("ein")
        assert not editor.quantize_button.disabled
        editor.quantize_mode.value = "int4"
        editor.quantize_button.click()
        assert editor.report.status("ein") == "quantized" and "int4" in editor.quantize_info.value
        editor.quantize_model_button.click()
        info = editor.quantize_model_info.value
        assert "<table>" in info and "hidden" in info and "\u2192" in info  # the sensitivity table, size before -> after
        editor.quantize_keep.value = 1
        editor.quantize_model_apply.click()
        assert "kept float" in editor.message_text, editor.message_text
        assert editor.model.get_layer("ein").quantization_mode == "int4"
        assert len(editor.report.with_status("quantized")) == 3  # ein (its own step) and two of embed, hidden, out
        editor.undo()
        editor.undo()
        assert editor.edits == () and all(layer.quantization_mode is None for layer in editor.model.layers)
    finally:
        editor.close()


def test_the_python_code_of_a_quantized_model_makes_it_again(int8):
    import kerasnb.codegen

    namespace: dict = {}
    exec(kerasnb.codegen.code(int8.model), namespace)  # noqa: S102 -- kerasnb's own generated source
    again = namespace["model"]
    assert again.get_layer("hidden").quantization_mode == "int8"
    again.set_weights(int8.model.get_weights())
    np.testing.assert_array_equal(out(again), out(int8.model))


def test_a_subclass_of_dense_is_refused_by_name_and_left_by_a_pattern():
    class ScaledDense(L.Dense):
        pass

    inputs = keras.Input((8,), name="x")
    hidden = ScaledDense(8, name="scaled")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="head")(hidden))
    with pytest.raises(kerasnb.QuantizationRefused, match="a subclass of Dense: Keras's quantize"):
        kerasnb.quantize(model, "int8", match="scaled")
    with pytest.raises(kerasnb.QuantizationRefused, match="Nothing in model"):
        kerasnb.quantize(model, "int8", match=ScaledDense)
