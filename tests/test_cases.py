"""The evaluation's input-kind cases, made from a real head (pycortex S1 at 2 mm): each is
the acquisition or the damage it names, and its masks and landmarks follow the image."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_deface.deface import slab_splits
from bids_deface.evaluation.cases import INPUT_KIND_CASES, load_landmarks, make_cases, not_head_cases

NEW = INPUT_KIND_CASES[5:]


@pytest.fixture(scope="module")
def s1_cases(s1_2mm: nib.Nifti1Image) -> dict:
    from bids_deface.brainmask import deepbet_brain_mask

    brain = deepbet_brain_mask(s1_2mm)
    cases = {c.name: c for c in make_cases(s1_2mm, brain, load_landmarks("pycortex_s1"), NEW)}
    ras = nib.as_closest_canonical(s1_2mm)
    brain_ras = np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(brain.astype(np.uint8), s1_2mm.affine)).dataobj) > 0
    return {"cases": cases, "ras": ras, "brain": brain_ras}


def _vox(img: nib.Nifti1Image, point: list[float]) -> np.ndarray:
    return np.linalg.inv(img.affine)[:3] @ np.r_[point, 1.0]


def test_every_new_case_is_made(s1_cases: dict) -> None:
    assert sorted(s1_cases["cases"]) == sorted(NEW)


@pytest.mark.parametrize("name, axis", [(NEW[0], 0), (NEW[1], 1)])
def test_thick_slabs_along_each_axis(s1_cases: dict, name: str, axis: int) -> None:
    case = s1_cases["cases"][name]
    zooms = case.image.header.get_zooms()[:3]
    assert 4.0 <= zooms[axis] <= 6.0 and all(z < 2.5 for a, z in enumerate(zooms) if a != axis)
    # the slabs' brain is any of its slices', kept on the sub-slices for the guard's ceiling
    splits = slab_splits(zooms)
    assert case.brain_slices.shape == tuple(n * k for n, k in zip(case.brain.shape, splits))
    along = case.brain_slices.reshape([v for n, k in zip(case.brain.shape, splits) for v in (n, k)]).any(axis=(1, 3, 5))
    assert np.array_equal(along, case.brain)
    # the world stays where it was: the slabs' centres average the source's voxel centres
    src = s1_cases["ras"]
    k = splits[axis]
    assert np.allclose(case.image.affine[:3, 3], src.affine[:3, 3] + src.affine[:3, axis] * (k - 1) / 2.0)


def test_ears_cut_by_the_sides(s1_cases: dict) -> None:
    case = s1_cases["cases"][NEW[2]]
    xs = sorted(_vox(case.image, case.landmarks[k])[0] for k in ("ear_right", "ear_left"))
    assert abs(xs[0]) < 0.6 and abs(xs[1] - (case.image.shape[0] - 1)) < 0.6
    assert case.partial


def test_face_cut_at_the_lenses(s1_cases: dict) -> None:
    case = s1_cases["cases"][NEW[3]]
    ny = case.image.shape[1]
    assert _vox(case.image, case.landmarks["nose"])[1] > ny - 1  # out of view
    for eye in ("eye_right", "eye_left"):
        assert abs(_vox(case.image, case.landmarks[eye])[1] - (ny - 1)) < 1.6
    assert case.partial


def test_plane_cut_leaves_the_brain_whole(s1_cases: dict) -> None:
    case = s1_cases["cases"][NEW[4]]
    before = s1_cases["ras"].get_fdata(dtype=np.float32)
    after = case.image.get_fdata(dtype=np.float32)
    brain = s1_cases["brain"]
    assert np.array_equal(after[brain], before[brain])
    cut = (before > 0) & (after == 0)
    # the nose and the mouth are gone, what is left of the face stays labelled
    for feature in ("nose", "mouth"):
        assert cut[tuple(np.round(_vox(case.image, case.landmarks[feature])).astype(int))], feature
    assert not (case.reference_face & cut).any()


def test_frame_around_the_head_leaves_it_untouched(s1_cases: dict) -> None:
    case = s1_cases["cases"][NEW[5]]
    before = s1_cases["ras"].get_fdata(dtype=np.float32)
    after = case.image.get_fdata(dtype=np.float32)
    # the source sits inside the widened field of view, the same world position
    offset = np.round(_vox(case.image, s1_cases["ras"].affine[:3, 3])).astype(int)
    inside = tuple(slice(o, o + n) for o, n in zip(offset, before.shape))
    assert offset[2] == 0 and min(offset[:2]) > 0
    frame = after != 0
    frame[inside] &= after[inside] != before
    assert frame.sum() > 500  # posts, ring and rods: bright voxels that were not there
    assert after[frame].min() > np.percentile(before[before > 0], 99)
    assert case.brain[inside].sum() == s1_cases["brain"].sum()


def test_phantom_is_a_cylinder_with_inserts() -> None:
    (phantom,) = [c for c in not_head_cases() if c.name == "phantom"]
    data = phantom.image.get_fdata()
    assert phantom.expect == "nothing" and not phantom.brain.any()
    inside = data > 300
    assert 0.15 < inside.mean() < 0.5
    assert len(np.unique(np.round(data[inside], -2))) > 5  # inserts of several intensities


def test_fine_clinical_grid_with_thick_slices(s1_2mm: nib.Nifti1Image, s1_cases: dict) -> None:
    from bids_deface.evaluation.cases import CLINICAL_IN_PLANE_MM

    case = s1_cases["cases"][NEW[6]]
    src = s1_cases["ras"]
    zooms, szooms = case.image.header.get_zooms()[:3], src.header.get_zooms()[:3]
    assert all(abs(z - CLINICAL_IN_PLANE_MM) < 0.01 for z in zooms[:2])
    assert zooms[2] == pytest.approx(2 * szooms[2])  # two of the source's 2 mm slices
    # the same field of view: the first and last voxels' outer edges where the source's are
    edge = lambda img, corner: (img.affine @ np.r_[np.asarray(corner, float), 1.0])[:3]  # noqa: E731
    lo = edge(case.image, [-0.5, -0.5, -0.5])
    assert np.allclose(lo, edge(src, [-0.5, -0.5, -0.5]), atol=0.01)
    # the brain keeps its volume, and the landmarks their tissue
    ml = lambda m, z: m.sum() * float(np.prod(z)) / 1000  # noqa: E731
    assert ml(case.brain, zooms) == pytest.approx(ml(s1_cases["brain"], szooms), rel=0.1)
    data, sdata = case.image.get_fdata(dtype=np.float32), src.get_fdata(dtype=np.float32)
    for key in ("eye_right", "nose"):
        v = tuple(np.round(_vox(case.image, case.landmarks[key])).astype(int))
        w = tuple(np.round(_vox(src, case.landmarks[key])).astype(int))
        assert abs(data[v] - sdata[w]) < 0.35 * sdata[w] + 1, key


@pytest.mark.parametrize("index, turns", [(7, 1), (8, 2)])
def test_heads_turned_under_a_supine_header(s1_cases: dict, index: int, turns: int) -> None:
    """On its side (the face to the image's left) or prone (the face towards posterior):
    the header keeps the scanner's axes, the brain and every landmark move with the voxels."""
    case = s1_cases["cases"][NEW[index]]
    src, brain = s1_cases["ras"], s1_cases["brain"]
    assert np.allclose(np.sign(np.diag(case.image.affine)[:3]), np.sign(np.diag(src.affine)[:3]))
    assert case.brain.sum() == brain.sum() and not case.partial
    data, sdata = case.image.get_fdata(dtype=np.float32), src.get_fdata(dtype=np.float32)
    for key, point in case.landmarks.items():
        v = tuple(np.round(_vox(case.image, point)).astype(int))
        w = tuple(np.round(_vox(src, load_landmarks("pycortex_s1")[key])).astype(int))
        assert data[v] == sdata[w], key
    world = case.image.affine[:3, :3] @ np.argwhere(case.brain).mean(0) + case.image.affine[:3, 3]
    nose = np.asarray(case.landmarks["nose"]) - world
    assert nose[0] < -50 if turns == 1 else nose[1] < -50


def test_head_off_centre(s1_cases: dict) -> None:
    """The head in a corner of a wider field of view: the same voxels at the same world
    positions, with empty room on its left, behind it and above it."""
    case = s1_cases["cases"][NEW[9]]
    src = s1_cases["ras"]
    before, after = src.get_fdata(dtype=np.float32), case.image.get_fdata(dtype=np.float32)
    offset = np.round(_vox(case.image, src.affine[:3, 3])).astype(int)
    assert offset[0] * 2.0 >= 60 and offset[1] * 2.0 >= 60 and offset[2] == 0
    inside = tuple(slice(o, o + n) for o, n in zip(offset, before.shape))
    assert np.array_equal(after[inside], before)
    assert after.sum() == pytest.approx(before.sum(), rel=1e-6)
    assert (after.shape[2] - before.shape[2]) * 2.0 >= 30
    assert case.brain[inside].sum() == s1_cases["brain"].sum() == case.brain.sum()
