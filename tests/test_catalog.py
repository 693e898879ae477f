"""The replacement catalog (built-in types, registration, backbones without downloads) and the dry run
(:mod:`kerasnb.fitting`) that says where a type fits."""

import keras
import pytest

import kerasnb
import kerasnb.catalog as catalog
import kerasnb.fitting as fitting


@pytest.fixture
def clean_registry():
    """Put the registry back as it was after a test registers its own types."""
    before = dict(catalog._REGISTRY)
    yield
    catalog._REGISTRY.clear()
    catalog._REGISTRY.update(before)


def image_model():
    """The seed's third example, small: a Dense over pixels that a backbone can stand in for."""
    inputs = keras.Input((40, 40, 3), name="image")
    x = keras.layers.Dense(8, activation="relu", name="pixels")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, out, name="small_cnn")


class TestEntries:
    def test_builtins_in_dropdown_order(self):
        """Keep comes first; the types the issue lists are all there."""
        labels = [e.label for e in catalog.entries()]
        assert labels[0] == "Keep"
        for wanted in ("Remove (identity)", "Dropout", "Dense", "Conv1D block", "BatchNormalization",
                       "LayerNormalization", "Activation", "VGG16 backbone (frozen)", "MobileNetV2 backbone (frozen)"):
            assert wanted in labels

    def test_dense_defaults_to_the_width_of_the_layer_it_replaces(self, make):
        model = make("seed_mlp")
        assert catalog.get("Dense").defaults(model.get_layer("dense_1")) == {"units": 32, "activation": "relu"}

    def test_unknown_parameter_is_refused_in_plain_words(self, make):
        with pytest.raises(ValueError, match="'Dropout' has no parameter units; it takes rate"):
            catalog.get("Dropout").make(None, (None, 4), units=3)

    def test_unknown_label_suggests_a_close_one(self):
        with pytest.raises(KeyError, match="Did you mean 'Dropout'"):
            catalog.get("Dropuot")

    def test_register_replacement_adds_a_type(self, make, clean_registry):
        @kerasnb.catalog.register_replacement("Noise", params={"stddev": 0.1})
        def noise(layer, input_shape, stddev):
            return keras.layers.GaussianNoise(stddev)

        entry = catalog.get("Noise")
        assert catalog.entries()[-1] is entry
        made = entry.make(None, (None, 4), stddev=0.3)
        assert isinstance(made, keras.layers.GaussianNoise) and made.stddev == 0.3
        assert fitting.fits(entry, make("seed_mlp"), "dense_1") == (True, "")

    def test_catalog_errors_are_surgery_errors_that_say_what_would_work(self):
        """Unknown labels, unknown parameters and out-of-range values: SurgeryErrors, still Key/ValueErrors."""
        with pytest.raises(kerasnb.SurgeryError, match="Known types: Keep, Remove \\(identity\\), Dropout") as caught:
            catalog.get("NoSuchType")
        assert isinstance(caught.value, KeyError) and str(caught.value).startswith("No replacement type 'NoSuchType'")
        with pytest.raises(kerasnb.SurgeryError, match=r"0 <= rate < 1. Received: rate=5"):
            catalog.get("Dropout").make(None, (None, 4), rate=5)
        with pytest.raises(kerasnb.SurgeryError, match=r"whole number with 1 <= units. Received: units=-3"):
            catalog.get("Dense").make(None, (None, 4), units=-3)
        with pytest.raises(kerasnb.SurgeryError, match=r"one of 'relu', .*Received: activation='nope'"):
            catalog.get("Dense").make(None, (None, 4), activation="nope")

    def test_registered_limits_are_checked_before_building(self, clean_registry):
        built = []

        @kerasnb.catalog.register_replacement("Noise", params={"stddev": 0.1},
                                              limits={"stddev": catalog.Range(0, None, low_open=True)})
        def noise(layer, input_shape, stddev):
            built.append(stddev)
            return keras.layers.GaussianNoise(stddev)

        with pytest.raises(catalog.InvalidParameter, match=r"0 < stddev. Received: stddev=-1"):
            catalog.get("Noise").make(None, (None, 4), stddev=-1)
        assert built == []
        assert catalog.get("Noise").accepts() == "stddev: a number, 0 < stddev"

    def test_defaults_follow_the_layer_being_replaced(self):
        """A softmax output replaced by Dense stays softmax; an insert after it starts from relu."""
        inputs = keras.Input((6,))
        out = keras.layers.Dense(10, activation="softmax", name="probs")(keras.layers.Dense(8, name="h")(inputs))
        model = keras.Model(inputs, out)
        probs = model.get_layer("probs")
        assert catalog.get("Dense").defaults(probs) == {"units": 10, "activation": "softmax"}
        assert catalog.get("Dense").defaults(model.get_layer("h")) == {"units": 8, "activation": "linear"}
        assert catalog.get("Dense").defaults(probs, replacing=False)["activation"] == "relu"
        assert catalog.get("Activation").defaults(probs) == {"activation": "softmax"}
        block = catalog.get("Conv1D block").defaults(probs)
        assert block["output_activation"] == "softmax" and block["activation"] == "relu"
        assert catalog.get("Dense").defaults(keras.layers.Dropout(0.1))["activation"] == "relu"  # no such option

    def test_keep_label_is_reserved(self):
        with pytest.raises(ValueError, match="reserved"):
            catalog.register_replacement("Keep")


