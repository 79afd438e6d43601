#!/usr/bin/env bash
# Deface the example dataset (examples/ds-synthetic) and print where the reports are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
OUT="${1:-out/demo}"
.venv/bin/bids-deface examples/ds-synthetic "$OUT" participant --no-progress
.venv/bin/bids-deface examples/ds-synthetic "$OUT" group
echo
echo "Defaced dataset: $OUT"
for f in "$OUT"/sub-*.html "$OUT"/group.html; do echo "Report: $(realpath "$f")"; done
