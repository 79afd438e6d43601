"""Eyeballs of a head image: found as the two dark spheres (T1-weighted vitreous) in the
orbits in front of the brain, and segmented whole.

Used by the training labels (``docs/mask.md``: the face label holds each eyeball whole)
and by the evaluation (the fraction of each eyeball that a mask removes). Arrays are
indexed ``[x, y, z]`` in RAS order with voxel sizes ``zooms`` (mm), like
:mod:`bids_deface.anatomy`.

How it works: the image is brought to about 1.5 mm; in each orbit (a box placed from the
brain's front and the orbital roofs, left and right of the mid-sagittal plane) a matched
filter scores every point by how much darker a ball of 8 mm radius around it is than the
shell from 12 to 16 mm (the orbital fat); the best point per side is the globe's centre.
The globe is then the ball whose radius is where the radial intensity profile crosses
half-way from the vitreous to the surrounding fat (9–14 mm), grown by ``wall_mm`` for the
sclera, the lids and the cornea.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage, signal

from .anatomy import block_reduce, orbit_level
from .evaluation.metrics import sphere_mask

__all__ = ["Globe", "find_globes", "globe_masks"]

_WORK_MM = 1.5


@dataclass(frozen=True)
class Globe:
    """One eyeball, in millimetres of the array's RAS frame (voxel 0 at the origin)."""

    side: str  # "right" or "left" (the subject's)
    centre_mm: tuple[float, float, float]
    radius_mm: float
    score: float  # contrast between the ball and its shell, in units of the shell's spread


def _ball(radius_vox: np.ndarray, inner: float = 0.0) -> np.ndarray:
    r = np.ceil(radius_vox).astype(int)
    grid = np.meshgrid(*[np.arange(-k, k + 1) / max(rv, 1e-6) for k, rv in zip(r, radius_vox)], indexing="ij")
    d = np.sqrt(sum(g ** 2 for g in grid))
    return (d <= 1.0) & (d > inner)


def find_globes(data: np.ndarray, brain: np.ndarray, zooms: Sequence[float],
                head: np.ndarray | None = None) -> list[Globe]:
    """The eyeballs found in ``data`` (0, 1 or 2 of them; see the module docstring).

    ``brain`` is an independent brain mask on the same grid. A side is left out when its
    orbit box is outside the field of view or holds no dark ball (score below 1).
    """
    zooms = np.asarray(zooms, float)
    f = np.maximum(1, np.round(_WORK_MM / zooms)).astype(int)
    czooms = zooms * f
    img = block_reduce(np.asarray(data, np.float32), f)
    cbrain = block_reduce(brain, f, np.any)
    if head is not None:
        chead = block_reduce(head, f, np.any)
    else:
        chead = img > np.percentile(img, 70) * 0.3
    if not cbrain.any():
        return []
    pts = np.argwhere(cbrain) * czooms
    y_front, z_orb = orbit_level(pts)
    x_mid = float(pts[:, 0].mean())
    scale = float(np.ptp(pts[:, 0])) / 140.0  # brain width relative to an adult's
    scale = float(np.clip(scale, 0.6, 1.2))
    lo_norm = np.percentile(img[chead], 5) if chead.any() else 0.0
    hi_norm = np.percentile(img[chead], 98) if chead.any() else 1.0
    norm = (img - lo_norm) / max(hi_norm - lo_norm, 1e-6)
    inner = _ball(8.0 * scale / czooms)
    shell = _ball(16.0 * scale / czooms, inner=12.0 / 16.0)
    inner = inner / inner.sum()
    shell = shell / shell.sum()
    globes = []
    for side, sign in (("right", -1.0), ("left", 1.0)):
        # the orbit: in front of the frontal pole's back, below the orbital roofs
        box_mm = np.array([
            sorted((x_mid + sign * 15 * scale, x_mid + sign * 50 * scale)),
            [y_front - 35 * scale, y_front + 30 * scale],
            [z_orb - 40 * scale, z_orb + 5 * scale],
        ])
        lo = np.clip(np.floor(box_mm[:, 0] / czooms).astype(int), 0, None)
        hi = np.minimum(np.ceil(box_mm[:, 1] / czooms).astype(int) + 1, img.shape)
        if np.any(hi - lo < 3):
            continue
        pad = np.ceil(16.0 * scale / czooms).astype(int) + 1
        plo = np.maximum(lo - pad, 0)
        phi = np.minimum(hi + pad, img.shape)
        sub = norm[plo[0]:phi[0], plo[1]:phi[1], plo[2]:phi[2]]
        subhead = chead[plo[0]:phi[0], plo[1]:phi[1], plo[2]:phi[2]]
        mean_in = signal.fftconvolve(sub, inner, mode="same")
        mean_sh = signal.fftconvolve(sub, shell, mode="same")
        sq_sh = signal.fftconvolve(sub ** 2, shell, mode="same")
        sd_sh = np.sqrt(np.maximum(sq_sh - mean_sh ** 2, 1e-4))
        head_in = signal.fftconvolve(subhead.astype(np.float32), inner, mode="same")
        score = (mean_sh - mean_in) / sd_sh
        # the ball must lie in the head (the vitreous is not air) and in the box
        score[head_in < 0.95] = -np.inf
        valid = np.zeros(score.shape, bool)
        valid[lo[0] - plo[0]:hi[0] - plo[0], lo[1] - plo[1]:hi[1] - plo[1], lo[2] - plo[2]:hi[2] - plo[2]] = True
        score[~valid] = -np.inf
        # and keep clear of the brain (a globe's centre lies > 10 mm from it)
        bsub = cbrain[plo[0]:phi[0], plo[1]:phi[1], plo[2]:phi[2]]
        if bsub.any():
            near = ndimage.distance_transform_edt(~bsub, sampling=czooms) < 10.0 * scale
            score[near] = -np.inf
        k = int(np.argmax(score))
        best = float(score.ravel()[k])
        if not np.isfinite(best) or best < 1.0:
            continue
        c = (np.array(np.unravel_index(k, score.shape)) + plo) * czooms
        radius = _radius(norm, c, czooms, scale)
        # block centres: a block of f voxels is centred (f - 1) / 2 voxels in
        centre_mm = c + (f - 1) / 2.0 * zooms
        globes.append(Globe(side, tuple(float(v) for v in centre_mm), radius, best))
    return globes