class TestCatalogErrors:
    """Every error the registry raises is a SurgeryError naming what it got and what would work."""

    @pytest.mark.parametrize("call, words", [
        (lambda: catalog.register_replacement(""), ["non-empty text label", "label=''"]),
        (lambda: catalog.register_replacement("Keep"), ["reserved", "label='Keep'"]),
        (lambda: catalog.register_replacement("X", params=["rate"]), ["params maps", "params=['rate']"]),
        (lambda: catalog.register_replacement("X", params={"a b": 1}), ["identifier", "'a b'"]),
        (lambda: catalog.register_replacement("X", params={"rate": 0.1}, limits={"units": catalog.Range(1)}),
         ["does not take: units", "it takes rate", "Received: limits="]),
        (lambda: catalog.register_replacement("X", params={"rate": 0.1}, limits={"rate": (0, 1)}),
         ["catalog.Range", "Received: limits="]),
        (lambda: catalog.register_replacement("X", kind="keep"), ["'replace', 'remove'", "kind='keep'"]),
        (lambda: catalog.register_replacement("X", params={"act": ()}), ["at least one", "act=()"]),
        (lambda: catalog.register_replacement("X", check="no"), ["check is a function", "check='no'"]),
        (lambda: catalog.register_replacement("X")("not a function"), ["decorates a function", "'not a function'"]),
        (lambda: catalog.Range(2, 1), ["must not exceed", "low=2, high=1"]),
        (lambda: catalog.Range("0"), ["a number or None", "low='0'"]),
        (lambda: catalog.Choices("relu"), ["list or tuple", "options='relu'"]),
        (lambda: catalog.Choices(()), ["at least one value", "options=()"]),
        (lambda: catalog.Choices(("a",), from_layer="activation"), ["from_layer is a function", "from_layer="]),
        (lambda: catalog.cached_weights("ResNet", (None, 64, 64, 3)), ["Known backbones: VGG16", "backbone='ResNet'"]),
    ])
    def test_bad_calls_are_refused_in_plain_words(self, call, words, clean_registry):
        with pytest.raises(kerasnb.SurgeryError) as caught:
            call()
        for word in words:
            assert word in str(caught.value), (word, str(caught.value))
        assert "X" not in catalog._REGISTRY  # nothing half-registered

    def test_a_default_that_cannot_be_worked_out_says_to_give_the_value(self, clean_registry):
        @catalog.register_replacement("Scaled", params={"width": lambda layer: layer.units * 2})
        def scaled(layer, input_shape, width):
            return keras.layers.Dense(width)

        entry = catalog.get("Scaled")
        with pytest.raises(catalog.InvalidParameter, match="default of 'width' for layer 'flat'.*Give width="):
            entry.defaults(keras.layers.Flatten(name="flat"))
        assert entry.check_params({"width": 6}, keras.layers.Flatten()) == {"width": 6}  # given: no default needed


