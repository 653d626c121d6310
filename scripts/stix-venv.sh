#!/bin/sh
# Creates the Python virtual environment with the OASIS STIX 2.1 reference
# validator (stix2-validator), the python-stix2 library and the OASIS TAXII
# 2.1 client (taxii2-client, which tests/interop.rs points at the node's
# TAXII server), which the test
# `cargo test -p breakwater-protocol --test stix reference_validator` runs
# over exported bundles. `.ci/run` runs it before the tests;
# `tests/interop.rs` runs the same client over the binary's output.
#
# Usage: scripts/stix-venv.sh [VENV_DIR]   (default: target/stix-venv, or $STIX_VENV)
set -eu
cd "$(dirname "$0")/.."
venv="${1:-${STIX_VENV:-target/stix-venv}}"
# Fast and idempotent: nothing to do when the venv already has the packages.
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import stix2validator, stix2, taxii2client" 2>/dev/null; then
    echo "stix venv ready: $venv"
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "stix2-validator>=3.3,<4" "stix2>=3.0,<4" "taxii2-client>=2.3,<3"
"$venv/bin/stix2_validator" --version >/dev/null 2>&1 || "$venv/bin/python" -c "import stix2validator"
echo "stix venv ready: $venv"
