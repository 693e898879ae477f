"""kerasnb.importance (criteria), kerasnb.prune(by=..., data=...) and kerasnb.prune_global (budgets).

Scores are checked against channels whose importance is known by construction: a zeroed kernel,
a channel that is always zero after its ReLU, a channel the output never reads. Budgets are
checked on the built model (params, MACs), not on the plan's own arithmetic.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb import BudgetNotReachable
from kerasnb.budget import prune_global_plan
from kerasnb.errors import IncompatibleShape, InvalidEdit, SurgeryError
from kerasnb.flops import total_macs

from conftest import assert_unchanged, snapshot, to_numpy


# ----------------------------------------------------------------------------- models


def cnn(seed=0):
    """conv-BN-ReLU, a residual pair joined by Add, a softmax head; compiled with a loss."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="r1")(x)
    a = L.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    b = L.Conv2D(16, 1, name="c3")(x)
    x = L.Add(name="add")([a, b])
    x = L.Activation("relu", name="r2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(12, activation="relu", name="d1")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="cnn")
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


def assign(variable, edit):
    value = np.array(keras.ops.convert_to_numpy(variable))
    edit(value)
    variable.assign(value)


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), name="x")
    h = L.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = L.Dense(2, name="out")(h)
    return keras.Model(inputs, outputs, name="mlp")


# ----------------------------------------------------------------------------- criteria


class TestWeightCriteria:
    @pytest.mark.parametrize("by", ["l1", "l2"])
    def test_zeroed_kernel_scores_lowest(self, by):
        """A channel whose kernel slice is zero has the lowest l1 / l2 score (exactly 0)."""
        model = cnn()
        assign(model.get_layer("c1").kernel, lambda k: k.__setitem__((..., 5), 0))
        scores = kerasnb.importance(model, "c1", by=by)
        assert scores.shape == (8,)
        assert scores[5] == 0 and np.argmin(scores) == 5 and np.all(np.delete(scores, 5) > 0)

    def test_l1_of_a_coupled_group_sums_its_producers(self):
        """Channels joined by Add are scored once for the group: the sum over c2 and c3."""
        model = cnn()
        expected = sum(np.abs(to_numpy(model.get_layer(n).kernel)).reshape(-1, 16).sum(axis=0) for n in ("c2", "c3"))
        np.testing.assert_allclose(kerasnb.importance(model, "c3", by="l1"), expected, rtol=1e-5)
        np.testing.assert_allclose(kerasnb.importance(model, "c2", by="l1"), expected, rtol=1e-5)

    def test_bn_scale_is_abs_gamma_of_the_following_batchnorm(self):
        """by='bn_scale' reads |gamma| of the BatchNormalization after the producer."""
        model = cnn()
        gamma = np.linspace(-2, 2, 8).astype("float32")
        model.get_layer("bn1").gamma.assign(gamma)
        np.testing.assert_allclose(kerasnb.importance(model, "c1", by="bn_scale"), np.abs(gamma), rtol=1e-6)

    def test_bn_scale_refuses_a_producer_without_batchnorm(self):
        """A producer with no BatchNormalization after it is refused, naming it and an alternative."""
        with pytest.raises(InvalidEdit, match=r"'c2'.*by='l1'"):
            kerasnb.importance(cnn(), "c2", by="bn_scale")

    def test_callable_is_summed_over_coupled_producers(self):
        """A callable fn(layer) scores each producer; a coupled group gets the sum."""
        model = cnn()
        scores = kerasnb.importance(model, "c2", by=lambda layer: np.arange(16.0))
        np.testing.assert_array_equal(scores, 2 * np.arange(16.0))

    def test_callable_with_the_wrong_length_is_refused(self):
        with pytest.raises(InvalidEdit, match="8 finite scores for 'c1'"):
            kerasnb.importance(cnn(), "c1", by=lambda layer: np.ones(3))

    def test_unknown_criterion(self):
        with pytest.raises(InvalidEdit, match=r"'l1', 'l2', 'bn_scale', 'apoz', 'taylor'.*Received: by='l3'"):
            kerasnb.importance(cnn(), "c1", by="l3")


def dead_after_relu(model, channel):
    """Make ``channel`` of c1 zero after its ReLU for every input: BN maps it to a negative constant."""
    assign(model.get_layer("c1").kernel, lambda k: k.__setitem__((..., channel), 0))
    assign(model.get_layer("bn1").beta, lambda b: b.__setitem__(channel, -1.0))
    assign(model.get_layer("bn1").moving_mean, lambda m: m.__setitem__(channel, 0.0))


