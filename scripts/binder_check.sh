#!/usr/bin/env bash
# Reproduce Binder's build from the files in binder/ in a fresh virtual environment, then run
# every notebook there under nbval, offline. Binder itself cannot be reached from CI machines.
#
#   bash scripts/binder_check.sh            # PYTHON=python3.11 to pick the interpreter
#
# What it mirrors of repo2docker: the Python version from binder/runtime.txt, and
# `pip install -r binder/requirements.txt` run from the repository root (so `-e .` is kerasnb).
# What it leaves out: binder/postBuild, which downloads VGG16's ImageNet weights (Binder has
# internet at build time; here there is none). Keras's cache is pointed at an empty folder, so
# notebook 03 takes its offline path (random weights), whatever this machine has cached.
# It adds pytest and nbval to the environment, as the checker, after Binder's requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-$(command -v python3.11 || command -v python3 || command -v python)}"
want="$(sed -n 's/^python-\([0-9.]*\).*/\1/p' binder/runtime.txt)"
have="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$want" != "$have" ]; then
    echo "ERROR: binder/runtime.txt asks for Python $want, but $PY is Python $have (set PYTHON=...)" >&2
    exit 1
fi

work="$(mktemp -d -t kerasnb-binder-XXXXXX)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

echo "=== fresh venv ($PY, Python $have) in $work/venv"
"$PY" -m venv "$work/venv"
VPY="$work/venv/bin/python"
"$VPY" -m pip install --quiet --upgrade pip

echo "=== pip install -r binder/requirements.txt (as repo2docker does)"
t=$SECONDS
"$VPY" -m pip install --quiet -r binder/requirements.txt
echo "    installed in $((SECONDS - t)) s"
echo "=== from binder/postBuild: keras-hub without its dependencies; skipped: the ImageNet weights (no network here)"
"$VPY" -m pip install --quiet --no-deps "keras-hub==0.32.0"

echo "=== checker: pytest, nbval"
"$VPY" -m pip install --quiet pytest nbval
"$VPY" -m pip freeze | grep -iE '^(kerasnb|-e|keras|tensorflow[-_]cpu|ipywidgets|jupyterlab|pandas|matplotlib|scikit-learn|numpy|nbval)[ =@]' || true

echo "=== notebooks under nbval, offline (empty KERAS_HOME)"
t=$SECONDS
mkdir -p "$work/keras_home"
KERAS_HOME="$work/keras_home" KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 \
    "$VPY" -m pytest notebooks --nbval --nbval-current-env \
    --nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider -q
echo "    notebooks ran in $((SECONDS - t)) s"
echo "=== Binder check passed in $((SECONDS - start)) s"
