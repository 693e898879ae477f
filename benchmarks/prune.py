"""Pruning benchmarks: 50% of every group of ResNet50, and global pruning to 50% of the MACs.

In one process, median of several runs:

1. ResNet50 (weights=None): kerasnb.prune(model, <one producer of every prunable channel group>,
   keep=0.5, by="l1") (analysis, one rebuild, slicing of every affected variable), the analysis
   alone (kerasnb.channel_groups), keras.models.clone_model, and clone_model followed by
   set_weights (what a copy with weights costs, with no pruning at all).
2. ResNet50 and MobileNetV2 (weights=None): kerasnb.prune_global(model, macs=0.5, by="l1"),
   channels ranked across all groups until the multiply-accumulates (MACs) are at most half;
   its plan alone (kerasnb.prune_global_plan: scoring and the budget search, no build); the same
   with by="taylor" on 8 random images (timed once: scoring runs the model forward and backward);
   against clone_model + set_weights. MACs per sample before and after (kerasnb.flops), and the
   measured predict latency of a batch before and after.

3. ResNet50 (weights=None): kerasnb.prune_global(model, keep=0.5), half of the prunable channels
   kept, ranked by l1 across groups (the issue's goal: at most 0.5x clone_model + set_weights);
   its plan alone; against clone_model + set_weights. The runs of the two alternate, so that
   both see the same load of the machine.

Run: python benchmarks/prune.py [--repeat 5] [--size 224] [--skip-groups] [--keep-only]
"""

import argparse
import time

from _timing import clone_and_set, median_time  # first: it quiets TensorFlow before Keras loads
import keras
import numpy as np

import kerasnb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--skip-groups", action="store_true", help="only the global pruning benchmarks")
    parser.add_argument("--keep-only", action="store_true", help="only prune_global(keep=0.5) on ResNet50")
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, median of {args.repeat} runs")
    global_keep(args)
    if args.keep_only:
        return
    if not args.skip_groups:
        every_group(args)
    for name in ("ResNet50", "MobileNetV2"):
        global_macs(name, args)


def every_group(args):
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    groups = kerasnb.channel_groups(model)
    prunable = [g for g in groups if g.prunable]
    targets = [g.producers[0] for g in prunable]

    def prune():
        return kerasnb.prune(model, targets, keep=0.5, by="l1")

    # One warm-up of each, so one-off imports and tracing are not timed.
    result = prune()
    clone_and_set(model)
    t_groups = median_time(lambda: kerasnb.channel_groups(model), args.repeat)
    t_prune = median_time(prune, args.repeat)
    t_clone = median_time(lambda: keras.models.clone_model(model), args.repeat)
    t_clone_set = median_time(lambda: clone_and_set(model), args.repeat)

    x = np.random.default_rng(0).normal(size=(8, args.size, args.size, 3)).astype("float32")
    model.predict(x, verbose=0), result.model.predict(x, verbose=0)
    t_fwd = median_time(lambda: model.predict(x, verbose=0), args.repeat)
    t_fwd_pruned = median_time(lambda: result.model.predict(x, verbose=0), args.repeat)

    before, after = model.count_params(), result.model.count_params()
    counts = result.report.counts()
    print(f"ResNet50 {args.size}x{args.size}: {len(model.layers)} layers, {before / 1e6:.2f}M params; "
          f"{len(groups)} channel groups, {len(prunable)} prunable "
          f"({sum(g.coupled for g in prunable)} coupled by Add, {sum(len(g.producers) for g in prunable)} producers)")
    print(f"  kept 50% of every prunable group: {after / 1e6:.2f}M params ({after / before:.1%} of the original); "
          f"report: {counts.get('pruned', (0, 0))[0]} layers pruned, "
          f"{counts.get('reinitialized', (0, 0))[0]} reinitialized")
    print(f"  kerasnb.channel_groups          {t_groups * 1000:8.0f} ms")
    print(f"  kerasnb.prune (keep=0.5, l1)    {t_prune * 1000:8.0f} ms")
    print(f"  keras clone_model               {t_clone * 1000:8.0f} ms   ratio prune / this {t_prune / t_clone:.2f}")
    print(f"  clone_model + set_weights       {t_clone_set * 1000:8.0f} ms   "
          f"ratio prune / this {t_prune / t_clone_set:.2f}")
    print(f"  predict, batch of 8: original {t_fwd * 1000:.0f} ms, pruned {t_fwd_pruned * 1000:.0f} ms "
          f"({t_fwd_pruned / t_fwd:.2f}x)")


