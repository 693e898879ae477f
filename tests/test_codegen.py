"""kerasnb.codegen.code: the generated source runs and rebuilds the same architecture."""

import keras
import pytest
from conftest import FACTORIES

import kerasnb
from kerasnb.codegen import code


def leaf_layers(model):
    """(type, output shape) of every non-container layer, nested models opened, in order."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(leaf_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(type(layer).__name__)
    return out


def run(source):
    namespace = {}
    exec(compile(source, "<generated>", "exec"), namespace)
    return namespace["model"]


def assert_same_architecture(rebuilt, model):
    assert leaf_layers(rebuilt) == leaf_layers(model)
    assert [tuple(t.shape) for t in rebuilt.outputs] == [tuple(t.shape) for t in model.outputs]
    assert rebuilt.count_params() == model.count_params()
    assert named_layers(rebuilt) == named_layers(model)


def named_layers(model):
    # A Sequential lists no InputLayer; the functional code that rebuilds it does.
    return [l.name for l in model.layers if not isinstance(l, keras.layers.InputLayer)]


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_generated_code_rebuilds_every_test_model(kind, make):
    """Branches, two inputs, raw keras.ops, shared layers, nested and Sequential models all round-trip."""
    model = make(kind)
    rebuilt = run(code(model))
    assert_same_architecture(rebuilt, model)


def test_rebuilt_model_computes_the_same_with_copied_weights(make):
    """Same architecture means the original's weights load and give the same outputs."""
    import numpy as np
    from conftest import sample_input

    model = make("residual")
    rebuilt = run(code(model))
    rebuilt.set_weights(model.get_weights())
    x = sample_input(model)
    a, b = model(x), rebuilt(x)
    for key in ("cls", "reg"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-6)


def test_code_of_an_edited_model_shows_the_edit(make):
    """The seed's first example: replacing dense_1 by Dropout reads as hand-written functional code."""
    result = kerasnb.replace(make("seed_mlp"), "dense_1", keras.layers.Dropout(0.2, name="drop"))
    source = code(result.model)
    assert "layers.Dropout(rate=0.2, name='drop')" in source
    assert "layers.Dense(units=64, activation='relu', name='dense')" in source
    assert "keras.Model(" in source
    assert_same_architecture(run(source), result.model)


def test_frozen_layers_stay_frozen(make):
    result = kerasnb.set_trainable(make("seed_mlp"), ["dense"], False)
    rebuilt = run(code(result.model))
    assert rebuilt.get_layer("dense").trainable is False
    assert rebuilt.get_layer("dense_1").trainable is True


def test_densenet_round_trips(densenet121):
    """429 layers with concatenations: the code still runs and matches."""
    source = code(densenet121)
    assert "from_config" not in source  # every layer written as a readable constructor
    assert_same_architecture(run(source), densenet121)
