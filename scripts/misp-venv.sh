#!/bin/sh
# Creates the Python virtual environment with PyMISP, which the test
# `cargo test -p breakwater-protocol --test misp -- --ignored pymisp` uses to
# load every event of exported MISP feed directories. `.ci/run` runs it before the tests;
# `tests/interop.rs` runs the same client over the binary's output.
#
# Usage: scripts/misp-venv.sh [VENV_DIR]   (default: target/misp-venv, or $MISP_VENV)
set -eu
cd "$(dirname "$0")/.."
venv="${1:-${MISP_VENV:-target/misp-venv}}"
# Fast and idempotent: nothing to do when the venv already has the packages.
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import pymisp" 2>/dev/null; then
    echo "misp venv ready: $venv"
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "pymisp>=2.5,<3"
"$venv/bin/python" -c "import pymisp"
echo "misp venv ready: $venv"