class TestApoz:
    def test_a_channel_always_zero_after_relu_scores_zero_and_goes_first(self):
        """APoZ 100% -> score 0; prune(keep=7, by='apoz') removes that channel."""
        model = cnn()
        dead_after_relu(model, 3)
        x, _ = data()
        scores = kerasnb.importance(model, "c1", by="apoz", data=x)
        assert scores[3] == 0.0
        assert np.all(np.delete(scores, 3) > 0.1) and np.all(scores <= 1)
        result = kerasnb.prune(model, "c1", keep=7, by="apoz", data=x)
        assert result.edits[0].channels == (3,)

    def test_apoz_counts_zeros_exactly(self):
        """The score is 1 - the fraction of zeros after the ReLU, over every example and position."""
        model = cnn()
        x, _ = data()
        probe = keras.Model(model.inputs[0], model.get_layer("r1").output)
        after = to_numpy(probe(x, training=False)).reshape(-1, 8)
        np.testing.assert_allclose(kerasnb.importance(model, "c1", by="apoz", data=x), 1 - (after == 0).mean(axis=0))

    def test_refused_without_a_relu(self):
        """c3 / c2 meet at an Add followed by ReLU (fine); the Dense 'd1' has its own relu; a linear
        producer with nothing ReLU-like after it is refused."""
        model = mlp()
        model = keras.Model(model.inputs, L.Dense(1, name="head")(L.Dense(4, name="linear")(model.output)))
        with pytest.raises(InvalidEdit, match=r"by='apoz'.*'linear'"):
            kerasnb.importance(model, "linear", by="apoz", data=np.zeros((4, 6), "float32"))


class TestTaylor:
    def test_channels_the_output_never_reads_score_zero(self):
        """Hidden units whose outgoing weights are zero get 0; the unit that drives the output scores highest."""
        model = mlp()
        def edit(k):
            k[:] = 0
            k[2] = [3.0, -3.0]
            k[5] = [0.1, 0.1]
        assign(model.get_layer("out").kernel, edit)
        assign(model.get_layer("hidden").bias, lambda b: b.__setitem__(slice(None), 1.0))  # every unit active
        x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
        scores = kerasnb.importance(model, "hidden", by="taylor", data=x)
        assert np.argmax(scores) == 2 and scores[5] > 0
        np.testing.assert_array_equal(np.delete(scores, [2, 5]), 0)

    def test_matches_gradient_times_activation(self):
        """On an MLP with 0.5 * sum(out**2): mean over examples of |grad * activation|, checked by hand."""
        model = mlp()
        x = np.random.default_rng(1).normal(size=(10, 6)).astype("float32")
        w1, b1 = to_numpy(model.get_layer("hidden").kernel), to_numpy(model.get_layer("hidden").bias)
        w2, b2 = to_numpy(model.get_layer("out").kernel), to_numpy(model.get_layer("out").bias)
        h = np.maximum(x @ w1 + b1, 0)
        out = h @ w2 + b2
        expected = np.abs((out @ w2.T) * h).mean(axis=0)  # d(0.5*|out|^2)/dh = out @ w2.T
        np.testing.assert_allclose(kerasnb.importance(model, "hidden", by="taylor", data=x), expected,
                                   rtol=1e-4, atol=1e-7)

    def test_uses_the_compiled_loss_with_labels(self):
        """With labels, the gradient is of the model's loss: the scores differ from the label-free ones."""
        model = cnn()
        x, y = data()
        with_labels = kerasnb.importance(model, "c1", by="taylor", data=(x, y))
        without = kerasnb.importance(model, "c1", by="taylor", data=x)
        assert with_labels.shape == without.shape == (8,)
        assert not np.allclose(with_labels, without)

    def test_dead_channel_goes_first_in_a_residual_model(self):
        """A channel that is zero after its ReLU has zero Taylor score and is pruned first."""
        model = cnn()
        dead_after_relu(model, 6)
        x, y = data()
        scores = kerasnb.importance(model, "c1", by="taylor", data=(x, y))
        assert scores[6] == 0 and np.all(np.delete(scores, 6) > 0)
        assert kerasnb.prune(model, "c1", keep=7, by="taylor", data=(x, y)).edits[0].channels == (6,)


