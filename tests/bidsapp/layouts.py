"""Generators of small BIDS datasets (tiny NIfTIs) and a geometric face masker for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np

from bids_deface.masking import MaskPrediction

SHAPE = (20, 24, 20)

#: The standard layout: sessions, several runs, acq-/ce-/rec- entities, T1w, T2w, FLAIR,
#: a .nii, a scaled int16, a float image with distinct qform/sform, plus files that must
#: not be selected (bold, T1map).
STANDARD_FILES: tuple[str, ...] = (
    "sub-01/ses-pre/anat/sub-01_ses-pre_acq-mprage_run-1_T1w.nii.gz",
    "sub-01/ses-pre/anat/sub-01_ses-pre_acq-mprage_run-2_T1w.nii.gz",
    "sub-01/ses-pre/anat/sub-01_ses-pre_ce-gad_T1w.nii.gz",
    "sub-01/ses-pre/anat/sub-01_ses-pre_T2w.nii.gz",
    "sub-01/ses-pre/anat/sub-01_ses-pre_FLAIR.nii",
    "sub-01/ses-pre/anat/sub-01_ses-pre_T1map.nii.gz",
    "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_bold.nii.gz",
    "sub-01/ses-post/anat/sub-01_ses-post_rec-norm_T1w.nii.gz",
    "sub-02/ses-pre/anat/sub-02_ses-pre_T1w.nii.gz",
    "sub-02/ses-pre/anat/sub-02_ses-pre_T2w.nii.gz",
)

#: How many runs of STANDARD_FILES the default suffixes select.
STANDARD_SELECTED = 8


def write_nifti(
    path: Path,
    shape: Sequence[int] = SHAPE,
    dtype: Any = np.int16,
    slope: float | None = None,
    inter: float | None = None,
    seed: int = 0,
    distinct_forms: bool = False,
    extension: bool = False,
) -> nib.Nifti1Image:
    """Write a small image with a header worth preserving; returns the image as loaded."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, size=tuple(shape)).astype(dtype)
    affine = np.diag([1.1, 0.9, 1.2, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -8.0]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if distinct_forms:
        qform = affine.copy()
        qform[:3, 3] += 1.5
        img.set_qform(qform, code=1)
        img.set_sform(affine, code=4)
    else:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, inter or 0.0)
    if extension:
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"keep me"))
    img.header["descrip"] = b"test image"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return nib.load(str(path))


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file of a tree, and the target of every link (links are not
    followed): compared before and after a run, it shows the input was not modified."""
    import hashlib
    import os

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def make_dataset(root: Path, files: Sequence[str] = STANDARD_FILES) -> Path:
    """Create a valid BIDS dataset with ``files`` (dataset-relative) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "dataset_description.json", {
        "Name": "Tiny", "BIDSVersion": "1.10.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["A. Tester", "B. Tester"],
    })
    (root / "README").write_text("A tiny generated dataset for tests.\n")
    subjects = sorted({f.split("/")[0] for f in files})
    (root / "participants.tsv").write_text(
        "participant_id\n" + "".join(f"{s}\n" for s in subjects))
    write_json(root / "participants.json", {"participant_id": {"Description": "label"}})
    # inheritance: a top-level sidecar for every T1w, overridden per file below
    write_json(root / "T1w.json", {"RepetitionTime": 2.3, "EchoTime": 0.003, "FlipAngle": 8})
    write_json(root / "task-rest_bold.json", {"TaskName": "rest", "RepetitionTime": 2.0})
    for i, rel in enumerate(files):
        path = root / rel
        if rel.endswith("_bold.nii.gz"):
            img = write_nifti(path, shape=(*SHAPE, 2), seed=i)
            img.header.set_zooms((*img.header.get_zooms()[:3], 2.0))
            nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header), str(path))
            continue
        kwargs: dict[str, Any] = {"seed": i}
        if "run-2" in rel:
            kwargs.update(slope=2.0, inter=10.0, extension=True)
        if "ce-gad" in rel:
            kwargs.update(dtype=np.float32, distinct_forms=True)
        if "T2w" in rel:
            kwargs.update(dtype=np.uint8)
        write_nifti(path, **kwargs)
        if "run-1_T1w" in rel:
            write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {"FlipAngle": 9})
    return root


class BoxMasker:
    """Pure-function masker: the face is a box at the front of the grid, the brain a box in
    the middle. No model involved: for tests of writing, naming and resume only."""

    name = "BoxMasker"
    sha256 = "0" * 64
    device = "cpu"
    runtime = "none (boxes)"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def predict(self, img: nib.Nifti1Image) -> MaskPrediction:
        self.calls += 1
        if self.fail_on and self.fail_on in str(img.get_filename()):
            raise RuntimeError("simulated prediction failure")
        nx, ny, nz = img.shape[:3]
        face = np.zeros((nx, ny, nz), bool)
        face[:, int(ny * 0.75):, : int(nz * 0.5)] = True
        brain = np.zeros_like(face)
        brain[nx // 4: 3 * nx // 4, ny // 4: ny // 2, nz // 2:] = True
        return MaskPrediction(face, brain, int(face.sum()), 0, 0.01)
