#!/usr/bin/env bash
# Build the docs site into SITE_DIR (default: site/) with MkDocs, warnings as errors.
# docs/hooks.py makes the command-line reference from the parser and the report
# screenshots from the demo (it runs bids-deface on examples/ds-synthetic and headless
# Chromium: Debian's `apt-get install chromium`). BIDS_DEFACE_DOCS_SCREENSHOTS=0 builds
# without the screenshots; BIDS_DEFACE_DOCS_DEMO=out/demo reuses a finished demo run.
# Needs the test install (bash scripts/install.sh: the package and mkdocs in .venv/).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mkdocs build --strict --site-dir "${1:-site}"
