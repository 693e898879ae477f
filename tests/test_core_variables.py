"""Every variable of the original is in the result once, with its ties, or is reported removed.

Plain Keras models reproduce what keras-hub models do: a model that tracks a layer it never
calls (BASNet and its encoder's stem), a layer called as its own node that is also a sub-layer
of another layer (SAM3's ``detr_decoder.box_head``), two layers sharing one variable (an output
layer reusing an embedding's matrix). The whole-model check after every rebuild must catch a
rebuild that drops, unties or shares a variable.
"""

import keras
import numpy as np
import pytest
from conftest import to_numpy
from keras import layers as L
from keras import ops

import kerasnb
from kerasnb import _invariants, weights
from kerasnb.errors import InternalError, InvalidEdit, SurgeryError


@keras.saving.register_keras_serializable("kerasnb_test_variables")
class Refiner(L.Layer):
    """Holds a Dense it calls itself; the model also calls that Dense as a node of its own."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = L.Dense(units, name="inner")
        self.gate = L.Dense(units, name="gate")

    def build(self, shape):
        self.inner.build(shape)
        self.gate.build(shape)

    def call(self, x):
        return self.inner(x) * ops.sigmoid(self.gate(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("kerasnb_test_variables")
class TiedOutput(L.Layer):
    """Logits from an embedding's own matrix, as language models tie their output to their input."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, shape):
        if not self.embedding.built:
            self.embedding.build((None,))

    def call(self, x):
        return ops.matmul(x, ops.transpose(self.embedding.embeddings))

    def get_config(self):
        return {**super().get_config(), "embedding": keras.saving.serialize_keras_object(self.embedding)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["embedding"] = keras.saving.deserialize_keras_object(config["embedding"])
        return cls(**config)


def sublayer_node_model():
    x = keras.Input((4,), name="x")
    refiner = Refiner(4, name="refiner")
    y = refiner.inner(refiner(x))  # the sub-layer called again, as its own node
    return keras.Model(x, L.Dense(2, name="out")(y), name="refined")


def tied_model():
    ids = keras.Input((5,), dtype="int32", name="ids")
    embedding = L.Embedding(11, 6, name="emb")
    h = L.Dense(6, name="mix")(embedding(ids))
    return keras.Model(ids, TiedOutput(embedding, name="logits")(h), name="tied")


def uncalled_model():
    """Like BASNet: a block cut out of an encoder's graph is called; the encoder's stem never is."""
    x = keras.Input((6,), name="pixels")
    stem = L.Dense(8, name="stem")(x)
    b = L.Dense(8, name="stage2")(L.Dense(8, name="stage1")(stem))
    encoder = keras.Model(x, b, name="encoder")
    block = keras.Model(stem, b, name="block")
    inputs = keras.Input((8,), name="features")
    model = keras.Model(inputs, L.Dense(3, name="head")(block(inputs)), name="uses_block")
    model.encoder = encoder
    return model


def perturbed(model):
    rng = np.random.default_rng(0)
    for v in model.weights:  # no initialiser (zeros, ones) can hide a value that was not carried
        v.assign(to_numpy(v) + rng.normal(0, 0.1, v.shape).astype(v.dtype))
    return model


MODELS = {
    "sublayer_node": (sublayer_node_model, lambda: np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)),
    "tied": (tied_model, lambda: (np.arange(10).reshape(2, 5) % 11).astype("int32")),
    "uncalled": (uncalled_model, lambda: np.linspace(-1, 1, 16, dtype="float32").reshape(2, 8)),
}


# Keras before 3.15 lists no variable of a layer a functional model tracks but never calls (its
# count_params leaves them out too), so there is nothing to carry; asked of Keras, not its version.
lists_uncalled = pytest.mark.skipif(
    "stem/kernel" not in {v.path for v in uncalled_model().weights},
    reason="this Keras does not list the variables of layers a functional model tracks but never calls")


@pytest.fixture(scope="module")
def built():
    return {name: (perturbed(make()), data()) for name, (make, data) in MODELS.items()}


