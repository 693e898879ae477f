"""Edit a Gemma-sized transformer (keras-hub GemmaBackbone, random weights) beside clone_model + set_weights.

The model: keras_hub.models.GemmaBackbone with 12 layers, hidden size 2048, 8 query heads of 256,
one key/value head, intermediate size 8192 and a 32000-token vocabulary: about 481M parameters,
1.8 GB of float32 weights. It is built from its constructor (random weights, nothing downloaded);
that takes about 10 s. `--small` builds 2 layers of hidden size 64 instead, for a quick smoke test.

Measured on the TensorFlow backend (the backend Keras is set to):
- time, in this process: kerasnb.apply(backbone, []) (the no-op round trip: an edit that changes
  no weight), kerasnb.set_trainable(backbone, [a middle decoder block], False), and
  clone_model + set_weights; one warm-up of each, then the median of --repeat runs for kerasnb
  and of --clone-repeat runs for the clone (about 20 s each on the full model);
- extra peak memory of each of the three operations, each in a FRESH PROCESS (this script run
  again with --child OP): build the model, warm up on a tiny backbone (imports, first traces),
  then run the operation once. Peak resident memory only ever grows, so before the operation
  the peak is reset to the current resident size (Linux: /proc/self/clear_refs); the extra peak
  is the peak afterwards minus the resident size before. Where that reset is not allowed the
  difference of ru_maxrss before and after is shown instead (a lower bound, marked "~");
- that the rebuilt backbones compute bit-identical outputs on a small token batch with a
  padding mask (asserted), and that the no-op copy trains independently of the original (an
  assign_add on one side leaves the other unchanged; asserted).

Goals (from the issue), judged on the full model only: no-op round trip at most 0.05x the time of
clone_model + set_weights, and at most 5% of the weight bytes in extra peak memory.

Needs keras-hub (pip install --no-deps keras-hub, plus its pure-Python dependencies).
Run: python benchmarks/transformer.py [--small] [--repeat 5] [--clone-repeat 3] [--no-memory]
"""

import argparse
import gc
import json
import os
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
OPERATIONS = ("noop", "freeze", "clone")
LABELS = {
    "noop": "kerasnb.apply(backbone, [])",
    "freeze": "kerasnb.set_trainable(block)",
    "clone": "clone_model + set_weights",
}
TIME_GOAL = 0.05  # no-op round trip / clone_model + set_weights
MEMORY_GOAL = 0.05  # extra peak memory / weight bytes


def build(config, seed=0):
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.GemmaBackbone(**config)


def frozen_block(config) -> str:
    return f"decoder_block_{config['num_layers'] // 2}"


def operation(name, config):
    """The operation `name` as a function of the backbone."""
    if name == "noop":
        return lambda model: kerasnb.apply(model, []).model
    if name == "freeze":
        block = frozen_block(config)
        return lambda model: kerasnb.set_trainable(model, [block], False).model
    if name == "clone":
        return clone_and_set
    raise ValueError(f"unknown operation {name!r}; one of {OPERATIONS}")


def weight_bytes(model) -> int:
    return sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
               for v in model.weights)


