"""kerasnb.widen (Net2WiderNet): a coupled group grows by copies of its channels; outputs stay the same."""

import keras
import numpy as np
import pytest
from keras import layers as L

from kerasnb.errors import InvalidEdit, LayerNotFound, SurgeryError, UnwidenableLayer
from kerasnb.growth import widen

from conftest import assert_unchanged, sample_input, snapshot, to_numpy

TOLERANCE = 1e-5


def _out(model, x):
    return to_numpy(model(x, training=False))


def _randomise_batchnorms(model, seed=0):
    """Trained-looking statistics, so a copy that forgot them would show."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(size=n), rng.normal(size=n),
                               rng.uniform(0.5, 1.5, n)])


@pytest.fixture(scope="module")
def mlp():
    inputs = keras.Input((6,), name="x")
    h = L.Dense(5, activation="relu", name="h")(inputs)
    h = L.Dense(4, activation="tanh", name="h2")(h)
    return keras.Model(inputs, L.Dense(3, name="out")(h))


@pytest.fixture(scope="module")
def cnn():
    """Conv+BN+ReLU, a residual Add of two convs, a depthwise branch, a Concatenate, a Flatten."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, name="stem")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    a = L.Conv2D(4, 1, name="res_a")(x)
    b = L.Conv2D(4, 1, name="res_b")(x)
    r = L.Add(name="add")([a, b])
    d = L.DepthwiseConv2D(3, name="dw")(x)
    cat = L.Concatenate(name="cat")([L.GlobalAveragePooling2D(name="gap_d")(d),
                                     L.GlobalAveragePooling2D(name="gap_r")(r)])
    f = L.Flatten(name="flat")(L.Conv2D(2, 3, name="tail")(r))
    out = L.Dense(2, name="out")(L.Concatenate(name="cat2")([cat, f]))
    model = keras.Model(inputs, out)
    _randomise_batchnorms(model)
    return model


@pytest.fixture(scope="module")
def widened_mlp(mlp):
    before = snapshot(mlp)
    return widen(mlp, "h", units=9, seed=0), before


@pytest.fixture(scope="module")
def widened_stem(cnn):
    before = snapshot(cnn)
    return widen(cnn, "stem", filters=7, seed=1), before


def test_dense_exact_statuses_reasons(mlp, widened_mlp):
    result, _ = widened_mlp
    x = sample_input(mlp)
    assert result.model.get_layer("h").units == 9
    assert np.abs(_out(result.model, x) - _out(mlp, x)).max() <= TOLERANCE
    report = result.report
    assert (report.status("h"), report.row("h").reason) == ("adapted", "units 5 -> 9 (4 copies of existing units)")
    assert (report.status("h2"), report.row("h2").reason) == (
        "adapted", "incoming weights of 4 copied units divided among copies")
    assert report.status("out") in ("kept", "kept_input_changed")  # its weights came through untouched
    np.testing.assert_array_equal(to_numpy(result.model.get_layer("out").kernel), to_numpy(mlp.get_layer("out").kernel))
    assert "computes what it did" in result.notes[0]


def test_dense_copies_are_copies(mlp, widened_mlp):
    """The new units repeat existing columns; the readers' rows of a copied unit sum to the old row."""
    result, _ = widened_mlp
    old_k = to_numpy(mlp.get_layer("h").kernel)
    new_k = to_numpy(result.model.get_layer("h").kernel)
    np.testing.assert_array_equal(new_k[:, :5], old_k)
    for column in new_k.T[5:]:
        assert any(np.array_equal(column, old) for old in old_k.T)
    old_r, new_r = to_numpy(mlp.get_layer("h2").kernel), to_numpy(result.model.get_layer("h2").kernel)
    summed = np.zeros_like(old_r)
    for j in range(9):
        source = next(i for i in range(5) if np.array_equal(new_k[:, j], old_k[:, i]))
        summed[source] += new_r[j]
    np.testing.assert_allclose(summed, old_r, atol=1e-6)


def test_original_unchanged(mlp, widened_mlp, cnn, widened_stem):
    assert_unchanged(mlp, widened_mlp[1])
    assert_unchanged(cnn, widened_stem[1])
    assert widened_mlp[0].model.get_layer("h") is not mlp.get_layer("h")