def ids(model) -> set:
    return {id(v) for v in model.weights}


def assert_same_variables(original, new, x):
    """Same parameters and variables (counted once each), none shared, same outputs."""
    assert new.count_params() == original.count_params()
    assert len(new.weights) == len(original.weights)  # Keras lists a shared variable once
    assert len(new.trainable_weights) == len(original.trainable_weights)
    assert not ids(new) & ids(original)
    np.testing.assert_array_equal(to_numpy(new(x)), to_numpy(original(x)))


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_keeps_every_variable_once(built, name):
    model, x = built[name]
    result = kerasnb.apply(model, [])
    assert_same_variables(model, result.model, x)


def test_sublayer_called_as_a_node_stays_one_layer(built):
    model, x = built["sublayer_node"]
    new = kerasnb.replace(model, "out", L.Dense(3, name="out3")).model
    assert new.get_layer("inner") is new.get_layer("refiner").inner
    assert not ids(new) & ids(model)
    # Trained through either path, the one variable moves for both.
    kernel = new.get_layer("refiner").inner.kernel
    kernel.assign(to_numpy(kernel) * 0)
    np.testing.assert_array_equal(to_numpy(new.get_layer("inner").kernel), 0)


def test_an_edit_of_the_shared_sublayer_alone_is_refused(built):
    model, _ = built["sublayer_node"]
    with pytest.raises(InvalidEdit, match="also a sub-layer of 'refiner'"):
        kerasnb.configure(model, "inner", units=8)


def test_tied_output_keeps_the_embedding_it_reuses(built):
    model, x = built["tied"]
    result = kerasnb.insert(model, L.Dense(6, name="extra"), after="mix")
    new = result.model
    assert new.get_layer("logits").embedding is new.get_layer("emb")
    assert len(new.weights) == len(model.weights) + 2
    assert result.report.status("emb") == "kept" and result.report.status("logits") == "kept_input_changed"


@lists_uncalled
def test_uncalled_layers_are_carried_with_their_values(built):
    model, x = built["uncalled"]
    result = kerasnb.replace(model, "head", L.Dense(5, name="head5"))
    new = result.model
    (stem,) = new.uncalled_layers
    old_stem = model.encoder.get_layer("stem")
    assert stem is not old_stem and not ids(stem) & ids(old_stem)
    for o, n in zip(old_stem.weights, stem.weights):
        np.testing.assert_array_equal(to_numpy(n), to_numpy(o))
    assert any("'encoder/stem' (56 params) are tracked by the model but never called" in n for n in result.notes)
    # The next edit, of the edited model, carries them again.
    again = kerasnb.apply(new, [])
    assert again.model.count_params() == new.count_params()
    assert not ids(again.model) & ids(new)


# ----------------------------------------------------------------------------- the check itself


def test_check_catches_a_rule_that_drops_a_variable(built, monkeypatch):
    model, _ = built["tied"]
    carry = weights.carry

    def drops_the_last(old, new):
        outcome = carry(old, new)
        outcome.values = outcome.values[:-1]
        return outcome

    monkeypatch.setattr(weights, "carry", drops_the_last)
    with pytest.raises(InternalError, match=r"kerasnb bug: the weights of '(mix|logits)' were reported copied, but "
                                            r"its new variables \['(mix/bias|emb/embeddings)'\] got no value"):
        kerasnb.apply(model, [])


def test_check_catches_an_untied_variable(built, monkeypatch):
    model, _ = built["sublayer_node"]
    monkeypatch.setattr(_invariants, "shared_sublayer", lambda rebuild, op: None)
    with pytest.raises(InternalError, match=r"shared by several layers of the original are separate copies .*"
                                            r"'refiner/inner/kernel'"):
        kerasnb.apply(model, [])


@lists_uncalled
def test_check_catches_a_dropped_variable(built, monkeypatch):
    model, _ = built["uncalled"]
    monkeypatch.setattr(_invariants, "carry_uncalled", lambda model, new_model, state: None)
    with pytest.raises(InternalError, match=r"neither in the edited model nor in the report: 'stem/kernel', 'stem/bias'"):
        kerasnb.apply(model, [])