class TestFits:
    def test_simple_types_fit_a_dense_layer(self, make):
        model = make("seed_mlp")
        for label in ("Remove (identity)", "Dropout", "Dense", "Conv1D block", "BatchNormalization", "Activation"):
            assert fitting.fits(label, model, "dense_1") == (True, ""), label

    def test_backbones_need_images(self, make):
        ok, reason = fitting.fits("VGG16 backbone (frozen)", make("seed_mlp"), "dense_1")
        assert not ok and "needs images" in reason and "(None, 64)" in reason

    def test_shape_change_before_a_merge_is_refused_with_the_shapes(self, make):
        ok, reason = fitting.fits("Dense", make("residual"), "res_conv2", units=3)
        assert not ok
        assert "(None, 8, 8, 3)" in reason and "merge 'res_add'" in reason

    def test_next_layer_that_cannot_take_the_new_shape_is_named(self):
        inputs = keras.Input((6, 6, 3))
        x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
        out = keras.layers.Conv2D(2, 3, name="c2")(x)
        model = keras.Model(inputs, out)
        ok, reason = fitting.fits("Conv1D block", model, "c1")
        assert not ok and "'c2'" in reason

    def test_dry_run_makes_no_weights(self, monkeypatch):
        """A Dense over a huge flattened input costs nothing to check: only shapes are computed."""
        inputs = keras.Input((4096,))
        out = keras.layers.Dense(4096, name="wide")(inputs)
        model = keras.Model(inputs, out)
        made, real = [], keras.layers.Layer.add_weight
        monkeypatch.setattr(keras.layers.Layer, "add_weight",
                            lambda self, *a, **k: made.append(self.name) or real(self, *a, **k))
        assert fitting.fits("Conv1D block", model, "wide", filters=64)[0]
        assert made == []

    def test_backbone_output_must_suit_the_next_layer(self):
        """VGG16 + pooling gives (batch, 512); a pooling layer after it wants images."""
        inputs = keras.Input((40, 40, 3))
        x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
        out = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        ok, reason = fitting.fits("VGG16 backbone (frozen)", keras.Model(inputs, out), "conv")
        assert not ok and "'gap'" in reason and "rank 4" in reason

    def test_input_layers_are_not_replaced(self, make):
        ok, reason = fitting.fits("Dropout", make("seed_mlp"), "input_layer")
        assert not ok and "input" in reason


    def test_each_call_of_a_shared_layer_is_checked_with_its_own_shapes(self):
        """One Conv1D called on a long and a short sequence: call 1 gets call 1's shapes."""
        long_in, short_in = keras.Input((9, 3), name="long"), keras.Input((5, 3), name="short")
        conv = keras.layers.Conv1D(4, 3, name="conv")
        pooled = [keras.layers.GlobalAveragePooling1D(name=f"gap{i}")(conv(t)) for i, t in enumerate((long_in, short_in))]
        model = keras.Model([long_in, short_in], keras.layers.Concatenate(name="cat")(pooled))
        assert fitting.locate(model, ("conv", 0)).input_shape == (None, 9, 3)
        site = fitting.locate(model, ("conv", 1))
        assert (site.input_shape, site.output_shape) == ((None, 5, 3), (None, 3, 4))
        with pytest.raises(kerasnb.AmbiguousTarget, match=r"\('conv', 0\), \('conv', 1\)"):
            fitting.locate(model, "conv")  # as in the core: a shared layer needs its call index
        assert fitting.fits("Dropout", model, ("conv", 1)) == (True, "")
        ok, reason = fitting.fits("Conv1D block", model, ("conv", 1))  # flattens: the call's own next layer refuses
        assert not ok and "'gap1'" in reason
        assert "'gap0'" in fitting.fits("Conv1D block", model, ("conv", 0))[1]
        with pytest.raises(kerasnb.LayerNotFound, match="call index 2 does not exist"):
            fitting.locate(model, ("conv", 2))


    def test_fitting_errors_are_surgery_errors_with_a_short_reason(self, make):
        """What the dry run cannot take is DoesNotFit (an IncompatibleShape); its reason is the short form."""
        model = make("seed_mlp")
        with pytest.raises(fitting.DoesNotFit, match=r"kernel_size 9 is longer.*Received: input_shape=\(None, 4\)") as caught:
            fitting.dry_run("Conv1D block", model.get_layer("dense"), (None, 4), kernel_size=9)
        assert isinstance(caught.value, kerasnb.IncompatibleShape)
        assert caught.value.reason == "kernel_size 9 is longer than the 4 steps it would slide over"
        with pytest.raises(fitting.DoesNotFit, match="expects rank 4") as caught:
            fitting.output_shape_of(keras.layers.GlobalAveragePooling2D(), (None, 8))
        assert "Received: shape=(None, 8)" in str(caught.value)
        with pytest.raises(catalog.InvalidParameter, match="rate=2"):
            fitting.dry_run("Dropout", None, (None, 4), rate=2)
        assert fitting.fits("Dropout", model, "dense_1", rate=2)[0] is False  # an answer, not an error
        with pytest.raises(catalog.UnknownType, match="Known types"):
            fitting.fits("Dropuot", model, "dense_1")
        with pytest.raises(kerasnb.LayerNotFound, match="Did you mean 'dense_1'"):
            fitting.locate(model, "dens_1")
        with pytest.raises(kerasnb.InvalidEdit, match="Received: model=None"):
            fitting.fits("Dropout", None, "dense_1")

    def test_a_registered_type_that_fails_in_its_own_code_does_not_fit(self, make, clean_registry):
        @catalog.register_replacement("Declared", output=lambda shape: 1 / 0)
        def declared(layer, input_shape):
            return keras.layers.Dropout(0.1)

        ok, reason = fitting.fits("Declared", make("seed_mlp"), "dense_1")
        assert not ok and "division by zero" in reason

    def test_fits_after_is_the_insert_check(self, make):
        model = make("residual")
        site = fitting.locate(model, "res_conv2")
        assert fitting.fits_after("BatchNormalization", site) == (True, "")
        ok, reason = fitting.fits_after("Dense", site, units=3)
        assert not ok and "merge 'res_add'" in reason
        assert fitting.fits_after("Conv1D block", site) == (False, "'Conv1D block' cannot be inserted")


