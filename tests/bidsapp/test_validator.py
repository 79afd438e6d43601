"""bids-validator-deno on the input and on the derivative dataset we write."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_deface.bids import validate
from bids_deface.bids.validate import run_validator, validate_input
from bids_deface.errors import InvalidDatasetError, ValidatorNotFoundError
from bids_deface.settings import Settings
from bids_deface.workflow import group_level, participant_level

from .layouts import BoxMasker


def test_output_is_a_valid_derivative_dataset(validator: str, bids_dataset: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    work = tmp_path / "work"  # created on demand; keeps the validator's report
    settings = Settings(bids_dir=bids_dataset, output_dir=out, work_dir=work)
    result = participant_level(settings, get_masker=BoxMasker)  # validates the input too
    assert not result.failed
    assert (work / "bids_validator_input.json").is_file()
    group_level(Settings(bids_dir=bids_dataset, output_dir=out, analysis_level="group"))
    assert (out / "group.tsv").is_file()
    report = run_validator(out)
    assert report.errors == [], report.describe_errors()
    assert report.summary.get("dataProcessed") is True
    assert len(report.summary.get("subjects", [])) == 2


def test_output_under_derivatives_is_valid_and_input_stays_valid(
        validator: str, bids_dataset: Path) -> None:
    out = bids_dataset / "derivatives" / "bids-deface"
    participant_level(Settings(bids_dir=bids_dataset, output_dir=out), get_masker=BoxMasker)
    assert run_validator(out).errors == []
    assert validate_input(bids_dataset).ok


def test_invalid_input_is_refused(validator: str, bids_dataset: Path, tmp_path: Path) -> None:
    (bids_dataset / "sub-01" / "anat").mkdir()
    (bids_dataset / "sub-01" / "anat" / "sub-01_blurry.nii.gz").write_bytes(b"")
    with pytest.raises(InvalidDatasetError, match="--skip-bids-validation"):
        participant_level(Settings(bids_dir=bids_dataset, output_dir=tmp_path / "out"),
                          get_masker=BoxMasker)
    assert not (tmp_path / "out").exists()


def test_missing_validator_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(validate, "find_validator", lambda: None)
    with pytest.raises(ValidatorNotFoundError, match="pip install bids-validator-deno"):
        run_validator(tmp_path)
