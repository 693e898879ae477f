"""Time kerasnb.widen against the obvious alternative: clone_model + set_weights of the result.

ResNet50 (weights=None), in one process, median of several runs: every channel group that widen
takes (the stem, each block's inner convs, each stage's residual stream; the script says how many
and how many it refuses) grows to 1.5x its width in one call (``kerasnb.widen(model, {producer: width, ...})``). The baseline is
what a user would do without kerasnb to get the bigger model with weights: ``clone_model`` of the
result's architecture followed by ``set_weights``, which needs the widened weights to exist already,
so it is a lower bound on the manual way. The largest output difference of the widened model on a
small batch is printed as the check that the function was kept.

Block growth (``--part gemma``): a GemmaBackbone of 12 blocks, hidden size 2048 (the 481M model of
benchmarks/transformers.py, random weights; ``--small`` for 2 blocks of 64) grows to 14 blocks with
``kerasnb.grow_blocks`` (a copy after two middle blocks, output projections zero), against
clone_model + set_weights of the grown architecture. Outputs on a padded token batch must be
bit-identical (asserted). Extra peak memory of each is measured in a fresh process (this script
again with --child): the peak is reset to the resident size before the operation (Linux
/proc/self/clear_refs), and compared with the bytes of the two new blocks. Goals (issue 20): time at
most 0.1x the clone's, extra peak memory at most the new blocks' bytes plus 5%.

Run: python benchmarks/growth.py [--part widen|gemma|all] [--repeat 5] [--factor 1.5] [--small]
"""

import argparse

from _timing import clone_and_set, median_time, peak_mb  # first: it quiets TensorFlow before Keras loads
import keras
import numpy as np

import kerasnb
from kerasnb.growth import widen_refusal


def widths(model, factor):
    """{one producer of each group widen takes: its new width}, and the groups it refuses."""
    wanted, refused = {}, []
    for group in kerasnb.channel_groups(model):
        producer = group.producers[0]
        if widen_refusal(model, producer):
            refused.append(producer)
            continue
        wanted[producer] = int(round(group.channels * factor))
    return wanted, refused


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("widen", "gemma", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--factor", type=float, default=1.5)
    parser.add_argument("--small", action="store_true", help="gemma part: 2 blocks of hidden size 64")
    parser.add_argument("--child", choices=("grow", "clone"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return gemma_child(args.child, args.small)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, median of {args.repeat} runs")
    if args.part in ("widen", "all"):
        widen_resnet50(args)
    if args.part in ("gemma", "all"):
        grow_gemma(args)


def widen_resnet50(args):
    """ResNet50: every group widen takes at ``args.factor`` times its width in one call, against
    clone_model + set_weights of the result; prints the times, their ratio and the output check."""
    model = keras.applications.ResNet50(weights=None)
    wanted, refused = widths(model, args.factor)
    result = kerasnb.widen(model, wanted, seed=0)  # warm-up, and the model the baseline copies
    clone_and_set(result.model)
    t_widen = median_time(lambda: kerasnb.widen(model, wanted, seed=0), args.repeat)
    t_clone = median_time(lambda: clone_and_set(result.model), args.repeat)

    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype("float32")
    difference = float(np.max(np.abs(np.asarray(model(x)) - np.asarray(result.model(x)))))
    print(f"ResNet50: {len(wanted)} groups widened {args.factor}x ({len(refused)} refused), params "
          f"{model.count_params() / 1e6:.1f}M -> {result.model.count_params() / 1e6:.1f}M; "
          f"max output difference {difference:.1e}")
    print(f"  clone_model + set_weights of the result   {t_clone * 1000:8.0f} ms")
    print(f"  kerasnb.widen                             {t_widen * 1000:8.0f} ms   ratio {t_widen / t_clone:.2f}")
    print(f"  peak RSS {peak_mb():.0f} MB")


# ----------------------------------------------------------------------------- grow_blocks on Gemma


def _gemma_config(small):
    from transformers import FULL, SMALL  # benchmarks/transformers.py: the same Gemma

    return SMALL if small else FULL


def _grown_after(config):
    """Two middle blocks: a copy after each (12 -> 14 blocks; 2 -> 4 on --small)."""
    n = config["num_layers"]
    return [f"decoder_block_{i}" for i in ((n // 2 - 1, n // 2) if n > 2 else (0, 1))]


def _grow(model, config):
    return kerasnb.grow_blocks(model, after=_grown_after(config)).model


def gemma_child(which, small):
    """In a fresh process: build, warm up on a tiny model, then one grow (or one clone of the grown
    model, which is built first and not counted); print one JSON line."""
    import gc
    import json
    import time

    from transformers import TINY, _reset_peak, _status_mb, build, weight_bytes

    config = _gemma_config(small)
    model = build(config)
    start = _grow(model, config) if which == "clone" else model
    _grow(build(TINY, seed=1), TINY) if which == "grow" else clone_and_set(_grow(build(TINY, seed=1), TINY))
    gc.collect()
    rss_before = _status_mb("VmRSS")
    reset = _reset_peak()
    peak_before = peak_mb()
    started = time.perf_counter()
    result = _grow(start, config) if which == "grow" else clone_and_set(start)
    seconds = time.perf_counter() - started
    after = _status_mb("VmHWM") if reset else peak_mb()
    extra = after - rss_before if reset else after - peak_before
    print(json.dumps(dict(which=which, seconds=seconds, extra=extra, reset=reset, layers=len(result.layers),
                          weight_bytes=weight_bytes(model))))


def grow_gemma(args):
    import json
    import os
    import subprocess
    import sys

    from transformers import build, token_batch, weight_bytes

    config = _gemma_config(args.small)
    memory = {}
    for which in ("grow", "clone"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", which] + (["--small"] if args.small else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"memory child {which!r} failed (exit {proc.returncode})")
        memory[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    model = build(config)
    grown = _grow(model, config)  # warm-up, and the architecture the clone copies
    batch = token_batch(config["vocabulary_size"])
    difference = float(np.max(np.abs(keras.ops.convert_to_numpy(model(batch))
                                     - keras.ops.convert_to_numpy(grown(batch)))))
    assert difference == 0.0, f"the grown Gemma differs by {difference}"
    t_grow = median_time(lambda: _grow(model, config), args.repeat)
    t_clone = median_time(lambda: clone_and_set(grown), max(1, min(args.repeat, 3)))
    new_bytes = weight_bytes(grown) - weight_bytes(model)
    mib = 2 ** 20
    print(f"GemmaBackbone {config['num_layers']} -> {grown.num_layers} blocks, hidden {config['hidden_dim']}: "
          f"{model.count_params() / 1e6:.0f}M -> {grown.count_params() / 1e6:.0f}M params, new blocks "
          f"{new_bytes / mib:.0f} MB; outputs bit-identical (max difference {difference})")
    print(f"  clone_model + set_weights of the grown model {t_clone * 1000:8.0f} ms   extra peak "
          f"{memory['clone']['extra']:7.0f} MB")
    print(f"  kerasnb.grow_blocks                          {t_grow * 1000:8.0f} ms   extra peak "
          f"{memory['grow']['extra']:7.0f} MB   time ratio {t_grow / t_clone:.3f} (goal 0.1); memory "
          f"{memory['grow']['extra'] * mib / new_bytes:.2f}x the new blocks' bytes (goal 1.05)"
          + ("" if memory["grow"]["reset"] else "  (~: peak not resettable here, a lower bound)"))


if __name__ == "__main__":
    main()
