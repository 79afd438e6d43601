"""The shipped model on a real head never used in training (pycortex S1, downsampled to 2 mm).

Golden test by metric (bids_deface.evaluation.metrics), not by bytes: eyes, nose and mouth fully covered, each
ear at least 0.95 covered, and no voxel of an independent (deepbet) brain mask removed.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.data import default_model_dir
from bids_deface.evaluation.cases import load_landmarks
from bids_deface.evaluation.metrics import COVERAGE_RADIUS_MM, REQUIRED, brain_voxels_removed, feature_coverage
from bids_deface.masking import FaceModel
from bids_deface.pipeline import pose_flags
from bids_deface.pose import PRONE_FACE_ML
from bids_deface.anatomy import head_mask

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def model() -> FaceModel:
    return FaceModel(default_model_dir(), device="cpu", threads=2)


@pytest.fixture(scope="module")
def s1_prediction(model: FaceModel, s1_2mm: nib.Nifti1Image):  # type: ignore[no-untyped-def]
    return model.predict(s1_2mm)


def test_golden_coverage_and_brain_safety(s1_2mm: nib.Nifti1Image, s1_prediction) -> None:  # type: ignore[no-untyped-def]
    from bids_deface.brainmask import deepbet_brain_mask

    face = s1_prediction.face
    zooms = np.asarray(s1_2mm.header.get_zooms()[:3])
    head = head_mask(s1_2mm.get_fdata(dtype=np.float32), zooms)
    for feature, point in load_landmarks("pycortex_s1").items():
        cov = feature_coverage(face, head, s1_2mm.affine, point)
        assert not math.isnan(cov), f"{feature} is in the field of view"
        need = REQUIRED[feature]
        assert cov >= need, f"{feature}: coverage {cov:.3f} < {need}"
    brain = deepbet_brain_mask(s1_2mm)
    assert brain.sum() * np.prod(zooms) / 1000 > 1000  # a whole brain, in mL
    assert brain_voxels_removed(face, brain) == 0
    # the mask is a face, not the whole head: well under a quarter of the head tissue
    assert 0 < (face & head).sum() < 0.25 * head.sum()


@pytest.fixture(scope="module")
def s1_slabs(s1_2mm: nib.Nifti1Image):  # type: ignore[no-untyped-def]
    """The 2 mm head in 6 and 8 mm axial slabs, each with its brain (a slab is brain when
    any of its slices is)."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.cases import axial_slabs

    brain = deepbet_brain_mask(s1_2mm)
    return {mm: axial_slabs(s1_2mm, brain, mm) for mm in (6.0, 8.0)}


@pytest.mark.parametrize("slab_mm", [6.0, 8.0])
def test_golden_thick_slices(model: FaceModel, s1_slabs, slab_mm: float) -> None:  # type: ignore[no-untyped-def]
    """The same head in 6 and 8 mm axial slabs: the guard keeps every sub-slice of a face
    voxel's slab off the brain drawn on sub-slices, and no brain is removed from a slab in
    which any slice holds brain."""
    from bids_deface.evaluation.metrics import brain_gap_mm

    thick, brain = s1_slabs[slab_mm]
    zooms = np.asarray(thick.header.get_zooms()[:3])
    assert sorted(zooms.tolist()) == [2.0, 2.0, slab_mm]
    pred = model.predict(thick)
    face = pred.face
    # the guard's brain splits each slab into 2 mm sub-slices
    assert pred.guard_brain.shape[int(np.argmax(zooms))] == thick.shape[int(np.argmax(zooms))] * slab_mm / 2
    head = head_mask(thick.get_fdata(dtype=np.float32), zooms)
    for feature, point in load_landmarks("pycortex_s1").items():
        cov = feature_coverage(face, head, thick.affine, point)
        assert cov >= REQUIRED[feature], f"{feature}: coverage {cov:.3f} < {REQUIRED[feature]}"
    assert brain_voxels_removed(face, brain) == 0
    # and the design's 2 mm margin holds between voxel centres
    assert brain_gap_mm(face, brain, zooms) >= 2.0


def test_thick_slices_flipped_along_the_slabs_give_the_same_mask(model: FaceModel, s1_slabs) -> None:  # type: ignore[no-untyped-def]
    """Sub-slices follow the slab axis's direction: stored upside down, same mask."""
    thick, _ = s1_slabs[8.0]
    axis = int(np.argmax(thick.header.get_zooms()[:3]))
    affine = thick.affine.copy()
    affine[:, 3] += affine[:, axis] * (thick.shape[axis] - 1)
    affine[:, axis] *= -1
    flipped = nib.Nifti1Image(np.flip(np.asanyarray(thick.dataobj), axis).copy(), affine)
    expected = model.predict(thick).face
    face = np.flip(model.predict(flipped).face, axis)
    assert expected.sum() > 0
    # the network sees the same RAS array: the same mask, voxel for voxel
    assert (face == expected).all()


