"""Property-based check of the guarantees on random functional DAGs with random edits.

Each example builds a small random graph (Dense, normalisation, activations, Add and
Concatenate joins, nested blocks, several outputs), applies one to three random edits in one
``apply`` and checks: the original is
untouched; the new model shares no variables; kept layers compute bit-identical outputs;
every original layer is accounted for; a refused edit raises a SurgeryError.
"""

import os

import keras
import numpy as np
from conftest import assert_unchanged, snapshot, to_numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from keras import layers as L

import kerasnb

EXAMPLES = int(os.environ.get("KERASNB_PROPERTY_EXAMPLES", "200"))
WIDTHS = (4, 6)


@keras.saving.register_keras_serializable(package="kerasnb_properties")
class Gate(L.Layer):
    """Called as gate(x, gate=other): a keyword tensor, like a transformer block's mask."""

    def call(self, x, gate=None):
        return x if gate is None else x * keras.ops.sigmoid(gate)


@st.composite
def graphs(draw):
    """A recipe: list of (kind, input indices, width) steps; built into a model later."""
    n_steps = draw(st.integers(2, 9))
    steps = []
    widths = [draw(st.sampled_from(WIDTHS))]  # tensor 0 is the input
    for _ in range(n_steps):
        kind = draw(st.sampled_from(["dense", "dense", "act", "bn", "ln", "drop", "add", "concat", "block", "gate"]))
        src = draw(st.integers(0, len(widths) - 1))
        if kind in ("add", "gate"):
            same = [i for i, w in enumerate(widths) if w == widths[src] and i != src]
            if not same:
                kind = "dense"
            else:
                other = draw(st.sampled_from(same))
                steps.append((kind, (src, other), widths[src]))
                widths.append(widths[src])
                continue
        if kind == "concat":
            other = draw(st.integers(0, len(widths) - 1))
            steps.append(("concat", (src, other), widths[src] + widths[other]))
            widths.append(widths[src] + widths[other])
            continue
        width = draw(st.sampled_from(WIDTHS)) if kind in ("dense", "block") else widths[src]
        steps.append((kind, (src,), width))
        widths.append(width)
    return widths[0], steps


def build(recipe):
    in_width, steps = recipe
    inputs = keras.Input((in_width,), name="x")
    tensors, consumed = [inputs], set()
    for i, (kind, srcs, width) in enumerate(steps):
        name = f"{kind}_{i}"
        args = [tensors[s] for s in srcs]
        consumed.update(srcs)
        if kind == "dense":
            out = L.Dense(width, activation="tanh", name=name)(args[0])
        elif kind == "act":
            out = L.Activation("relu", name=name)(args[0])
        elif kind == "bn":
            out = L.BatchNormalization(name=name)(args[0])
        elif kind == "ln":
            out = L.LayerNormalization(name=name)(args[0])
        elif kind == "drop":
            out = L.Dropout(0.25, name=name)(args[0])
        elif kind == "add":
            out = L.Add(name=name)(args)
        elif kind == "gate":
            out = Gate(name=name)(args[0], gate=args[1])
        elif kind == "block":  # a nested model: Dense then LayerNormalization
            block_in = keras.Input((args[0].shape[-1],))
            inner = L.LayerNormalization(name="norm")(L.Dense(width, activation="relu", name="inner")(block_in))
            out = keras.Model(block_in, inner, name=name)(args[0])
        else:
            out = L.Concatenate(name=name)(args)
        tensors.append(out)
    outputs = [t for i, t in enumerate(tensors) if i not in consumed and i > 0] or [tensors[-1]]
    return keras.Model(inputs, outputs, name="random_dag")


