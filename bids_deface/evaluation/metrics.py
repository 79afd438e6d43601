"""Defacing metrics, with the same definitions everywhere (tests, benchmarks, docs)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..anatomy import distance_mm

__all__ = ["sphere_mask", "feature_coverage", "brain_voxels_removed", "brain_gap_mm", "dice", "hd95",
           "COVERAGE_RADIUS_MM", "REQUIRED"]

#: Radius of the sphere around each landmark (mm): the front of the eyeball with the lids
#: (the eye landmarks sit at the lens), the nose, the lips and the concha of each ear.
COVERAGE_RADIUS_MM = 10.0

#: Acceptance: minimum coverage per feature.
REQUIRED = {"eye_right": 0.99, "eye_left": 0.99, "eyeball_right": 0.99, "eyeball_left": 0.99,
            "nose": 0.99, "mouth": 0.99, "ear_right": 0.95, "ear_left": 0.95}


def sphere_mask(shape: Sequence[int], affine: np.ndarray, centre_world: Sequence[float],
                radius_mm: float) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of ``centre_world`` (any affine)."""
    inv = np.linalg.inv(affine)
    centre_vox = inv[:3, :3] @ np.asarray(centre_world, float) + inv[:3, 3]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    reach = np.ceil(radius_mm / zooms).astype(int) + 1
    lo = np.maximum(np.floor(centre_vox).astype(int) - reach, 0)
    hi = np.minimum(np.ceil(centre_vox).astype(int) + reach + 1, shape)
    out = np.zeros(shape, bool)
    if np.any(hi <= lo):
        return out
    idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    inside = ((world - np.asarray(centre_world)) ** 2).sum(-1) <= radius_mm**2
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = inside
    return out


def feature_coverage(face: np.ndarray, head: np.ndarray, affine: np.ndarray,
                     landmark: Sequence[float], radius_mm: float = COVERAGE_RADIUS_MM) -> float:
    """Fraction of head-tissue voxels in the sphere around ``landmark`` that ``face`` removes.

    NaN when the sphere holds no head tissue (the feature is outside the field of view).

    Examples
    --------
    >>> head = np.ones((21, 21, 21), bool); face = head.copy(); face[:10] = False
    >>> round(feature_coverage(face, head, np.eye(4), (10, 10, 10), 3.0), 2)
    0.62
    """
    sphere = sphere_mask(face.shape, affine, landmark, radius_mm) & head
    n = int(sphere.sum())
    if n == 0:
        return float("nan")
    return float((face & sphere).sum()) / n


def brain_voxels_removed(face: np.ndarray, brain: np.ndarray) -> int:
    """Voxels of an independent brain mask that the face mask removes (must be 0)."""
    return int(np.count_nonzero(face & brain))


def brain_gap_mm(face: np.ndarray, brain: np.ndarray, zooms: Sequence[float]) -> float:
    """Smallest distance (mm, voxel centres) from a removed voxel to the brain mask.

    Reported beside :func:`brain_voxels_removed`: ``docs/mask.md`` aims at a margin of 2 mm.
    ``inf`` when nothing is removed or the brain mask is empty.

    Examples
    --------
    >>> brain = np.zeros((10, 1, 1), bool); brain[:3] = True
    >>> face = np.zeros_like(brain); face[6:] = True
    >>> brain_gap_mm(face, brain, (1.0, 1.0, 2.0))
    4.0
    """
    face = face.astype(bool)
    if not face.any():
        return float("inf")
    return float(distance_mm(brain.astype(bool), zooms)[face].min())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2 * (a & b).sum() / denom)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def hd95(a: np.ndarray, b: np.ndarray, zooms: Sequence[float]) -> float:
    """95th percentile symmetric surface distance in mm (NaN if either mask is empty)."""
    a, b = a.astype(bool), b.astype(bool)
    if not a.any() or not b.any():
        return float("nan")
    sa, sb = _surface(a), _surface(b)
    da = ndimage.distance_transform_edt(~sb, sampling=zooms)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=zooms)[sb]
    return float(np.percentile(np.concatenate([da, db]), 95))
