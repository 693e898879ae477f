"""What the benchmarks share: quiet TensorFlow, a median timer, and the manual-copy baseline."""

import gc
import os
import resource
import statistics
import time

# Before Keras is imported: keep TensorFlow's start-up lines out of the numbers' output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402


def median_time(fn, repeat):
    """Median wall-clock seconds of `repeat` calls of fn().

    Each call starts after a full garbage collection (not timed): with TensorFlow loaded the
    process tracks over half a million objects, so a full collection costs about 0.5 s, and
    without this it lands in whichever run crosses Python's threshold, paying for the garbage
    of earlier runs (or of the other operation being compared). The call's own collections
    still count.
    """
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clone_and_set(model):
    """The obvious way to get an independent copy with the same weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def peak_mb():
    """The process's peak resident memory so far, in MB (it only grows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
