"""kerasnb.patch: the patched model computes the replacement in place of the target's output, exactly.

An identity patch changes no bit; patching every call of a layer with what ``trace`` recorded on
input B makes the model compute ``model(B)`` on any input; a function patch refuses to save, an
array patch saves and loads; the panel's "Ablate" is a step whose effect the comparison shows.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from conftest import assert_unchanged, snapshot, to_numpy


@pytest.fixture(scope="module")
def chain():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), name="x")
    x = L.Dense(8, activation="relu", name="dense")(inputs)
    x = L.Dense(8, activation="tanh", name="dense_1")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x), name="chain")


@pytest.fixture(scope="module")
def shared():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,), name="x")
    layer = L.Dense(4, activation="tanh", name="shared")
    h = layer(layer(inputs))
    return keras.Model(inputs, L.Dense(2, name="out")(h), name="shared_net")


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_identity_patch_is_bit_identical_and_reported(chain):
    x = _x((5, 6))
    before = snapshot(chain)
    result = kerasnb.patch(chain, {"dense": lambda h: h})
    np.testing.assert_array_equal(to_numpy(result.model(x)), to_numpy(chain(x)))
    statuses = {row.layer: str(row.status) for row in result.report}
    assert statuses == {"x": "no_weights", "dense": "kept", "dense_patch": "new",
                        "dense_1": "kept_input_changed", "head": "kept_input_changed"}
    assert "replaces the output of 'dense' by a function" in result.report.row("dense_patch").reason
    assert_unchanged(chain, before)  # the model patched has no new call, same weights


def test_every_call_patched_with_the_trace_of_b_gives_model_of_b(chain, shared):
    a, b = _x((4, 6), seed=1), _x((4, 6), seed=2)
    recorded = kerasnb.trace(chain, b, layers="dense_1")["dense_1"]
    patched = kerasnb.patch(chain, {"dense_1": recorded}).model
    np.testing.assert_array_equal(to_numpy(patched(a)), to_numpy(chain(b)))
    # A shared layer: each call its own recorded activation.
    a, b = _x((3, 4), seed=3), _x((3, 4), seed=4)
    on_b = kerasnb.trace(shared, b, layers="shared")
    result = kerasnb.patch(shared, {("shared", 0): on_b[("shared", 0)], ("shared", 1): on_b[("shared", 1)]})
    np.testing.assert_array_equal(to_numpy(result.model(a)), to_numpy(shared(b)))
    assert result.report.with_status("new") == ["shared_patch", "shared_patch_1"]
    # Named alone, a shared layer is patched at every call, with the same replacement.
    zeroed = kerasnb.patch(shared, {"shared": np.zeros(4, "float32")})
    assert len(zeroed.edits) == 2
    np.testing.assert_array_equal(to_numpy(zeroed.model(a)), np.broadcast_to(to_numpy(shared.get_layer("out").bias), (3, 2)))


def test_a_channel_ablation_and_a_broadcast_array(chain):
    x = _x((5, 6), seed=5)
    mask = np.ones(8, "float32")
    mask[[1, 4]] = 0.0
    result = kerasnb.patch(chain, {"dense_1": lambda h: keras.ops.multiply(h, mask)})
    traced = kerasnb.trace(chain, x)
    head = chain.get_layer("head")
    np.testing.assert_allclose(to_numpy(result.model(x)), to_numpy(head(traced["dense_1"] * mask)), atol=1e-6)
    # The patched model traces again: the patch's output is the ablated activation.
    again = kerasnb.trace(result.model, x, layers=["dense_1", "dense_1_patch"])
    np.testing.assert_array_equal(again["dense_1_patch"], again["dense_1"] * mask)
    steer = np.arange(8, dtype="float32")
    steered = kerasnb.patch(chain, {"dense_1": steer}).model  # one array for every example
    np.testing.assert_allclose(to_numpy(steered(x)), to_numpy(head(np.tile(steer, (5, 1)))), atol=1e-6)


def test_positions_replace_only_those_steps():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((5, 3), name="tokens")
    h = L.Dense(4, name="mix")(inputs)
    model = keras.Model(inputs, L.LayerNormalization(name="norm")(h))
    a, b = _x((2, 5, 3), seed=6), _x((2, 5, 3), seed=7)
    on_b = kerasnb.trace(model, b, layers="mix")["mix"]
    patched = kerasnb.patch(model, {"mix": on_b}, positions=[-1]).model
    out, on_a, target = to_numpy(patched(a)), to_numpy(model(a)), to_numpy(model(b))
    np.testing.assert_array_equal(out[:, -1], target[:, -1])  # the last step: B's
    np.testing.assert_array_equal(out[:, :-1], on_a[:, :-1])  # the others: untouched
    with pytest.raises(kerasnb.InvalidEdit, match="no steps axis"):
        kerasnb.patch(keras.Model(inputs, L.Flatten(name="flat")(inputs)), {"flat": lambda h: h}, positions=[0])


def test_save_refuses_a_function_and_keeps_an_array(chain, tmp_path):
    x = _x((3, 6), seed=8)
    with pytest.raises(kerasnb.UnsaveablePatch, match=r"'dense_patch'.*Python function.*What saves: an array patch"):
        kerasnb.patch(chain, {"dense": lambda h: h * 0}).model.save(str(tmp_path / "function.keras"))
    result = kerasnb.patch(chain, {"dense": np.full(8, 0.5, "float32")})
    path = str(tmp_path / "array.keras")
    result.model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(result.model(x)))
    assert not np.allclose(to_numpy(loaded(x)), to_numpy(chain(x)))


def test_wrong_patches_are_refused(chain):
    with pytest.raises(kerasnb.InvalidEdit, match=r"dict \{target: replacement\}"):
        kerasnb.patch(chain, "dense")
    with pytest.raises(kerasnb.IncompatibleShape, match=r"shape \(None, 8\).*Received: an array of shape \(3,\)"):
        kerasnb.patch(chain, {"dense": np.zeros(3, "float32")})
    with pytest.raises(kerasnb.InvalidEdit, match="function of the output tensor"):
        kerasnb.patch(chain, {"dense": "zeros"})
    with pytest.raises(kerasnb.LayerNotFound, match="dense_9"):
        kerasnb.patch(chain, {"dense_9": lambda h: h})


def test_the_panel_ablates_a_row_and_shows_statistics(chain):
    pytest.importorskip("ipywidgets")
    x = _x((16, 6), seed=9)
    editor = kerasnb.show_editor(chain, data=x, probe=x[:4])
    try:
        stats = editor.activation_stats()
        assert set(stats) >= {"dense", "dense_1", "head"}
        assert stats["dense"]["zeros"] == pytest.approx((kerasnb.trace(chain, x)["dense"] == 0).mean())
        assert "kn-stats-row" in editor.stats_view.value and "data-layer='dense_1'" in editor.stats_view.value
        listed = {r["path"]: r for r in editor.table.listed if r["call"] is None}
        assert listed["dense"]["act"]["zeros"] == pytest.approx(stats["dense"]["zeros"])  # the table's column
        editor.stats_order.value = "zeros"  # sorted: most zeros first
        assert editor.stats_view.value.index("data-layer='dense'") < editor.stats_view.value.index("data-layer='head'")
        editor.select("dense_1")
        editor.ablate_button.click()
        assert editor.session.steps[-1].action == "patch", editor.message_text
        assert editor.report.status("dense_1_patch") == "new"
        assert editor.activation_stats()["dense_1_patch"]["zeros"] == 1.0  # traced again after the edit
        assert {r["path"]: r for r in editor.table.listed}["dense_1_patch"]["act"]["zeros"] == 1.0
        frame = editor.session.answers.compare().frame.set_index("layer")
        assert frame.loc["head", "max_abs_diff"] > 0 and frame.loc["dense", "max_abs_diff"] == 0
        editor.undo()
        assert "dense_1_patch" not in editor.activation_stats()
    finally:
        editor.close()
