"""Pure defacing steps on tiny volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.anatomy import distance_mm
from bids_deface.deface import apply_face_mask, brain_guard, clean_face_mask, deface_image
from bids_deface.io import load_nifti, save_mask_like, save_raw_like


def test_brain_guard_keeps_margin_in_mm() -> None:
    face = np.ones((20, 3, 3), bool)
    brain = np.zeros_like(face)
    brain[:5] = True
    face[:5] = False
    # 2 mm voxels along x: a 4 mm margin removes two slices beyond the brain
    res = brain_guard(face, brain, (2.0, 1.0, 1.0), margin_mm=4.0)
    assert not res.face[:7].any()
    assert res.face[7:].all()
    assert res.guard_voxels == 2 * 9


def test_brain_guard_without_brain_changes_nothing() -> None:
    face = np.zeros((6, 6, 6), bool)
    face[2:4] = True
    res = brain_guard(face, np.zeros_like(face), (1, 1, 1))
    assert (res.face == face).all() and res.guard_voxels == 0


def test_brain_guard_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        brain_guard(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), (1, 1, 1))


def test_clean_face_mask_drops_small_islands() -> None:
    face = np.zeros((30, 30, 30), bool)
    face[:10, :10, :10] = True  # 1 mL at 1 mm
    face[20, 20, 20] = True  # 1 µL
    out = clean_face_mask(face, (1, 1, 1), min_component_ml=0.5)
    assert out[:10, :10, :10].all() and not out[20, 20, 20]


def test_apply_face_mask_only_touches_mask() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 1000, (10, 12, 14)).astype(np.int16)
    face = np.zeros(data.shape, bool)
    face[:3] = True
    out = apply_face_mask(data, face)
    assert out.dtype == data.dtype
    assert (out[~face] == data[~face]).all() and (out[face] == 0).all()
    assert (data[face] != 0).any()  # input untouched


def test_apply_face_mask_uses_negative_background() -> None:
    data = np.full((4, 4, 4), -1000.0, np.float32)
    data[1:3] = 50.0
    face = np.zeros(data.shape, bool)
    face[2] = True
    assert (apply_face_mask(data, face)[face] == -1000.0).all()


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype,slope,inter", [(np.int16, 0.5, 3.0), (np.uint8, 1.0, 0.0),
                                               (np.float32, 1.0, 0.0), (np.int16, 2.0, -100.0),
                                               (np.int16, -1.0, 0.0)])
def test_deface_and_save_keep_header_and_voxels_bit_exact(tmp_path: Path, ext: str, dtype: type,
                                                          slope: float, inter: float) -> None:
    rng = np.random.default_rng(1)
    data = (rng.random((10, 12, 14)) * 200).astype(dtype)
    affine = np.array([[-1.1, 0.1, 0, 50], [0, 0.9, 0.2, -60], [0, -0.1, 1.2, -40], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.header.set_slope_inter(slope, inter)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, 1)
    img.set_sform(np.diag([1, 1, 1, 1]) @ affine, 4)
    src = tmp_path / f"in{ext}"
    nib.save(img, src)
    img = load_nifti(src)
    face = np.zeros(data.shape, bool)
    face[:4, 6:] = True
    out = tmp_path / f"out{ext}"
    save_raw_like(deface_image(img, face), img, out)
    raw_in = src.read_bytes() if ext == ".nii" else __import__("gzip").decompress(src.read_bytes())
    raw_out = out.read_bytes() if ext == ".nii" else __import__("gzip").decompress(out.read_bytes())
    offset = int(img.dataobj.offset)
    assert raw_in[:offset] == raw_out[:offset]  # header and extensions, byte for byte
    a = np.asanyarray(img.dataobj.get_unscaled())
    b = np.asanyarray(load_nifti(out).dataobj.get_unscaled())
    assert a.dtype == b.dtype
    assert (a[~face] == b[~face]).all()
    scaled = np.asanyarray(load_nifti(out).dataobj)
    scaled_in_min = float((data.astype(float) * slope + inter).min())
    assert np.allclose(scaled[face], 0.0 if scaled_in_min >= 0 else scaled_in_min)
    assert oct(out.stat().st_mode & 0o777) != "0o600"


def test_mask_is_uint8_on_the_same_grid(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), affine)
    img.set_qform(affine, 1)
    mask = np.zeros((5, 6, 7), bool)
    mask[1] = True
    save_mask_like(mask, img, tmp_path / "m.nii.gz")
    m = nib.load(tmp_path / "m.nii.gz")
    assert m.get_data_dtype() == np.uint8
    assert np.allclose(m.affine, affine) and int(m.header["qform_code"]) == 1
    assert (np.asanyarray(m.dataobj) == mask).all()


def test_thick_slice_guard_counts_the_whole_slab_along_its_axis_only() -> None:
    from bids_deface.deface import guard_distance_mm

    # cubic voxels: distances between voxel centres
    brain = np.zeros((9, 9, 9), bool)
    brain[4, 4, 4] = True
    assert np.allclose(guard_distance_mm(brain, (1.0, 1.0, 1.0)), distance_mm(brain, (1.0, 1.0, 1.0)))
    # 2 mm slices: a millimetre less along them (half a millimetre from each voxel)
    d = guard_distance_mm(brain, (1.0, 1.0, 2.0))
    assert d[4, 4, 5] == 1.0 and d[4, 4, 6] == 3.0 and d[4, 6, 5] == pytest.approx(5**0.5)
    zooms = (1.0, 1.0, 5.0)
    face = np.ones((13, 9, 5), bool)
    brain = np.zeros_like(face)
    brain[:, :, 3:] = True
    res = brain_guard(face & ~brain, brain, zooms, 4.0)
    assert not res.face[:, :, 2].any()  # the slab next to the brain's slab touches it: it stays
    assert res.face[:, :, :2].all()  # the next one lies a whole slab beyond it
    # one brain voxel
    brain = np.zeros_like(face)
    brain[4, 4, 3] = True
    res = brain_guard(face & ~brain, brain, zooms, 4.0)
    same, across = ~res.face[:, :, 3], ~res.face[:, :, 2]
    # in its own slab the guard is 4 mm in-plane, as on a thin grid
    assert same[8, 4] and not same[9, 4]
    assert same[4, 0] and same[6, 7] and not same[7, 7]  # 3.6 mm kept, 4.2 mm removed
    # the slab across the boundary counts as 1 mm away (a neighbour of the finest side):
    # in-plane up to sqrt(4**2 - 1) = 3.9 mm
    assert across[4, 4] and across[7, 4] and across[7, 6] and not across[8, 4] and not across[7, 7]
    assert res.face[:, :, :2].all()
    # never more than between centres, never less than between the slabs
    d = guard_distance_mm(brain, zooms)
    centre = distance_mm(brain, zooms)
    assert (d <= centre + 1e-9).all() and (d >= centre - 4.0 - 1e-9).all()


def test_guard_distance_with_two_thick_axes_is_the_nearest_brain_by_its_rule() -> None:
    """Rectangular in-plane pixels and thick slices (two axes longer than the finest): every
    distance up to the limit is the smallest, over all brain voxels, of the offsets counted
    by the guard's rule (finest axis in full, each longer axis ``side - finest`` less)."""
    from bids_deface.deface import guard_distance_mm

    rng = np.random.default_rng(3)
    zooms = np.array([0.5, 0.8, 2.0])
    brain = rng.random((17, 13, 9)) < 0.002
    brain[8, 6, 4] = True
    limit = 2.5
    d = guard_distance_mm(brain, zooms, limit)
    shorter = zooms - zooms.min()
    grid = np.indices(brain.shape).reshape(3, -1).T
    offsets = np.abs(grid[:, None, :] - np.argwhere(brain)[None, :, :]) * zooms
    counted = np.maximum(offsets - shorter, 0.0)
    counted[..., 0] = offsets[..., 0]
    expected = np.sqrt((counted ** 2).sum(-1)).min(1).reshape(brain.shape)
    near = expected <= limit
    assert near.sum() > 100 and (~near).sum() > 100
    assert np.allclose(d[near], expected[near])
    assert (d[~near] > limit).all()