@lists_uncalled
def test_check_catches_a_variable_shared_with_the_original(built, monkeypatch):
    model, _ = built["uncalled"]
    monkeypatch.setattr(_invariants, "_copy", lambda layer: layer)
    with pytest.raises(InternalError, match=r"holds variables of the model it was made from: 'stem/kernel'") as info:
        kerasnb.apply(model, [])
    assert isinstance(info.value, SurgeryError)
    assert not hasattr(model, "uncalled_layers")  # the user's model is left as it was


# ----------------------------------------------------------------------------- keras-hub


def test_sam3_keeps_the_box_head_tied_to_its_decoder():
    if keras.backend.backend() == "torch":
        pytest.importorskip("torchvision", reason="keras-hub's SAM3 calls torchvision's roi_align on PyTorch")
    hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
    from keras_hub.src.models.sam3 import (sam3_detr_decoder, sam3_detr_encoder, sam3_geometry_encoder,
                                           sam3_mask_decoder, sam3_text_encoder, sam3_vision_encoder)

    size = 28  # the tiny configuration of keras-hub's own SAM3 backbone test
    model = hub.models.SAM3PromptableConceptBackbone(
        vision_encoder=sam3_vision_encoder.SAM3VisionEncoder(
            image_shape=(size, size, 3), patch_size=14, num_layers=2, hidden_dim=16, intermediate_dim=32,
            num_heads=2, fpn_hidden_dim=16, fpn_scale_factors=[4.0, 2.0, 1.0, 0.5], pretrain_image_shape=(42, 42, 3),
            window_size=2, global_attn_indexes=[1, 2]),
        text_encoder=sam3_text_encoder.SAM3TextEncoder(vocabulary_size=32, embedding_dim=16, hidden_dim=16,
                                                       num_layers=2, num_heads=2, intermediate_dim=32),
        geometry_encoder=sam3_geometry_encoder.SAM3GeometryEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32,
                                                                   num_heads=2, roi_size=7),
        detr_encoder=sam3_detr_encoder.SAM3DetrEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32, num_heads=2),
        detr_decoder=sam3_detr_decoder.SAM3DetrDecoder(image_shape=(size, size, 3), patch_size=14, num_layers=2,
                                                       hidden_dim=16, intermediate_dim=32, num_heads=2, num_queries=8),
        mask_decoder=sam3_mask_decoder.SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=16, num_heads=2),
    )
    perturbed(model)
    rng = np.random.default_rng(1)
    x = {"pixel_values": rng.normal(size=(1, size, size, 3)).astype("float32"),
         "token_ids": rng.integers(1, 32, size=(1, 32)).astype("int32"), "padding_mask": np.ones((1, 32), "bool"),
         "boxes": rng.uniform(size=(1, 1, 5)).astype("float32"), "box_labels": np.ones((1, 1), "int32")}
    new = kerasnb.apply(model, []).model
    assert new.count_params() == model.count_params()
    assert len(new.weights) == len(model.weights) and not ids(new) & ids(model)
    assert new.get_layer("box_head") is new.get_layer(model.detr_decoder.name).box_head
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(new(x))):
        np.testing.assert_array_equal(to_numpy(b), to_numpy(a))


@lists_uncalled
def test_a_task_keeps_what_its_backbone_tracks_but_never_calls():
    hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")
    backbone = hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                       intermediate_dim=32, max_sequence_length=12)
    probe = L.Dense(3, name="probe")
    probe.build((None, 16))
    backbone.probes = [probe]  # tracked, never called
    task = hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    result = kerasnb.apply(task, [])
    assert type(result.model) is type(task)
    assert result.model.count_params() == task.count_params()
    (copy,) = result.model.backbone.uncalled_layers
    assert copy is not probe
    np.testing.assert_array_equal(to_numpy(copy.kernel), to_numpy(probe.kernel))
