"""Time kerasnb.widen against the obvious alternative: clone_model + set_weights of the result.

ResNet50 (weights=None), in one process, median of several runs: every channel group that widen
takes (the stem, each block's inner convs, each stage's residual stream; the script says how many
and how many it refuses) grows to 1.5x its width in one call (``kerasnb.widen(model, {producer: width, ...})``). The baseline is
what a user would do without kerasnb to get the bigger model with weights: ``clone_model`` of the
result's architecture followed by ``set_weights``, which needs the widened weights to exist already,
so it is a lower bound on the manual way. The largest output difference of the widened model on a
small batch is printed as the check that the function was kept.

(Issue 20 also asks for block growth of a 480M Gemma; ``grow_blocks`` is not built yet.)

Run: python benchmarks/growth.py [--repeat 5] [--factor 1.5]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--factor", type=float, default=1.5)
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, median of {args.repeat} runs")
    widen_resnet50(args)
    print(f"  peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
