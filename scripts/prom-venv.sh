#!/bin/sh
# Creates the Python virtual environment with prometheus_client, whose
# OpenMetrics parser the test `cargo test --test integration operators`
# (tests/operators.rs) runs over the node's real /metrics output. `.ci/run`
# runs it before the tests; the test runs it itself when the venv is missing.
#
# Usage: scripts/prom-venv.sh [VENV_DIR]   (default: target/prom-venv, or $PROM_VENV)
set -eu
cd "$(dirname "$0")/.."
venv="${1:-${PROM_VENV:-target/prom-venv}}"
# Fast and idempotent: nothing to do when the venv already has the package.
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import prometheus_client.openmetrics.parser" 2>/dev/null; then
    echo "prometheus venv ready: $venv"
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet "prometheus_client>=0.20,<1"
"$venv/bin/python" -c "import prometheus_client.openmetrics.parser"
echo "prometheus venv ready: $venv"
