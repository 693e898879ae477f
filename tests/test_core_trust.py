"""Trust: a failed edit never breaks the session, notes are safe in HTML, every bad input is typed."""

import keras
import numpy as np
import pytest
from conftest import assert_unchanged, layer_output, sample_input, snapshot, to_numpy
from keras import layers as L
from keras.src.backend.common import global_state

import kerasnb


def mlp():
    inputs = keras.Input((4,), name="x")
    h = L.Dense(3, name="d1")(inputs)
    return keras.Model(inputs, L.Dense(2, name="d2")(h), name="m")


@keras.saving.register_keras_serializable(package="kerasnb_trust")
class FailingInit(keras.initializers.Initializer):
    """An initializer that raises what it was given: an error, or the notebook's interrupt."""

    def __init__(self, kind="error"):
        self.kind = kind

    def __call__(self, shape, dtype=None):
        raise KeyboardInterrupt() if self.kind == "interrupt" else RuntimeError("initializer failed")

    def get_config(self):
        return {"kind": self.kind}


@keras.saving.register_keras_serializable(package="kerasnb_trust")
class InterruptedBuild(L.Layer):
    """A layer whose build is interrupted (KeyboardInterrupt while Keras makes its variables)."""

    def build(self, input_shape):
        self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="w")
        raise KeyboardInterrupt()

    def call(self, x):
        return x


def pending_variables():
    return list(global_state.get_global_attribute("uninitialized_variables") or [])


class TestFailedRebuildLeavesKerasAsItWas:
    @pytest.mark.parametrize("make_edit, raised", [
        (lambda: kerasnb.Replace("d1", L.Dense(3, kernel_initializer=FailingInit("error"))), kerasnb.SurgeryError),
        (lambda: kerasnb.Replace("d1", L.Dense(3, kernel_initializer=FailingInit("interrupt"))), KeyboardInterrupt),
        (lambda: kerasnb.Replace("d1", InterruptedBuild()), KeyboardInterrupt),
        (lambda: kerasnb.Configure("d1", {"dtype": "int32"}), kerasnb.SurgeryError),
    ], ids=["initializer raises", "interrupt in initializer", "interrupt in build", "float to int"])
    def test_next_edit_works(self, make_edit, raised):
        """After any failure inside a rebuild, Keras's global state is as before and kerasnb works."""
        model = mlp()
        before = snapshot(model)
        pending = pending_variables()
        with pytest.raises(raised):
            kerasnb.apply(model, [make_edit()])
        assert pending_variables() == pending
        assert global_state.get_global_attribute("stateless_scope") is None
        with keras.StatelessScope():  # raised on exit before the fix
            pass
        result = kerasnb.replace(model, "d1", L.Dense(3, name="fresh"))
        assert result.report.status("fresh") == "new"
        other = kerasnb.configure(mlp(), "d2", units=5)
        assert other.report.status("d2") == "reinitialized"
        assert_unchanged(model, before)

    def test_variable_that_fails_to_initialise_is_named(self):
        model = mlp()
        with pytest.raises(kerasnb.InvalidEdit, match=r"could not be initialised: RuntimeError: initializer failed"):
            kerasnb.replace(model, "d1", L.Dense(3, kernel_initializer=FailingInit("error"), name="bad"))


class TestDtypeChange:
    def test_float16_casts_the_kept_weights_and_says_so(self):
        model = mlp()
        x = sample_input(model)
        result = kerasnb.configure(model, "d1", dtype="float16")
        row = result.report.row("d1")
        assert row.status == "kept_input_changed"
        assert "kernel, bias cast float32 -> float16" in row.reason
        assert "dtype: 'float32' -> 'float16'" in row.reason
        layer = result.model.get_layer("d1")
        assert [v.dtype for v in layer.weights] == ["float16", "float16"]
        np.testing.assert_array_equal(to_numpy(layer.kernel), to_numpy(model.get_layer("d1").kernel).astype("float16"))
        np.testing.assert_allclose(to_numpy(result.model(x)), to_numpy(model(x)), atol=2e-2)

    def test_float_to_int_is_refused_and_says_what_works(self):
        model = mlp()
        before = snapshot(model)
        with pytest.raises(kerasnb.InvalidEdit) as info:
            kerasnb.configure(model, "d1", dtype="int32")
        text = str(info.value)
        assert "'kernel' holds float32 values" in text and "int32" in text
        assert "Float dtypes (float16, bfloat16, float32, float64) can be cast" in text
        assert_unchanged(model, before)