def token_batch(vocabulary_size):
    rng = np.random.default_rng(1)
    tokens = rng.integers(1, vocabulary_size, size=(2, 12)).astype("int32")
    mask = np.ones((2, 12), "int32")
    mask[0, 8:] = 0  # the first sequence is padded
    tokens[0, 8:] = 0
    return {"token_ids": tokens, "padding_mask": mask}


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
    fn = operation(op_name, config)
    started = time.perf_counter()
    model = build(config)
    build_s = time.perf_counter() - started
    after_build = peak_mb()
    # Warm-up on a tiny backbone: the operation's imports and first traces, without its size.
    operation(op_name, TINY)(build(TINY, seed=1))
    gc.collect()
    after_warmup = peak_mb()
    rss_before = _status_mb("VmRSS")
    reset = _reset_peak()
    peak_before = peak_mb()
    started = time.perf_counter()
    result = fn(model)
    op_s = time.perf_counter() - started
    # After the reset the kernel's high-water mark (VmHWM) is the operation's own peak.
    after_op = _status_mb("VmHWM") if reset else peak_mb()
    rss_after = _status_mb("VmRSS")  # the result is still alive here
    extra = after_op - rss_before if reset else after_op - peak_before
    print(json.dumps(dict(
        op=op_name, build_s=build_s, op_s=op_s, after_build=after_build, after_warmup=after_warmup,
        rss_before=rss_before, after_op=after_op, rss_after=rss_after, extra=extra, reset=reset,
        weight_bytes=weight_bytes(model), result_layers=len(result.layers),
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
    return rows


# ----------------------------------------------------------------------------- checks


def check_outputs(model, copies, vocabulary_size):
    """Every copy gives bit-identical outputs to the original on a padded token batch."""
    batch = token_batch(vocabulary_size)
    want = keras.ops.convert_to_numpy(model(batch))
    lines = []
    for name, copy in copies.items():
        got = keras.ops.convert_to_numpy(copy(batch))
        same = got.shape == want.shape and np.array_equal(got, want)
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        lines.append(f"  {LABELS[name]:<30} outputs bit-identical: {same} (max |diff| {diff:.3g})")
        if name != "clone":
            assert same, f"{LABELS[name]} changed the outputs: max |diff| {diff}"
    return lines


def check_frozen(model, block) -> str:
    """The frozen block's variables are out of model.trainable_weights (what fit() updates).

    Printed, not asserted: this is a correctness check of kerasnb, not part of the timing.
    """
    frozen = model.get_layer(block)
    ids = {id(v) for v in frozen.weights}
    leaked = sum(1 for v in model.trainable_weights if id(v) in ids)
    others = [layer.name for layer in model.layers if layer is not frozen and not layer.trainable]
    ok = not frozen.trainable and not leaked and not others
    return (f"  set_trainable({block!r}, False): {'ok' if ok else 'FAILED'}: layer.trainable={frozen.trainable}, "
            f"{leaked} of its {len(ids)} variables still in model.trainable_weights, other frozen layers {others}")


def check_independent(model, copy):
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
    return "  no-op copy trains independently: an assign_add on either side leaves the other unchanged (3 variables)"


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
    if args.child:
        return child(args.child, config)

    load = os.getloadavg()[0]
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"keras-hub {__import__('keras_hub').__version__}, load average {load:.2f} at start")
    # Memory first, in fresh processes, while this one holds no big model.
    mem = None if args.no_memory else memory_in_children(config, args.small)

    started = time.perf_counter()
    model = build(config)
    build_s = time.perf_counter() - started
    params, nbytes = model.count_params(), weight_bytes(model)
    print(f"GemmaBackbone {config}: {len(model.layers)} layers, {params / 1e6:.1f}M params, "
          f"{nbytes / 2**20:.0f} MB of weights; built in {build_s:.1f} s")

    ops = {name: operation(name, config) for name in OPERATIONS}
    copies = {name: fn(model) for name, fn in ops.items()}  # the warm-up, kept for the checks
    times = {
        "noop": median_time(lambda: ops["noop"](model), args.repeat),
        "freeze": median_time(lambda: ops["freeze"](model), args.repeat),
        "clone": median_time(lambda: ops["clone"](model), args.clone_repeat),
    }

    t_clone = times["clone"]
    print(f"time (median of {args.repeat} for kerasnb, of {args.clone_repeat} for the clone; one warm-up each):")
    for name in OPERATIONS:
        what = LABELS[name] + (f" [{frozen_block(config)}]" if name == "freeze" else "")
        ratio = "" if name == "clone" else f"   ratio {times[name] / t_clone:.3f}"
        goal = f"   goal <= {TIME_GOAL}: {'met' if times[name] / t_clone <= TIME_GOAL else 'NOT met'}" \
            if name == "noop" and not args.small else ""
        print(f"  {what:<45} {times[name] * 1000:9.0f} ms{ratio}{goal}")

    if mem is not None:
        print("extra peak memory, one fresh process per operation (MB; % of the weight bytes):")
        for name in OPERATIONS:
            row = mem[name]
            share = row["extra"] * 2**20 / row["weight_bytes"]
            approx = "" if row["reset"] else "~"
            goal = f"   goal <= {MEMORY_GOAL:.0%}: {'met' if share <= MEMORY_GOAL else 'NOT met'}" \
                if name == "noop" and not args.small else ""
            print(f"  {LABELS[name]:<45} {approx}{row['extra']:7.1f} MB {share:7.1%}{goal}   "
                  f"(peak after build {row['after_build']:.0f}, after warm-up {row['after_warmup']:.0f}, "
                  f"resident before {row['rss_before']:.0f} / after {row['rss_after']:.0f} with the result alive; "
                  f"op {row['op_s']:.2f} s)")

    for line in check_outputs(model, copies, config["vocabulary_size"]):
        print(line)
    print(check_frozen(copies["freeze"], frozen_block(config)))
    print(check_independent(model, copies["noop"]))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
