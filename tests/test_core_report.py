"""The weight report as users read it: rows, statuses, frame, summary, HTML."""

import subprocess
import sys

from keras import layers as L

import kerasnb


def test_one_row_per_new_layer_plus_removed(make):
    model = make("seed_mlp")
    r = kerasnb.replace(model, "dense_1", L.Dropout(0.2, name="dropout"))
    assert [row.layer for row in r.report] == ["input_layer", "dense", "dropout", "dense_2", "dense_1"]
    assert r.report.row("dense_1").params == 64 * 32 + 32
    assert r.report.row("dense").source == "dense"
    assert r.report.row("dropout").source == ""


def test_to_frame_columns(make):
    model = make("seed_mlp")
    frame = kerasnb.replace(model, "dense_1", L.Dropout(0.2, name="dropout")).report.to_frame()
    for column in ("layer", "type", "status", "reason", "params", "trainable", "source"):
        assert column in frame.columns
    assert frame.set_index("layer").loc["dense_2", "status"] == "reinitialized"


def test_summary_line(make):
    model = make("seed_mlp")
    summary = kerasnb.replace(model, "dense_1", L.Dropout(0.2, name="dropout")).report.summary()
    assert summary == "1 layer kept weights (704 params), 1 reinitialized (65 params), 1 new, 1 removed (2,080 params)"


def test_html_is_colour_coded(make):
    model = make("seed_mlp")
    html = kerasnb.replace(model, "dense_1", L.Dropout(0.2, name="dropout")).report._repr_html_()
    assert "<table>" in html and "reinitialized" in html
    assert kerasnb.report.STATUS_COLORS["reinitialized"] in html


def test_unknown_row_suggests(make):
    model = make("seed_mlp")
    report = kerasnb.delete(model, "dense_1").report
    try:
        report.status("dens")
    except kerasnb.LayerNotFound as error:
        assert "Did you mean 'dense'" in str(error)
    else:
        raise AssertionError("no error for an unknown row")


def test_import_is_light_and_core_uses_keras_only():
    """import kerasnb loads no package beyond what import keras loads (the standard library aside:
    which of its modules keras loads differs by backend); the core never imports tensorflow."""
    code = (
        "import sys; import keras; before = set(sys.modules); import kerasnb; "
        "print(sorted(m.split('.')[0] for m in set(sys.modules) - before "
        "if not m.startswith('kerasnb') and m.split('.')[0] not in sys.stdlib_module_names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    import pathlib

    root = pathlib.Path(kerasnb.__file__).parent
    for name in ("surgery.py", "_graph.py", "report.py", "edits.py", "errors.py", "__init__.py"):
        text = (root / name).read_text()
        assert "import tensorflow" not in text and "from tensorflow" not in text, name
