#!/usr/bin/env bash
# Deface the example dataset (examples/ds-synthetic) and print where the reports are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
OUT="${1:-out/demo}"
code=0
.venv/bin/bids-deface examples/ds-synthetic "$OUT" participant --no-progress || code=$?
# 7: every run finished, and at least one QC verdict is not `pass` (the reports say which)
if [ "$code" -ne 0 ] && [ "$code" -ne 7 ]; then exit "$code"; fi
.venv/bin/bids-deface examples/ds-synthetic "$OUT" group
echo
echo "Defaced dataset: $OUT"
for f in "$OUT"/sub-*.html "$OUT"/group.html; do echo "Report: $(realpath "$f")"; done
if [ "$code" -eq 7 ]; then
    echo "QC: at least one image's verdict is not 'pass' (the participant level exited with 7); see the reports"
fi