def test_guard_distance_on_sub_slices_of_two_thick_axes_is_the_least_over_each_voxels_sub_slices() -> None:
    """A clinical grid of rectangular pixels in thick slices (0.34×0.52×4 mm: split into
    1×2×8 sub-slices of 0.34×0.26×0.5 mm, two of them thick): each voxel's distance is the
    least, over its sub-slices and every brain sub-slice, of the offsets counted by the
    guard's rule on the sub-slice grid."""
    from bids_deface.deface import guard_distance_mm, slab_splits

    zooms = (0.34, 0.52, 4.0)
    splits = slab_splits(zooms)
    assert splits == (1, 2, 8)
    shape = (15, 9, 4)
    fine_zooms = np.array(zooms) / splits
    rng = np.random.default_rng(5)
    brain = rng.random(tuple(n * k for n, k in zip(shape, splits))) < 0.0005
    brain[4, 6, 11] = True
    limit = 2.0
    d = guard_distance_mm(brain, zooms, limit, shape=shape)
    assert d.shape == shape
    shorter = fine_zooms - fine_zooms.min()
    grid = np.indices(brain.shape).reshape(3, -1).T
    offsets = np.abs(grid[:, None, :] - np.argwhere(brain)[None, :, :]) * fine_zooms
    counted = np.maximum(offsets - shorter, 0.0)
    per_sub = np.sqrt((counted ** 2).sum(-1)).min(1).reshape(brain.shape)
    expected = per_sub.reshape(shape[0], 1, shape[1], 2, shape[2], 8).min(axis=(1, 3, 5))
    near = expected <= limit
    assert near.sum() > 20 and (~near).sum() > 20
    assert np.allclose(d[near], expected[near])
    assert (d[~near] > limit).all()


