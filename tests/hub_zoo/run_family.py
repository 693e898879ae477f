"""Run kerasnb's operations on keras-hub backbone families and say, per operation, what happened.

    python tests/hub_zoo/run_family.py Bert GPT2          # in this process, one JSON line per family
    python tests/hub_zoo/run_family.py --all --markdown zoo.md   # every family, 2 subprocesses at a time

Each family is built tiny (``families.py``) with every float weight moved by seeded noise, so no
initialiser can hide a value that was not carried. Per operation the outcome is ``pass``,
``refused`` (a ``kerasnb.SurgeryError``; its message is kept), ``n/a`` (the family has no such part,
e.g. no MultiHeadAttention) or ``fail`` (a raw exception, or a result that differs from what its
report says). ``tests/test_hub_zoo.py`` reads these results and decides what must pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MARK = "ZOO-RESULT "

# Operations in the order they run, with the column titles of the table.
OPERATIONS = {
    "round_trip": "round trip",
    "replace": "replace",
    "block_drop": "block drop",
    "lora": "LoRA enable",
    "lora_merge": "LoRA merge",
    "prune_heads": "head prune",
    "freeze": "freeze",
    "save_load": "save/load edited",
    "fit": "fit step",
    "original_untouched": "original untouched",
    "hub_save": "keras-hub: save/load original",
    "hub_fit": "keras-hub: fit original",
    "hub_layer_configs": "keras-hub: layer configs",
}


class Failure(Exception):
    """The operation ran but its result is wrong (differs, lost a variable, shares one ...)."""


class NotApplicable(Exception):
    """The family has nothing this operation applies to."""


# ============================================================================ in the subprocess


def _np(x):
    import keras
    import numpy as np

    return np.asarray(keras.ops.convert_to_numpy(x))


def _flat_outputs(model, x):
    import keras

    return [_np(t) for t in keras.tree.flatten(model(x, training=False))]


def _max_diff(a, b):
    import numpy as np

    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    if a.dtype.kind in "biu":
        return float(np.max(np.abs(a.astype("int64") - b.astype("int64"))))
    with np.errstate(invalid="ignore"):
        d = np.abs(a.astype("float64") - b.astype("float64"))
    same_nan = np.isnan(a.astype("float64")) & np.isnan(b.astype("float64"))
    d = np.where(same_nan, 0.0, d)
    return float(np.nanmax(np.where(np.isnan(d), np.inf, d)))


def _compare_outputs(before, after, atol, what, relative=False):
    """Failure unless every output is within atol (times the output's scale when relative)."""
    import numpy as np

    if len(before) != len(after):
        raise Failure(f"{what}: {len(after)} outputs, the original has {len(before)}")
    worst = 0.0
    for i, (a, b) in enumerate(zip(before, after)):
        diff = _max_diff(a, b)
        scale = max(1.0, float(np.max(np.abs(a))) if a.size and a.dtype.kind == "f" else 1.0) if relative else 1.0
        if not diff <= atol * scale:
            raise Failure(f"{what}: output {i} {a.shape} differs by {diff:.3g} (allowed {atol * scale:.3g})")
        worst = max(worst, diff)
    return worst


def _perturb(model, seed=0):
    """Move every float weight by seeded noise (variances stay positive)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for v in _unique(model.weights):
        value = _np(v)
        if value.dtype.kind != "f":
            continue
        noise = rng.normal(size=value.shape).astype(value.dtype)
        if "variance" in v.path:
            value = value * (1.0 + 0.1 * np.abs(noise))
        else:
            value = value + 0.05 * noise
        v.assign(value)
    _rederive(model)


def _rederive(model):
    """Recompute what keras-hub derives from other variables, as its own loading would.

    DINOV2's embedding keeps its position embeddings resized to the image in a variable of its
    own; on save it writes that one back over the position embeddings when the two disagree, and
    on load it resizes them again. Moved apart by the noise, they would make a state no real
    model has, and the saved file would differ from the model.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if hasattr(layer, "interpolated_position_embeddings") and hasattr(layer, "_interpolate_position_embeddings"):
            layer.interpolated_position_embeddings.assign(layer._interpolate_position_embeddings(
                layer.position_embeddings, patch_size=layer.patch_size, source_shape=layer.position_embedding_shape,
                target_shape=layer.image_shape, antialias=layer.antialias_in_interpolation))


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _fingerprints(variables):
    """{(shape, dtype, hash of the value): [paths]} of the distinct float variables among ``variables``.

    The noise makes every float value unique, so a value found in a new model is the original's
    variable carried, whatever it is called there (names are regenerated on a rebuild).
    """
    import hashlib

    out = {}
    for v in _unique(variables):
        value = _np(v)
        if value.dtype.kind == "f":
            key = (value.shape, str(value.dtype), hashlib.sha1(value.tobytes()).hexdigest())
            out.setdefault(key, []).append(v.path)
    return out


def _check_carried(original, new, leave_out=()):
    """Every float variable of the original (but those of ``leave_out`` layers) is in ``new`` once."""
    skip = {id(v) for layer in leave_out for v in layer.weights}
    before = _fingerprints([v for v in original.weights if id(v) not in skip])
    after = _fingerprints(new.weights)
    missing = [p for key, paths in before.items() if key not in after for p in paths]
    doubled = [paths[0] for key, paths in before.items() if key in after and len(after[key]) > len(paths)]
    if missing:
        raise Failure(f"{len(missing)} variable(s) of the original not carried: {', '.join(missing[:4])}"
                      + (" ..." if len(missing) > 4 else ""))
    if doubled:
        raise Failure(f"{len(doubled)} variable(s) of the original carried twice (a tie broken?): "
                      f"{', '.join(doubled[:4])}")


def _check_not_shared(original, new):
    mine = {id(v) for v in original.variables}
    shared = [v.path for v in new.variables if id(v) in mine]
    if shared:
        raise Failure(f"{len(shared)} variable object(s) shared with the original: {', '.join(shared[:4])}")


def _nodes(model):
    """The call nodes of a functional model, from its inputs to its outputs."""
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _layer_nodes(model):
    """{layer name: [its call nodes in this graph]} for the layers of a functional model."""
    out = {}
    for node in _nodes(model):
        op = node.operation
        if op is None or type(op).__name__ == "InputLayer":
            continue
        out.setdefault(op.name, []).append(node)
    return out


def _downstream(model, layer_name):
    """Names of the layers whose calls read, directly or not, an output of ``layer_name``."""
    tainted, names = set(), set()
    for node in _nodes(model):
        op = node.operation
        if op is None:
            continue
        if op.name == layer_name or any(id(p) in tainted for p in node.parent_nodes):
            tainted.add(id(node))
            if op.name != layer_name:
                names.add(op.name)
    return names


def _status(report, name):
    try:
        return str(report.status(name))
    except Exception:
        return None


def _check_kept_honest(original, result, x, atol=0.0):
    """Every top-level layer the report calls ``kept`` computes what its source computed."""
    import keras

    old_nodes, new_nodes = _layer_nodes(original), _layer_nodes(result.model)
    pairs = []
    for row in result.report:
        if str(row.status) != "kept" or "/" in row.layer or row.layer not in new_nodes:
            continue
        source = row.source or row.layer
        if source not in old_nodes or len(old_nodes[source]) != len(new_nodes[row.layer]):
            continue
        pairs.append((row.layer, source))
    if not pairs:
        return 0
    try:
        new_probe = keras.Model(result.model.input, [[t for n in new_nodes[a] for t in n.output_tensors]
                                                     for a, _ in pairs])
        old_probe = keras.Model(original.input, [[t for n in old_nodes[b] for t in n.output_tensors]
                                                 for _, b in pairs])
    except Exception as error:  # a graph Keras cannot cut at its layers: compare the outputs only
        return f"(per-layer check not possible: {type(error).__name__})"
    new_values, old_values = new_probe(x, training=False), old_probe(x, training=False)
    differing = []
    for (name, _), new_list, old_list in zip(pairs, new_values, old_values):
        worst = max((_max_diff(_np(a), _np(b)) for a, b in zip(old_list, new_list)), default=0.0)
        if not worst <= atol:
            differing.append(f"{name} ({worst:.3g})")
    if differing:
        raise Failure(f"reported kept but computes something else: {', '.join(differing[:5])}")
    return len(pairs)


def _check_downstream_not_kept(original, result, name):
    ops = {node.operation.name: node.operation for node in _nodes(original) if node.operation is not None}
    later = [n for n in _downstream(original, name) if getattr(ops.get(n), "weights", None)]
    kept = [n for n in later if _status(result.report, n) == "kept"]
    if kept:
        raise Failure(f"layers after {name!r} reported kept although their input changed: {', '.join(kept[:5])}")
    return len(later)


# ----------------------------------------------------------------------------- choosing targets


def _is_keras_builtin(layer):
    return type(layer).__module__.startswith("keras.")


def _is_graph(layer):
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")


def _top_layers(model):
    nodes = _layer_nodes(model)
    return [l for l in model.layers if type(l).__name__ != "InputLayer" and len(nodes.get(l.name, [])) == 1]


def _deep_layers(model, prefix=""):
    """(path, layer) for every layer and sub-layer, paths as kerasnb reads them ("block/attention")."""
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        path = prefix + layer.name
        yield path, layer
        if _is_graph(layer):
            yield from _deep_layers(layer, path + "/")
        elif hasattr(layer, "_flatten_layers"):
            for sub in layer._flatten_layers(include_self=False, recursive=True):
                if getattr(sub, "path", None):
                    yield prefix + sub.path, sub


def _replace_target(model):
    """A simple top-level layer with weights and a same-type copy of it made from its config."""
    def rank(layer):
        kind = type(layer).__name__
        if _is_keras_builtin(layer):
            return 0 if "Normalization" in kind else 1 if kind == "Dense" else 2 if kind == "Dropout" else 3
        return 4 if "norm" in kind.lower() else 5
    candidates = [l for l in _top_layers(model) if not _is_graph(l) and (l.weights or type(l).__name__ == "Dropout")]
    for layer in sorted(candidates, key=rank):
        try:
            config = dict(layer.get_config())
            config["name"] = layer.name + "_twin"
            twin = type(layer).from_config(config)
        except Exception:
            continue
        return layer, twin
    raise NotApplicable("no top-level layer can be copied through its get_config()")


def _main_input_shape(node):
    import keras

    args = keras.tree.flatten(node.arguments.args) + keras.tree.flatten(list(node.arguments.kwargs.values()))
    tensors = [t for t in args if hasattr(t, "shape")]
    return tuple(tensors[0].shape) if tensors else None


def _block_target(model, prefix=""):
    """The first of a family's repeated blocks, as (path, layer), or None.

    Preferred: a top-level block with one output of its main input's shape (what delete is for);
    then one with several outputs (T5-style, may be refused); then blocks of a nested model; then
    blocks held inside a top-level layer ("vit_encoder/transformer_block_0", may be refused).
    """
    nodes = _layer_nodes(model)
    top = _top_layers(model)
    counts = {}
    for layer in top:
        counts[type(layer)] = counts.get(type(layer), 0) + 1
    blocks = [l for l in top if not _is_keras_builtin(l) and not _is_graph(l) and counts[type(l)] >= 2 and l.weights]
    for single in (True, False):
        for layer in blocks:
            node = nodes[layer.name][0]
            outputs = node.output_tensors
            if (len(outputs) == 1) == single and _main_input_shape(node) == tuple(outputs[0].shape):
                return prefix + layer.name, layer
    for layer in top:
        if _is_graph(layer):
            found = _block_target(layer, prefix + layer.name + "/")
            if found:
                return found
    for layer in top:
        if _is_graph(layer) or not hasattr(layer, "_flatten_layers"):
            continue
        subs = [sub for sub in layer._flatten_layers(include_self=False, recursive=True)
                if not _is_keras_builtin(sub) and sub.weights and getattr(sub, "path", None)]
        kinds = {}
        for sub in subs:
            kinds[type(sub)] = kinds.get(type(sub), 0) + 1
        repeated = [sub for sub in subs if kinds[type(sub)] >= 2]
        if repeated:
            return prefix + repeated[0].path, repeated[0]
    return None


def _lora_target(model):
    import keras

    kinds = (keras.layers.Dense, keras.layers.EinsumDense)
    found = [(p, l) for p, l in _deep_layers(model) if isinstance(l, kinds)]
    for word in ("query", "value", ""):
        for path, layer in found:
            if word in path.rsplit("/", 1)[-1] or (word and word in path):
                return path, layer
    convolutions = [(p, l) for p, l in _deep_layers(model) if isinstance(l, keras.layers.Conv2D)
                    and type(l).__name__ == "Conv2D"]  # kerasnb's LoRA also takes convolutions
    if convolutions:
        return convolutions[len(convolutions) // 2]
    raise NotApplicable("no Dense, EinsumDense or Conv2D layer")


def _attention_target(model):
    import keras

    found = [(p, l) for p, l in _deep_layers(model) if isinstance(l, keras.layers.MultiHeadAttention)]
    if not found:
        raise NotApplicable("no keras MultiHeadAttention")
    many = [(p, l) for p, l in found if int(l.num_heads) >= 2]
    if not many:
        raise NotApplicable("its MultiHeadAttention layers have one head")
    return many[0]


def _freeze_target(model):
    for layer in _top_layers(model):
        if layer.trainable_weights:
            return layer
    raise NotApplicable("no layer with trainable weights")


# ----------------------------------------------------------------------------- the operations


def run_family(family, baselines=False):
    """Build ``family`` and run every operation on it; a JSON-able dict."""
    import keras

    import families as F
    import kerasnb
    from kerasnb.errors import InternalError, SurgeryError

    started = time.time()
    record = {"family": family, "class": family + "Backbone", "backend": keras.backend.backend(),
              "kerasnb": os.path.dirname(kerasnb.__file__), "ops": {}}
    ops = record["ops"]

    def attempt(op, fn):
        t0 = time.time()
        try:
            detail = fn()
            entry = {"status": "pass", "detail": "" if detail is None else str(detail)}
        except NotApplicable as e:
            entry = {"status": "n/a", "detail": str(e)}
        except Failure as e:
            entry = {"status": "fail", "detail": str(e)}
        except InternalError as e:  # kerasnb met something it does not handle: a bug, not a refusal
            entry = {"status": "fail", "detail": f"{type(e).__name__}: {str(e)[:400]}"}
        except SurgeryError as e:
            entry = {"status": "refused", "detail": f"{type(e).__name__}: {e}"}
        except Exception as e:  # a raw exception is a failure, with where it came from
            frames = [f for f in traceback.extract_tb(e.__traceback__)]
            where = next((f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames)
                          if "kerasnb" in f.filename), "")
            entry = {"status": "fail", "detail": f"raw {type(e).__name__}: {str(e)[:400]}"
                                                 + (f" [{where}]" if where else "")}
        entry["seconds"] = round(time.time() - t0, 2)
        ops[op] = entry
        return entry["status"] == "pass"

    # ---- build (keras-hub's part): a family that does not build is a failure of the zoo itself
    state = {}

    def build():
        keras.utils.set_random_seed(0)
        model = F.BUILDERS[family]()
        _perturb(model, seed=0)
        state["model"] = model
        state["x"] = F.make_inputs(family, model)
        state["ref"] = _flat_outputs(model, state["x"])
        state["weights_before"] = [_np(w) for w in model.weights]
        state["nodes_before"] = {l.name: len(l._inbound_nodes) for l in model.layers}
        return f"{model.count_params()} params, {len(model.layers)} layers"

    if not attempt("build", build):
        record["seconds"] = round(time.time() - started, 1)
        return record
    model, x, ref = state["model"], state["x"], state["ref"]
    results = {}

    def round_trip():
        result = kerasnb.apply(model, [])
        _compare_outputs(ref, _flat_outputs(result.model, x), 0.0, "outputs")
        odd = [f"{r.layer}: {r.status}" for r in result.report if str(r.status) not in ("kept", "no_weights")]
        if odd:
            raise Failure(f"report of an edit-free round trip says {', '.join(odd[:4])}")
        if result.model.count_params() != model.count_params():
            raise Failure(f"count_params {model.count_params()} -> {result.model.count_params()}")
        _check_not_shared(model, result.model)
        _check_carried(model, result.model)
        results["round_trip"] = result
        return "bit-identical"

    def replace():
        layer, twin = _replace_target(model)
        result = kerasnb.replace(model, layer.name, twin)
        status = _status(result.report, twin.name)
        if layer.weights and status not in ("new", "reinitialized"):
            raise Failure(f"the fresh copy {twin.name!r} is reported {status!r}")
        later = _check_downstream_not_kept(model, result, layer.name)
        checked = _check_kept_honest(model, result, x)
        _check_not_shared(model, result.model)
        _check_carried(model, result.model, leave_out=[layer])
        results["replace"] = result
        return f"{layer.name} ({type(layer).__name__}) -> {status}; {later} later layers not kept; {checked} kept checked"

    def block_drop():
        found = _block_target(model)
        if not found:
            raise NotApplicable("no repeated top-level block whose input and output shapes match")
        path, block = found
        result = kerasnb.delete(model, path)
        status = _status(result.report, path)
        if status is None and "/" in path:  # a block deleted inside the layer that holds it: that row says so
            owner = path.rsplit("/", 1)[0]
            while _status(result.report, owner) is None and "/" in owner:
                owner = owner.rsplit("/", 1)[0]
            said = _status(result.report, owner)
            if said in (None, "kept") or path.rsplit("/", 1)[-1] not in result.report.row(owner).reason:
                raise Failure(f"{path!r} deleted inside {owner!r}, which is reported {said!r} without naming it")
            status = f"deleted inside {owner!r} ({said})"
        elif status != "removed":
            raise Failure(f"{path!r} is reported {status!r}, not removed")
        later = _check_downstream_not_kept(model, result, path) if "/" not in path else "(inside)"
        checked = _check_kept_honest(model, result, x)
        if result.model.count_params() != model.count_params() - block.count_params():
            raise Failure(f"count_params {result.model.count_params()}, expected "
                          f"{model.count_params()} - {block.count_params()}")
        _check_not_shared(model, result.model)
        _check_carried(model, result.model, leave_out=[block])
        _flat_outputs(result.model, x)
        results["block_drop"] = result
        return f"{path}; {later} later layers not kept; {checked} kept checked"

    def lora():
        path, target = _lora_target(model)
        result = kerasnb.enable_lora(model, lambda layer: layer is target, rank=2)
        worst = _compare_outputs(ref, _flat_outputs(result.model, x), 1e-6, "LoRA model vs original")
        _check_kept_honest(model, result, x, atol=1e-6)
        if not kerasnb.lora.lora_layers(result.model):
            raise Failure("no layer of the result has LoRA")
        _check_not_shared(model, result.model)
        _check_carried(model, result.model)
        results["lora"] = result
        return f"{path}; max diff {worst:.2g}"

    def lora_merge():
        if "lora" not in results:
            raise NotApplicable("LoRA was not enabled")
        import numpy as np

        lora_model = results["lora"].model
        rng = np.random.default_rng(1)
        factors = [v for v in lora_model.trainable_variables if "lora_" in v.path.rsplit("/", 1)[-1]]
        if not factors:
            raise Failure("the LoRA model has no trainable lora_ factors")
        for v in factors:  # move the factors away from zero, so the merge has something to fold
            v.assign(_np(v) + 0.05 * rng.normal(size=tuple(v.shape)).astype("float32"))
        with_lora = _flat_outputs(lora_model, x)
        moved = max(_max_diff(a, b) for a, b in zip(ref, with_lora))
        merged = kerasnb.merge_lora(lora_model)
        worst = _compare_outputs(with_lora, _flat_outputs(merged.model, x), 1e-5, "merged vs LoRA model",
                                 relative=True)
        if kerasnb.lora.lora_layers(merged.model):
            raise Failure("LoRA still enabled after the merge")
        if merged.model.count_params() != model.count_params():
            raise Failure(f"count_params {merged.model.count_params()}, the original has {model.count_params()}")
        _check_not_shared(model, merged.model)
        _check_not_shared(lora_model, merged.model)
        return f"max diff {worst:.2g} (the factors moved the outputs by {moved:.2g})"

    def prune_heads():
        path, layer = _attention_target(model)
        result = kerasnb.prune_heads(model, path, heads=[0])
        if not result.model.count_params() < model.count_params():
            raise Failure("no parameter removed")
        _check_kept_honest(model, result, x)
        _check_not_shared(model, result.model)
        _flat_outputs(result.model, x)
        return f"{path}: head 0 of {int(layer.num_heads)}"

    def freeze():
        layer = _freeze_target(model)
        result = kerasnb.set_trainable(model, [layer.name], False)
        _compare_outputs(ref, _flat_outputs(result.model, x), 0.0, "outputs")
        new = result.model.get_layer(layer.name)
        if new.trainable or new.trainable_weights:
            raise Failure(f"{layer.name!r} still trains in the result")
        expected = len(model.trainable_weights) - len(layer.trainable_weights)
        if len(result.model.trainable_weights) != expected:
            raise Failure(f"{len(result.model.trainable_weights)} trainable weights, expected {expected}")
        if not layer.trainable:
            raise Failure("the original layer was frozen too")
        if result.model.count_params() != model.count_params():
            raise Failure(f"count_params {model.count_params()} -> {result.model.count_params()}")
        _check_not_shared(model, result.model)
        _check_carried(model, result.model)
        results["freeze"] = result
        return layer.name

    def edited():
        for key in ("block_drop", "replace", "freeze", "round_trip"):
            if key in results:
                return key, results[key].model
        raise NotApplicable("no edit passed, so there is no edited model")

    def save_and_load(edited_model):
        before = _flat_outputs(edited_model, x)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "edited.keras")
            edited_model.save(path)
            loaded = keras.saving.load_model(path)
        _compare_outputs(before, _flat_outputs(loaded, x), 0.0, "loaded vs saved")

    def save_load():
        which, edited_model = edited()
        try:
            save_and_load(edited_model)
        except Exception as error:
            if which == "round_trip":
                raise
            try:  # is it this edit, or any kerasnb result?
                save_and_load(results["round_trip"].model)
                also = "the round-trip result saves and loads"
            except Exception as again:
                also = f"the round-trip result fails too ({type(again).__name__})"
            message = f"{type(error).__name__}: {str(error)[:300]}" if not isinstance(error, Failure) else str(error)
            raise Failure(f"the {which.replace('_', ' ')} result: {message} [{also}]") from error
        return f"the {which.replace('_', ' ')} result"

    def fit():
        import numpy as np

        which, edited_model = edited()
        outputs = [t for t in keras.tree.flatten(edited_model.outputs) if "float" in str(t.dtype)]
        if not outputs:
            raise Failure("no float output to put a loss on")
        trainer = keras.Model(edited_model.input, outputs[0])
        trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=lambda y, p: keras.ops.mean(keras.ops.square(p)),
                        jit_compile=False)  # one step: compiling it with XLA would cost more than it runs
        before = [_np(v) for v in trainer.trainable_variables]
        target = np.zeros((2,) + tuple(1 if d is None else d for d in outputs[0].shape[1:]), "float32")
        target = np.zeros(_np(trainer(x)).shape, "float32") if None in outputs[0].shape[1:] else target
        history = trainer.fit(x, target, batch_size=2, epochs=1, verbose=0)
        loss = history.history["loss"][-1]
        if not np.isfinite(loss):
            raise Failure(f"loss {loss}")
        changed = sum(not np.array_equal(a, _np(v)) for a, v in zip(before, trainer.trainable_variables))
        if not changed:
            raise Failure("no weight changed")
        return f"the {which.replace('_', ' ')} result; loss {loss:.3g}; {changed}/{len(before)} variables moved"

    def original_untouched():
        import numpy as np

        after = [_np(w) for w in model.weights]
        if len(after) != len(state["weights_before"]) or not all(
                np.array_equal(a, b) for a, b in zip(after, state["weights_before"])):
            raise Failure("a weight of the original changed")
        calls = {l.name: len(l._inbound_nodes) for l in model.layers}
        if calls != state["nodes_before"]:
            grown = [n for n in calls if calls[n] != state["nodes_before"].get(n)]
            raise Failure(f"calls were added to the original's layers: {', '.join(grown[:4])}")
        _compare_outputs(ref, _flat_outputs(model, x), 0.0, "original outputs")

    def hub_save():
        """keras-hub's own baseline: the original backbone through .keras (its get_config())."""
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "original.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
        _compare_outputs(ref, _flat_outputs(loaded, x), 0.0, "loaded original vs original")

    def hub_layer_configs():
        """keras-hub's layers whose get_config() cannot make them again (kerasnb then needs another route)."""
        broken = []
        for path, layer in _deep_layers(model):
            if "/" in path and not _is_graph(layer) and not any(p == path.rsplit("/", 1)[0] for p in graphs):
                continue  # sub-layers of a block are made by the block
            try:
                type(layer).from_config(layer.get_config())
            except Exception as error:
                why = str(error).split("Exception encountered:")[-1].strip().splitlines()[0][:100]
                broken.append(f"{path} ({type(layer).__name__}: {type(error).__name__}: {why})")
        if broken:
            raise Failure("from_config(get_config()) fails for " + "; ".join(broken[:4])
                          + (f" and {len(broken) - 4} more" if len(broken) > 4 else ""))

    def hub_fit():
        """keras-hub's own baseline: one step on the original backbone."""
        import numpy as np

        outputs = [t for t in keras.tree.flatten(model.outputs) if "float" in str(t.dtype)]
        trainer = keras.Model(model.input, outputs[0])
        trainer.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(keras.ops.square(p)), jit_compile=False)
        trainer.fit(x, np.zeros(_np(trainer(x)).shape, "float32"), batch_size=2, epochs=1, verbose=0)

    graphs = {path for path, layer in _deep_layers(model) if _is_graph(layer)}
    for op, fn in [("round_trip", round_trip), ("replace", replace), ("block_drop", block_drop), ("lora", lora),
                   ("lora_merge", lora_merge), ("prune_heads", prune_heads), ("freeze", freeze),
                   ("save_load", save_load), ("fit", fit), ("original_untouched", original_untouched),
                   ("hub_layer_configs", hub_layer_configs)]:
        attempt(op, fn)
    # keras-hub's baselines on the original (after the check that it is untouched): always when
    # asked, else only where ours did not pass, to tell a keras-hub limit from a kerasnb bug.
    if baselines or ops["save_load"]["status"] != "pass":
        attempt("hub_save", hub_save)
    if baselines or ops["fit"]["status"] != "pass":
        attempt("hub_fit", hub_fit)
    record["seconds"] = round(time.time() - started, 1)
    return record


