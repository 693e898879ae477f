"""How fast the editor panel opens and edits, next to the bare surgery it wraps.

Run by hand:  python benchmarks/editor.py [--only DenseNet121] [--repeat 5]
For a small MLP, ResNet50 and DenseNet121 (weights=None) it prints:
  open       kerasnb.show_editor(model): building the panel (table, graph layout, fit checks for the
             selected row); the issue's goal for DenseNet121 is at most 0.3 s
  surgery    kerasnb.replace(model, target, Dropout) on its own
  foretold   choosing Dropout in the selected row's Type dropdown until the statuses worked out
             from shapes are in the table and the graph (sent to the browser then, while the
             model is rebuilt); "-" when the edit cannot be foretold
  edit       the same choice (a replace of a layer in the middle) until the table and the graph are
             redrawn from the rebuilt model; the issue's goal for DenseNet121 is at most 0.5 s
  panel      the part of "edit" spent outside kerasnb.apply: what the panel adds to the rebuild
  undo       clicking Undo (the earlier result is kept, so no rebuild)
  rows KB    the JSON the table sends for its page of rows (what the browser receives per redraw)
Then, for pruning one Dense / Conv layer from the panel:
  select     picking that layer in the Layer dropdown, with the check that offers "Prune..."
             (one channel analysis of the model, asked for the selected row only)
  pruning    kerasnb.apply(model, [kerasnb.Prune(target, keep=0.5)]) on its own
  prune      clicking "Prune..." and moving the keep slider to 50% (rebuild + redraw)
  params     the model's parameters before -> after that prune
Times are the median of REPEATS runs, in seconds of Python time (no browser).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402

import kerasnb  # noqa: E402
import kerasnb.surgery  # noqa: E402
from kerasnb.editor import Editor  # noqa: E402

REPEATS = 5


def mlp():
    inputs = keras.Input((10,), name="input_layer")
    x = keras.layers.Dense(64, activation="relu", name="dense")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="dense_1")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="dense_2")(x)
    return keras.Model(inputs, out, name="mlp")


# (name, factory, layer to replace, layer to prune): deep in the graph, so the whole model is rebuilt.
CASES = [
    ("MLP (4 layers)", mlp, "dense_1", "dense"),
    ("ResNet50", lambda: keras.applications.ResNet50(weights=None), "conv5_block3_2_relu", "conv5_block3_1_conv"),
    ("DenseNet121", lambda: keras.applications.DenseNet121(weights=None), "conv5_block16_1_relu",
     "conv5_block16_1_conv"),
]


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class ApplyClock:
    """Wraps kerasnb.surgery.apply (which the panel calls) to time the rebuild inside an edit."""

    def __init__(self):
        self.seconds = 0.0
        self.original = kerasnb.surgery.apply

    def __enter__(self):
        def clocked(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        kerasnb.surgery.apply = clocked
        return self

    def __exit__(self, *exc):
        kerasnb.surgery.apply = self.original


def choose_in_row(editor, label, seq):
    """What the browser sends when a type is chosen in the selected row's dropdown."""
    editor.table.action = {"kind": "replace", "layer": editor.selected, "call": None, "type": label, "params": {},
                           "seq": seq}


def measure(model, target):
    opens, surgeries, foretold, edits, panels, undos, sizes = [], [], [], [], [], [], []
    for i in range(REPEATS):
        holder = {}
        opens.append(timed(lambda: holder.setdefault("editor", kerasnb.show_editor(model))))
        editor = holder["editor"]
        sizes.append(len(json.dumps(editor.table.rows)) / 1024)
        surgeries.append(timed(lambda: kerasnb.replace(model, target, keras.layers.Dropout(0.2))))
        editor.table.selected = target  # a click on the row
        told = []
        shows = editor.session.on_predict
        editor.session.on_predict = lambda *a: (shows(*a), told.append(time.perf_counter()))
        with ApplyClock() as clock:
            started = time.perf_counter()
            edits.append(timed(lambda: choose_in_row(editor, "Dropout", i + 1)))
        if told:
            foretold.append(told[0] - started)
        panels.append(edits[-1] - clock.seconds)
        assert editor.report.status(target) == "removed", editor.message_text
        undos.append(timed(editor.undo_button.click))
        assert editor.model is model
        editor.close()
    told = statistics.median(foretold) if foretold else None
    return [statistics.median(v) for v in (opens, surgeries)] + [told] + [
        statistics.median(v) for v in (edits, panels, undos, sizes)]


def measure_prune(model, target):
    selects, prunings, prunes, counts = [], [], [], None
    for _ in range(REPEATS):
        editor = Editor(model)  # a fresh panel: nothing about pruning is known yet
        selects.append(timed(lambda: setattr(editor.table, "selected", target)))
        assert not editor.prune_button.disabled, editor.prune_button.tooltip
        prunings.append(timed(lambda: kerasnb.apply(model, [kerasnb.Prune(target, keep=0.5)])))
        editor.prune_button.click()
        prunes.append(timed(lambda: setattr(editor.prune_slider, "value", 0.5)))
        assert editor.report.status(target) == "pruned", editor.message.value
        counts = editor.session.answers.prune_step(target).counts
        editor.close()
    return [statistics.median(v) for v in (selects, prunings, prunes)] + [counts]


def main():
    import argparse

    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="one model of the list, e.g. DenseNet121")
    parser.add_argument("--repeat", type=int, default=REPEATS)
    args = parser.parse_args()
    REPEATS = args.repeat
    cases = [case for case in CASES if args.only is None or case[0].split()[0] == args.only]
    models = [(name, factory(), target, prune_target) for name, factory, target, prune_target in cases]
    print(f"{'model':<16} {'layers':>6} {'open':>8} {'surgery':>8} {'foretold':>8} {'edit':>8} {'panel':>8} "
          f"{'undo':>8} {'rows KB':>8}")
    for name, model, target, _ in models:
        kerasnb.replace(model, target, keras.layers.Dropout(0.2))  # warm-up: first traces are slower
        Editor(model).close()
        open_s, surgery_s, told_s, edit_s, panel_s, undo_s, kb = measure(model, target)
        told = "-" if told_s is None else f"{told_s:.3f}"
        print(f"{name:<16} {len(model.layers):>6} {open_s:>8.3f} {surgery_s:>8.3f} {told:>8} {edit_s:>8.3f} "
              f"{panel_s:>8.3f} {undo_s:>8.3f} {kb:>8.1f}")
    print()
    print(f"{'model':<16} {'prune target':<22} {'select':>8} {'pruning':>8} {'prune':>8}  params")
    for name, model, _, prune_target in models:
        kerasnb.apply(model, [kerasnb.Prune(prune_target, keep=0.5)])  # warm-up
        select_s, pruning_s, prune_s, counts = measure_prune(model, prune_target)
        before, after = counts[:2]  # parameters (then MACs, where the session counts them too)
        print(f"{name:<16} {prune_target:<22} {select_s:>8.3f} {pruning_s:>8.3f} {prune_s:>8.3f}  "
              f"{before:,} -> {after:,}")


if __name__ == "__main__":
    main()