def _radius(norm: np.ndarray, centre_mm: np.ndarray, czooms: np.ndarray, scale: float) -> float:
    """Where the radial profile around ``centre_mm`` rises half-way from the vitreous to
    the fat around it (9–14 mm at adult size)."""
    reach = np.ceil(18.0 / czooms).astype(int)
    c = np.round(centre_mm / czooms).astype(int)
    lo = np.maximum(c - reach, 0)
    hi = np.minimum(c + reach + 1, norm.shape)
    sub = norm[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    grid = np.meshgrid(*[(np.arange(a, b) * z - cm) for a, b, z, cm in zip(lo, hi, czooms, centre_mm)],
                       indexing="ij")
    d = np.sqrt(sum(g ** 2 for g in grid))
    radii = np.arange(4.0, 18.0, 1.0)
    prof = np.array([sub[(d >= r - 0.75) & (d < r + 0.75)].mean() if ((d >= r - 0.75) & (d < r + 0.75)).any()
                     else np.nan for r in radii])
    inside = np.nanmean(prof[radii <= 6])
    outside = np.nanmax(prof[(radii >= 11) & (radii <= 17)])
    half = inside + 0.5 * (outside - inside)
    above = np.flatnonzero((prof > half) & (radii > 6))
    r = float(radii[above[0]]) if above.size else 12.0 * scale
    return float(np.clip(r, 9.0 * scale, 14.0 * scale))


def globe_masks(shape: Sequence[int], zooms: Sequence[float], globes: Sequence[Globe],
                wall_mm: float = 2.0) -> dict[str, np.ndarray]:
    """Boolean ball of each globe (its radius plus ``wall_mm``) on a grid of ``shape``.

    >>> g = Globe("right", (10.0, 10.0, 10.0), 4.0, 3.0)
    >>> int(globe_masks((21, 21, 21), (1.0, 1.0, 1.0), [g], wall_mm=0.0)["right"].sum())
    257
    """
    affine = np.diag([*np.asarray(zooms, float), 1.0])
    return {g.side: sphere_mask(shape, affine, g.centre_mm, g.radius_mm + wall_mm) for g in globes}
