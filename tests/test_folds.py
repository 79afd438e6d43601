"""The fold tables written again from saved rows."""

from __future__ import annotations

import json
from pathlib import Path

from bids_deface.evaluation.folds import main

ROWS = Path(__file__).parents[1] / "benchmarks" / "folds" / "fold-B.json"


def test_a_table_from_saved_rows_passes_them_again_and_names_the_run_that_saved_them(tmp_path: Path) -> None:
    rows = json.loads(ROWS.read_text())[:3]
    for row in rows:
        row["pass"] = not row["pass"]  # a stale verdict: the table must not trust it
    saved = tmp_path / "rows.json"
    saved.write_text(json.dumps(rows))
    md = tmp_path / "fold.md"
    assert main(["--fold", "B", "--from-json", str(saved), "--markdown", str(md)]) == 0
    text = md.read_text()
    passing = sum(not r["pass"] for r in rows)
    assert f"**{passing} of 3 cases meet every threshold.**" in text
    assert f"--fold B --json {saved} --markdown {md}" in text and "--from-json" not in text