def test_conv_bn_relu_exact(cnn, widened_stem):
    result, _ = widened_stem
    x = sample_input(cnn)
    assert np.abs(_out(result.model, x) - _out(cnn, x)).max() <= TOLERANCE
    report = result.report
    assert report.row("stem").reason == "filters 4 -> 7 (3 copies of existing filters)"
    assert report.status("bn") == "adapted" and "moving_mean" in report.row("bn").reason
    assert report.status("dw") == "adapted"
    for reader in ("res_a", "res_b", "out"):  # out reads the depthwise copies through the Concatenate
        assert report.row(reader).reason == "incoming weights of 3 copied filters divided among copies", reader
    assert report.status("tail") in ("kept", "kept_input_changed")
    new_bn, old_bn = result.model.get_layer("bn"), cnn.get_layer("bn")
    new_stem, old_stem = result.model.get_layer("stem"), cnn.get_layer("stem")
    for j in range(7):  # every BatchNorm channel travels with the filter it copies
        new_k, old_k = to_numpy(new_stem.kernel), to_numpy(old_stem.kernel)
        i = next(i for i in range(4) if np.array_equal(new_k[..., j], old_k[..., i]))
        assert to_numpy(new_bn.moving_variance)[j] == to_numpy(old_bn.moving_variance)[i]


def test_residual_add_group_widens_together(cnn):
    result = widen(cnn, "res_a", filters=6, seed=2)
    x = sample_input(cnn)
    assert np.abs(_out(result.model, x) - _out(cnn, x)).max() <= TOLERANCE
    assert result.model.get_layer("res_a").filters == result.model.get_layer("res_b").filters == 6
    assert result.report.status("tail") == "adapted" and result.report.status("out") == "adapted"
    assert result.report.status("stem") == "kept"
    assert "res_a, res_b" in result.notes[0]


def test_depthwise_target_widens_what_it_reads(cnn):
    result = widen(cnn, "dw", filters=5, seed=3)
    x = sample_input(cnn)
    assert np.abs(_out(result.model, x) - _out(cnn, x)).max() <= TOLERANCE
    assert result.model.get_layer("stem").filters == 5
    assert tuple(result.model.get_layer("dw").kernel.shape)[-2] == 5


def test_concatenate_and_flatten_offsets(cnn):
    """'tail' reaches 'out' through Flatten and a Concatenate after 8 other positions."""
    result = widen(cnn, "tail", filters=3, seed=4)
    x = sample_input(cnn)
    assert np.abs(_out(result.model, x) - _out(cnn, x)).max() <= TOLERANCE
    assert tuple(result.model.get_layer("out").kernel.shape) == (8 + 4 * 4 * 3, 2)


def test_recurrent_and_embedding_exact():
    tokens = keras.Input((5,), dtype="int32")
    e = L.Embedding(10, 4, name="emb")(tokens)
    h = L.LSTM(4, return_sequences=True, name="lstm")(e)
    h = L.GRU(3, name="gru")(h)
    model = keras.Model(tokens, L.Dense(2, name="out")(h))
    x = np.random.default_rng(0).integers(0, 10, (3, 5))
    for target, width in (("emb", 7), ("lstm", 6), ("gru", 5)):
        result = widen(model, target, units=width, seed=5)
        assert np.abs(_out(result.model, x) - _out(model, x)).max() <= TOLERANCE, target
        assert result.report.status(target) == "adapted"


def test_noise_breaks_symmetry_and_says_so(mlp):
    x = sample_input(mlp)
    noisy = widen(mlp, "h", units=9, noise=0.1, seed=0)
    again = widen(mlp, "h", units=9, noise=0.1, seed=0)
    assert np.abs(_out(noisy.model, x) - _out(mlp, x)).max() > 1e-4
    np.testing.assert_array_equal(_out(noisy.model, x), _out(again.model, x))  # seeded
    assert "outputs now differ" in noisy.notes[0]
    assert "noise 0.1" in noisy.report.row("h").reason
    new_k, old_k = to_numpy(noisy.model.get_layer("h").kernel), to_numpy(mlp.get_layer("h").kernel)
    np.testing.assert_array_equal(new_k[:, :5], old_k)  # the originals stay as they were


