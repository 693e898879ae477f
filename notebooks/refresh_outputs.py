"""Re-run the tutorial notebooks and store their outputs, the way nbval will compare them.

    python notebooks/refresh_outputs.py                  # all notebooks
    python notebooks/refresh_outputs.py 03_vgg16_backbone.ipynb

Run it after a change to kerasnb alters what a checked cell prints (a report's wording, a
column), review the diff, and commit the notebooks. Each notebook runs top to bottom in a fresh
kernel on the TensorFlow backend with TensorFlow's C++ logging off; cells marked
``# NBVAL_IGNORE_OUTPUT`` (widgets, machine-dependent messages) are stored without outputs, so
everything a notebook shows on GitHub is something nbval checks. Keras's cache is pointed at
an empty folder, so notebook 03 stores its offline outputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
IGNORED = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")


def refresh(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    elapsed = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if cell.source.lstrip().startswith(IGNORED):
            cell.outputs = []
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return elapsed


def main(names: list[str]) -> None:
    os.environ.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kerasnb-keras-home-")
    paths = [HERE / name for name in names] if names else sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        print(f"{path.name}: {refresh(path):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
