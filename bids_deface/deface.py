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

from .anatomy import block_reduce, distance_mm, drop_small_components, edt_mm

__all__ = [
    "GuardResult",
    "brain_guard",
    "brain_guard_parts",
    "guard_distance_mm",
    "slab_splits",
    "thick_axes",
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


def thick_axes(zooms: Sequence[float]) -> list[int]:
    """Axes whose voxel side is longer than the finest side (by more than 0.1 %).

    >>> thick_axes((1.0, 1.0, 5.0)), thick_axes((0.9, 0.9, 0.9))
    ([2], [])
    """
    lo = float(min(zooms))
    return [a for a, z in enumerate(zooms) if float(z) > lo * 1.001]


#: A voxel axis is a slab axis when its side is at least this times the finest side.
SLAB_RATIO = 1.5
#: The most sub-slices a slab is split into (:func:`slab_splits`).
MAX_SPLITS = 8


def slab_splits(zooms: Sequence[float]) -> tuple[int, ...]:
    """Sub-slices per voxel along each axis: a slab (an axis at least ``SLAB_RATIO`` times
    the finest side) is split into as many sub-slices as make them about as thin as the
    finest side (at most ``MAX_SPLITS``); other axes are not split.

    >>> slab_splits((0.6, 0.6, 3.0)), slab_splits((1.0, 1.0, 1.2)), slab_splits((0.45, 0.45, 5.0))
    ((1, 1, 5), (1, 1, 1), (1, 1, 8))
    """
    lo = float(min(zooms))
    return tuple(min(MAX_SPLITS, max(2, int(round(float(z) / lo)))) if float(z) >= lo * SLAB_RATIO else 1
                 for z in zooms)


def guard_distance_mm(brain: np.ndarray, zooms: Sequence[float], limit_mm: float = np.inf,
                      shape: Sequence[int] | None = None) -> np.ndarray:
    """Distance in mm from the tissue of every voxel of a grid (voxel size ``zooms``,
    ``shape``, default ``brain.shape``) to the nearest voxel of ``brain``.

    ``brain`` is given either on that grid or on a finer one that splits each voxel into
    an equal number of sub-slices along some axes (the *sub-slab* brain of a thick-slice
    image, :func:`slab_splits`): then the distance is counted on the finer grid, between
    sub-slice centres, and a voxel's is the smallest of its sub-slices', as the voxel is
    removed whole. Where a voxel is longer than the finest side along an axis the brain is
    not split along, the brain voxel's tissue also spans its voxel: an offset along that
    axis counts ``side - finest`` less (half a voxel beyond the finest half voxel on each
    side, never below 0). Offsets along the finest axes count in full. Distances up to
    ``limit_mm`` are exact; larger ones may come out larger.

    Examples
    --------
    A brain slab in 5 mm slices, given per slab (spanning its slab) and split into five
    sub-slices, with brain only in the lowest:

    >>> brain = np.zeros((9, 1, 3), bool); brain[4, 0, 1] = True
    >>> guard_distance_mm(brain, (1.0, 1.0, 5.0))[4, 0].tolist()
    [1.0, 0.0, 1.0]
    >>> sub = np.zeros((9, 1, 15), bool); sub[4, 0, 5] = True
    >>> guard_distance_mm(sub, (1.0, 1.0, 5.0), shape=(9, 1, 3))[4, 0].tolist()
    [1.0, 0.0, 5.0]
    """
    brain = np.asarray(brain, dtype=bool)
    shape = tuple(int(n) for n in (shape if shape is not None else brain.shape))
    splits = [b // n for b, n in zip(brain.shape, shape)]
    if any(b != n * k for b, n, k in zip(brain.shape, shape, splits)) or min(splits) < 1:
        raise ValueError(f"brain {brain.shape} does not split the grid {shape} into sub-slices")
    return _between_slabs_mm(brain, [float(z) / k for z, k in zip(zooms, splits)], limit_mm, splits)


#: Axes whose side is at most this times the finest are near-cubic for the guard: their
#: excess over the finest side is taken off the distance as a whole (:func:`_between_slabs_mm`).
NEAR_CUBIC = 1.1


def _between_slabs_mm(brain: np.ndarray, zooms: Sequence[float], limit_mm: float = np.inf,
                      splits: Sequence[int] = (1, 1, 1)) -> np.ndarray:
    """Distance in mm from the tissue of every voxel to the nearest ``brain`` voxel, the
    tissue of each voxel spanning its slab (:func:`guard_distance_mm` for a brain given
    on the voxel grid itself).

    On a grid of cubic voxels this is the distance between voxel centres
    (:func:`distance_mm`). Where an axis has longer voxels (thick slices), the tissue of
    both voxels, the face voxel's and the brain voxel's, spans its slab: an offset along
    that axis counts ``side - finest`` less (half a slab beyond the finest half voxel on
    each side, never below 0), so a slab next to the brain's slab is as near to it as a
    neighbouring voxel of the finest side. Offsets along the finest axes count in full.
    Distances up to ``limit_mm`` are exact; larger ones may come out larger. The squared
    distance is a sum over the axes, so after one in-plane distance transform the thick
    axes are searched one after the other (time grows with the sum of their reaches, not
    with the product: a grid with rectangular pixels in thick slices has two thick axes).

    Axes at most ``NEAR_CUBIC`` times the finest side (0.94 beside 0.9 mm, 0.41 beside
    0.375 mm sub-slices) count their offsets in full, and the distance is then lowered by
    the length of their excesses (``sqrt(sum((side - finest)**2))``, under 0.1 of the finest
    side): never more than the exact distance, and one distance transform instead of one
    per combination of slab offsets.

    With ``splits``, ``brain`` and ``zooms`` are those of sub-slices, ``splits[a]`` of them
    per voxel along axis ``a``, and each voxel gets the least distance of its sub-slices.
    That least is taken as soon as an axis allows it (the sums are the same, only fewer of
    them are made): along a split axis the distance transform covers, right after it;
    along a split thick axis, in its search, which looks from each voxel's nearest
    sub-slice only (the others lie farther from every brain sub-slice beyond the voxel).

    Examples
    --------
    >>> brain = np.zeros((9, 1, 3), bool); brain[4, 0, 0] = True
    >>> d = _between_slabs_mm(brain, (1.0, 1.0, 5.0))
    >>> d[4, 0].tolist(), d[0, 0].tolist()
    ([0.0, 1.0, 6.0], [4.0, 4.123105625617661, 7.211102550927978])
    >>> d = _between_slabs_mm(brain, (1.0, 1.05, 5.0))
    >>> round(float(d[0, 0, 0]), 3)   # 4 mm in full along the first axis, less 0.05 mm
    3.95
    """
    brain = np.asarray(brain, dtype=bool)
    z = np.asarray(zooms, dtype=float)
    splits = [int(k) for k in splits]
    lo = float(z.min())
    shorter = z - lo
    near = [a for a in thick_axes(z) if z[a] <= lo * NEAR_CUBIC]
    thick = [a for a in thick_axes(z) if a not in near]
    lower = float(np.sqrt(np.sum(shorter[near] ** 2)))
    if not thick or not brain.any():
        d = _least_of_sub_slices(distance_mm(brain, z), splits)
        return np.maximum(d - lower, 0.0) if lower else d
    # distance within the same slab: a huge voxel side keeps the transform in-plane
    sampling = z.copy()
    sampling[thick] = 1e6
    squared = edt_mm(~brain, sampling).astype(np.float64) ** 2
    squared = _least_of_sub_slices(squared, [1 if a in thick else k for a, k in enumerate(splits)])
    # an offset's cost is a sum over the thick axes, so the nearest brain is found one
    # thick axis at a time: the brain ``k`` slabs away along it, seen from every voxel
    for a in thick:
        n, per = squared.shape[a], splits[a]
        reach = min(n - 1, int(np.ceil((min(limit_mm, 1e4) + shorter[a]) / z[a])))
        best = block_reduce(squared, [per if b == a else 1 for b in range(3)], np.min) if per > 1 else squared.copy()
        m = best.shape[a]
        buffer = np.empty_like(best)
        for step in range(1, reach + 1):
            cost = max(0.0, step * z[a] - shorter[a]) ** 2
            if cost > limit_mm ** 2:
                break
            # voxel ``c`` (sub-slices ``c*per .. c*per+per-1``) sees the sub-slice ``step``
            # below its first one and ``step`` above its last one
            low = -(-step // per)
            for start, first, count in ((low * per - step, low, m - low),
                                        (per - 1 + step, 0, (n - per - step) // per + 1)):
                if count <= 0:
                    continue
                src = slice(start, start + (count - 1) * per + 1, per)
                dst = slice(first, first + count)
                tmp = _along(buffer, a, dst)
                np.add(_along(squared, a, src), cost, out=tmp)
                np.minimum(_along(best, a, dst), tmp, out=_along(best, a, dst))
        squared = best
    best = np.sqrt(squared)
    return np.maximum(best - lower, 0.0) if lower else best


def _least_of_sub_slices(array: np.ndarray, splits: Sequence[int]) -> np.ndarray:
    """The least of each voxel's ``splits`` sub-slices in ``array`` (``array`` itself
    when no axis is split)."""
    return block_reduce(array, splits, np.min) if any(int(k) > 1 for k in splits) else array


def _along(array: np.ndarray, axis: int, where: slice) -> np.ndarray:
    """The view of ``array`` cut to ``where`` along ``axis``."""
    index = [slice(None)] * array.ndim
    index[axis] = where
    return array[tuple(index)]


def brain_guard_parts(
    parts: Sequence[tuple[np.ndarray, float]], brain: np.ndarray, zooms: Sequence[float]
) -> GuardResult:
    """:func:`brain_guard` for a face made of parts that each keep their own margin.

    ``parts`` holds ``(mask, margin_mm)`` pairs on one grid; ``brain`` is on that grid or
    splits its voxels into sub-slices (:func:`guard_distance_mm`). A voxel is kept when any
    part holding it keeps it, so a voxel in two parts gets the smaller of their margins.
    ``guard_voxels`` counts the voxels of the union of the parts that are not kept.

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
    masks = [np.asarray(mask, dtype=bool) for mask, _ in parts]
    shape = masks[0].shape if masks else brain.shape
    for mask in masks:
        if mask.shape != shape or any(b % n for b, n in zip(brain.shape, shape)):
            raise ValueError(f"face {mask.shape} and brain {brain.shape} masks are not on one grid")
    union = np.zeros(shape, bool)
    for mask in masks:
        union |= mask
    kept = np.zeros(shape, bool)
    if not union.any():
        return GuardResult(face=kept, guard_voxels=0)
    limit = max(float(m) for _, m in parts)
    splits = [b // n for b, n in zip(brain.shape, shape)]
    pads = [int(np.ceil(limit / float(z))) + 1 for z in zooms[:3]]
    # only boxes around the face's parts (and the brain within the largest margin of them)
    # count: a voxel's distance up to ``limit`` depends on the brain within that margin alone
    for box, core in _guard_boxes(union, pads, splits, GUARD_BOX_VOXELS):
        fine_box = tuple(slice(b.start * k, b.stop * k) for b, k in zip(box, splits))
        distance = guard_distance_mm(brain[fine_box], zooms, limit, shape=[b.stop - b.start for b in box])
        # a box decides the voxels of its core only: near its edges the brain beyond it is not seen
        near = distance[tuple(slice(c.start - b.start, c.stop - b.start) for b, c in zip(box, core))]
        for mask, (_, margin_mm) in zip(masks, parts):
            kept[core] |= mask[core] & (near > margin_mm)
    return GuardResult(face=kept, guard_voxels=int(np.count_nonzero(union & ~kept)))


#: The most voxels of the brain's grid (sub-slices counted) the guard measures in one box.
GUARD_BOX_VOXELS = 12_000_000


def _guard_boxes(union: np.ndarray, pads: Sequence[int], splits: Sequence[int],
                 most: int = GUARD_BOX_VOXELS) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """``(box, core)`` pairs: every voxel of ``union`` lies in one ``core``, and its
    ``box`` holds the core with ``pads`` voxels around it, about ``most`` voxels or fewer
    once split into ``splits`` sub-slices. The union's bounding box is cut into cores along
    its longest axis, each shrunk to the union's voxels in it, so a face and two ears far
    apart get boxes of their own, not one box over the whole head.

    >>> u = np.zeros((40, 4, 4), bool); u[2, 1, 1] = u[37, 2, 2] = True
    >>> [[(s.start, s.stop) for s in box] for box, _ in _guard_boxes(u, (1, 1, 1), (1, 1, 1), most=200)]
    [[(1, 4), (0, 3), (0, 3)], [(36, 39), (1, 4), (1, 4)]]
    """
    shape = union.shape

    def box_of(idx: Sequence[np.ndarray], pad: Sequence[int]) -> tuple[slice, ...]:
        return tuple(slice(max(0, int(i.min()) - p), min(n, int(i.max()) + p + 1))
                     for i, p, n in zip(idx, pad, shape))

    idx = np.nonzero(union)
    whole = box_of(idx, pads)
    sizes = [b.stop - b.start for b in whole]
    per_voxel = int(np.prod(splits))
    if int(np.prod(sizes)) * per_voxel <= most:
        return [(whole, box_of(idx, (0, 0, 0)))]
    axis = int(np.argmax(sizes))
    cross = int(np.prod([n for a, n in enumerate(sizes) if a != axis])) * per_voxel
    step = max(1, most // cross - 2 * pads[axis])
    inner = union[whole]
    out = []
    for start in range(0, inner.shape[axis], step):
        part = np.nonzero(_along(inner, axis, slice(start, start + step)))
        if part[0].size:
            at = [i + b.start + (start if a == axis else 0) for a, (i, b) in enumerate(zip(part, whole))]
            out.append((box_of(at, pads), box_of(at, (0, 0, 0))))
    return out


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
