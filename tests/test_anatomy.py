"""Head geometry on a phantom: head mask and the ear zone placed from the brain."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_deface.anatomy import ear_zone, head_mask

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
    assert not (zone & (dist <= 2.0)).any()  # DESIGN §1: at least 2 mm from the brain
    # above the ear canal level (where the temporalis lies) only tissue far out is taken
    z_ears = np.nonzero(ears)[2]
    high = np.zeros_like(zone)
    high[:, :, z_ears.max() + 1:] = True
    assert not (zone & high & (dist <= 16.0)).any()
    # the ear zones are two lateral blocks, not the face or the vertex
    xs = np.nonzero(zone)[0]
    assert ((xs < 25) | (xs > 70)).all()
    assert zone.sum() * 8 / 1000 < 400  # mL


def test_ear_zone_is_empty_without_brain() -> None:
    img, brain = head_phantom()
    head = head_mask(img.get_fdata(dtype=np.float32), (2.0, 2.0, 2.0))
    assert not ear_zone(head, np.zeros_like(brain), (2.0, 2.0, 2.0)).any()
