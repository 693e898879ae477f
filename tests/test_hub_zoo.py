"""The keras-hub zoo: every ``keras_hub.models.*Backbone`` family through kerasnb's operations.

Each family is built tiny with perturbed weights and run in a subprocess by
``tests/hub_zoo/run_family.py`` (two at a time, a few families per process); this test reads the
results back. Round trip, save/load of the edited model, freeze and one fit step must pass;
every other operation must pass or be refused with a clear ``SurgeryError``, never fail (a raw
exception, or a result that differs from what its report says). ``KNOWN_LIMITS`` lists what
keras-hub itself cannot do, with the reason.

    pytest tests/test_hub_zoo.py                      # every family
    pytest tests/test_hub_zoo.py -k "Bert or GPT2"     # some families (test ids are family names)
    python tests/hub_zoo/run_family.py --all --markdown zoo.md   # the table of outcomes
"""

import os
import sys

import pytest

pytest.importorskip("keras_hub", reason="keras-hub is not installed (.ci/run installs it)")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "hub_zoo"))
import families as F  # noqa: E402
import run_family as zoo  # noqa: E402

# Operations every family must pass, unless KNOWN_LIMITS says keras-hub itself cannot.
DEMANDED = ("build", "round_trip", "save_load", "freeze", "fit", "original_untouched")

# family -> {operation: why keras-hub itself cannot do it}. Each entry is checked against the
# keras-hub baseline the driver runs on the ORIGINAL model ("hub_save": the unedited backbone
# saved and loaded; "hub_fit": the unedited backbone trained one step), so a limit that keras-hub
# no longer has shows up as a failure here and the entry can go.
# Empty on keras-hub 0.32.0: every one of the 74 originals saves, loads to the same outputs and
# trains a step (run_family.py --all --baselines). Layer-level get_config() defects (Llama's
# decoder, Qwen3's, Swin's, ViT's patching ...; the "keras-hub: layer configs" column) are no
# limit of the backbone: its own config rebuilds it, so kerasnb has a route and must take it.
KNOWN_LIMITS: dict = {}

# family -> {operation: the SurgeryError kerasnb raises, and why}: what kerasnb knowingly cannot do
# yet and refuses with that error (never silently). The entry is demanded as written: a pass means
# the entry can go, any other failure fails the test.
KERASNB_REFUSES = {
    # A layer kerasnb takes from the model made again from its own config (its own get_config()
    # cannot make it) has no config to write, so the edited model's save() raises UnsupportedLayer
    # naming it (save_weights() works); the round trip, edits and training are exact.
    "Flux": {"save_load": "UnsupportedLayer"},      # its blocks: arguments not kept anywhere
    "Gemma3n": {"save_load": "UnsupportedLayer"},   # the multimodal processor (shares the text model)
    "SwinTransformer": {"save_load": "UnsupportedLayer"},  # patch embedding: get_config() raises
}

# family -> {operation: what it fails with}: kerasnb bugs found by the zoo and not fixed yet, held
# here as they are (the test fails when they change, so a fix removes the entry), never hidden.
KNOWN_FAILURES = {
    # The result keeps box_head tied to the decoder (one object at two places); Keras's .keras
    # loader then misses the variables of the decoder's copy of it.
    "SAM3PromptableConcept": {"save_load": "A total of 3 objects could not be loaded"},
}


def _baseline_of(op):
    return {"save_load": "hub_save", "fit": "hub_fit"}.get(op)


@pytest.fixture(scope="session")
def zoo_results(request):
    """Run the families this session selected, in subprocesses, once."""
    wanted = sorted({item.callspec.params["family"] for item in request.session.items
                     if item.originalname == "test_family" and hasattr(item, "callspec")})
    return zoo.run_families(wanted, jobs=2, per_process=3)


def test_every_backbone_class_is_in_the_zoo():
    import keras_hub

    exported = {name for name in dir(keras_hub.models) if name.endswith("Backbone")} - F.NOT_FAMILIES
    families = {name[: -len("Backbone")] for name in exported} - set(F.ALIASES)
    assert families == set(F.BUILDERS), (
        f"not in the zoo: {sorted(families - set(F.BUILDERS))}; "
        f"in the zoo but not exported: {sorted(set(F.BUILDERS) - families)}")
    for alias, family in F.ALIASES.items():
        assert getattr(keras_hub.models, alias + "Backbone") is getattr(keras_hub.models, family + "Backbone")


@pytest.mark.parametrize("family", sorted(F.BUILDERS))
def test_family(family, zoo_results):
    ops = zoo_results[family]["ops"]
    limits = KNOWN_LIMITS.get(family, {})
    refusals = KERASNB_REFUSES.get(family, {})
    problems = []
    for op in DEMANDED:
        entry = ops.get(op, {"status": "missing", "detail": ""})
        if op in KNOWN_FAILURES.get(family, {}):
            if KNOWN_FAILURES[family][op] not in entry["detail"]:
                problems.append(f"{op}: listed in KNOWN_FAILURES ({KNOWN_FAILURES[family][op]!r}) but now "
                                f"{entry['status']}: {entry['detail']}")
            continue
        if op in refusals:
            if entry["status"] == "pass":
                problems.append(f"{op}: listed in KERASNB_REFUSES but it passes now: remove the entry")
            elif f"{refusals[op]}:" not in entry["detail"]:
                problems.append(f"{op} must be refused with {refusals[op]}: {entry['status']}: {entry['detail']}")
            continue
        if op in limits:
            baseline = ops.get(_baseline_of(op) or "", {}).get("status")
            if baseline == "pass":
                problems.append(f"{op}: listed in KNOWN_LIMITS ({limits[op]}) but keras-hub now does it")
            continue
        if entry["status"] != "pass":
            problems.append(f"{op} must pass: {entry['status']}: {entry['detail']}")
    for op, entry in ops.items():
        if op in DEMANDED or op in limits or op.startswith("hub_"):
            continue
        if entry["status"] == "fail":
            problems.append(f"{op}: {entry['detail']}")
        elif entry["status"] == "refused" and len(entry["detail"]) < 40:
            problems.append(f"{op}: refused without a clear message: {entry['detail']!r}")
    assert not problems, f"{family}:\n  " + "\n  ".join(problems)
