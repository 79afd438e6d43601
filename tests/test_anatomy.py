"""Head geometry on a phantom: head mask, the ear zone placed from the brain, head size."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_deface.anatomy import drop_behind_ears, ear_zone, fill_holes_in_slices, head_mask

from .phantoms import head_phantom


def test_head_mask_fills_the_head() -> None:
    img, brain = head_phantom()
    head = head_mask(img.get_fdata(dtype=np.float32), (2.0, 2.0, 2.0))
    assert head[brain].all()  # brain, csf and dark skull are inside the filled head
    assert not head[0, 0, 0] and not head[-1, -1, -1]


def test_ear_zone_covers_ears_and_spares_brain() -> None:
    img, brain, ears = head_phantom(with_ears=True)
    zooms = (2.0, 2.0, 2.0)
    head = head_mask(img.get_fdata(dtype=np.float32), zooms)
    zone = ear_zone(head, brain, zooms)
    assert zone[ears].mean() >= 0.9
    dist = ndimage.distance_transform_edt(~brain, sampling=zooms)
    assert not (zone & (dist <= 2.0)).any()  # the ear zone itself keeps 2 mm from the brain
    # above the ear canal level (where the temporalis lies) only tissue far out is taken
    z_ears = np.nonzero(ears)[2]
    high = np.zeros_like(zone)
    high[:, :, z_ears.max() + 1:] = True
    assert not (zone & high & (dist <= 16.0)).any()
    # the ear zones are two lateral blocks, not the face or the vertex
    xs = np.nonzero(zone)[0]
    assert ((xs < 25) | (xs > 70)).all()
    assert zone.sum() * 8 / 1000 < 400  # mL


def test_parts_behind_the_ears_are_dropped() -> None:
    img, brain, ears = head_phantom(with_ears=True)
    zooms = (2.0, 2.0, 2.0)
    head = head_mask(img.get_fdata(dtype=np.float32), zooms)
    zone = ear_zone(head, brain, zooms)
    front = np.zeros_like(brain)
    front[30:65, 95:, 10:45] = True  # the face, in front of the brain
    occiput = np.zeros_like(brain)
    occiput[40:50, 2:8, 60:70] = True  # a patch of scalp at the back of the head
    tail = np.zeros_like(brain)
    tail[4:8, 20:60, 40:44] = True  # a strip reaching from behind the ear to beside it
    face = front | occiput | ears | zone | tail
    kept = drop_behind_ears(face, brain, zooms)
    assert kept[front].all() and kept[ears].all() and kept[zone].all()
    assert not kept[occiput].any()
    assert kept[tail].all()  # reaches in front of the limit: kept whole
    assert (kept == (face & ~occiput)).all()
    assert (drop_behind_ears(face, np.zeros_like(brain), zooms) == face).all()


def test_behind_the_ears_on_a_brain_cut_by_thick_slices() -> None:
    # a field of view that cuts the brain on 5 mm slices: its lowest slice holds more than
    # 3 % of it; the face in front must stay
    zooms = (2.0, 2.0, 5.0)
    brain = np.zeros((60, 80, 20), bool)
    brain[10:50, 10:60, 0:15] = True
    face = np.zeros_like(brain)
    face[20:40, 65:78, 0:6] = True
    assert (drop_behind_ears(face, brain, zooms) == face).all()
    thin = np.zeros_like(brain)
    thin[30, 10:60, 0:15] = True  # a brain of zero half-width
    assert (drop_behind_ears(face, thin, zooms) == face).all()


def test_ear_zone_is_empty_without_brain() -> None:
    img, brain = head_phantom()
    head = head_mask(img.get_fdata(dtype=np.float32), (2.0, 2.0, 2.0))
    assert not ear_zone(head, np.zeros_like(brain), (2.0, 2.0, 2.0)).any()


def test_head_scale_from_the_brain_volume_ignores_a_stray_speck() -> None:
    from bids_deface.masking import ADULT_BRAIN_ML, head_scale

    brain = np.zeros((40, 40, 40), bool)
    brain[5:35, 5:35, 5:35] = True  # 729 mL at 3 mm
    assert head_scale(brain, (3.0, 3.0, 3.0)) == pytest.approx((729 / ADULT_BRAIN_ML) ** (1 / 3))
    # cut by the field of view: the volume says nothing about the head's size
    assert head_scale(brain[:20], (3.0, 3.0, 3.0)) is None
    # a speck of brain label on the border, apart from the brain: neither cut nor bigger
    brain[0, 20:30, 20:30] = True
    assert head_scale(brain, (3.0, 3.0, 3.0)) == pytest.approx((729 / ADULT_BRAIN_ML) ** (1 / 3))
    assert head_scale(np.zeros_like(brain), (3.0, 3.0, 3.0)) is None


def test_head_scale_allows_a_brainstem_out_of_the_bottom_in_any_orientation() -> None:
    import nibabel as nib

    from bids_deface.masking import ADULT_BRAIN_ML, head_scale, image_head_scale

    brain = np.zeros((40, 40, 40), bool)  # RAS axis order, 3 mm voxels
    brain[5:35, 5:35, 5:35] = True
    brain[18:23, 18:23, :5] = True  # 25 voxels of 9 mm²: a brainstem leaving the image
    expected = (float(brain.sum()) * 27 / 1000 / ADULT_BRAIN_ML) ** (1 / 3)
    assert head_scale(brain, (3.0, 3.0, 3.0)) == pytest.approx(expected)
    # the same column at the top, or a wider cut at the bottom: cut by the field of view
    assert head_scale(brain[:, :, ::-1], (3.0, 3.0, 3.0)) is None
    wide = brain.copy()
    wide[10:30, 10:30, :5] = True
    assert head_scale(wide, (3.0, 3.0, 3.0)) is None
    # stored upside down and with axes swapped (S->I, A->P, L->R order): the bottom is found
    stored = brain[:, ::-1, ::-1].transpose(2, 1, 0)
    affine = np.array([[0, 0, 3.0, 0], [0, -3.0, 0, 0], [-3.0, 0, 0, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(stored.astype(np.uint8), affine)
    assert image_head_scale(img, stored) == pytest.approx(expected)
    assert image_head_scale(img, stored[::-1]) is None  # now the column leaves at the top


def test_holes_filled_per_slice_as_scipy_fills_them() -> None:
    # head_mask fills each slice's holes by labelling the background once; it must give
    # what scipy's binary_fill_holes gives with a structure within the slices

    rng = np.random.default_rng(7)
    filled = 0
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(2, 24, 3))
        mask = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.5, 2.5)) > rng.uniform(0.4, 0.6)
        for axis in range(3):
            in_slice = np.zeros((3, 3, 3), bool)
            in_slice[tuple(1 if a == axis else slice(None) for a in range(3))] = ndimage.generate_binary_structure(2, 1)
            expected = ndimage.binary_fill_holes(mask, structure=in_slice)
            np.testing.assert_array_equal(fill_holes_in_slices(mask, axis), expected)
            filled += int(np.count_nonzero(expected & ~mask))
    assert filled > 0  # the masks had holes to fill
