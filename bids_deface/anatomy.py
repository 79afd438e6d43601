"""Geometry of the head on RAS-oriented voxel arrays: head mask, pinnae and ear zone.

Shared by the training labels (``docs/mask.md``: the pinnae label the ears) and by inference
(the ear zone completes the model's face and ears). Arrays are indexed ``[x, y, z]`` in
RAS order with voxel sizes ``zooms`` (mm); only relative positions matter, so no affine
is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["distance_mm", "edt_mm", "set_threads", "bounding_box", "orbit_level", "block_factors", "block_reduce",
           "block_expand",
           "largest_component", "drop_small_components",
           "tissue_level", "head_mask", "pinnae", "hull_per_side", "ear_zone", "drop_behind_ears", "EAR_BEHIND_MM",
           "EAR_AHEAD_MM"]


#: Threads of the distance transforms (:func:`set_threads`).
_THREADS = 1


def set_threads(threads: int | None) -> None:
    """CPU threads for the distance transforms of :func:`distance_mm` (``None``: one)."""
    global _THREADS
    _THREADS = max(1, int(threads or 1))


def edt_mm(inside: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """Euclidean distance in mm (float32) of every ``inside`` voxel to the nearest voxel
    outside it, 0 outside (``scipy.ndimage.distance_transform_edt(inside, sampling=zooms)``,
    computed by the multi-threaded ``edt`` package; the image border is not a boundary).

    >>> edt_mm(np.array([[False, True, True, True]]), (1.0, 2.0))[0].tolist()
    [0.0, 2.0, 4.0, 6.0]
    """
    import edt

    inside = np.asarray(inside, dtype=bool)
    return edt.edt(np.ascontiguousarray(inside) if inside.ndim else inside,
                   anisotropy=tuple(float(z) for z in zooms), black_border=False, parallel=_THREADS)


def distance_mm(mask: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """Euclidean distance in mm of every voxel to the nearest voxel of ``mask``
    (infinite everywhere when ``mask`` is empty)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return edt_mm(~mask, zooms)


def orbit_level(brain_points: np.ndarray) -> tuple[float, float]:
    """``(y_front, z_orb)`` from brain points (N×3, RAS mm): the most anterior brain point
    and the underside of the frontal lobe within 30 mm behind it (the orbital roofs)."""
    y_front = float(brain_points[:, 1].max())
    frontal = brain_points[:, 1] > y_front - 30.0
    return y_front, float(np.percentile(brain_points[frontal, 2], 2))


def block_factors(zooms: Sequence[float], mm: float) -> np.ndarray:
    """Voxels per block along each axis for blocks of about ``mm`` (at least one voxel).

    >>> block_factors((1.0, 0.9, 5.0), 3.0).tolist()
    [3, 3, 1]
    """
    return np.maximum(1, np.floor(mm / np.asarray(zooms, float) + 1e-6)).astype(int)


def block_reduce(data: np.ndarray, factors: Sequence[int], reducer=np.mean) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Reduce ``data`` by blocks of ``factors`` voxels (``np.mean``, ``np.any``, ...),
    dropping the incomplete blocks at the far ends.

    ``np.mean`` and ``np.any`` add up (or OR) the strided views of the blocks' voxels,
    an order of magnitude faster than a reduction over a 6D view.

    >>> a = np.arange(16.0).reshape(4, 4, 1)
    >>> block_reduce(a, (2, 2, 1))[:, :, 0].tolist(), block_reduce(a > 13, (2, 2, 1), np.any)[:, :, 0].tolist()
    ([[2.5, 4.5], [10.5, 12.5]], [[False, False], [False, True]])
    """
    f = [int(v) for v in factors]
    n = [s // k for s, k in zip(data.shape[:3], f)]
    cropped = data[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]]
    if reducer is np.any or reducer is np.mean:
        views = (cropped[o[0]::f[0], o[1]::f[1], o[2]::f[2]] for o in np.ndindex(*f))
        if reducer is np.any:
            out = np.zeros(n, bool)
            for view in views:
                out |= view
            return out
        out = np.zeros(n, np.result_type(cropped.dtype, np.float32))
        for view in views:
            out += view
        return out / np.prod(f)
    return reducer(cropped.reshape(n[0], f[0], n[1], f[1], n[2], f[2]), axis=(1, 3, 5))


def block_expand(blocks: np.ndarray, factors: Sequence[int], shape: Sequence[int], fill: bool = False) -> np.ndarray:
    """A boolean mask of blocks (:func:`block_reduce`'s grid, ``factors`` voxels each) on
    the grid of ``shape``: each block's value over its voxels, ``fill`` over the incomplete
    blocks at the far ends that :func:`block_reduce` dropped.

    >>> block_expand(np.array([[[True], [False]]]), (2, 2, 1), (3, 4, 1), fill=True)[:, :, 0].tolist()
    [[True, True, False, False], [True, True, False, False], [True, True, True, True]]
    """
    up = np.asarray(blocks, bool)
    for axis, k in enumerate(factors):
        up = np.repeat(up, int(k), axis=axis)
    out = np.full(tuple(int(n) for n in shape), bool(fill))
    out[tuple(slice(0, n) for n in up.shape)] = up
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box (slices) holding every ``True`` voxel of ``mask`` (``mask``'s
    whole grid when it has none)."""
    box = []
    for axis in range(mask.ndim):
        where = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(where[0]), int(where[-1]) + 1) if where.size else slice(0, mask.shape[axis]))
    return tuple(box)