def _child_main(families, baselines=False):
    sys.path[:0] = [HERE, REPO]  # this checkout's kerasnb
    for family in families:
        try:
            record = run_family(family, baselines)
        except Exception as e:  # the harness itself broke: say so rather than lose the family
            record = {"family": family, "ops": {"build": {"status": "fail", "detail": f"harness: {e!r}"}}}
        print(MARK + json.dumps(record), flush=True)


# ============================================================================ the parent


def all_families():
    sys.path.insert(0, HERE)
    import families as F

    return sorted(F.BUILDERS)


def run_families(families, jobs=2, per_process=3, timeout=900, log=None, baselines=False):
    """Run ``families`` in subprocesses (``per_process`` each, ``jobs`` at a time, under nice).

    Returns {family: record}. A family whose process died or timed out gets a ``build`` failure
    with the tail of the process's error output.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("PYTHONWARNINGS", "ignore")
    groups = [families[i:i + per_process] for i in range(len(families))[::per_process]]
    pending, running, records = list(groups), [], {}
    while pending or running:
        while pending and len(running) < jobs:
            group = pending.pop(0)
            command = ["nice", "-n", "10", sys.executable, os.path.join(HERE, "run_family.py"), "--child",
                       *(["--baselines"] if baselines else []), *group]
            out = tempfile.TemporaryFile(mode="w+")
            err = tempfile.TemporaryFile(mode="w+")
            running.append((group, subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO),
                            out, err, time.time()))
        time.sleep(0.2)
        for item in list(running):
            group, process, out, err, start = item
            timed_out = time.time() - start > timeout
            if process.poll() is None and not timed_out:
                continue
            if timed_out:
                process.kill()
                process.wait()
            running.remove(item)
            out.seek(0)
            err.seek(0)
            for line in out.read().splitlines():
                if line.startswith(MARK):
                    record = json.loads(line[len(MARK):])
                    records[record["family"]] = record
                    if log:
                        log(record)
            tail = err.read()[-600:]
            for family in group:
                if family not in records:
                    why = "timed out" if timed_out else f"process exited with {process.returncode}"
                    records[family] = {"family": family, "ops": {"build": {
                        "status": "fail", "detail": f"{why}: {tail}"}}}
                    if log:
                        log(records[family])
    return records


def _cell(entry):
    if entry is None:
        return ""
    status, detail = entry["status"], entry.get("detail", "").replace("|", "\\|").replace("\n", " ")
    if status == "pass":
        return "pass"
    if status == "n/a":
        return f"n/a ({detail})" if len(detail) < 60 else "n/a"
    short = detail if len(detail) <= 160 else detail[:157] + "..."
    return f"{'refused' if status == 'refused' else 'FAIL'}: {short}"


def markdown(records, seconds=None):
    """The table of outcomes: a row per family, a column per operation, then the counts."""
    columns = [c for c in OPERATIONS if any(c in r["ops"] for r in records.values())]
    lines = ["| family | build | " + " | ".join(OPERATIONS[c] for c in columns) + " | s |",
             "|---" * (len(columns) + 3) + "|"]
    for family in sorted(records):
        ops = records[family]["ops"]
        lines.append(f"| {family} | {_cell(ops.get('build'))} | "
                     + " | ".join(_cell(ops.get(c)) for c in columns)
                     + f" | {records[family].get('seconds', '')} |")
    counts = {}
    for record in records.values():
        for op, entry in record["ops"].items():
            counts.setdefault(op, {}).setdefault(entry["status"], 0)
            counts[op][entry["status"]] += 1
    summary = ["", "| operation | " + " | ".join(("pass", "refused", "n/a", "fail")) + " |", "|---|---|---|---|---|"]
    for op in ["build", *columns]:
        c = counts.get(op, {})
        summary.append(f"| {op} | " + " | ".join(str(c.get(s, 0)) for s in ("pass", "refused", "n/a", "fail")) + " |")
    backends = sorted({r.get("backend", "?") for r in records.values()})
    head = [f"{len(records)} families on {', '.join(backends)}" + (f", {seconds:.0f} s wall clock" if seconds else ""),
            "", "pass: done and checked; refused: a kerasnb.SurgeryError (its message); n/a: the family has no "
            "such part; FAIL: a raw exception, or a result that differs from what its report says. "
            "Columns 'keras-hub: ...' run on the unedited original, to tell keras-hub's limits from kerasnb's."]
    return "\n".join(head + [""] + lines + summary) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help="family names (BUILDERS keys in families.py)")
    parser.add_argument("--all", action="store_true", help="every family")
    parser.add_argument("--jobs", type=int, default=2, help="subprocesses at a time (default 2)")
    parser.add_argument("--per-process", type=int, default=3, help="families per subprocess (default 3)")
    parser.add_argument("--markdown", help="write the table here")
    parser.add_argument("--json", help="write every record here")
    parser.add_argument("--baselines", action="store_true",
                        help="always run keras-hub's own baselines on the original (save/load, fit), not only "
                             "where kerasnb's result did not pass")
    parser.add_argument("--table-from", help="only render --markdown from a --json file written before")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child or (args.families and not (args.all or args.markdown or args.json)):
        _child_main(args.families, args.baselines)
        return
    if args.table_from:
        with open(args.table_from) as f:
            records = json.load(f)
        with open(args.markdown, "w") as f:
            f.write(markdown(records))
        return
    families = all_families() if args.all or not args.families else args.families
    started = time.time()

    def log(record):
        bad = [f"{op}={e['status']}" for op, e in record["ops"].items() if e["status"] in ("fail",)]
        print(f"{record['family']:<24} {record.get('seconds', '?'):>6}s  {' '.join(bad) or 'ok'}", flush=True)

    records = run_families(families, jobs=args.jobs, per_process=args.per_process, log=log,
                           baselines=args.baselines)
    elapsed = time.time() - started
    print(f"{len(records)} families in {elapsed:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(records, elapsed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