class TestNotesAreEscaped:
    def test_renamed_output_note_with_a_hostile_name(self):
        """A note quoting a layer name from a model file cannot inject markup into the notebook."""
        hostile = "d2<img src=x onerror=alert(1)>"
        inputs = keras.Input((4,), name="x")
        model = keras.Model(inputs, L.Dense(2, name=hostile)(L.Dense(3, name="d1")(inputs)))
        model.compile(loss={hostile: "mse"})
        result = kerasnb.replace(model, hostile, L.Dense(2, name="out<script>alert(2)<\\script>"))
        assert result.notes and hostile in result.notes[0]  # the plain note keeps the real name
        page = result._repr_html_()
        assert "<img" not in page and "<script" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page


class NoConfigLayer(L.Layer):
    """A custom layer that takes a function, as many notebooks write them: no get_config."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


class ArrayLayer(L.Layer):
    """A custom layer that keeps an array it was given, and has no get_config."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * keras.ops.convert_to_tensor(self.scale)  # a torch tensor times a numpy array warns


class BrokenConfigLayer(L.Layer):
    """A layer whose get_config itself raises, as some published model zoos ship them."""

    def get_config(self):
        raise AttributeError("'BrokenConfigLayer' object has no attribute 'units'")

    def call(self, x):
        return x


def model_with(layer):
    inputs = keras.Input((4,), name="x")
    return keras.Model(inputs, L.Dense(2, name="d2")(layer(inputs)), name="m")


class TestBadInputIsTyped:
    @pytest.mark.parametrize("call, error, words", [
        (lambda m: kerasnb.apply(m, None), kerasnb.InvalidEdit, ["an edit or a list of edits", "Received: None"]),
        (lambda m: kerasnb.apply(m, 5), kerasnb.InvalidEdit, ["an edit or a list of edits", "Received: 5"]),
        (lambda m: kerasnb.apply(m, "d1"), kerasnb.InvalidEdit, ["Received: 'd1'"]),
        (lambda m: kerasnb.apply(m, [kerasnb.Configure("d1", 5)]), kerasnb.InvalidEdit,
         ["dict of config options", "Received: changes=5"]),
        (lambda m: kerasnb.apply(m, [kerasnb.Configure("d1", ["units"])]), kerasnb.InvalidEdit,
         ["Received: changes=['units']"]),
        (lambda m: kerasnb.prune(m, "d1", channels="a"), kerasnb.InvalidEdit,
         ["list of channel indices", "Received: channels='a'"]),
        (lambda m: kerasnb.prune(m, "d1", channels=2), kerasnb.InvalidEdit, ["Received: channels=2"]),
        (lambda m: kerasnb.prune(m, "d1", channels=[1.5]), kerasnb.InvalidEdit,
         ["whole numbers", "1.5 is a float", "Received: channels=[1.5]"]),
        (lambda m: kerasnb.set_trainable(m, "d1", "False"), kerasnb.InvalidEdit,
         ["True (unfreeze) or False (freeze)", "Received: trainable='False'"]),
        (lambda m: kerasnb.replace(m, "d1", lambda x: None), kerasnb.InvalidEdit,
         ["returned None", "must return the Keras tensor"]),
        (lambda m: kerasnb.replace(m, "d1", lambda x: 3), kerasnb.InvalidEdit, ["returned 3 of type int"]),
        (lambda m: kerasnb.replace(m, "d1", NoConfigLayer(keras.ops.relu, name="fn_layer")), kerasnb.UnsupportedLayer,
         ["The replacement 'fn_layer' (NoConfigLayer)", "must override `get_config()`", "What would work"]),
        (lambda m: kerasnb.replace(m, "d1", BrokenConfigLayer(name="broken")), kerasnb.UnsupportedLayer,
         ["'broken' (BrokenConfigLayer)", "has no attribute 'units'"]),
        (lambda m: kerasnb.configure(m, "d1", units=-5), kerasnb.InvalidEdit,
         ["expected a positive integer", "Received: changes={'units': -5}"]),
        (lambda m: kerasnb.configure(m, "d1", name="d2"), kerasnb.NameClash,
         ["Cannot rename 'd1' to 'd2'", "already has a layer named 'd2'", "e.g. 'd2_1'"]),
    ], ids=["apply None", "apply 5", "apply str", "Configure 5", "Configure list", "channels str", "channels int",
            "channels float", "trainable str", "callable None", "callable int", "no get_config",
            "get_config raises", "negative units", "name clash"])
    def test_error_names_what_was_received_and_what_works(self, call, error, words):
        model = mlp()
        before = snapshot(model)
        with pytest.raises(error) as info:
            call(model)
        assert isinstance(info.value, kerasnb.SurgeryError)
        for word in words:
            assert word in str(info.value)
        assert "using config=" not in str(info.value)  # Keras's reason is kept, the config dump is not
        assert_unchanged(model, before)

    @pytest.mark.parametrize("layer", [NoConfigLayer(keras.ops.relu, name="fn_layer"), BrokenConfigLayer(name="broken")],
                             ids=["no get_config", "get_config raises"])
    def test_untouched_layer_without_a_config_is_made_from_its_arguments(self, layer):
        """Every constructor argument is kept on the layer: it is made again from them, faithfully."""
        model = model_with(layer)
        x = sample_input(model)
        before = snapshot(model)
        result = kerasnb.configure(model, "d2", name="head")
        assert result.report.status(layer.name) == "no_weights" and result.report.status("head") == "kept"
        np.testing.assert_array_equal(to_numpy(result.model(x)), to_numpy(model(x)))
        assert_unchanged(model, before)

    def test_layer_without_a_config_holding_an_array_is_refused(self):
        """An argument that would be shared with the user's model (an array) is no faithful route."""
        model = model_with(ArrayLayer(np.ones(4, "float32"), name="array_layer"))
        before = snapshot(model)
        with pytest.raises(kerasnb.UnsupportedLayer, match=r"Layer 'array_layer' \(ArrayLayer\)"):
            kerasnb.configure(model, "d2", units=3)
        assert_unchanged(model, before)


