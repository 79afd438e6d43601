#!/usr/bin/env bash
# Install the BIDS validator (Deno build, from PyPI; brings the `deno` runtime wheel) into
# the Python environment given as $1 (default: .venv), and check that it runs.
set -euo pipefail
VENV="${1:-.venv}"
"$VENV/bin/pip" install -c constraints.txt "bids-validator-deno==3.0.2"
"$VENV/bin/bids-validator-deno" --version
