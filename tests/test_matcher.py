"""One matcher: the same ``match`` value selects the same layers in every verb that takes one.

replace_all, configure_all, enable_lora and prune_global(ignore=) each act on the layers a match
selects; here each is asked with the same values and the layers each acted on are read back from
its result (the edits, the LoRA layers, the channels left alone).
"""

import re

import keras
import numpy as np
import pytest
from keras import layers as L

import kerasnb
from kerasnb.lora import lora_layers


def flat():
    """Three prunable layers whose channels score 1..8 under l1: a global half removes 4 from each."""
    inputs = keras.Input((6, 6, 3), name="image")
    x = L.Conv2D(8, 1, name="conv_a")(inputs)
    x = L.Conv2D(8, 1, name="conv_b")(x)
    x = L.Dense(8, name="dense_a")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, L.Dense(2, name="head")(x), name="flat")
    for name in ("conv_a", "conv_b", "dense_a"):
        kernel = model.get_layer(name).kernel
        kernel.assign(np.ones(kernel.shape, "float32") * np.arange(1, 9, dtype="float32"))
    return model


def nested():
    """A Sequential inside: its layers have paths "block/..."."""
    block = keras.Sequential([keras.Input((6, 6, 8)), L.Conv2D(8, 1, name="conv_c")], name="block")
    inputs = keras.Input((6, 6, 3), name="image")
    x = block(L.Conv2D(8, 1, name="conv_a")(inputs))
    x = L.Dense(8, name="dense_a")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, L.Dense(2, name="head")(x), name="nested")


def selected_by_replace_all(model, match):
    return {e.target for e in kerasnb.replace_all(model, match, lambda layer: L.Identity()).edits}


def selected_by_configure_all(model, match):
    return {e.target for e in kerasnb.configure_all(model, match, activation="relu").edits}


def selected_by_enable_lora(model, match):
    return set(lora_layers(kerasnb.enable_lora(model, match, rank=1).model))


def selected_by_prune_global_ignore(model, match):
    """The prunable layers whose channels a global half left alone: the ignored ones."""
    pruned = kerasnb.prune_global(model, 0.5, ignore=match, by="l1").model  # 0.5: half of the channels go
    width = {"conv_a": "filters", "conv_b": "filters", "dense_a": "units"}
    return {name for name, attr in width.items()
            if getattr(pruned.get_layer(name), attr) == getattr(model.get_layer(name), attr)}


VERBS = [selected_by_replace_all, selected_by_configure_all, selected_by_enable_lora, selected_by_prune_global_ignore]
FLAT_MATCHES = {
    "glob": ("conv_*", {"conv_a", "conv_b"}),
    "name": ("dense_a", {"dense_a"}),
    "class": (L.Conv2D, {"conv_a", "conv_b"}),
    "classes": ((L.Conv2D, L.Dense), {"conv_a", "conv_b", "dense_a", "head"}),
    "regex": (re.compile(r"_a$"), {"conv_a", "dense_a"}),
    "predicate": (lambda path, layer: getattr(layer, "kernel", None) is not None and path.startswith("conv"),
                  {"conv_a", "conv_b"}),
    "list": (["conv_b", re.compile("^dense"), "h?ad"], {"conv_b", "dense_a", "head"}),
}


@pytest.fixture(scope="module")
def flat_model():
    return flat()


@pytest.mark.parametrize("verb", VERBS, ids=lambda f: f.__name__.replace("selected_by_", ""))
@pytest.mark.parametrize("key", list(FLAT_MATCHES))
def test_same_match_same_layers(flat_model, verb, key):
    """Every verb selects exactly the layers the match names (prune_global: of its prunable layers)."""
    match, expected = FLAT_MATCHES[key]
    if verb is selected_by_prune_global_ignore:
        expected = expected - {"head"}  # the model's output: never pruned, ignored or not
    assert verb(flat_model, match) == expected


def test_a_layer_object_matches_itself(flat_model):
    layer = flat_model.get_layer("conv_b")
    assert all(verb(flat_model, layer) == {"conv_b"} for verb in VERBS)


@pytest.fixture(scope="module")
def nested_model():
    return nested()


@pytest.mark.parametrize("verb", VERBS[:3], ids=lambda f: f.__name__.replace("selected_by_", ""))
@pytest.mark.parametrize("match, expected", [
    ("conv_*", {"conv_a", "block/conv_c"}),  # a glob on the last segment reaches any depth
    ("block/*", {"block/conv_c"}),  # ... and on the whole path
    ("conv_c", {"block/conv_c"}),  # a name at any depth
    (re.compile(r"^block/"), {"block/conv_c"}),
    (lambda path, layer: "/" in path and isinstance(layer, L.Conv2D), {"block/conv_c"}),
], ids=["glob", "path glob", "name", "regex", "predicate"])
def test_paths_at_any_depth(nested_model, verb, match, expected):
    assert verb(nested_model, match) == expected


@pytest.mark.parametrize("verb", VERBS, ids=lambda f: f.__name__.replace("selected_by_", ""))
def test_the_same_refusals(flat_model, verb):
    """A name that is no layer, a glob that matches nothing, a one-argument predicate: the same error
    from every verb."""
    with pytest.raises(kerasnb.LayerNotFound, match=r"No layer named 'conv_z'.*Did you mean 'conv_[ab]' or 'conv_[ab]'"):
        verb(flat_model, ["conv_a", "conv_z"])
    with pytest.raises(kerasnb.LayerNotFound, match=r"of model 'flat' matches 'zzz\*'\..*Received: \w+='zzz\*'"):
        verb(flat_model, "zzz*")
    with pytest.raises(kerasnb.InvalidEdit, match=r"takes two arguments, \(path, layer\)"):
        verb(flat_model, lambda layer: True)
