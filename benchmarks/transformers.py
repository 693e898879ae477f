"""Edit a Gemma-sized transformer (keras-hub GemmaBackbone, random weights) beside clone_model + set_weights.

The model: keras_hub.models.GemmaBackbone with 12 layers, hidden size 2048, 8 query heads of 256,
one key/value head, intermediate size 8192 and a 32000-token vocabulary: about 481M parameters,
1.8 GB of float32 weights. It is built from its constructor (random weights, nothing downloaded);
that takes about 10 s. `--small` builds 2 layers of hidden size 64 instead, for a quick smoke test.

The operations (issue "Transformers and keras-hub", section "Speed and memory"):
- noop:   kerasnb.apply(backbone, [])  -- the round trip, an edit that changes no weight;
- freeze: kerasnb.set_trainable(backbone, [a middle decoder block], False);
- drop:   kerasnb.delete(backbone, ["decoder_block_5", "decoder_block_6"])  -- two middle blocks
          (one, decoder_block_1, on the 2-layer --small model);
- lora:   kerasnb.enable_lora(backbone, <every attention projection inside the blocks: query, key,
          value, attention_output>, rank=8);
- merge:  kerasnb.merge_lora(<the LoRA model>);
- clone:  clone_model + set_weights, the baseline.

Measured on the backend Keras is set to (TensorFlow here):
- time, in this process: one warm-up of each operation (its result is kept for the checks), then
  the median of --repeat runs for kerasnb and of --clone-repeat runs for the clone (10-20 s each
  on the full model). The ratio is to clone_model + set_weights timed in the same run;
- extra peak memory of each operation, each in a FRESH PROCESS (this script run again with
  --child OP): build the model (for merge: build, then enable_lora, neither timed nor counted),
  warm up on a tiny backbone (imports, first traces), then run the operation once. Peak resident
  memory only ever grows, so before the operation the peak is reset to the current resident size
  (Linux: /proc/self/clear_refs); the extra peak is the peak afterwards minus the resident size
  before. Where that reset is not allowed the difference of ru_maxrss before and after is shown
  instead (a lower bound, marked "~"). On TensorFlow a rebuilt variable shares its buffer with the
  original's until one of them is written (then TensorFlow copies it), so an edit that changes no
  weight costs almost nothing here; a full fine-tune of the copy pays the weight bytes on its first
  optimizer step, while LoRA's frozen kernels, never written, stay shared;
- correctness (asserted): the round trip, set_trainable and enable_lora give bit-identical outputs
  on a small padded token batch; the round-trip copy trains independently of the original; the
  dropped-blocks model equals running the original's layers without those blocks; after the LoRA
  factors are nudged away from zero, the merged model's outputs equal the LoRA model's to float
  tolerance (and the nudge moved the outputs by much more than that tolerance).

Goals (from the issue), judged on the full model only: edits that change no weight (round trip,
set_trainable, drop blocks, enable_lora) need at most 5% of the weight bytes in extra peak memory;
merge_lora at most the bytes of the kernels it rewrites. The round trip also takes at most 0.05x
the time of clone_model + set_weights.

Needs keras-hub (pip install --no-deps keras-hub, plus its pure-Python dependencies).
Run: python benchmarks/transformers.py [--small] [--repeat 5] [--clone-repeat 3] [--no-memory]
"""

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time

from _timing import clone_and_set, median_time, peak_mb  # first: it quiets TensorFlow before Keras loads
import keras
import numpy as np

import kerasnb

FULL = dict(vocabulary_size=32000, num_layers=12, num_query_heads=8, num_key_value_heads=1, hidden_dim=2048,
            intermediate_dim=8192, head_dim=256)
SMALL = dict(vocabulary_size=1000, num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=64,
             intermediate_dim=128, head_dim=16)
TINY = dict(vocabulary_size=100, num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
            intermediate_dim=32, head_dim=8)  # the warm-up in a memory child
