"""Fixtures for the BIDS App tests: generated datasets and a geometric masker."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_deface.bids.validate import find_validator

from .layouts import BoxMasker, make_dataset


@pytest.fixture
def bids_dataset(tmp_path: Path) -> Path:
    """The standard layout: two subjects, sessions, runs, acq-/ce-/rec-, T1w/T2w/FLAIR."""
    return make_dataset(tmp_path / "bids")


@pytest.fixture
def box_masker() -> BoxMasker:
    return BoxMasker()


@pytest.fixture
def validator() -> str:
    """Path of bids-validator-deno; CI installs it (ci/install-bids-validator.sh)."""
    exe = find_validator()
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (run ci/install-bids-validator.sh)")
    return exe
