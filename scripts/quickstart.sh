#!/usr/bin/env bash
# The README's first command: install kerasnb with the panel, TensorFlow and keras-hub, then open
# the quick-start notebook in JupyterLab. Extra arguments go to `jupyter lab` (e.g. --port 8890).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(bash scripts/install.sh notebook,tensorflow,hub)"
root=()
[ "$(id -u)" -ne 0 ] || root=(--allow-root)  # JupyterLab refuses to run as root without it
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$PY" -m jupyter lab "${root[@]}" notebooks/00_quickstart.ipynb "$@"
