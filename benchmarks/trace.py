"""Time kerasnb.trace of every layer against a plain model(x), and the memory of stats_only over many batches.

Time: ResNet50 (weights=None, 177 layers) on a batch of 8 images, and a keras-hub GemmaBackbone
of a moderate size (8 blocks, hidden 512, 8 query heads; the config is printed; random
weights, nothing downloaded) on 4 sequences of
256 tokens: ``kerasnb.trace(model, x)`` of every layer (activations kept as numpy) against
``model(x)`` of the same batch, both warm, median of several runs. The goal is at most 1.3x.

Memory: ``kerasnb.trace(model, batches, stats_only=True)`` over 20 batches against ``model(x)``
on the same 20 batches, each in a fresh process, batches made one at a time in both; the peak is
Linux's VmHWM, reset once the model is built (building ResNet50 peaks far above running it;
``ru_maxrss`` only ever grows and would show the build). The extra peak is compared with the largest single activation of one batch;
the goal is at most 2x.

Run: python benchmarks/trace.py [--repeat 5] [--batches 20] [--only resnet50|gemma]
"""

import argparse
import json
import subprocess
import sys

from _timing import median_time, peak_mb  # first: it quiets TensorFlow before Keras loads
import keras
import numpy as np

import kerasnb

GEMMA = dict(vocabulary_size=4000, num_layers=8, num_query_heads=8, num_key_value_heads=1, hidden_dim=512,
             intermediate_dim=2048, head_dim=64)


def build(name):
    """The model, a function making batch i, and what a batch is (for the printout)."""
    keras.utils.set_random_seed(0)
    if name == "resnet50":
        model = keras.applications.ResNet50(weights=None)

        def batch(i):
            return np.random.default_rng(i).normal(size=(8, 224, 224, 3)).astype("float32")

        return model, batch, "8 images 224x224"
    import keras_hub

    model = keras_hub.models.GemmaBackbone(**GEMMA)

    def batch(i):
        rng = np.random.default_rng(i)
        return {"token_ids": rng.integers(1, GEMMA["vocabulary_size"], size=(4, 256)).astype("int32"),
                "padding_mask": np.ones((4, 256), "int32")}

    return model, batch, "4 sequences of 256 tokens"


def largest_activation_mb(model, x):
    rows = kerasnb.trace(model, x, stats_only=True).rows()
    sizes = []
    for row in rows:
        shapes = row["shape"] if isinstance(row["shape"][0], tuple) else [row["shape"]]
        sizes.append(sum(int(np.prod(s)) for s in shapes) * 4)  # float32 (ids and masks are int32: 4 bytes too)
    return max(sizes) / 2**20


def peak_since_reset_mb():
    """The peak resident memory since :func:`reset_peak` (Linux's VmHWM), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_mb()


def reset_peak():
    """Start the peak again from the memory in use now (writing 5 to clear_refs resets VmHWM): building
    ResNet50 peaks far above what running it takes, which would hide both runs."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def child(name, mode, n_batches):
    """In a fresh process: the peak memory of ``mode`` over ``n_batches`` batches."""
    import gc

    model, batch, _ = build(name)
    gc.collect()
    reset_peak()
    start = peak_since_reset_mb()  # the model built, nothing run yet: both modes start here
    if mode == "plain":
        for i in range(n_batches):
            keras.ops.convert_to_numpy(keras.tree.flatten(model(batch(i)))[0])
    else:
        kerasnb.trace(model, (batch(i) for i in range(n_batches)), stats_only=True)
    print(json.dumps({"start": start, "peak": peak_since_reset_mb()}))


def measure_memory(name, n_batches):
    out = {}
    for mode in ("plain", "stats"):
        done = subprocess.run([sys.executable, __file__, "--child", name, mode, str(n_batches)],
                              capture_output=True, text=True, check=True)
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--only", choices=("resnet50", "gemma"))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, median of {args.repeat} runs")
    for name in ([args.only] if args.only else ["resnet50", "gemma"]):
        model, batch, what = build(name)
        x = batch(0)
        if name == "gemma":
            print(f"GemmaBackbone({', '.join(f'{k}={v}' for k, v in GEMMA.items())}): "
                  f"{model.count_params() / 1e6:.1f}M params")
        model(x)
        traced = kerasnb.trace(model, x, batch_size=len(keras.tree.flatten(x)[0]))  # warm-up
        t_plain = median_time(lambda: keras.tree.map_structure(np.asarray, model(x)), args.repeat)
        t_trace = median_time(lambda: kerasnb.trace(model, x, batch_size=len(keras.tree.flatten(x)[0])), args.repeat)
        calls = len(traced.keys())
        print(f"{name}: {len(traced)} layers, {calls} calls traced, on {what}")
        print(f"  model(x)                       {t_plain * 1000:8.0f} ms")
        print(f"  kerasnb.trace every layer      {t_trace * 1000:8.0f} ms   ratio {t_trace / t_plain:.2f} (goal 1.3)")
        del traced
        largest = largest_activation_mb(model, x)
        memory = measure_memory(name, args.batches)
        built, plain, stats = memory["plain"]["start"], memory["plain"]["peak"], memory["stats"]["peak"]
        extra = stats - plain
        print(f"  {args.batches} batches, fresh processes: RSS {built:.0f} MB once built, then peak: model(x) on each "
              f"{plain:.0f} MB, trace stats_only {stats:.0f} MB")
        print(f"  largest activation {largest:.1f} MB; trace stats_only over model(x): {extra:+.0f} MB = "
              f"{extra / largest:+.2f}x it (goal at most 2); working memory over the built model: trace "
              f"{stats - built:+.0f} MB = {(stats - built) / largest:.1f}x, model(x) {plain - built:+.0f} MB = "
              f"{(plain - built) / largest:.1f}x")


if __name__ == "__main__":
    main()