class TestBuiltinsThroughTheCore:
    def test_conv1d_block_keeps_the_width_for_the_next_layer(self, make):
        """The seed's second example: Reshape -> Conv1D -> Flatten, back to the width dense_2 expects."""
        model = make("seed_mlp")
        block = catalog.get("Conv1D block").make(model.get_layer("dense_1"), (None, 64), filters=16, kernel_size=3)
        result = kerasnb.replace(model, "dense_1", block)
        types = [type(l).__name__ for l in result.model.layers]
        assert types[2:6] == ["Reshape", "Conv1D", "Flatten", "Dense"]
        assert result.report.status("dense_2") == "kept_input_changed"  # its weights still fit
        assert tuple(result.model.output.shape) == (None, 1)

    def test_backbone_without_cache_uses_random_weights_and_says_so(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path))
        model = image_model()
        entry = catalog.get("VGG16 backbone (frozen)")
        assert fitting.fits(entry, model, "pixels") == (True, "")
        result = kerasnb.replace(model, "pixels", entry.make(model.get_layer("pixels"), (None, 40, 40, 3)))
        backbone = result.model.get_layer("vgg16_random_init")
        assert backbone.trainable is False
        assert result.report.status("vgg16_random_init") == "new"
        assert "random weights" in entry.note((None, 40, 40, 3))
        assert not list(tmp_path.rglob("*.h5"))  # nothing was downloaded

    def test_backbone_sees_imagenet_file_in_keras_cache(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path))
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"")
        assert catalog.cached_weights("VGG16", (None, 64, 64, 3)).endswith("notop.h5")
        assert "ImageNet weights from Keras's cache" in catalog.get("VGG16 backbone (frozen)").note((None, 64, 64, 3))
        assert catalog.cached_weights("MobileNetV2", (None, 96, 96, 3)) is None
