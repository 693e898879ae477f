"""The tutorial notebooks are committed the way nbval checks them (`.ci/run` then executes them).

These tests read the .ipynb files as JSON; they run no kernel and import no Keras.

They read what is committed (``git show HEAD:...``) where there is a commit of the notebook,
else the file on disk: opening a tutorial in JupyterLab and saving it (Ctrl+S, or autosave)
stores the panel's output and new execution counts in the working copy, and exploring the
tutorials must not turn the test suite red. nbval itself runs on the working copy, where the
saved panel output sits in cells it ignores. What is committed is checked here, and in CI,
which runs on a fresh clone.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "00_quickstart", "01_dense_to_dropout", "02_conv1d_block", "03_vgg16_backbone",
    "04_why_keep_weights", "05_harder_graphs", "06_transformers", "07_inputs_and_patterns", "08_pruning",
    "09_growing",
    "10_looking_inside",
    "11_quantizing",
]
IGNORED = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")


def committed_text(path: Path) -> str:
    """The notebook as committed at HEAD, or the file on disk when it is not committed yet."""
    relative = path.relative_to(NOTEBOOKS_DIR.parent).as_posix()
    try:
        shown = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=NOTEBOOKS_DIR.parent,
                               capture_output=True, text=True, encoding="utf-8", timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        shown = None
    if shown is not None and shown.returncode == 0:
        return shown.stdout
    return path.read_text(encoding="utf-8")


def load(path):
    return json.loads(committed_text(path))


def code_cells(path):
    nb = load(path)
    return [c for c in nb["cells"] if c["cell_type"] == "code"], nb


def source(cell):
    return "".join(cell["source"])


def test_the_tutorials_are_all_there():
    """Every tutorial named in the README exists, in reading order."""
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
class TestStoredNotebook:
    def test_ran_top_to_bottom_in_one_kernel(self, path):
        """Stored outputs come from one fresh run: execution counts are 1, 2, 3, ..."""
        cells, _ = code_cells(path)
        counts = [c["execution_count"] for c in cells if source(c).strip()]
        assert counts == list(range(1, len(counts) + 1))

    def test_ignored_cells_store_no_output(self, path):
        """Nothing is shown that nbval does not check: cells it ignores are stored empty."""
        cells, _ = code_cells(path)
        leftovers = [source(c).splitlines()[1] for c in cells
                     if source(c).lstrip().startswith(IGNORED) and c["outputs"]]
        assert leftovers == []

    def test_checks_something(self, path):
        """A notebook stored without outputs would pass nbval while comparing nothing."""
        cells, _ = code_cells(path)
        assert sum(bool(c["outputs"]) for c in cells) >= 3

    def test_no_errors_stderr_or_widget_state(self, path):
        """No tracebacks, no stderr (TensorFlow logs, warnings) and no saved widget state."""
        cells, nb = code_cells(path)
        kinds = {(o["output_type"], o.get("name")) for c in cells for o in c["outputs"]}
        assert ("error", None) not in kinds
        assert ("stream", "stderr") not in kinds
        assert "widgets" not in nb["metadata"]

    def test_never_downloads(self, path):
        """Weights and data come from disk: an ImageNet load is guarded by the cache check."""
        text = "\n".join(source(c) for c in code_cells(path)[0])
        assert "weights='imagenet'" not in text and 'weights="imagenet"' not in text
        assert not re.search(r"\b(fetch_openml|load_data|get_file)\(", text)

    def test_reads_as_a_tutorial(self, path):
        """It opens with a title and explains itself: about as much markdown as code."""
        cells = load(path)["cells"]
        assert cells[0]["cell_type"] == "markdown" and source(cells[0]).startswith("# ")
        markdown = sum(c["cell_type"] == "markdown" for c in cells)
        assert markdown >= len(cells) // 2 - 1
