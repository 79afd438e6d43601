#!/usr/bin/env bash
# Create .venv (if missing) and install bids-deface with its test tools.
# PyTorch is installed first and then held by constraints.txt, so that nnU-Net's
# dependencies cannot replace it with another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$(cat constraints.txt)"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
.venv/bin/bids-validator-deno --version >/dev/null