OPERATIONS = ("noop", "freeze", "drop", "lora", "merge", "clone")
LABELS = {
    "noop": "apply(backbone, [])",
    "freeze": "set_trainable(block, False)",
    "drop": "delete(2 blocks)",
    "lora": "enable_lora(attention, rank=8)",
    "merge": "merge_lora(lora model)",
    "clone": "clone_model + set_weights",
}
UNCHANGED_WEIGHTS = ("noop", "freeze", "drop", "lora")  # edits that change no weight
TIME_GOAL = 0.05  # round trip / clone_model + set_weights
MEMORY_GOAL = 0.05  # extra peak memory / weight bytes, for edits that change no weight
LORA_RANK = 8
# Every attention projection inside the blocks; paths of sub-layers are "decoder_block_0/attention/query".
LORA_MATCH = re.compile(r"^decoder_block_\d+/attention/(query|key|value|attention_output)$")


def build(config, seed=0):
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.GemmaBackbone(**config)


def frozen_block(config) -> str:
    return f"decoder_block_{config['num_layers'] // 2}"


def dropped_blocks(config) -> list:
    """The two middle blocks (5 and 6 of 12); one block (the last) of a 2-layer model."""
    n = config["num_layers"]
    return [f"decoder_block_{i}" for i in ((n // 2 - 1, n // 2) if n > 2 else (n - 1,))]


def operation(name, config):
    """The operation `name` as a function of the backbone (for merge: of the LoRA model)."""
    if name == "noop":
        return lambda model: kerasnb.apply(model, []).model
    if name == "freeze":
        block = frozen_block(config)
        return lambda model: kerasnb.set_trainable(model, [block], False).model
    if name == "drop":
        blocks = dropped_blocks(config)
        return lambda model: kerasnb.delete(model, blocks).model
    if name == "lora":
        return lambda model: kerasnb.enable_lora(model, LORA_MATCH, rank=LORA_RANK).model
    if name == "merge":
        return lambda model: kerasnb.merge_lora(model).model
    if name == "clone":
        return clone_and_set
    raise ValueError(f"unknown operation {name!r}; one of {OPERATIONS}")


def prepare(name, config, model):
    """What the operation starts from: the backbone, or for merge its LoRA model (not measured)."""
    return operation("lora", config)(model) if name == "merge" else model


def weight_bytes(model) -> int:
    return sum(_nbytes(v) for v in model.weights)


def _nbytes(variable) -> int:
    return int(np.prod(variable.shape)) * np.dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize


def rewritten_kernels(lora_model) -> tuple:
    """(count, bytes) of the kernels merge_lora rewrites: the kernel of every LoRA layer."""
    by_path = {v.path: v for v in lora_model.weights}
    kernels = [by_path[path + "/kernel"] if path + "/kernel" in by_path else by_path[path + "/embeddings"]
               for path in kerasnb.lora.lora_layers(lora_model)]
    return len(kernels), sum(_nbytes(v) for v in kernels)


def token_batch(vocabulary_size):
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, vocabulary_size, size=(2, 12)).astype("int32")
    mask = np.ones((2, 12), "int32")
    mask[0, 8:] = 0  # the first sequence is padded
    tokens[0, 8:] = 0
    return {"token_ids": tokens, "padding_mask": mask}


# ----------------------------------------------------------------------------- a stop-gap for kerasnb


def _shim_if_needed() -> str:
    """Work around kerasnb failing on keras.ops nodes of a functional graph, if it still does.

    GemmaBackbone scales the embeddings with `x * ops.cast(ops.sqrt(hidden_dim), ...)`, which puts
    a `Multiply` Operation (not a Layer: no `_flatten_layers`, no `weights`) among the graph's
    layers. kerasnb.enable_lora / merge_lora then fail in `_graph.sublayers` and
    `lora._train_only_lora`. If enable_lora fails that way on a tiny backbone, those two functions
    are wrapped here to treat such an Operation as a layer without sub-layers or weights, and the
    fact is printed. Once kerasnb handles it, nothing is patched.
    """
    try:
        operation("lora", TINY)(build(TINY, seed=2))
        return ""
    except AttributeError as error:
        if "_flatten_layers" not in str(error) and "weights" not in str(error):
            raise
        first = str(error)
    from kerasnb import _graph, lora

    sublayers, train_only_lora = _graph.sublayers, lora._train_only_lora

    def patched_sublayers(layer):
        return sublayers(layer) if hasattr(layer, "_flatten_layers") else [layer]

    def patched_train_only_lora(model):
        for _, layer in _graph.walk_layers(model):
            if _graph.is_graph_model(layer) or not hasattr(layer, "weights"):
                continue
            for variable in layer.weights:
                if not variable.path.rsplit("/", 1)[-1].startswith("lora_"):
                    variable.trainable = False

    _graph.sublayers, lora._train_only_lora = patched_sublayers, patched_train_only_lora
    operation("lora", TINY)(build(TINY, seed=2))  # it works now, or this raises
    del train_only_lora
    return (f"NOTE: kerasnb.enable_lora fails on a GemmaBackbone ({first!r}: the `multiply` keras.ops node of "
            "its graph is an Operation, not a Layer); this run wraps kerasnb._graph.sublayers and "
            "kerasnb.lora._train_only_lora to skip such nodes (same logic otherwise).")


# ----------------------------------------------------------------------------- memory (child process)


def _status_mb(field) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the peak resident size to the current one (Linux 4.0+); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(op_name, config):
    """Run in a fresh process: build, warm up, run one operation; print one JSON line."""
    shim = _shim_if_needed()
    fn = operation(op_name, config)
    started = time.perf_counter()
    model = build(config)
    build_s = time.perf_counter() - started
    start = prepare(op_name, config, model)  # the LoRA model for merge: neither timed nor counted
    extra_info = {}
    if op_name == "merge":
        extra_info["kernels"], extra_info["kernel_bytes"] = rewritten_kernels(start)
    after_build = peak_mb()
    # Warm-up on a tiny backbone: the operation's imports and first traces, without its size.
    operation(op_name, TINY)(prepare(op_name, TINY, build(TINY, seed=1)))
    gc.collect()
    after_warmup = peak_mb()
    rss_before = _status_mb("VmRSS")
    reset = _reset_peak()
    peak_before = peak_mb()
    started = time.perf_counter()
    result = fn(start)
    op_s = time.perf_counter() - started
    # After the reset the kernel's high-water mark (VmHWM) is the operation's own peak.
    after_op = _status_mb("VmHWM") if reset else peak_mb()
    rss_after = _status_mb("VmRSS")  # the result is still alive here
    extra = after_op - rss_before if reset else after_op - peak_before
    print(json.dumps(dict(
        op=op_name, build_s=build_s, op_s=op_s, after_build=after_build, after_warmup=after_warmup,
        rss_before=rss_before, after_op=after_op, rss_after=rss_after, extra=extra, reset=reset,
        weight_bytes=weight_bytes(model), result_layers=len(result.layers), shim=bool(shim),
        load=os.getloadavg()[0], **extra_info,
    )))


def memory_in_children(config, small):
    rows = {}
    for op_name in OPERATIONS:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", op_name] + (["--small"] if small else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"memory child for {op_name!r} failed (exit {proc.returncode})")
        rows[op_name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  [memory child {op_name}: {rows[op_name]['extra']:.1f} MB, op {rows[op_name]['op_s']:.2f} s, "
              f"load {rows[op_name]['load']:.2f}]", flush=True)
    return rows


# ----------------------------------------------------------------------------- checks


def outputs(model, batch):
    return keras.ops.convert_to_numpy(model(batch))


def check_identical(label, want, got, assert_it=True) -> str:
    same = got.shape == want.shape and np.array_equal(got, want)
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
    if assert_it:
        assert same, f"{label} changed the outputs: max |diff| {diff}"
    return f"  {label:<32} outputs bit-identical to the original: {same} (max |diff| {diff:.3g})"


def check_independent(model, copy) -> str:
    """An in-place update of one model's variable leaves the other model's unchanged, both ways."""
    pairs = [(o, n) for o, n in zip(model.weights, copy.weights) if o.path.endswith(("kernel", "scale", "embeddings"))]
    assert pairs, "no variables to check"
    for old, new in (pairs[0], pairs[len(pairs) // 2], pairs[-1]):
        assert old.path == new.path, (old.path, new.path)
        before_old, before_new = keras.ops.convert_to_numpy(old.value), keras.ops.convert_to_numpy(new.value)
        assert np.array_equal(before_old, before_new)
        new.assign_add(keras.ops.ones_like(new.value))
        assert np.array_equal(keras.ops.convert_to_numpy(old.value), before_old), f"{old.path}: original changed"
        old.assign_add(keras.ops.ones_like(old.value))
        assert np.array_equal(keras.ops.convert_to_numpy(new.value), before_new + 1), f"{new.path}: copy changed"
        old.assign(before_old)  # the original as it was, bit for bit
        new.assign(before_new)
    return "  round-trip copy trains independently: an assign_add on either side leaves the other unchanged (3 variables)"


def check_frozen(model, block) -> str:
    """The frozen block's variables are out of model.trainable_weights (what fit() updates)."""
    frozen = model.get_layer(block)
    ids = {id(v) for v in frozen.weights}
    leaked = sum(1 for v in model.trainable_weights if id(v) in ids)
    others = [layer.name for layer in model.layers if layer is not frozen and not layer.trainable]
    assert not frozen.trainable and not leaked and not others, (frozen.trainable, leaked, others)
    return (f"  set_trainable({block!r}, False): ok: none of its {len(ids)} variables in model.trainable_weights, "
            f"no other layer frozen")


def check_dropped(model, dropped, config, batch, got) -> str:
    """The dropped-blocks model computes what the original's layers compute without those blocks."""
    names = [layer.name for layer in dropped.layers]
    gone = dropped_blocks(config)
    assert not any(name in names for name in gone), names
    x = model.get_layer("token_embedding")(batch["token_ids"])
    x = x * keras.ops.cast(keras.ops.sqrt(config["hidden_dim"]), x.dtype)  # as GemmaBackbone does
    for i in range(config["num_layers"]):
        block = f"decoder_block_{i}"
        if block not in gone:
            x = model.get_layer(block)(x, padding_mask=batch["padding_mask"])
    want = keras.ops.convert_to_numpy(model.get_layer("final_normalization")(x))
    diff = float(np.max(np.abs(got - want)))
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5), f"dropped-blocks model differs: max |diff| {diff}"
    blocks = sum(name.startswith("decoder_block_") for name in names)
    return (f"  delete({gone}): {blocks} blocks left; outputs equal the original's layers run without them "
            f"(bit-identical: {np.array_equal(got, want)}, max |diff| {diff:.3g})")


def describe_matched(lora_model) -> str:
    """Which layers got LoRA, grouped by block."""
    per_block = {}
    for path, rank in kerasnb.lora.lora_layers(lora_model).items():
        block, rest = path.split("/", 1)
        per_block.setdefault(block, []).append(f"{rest}:{rank}")
    groups = {}
    for block, subs in per_block.items():
        groups.setdefault(tuple(sorted(subs)), []).append(block)
    lines = [f"  enable_lora matched {sum(len(s) for s in per_block.values())} layers (path:rank), by block:"]
    for subs, blocks in groups.items():
        lines.append(f"    {', '.join(blocks)}: {', '.join(subs)}")
    return "\n".join(lines)


def nudge_lora(lora_model, scale=0.02, seed=3) -> int:
    """Give every zero LoRA factor random values, so the merge check compares a real update."""
    rng = np.random.default_rng(seed)
    nudged = 0
    for variable in lora_model.weights:
        if variable.path.rsplit("/", 1)[-1].startswith("lora_kernel_b"):
            variable.assign(rng.normal(0, scale, tuple(variable.shape)).astype(variable.dtype))
            nudged += 1
    return nudged


# ----------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="2 layers, hidden size 64: a quick smoke test")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each kerasnb operation (median)")
    parser.add_argument("--clone-repeat", type=int, default=3, help="runs of clone_model + set_weights (median)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    parser.add_argument("--child", choices=OPERATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = SMALL if args.small else FULL
    LABELS["drop"] = f"delete({len(dropped_blocks(config))} block{'s' if len(dropped_blocks(config)) > 1 else ''})"
    if args.child:
        return child(args.child, config)

    head = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "log", "-1", "--format=%h %cd",
                           "--date=format:%Y-%m-%d %H:%M"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "status", "--short", "--",
                            "../kerasnb"], capture_output=True, text=True).stdout.split("\n")
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"keras-hub {__import__('keras_hub').__version__}, kerasnb at {head or '?'} "
          f"({len([d for d in dirty if d.strip()])} uncommitted files in kerasnb/), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    shim = _shim_if_needed()
    if shim:
        print(shim)
    # Memory first, in fresh processes, while this one holds no big model.
    mem = None
    if not args.no_memory:
        print("extra peak memory, one fresh process per operation:", flush=True)
        mem = memory_in_children(config, args.small)

    started = time.perf_counter()
    model = build(config)
    build_s = time.perf_counter() - started
    params, nbytes = model.count_params(), weight_bytes(model)
    print(f"GemmaBackbone {config}: {len(model.layers)} layers, {params / 1e6:.1f}M params, "
          f"{nbytes / 2**20:.0f} MB of weights; built in {build_s:.1f} s", flush=True)
    missing = [b for b in dropped_blocks(config) + [frozen_block(config)] if b not in [l.name for l in model.layers]]
    assert not missing, f"no layers {missing} in {[l.name for l in model.layers]}"
    batch = token_batch(config["vocabulary_size"])
    want = outputs(model, batch)

    ops = {name: operation(name, config) for name in OPERATIONS}
    times, loads, checks = {}, {}, []

    def timed(name, start):
        result = ops[name](start)  # the warm-up, kept for the checks
        repeat = args.clone_repeat if name == "clone" else args.repeat
        times[name] = median_time(lambda: ops[name](start), repeat)
        loads[name] = os.getloadavg()[0]
        print(f"  [timed {name}: {times[name] * 1000:.0f} ms, load {loads[name]:.2f}]", flush=True)
        return result

    print("time (one warm-up each, then the median):", flush=True)
    copy = timed("noop", model)
    checks.append(check_identical(LABELS["noop"], want, outputs(copy, batch)))
    checks.append(check_independent(model, copy))
    del copy

    copy = timed("freeze", model)
    checks.append(check_identical(LABELS["freeze"], want, outputs(copy, batch)))
    checks.append(check_frozen(copy, frozen_block(config)))
    del copy

    copy = timed("drop", model)
    checks.append(check_dropped(model, copy, config, batch, outputs(copy, batch)))
    del copy

    lora_model = timed("lora", model)
    checks.append(check_identical(LABELS["lora"], want, outputs(lora_model, batch)))
    checks.append(describe_matched(lora_model))
    trainable = [v.path for v in lora_model.trainable_weights]
    assert trainable and all(p.rsplit("/", 1)[-1].startswith("lora_") for p in trainable), trainable[:5]
    n_kernels, kernel_bytes = rewritten_kernels(lora_model)
    checks.append(f"  enable_lora: only the {len(trainable)} LoRA factors train; the {n_kernels} kernels merge_lora "
                  f"rewrites hold {kernel_bytes / 2**20:.1f} MB ({kernel_bytes / nbytes:.1%} of the weight bytes)")

    nudged = nudge_lora(lora_model)
    lora_out = outputs(lora_model, batch)
    merged = timed("merge", lora_model)
    got = outputs(merged, batch)
    diff, moved = float(np.max(np.abs(got - lora_out))), float(np.max(np.abs(lora_out - want)))
    scale = float(np.max(np.abs(lora_out)))
    assert np.allclose(got, lora_out, rtol=1e-4, atol=1e-4 * scale), f"merged differs from LoRA: max |diff| {diff}"
    assert moved > 100 * diff, f"the nudge moved the outputs by {moved}, not much more than the merge error {diff}"
    assert not kerasnb.lora.lora_layers(merged), "the merged model still has LoRA"
    checks.append(f"  merge_lora: after nudging {nudged} zero LoRA factors (outputs moved by up to {moved:.3g}), "
                  f"merged outputs equal the LoRA model's: max |diff| {diff:.3g} (outputs up to {scale:.3g}); no LoRA left")
    del merged, lora_model

    copy = timed("clone", model)
    checks.append(check_identical(LABELS["clone"], want, outputs(copy, batch), assert_it=False))
    del copy

    t_clone = times["clone"]
    print(f"\nGemmaBackbone, {params / 1e6:.1f}M params, {nbytes / 2**20:.0f} MB of weights; time: median of "
          f"{args.repeat} (kerasnb) / {args.clone_repeat} (clone) after one warm-up; memory: fresh process per op")
    header = (f"  {'operation':<32} {'time ms':>9} {'x clone':>8} {'extra peak MB':>14} {'% weights':>10}   "
              f"{'goal':<34} met")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name in OPERATIONS:
        ratio = times[name] / t_clone
        row = mem[name] if mem else None
        goals = []
        if row is None:
            extra = share = "-"
        else:
            approx = "" if row["reset"] else "~"
            extra, share = f"{approx}{row['extra']:.1f}", f"{row['extra'] * 2**20 / row['weight_bytes']:.1%}"
            if name in UNCHANGED_WEIGHTS:
                limit = MEMORY_GOAL * row["weight_bytes"] / 2**20
                goals.append((f"mem <= 5% ({limit:.0f} MB)", row["extra"] <= limit))
            elif name == "merge":
                limit = row["kernel_bytes"] / 2**20
                goals.append((f"mem <= rewritten kernels ({limit:.0f} MB)", row["extra"] <= limit))
        if name == "noop":
            goals.append((f"time <= {TIME_GOAL}x", ratio <= TIME_GOAL))
        if args.small:  # goals are for the full model
            goal, met = ("; ".join(g for g, _ in goals) + " (full model only)" if goals else "", "")
        else:
            goal = "; ".join(g for g, _ in goals)
            met = " / ".join("yes" if ok else "NO" for _, ok in goals)
        print(f"  {LABELS[name]:<32} {times[name] * 1000:9.0f} {ratio:8.3f} {extra:>14} {share:>10}   {goal:<34} {met}")

    if mem:
        print("memory details (MB): peak after build / after warm-up, resident before the op / after it "
              "(result alive), the op's time in the child, load average in the child:")
        for name in OPERATIONS:
            row = mem[name]
            print(f"  {LABELS[name]:<32} {row['after_build']:6.0f} / {row['after_warmup']:6.0f}   "
                  f"{row['rss_before']:6.0f} / {row['rss_after']:6.0f}   op {row['op_s']:6.2f} s   load {row['load']:.2f}")
    print("checks:")
    for line in checks:
        print(line)
    print(f"load average during timing: " + ", ".join(f"{n} {loads[n]:.2f}" for n in OPERATIONS)
          + f"; {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
