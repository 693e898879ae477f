#!/usr/bin/env bash
# Installs kerasnb with the extras named, the way both README commands need it, on any machine:
#
#   bash scripts/install.sh notebook,tensorflow,hub      # prints the Python it installed into, last
#
# - Python: $PYTHON, else `python`, else `python3`. An active virtual environment or conda
#   environment is used as it is. A distribution's own Python that refuses `pip install`
#   (PEP 668, "externally-managed-environment", e.g. Debian's /usr/bin/python3) gets a virtual
#   environment in .venv/ (git ignores it), made once and reused; python3-venv comes through
#   apt-get if Debian lacks it.
# - The `hub` extra brings keras-hub's pure-Python dependencies; keras-hub itself is installed
#   after it with --no-deps, because its metadata asks for tensorflow-text, which pulls the full
#   tensorflow package beside tensorflow-cpu and is needed by no kerasnb feature (tokenizers are
#   built from in-memory vocabularies).
# Everything else it prints goes to stderr, so `PY=$(bash scripts/install.sh ...)` works.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-notebook,tensorflow,hub}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

PY="${PYTHON:-$(command -v python || command -v python3)}"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

externally_managed() {
    "$1" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'
}

if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ] && externally_managed "$PY"; then
    if [ ! -x .venv/bin/python ]; then
        echo "=== $PY is externally managed (PEP 668): making a virtual environment in .venv/" >&2
        if ! "$PY" -m venv .venv >&2; then
            rm -rf .venv
            as_root apt-get update >&2
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
            "$PY" -m venv .venv >&2
        fi
    fi
    PY="$PWD/.venv/bin/python"
fi

echo "=== pip install -e .[$extras] into $PY" >&2
"$PY" -m pip install -e ".[$extras]" >&2
case ",$extras," in
    *,hub,*|*,test,*)
        # Last, so no later resolver run reports keras-hub's skipped tensorflow-text as a conflict.
        "$PY" -m pip install --no-deps "keras-hub==0.32.0" >&2 ;;
esac
echo "$PY"