class TestData:
    def test_every_form_gives_the_same_scores(self):
        """An array, a list of batches, (x, y), a list of (x, y) batches and a generator agree."""
        model = cnn()
        x, y = data()
        forms = [x, (x, y), [x[:20], x[20:]], [(x[:16], y[:16]), (x[16:], y[16:])], (b for b in [x[:30], x[30:]])]
        results = [kerasnb.importance(model, "c1", by="apoz", data=d) for d in forms]
        for r in results[1:]:
            np.testing.assert_allclose(r, results[0])
        labelled = [kerasnb.importance(model, "c1", by="taylor", data=d)
                    for d in ((x, y), [(x[:16], y[:16]), (x[16:], y[16:])])]
        np.testing.assert_allclose(labelled[0], labelled[1], rtol=1e-4)

    @pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data needs TensorFlow")
    def test_tf_data_dataset(self):
        import tensorflow as tf

        model = cnn()
        x, y = data()
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
        np.testing.assert_allclose(kerasnb.importance(model, "c1", by="taylor", data=dataset),
                                   kerasnb.importance(model, "c1", by="taylor", data=(x, y)), rtol=1e-4)

    @pytest.mark.parametrize("by", ["apoz", "taylor"])
    def test_needs_data(self, by):
        """A criterion that measures on examples, without data=, names itself and data=."""
        with pytest.raises(InvalidEdit, match=rf"by='{by}'.*needs data=.*Received: data=None"):
            kerasnb.importance(cnn(), "c1", by=by)

    def test_wrong_shape(self):
        """Data of the wrong shape: the model's input shape and what was received."""
        with pytest.raises(IncompatibleShape, match=r"\(None, 8, 8, 3\).*\(5, 7, 7, 3\)"):
            kerasnb.importance(cnn(), "c1", by="taylor", data=np.zeros((5, 7, 7, 3), "float32"))

    def test_empty(self):
        with pytest.raises(InvalidEdit, match="yielded none"):
            kerasnb.importance(cnn(), "c1", by="apoz", data=[])


def test_scoring_and_global_pruning_leave_the_model_unchanged():
    """Scoring with data (graph replay, gradients) and prune_global add no call and change no weight."""
    model = cnn()
    x, y = data()
    before = snapshot(model)
    out_before = to_numpy(model(x[:4]))
    kerasnb.importance(model, "c1", by="taylor", data=(x, y))
    kerasnb.importance(model, "c2", by="apoz", data=x)
    result = kerasnb.prune_global(model, macs=0.6, by="taylor", data=(x, y))
    assert_unchanged(model, before)
    np.testing.assert_array_equal(to_numpy(model(x[:4])), out_before)
    assert result.model is not model


# ----------------------------------------------------------------------------- global pruning


def kill_units(model, name, channels):
    """Units of a Dense with relu that output exactly zero (zero kernel column and bias)."""
    layer = model.get_layer(name)
    assign(layer.kernel, lambda k: k.__setitem__((..., channels), 0))
    assign(layer.bias, lambda b: b.__setitem__(channels, 0))


def deep_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,), name="x")
    h = L.Dense(16, activation="relu", name="a")(inputs)
    h = L.Dense(32, activation="relu", name="b")(h)
    h = L.Dense(24, activation="relu", name="c")(h)
    return keras.Model(inputs, L.Dense(2, name="out")(h), name="deep")


