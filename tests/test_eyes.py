"""Eyeballs found whole: on a phantom with known globes and on a real head."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from bids_deface.anatomy import head_mask
from bids_deface.eyes import find_globes, globe_masks
from bids_deface.evaluation.cases import load_landmarks

from .phantoms import head_phantom


def _ras(img: nib.Nifti1Image, brain: np.ndarray):  # type: ignore[no-untyped-def]
    ras = nib.as_closest_canonical(img)
    b = np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(brain.astype(np.uint8), img.affine)).dataobj) > 0
    return ras, ras.get_fdata(dtype=np.float32), b, np.asarray(ras.header.get_zooms()[:3], float)


def _lidded_phantom():  # type: ignore[no-untyped-def]
    """The phantom with lids: 3 mm of face tissue over the part of each eye that bulges
    out of the face into the air (a real eye lies under its lids)."""
    img, brain = head_phantom()
    data = np.asanyarray(img.dataobj).astype(np.float32)
    idx = np.indices(data.shape).astype(float)
    world = [idx[i] * img.affine[i, i] + img.affine[i, 3] for i in range(3)]
    for x in (-32.0, 32.0):
        r2 = (world[0] - x) ** 2 + (world[1] - 72.0) ** 2 + (world[2] + 28.0) ** 2
        data[(r2 <= 14.0 ** 2) & (r2 > 11.0 ** 2) & (data < 100)] = 850.0
    return nib.Nifti1Image(data.astype(np.int16), img.affine), brain


def test_phantom_globes_found_at_their_centres() -> None:
    img, brain = _lidded_phantom()
    ras, data, b, zooms = _ras(img, brain)
    globes = {g.side: g for g in find_globes(data, b, zooms, head_mask(data, zooms) | b)}
    assert set(globes) == {"right", "left"}
    origin = ras.affine[:3, 3]
    for side, x in (("right", -32.0), ("left", 32.0)):
        centre = np.asarray(globes[side].centre_mm) + origin  # world mm (axis-aligned, positive zooms)
        assert np.linalg.norm(centre - [x, 72.0, -28.0]) < 6.0, (side, centre)  # 3 voxels
        assert 9.0 <= globes[side].radius_mm <= 14.0
    # the balls hold the phantom's eyes whole once the wall is added
    idx = np.indices(data.shape).astype(float)
    world = [idx[i] * zooms[i] + origin[i] for i in range(3)]
    eyes_true = np.zeros(data.shape, bool)
    for x in (-32.0, 32.0):
        eyes_true |= ((world[0] - x) ** 2 + (world[1] - 72.0) ** 2 + (world[2] + 28.0) ** 2) <= 11.0 ** 2
    masks = globe_masks(data.shape, zooms, list(globes.values()), wall_mm=2.0)
    both = masks["right"] | masks["left"]
    assert (both & eyes_true).sum() >= 0.97 * eyes_true.sum(), (both & eyes_true).sum() / eyes_true.sum()


def test_no_globes_when_the_orbits_are_out_of_view() -> None:
    img, brain = head_phantom()
    ras, data, b, zooms = _ras(img, brain)
    k0 = int((-5.0 - ras.affine[2, 3]) / zooms[2])  # image from 5 mm below the eyes' top up
    above = data[:, :, k0:]
    assert find_globes(above, b[:, :, k0:], zooms) == []


def test_real_head_globes_behind_the_lenses(s1_2mm: nib.Nifti1Image) -> None:
    """pycortex S1 (held out) at 2 mm: each globe found 5-15 mm behind the lens landmark
    placed by eye, on the landmark's side."""
    from bids_deface.brainmask import deepbet_brain_mask

    ras, data, b, zooms = _ras(s1_2mm, deepbet_brain_mask(s1_2mm))
    globes = {g.side: g for g in find_globes(data, b, zooms, head_mask(data, zooms) | b)}
    assert set(globes) == {"right", "left"}
    lms = load_landmarks("pycortex_s1")
    for side, g in globes.items():
        centre = nib.affines.apply_affine(ras.affine, np.asarray(g.centre_mm) / zooms)
        lens = np.asarray(lms[f"eye_{side}"])
        offset = lens - centre
        assert 3.0 < offset[1] < 15.0, (side, offset)  # the lens lies in front of the centre
        assert np.hypot(offset[0], offset[2]) < 8.0, (side, offset)