@st.composite
def edits(draw, model):
    layers = [l for l in model.layers if not isinstance(l, L.InputLayer)]
    # Layers inside nested blocks are targets too, by their "block/inner" path.
    targets = [(l.name, l) for l in layers] + [
        (f"{l.name}/{inner.name}", inner) for l in layers if isinstance(l, keras.Model)
        for inner in l.layers if not isinstance(inner, L.InputLayer)
    ]
    name, target = draw(st.sampled_from(targets))
    width = target.output.shape[-1]
    kind = draw(st.sampled_from(["replace", "insert_after", "insert_before", "delete", "configure", "freeze",
                                 "prune"]))
    # Layers are made in the test body, not here: making one draws Keras's own random state.
    if kind == "replace" and isinstance(target, Gate):
        # The keyword tensor must reach the replacement: a layer that takes it, or a callable.
        how = draw(st.sampled_from(["layer", "callable", "dense"]))
        if how == "layer":
            return lambda: kerasnb.Replace(name, Gate(name="swapped"))
        if how == "callable":
            return lambda: kerasnb.Replace(name, lambda x, gate=None: L.Multiply(name="swapped")([x, gate]))
        return lambda: kerasnb.Replace(name, L.Dense(width, name="swapped"))  # refused: it has no gate=
    if kind == "prune" and isinstance(target, L.Dense) and "/" not in name:
        return lambda: kerasnb.Prune(name, keep=0.5)
    if kind == "replace":
        new_width = draw(st.sampled_from((width,) + WIDTHS))
        use_dense = draw(st.booleans())
        return lambda: kerasnb.Replace(
            name, L.Dense(new_width, name="swapped") if use_dense else L.Activation("gelu", name="swapped"))
    if kind == "insert_after":
        return lambda: kerasnb.Insert(L.Dense(width, name="inserted"), after=name)
    if kind == "insert_before":
        return lambda: kerasnb.Insert(L.LayerNormalization(name="inserted"), before=name)
    if kind == "delete":
        return lambda: kerasnb.Delete(name)
    if kind == "configure" and isinstance(target, L.Dense):
        units = draw(st.sampled_from(WIDTHS))
        return lambda: kerasnb.Configure(name, {"units": units})
    return lambda: kerasnb.SetTrainable([name], False)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_guarantees_hold_on_random_graphs(data):
    recipe = data.draw(graphs())
    model = build(recipe)
    make_edits = data.draw(st.lists(edits(model), min_size=1, max_size=3))
    edit_list = [make() for make in make_edits]
    edit = edit_list[-1]
    before = snapshot(model)
    try:
        result = kerasnb.apply(model, edit_list)
    except kerasnb.SurgeryError as error:
        event(f"refused: {type(error).__name__}")
        assert "Received: " in str(error)
        assert_unchanged(model, before)
        return
    event(f"applied: {len(edit_list)} edit(s), last {type(edit).__name__}")
    assert_unchanged(model, before)
    new = result.model
    report = result.report

    # No shared variables.
    old_ids = {id(v) for v in model.weights}
    assert not any(id(v) in old_ids for v in new.weights)

    # Every original layer is carried into the new model or reported removed.
    sources = {row.source for row in report if row.status != "removed"}
    removed = set(report.with_status("removed"))
    assert {l.name for l in model.layers} <= sources | removed

    # Names: kept layers keep theirs, all names unique, inputs keep theirs.
    names = [l.name for l in new.layers]
    assert len(names) == len(set(names))
    assert [t.name for t in new.inputs] == [t.name for t in model.inputs]

    # Kept layers compute exactly what they did, on the same input.
    # Top-level layers (a nested model's .output is its inner tensor, not its call in this graph).
    kept = [row.layer for row in report if row.status == "kept" and "/" not in row.layer and not row.is_container]
    for row in report:
        if row.status in ("kept", "kept_input_changed"):
            assert row.source, row
    if kept:
        x = np.random.default_rng(1).normal(size=(2, recipe[0])).astype("float32")
        old_probe = keras.Model(model.input, [model.get_layer(n).output for n in kept])
        new_probe = keras.Model(new.input, [new.get_layer(n).output for n in kept])
        for a, b in zip(old_probe(x), new_probe(x)):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))

    # compare() runs both models layer by layer (nested blocks included): no broken promise.
    x = np.random.default_rng(2).normal(size=(2, recipe[0])).astype("float32")
    frame = result.compare(x, original=model)
    assert not frame.broken_promise.any(), frame[frame.broken_promise].to_string()
    assert set(frame.layer) >= {row.layer for row in report if row.status == "kept"}

    # Trainable flags follow the edit or the original.
    frozen = {t for e in edit_list if isinstance(e, kerasnb.SetTrainable) for t in e.targets}
    for layer in new.layers:
        row = report.row(layer.name)
        if layer.name in frozen:
            assert layer.trainable is False
        elif row.source and row.status != "new":
            assert layer.trainable == model.get_layer(row.source).trainable
