"""The head's pose and its upright frame (bids_deface.pose) on a real head's brain (deepbet's)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_deface.evaluation.cases import rotated
from bids_deface.pose import UprightFrame, head_pose


@pytest.fixture(scope="module")
def tissue(s1_2mm: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """pycortex S1's brain at 2 mm (deepbet), in RAS axis order, and its voxel sizes."""
    from bids_deface.brainmask import deepbet_brain_mask

    brain = nib.Nifti1Image(deepbet_brain_mask(s1_2mm).astype(np.uint8), s1_2mm.affine)
    ras = nib.as_closest_canonical(brain)
    return np.asanyarray(ras.dataobj) > 0, np.asarray(ras.header.get_zooms()[:3], float)


@pytest.mark.parametrize("axis,degrees", [(0, 25.0), (1, -30.0), (2, 15.0)])
def test_turned_head_measures_the_turn(tissue, axis: int, degrees: float) -> None:  # type: ignore[no-untyped-def]
    """Turned about x (pitch), y (roll) or z (yaw), the head's pose moves by that angle
    (within 3°) along that angle only (within 3°)."""
    mask, zooms = tissue
    before = head_pose(mask, zooms)
    centre = np.argwhere(mask).mean(0)
    turned = rotated(mask.astype(np.float32), zooms, centre, axis, degrees, 1) > 0.5
    after = head_pose(turned, zooms)
    assert before is not None and after is not None
    moved = [after.pitch - before.pitch, after.roll - before.roll, after.yaw - before.yaw]
    # ``rotated`` turns right-handed about x and z, the other way about y
    want = [0.0, 0.0, 0.0]
    want[axis] = -degrees if axis == 1 else degrees
    assert np.allclose(moved, want, atol=3.0), (moved, want)
    assert after.tilted


def test_upright_frame_round_trip(tissue) -> None:  # type: ignore[no-untyped-def]
    """A mask taken into the upright frame of a tilted pose and back is the mask again
    (nearest voxel both ways: Dice above 0.98), and the frame holds the whole field of view."""
    mask, zooms = tissue
    centre = np.argwhere(mask).mean(0)
    turned = rotated(mask.astype(np.float32), zooms, centre, 0, 30.0, 1) > 0.5
    pose = head_pose(turned, zooms)
    assert pose is not None and pose.tilted
    frame = UprightFrame.of(pose, turned.shape, zooms, min_spacing=2.0)
    up = frame.upright(turned.astype(np.float32), order=0) > 0.5
    assert up.sum() * frame.spacing ** 3 == pytest.approx(turned.sum() * np.prod(zooms), rel=0.02)
    back = frame.back(up)
    dice = 2 * (back & turned).sum() / (back.sum() + turned.sum())
    assert dice > 0.98
    # on sub-slices (two per voxel along z) the same mask, each voxel's halves alike
    sub = frame.back(up, (1, 1, 2))
    assert sub.shape == (turned.shape[0], turned.shape[1], 2 * turned.shape[2])
    assert 2 * (sub[..., ::2] & turned).sum() / (sub[..., ::2].sum() + turned.sum()) > 0.97