def global_keep(args):
    import statistics

    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    budget = {"keep": 0.5}  # half of the prunable channels kept
    runs = {"prune_global": lambda: kerasnb.prune_global(model, **budget),
            "prune_global_plan": lambda: kerasnb.prune_global_plan(model, **budget),
            "clone+set": lambda: clone_and_set(model)}
    result = runs["prune_global"]()  # warm-up
    runs["prune_global_plan"](), runs["clone+set"]()
    times = {name: [] for name in runs}
    for _ in range(args.repeat):  # alternating: each median sees the same load
        for name, fn in runs.items():
            times[name].append(median_time(fn, 1))
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["clone+set"]
    before, after = model.count_params(), result.model.count_params()
    print(f"ResNet50 {args.size}x{args.size}, prune_global({', '.join(f'{k}={v}' for k, v in budget.items())}, "
          f"by='l1'): {len(result.edits)} groups pruned, params {before / 1e6:.2f}M -> {after / 1e6:.2f}M")
    print(f"  prune_global (plan + rebuild)    {median['prune_global'] * 1000:8.0f} ms   ratio to clone+set_weights "
          f"{median['prune_global'] / base:.2f}")
    print(f"  prune_global_plan (no build)     {median['prune_global_plan'] * 1000:8.0f} ms   ratio "
          f"{median['prune_global_plan'] / base:.2f}")
    print(f"  clone_model + set_weights        {base * 1000:8.0f} ms")


def global_macs(name, args):
    from kerasnb.flops import total_macs

    model = getattr(keras.applications, name)(weights=None, input_shape=(args.size, args.size, 3))
    x = np.random.default_rng(0).normal(size=(8, args.size, args.size, 3)).astype("float32")

    def prune():
        return kerasnb.prune_global(model, macs=0.5, by="l1")

    result = prune()  # warm-up
    clone_and_set(model)
    t_plan = median_time(lambda: kerasnb.prune_global_plan(model, macs=0.5, by="l1"), args.repeat)
    t_prune = median_time(prune, args.repeat)
    t_clone_set = median_time(lambda: clone_and_set(model), args.repeat)
    start = time.perf_counter()
    taylor = kerasnb.prune_global(model, macs=0.5, by="taylor", data=x)
    t_taylor = time.perf_counter() - start

    macs_before, macs_after = total_macs(model), total_macs(result.model)
    model.predict(x, verbose=0), result.model.predict(x, verbose=0)
    t_fwd = median_time(lambda: model.predict(x, verbose=0), args.repeat)
    t_fwd_pruned = median_time(lambda: result.model.predict(x, verbose=0), args.repeat)
    before, after = model.count_params(), result.model.count_params()
    print(f"{name} {args.size}x{args.size}, prune_global(macs=0.5, by='l1'): {len(result.edits)} groups pruned")
    print(f"  MACs per sample {macs_before / 1e6:.1f}M -> {macs_after / 1e6:.1f}M ({macs_after / macs_before:.1%}); "
          f"params {before / 1e6:.2f}M -> {after / 1e6:.2f}M ({after / before:.1%})")
    print(f"  prune_global_plan (no build)     {t_plan * 1000:8.0f} ms")
    print(f"  prune_global (plan + rebuild)    {t_prune * 1000:8.0f} ms   ratio to clone+set_weights "
          f"{t_prune / t_clone_set:.2f}")
    print(f"  clone_model + set_weights        {t_clone_set * 1000:8.0f} ms")
    print(f"  prune_global by taylor, 8 images {t_taylor * 1000:8.0f} ms (once; "
          f"MACs after {total_macs(taylor.model) / macs_before:.1%})")
    print(f"  predict, batch of 8: original {t_fwd * 1000:.0f} ms, pruned {t_fwd_pruned * 1000:.0f} ms "
          f"({t_fwd_pruned / t_fwd:.2f}x)")


if __name__ == "__main__":
    main()
