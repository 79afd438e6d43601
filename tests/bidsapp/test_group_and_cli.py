"""Group level summary, and the exit codes of ``bids-deface``."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids import validate
from bids_deface.cli.run import main
from bids_deface.settings import Settings
from bids_deface.workflow import group_level, participant_level

from .layouts import STANDARD_SELECTED, BoxMasker, make_dataset


def test_group_summary_lists_problems_first(bids_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = Settings(bids_dir=bids_dataset, output_dir=out, skip_bids_validation=True,
                        participant_label=("01",))
    participant_level(settings, get_masker=lambda: BoxMasker(fail_on="ses-pre_T2w"))
    # one input changed after defacing
    changed = bids_dataset / "sub-01/ses-post/anat/sub-01_ses-post_rec-norm_T1w.nii.gz"
    img = nib.load(str(changed))
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) + 1, img.affine, img.header), str(changed))

    result = group_level(Settings(bids_dir=bids_dataset, output_dir=out, analysis_level="group"))
    statuses = [r["status"] for r in result.rows]
    assert len(statuses) == STANDARD_SELECTED
    assert statuses == ["failed", "missing", "missing", "stale"] + ["ok"] * 4
    assert "simulated prediction failure" in result.rows[0]["error"]
    assert result.rows[1]["subject"] == "02" and "not_processed" in result.rows[1]["flags"]
    assert result.rows[3]["flags"][-1] == "input_changed"
    with open(out / "group.tsv", newline="") as fobj:
        table = list(csv.DictReader(fobj, delimiter="\t"))
    assert [row["status"] for row in table] == statuses
    assert table[1]["voxels_removed"] == "n/a"
    ok = table[-1]
    assert int(ok["voxels_removed"]) > 0 and ok["model"] == "BoxMasker"
    assert ok["defaced"].endswith("_desc-defaced_" + ok["suffix"] + ".nii.gz")
    assert ok["report"] == "sub-01.html"
    assert ".bidsignore" in {p.name for p in out.iterdir()}


def test_exit_code_usage(tmp_path: Path, bids_dataset: Path) -> None:
    assert main([str(bids_dataset), str(bids_dataset / "sub-01"), "participant"]) == 2
    assert main(["--version"]) == 0


def test_exit_code_invalid_dataset(tmp_path: Path) -> None:
    (tmp_path / "notbids").mkdir()
    assert main([str(tmp_path / "notbids"), str(tmp_path / "out"), "participant",
                 "--skip-bids-validation", "--no-progress"]) == 3


def test_exit_code_validator_missing(monkeypatch: pytest.MonkeyPatch, bids_dataset: Path,
                                     tmp_path: Path) -> None:
    monkeypatch.setattr(validate, "find_validator", lambda: None)
    assert main([str(bids_dataset), str(tmp_path / "out"), "participant", "--no-progress"]) == 4


def test_exit_code_no_runs(bids_dataset: Path, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    code = main([str(bids_dataset), str(tmp_path / "out"), "participant", "--no-progress",
                 "--skip-bids-validation", "--participant-label", "99"])
    assert code == 5


def test_exit_code_model_missing(bids_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "empty_model").mkdir()
    code = main([str(bids_dataset), str(tmp_path / "out"), "participant", "--no-progress",
                 "--skip-bids-validation", "--model-dir", str(tmp_path / "empty_model")])
    assert code == 6


def test_exit_code_failed_run_and_logs(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz"])
    (root / "sub-01/anat/sub-01_T1w.nii.gz").write_bytes(b"broken")
    out = tmp_path / "out"
    code = main([str(root), str(out), "participant", "--no-progress", "--skip-bids-validation"])
    assert code == 1
    logs = out / "logs"
    assert (logs / "sub-01_T1w_error.log").is_file()
    assert list(logs.glob("settings_*.json")) and list(logs.glob("bids-deface_participant_*.log"))
    # the group level still summarises, and says which run failed
    assert main([str(root), str(out), "group"]) == 0
    assert "\tfailed\t" in (out / "group.tsv").read_text()