class TestPruneGlobal:
    def test_dead_channels_go_first_and_outputs_do_not_change(self):
        """Dead units in two layers, keep = the share of the others: exactly they go, outputs stay the same."""
        model = deep_mlp()
        kill_units(model, "a", [1, 4, 9, 10])
        kill_units(model, "c", [0, 5, 7, 11, 12, 20, 21, 22])
        x = np.random.default_rng(0).normal(size=(16, 10)).astype("float32")
        result = kerasnb.prune_global(model, keep=60 / 72, by="l1")
        removed = {e.target: e.channels for e in result.edits}
        assert removed == {"a": (1, 4, 9, 10), "c": (0, 5, 7, 11, 12, 20, 21, 22)}
        np.testing.assert_allclose(to_numpy(result.model(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-6)

    def test_scores_are_normalised_within_each_group(self):
        """A layer whose weights are 100x smaller is not emptied first: both layers lose channels."""
        model = deep_mlp()
        assign(model.get_layer("b").kernel, lambda k: k.__imul__(0.01))
        result = kerasnb.prune_global(model, keep=0.5, by="l1")
        kept = {n: result.model.get_layer(n).units for n in ("a", "b", "c")}
        assert all(0 < k < n for k, n in zip(kept.values(), (16, 32, 24))), kept

    def test_keep_keeps_that_fraction_of_channels(self):
        model = deep_mlp()
        result = kerasnb.prune_global(model, keep=0.75)
        kept = sum(result.model.get_layer(n).units for n in ("a", "b", "c"))
        assert kept == 72 - 18

    def test_params_budget_is_met_and_the_plan_is_exact(self):
        """params=N: the built model has at most N; the plan predicted exactly what was built."""
        model = cnn()
        plan = prune_global_plan(model, params=0.5)
        result = kerasnb.prune_global(model, params=0.5)
        assert result.model.count_params() <= 0.5 * model.count_params()
        assert plan.params_after == result.model.count_params()
        assert plan.macs_after == total_macs(result.model)

    @pytest.mark.parametrize("by", ["l1", "taylor"])
    def test_macs_budget_is_met(self, by):
        """macs=0.5 (a fraction kept) and macs=N (a count): MACs of the built model at most that."""
        model = cnn()
        x, y = data()
        before = total_macs(model)
        result = kerasnb.prune_global(model, macs=0.5, by=by, data=(x, y))
        after = total_macs(result.model)
        assert after <= 0.5 * before
        assert after > 0.3 * before  # it stops near the budget, not far below
        assert any("MACs per sample" in n and f"{before:,}" in n for n in result.notes)
        count = kerasnb.prune_global(model, macs=before // 3, by=by, data=(x, y))
        assert total_macs(count.model) <= before // 3

    def test_round_to_keeps_multiples(self):
        model = deep_mlp()
        result = kerasnb.prune_global(model, keep=0.6, round_to=8)
        for name in ("a", "b", "c"):
            assert result.model.get_layer(name).units % 8 == 0

    def test_ignore_and_per_layer(self):
        """Ignored layers keep their channels; per_layer groups keep exactly their fraction."""
        model = deep_mlp()
        result = kerasnb.prune_global(model, keep=0.5, ignore=["b"], per_layer={"a": 0.75})
        assert result.model.get_layer("b").units == 32
        assert result.model.get_layer("a").units == 12
        assert result.model.get_layer("c").units == 12

    def test_ignore_a_batchnorm_protects_its_producer(self):
        model = cnn()
        result = kerasnb.prune_global(model, keep=0.5, ignore=["bn1"])
        assert result.model.get_layer("c1").filters == 8

    def test_min_keep(self):
        model = deep_mlp()
        result = kerasnb.prune_global(model, keep=9 / 72, min_keep=3)  # everything that may go
        assert [result.model.get_layer(n).units for n in ("a", "b", "c")] == [3, 3, 3]
        with pytest.raises(BudgetNotReachable, match=r"keep=0.11.* asks to keep 8 of 72 channels.*at least 9 stay"):
            kerasnb.prune_global(model, keep=8 / 72, min_keep=3)

    def test_unreachable_budget_says_the_smallest_reachable(self):
        """params below the floor: the message gives the smallest reachable, which then works."""
        model = deep_mlp()
        with pytest.raises(BudgetNotReachable, match=r"smallest reachable is ([\d,]+)") as info:
            kerasnb.prune_global(model, params=10)
        floor = int(info.value.args[0].split("smallest reachable is ")[1].split(" ")[0].replace(",", ""))
        assert "Received: params=10" in str(info.value)
        assert kerasnb.prune_global(model, params=floor).model.count_params() == floor

    @pytest.mark.parametrize("kwargs, match", [
        ({}, "one budget"),
        ({"keep": 0.5, "params": 100}, "one budget: keep= .*macs="),
        ({"keep": 0.0}, r"keep= is the fraction of the channels kept, in \(0, 1\].*Received: keep=0.0"),
        ({"keep": 1.5}, r"keep= is the fraction of the channels kept"),
        ({"macs": -3}, "must be positive"),
        ({"keep": 0.5, "round_to": 0}, "round_to="),
        ({"keep": 0.5, "ignore": ["nope"]}, "nope"),
        ({"keep": 0.5, "per_layer": {"a": 0.5}, "ignore": ["a"]}, "both ignored"),
        ({"per_layer": {"a": 0}}, r"per_layer\['a'\] is the fraction of its channels kept, in \(0, 1\]"),
    ])
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(SurgeryError, match=match):
            kerasnb.prune_global(deep_mlp(), **kwargs)

    def test_one_rebuild_and_a_report(self):
        """One Prune edit per pruned group, applied together; kerasnb.apply(edits) gives the same model."""
        model = cnn()
        result = kerasnb.prune_global(model, keep=0.5)
        assert all(isinstance(e, kerasnb.Prune) for e in result.edits)
        again = kerasnb.apply(model, result.edits)
        assert again.model.count_params() == result.model.count_params()
        assert "pruned" in {row.status for row in result.report.rows}

    def test_plan_reuses_scores(self):
        """A plan's scores, passed to another plan, give the same choice without scoring again."""
        model = cnn()
        x, y = data()
        first = prune_global_plan(model, macs=0.6, by="taylor", data=(x, y))
        second = prune_global_plan(model, macs=0.6, scores=first.scores)  # no data needed
        assert second.removed == first.removed
        assert "MACs" in first.summary() and "->" in first.summary()


def test_criteria_reach_inside_a_nested_model():
    """A producer inside a nested model is scored by path; its ReLU may sit outside the nested model."""
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu", name="inner_a"),
                              L.Dense(4, name="inner_b")], name="encoder")
    inputs = keras.Input((6,), name="x")
    model = keras.Model(inputs, L.Dense(2, name="head")(L.ReLU(name="r")(inner(inputs))))
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    after_relu = to_numpy(keras.Model(inputs, model.get_layer("r").output)(x))
    np.testing.assert_allclose(kerasnb.importance(model, "encoder/inner_b", by="apoz", data=x),
                               1 - (after_relu == 0).mean(axis=0))
    before = snapshot(model)
    result = kerasnb.prune_global(model, keep=0.6, by="taylor", data=x)
    assert_unchanged(model, before)
    assert sum(e.target.startswith("encoder/") for e in result.edits) == len(result.edits) > 0


def test_grouped_convolution_keeps_equal_counts_per_group():
    """Channels read or made by a grouped convolution go in equal numbers from each of its groups."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.Conv2D(16, 3, padding="same", groups=4, activation="relu", name="g")(x)
    x = L.Conv2D(8, 1, activation="relu", name="c3")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x)))
    result = kerasnb.prune_global(model, keep=0.5)
    for name in ("c1", "g"):
        removed = np.asarray(next(e.channels for e in result.edits if e.target == name))
        assert np.bincount(removed // 4, minlength=4).tolist() == [len(removed) // 4] * 4
    plan = prune_global_plan(model, keep=0.5)
    assert (plan.params_after, plan.macs_after) == (result.model.count_params(), total_macs(result.model))


def test_data_as_a_keras_pydataset():
    """A keras.utils.PyDataset of (x, y) batches works like the arrays it holds."""
    x, y = data()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]

    model = cnn()
    np.testing.assert_allclose(kerasnb.importance(model, "c1", by="apoz", data=Batches()),
                               kerasnb.importance(model, "c1", by="apoz", data=(x, y)))


class TestGroupsACriterionCannotScore:
    """Network-slimming style: bn_scale ranks the groups followed by a BatchNorm; the others stay."""

    def test_bn_scale_prunes_only_the_groups_it_can_score_and_says_which_stayed(self):
        model = cnn()
        before = snapshot(model)
        result = kerasnb.prune_global(model, keep=0.5, by="bn_scale")
        new = result.model
        assert new.get_layer("c1").filters == 4  # half of the one group with a BatchNorm after it
        assert new.get_layer("c2").filters == 16 and new.get_layer("d1").units == 12
        note = result.notes[0]
        assert "cannot score were left as they are" in note and "'c2'" in note and "'d1'" in note
        assert_unchanged(model, before)

    def test_the_plan_skips_them_again_with_its_own_scores(self):
        model = cnn()
        first = prune_global_plan(model, keep=0.5, by="bn_scale")
        assert set(first.unscored) == {"c2", "d1"}
        again = prune_global_plan(model, keep=0.75, scores=first.scores)
        assert set(again.removed) == {"c1"} and len(again.removed["c1"]) == 2

    def test_a_per_layer_fraction_on_such_a_group_is_refused(self):
        with pytest.raises(InvalidEdit, match="per_layer names 'd1', which by='bn_scale' cannot score"):
            kerasnb.prune_global(cnn(), keep=0.5, by="bn_scale", per_layer={"d1": 0.5})

    def test_no_group_scorable_is_refused_with_what_works(self):
        with pytest.raises(InvalidEdit, match="cannot score any prunable group.*by='l1'"):
            kerasnb.prune_global(mlp(), keep=0.5, by="bn_scale")