class TestSequentialStaysSequential:
    def test_nested_sequential(self, make):
        model = make("nested")
        x = sample_input(model)
        result = kerasnb.replace(model, "encoder/inner_b", L.Dense(4, name="inner_b2"))
        encoder = result.model.get_layer("encoder")
        assert isinstance(encoder, keras.Sequential)
        assert [l.name for l in encoder.layers] == ["inner_a", "inner_b2"]
        assert result.report.status("encoder/inner_a") == "kept"
        assert result.report.row("encoder").type == "Sequential"
        assert result.report.with_status("new") == ["encoder/inner_b2"]
        assert to_numpy(result.model(x)).shape == (3, 2)

    def test_round_trip_keeps_the_config(self, make):
        model = make("sequential")
        result = kerasnb.apply(model, [])
        assert isinstance(result.model, keras.Sequential)
        assert result.model.get_config() == model.get_config()

    def test_layers_read_the_new_sequential_graph(self, make):
        """`layer.output` of a rebuilt Sequential's layer belongs to that model's own graph."""
        model = make("sequential")
        x = sample_input(model)
        result = kerasnb.configure(model, "s2", units=4)
        assert result.report.status("s1") == "kept"
        np.testing.assert_array_equal(layer_output(result.model, "s1", x), layer_output(model, "s1", x))

    def test_a_branching_edit_gives_a_functional_model(self, make):
        model = make("sequential")
        result = kerasnb.replace(model, "sdrop", lambda x: L.Add(name="twice")([x, x]))
        assert not isinstance(result.model, keras.Sequential)
        assert result.report.status("twice") == "new"


def test_changing_the_original_afterwards_leaves_the_new_model_alone():
    """The new model owns its values: training or assigning the user's model does not reach it."""
    model = mlp()
    result = kerasnb.configure(model, "d2", units=4)
    kept = to_numpy(result.model.get_layer("d1").kernel).copy()
    model.get_layer("d1").kernel.assign_add(np.ones((4, 3), "float32"))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((8, 4), "float32"), np.ones((8, 2), "float32"), epochs=1, verbose=0)
    np.testing.assert_array_equal(to_numpy(result.model.get_layer("d1").kernel), kept)
