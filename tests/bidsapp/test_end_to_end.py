"""The whole app with the shipped face model (skipped until the model exists)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.bids.validate import run_validator
from bids_deface.cli.run import main
from bids_deface.data import default_model_dir

from .layouts import make_dataset

try:
    MODEL_DIR: Path | None = default_model_dir()
except FileNotFoundError:
    MODEL_DIR = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MODEL_DIR is None, reason="no trained model in models/Dataset801_FaceEars"),
]


def _head(shape: tuple[int, int, int] = (64, 76, 64), zoom: float = 3.0) -> nib.Nifti1Image:
    """An ellipsoid 'head' with a brighter 'brain' inside, 3 mm voxels, RAS."""
    idx = np.indices(shape).astype(np.float32)
    c = [(s - 1) / 2 for s in shape]
    r = (((idx[0] - c[0]) / 25) ** 2 + ((idx[1] - c[1]) / 32) ** 2 + ((idx[2] - c[2]) / 28) ** 2)
    data = np.where(r < 1, 300, 0) + np.where(r < 0.6, 500, 0)
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = [-(s * zoom) / 2 for s in shape]
    img = nib.Nifti1Image(data.astype(np.int16), affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


def test_participant_and_group_with_the_model(tmp_path: Path, validator: str) -> None:
    root = make_dataset(tmp_path / "bids", ["sub-01/anat/sub-01_T1w.nii.gz"])
    path = root / "sub-01/anat/sub-01_T1w.nii.gz"
    nib.save(_head(), str(path))
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--device", "cpu", "--no-progress"]) == 0
    side = json.loads(next(out.rglob("*_desc-defaced_T1w.json")).read_text())
    d = side["Defacing"]
    assert d["Model"] and len(d["ModelSHA256"]) == 64 and d["Device"] == "cpu"
    src, dst = nib.load(str(path)), nib.load(str(next(out.rglob("*_desc-defaced_T1w.nii.gz"))))
    mask = np.asanyarray(nib.load(str(next(out.rglob("*_mask.nii.gz")))).dataobj).astype(bool)
    a, b = np.asanyarray(src.dataobj), np.asanyarray(dst.dataobj)
    assert np.array_equal(a[~mask], b[~mask])
    assert int(mask.sum()) == d["VoxelsRemoved"]
    assert (out / "sub-01.html").is_file()
    # a rerun skips the complete run; the group level summarises it
    assert main([str(root), str(out), "participant", "--device", "cpu", "--no-progress"]) == 0
    assert main([str(root), str(out), "group"]) == 0
    assert run_validator(out).errors == []