def test_model_name_comes_from_the_plans(tmp_path: Path) -> None:
    # a model folder mounted anywhere (e.g. /model in a container) keeps its dataset's name
    import shutil

    folder = shutil.copytree(default_model_dir(), tmp_path / "model")
    assert FaceModel(folder, device="cpu").name == "Dataset801_FaceEars"


def test_any_orientation_gives_the_same_mask(model: FaceModel, s1_2mm: nib.Nifti1Image,
                                             s1_prediction) -> None:  # type: ignore[no-untyped-def]
    """Store the same voxels with permuted and flipped axes: the mask follows them."""
    data = np.asanyarray(s1_2mm.dataobj)
    perm, flip = (2, 0, 1), 1
    moved = np.flip(np.transpose(data, perm), flip)
    affine = s1_2mm.affine[:, list(perm) + [3]].copy()
    affine[:, 3] += affine[:, flip] * (moved.shape[flip] - 1)
    affine[:, flip] *= -1
    img = nib.Nifti1Image(np.ascontiguousarray(moved), affine)
    pred = model.predict(img)
    back = np.transpose(np.flip(pred.face, flip), np.argsort(perm))
    a, b = back, s1_prediction.face
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97


def test_stock_nnunet_inference_agrees(model: FaceModel, s1_2mm: nib.Nifti1Image) -> None:
    """The model folder run by nnU-Net's own predictor, with its default test-time mirroring
    (as ``nnUNetv2_predict`` does): the folder allows left-right flips only, so its labels
    agree with bids-deface's."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(default_model_dir()), ("all",), "checkpoint_final.pth")
    ras = nib.as_closest_canonical(s1_2mm)
    # nnU-Net's NibabelIOWithReorient: RAS voxels as [z, y, x]
    arr = ras.get_fdata(dtype=np.float32).transpose(2, 1, 0)[None]
    spacing = [float(z) for z in ras.header.get_zooms()[:3][::-1]]
    stock = predictor.predict_single_npy_array(arr, {"spacing": spacing}, None, None, False)
    ours = model.predict_labels(ras).transpose(2, 1, 0)
    for label in (1, 2):
        a, b = stock == label, ours == label
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9, label


def test_float_4d_and_nan_input(model: FaceModel, s1_2mm: nib.Nifti1Image) -> None:
    data = s1_2mm.get_fdata(dtype=np.float32).copy()  # the fixture caches its array: leave it as it is
    data[0, 0, 0] = np.nan
    img = nib.Nifti1Image(np.stack([data, data], -1), s1_2mm.affine)
    pred = model.predict(img)
    assert pred.face.shape == data.shape and pred.face.any()


def test_per_file_command(tmp_path: Path, s1_2mm: nib.Nifti1Image) -> None:
    from bids_deface.cli.file import main

    src = tmp_path / "head.nii.gz"
    nib.save(s1_2mm, src)
    before = src.read_bytes()
    out, mask = tmp_path / "defaced.nii.gz", tmp_path / "face.nii.gz"
    assert main([str(src), str(out), "--mask", str(mask), "--device", "cpu"]) == 0
    assert src.read_bytes() == before
    m = np.asanyarray(nib.load(mask).dataobj).astype(bool)
    a = np.asanyarray(nib.load(src).dataobj)
    b = np.asanyarray(nib.load(out).dataobj)
    assert m.any() and np.array_equal(a[~m], b[~m]) and (b[m] == 0).all()
    assert main([str(src), str(out)]) == 2  # exists, no --force
    assert main([str(src), str(src), "--force"]) == 2  # never over the input
    assert main([str(src), str(out), "--mask", str(out), "--force"]) == 2  # mask over the image
    with pytest.raises(SystemExit):
        main([str(src), str(out), "--threads", "0", "--force"])
    assert main([str(tmp_path / "missing.nii.gz"), str(tmp_path / "x.nii.gz")]) == 3
    # another image of the acquisition (here a phase-like one) takes that mask as it is
    other = tmp_path / "phase.nii.gz"
    nib.save(nib.Nifti1Image((a.astype(np.int16) % 97) - 48, s1_2mm.affine), other)
    taken = tmp_path / "phase_defaced.nii.gz"
    assert main([str(other), str(taken), "--mask-from", str(mask), "--mask", str(tmp_path / "m2.nii.gz")]) == 0
    c, d = np.asanyarray(nib.load(other).dataobj), np.asanyarray(nib.load(taken).dataobj)
    assert np.array_equal(c[~m], d[~m]) and (d[m] == c.min()).all()
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "m2.nii.gz").dataobj).astype(bool), m)
    # a mask on another grid is refused
    nib.save(nib.Nifti1Image(m[:-2].astype(np.uint8), s1_2mm.affine), tmp_path / "small.nii.gz")
    assert main([str(other), str(taken), "--mask-from", str(tmp_path / "small.nii.gz"), "--force"]) == 3


def test_small_head_is_seen_at_a_finer_spacing(model: FaceModel, s1_2mm: nib.Nifti1Image,
                                               s1_prediction) -> None:  # type: ignore[no-untyped-def]
    """The same voxels with 0.6× the voxel size: a newborn-size head. The model sees it at
    a finer spacing than the adult head, and the mask still meets the thresholds."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.masking import shown_scale

    s = 0.6
    affine = np.diag([s, s, s, 1.0]) @ s1_2mm.affine
    small = nib.Nifti1Image(np.asanyarray(s1_2mm.dataobj), affine)
    assert s1_prediction.spacing_mm == model.spacing_zyx
    pred = model.predict(small)
    expected = np.asarray(model.spacing_zyx) * s / shown_scale(s)
    assert np.allclose(pred.spacing_mm, expected, rtol=0.12), (pred.spacing_mm, expected)

    zooms = np.asarray(small.header.get_zooms()[:3])
    head = head_mask(small.get_fdata(dtype=np.float32), zooms)
    for feature, point in load_landmarks("pycortex_s1").items():
        cov = feature_coverage(pred.face, head, affine, s * np.asarray(point), COVERAGE_RADIUS_MM * s)
        assert cov >= REQUIRED[feature], f"{feature}: coverage {cov:.3f} < {REQUIRED[feature]}"
    # same voxels as the adult head, so the same independent brain mask
    assert brain_voxels_removed(pred.face, deepbet_brain_mask(s1_2mm)) == 0

    # the model's face is guarded by a margin shrunk with the finer voxel: it comes closer
    # to the predicted brain than 4 mm, never within the shrunk margin; the ear zone added
    # by rule keeps 2 mm whole and shrinks only the other 2 mm
    from bids_deface.anatomy import distance_mm

    distance = distance_mm(pred.brain, zooms)
    ratio = pred.spacing_mm[0] / model.spacing_zyx[0]
    assert distance[pred.face].min() > 4.0 * ratio
    assert (distance[pred.face] <= 4.0).any()
    zone_only = pred.face & ~model.predict(small, ears=False).face
    assert zone_only.any() and distance[zone_only].min() > 2.0 + 2.0 * ratio
    assert pred.guard_mm == pytest.approx({"face": 4.0 * ratio, "ears": 2.0 + 2.0 * ratio})