def test_model_output_needs_permission(mlp):
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 'out'.*model output.*allow_output_change=True"):
        widen(mlp, "out", units=4)
    result = widen(mlp, "out", units=5, seed=0, allow_output_change=True)
    x = sample_input(mlp)
    new, old = _out(result.model, x), _out(mlp, x)
    assert new.shape == (3, 5)
    np.testing.assert_allclose(new[:, :3], old, atol=TOLERANCE)
    assert any("'out' widens from (3,) to (5,) (allow_output_change=True)" in note for note in result.notes)


@pytest.mark.parametrize("kwargs, match", [
    (dict(units=5), r"must be larger than its 5 units now.*Received: units=5"),
    (dict(units=3), r"larger than its 5 units.*kerasnb.prune"),
    (dict(filters=8), r"'h' \(Dense\) has 5 units: give its new width as units=8, not filters="),
    (dict(), r"needs the new width of 'h': units=N"),
    (dict(units=8, filters=8), r"not both"),
    (dict(units=7.5), r"whole number"),
    (dict(units=8, noise=-0.1), r"noise= is a number >= 0"),
])
def test_argument_refusals(mlp, kwargs, match):
    with pytest.raises(InvalidEdit, match=match):
        widen(mlp, "h", **kwargs)


def test_units_on_a_conv_says_filters(cnn):
    with pytest.raises(InvalidEdit, match=r"'stem' \(Conv2D\) has 4 filters: give its new width as filters=6"):
        widen(cnn, "stem", units=6)


def _one_layer_after(layer):
    inputs = keras.Input((6,))
    h = L.Dense(4, name="h")(inputs)
    return keras.Model(inputs, L.Dense(2, name="out")(layer(h)))


@pytest.mark.parametrize("make, match", [
    (lambda: _one_layer_after(L.LayerNormalization(name="ln")), r"'ln' \(LayerNormalization\) normalises over"),
    (lambda: _one_layer_after(L.Softmax(name="soft")), r"'soft'"),
    (lambda: _one_layer_after(L.Lambda(lambda t: t * 2.0, name="lam")), r"'lam'"),
    (lambda: _one_layer_after(L.Lambda(lambda t: t, name="lam2")), r"'lam2'"),
])
def test_exactness_refusals(make, match):
    model = make()
    before = snapshot(model)
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 'h'.*" + match):
        widen(model, "h", units=6)
    assert_unchanged(model, before)


def test_sum_over_channels_refused():
    inputs = keras.Input((6,))
    h = L.Dense(4, name="h")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(keras.ops.sum(h, axis=-1, keepdims=True)))
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 'h'.*sum.*count every copy"):
        widen(model, "h", units=6)


def test_grouped_conv_refused_and_channelwise_target_named():
    inputs = keras.Input((6, 6, 4))
    x = L.Conv2D(4, 1, name="c")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(L.Conv2D(4, 1, groups=2, name="g")(x)))
    with pytest.raises(UnwidenableLayer, match=r"'g' \(Conv2D\) is a grouped convolution \(groups=2\)"):
        widen(model, "c", filters=6)
    with pytest.raises(UnwidenableLayer, match=r"Cannot widen 'bn'.*widen that layer instead"):
        widen(model, "bn", filters=6)
    with pytest.raises(LayerNotFound):
        widen(model, "nope", filters=6)
    with pytest.raises(SurgeryError, match="takes one layer"):
        widen(model, ["c", "g"], filters=6)


def _sequence_model():
    x = keras.Input((5, 3))
    h = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi")(x)
    h = L.TimeDistributed(L.Dense(3), name="td")(h)
    h = L.Dense(4, name="d3")(h)  # a Dense on rank 3
    return keras.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling1D()(h)))


def _conv_variants():
    x = keras.Input((8, 8, 3))
    c = L.Conv2D(4, 3, name="c")(x)
    s = L.SeparableConv2D(5, 3, depth_multiplier=2, name="sep")(c)
    t = L.Conv2DTranspose(3, 3, name="ct")(s)
    g = L.Conv2D(6, 3, padding="same", groups=3, name="per_group")(t)  # one input channel per group
    return keras.Model(x, L.Conv2D(2, 1, name="out")(g))


