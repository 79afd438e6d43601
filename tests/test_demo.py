"""``scripts/demo.sh``, run as the README tells a new user to run it."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_defaces_the_example_and_writes_every_report(tmp_path: Path) -> None:
    """The demo goes on to the group level when the participant level ends with QC
    verdicts that are not ``pass`` (exit code 7), and every report it names exists."""
    out = tmp_path / "demo"
    done = subprocess.run(["bash", "scripts/demo.sh", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [Path(line.split("Report: ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("Report: ")]
    assert sorted(p.name for p in reports) == ["group.html", "sub-01.html", "sub-02.html"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in reports)
    with (out / "group.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    verdicts = {r["qc_verdict"] for r in rows}
    # the closing line is there exactly when a verdict is not pass
    assert ("QC: at least one image's verdict is not 'pass'" in done.stdout) == (verdicts != {"pass"})
