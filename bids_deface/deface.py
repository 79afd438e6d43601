"""Pure-numpy steps of defacing: clean the predicted mask, guard the brain, apply.

Every function takes arrays (and voxel sizes where distances matter) and returns new
arrays, so each step can be tested on a tiny volume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import nibabel as nib
import numpy as np

from .anatomy import distance_mm, drop_small_components

__all__ = [
    "GuardResult",
    "brain_guard",
    "brain_guard_parts",
    "clean_face_mask",
    "apply_face_mask",
    "deface_image",
    "background_value",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardResult:
    """Face mask after the brain guard and the number of voxels the guard gave back."""

    face: np.ndarray
    guard_voxels: int


def brain_guard(
    face: np.ndarray, brain: np.ndarray, zooms: Sequence[float], margin_mm: float = 4.0
) -> GuardResult:
    """Remove from ``face`` every voxel within ``margin_mm`` of ``brain``.

    Parameters
    ----------
    face, brain : ndarray of bool
        Masks on the same grid.
    zooms : sequence of float
        Voxel sizes in mm, one per axis.
    margin_mm : float
        Protected distance around the brain.

    Examples
    --------
    >>> face = np.ones((5, 1, 1), bool); brain = np.zeros((5, 1, 1), bool); brain[0] = True
    >>> r = brain_guard(face, brain, (1.0, 1.0, 1.0), margin_mm=2.0)
    >>> r.face[:, 0, 0].tolist(), r.guard_voxels
    ([False, False, False, True, True], 3)
    """
    return brain_guard_parts([(face, margin_mm)], brain, zooms)


def brain_guard_parts(
    parts: Sequence[tuple[np.ndarray, float]], brain: np.ndarray, zooms: Sequence[float]
) -> GuardResult:
    """:func:`brain_guard` for a face made of parts that each keep their own margin.

    ``parts`` holds ``(mask, margin_mm)`` pairs; a voxel is kept when any part holding it
    keeps it, so a voxel in two parts gets the smaller of their margins. ``guard_voxels``
    counts the voxels of the union of the parts that are not kept.

    Examples
    --------
    >>> brain = np.zeros((6, 1, 1), bool); brain[0] = True
    >>> model = np.zeros((6, 1, 1), bool); model[2:4] = True
    >>> zone = np.zeros((6, 1, 1), bool); zone[2:] = True
    >>> r = brain_guard_parts([(model, 1.5), (zone, 4.5)], brain, (1.0, 1.0, 1.0))
    >>> r.face[:, 0, 0].astype(int).tolist(), r.guard_voxels
    ([0, 0, 1, 1, 0, 1], 1)
    """
    brain = np.asarray(brain, dtype=bool)
    distance = distance_mm(brain, zooms)
    union = np.zeros(brain.shape, bool)
    kept = np.zeros(brain.shape, bool)
    for mask, margin_mm in parts:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != brain.shape:
            raise ValueError(f"face {mask.shape} and brain {brain.shape} masks differ in shape")
        union |= mask
        kept |= mask & (distance > margin_mm)
    return GuardResult(face=kept, guard_voxels=int(np.count_nonzero(union & ~kept)))


def clean_face_mask(
    face: np.ndarray, zooms: Sequence[float], min_component_ml: float = 0.5
) -> np.ndarray:
    """Drop connected components of ``face`` smaller than ``min_component_ml`` millilitres.

    Small isolated islands are prediction noise (often inside the head); the face and
    each ear are large components and stay.
    """
    return drop_small_components(face, zooms, min_component_ml)


def background_value(data: np.ndarray) -> float:
    """Value that a removed voxel takes: 0, or the minimum when the data are all positive
    offsets of a non-zero floor (e.g. signed images whose air is negative)."""
    lo = float(np.nanmin(data)) if data.size else 0.0
    return lo if lo < 0 else 0.0


def apply_face_mask(data: np.ndarray, face: np.ndarray, fill: float | None = None) -> np.ndarray:
    """Return a copy of ``data`` with ``face`` voxels set to ``fill`` (default: background).

    Every voxel outside ``face`` is returned unchanged (same dtype, same bits).
    """
    face = np.asarray(face, dtype=bool)
    if face.shape != data.shape[:3]:
        raise ValueError(f"mask {face.shape} does not match image {data.shape}")
    out = np.array(data, copy=True)
    value = background_value(data) if fill is None else fill
    if out.ndim > 3:
        out[face, ...] = value
    else:
        out[face] = value
    return out


def deface_image(img: nib.Nifti1Image, face: np.ndarray) -> np.ndarray:
    """Return the stored (raw, unscaled) data of ``img`` with ``face`` voxels removed.

    Removal writes the raw value that maps to the background after the image's own
    scaling (``scl_slope``/``scl_inter``), so that the input header can be written
    unchanged next to the result (see :func:`bids_deface.io.save_raw_like`).
    """
    proxy = img.dataobj
    raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    slope = float(getattr(proxy, "slope", 1.0) or 1.0)
    inter = float(getattr(proxy, "inter", 0.0) or 0.0)
    # the smallest scaled value comes from the largest raw one when the slope is negative
    ends = (float(np.nanmin(raw)), float(np.nanmax(raw))) if raw.size else (0.0, 0.0)
    scaled_min = min(v * slope + inter for v in ends)
    scaled_bg = scaled_min if scaled_min < 0 else 0.0
    raw_bg: float = (scaled_bg - inter) / slope
    if np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        raw_bg = float(np.clip(np.round(raw_bg), info.min, info.max))
    return apply_face_mask(raw, face, fill=raw_bg)