def _nested_model():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(3, name="in_out")(L.Dense(5, name="in_h")(inner_in)), name="inner")
    x = keras.Input((6,))
    shared = L.Dense(3, activation="tanh", name="shared")  # reads the same widened channels twice
    h = inner(L.Dense(4, name="pre")(x))
    return keras.Model(x, L.Dense(2, name="out")(L.Concatenate()([shared(h), shared(h * 2.0)])))


@pytest.mark.parametrize("make, target, kwargs", [
    (_sequence_model, "bi", dict(units=6)),
    (_sequence_model, "td", dict(units=5)),
    (_sequence_model, "d3", dict(units=7)),
    (_conv_variants, "c", dict(filters=6)),
    (_conv_variants, "sep", dict(filters=8)),
    (_conv_variants, "ct", dict(filters=5)),
    (_nested_model, "pre", dict(units=6)),
    (_nested_model, "inner/in_h", dict(units=8)),
    (_nested_model, "inner/in_out", dict(units=4)),
])
def test_more_layer_types_exact(make, target, kwargs):
    model = make()
    x = sample_input(model)
    result = widen(model, target, seed=6, **kwargs)
    assert np.abs(_out(result.model, x) - _out(model, x)).max() <= TOLERANCE
    assert result.report.status(target) == "adapted"


def test_applications_mobilenetv2(mobilenetv2):
    x = sample_input(mobilenetv2, batch=2)
    expected = _out(mobilenetv2, x)
    result = widen(mobilenetv2, "block_2_project", filters=36, seed=7)  # a residual Add group of 24 filters
    assert np.abs(_out(result.model, x) - expected).max() <= TOLERANCE
    assert result.model.get_layer("block_1_project").filters == 36
    assert result.report.status("block_3_expand") == "adapted"
    assert result.report.status("block_3_expand_BN") != "adapted"


def test_reshape_and_multiply_coupling_and_edits_replay():
    x = keras.Input((6,))
    a = L.Dense(4, name="a")(x)
    gate = L.Dense(4, activation="sigmoid", name="gate")(x)
    h = L.Reshape((4, 1), name="reshape")(L.Multiply(name="mul")([a, gate]))
    model = keras.Model(x, L.Dense(2, name="out")(L.Flatten()(h)))
    xs = sample_input(model)
    result = widen(model, "a", units=7, seed=8)
    assert np.abs(_out(result.model, xs) - _out(model, xs)).max() <= TOLERANCE
    assert result.model.get_layer("gate").units == 7  # coupled by Multiply
    assert result.model.get_layer("reshape").target_shape == (7, 1)
    again = kerasnb_apply(model, result.edits)
    np.testing.assert_array_equal(_out(again.model, xs), _out(result.model, xs))
    assert "widen(units 4 -> 7)" in repr(result.edits)


def kerasnb_apply(model, edits):
    from kerasnb.surgery import apply

    return apply(model, edits)


def _random_graph(seed):
    """Dense layers on rank 2 or 3 joined at random: residual Adds and sigmoid-gated Multiplys (both
    couple producers into one group, chains of them into large groups), Adds of three, BatchNorms,
    Concatenates (and Adds of those, which no widening can keep exact); one Dense head."""
    rng = np.random.default_rng(seed)
    x = keras.Input((3, 5) if seed % 2 else (5,))

    def dense(source, n, activation=None):
        return L.Dense(int(n), activation=activation or str(rng.choice(["relu", "tanh", "linear"])))(source)

    def pick():
        return tensors[int(rng.integers(len(tensors)))]

    tensors = [dense(x, rng.integers(2, 6))]
    tensors.append(L.Add()([tensors[0], dense(x, tensors[0].shape[-1])]))  # at least one coupled pair
    for _ in range(int(rng.integers(3, 8))):
        kind = rng.choice(["dense", "bn", "residual", "gate", "add3", "concat"])
        source = pick()
        n = source.shape[-1]
        if kind == "dense":
            tensors.append(dense(source, rng.integers(2, 6)))
        elif kind == "bn":
            tensors.append(L.BatchNormalization()(source))
        elif kind == "residual":
            tensors.append(L.Add()([source, dense(pick(), n)]))
        elif kind == "gate":
            tensors.append(L.Multiply()([source, dense(pick(), n, "sigmoid")]))
        elif kind == "add3":
            tensors.append(L.Add()([source, dense(pick(), n), dense(pick(), n)]))
        else:
            tensors.append(L.Concatenate()([source, pick()]))
    joined = L.Concatenate()(tensors)
    model = keras.Model(x, L.Dense(2)(L.Flatten()(joined) if seed % 2 else joined))
    _randomise_batchnorms(model, seed)
    return model