def _label(mask: np.ndarray) -> tuple[np.ndarray, int, tuple[slice, ...]]:
    """``ndimage.label`` of ``mask`` within its bounding box (the same parts, numbered the
    same, as over the whole grid), and that box."""
    box = bounding_box(mask)
    labels, n = ndimage.label(mask[box])
    return labels, n, box


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (voxels sharing a side; ``mask`` itself
    if it has one component or none).

    >>> m = np.zeros(10, bool); m[1:3] = m[5:9] = True
    >>> np.flatnonzero(largest_component(m)).tolist()
    [5, 6, 7, 8]
    """
    labels, n, box = _label(mask)
    if n < 2:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out = np.zeros(mask.shape, bool)
    out[box] = labels == sizes.argmax()
    return out


def drop_small_components(mask: np.ndarray, zooms: Sequence[float], min_ml: float) -> np.ndarray:
    """``mask`` without its connected components (voxels sharing a side) smaller than
    ``min_ml`` millilitres.

    >>> m = np.zeros((20, 10, 10), bool); m[:10] = True; m[15, 5, 5] = True
    >>> int(drop_small_components(m, (1.0, 1.0, 1.0), 0.5).sum())
    1000
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n, box = _label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:] * (float(np.prod(zooms)) / 1000.0)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sizes >= min_ml
    out = np.zeros(mask.shape, bool)
    out[box] = keep[labels]
    return out


def tissue_level(data: np.ndarray) -> float:
    """The intensity above which a voxel counts as head tissue: the 2nd percentile of the
    finite values plus 8 % of the range from there to their 99.5th.

    >>> tissue_level(np.arange(1001, dtype=np.float32))
    98.0
    """
    finite = data[np.isfinite(data)]
    lo, hi = np.percentile(finite, [2, 99.5])
    return float(lo + 0.08 * (hi - lo))


def head_mask(data: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """Head tissue: above :func:`tissue_level`, largest component, holes filled per slice."""
    mask = data > tissue_level(data)
    mask = largest_component(ndimage.binary_opening(mask, iterations=1))
    # close small gaps (sinuses, ear canals) and fill cavities slice by slice: a structure
    # that connects voxels within the slices only fills each slice's holes in one call
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3, 3)), iterations=2)
    for axis in range(3):
        mask = fill_holes_in_slices(mask, axis)
    return mask


