"""Whole-model transforms on keras.applications models (weights=None), beside the obvious alternative.

In one process, median of several runs (each after a garbage collection, see _timing.py):
- kerasnb.fold_batchnorm on ResNet50 and MobileNetV2: rebuild time beside
  keras.models.clone_model + set_weights (a copy with weights and no folding at all), and
  predict latency (batch of 8) of the folded model beside the original's;
- kerasnb.change_input on ResNet50 to one channel (kernel summed), beside clone_model + set_weights;
- kerasnb.swap_activation on EfficientNetB0 (swish -> gelu), beside clone_model + set_weights.
Each transform's output is also checked against the original (max relative difference).

Run: python benchmarks/transforms.py [--repeat 5] [--size 224] [--batch 8]
"""

import argparse

from _timing import clone_and_set, median_time  # first: it quiets TensorFlow before Keras loads
import keras
import numpy as np

import kerasnb


def rel(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def randomize_batchnorms(model, seed=0):
    """Statistics far from the identity, so the folded model's agreement means something."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
    return model


def line(label, seconds, baseline=None, base_label="clone+set_weights"):
    ratio = f"   {seconds / baseline:5.2f}x {base_label}" if baseline else ""
    print(f"  {label:<34}{seconds * 1000:8.0f} ms{ratio}")


def bench_fold(name, model, x, repeat):
    randomize_batchnorms(model)
    result = kerasnb.fold_batchnorm(model)  # warm-up (one-off imports, tracing)
    clone_and_set(model)
    t_fold = median_time(lambda: kerasnb.fold_batchnorm(model), repeat)
    t_clone = median_time(lambda: clone_and_set(model), repeat)
    model.predict(x, verbose=0), result.model.predict(x, verbose=0)
    t_old = median_time(lambda: model.predict(x, verbose=0), repeat)
    t_new = median_time(lambda: result.model.predict(x, verbose=0), repeat)
    diff = rel(result.model.predict(x, verbose=0), model.predict(x, verbose=0))
    folded = len(result.report.with_status("folded"))
    print(f"{name}: fold_batchnorm folded {folded} BatchNormalization layers "
          f"({len(model.layers)} -> {len(result.model.layers)} layers), max relative difference {diff:.1e}")
    line("fold_batchnorm", t_fold, t_clone)
    line("clone_model + set_weights", t_clone)
    print(f"  predict, batch of {len(x)}: original {t_old * 1000:.0f} ms, folded {t_new * 1000:.0f} ms "
          f"({t_new / t_old:.2f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    size, repeat = args.size, max(args.repeat, 1)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {size}x{size}, median of {repeat} runs")
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, size, size, 3)).astype("float32")

    resnet = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    bench_fold("ResNet50", resnet, x, repeat)
    bench_fold("MobileNetV2", keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3)), x, repeat)

    grey = rng.random((2, size, size, 1)).astype("float32")
    result = kerasnb.change_input(resnet, (size, size, 1))
    t_change = median_time(lambda: kerasnb.change_input(resnet, (size, size, 1)), repeat)
    t_clone = median_time(lambda: clone_and_set(resnet), repeat)
    diff = rel(result.model.predict(grey, verbose=0), resnet.predict(np.repeat(grey, 3, -1), verbose=0))
    print(f"ResNet50: change_input to 1 channel: {result.report.row('conv1_conv').reason}; grey vs its "
          f"replicate: max relative difference {diff:.1e}")
    line("change_input", t_change, t_clone)
    line("clone_model + set_weights", t_clone)

    effnet = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3))
    result = kerasnb.swap_activation(effnet, "swish", "gelu")
    t_swap = median_time(lambda: kerasnb.swap_activation(effnet, "swish", "gelu"), repeat)
    t_clone = median_time(lambda: clone_and_set(effnet), repeat)
    counts = result.report.counts()
    print(f"EfficientNetB0: swap_activation swish -> gelu: {len(result.edits)} layers reconfigured, "
          f"{counts.get('kept_input_changed', (0, 0))[0]} kept_input_changed, "
          f"{counts.get('reinitialized', (0, 0))[0]} reinitialized")
    line("swap_activation", t_swap, t_clone)
    line("clone_model + set_weights", t_clone)


if __name__ == "__main__":
    main()