@pytest.mark.parametrize("seed", range(8))
def test_random_graphs_every_group_exact(seed):
    """Every group widen can take computes the same, alone (any of its producers named) and all at
    once; every other group is refused, never widened wrong."""
    from kerasnb.pruning import channel_groups

    rng = np.random.default_rng(100 + seed)
    model = _random_graph(seed)
    x = sample_input(model)
    expected = _out(model, x)
    groups = channel_groups(model)
    takes = [g for g in groups if g.prunable]
    assert any(g.coupled for g in groups), groups  # coupled groups are there, taken or refused
    for group in takes:
        target = group.producers[int(rng.integers(len(group.producers)))]
        result = widen(model, target, units=group.channels + int(rng.integers(1, 5)), seed=seed)
        assert np.abs(_out(result.model, x) - expected).max() <= TOLERANCE, group
    every = widen(model, {g.producers[0]: 2 * g.channels for g in takes}, seed=seed)
    assert np.abs(_out(every.model, x) - expected).max() <= TOLERANCE
    for group in groups:
        if not group.prunable:
            with pytest.raises(UnwidenableLayer):
                widen(model, group.producers[0], units=group.channels + 1)


def test_random_graphs_give_coupled_groups_widen_takes():
    """The property above is about coupled groups: most of its graphs have one widen can take."""
    from kerasnb.pruning import channel_groups

    taken = [any(g.coupled and g.prunable for g in channel_groups(_random_graph(seed))) for seed in range(8)]
    assert sum(taken) >= 6, taken


def test_widen_refusal_says_why_without_building(mlp, cnn):
    from kerasnb.growth import widen_refusal

    assert widen_refusal(mlp, "h") == "" and widen_refusal(cnn, "dw") == ""
    assert widen_refusal(mlp, "out").startswith("Cannot widen 'out': its channels reach the model output")
    assert widen_refusal(mlp, "out", allow_output_change=True) == ""
    assert widen_refusal(mlp, "nope") == f"No layer named 'nope' in model {mlp.name!r}. Received: target='nope'"


def test_training_step_after_widening_moves_only_the_new_model(mlp, widened_mlp):
    result, before = widened_mlp
    model = keras.models.clone_model(result.model)
    model.set_weights(result.model.get_weights())
    model.compile(optimizer="sgd", loss="mse")
    x = sample_input(mlp, batch=8)
    start = [np.array(w) for w in model.get_weights()]
    model.fit(x, np.ones((8, 3), "float32"), epochs=1, batch_size=8, verbose=0)
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(start, model.get_weights()))
    assert_unchanged(mlp, before)


def test_several_groups_in_one_rebuild(mlp, cnn):
    result = widen(mlp, {"h": 9, "h2": 6}, seed=9)
    x = sample_input(mlp)
    assert np.abs(_out(result.model, x) - _out(mlp, x)).max() <= TOLERANCE
    assert result.report.row("h2").reason == ("units 4 -> 6 (2 copies of existing units); incoming weights of 4 "
                                              "copied units divided among copies")
    assert result.report.row("out").reason == "incoming weights of 2 copied units divided among copies"
    assert len(result.notes) >= 2
    grown = widen(cnn, {"stem": 6, "res_a": 7, "res_b": 7, "tail": 3}, seed=10)
    xc = sample_input(cnn)
    assert np.abs(_out(grown.model, xc) - _out(cnn, xc)).max() <= TOLERANCE
    assert [grown.model.get_layer(n).filters for n in ("stem", "res_a", "res_b", "tail")] == [6, 7, 7, 3]
    with pytest.raises(InvalidEdit, match=r"'res_b' is coupled with \['res_a', 'res_b'\].*asks for 7 and 8"):
        widen(cnn, {"res_a": 7, "res_b": 8})
    with pytest.raises(InvalidEdit, match="takes the widths from the dict"):
        widen(cnn, {"stem": 6}, filters=6)
    with pytest.raises(InvalidEdit, match=r"or a dict \{layer: new width\}"):
        widen(cnn, ["stem", "tail"], filters=6)
