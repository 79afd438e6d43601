#!/usr/bin/env bash
# Install, then run the whole test suite (real heads are fetched into cache/ on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash ci/install-hadolint.sh >/dev/null   # the Dockerfile linter (tests/test_recipes.py)
bash ci/install-chromium.sh >/dev/null   # headless Chromium for the docs' report screenshots (tests/test_docs.py)
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
