"""Time kerasnb.replace against the obvious alternative, keras.models.clone_model + set_weights.

For ResNet50 and DenseNet121 (weights=None), in one process, median of several runs:
- replace one layer in the middle by a layer of the same kind;
- the no-op round trip: replace a layer by a copy of itself (what a user does to "reset" it);
- clone_model followed by set_weights (the manual way to get an independent copy with weights).
Peak memory is the process's maximum resident set size after each phase (it only grows).

Run: python benchmarks/surgery.py [--repeat 5]
"""

import argparse

from _timing import clone_and_set, median_time, peak_mb  # first: it quiets TensorFlow before Keras loads
import keras

import kerasnb


def bench(name, model, target, repeat):
    layer = model.get_layer(target)

    def same_kind():
        config = layer.get_config()
        config["name"] = target + "_swapped"
        return type(layer).from_config(config)

    def replace():
        return kerasnb.replace(model, target, same_kind())

    def round_trip():
        return kerasnb.replace(model, target, type(layer).from_config(layer.get_config()))

    # One warm-up of each, so one-off tracing and imports are not timed.
    clone_and_set(model), replace(), round_trip()
    t_clone = median_time(lambda: clone_and_set(model), repeat)
    mem_clone = peak_mb()
    t_replace = median_time(replace, repeat)
    t_round = median_time(round_trip, repeat)
    mem_after = peak_mb()
    params = model.count_params()
    print(f"{name}: {len(model.layers)} layers, {params / 1e6:.1f}M params, target {target!r}")
    print(f"  clone_model + set_weights   {t_clone * 1000:8.0f} ms")
    print(f"  kerasnb.replace             {t_replace * 1000:8.0f} ms   ratio {t_replace / t_clone:.2f}")
    print(f"  kerasnb no-op round trip    {t_round * 1000:8.0f} ms   ratio {t_round / t_clone:.2f}")
    print(f"  peak RSS after clone runs {mem_clone:.0f} MB, after kerasnb runs {mem_after:.0f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, median of {args.repeat} runs")
    bench("ResNet50", keras.applications.ResNet50(weights=None), "conv4_block3_2_conv", args.repeat)
    bench("DenseNet121", keras.applications.DenseNet121(weights=None), "conv4_block12_1_conv", args.repeat)


if __name__ == "__main__":
    main()