class _Keep:
    """The model with its upright frame on or off, keeping its last prediction."""

    def __init__(self, model: FaceModel, upright: bool) -> None:
        self.model, self.upright = model, upright

    def predict(self, img):  # type: ignore[no-untyped-def]
        self.last = self.model.predict(img, upright=self.upright)
        return self.last


def test_tilted_head_is_masked_upright(model: FaceModel, s1_2mm: nib.Nifti1Image,
                                       s1_prediction) -> None:  # type: ignore[no-untyped-def]
    """The 2 mm head rolled by 30°: its pose is measured, it is masked in its upright
    frame, and both ears (turned with it) are covered with no brain removed; in the
    image's own axes the ear zone misses the lower ear."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.__main__ import evaluate_case
    from bids_deface.evaluation.cases import make_cases

    assert not s1_prediction.upright and s1_prediction.pose is not None
    assert s1_prediction.pose.tilt <= 12.0
    brain = deepbet_brain_mask(s1_2mm)
    (case,) = make_cases(s1_2mm, brain, load_landmarks("pycortex_s1"), ["T1w rolled 30° (real)"])
    upright, axes = _Keep(model, True), _Keep(model, False)
    row, before = evaluate_case(upright, case), evaluate_case(axes, case)
    assert upright.last.upright and not axes.last.upright
    assert abs(abs(upright.last.pose.roll - s1_prediction.pose.roll) - 30.0) <= 4.0
    for feature in ("ear_right", "ear_left"):
        assert row[feature] >= REQUIRED[feature], f"{feature}: {row[feature]:.3f}"
    assert min(before["ear_right"], before["ear_left"]) < REQUIRED["ear_right"]
    assert row["brain_removed"] == 0


def test_head_on_its_side_under_a_supine_header(model: FaceModel, s1_2mm: nib.Nifti1Image,
                                                s1_prediction) -> None:  # type: ignore[no-untyped-def]
    """The 2 mm head on its side in an image whose header says it lies supine: the turn is
    measured, the head is masked turned back, and the face and ears are covered with no
    brain removed; masked as it lies, the face is missed."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.__main__ import evaluate_case
    from bids_deface.evaluation.cases import make_cases

    (case,) = make_cases(s1_2mm, deepbet_brain_mask(s1_2mm), load_landmarks("pycortex_s1"), ["T1w on its side (real)"])
    turned, as_it_lies = _Keep(model, True), _Keep(model, False)
    row, before = evaluate_case(turned, case), evaluate_case(as_it_lies, case)
    assert turned.last.upright and turned.last.pose.turned
    assert abs((turned.last.pose.yaw - s1_prediction.pose.yaw - 90.0 + 180.0) % 360.0 - 180.0) <= 5.0
    for feature in REQUIRED:
        assert row[feature] >= REQUIRED[feature], f"{feature}: {row[feature]:.3f}"
    assert row["brain_removed"] == 0
    assert min(before[f] for f in ("eye_right", "eye_left", "nose")) < REQUIRED["nose"]
    assert pose_flags(turned.last) == ("head_turned",)