def test_guard_on_sub_slices_counts_from_every_sub_slice_of_the_face_voxel() -> None:
    from bids_deface.deface import brain_guard_parts, guard_distance_mm, slab_splits

    zooms = (1.0, 1.0, 5.0)
    assert slab_splits(zooms) == (1, 1, 5)
    shape = (13, 9, 5)
    # brain in the upper three sub-slices of slab 3 and in all of slab 4
    sub = np.zeros((13, 9, 25), bool)
    sub[:, :, 17:] = True
    per_slab = np.zeros(shape, bool)
    per_slab[:, :, 3:] = True
    d = guard_distance_mm(sub, zooms, shape=shape)
    # slab 2 reaches up to sub-slice 14, three sub-slices below the brain; slab 3 holds brain
    assert d[0, 0].tolist() == [13.0, 8.0, 3.0, 0.0, 0.0]
    # the brain filling its slabs, on sub-slices or per slab: the slab next to it touches it
    filled = np.repeat(per_slab, 5, axis=2)
    assert np.allclose(guard_distance_mm(filled, zooms, shape=shape), guard_distance_mm(per_slab, zooms))
    assert guard_distance_mm(per_slab, zooms)[0, 0, 2] == 1.0
    face = ~per_slab
    kept = brain_guard_parts([(face, 2.5)], sub, zooms).face
    assert kept[:, :, :3].all() and not kept[:, :, 3:].any()
    assert not brain_guard_parts([(face, 2.5)], per_slab, zooms).face[:, :, 2].any()
    with pytest.raises(ValueError, match="not on one grid"):
        brain_guard_parts([(face, 2.5)], sub[:, :, :24], zooms)


def test_guard_parts_keep_their_own_margins() -> None:
    from bids_deface.deface import brain_guard_parts

    zooms = (0.6, 0.6, 0.6)
    brain = np.zeros((40, 3, 3), bool)
    brain[:10] = True
    model = np.zeros_like(brain)
    model[14:20] = True  # 3.0 to 6.0 mm from the brain
    zone = np.zeros_like(brain)
    zone[12:30] = True  # 1.8 to 12.0 mm
    res = brain_guard_parts([(model, 3.3), (zone, 4.0)], brain, zooms)
    depth = np.flatnonzero(res.face[:, 1, 1])
    # the model's part beyond 3.3 mm (from 3.6 mm), the zone's beyond 4 mm (from 4.2 mm)
    assert depth.min() == 15 and set(range(15, 30)) == set(depth.tolist())
    assert not res.face[:15].any()
    assert res.guard_voxels == int((model | zone).sum() - res.face.sum()) == 3 * 9
    # one part alone is brain_guard
    alone = brain_guard_parts([(zone, 4.0)], brain, zooms)
    assert (alone.face == brain_guard(zone, brain, zooms, 4.0).face).all()
    assert np.flatnonzero(alone.face[:, 1, 1]).min() == 16


def test_guard_in_boxes_keeps_what_one_box_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard measured in small boxes around the face's parts (a face and two ears far
    apart, on sub-slices of thick slabs with rectangular pixels) keeps exactly the voxels
    that one box over all of them keeps, for every part's margin."""
    import bids_deface.deface as deface

    rng = np.random.default_rng(3)
    zooms = (0.5, 0.7, 3.0)
    shape = (90, 60, 14)
    splits = deface.slab_splits(zooms)
    brain = np.zeros(tuple(n * k for n, k in zip(shape, splits)), bool)
    sx, sy, sz = splits
    brain[20 * sx:70 * sx, 10 * sy:45 * sy, 4 * sz + 1:12 * sz] = True
    brain &= rng.random(brain.shape) > 0.02
    face = np.zeros(shape, bool)
    face[30:60, 44:60, 2:8] = rng.random((30, 16, 6)) > 0.3     # in front of the brain
    ears = np.zeros(shape, bool)
    ears[8:22, 20:35, 5:10] = True                              # beside it, both sides
    ears[68:84, 20:35, 5:10] = True
    parts = [(face, 4.0), (ears, 3.0)]
    one = deface.brain_guard_parts(parts, brain, zooms)
    monkeypatch.setattr(deface, "GUARD_BOX_VOXELS", 40_000)
    boxes = deface._guard_boxes(face | ears, [int(np.ceil(4.0 / z)) + 1 for z in zooms], splits, 40_000)
    assert len(boxes) > 3
    many = deface.brain_guard_parts(parts, brain, zooms)
    assert 0 < one.guard_voxels < np.count_nonzero(face | ears)
    assert np.array_equal(one.face, many.face) and one.guard_voxels == many.guard_voxels