def fill_holes_in_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` with the holes of each of its slices across ``axis`` filled: the background
    parts (sharing a side within the slice) that do not reach the slice's edge.

    The same as :func:`scipy.ndimage.binary_fill_holes` with a structure that connects
    voxels within the slices only, in one labelling pass instead of a dilation repeated
    until nothing changes (three times faster on a head).

    >>> ring = np.zeros((5, 5, 2), bool); ring[1:4, 1:4] = True; ring[2, 2] = False
    >>> int(fill_holes_in_slices(ring, 2).sum()), int(fill_holes_in_slices(ring, 0).sum())
    (18, 16)
    """
    mask = np.asarray(mask, bool)
    in_slice = np.zeros((3, 3, 3), bool)
    in_slice[tuple(1 if a == axis else slice(None) for a in range(3))] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(~mask, structure=in_slice)
    outside = np.zeros(n + 1, bool)
    outside[0] = True  # the mask itself
    for other in (a for a in range(3) if a != axis):
        for end in (0, -1):
            outside[np.take(labels, end, axis=other)] = True
    return mask | ~outside[labels]


def hull_per_side(mask: np.ndarray, x_mid_index: float) -> np.ndarray:
    """Fill the convex hull of ``mask`` separately left and right of ``x_mid_index``."""
    from scipy.spatial import Delaunay

    out = np.zeros_like(mask)
    xs = np.arange(mask.shape[0])
    for side in (xs < x_mid_index, xs >= x_mid_index):
        part = mask & side[:, None, None]
        pts = np.argwhere(part)
        if len(pts) < 8:
            out |= part
            continue
        lo, hi = pts.min(0), pts.max(0) + 1
        try:
            tri = Delaunay(pts)
        except Exception:  # flat point sets
            out |= part
            continue
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
        inside = tri.find_simplex(grid.reshape(-1, 3)) >= 0
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= inside.reshape(grid.shape[:3])
    return out


#: How far behind the lowest brainstem (mm, adult size) the ear zone reaches.
EAR_BEHIND_MM = 40.0
#: How far in front of the lowest brainstem (mm, adult size) the ear zone reaches.
EAR_AHEAD_MM = 30.0


@dataclass(frozen=True)
class _EarReference:
    """Where the ears are, from the brain (mm, in the array's own RAS frame)."""

    x_mid: float  # mid-sagittal plane
    half_width: float  # widest brain half-width
    z_temporal: float  # floor of the temporal lobes
    y_stem: float  # antero-posterior position of the lowest brainstem

    @classmethod
    def of(cls, brain: np.ndarray, zooms: np.ndarray) -> "_EarReference":
        bx, by, bz = (np.argwhere(brain) * zooms).T
        x_mid = float(np.median(bx))
        half_width = float(np.abs(bx - x_mid).max())
        lateral = np.abs(bx - x_mid) > 0.6 * half_width
        low = bz < np.percentile(bz, 3)
        if not low.any():  # thick slices: more than 3 % of the brain in its lowest slice
            low = bz <= np.percentile(bz, 3)
        return cls(x_mid, half_width, float(np.percentile(bz[lateral] if lateral.any() else bz, 3)),
                   float(np.median(by[low])))

    @property
    def scale(self) -> float:
        """Head size from the brain's width (1 for a 70 mm half-width), within 0.5-1.2."""
        return float(np.clip(self.half_width / 70.0, 0.5, 1.2))

    @property
    def back(self) -> float:
        """The ear zone's posterior limit: ``EAR_BEHIND_MM`` (scaled) behind the brainstem."""
        return self.y_stem - EAR_BEHIND_MM * self.scale

    @staticmethod
    def grids(shape: tuple[int, ...], zooms: np.ndarray) -> tuple[np.ndarray, ...]:
        xs, ys, zs = (np.arange(n) * z for n, z in zip(shape, zooms))
        return xs[:, None, None], ys[None, :, None], zs[None, None, :]


def pinnae(head: np.ndarray, brain: np.ndarray, zooms: Sequence[float], open_mm: float = 7.0,
           margin_mm: float = 5.0, brain_mm: float = 12.0, seed: np.ndarray | None = None) -> np.ndarray:
    """Both external ears with a margin of air, on a RAS voxel grid.

    The pinnae are the thin plates standing out of the head beside the temporal lobes: what a
    morphological opening with a ball of ``open_mm`` removes from ``head`` in a box around
    the ear position (found from ``brain``). ``seed`` (e.g. a model's ear prediction) is
    added to them. Each side is filled to its convex hull (concha, lobule), grown by
    ``margin_mm``, and kept lateral to the brain and farther than ``brain_mm`` from it.
    """
    zooms = np.asarray(zooms, float)
    if not brain.any() or not head.any():
        return np.zeros(head.shape, bool)
    ref = _EarReference.of(brain, zooms)
    x_mid, half_width, z_temporal, y_stem = ref.x_mid, ref.half_width, ref.z_temporal, ref.y_stem
    X, Y, Z = ref.grids(head.shape, zooms)
    box = ((np.abs(X - x_mid) > half_width - 5.0)
           & (Y > y_stem - 45.0) & (Y < y_stem + 35.0)
           & (Z > z_temporal - 45.0) & (Z < z_temporal + 35.0))
    inside = edt_mm(head, zooms)
    opened = distance_mm(inside > open_mm, zooms) <= open_mm
    ears = head & ~opened & box
    if seed is not None:
        ears |= seed & box
    ears = drop_small_components(ears, zooms, 0.5)
    if not ears.any():
        return ears
    ears = hull_per_side(ears, x_mid / zooms[0])
    ears = distance_mm(ears, zooms) <= margin_mm
    ears &= np.broadcast_to(np.abs(X - x_mid) > half_width - 5.0, head.shape)
    ears &= distance_mm(brain, zooms) > brain_mm
    return ears


def drop_behind_ears(face: np.ndarray, brain: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """``face`` without its connected parts that lie wholly behind the ear zone (see
    :func:`ear_zone`), on a RAS voxel grid.

    No face or ear lies there: such a part is a false detection on the back of the head
    (scalp or air over the occiput). Parts reaching in front of that limit are kept whole.
    """
    face = np.asarray(face, dtype=bool)
    if not face.any() or not brain.any():
        return face
    zooms = np.asarray(zooms, float)
    back = _EarReference.of(brain, zooms).back
    if not np.isfinite(back):
        return face
    labels, n, box = _label(face)
    # the most anterior position of each part along the y (posterior -> anterior) axis
    front = np.full(n + 1, -np.inf)
    inside = labels > 0
    y_mm = (np.nonzero(inside)[1] + box[1].start) * zooms[1]
    np.maximum.at(front, labels[inside], y_mm)
    keep = front >= back
    keep[0] = False
    out = np.zeros(face.shape, bool)
    out[box] = keep[labels]
    return out


def ear_zone(head: np.ndarray, brain: np.ndarray, zooms: Sequence[float], brain_mm: float = 2.0,
             air_mm: float = 10.0, brain_mm_high: float = 16.0, high_from_mm: float = 20.0,
             lateral_mm: float = 15.0, ahead_mm: float | None = None) -> np.ndarray:
    """Region around both external ears, placed from the brain alone, on a RAS voxel grid.

    Beside the temporal lobes (lateral to the brain's half-width less ``lateral_mm``), from
    ``EAR_BEHIND_MM`` behind to ``ahead_mm`` (default ``EAR_AHEAD_MM``) in front of the lowest
    brainstem and from 50 mm below to 40 mm above the
    floor of the temporal lobes, farther than ``brain_mm`` from the brain (``brain_mm_high``
    more than ``high_from_mm`` above that floor, where the temporalis lies) and within ``air_mm``
    of the head; the brain guard that follows sets the final, wider margin. Distances scale
    with the brain's width (child heads). It covers the pinnae however flat they lie against
    the head, the ear canals' openings and the scalp around them, and stays away from the
    brain, the skull vault and the temporalis muscles in front of and above the ear.
    """
    zooms = np.asarray(zooms, float)
    if not brain.any() or not head.any():
        return np.zeros(head.shape, bool)
    ref = _EarReference.of(brain, zooms)
    x_mid, half_width, z_temporal, y_stem = ref.x_mid, ref.half_width, ref.z_temporal, ref.y_stem
    s = ref.scale
    X, Y, Z = ref.grids(head.shape, zooms)
    box = ((np.abs(X - x_mid) > half_width - lateral_mm * s)
           & (Y > ref.back) & (Y < y_stem + (EAR_AHEAD_MM if ahead_mm is None else ahead_mm) * s)
           & (Z > z_temporal - 50.0 * s) & (Z < z_temporal + 40.0 * s))
    if not box.any():
        return np.zeros(head.shape, bool)
    # above the ear canal the temporalis lies on the skull: there only what stands out of
    # the head (the helix) is taken
    high = np.broadcast_to(Z > z_temporal + high_from_mm * s, head.shape)
    far = distance_mm(brain, zooms) > np.where(high, brain_mm_high, brain_mm)
    near_head = distance_mm(head, zooms) <= air_mm
    return box & far & near_head