def test_prone_head_under_a_supine_header(model: FaceModel, s1_2mm: nib.Nifti1Image,
                                          s1_prediction) -> None:  # type: ignore[no-untyped-def]
    """The 2 mm head prone in an image whose header says it lies supine (turned by a half
    turn, its mirror plane where an upright head has it): the network finds more face with
    the face taken to look posterior, the head is masked so, and the face and ears are
    covered with no brain removed; masked as it lies, the face is missed."""
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.__main__ import evaluate_case
    from bids_deface.evaluation.cases import make_cases

    (case,) = make_cases(s1_2mm, deepbet_brain_mask(s1_2mm), load_landmarks("pycortex_s1"), ["T1w prone (real)"])
    prone, as_it_lies = _Keep(model, True), _Keep(model, False)
    row, before = evaluate_case(prone, case), evaluate_case(as_it_lies, case)
    assert prone.last.upright and prone.last.face_in_front_ml >= PRONE_FACE_ML
    assert abs((prone.last.pose.yaw - s1_prediction.pose.yaw + 360.0) % 360.0 - 180.0) <= 5.0
    for feature in REQUIRED:
        assert row[feature] >= REQUIRED[feature], f"{feature}: {row[feature]:.3f}"
    assert row["brain_removed"] == 0
    assert max(before[f] for f in ("eye_right", "eye_left", "nose")) < REQUIRED["nose"]
    # the sidecar's flags ask for a look at a head masked turned back, and only then
    assert pose_flags(prone.last) == ("head_turned",)
    assert pose_flags(s1_prediction) == () and pose_flags(as_it_lies.last) == ()


def test_slab_pad_continues_only_a_slab_cut_through_the_brain(model: FaceModel, s1_2mm: nib.Nifti1Image,
                                                              s1_prediction) -> None:  # type: ignore[no-untyped-def]
    """``slab_pad_mm``: a whole head is masked as without it; a slab from below the eyes up,
    whose brain runs out of the image's bottom, is masked from the image continued down."""
    from bids_deface.masking import brain_cut_below

    padding = FaceModel(default_model_dir(), device="cpu", threads=2, slab_pad_mm=24.0)
    model = FaceModel(default_model_dir(), device="cpu", threads=2, slab_pad_mm=0.0)
    assert np.array_equal(padding.predict(s1_2mm).face, model.predict(s1_2mm).face)

    canonical = nib.as_closest_canonical(s1_2mm)
    eyes_z = np.mean([load_landmarks("pycortex_s1")[k][2] for k in ("eye_right", "eye_left")])
    k0 = int(np.linalg.inv(canonical.affine)[2] @ [0.0, 0.0, eyes_z - 12.0, 1.0])
    affine = canonical.affine.copy()
    affine[:3, 3] += affine[:3, 2] * k0
    slab = nib.Nifti1Image(np.asanyarray(canonical.dataobj)[:, :, k0:], affine)
    plain = model.predict(slab, upright=False)
    zooms = np.asarray(slab.header.get_zooms()[:3])
    assert brain_cut_below(plain.brain, zooms)
    padded = padding.predict(slab, upright=False)
    assert padded.face.shape == plain.face.shape
    assert 0 < np.count_nonzero(padded.face != plain.face) < 0.5 * np.count_nonzero(plain.face)
    # guarded from the brain of both passes (the default): never more removed than when
    # guarded from the continued pass's brain alone
    alone = FaceModel(default_model_dir(), device="cpu", threads=2, slab_pad_mm=24.0,
                      slab_guard_both=False).predict(slab, upright=False)
    assert padding.slab_guard_both and not np.any(padded.face & ~alone.face)
