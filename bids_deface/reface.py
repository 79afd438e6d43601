"""Refacing: put a face that is nobody's where the face mask removed the subject's.

The face comes from an average head (:mod:`bids_deface.face_template`). For one image,
in a straight line:

1. **register** (:func:`register_template`): the template head is fitted to the subject
   by a 12-parameter affine transform with SimpleITK (Mattes mutual information, so any
   contrast works; on 8 then 4 mm block means), started from the two brains:
   their centres, and the subject's brain volume over the template's for the scale (a
   child's head gets a smaller template). The metric sees the subject's head and the air
   around it **outside** the face mask only: the subject's face plays no part in where
   the template's face goes. Then the template's face mask is fitted to the image's
   (:func:`fit_face`): the mask, a margin around the face, sizes the face (a child's is
   smaller than an adult's on a head of nearly the same size).
2. **map intensities** (:func:`intensity_map`): the template is a T1-weighted average;
   the subject may be any contrast, inverted newborn contrast included. Pairs of
   (template, subject) intensities are taken where the registered template overlays the
   subject outside the face and the brain, within ``PAIR_MM`` of the face mask (scalp,
   skull, muscle, neck and air); the subject's intensity is the median per bin of the
   template's intensity, a mapping that need not be monotone. The template's eyeballs map
   through the same kind of pairs inside the brain, so that the vitreous looks like the
   subject's CSF (dark in T1w and FLAIR, bright in T2w).
3. **blend**: within ``BLEND_MM`` inside the mask's edge the mapped face fades into a
   continuation of the voxels just outside the mask (:func:`continuation`: what crosses
   the edge, the skin and the air in front of it, runs on into the mask), so nothing
   steps at the edge; no voxel of the subject's face enters it.
4. **noise** (:func:`matched_noise`): the template is smooth; the image is not. Each
   refaced voxel gets a residual drawn from the image's own (a voxel less the mean of its
   six neighbours, scaled to the voxel's noise) at voxels of a similar smoothed intensity
   near the face: the noise and texture of the image itself, its Rician floor in the air
   included.
5. **apply**: only the face-mask voxels change; the result is written in the input's own
   stored values (dtype and scaling kept, :func:`bids_deface.io.save_raw_like`), so every
   voxel outside the mask is bit for bit the input's.

The arrays stay on the image's own grid and axis order throughout: the template is
resampled onto it (a single affine transform of the template's voxels), so any
orientation, voxel size and oblique affine works.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from .anatomy import block_reduce, bounding_box, edt_mm, head_mask, largest_component
from .face_template import FaceTemplate
from .inputs import loud_background

__all__ = [
    "REG_MM",
    "PAIR_MM",
    "BLEND_MM",
    "Registration",
    "RefaceResult",
    "register_template",
    "fit_face",
    "intensity_map",
    "continuation",
    "matched_noise",
    "reface_array",
    "reface_image",
    "face_distance_mm",
    "PEOPLE_FACE_MM",
]

logger = logging.getLogger(__name__)

#: Voxel size (mm) of the registration's finer level (the coarser one is twice it).
REG_MM = 4.0
#: Intensities are paired within this distance (mm) of the face mask, outside it.
PAIR_MM = 20.0
#: Width (mm) of the band inside the mask's edge where the face fades in.
BLEND_MM = 8.0
#: Brain voxels (and voxels within this distance, mm) are left out of the face's pairs.
BRAIN_GAP_MM = 3.0
#: Bins of the intensity mapping (template intensity quantiles) and of the noise pools.
MAP_BINS = 32
NOISE_BINS = 16
#: Most pairs used for the mapping (a random subset beyond that).
MAX_PAIRS = 300_000

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Registration:
    """An affine fit of the template to a subject.

    ``matrix`` maps subject world coordinates (RAS mm) to template world coordinates.
    """

    matrix: np.ndarray
    scale: float
    """Initial linear scale of the subject's head over the template's (brain volumes)."""
    metric: float
    """Mattes mutual information at the end (negative: lower is better)."""
    iterations: int
    seconds: float
    face_matrix: np.ndarray | None = None
    """The same for the face alone (:func:`fit_face`): subject world to template world."""

    @property
    def face_scale(self) -> float:
        """Linear size of the template's face as placed by ``face_matrix`` over its size
        as placed by ``matrix`` (below 1: a smaller face, a child's)."""
        if self.face_matrix is None:
            return 1.0
        return float((np.linalg.det(self.matrix[:3, :3]) / np.linalg.det(self.face_matrix[:3, :3])) ** (1.0 / 3.0))


@dataclass(frozen=True)
class RefaceResult:
    """The refaced image as stored values, and what the sidecar records of it."""

    raw: np.ndarray
    """Stored (unscaled) voxel values in the input's dtype: write with ``save_raw_like``."""
    record: dict[str, Any]
    """The ``Refacing`` record of the sidecar."""
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _zooms(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def _sitk_image(data: np.ndarray, affine: np.ndarray):  # type: ignore[no-untyped-def]
    """A SimpleITK image of ``data`` (``[i, j, k]`` voxel order) placed by ``affine`` (RAS).

    ITK works in LPS and wants orthonormal directions: an affine with shear is given the
    nearest rotation (its polar factor), which moves no voxel by more than the shear does.
    """
    import SimpleITK as sitk

    zooms = _zooms(affine)
    rot = np.asarray(affine)[:3, :3] / zooms
    u, _, vt = np.linalg.svd(rot)
    rot = u @ vt
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(z) for z in zooms])
    img.SetOrigin([float(v) for v in (_LPS[:3, :3] @ np.asarray(affine)[:3, 3])])
    img.SetDirection([float(v) for v in (_LPS[:3, :3] @ rot).ravel()])
    return img


def _coarse(data: np.ndarray, affine: np.ndarray, target_mm: float,
            reducer=np.mean) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Block reduction of ``data`` to voxels of about ``target_mm`` and the blocks' affine."""
    factors = np.maximum(1, np.round(target_mm / _zooms(affine))).astype(int)
    out = block_reduce(data, factors, reducer)
    new = np.array(affine, float) @ np.diag([*factors, 1.0])
    new[:3, 3] = nib.affines.apply_affine(affine, (factors - 1) / 2.0)
    return out, new


def _centre(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centre of ``mask`` (world RAS mm), from its fractions in blocks of about ``REG_MM``."""
    frac, aff = _coarse(np.asarray(mask, np.float32), affine, REG_MM)
    return nib.affines.apply_affine(aff, np.asarray(ndimage.center_of_mass(frac), float))


def _ml(mask: np.ndarray, affine: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) * float(np.prod(_zooms(affine))) / 1000.0


def affine_ras(tx) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The 4×4 RAS world matrix of a SimpleITK affine transform (LPS, fixed to moving)."""
    import SimpleITK as sitk

    if tx.GetName() == "CompositeTransform":
        tx = sitk.CompositeTransform(tx).GetNthTransform(0)
    tx = sitk.AffineTransform(tx)
    a = np.asarray(tx.GetMatrix(), float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), float)
    t = np.asarray(tx.GetTranslation(), float)
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    return _LPS @ lps @ _LPS


def _registration(threads: int | None, *, learning_rate: float, iterations: int):  # type: ignore[no-untyped-def]
    """A SimpleITK registration on two levels (twice the voxel, then the voxel), with random
    metric samples, linear interpolation and a regular-step gradient descent; the caller
    sets the metric, its sampling share and the start."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    if threads:
        reg.SetNumberOfThreads(int(threads))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=0.01,
                                                 numberOfIterations=iterations, relaxationFactor=0.6,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    return reg


def _sitk_affine(matrix: np.ndarray, centre_ras: np.ndarray):  # type: ignore[no-untyped-def]
    """A SimpleITK affine transform (LPS) of the RAS world matrix ``matrix``, centred at
    ``centre_ras`` (the optimiser's scales are about the centre)."""
    import SimpleITK as sitk

    lps = _LPS @ np.asarray(matrix, float) @ _LPS
    c = _LPS[:3, :3] @ np.asarray(centre_ras, float)
    tx = sitk.AffineTransform(3)
    tx.SetCenter([float(v) for v in c])
    tx.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
    tx.SetTranslation([float(v) for v in (lps[:3, :3] @ c + lps[:3, 3] - c)])
    return tx


def fit_face(matrix: np.ndarray, face: np.ndarray, affine: np.ndarray, template: FaceTemplate,
             threads: int | None = None) -> np.ndarray | None:
    """The head's fit ``matrix`` refined for the face: an affine fit of the template's
    face mask (the shipped model's, ``template.face``) to the image's face mask, mean
    squares on block fractions of ``2 * REG_MM`` then ``REG_MM``, from ``matrix``.

    The face mask is what defacing removes: the face, the ears and the air in front of
    them, a margin around the skin. Fitting the template's mask to it sizes and places the
    template's face as the image's mask says, a child's smaller than an adult's on a head
    of the same size, without looking at any voxel of the subject's face. None when the
    template has no face mask.
    """
    if template.face is None or not np.any(template.face) or not np.any(face):
        return None

    def cropped(mask: np.ndarray, aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the mask's box and 20 mm around it, as block fractions of about REG_MM
        pad = [int(np.ceil(20.0 / float(z))) for z in _zooms(aff)]
        box = tuple(slice(max(0, b.start - p), min(n, b.stop + p))
                    for b, p, n in zip(bounding_box(mask), pad, mask.shape))
        return _coarse(np.asarray(mask[box], np.float32), _box_affine(aff, box), REG_MM)

    f, faff = cropped(np.asarray(face, bool), affine)
    m, maff = cropped(np.asarray(template.face, bool), template.affine)
    reg = _registration(threads, learning_rate=1.0, iterations=50)
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingPercentage(0.3, 1)
    reg.SetInitialTransform(_sitk_affine(matrix, _centre(face, affine)), inPlace=False)
    return affine_ras(reg.Execute(_sitk_image(f, faff), _sitk_image(m, maff)))


def register_template(data: np.ndarray, affine: np.ndarray, face: np.ndarray, brain: np.ndarray,
                      template: FaceTemplate, seed: int = 0, threads: int | None = None) -> Registration:
    """Fit ``template`` to the image ``data`` (grid ``affine``) outside its ``face``.

    Parameters
    ----------
    data : ndarray
        The image (3D, any contrast) on its own grid.
    affine : ndarray
        Its voxel-to-world (RAS) affine.
    face, brain : ndarray of bool
        Its face mask (left out of the metric) and brain (starts the fit: centre and scale).
    template : FaceTemplate
    seed : int
        Seed of the metric's random sampling (``seed + 1`` is given to SimpleITK, whose
        seed 0 means the wall clock).
    threads : int, optional
        Threads of the registration (default: SimpleITK's). With more than one, the
        metric's sums are added in an order that varies, and so may the last digits of
        the fit.
    """
    import SimpleITK as sitk

    t0 = time.perf_counter()
    sub, sub_aff = _coarse(np.asarray(data, np.float32), affine, REG_MM)
    face_lo, _ = _coarse(face, affine, REG_MM, np.any)
    zooms_lo = _zooms(sub_aff)
    # the head and the air within 9 mm of it, outside the face (and a voxel around it)
    head = head_mask(sub, zooms_lo)
    around = edt_mm(~head, zooms_lo) <= 9.0
    near_face = edt_mm(~face_lo, zooms_lo) <= 1.5 * float(zooms_lo.max()) if face_lo.any() else face_lo
    fixed_mask = around & ~near_face
    tpl, tpl_aff = _coarse(template.data, template.affine, REG_MM)
    fixed = _sitk_image(sub, sub_aff)
    moving = _sitk_image(tpl, tpl_aff)
    mask_img = _sitk_image(fixed_mask.astype(np.float32), sub_aff)
    mask_img = sitk.Cast(mask_img > 0.5, sitk.sitkUInt8)

    brain = largest_component(np.asarray(brain, bool)) if np.any(brain) else head
    if not np.any(brain):
        brain = np.ones(np.shape(data), bool)
    scale = float(np.clip((_ml(brain, affine) / template.brain_ml) ** (1.0 / 3.0), 0.5, 1.3))
    c_sub = _LPS[:3, :3] @ _centre(brain, affine)
    c_tpl = _LPS[:3, :3] @ template.brain_centre
    init = sitk.AffineTransform(3)
    init.SetCenter([float(v) for v in c_sub])
    init.SetMatrix([float(v) for v in (np.eye(3) / scale).ravel()])
    init.SetTranslation([float(v) for v in (c_tpl - c_sub)])

    reg = _registration(threads, learning_rate=2.0, iterations=60)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingPercentage(0.15, seed + 1)  # SimpleITK's seed 0 would be the wall clock
    reg.SetMetricFixedMask(mask_img)
    reg.SetInitialTransform(init, inPlace=False)
    iterations = [0]
    reg.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
    tx = reg.Execute(fixed, moving)
    metric = float(reg.GetMetricValue())
    matrix = affine_ras(tx)
    face_matrix = fit_face(matrix, face, affine, template, threads)
    return Registration(matrix=matrix, scale=scale, metric=metric, iterations=iterations[0],
                        seconds=time.perf_counter() - t0, face_matrix=face_matrix)


def _binned_median(x: np.ndarray, y: np.ndarray, bins: int, least: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres (median ``x``) and median ``y`` per bin of ``x``: ``bins`` quantile
    bins refined by ``bins`` equal steps of ``x``'s range (so that a tail of few, bright
    voxels, the fat of a T1w face, keeps bins of its own); bins of fewer than ``least``
    pairs are left out."""
    edges = np.unique(np.concatenate([np.quantile(x, np.linspace(0.0, 1.0, bins + 1)),
                                      np.linspace(float(x.min()), float(x.max()), bins + 1)]))
    if edges.size < 2:
        return np.array([float(np.median(x))]), np.array([float(np.median(y))])
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    labels = np.flatnonzero(np.bincount(idx, minlength=edges.size - 1) >= least)
    if labels.size == 0:
        return np.array([float(np.median(x))]), np.array([float(np.median(y))])
    return (np.asarray(ndimage.median(x, idx, labels), float), np.asarray(ndimage.median(y, idx, labels), float))


def intensity_map(template_values: np.ndarray, subject_values: np.ndarray, bins: int = MAP_BINS,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mapping from template to subject intensity: ``(x, y)`` knots for ``np.interp``.

    The subject's intensity is the median per bin of the template's
    (:func:`_binned_median`), smoothed over three neighbouring bins. It need not rise
    with the template's intensity (inverted contrasts). The pairs should agree on what
    is air (:func:`reface_array` keeps only those): a misaligned skin edge puts the
    template's tissue over the subject's air, which would pull every tissue's median
    toward the air.

    Examples
    --------
    An inverted contrast is learnt as such:

    >>> t = np.linspace(0.0, 1.0, 20000); x, y = intensity_map(t, 100.0 - 50.0 * t, bins=10)
    >>> bool(abs(np.interp(0.05, x, y) - 97.5) < 1.0), bool(abs(np.interp(0.95, x, y) - 52.5) < 1.0)
    (True, True)
    """
    t = np.asarray(template_values, float).ravel()
    s = np.asarray(subject_values, float).ravel()
    if t.size > MAX_PAIRS:
        pick = (rng or np.random.default_rng(0)).choice(t.size, MAX_PAIRS, replace=False)
        t, s = t[pick], s[pick]
    x, y = _binned_median(t, s, bins)
    if y.size >= 3:
        y = ndimage.median_filter(y, size=3, mode="nearest")
    return x, y


def continuation(data: np.ndarray, face: np.ndarray, affine: np.ndarray, points: np.ndarray,
                 block_mm: float = 2.0) -> np.ndarray:
    """A continuation of the voxels of ``data`` outside ``face`` at the voxel positions
    ``points`` (N×3, inside the mask near its edge): the mean of the outside voxels of
    the nearest block (of about ``block_mm``) that lies mostly outside the mask,
    interpolated between blocks. What crosses the mask's edge (the skin, the air in
    front of it) runs on into the mask as it is, without being blurred across (a
    Gaussian average would smear the skin into the air and move the surface outward);
    no voxel of the subject's face enters it.

    >>> d = np.zeros((20, 4, 4), np.float32); d[:10] = 100.0; f = np.zeros(d.shape, bool); f[10:] = True
    >>> v = continuation(d, f, np.eye(4), np.array([[10, 2, 2], [19, 2, 2]]))
    >>> [round(float(x)) for x in v]
    [100, 100]
    """
    factors = np.maximum(1, np.round(block_mm / _zooms(affine))).astype(int)
    outside = ~np.asarray(face, bool)
    total = block_reduce(np.where(outside, data, 0.0).astype(np.float32), factors)
    weight = block_reduce(outside.astype(np.float32), factors)
    source = weight >= 0.5
    if not source.any():
        return np.zeros(len(points), np.float32)
    mean = np.where(source, total / np.maximum(weight, 1e-6), 0.0).astype(np.float32)
    nearest = ndimage.distance_transform_edt(~source, sampling=_zooms(affine) * factors, return_distances=False,
                                             return_indices=True)
    filled = mean[tuple(nearest)]
    # voxel i lies at block coordinate (i - (f - 1) / 2) / f
    coords = (np.asarray(points, float).T - ((factors - 1) / 2.0)[:, None]) / factors[:, None]
    return ndimage.map_coordinates(filled, coords, order=1, mode="nearest").astype(np.float32)


def matched_noise(levels: np.ndarray, pool_levels: np.ndarray, pool_residuals: np.ndarray,
                  rng: np.random.Generator, bins: int = NOISE_BINS) -> np.ndarray:
    """Residuals for voxels of smooth intensity ``levels``, drawn from the image's own
    (``pool_residuals`` at voxels of smooth intensity ``pool_levels``, grouped in
    quantile bins of the levels, those beyond 2.5 robust standard deviations of their bin
    left out; each level draws from its bin).

    >>> rng = np.random.default_rng(0)
    >>> lv = np.r_[np.zeros(500), np.full(500, 100.0)]; res = np.r_[np.zeros(500), rng.normal(0, 5, 500)]
    >>> n = matched_noise(np.array([0.0] * 100 + [100.0] * 100), lv, res, rng, bins=2)
    >>> float(np.abs(n[:100]).max()), bool(3 < n[100:].std() < 7)
    (0.0, True)
    """
    lv = np.asarray(pool_levels, np.float32).ravel()
    res = np.asarray(pool_residuals, np.float32).ravel()
    if res.size == 0:
        return np.zeros(np.shape(levels), np.float32)
    edges = np.unique(np.quantile(lv, np.linspace(0.0, 1.0, bins + 1)))
    inner = edges[1:-1]
    which = np.searchsorted(inner, lv, side="right")
    # residuals beyond 2.5 robust standard deviations of their bin are edges and texture
    # of the anatomy, not noise: drawn at random they would speckle the face
    keep = np.ones(res.size, bool)
    for b in np.unique(which):
        sel = which == b
        med = np.median(res[sel])
        sd = 1.4826 * np.median(np.abs(res[sel] - med))
        keep[sel] = np.abs(res[sel] - med) <= 2.5 * sd
    which, res = which[keep], res[keep]
    order = np.argsort(which, kind="stable")
    which, res = which[order], res[order]
    ids = np.arange(inner.size + 1)
    starts = np.searchsorted(which, ids, side="left")
    count = np.searchsorted(which, ids, side="right") - starts
    want = np.searchsorted(inner, np.asarray(levels, np.float32).ravel(), side="right")
    # an empty bin (ties at a quantile) borrows from the nearest bin that has residuals
    full = np.flatnonzero(count > 0)
    near = full[np.abs(full[None, :] - ids[:, None]).argmin(axis=1)]
    want = near[want]
    pick = starts[want] + (rng.random(want.size) * count[want]).astype(np.int64)
    return res[pick].reshape(np.shape(levels))


def _neighbour_residuals(data: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At voxels ``points`` (N×3, not on the array's border): the mean of the six face
    neighbours, and the voxel less that mean scaled to the voxel's own noise (for white
    noise of variance s², the difference has variance 7/6 s²)."""
    i, j, k = (np.asarray(points)[:, a] for a in range(3))
    mean = (data[i - 1, j, k] + data[i + 1, j, k] + data[i, j - 1, k] + data[i, j + 1, k]
            + data[i, j, k - 1] + data[i, j, k + 1]) / 6.0
    return mean, (data[i, j, k] - mean) * np.float32(np.sqrt(6.0 / 7.0))


def _air_level(data: np.ndarray) -> float:
    """Intensity between air and head (as :func:`bids_deface.anatomy.head_mask` sets it)."""
    sample = np.asarray(data)[::2, ::2, ::2]
    lo, hi = (float(v) for v in np.percentile(sample[np.isfinite(sample)], [2, 99.5]))
    return lo + 0.08 * (hi - lo)


def _template_voxels(template_affine: np.ndarray, matrix: np.ndarray, affine: np.ndarray,
                     box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The affine (3×3 and offset) from the voxels of ``box`` (subject grid) to the
    template's voxels."""
    vox = np.linalg.inv(template_affine) @ matrix @ np.asarray(affine, float)
    start = np.array([b.start for b in box], float)
    return vox[:3, :3], vox[:3, 3] + vox[:3, :3] @ start


def _resample_template(values: np.ndarray, template_affine: np.ndarray, matrix: np.ndarray,
                       affine: np.ndarray, box: tuple[slice, ...], order: int) -> np.ndarray:
    """``values`` (on the template's grid) on the voxels ``box`` of the subject's grid;
    beyond the template's field of view its nearest edge voxel."""
    lin, offset = _template_voxels(template_affine, matrix, affine, box)
    shape = tuple(b.stop - b.start for b in box)
    return ndimage.affine_transform(values, lin, offset=offset, output_shape=shape, order=order,
                                    mode="nearest", prefilter=False)


def _in_view(shape: Sequence[int], template_affine: np.ndarray, matrix: np.ndarray, affine: np.ndarray,
             box: tuple[slice, ...], margin: float = 1.0) -> np.ndarray:
    """Voxels of ``box`` that fall inside the template's field of view (``shape``), at
    least ``margin`` voxels from its edge."""
    lin, offset = _template_voxels(template_affine, matrix, affine, box)
    axes = [np.arange(b.stop - b.start, dtype=np.float32) for b in box]
    inside = np.ones([a.size for a in axes], bool)
    for row in range(3):
        coord = (offset[row] + lin[row, 0] * axes[0][:, None, None] + lin[row, 1] * axes[1][None, :, None]
                 + lin[row, 2] * axes[2][None, None, :])
        inside &= (coord >= margin) & (coord <= shape[row] - 1 - margin)
    return inside


#: Size (mm) of the blocks on which the intensity statistics are gathered.
STATS_MM = 2.0
#: Mean symmetric distance (mm) between the skin surfaces of two different real people's
#: faces within the face mask, after an affine fit of the one face to the other: median,
#: smallest and largest of the ordered pairs of real heads of ``benchmarks/reface_eval.py``
#: (``benchmarks/reface.md``). The report shows a refaced face's distance beside it.
PEOPLE_FACE_MM = {"median": 3.71, "min": 1.72, "max": 11.18, "pairs": 20}


def face_distance_mm(original: np.ndarray, refaced: np.ndarray, face: np.ndarray, affine: np.ndarray,
                     block_mm: float = 2.0, pad_mm: float = 10.0) -> float:
    """Mean symmetric distance (mm) between the skin surfaces of ``original`` and
    ``refaced`` within ``face`` (:func:`bids_deface.evaluation.reface_metrics.face_surface_distance`),
    on block means of about ``block_mm`` over the face's box padded by ``pad_mm``; no fit
    of the one face to the other."""
    from .evaluation.reface_metrics import face_surface_distance

    zooms = _zooms(affine)
    pad = [int(np.ceil(pad_mm / float(z))) for z in zooms]
    box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(bounding_box(face), pad, face.shape))
    a, aff = _coarse(np.asarray(original, np.float32)[box], affine, block_mm)
    b, _ = _coarse(np.asarray(refaced, np.float32)[box], affine, block_mm)
    f, _ = _coarse(np.asarray(face, bool)[box], affine, block_mm, np.any)
    return face_surface_distance(a, b, _zooms(aff), f)


def _box_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    out = np.array(affine, float)
    out[:3, 3] = nib.affines.apply_affine(affine, [b.start for b in box])
    return out


def reface_array(data: np.ndarray, affine: np.ndarray, face: np.ndarray, brain: np.ndarray,
                 template: FaceTemplate, registration: Registration | None = None,
                 seed: int = 0) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
    """Refaced intensities of ``data`` (3D, scaled values): the face voxels replaced,
    every other voxel returned unchanged. Also the record and the stages' seconds.

    ``registration`` (default: :func:`register_template`) places the template. The
    statistics (intensity pairs, the fluid's mapping, the noise pool) are gathered on
    blocks of about ``STATS_MM`` over the face's box padded by ``PAIR_MM``; the template
    is resampled, mapped, blended and given noise at the face voxels only.
    """
    laps: dict[str, float] = {}
    t = time.perf_counter()
    data = np.asarray(data, np.float32)
    face = np.asarray(face, bool)
    brain = np.asarray(brain, bool)
    zooms = _zooms(affine)
    rng = np.random.default_rng(seed)
    reg = registration or register_template(data, affine, face, brain, template, seed)
    laps["register"] = time.perf_counter() - t
    t = time.perf_counter()
    pad = [int(np.ceil(PAIR_MM / float(z))) + 1 for z in zooms]
    box = tuple(slice(max(1, b.start - p), min(n - 1, b.stop + p))
                for b, p, n in zip(bounding_box(face), pad, face.shape))
    sub, fc, br = data[box], face[box], brain[box]
    # statistics on blocks: block means of the image, blocks touching the face or brain
    sub_c, aff_c = _coarse(sub, _box_affine(affine, box), STATS_MM)
    factors = np.maximum(1, np.round(STATS_MM / zooms)).astype(int)
    face_c = block_reduce(fc, factors, np.any)
    brain_c = block_reduce(br, factors, np.any)
    brain_all = block_reduce(br.astype(np.float32), factors) > 0.999
    zooms_c = zooms * factors
    full_box = tuple(slice(0, n) for n in sub_c.shape)
    warped_c = _resample_template(template.data, template.affine, reg.matrix, aff_c, full_box, order=1)
    in_view = _in_view(template.data.shape, template.affine, reg.matrix, aff_c, full_box)
    outside_mm = edt_mm(~face_c, zooms_c) if face_c.any() else np.full(face_c.shape, np.inf, np.float32)
    from_brain = edt_mm(~brain_c, zooms_c) if brain_c.any() else np.full(face_c.shape, np.inf, np.float32)
    # pairs where both are head or both air: a misaligned skin edge puts template tissue
    # over the subject's air, the one contamination that would outweigh a tissue's median
    agree = (warped_c > _air_level(template.data)) == (sub_c > _air_level(data))
    pairs = ~face_c & (outside_mm <= PAIR_MM) & (from_brain > BRAIN_GAP_MM) & in_view & agree
    x, y = intensity_map(warped_c[pairs], sub_c[pairs], rng=rng)
    inner_brain = brain_all & (edt_mm(brain_all, zooms_c) > 2.0) & in_view if brain_all.any() else brain_all
    laps["statistics"] = time.perf_counter() - t
    t = time.perf_counter()
    # the face voxels: template intensity there, mapped to the subject's
    idx = np.argwhere(fc)
    depth = edt_mm(fc, zooms)[fc]
    face_matrix = reg.face_matrix if reg.face_matrix is not None else reg.matrix
    lin, offset = _template_voxels(template.affine, face_matrix, affine, box)
    coords = lin @ idx.T.astype(np.float64) + offset[:, None]
    t_face = ndimage.map_coordinates(template.data, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    mapped = np.interp(t_face, x, y).astype(np.float32)
    fluid = ndimage.map_coordinates(template.fluid.view(np.uint8), coords, order=0, mode="constant",
                                    cval=0, prefilter=False) > 0
    if fluid.any() and np.count_nonzero(inner_brain) > 200:
        xb, yb = intensity_map(warped_c[inner_brain], sub_c[inner_brain], rng=rng)
        mapped[fluid] = np.interp(t_face[fluid], xb, yb)
    del coords
    laps["map"] = time.perf_counter() - t
    t = time.perf_counter()
    # blend into the continuation of the outside within BLEND_MM of the mask's edge
    alpha = np.clip(depth / BLEND_MM, 0.0, 1.0).astype(np.float32)
    band = alpha < 1.0
    if band.any():
        cont = continuation(sub, fc, _box_affine(affine, box), idx[band])
        mapped[band] = alpha[band] * mapped[band] + (1.0 - alpha[band]) * cont
    # noise: the image's own residuals at block centres of the pairs, by level
    centres = np.argwhere(pairs) * factors + (factors - 1) // 2
    centres = centres[np.all((centres >= 1) & (centres < np.array(sub.shape) - 1), axis=1)]
    levels, residuals = _neighbour_residuals(sub, centres)
    noise = matched_noise(mapped, levels, residuals, rng)
    lo, hi = float(data.min()), float(data.max())
    out = data.copy()
    region = out[box]
    region[fc] = np.clip(mapped + noise, lo, hi)
    out[box] = region
    laps["blend_noise"] = time.perf_counter() - t
    record = {
        **template.record(),
        "Registration": "SimpleITK affine (12 parameters), Mattes mutual information outside the face mask, "
                        f"{2 * REG_MM:g} then {REG_MM:g} mm",
        "HeadScale": round(reg.scale, 3),
        "FaceFit": ("affine of the template's face mask to the image's face mask (mean squares, "
                    f"{2 * REG_MM:g} then {REG_MM:g} mm)" if reg.face_matrix is not None else None),
        "FaceScale": round(reg.face_scale, 3),
        "RegistrationMetric": round(reg.metric, 4),
        "RegistrationIterations": reg.iterations,
        "TemplateToSubject": np.round(np.linalg.inv(reg.matrix), 4).tolist(),
        "TemplateFaceToSubject": np.round(np.linalg.inv(face_matrix), 4).tolist(),
        "IntensityPairs": int(np.count_nonzero(pairs)),
        "BlendMM": BLEND_MM,
        "NoiseSD": round(float(np.std(noise)), 3) if noise.size else 0.0,
        "VoxelsRefaced": int(np.count_nonzero(face)),
        "Seed": int(seed),
    }
    return out, record, laps


def _raw_values(img: nib.Nifti1Image) -> tuple[np.ndarray, float, float]:
    proxy = img.dataobj
    raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    slope = float(getattr(proxy, "slope", 1.0) or 1.0)
    inter = float(getattr(proxy, "inter", 0.0) or 0.0)
    if not np.isfinite(slope) or slope == 0:
        slope = 1.0
    return raw, slope, inter


def _to_raw(values: np.ndarray, dtype: np.dtype, slope: float, inter: float) -> np.ndarray:
    raw = (np.asarray(values, np.float64) - inter) / slope
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        raw = np.clip(np.round(raw), info.min, info.max)
    return raw.astype(dtype)


def reface_image(img: nib.Nifti1Image, face: np.ndarray, brain: np.ndarray,
                 template: FaceTemplate | None = None, seed: int = 0, threads: int | None = None) -> RefaceResult:
    """Reface ``img``: its stored values with the ``face`` voxels replaced by the template's
    face (see the module docstring), ready for :func:`bids_deface.io.save_raw_like`.

    Parameters
    ----------
    img : nibabel image
        3D, or 4D with volumes last (each volume is refaced with its own intensities, the
        template placed once from the first).
    face, brain : ndarray of bool
        The face mask (what defacing removes) and the brain, on the grid of ``img``.
    template : FaceTemplate, optional
        Default: :func:`bids_deface.face_template.load_face_template`.
    seed : int
        Seed of the noise and of the registration's sampling.
    threads : int, optional
        Threads of the registration (:func:`register_template`).
    """
    from .face_template import load_face_template

    t0 = time.perf_counter()
    template = template or load_face_template()
    face = np.asarray(face, bool)
    if face.shape != img.shape[:3]:
        raise ValueError(f"mask {face.shape} does not match image {img.shape}")
    raw, slope, inter = _raw_values(img)
    out = np.array(raw, copy=True)
    if not face.any():
        record = {**template.record(), "VoxelsRefaced": 0, "Seed": int(seed)}
        return RefaceResult(out, record, time.perf_counter() - t0, {})
    volumes = [raw] if raw.ndim == 3 else [raw[..., v] for v in range(raw.shape[3])]
    # a head in loud noise (an MP2RAGE UNIT1 image): the template is fitted to it, its
    # intensities matched and its face measured with that background quieted, as the mask
    # was made (bids_deface.inputs.loud_background): its air takes the image's lowest value
    first = np.nan_to_num(np.asarray(volumes[0], np.float32) * slope + inter, nan=0.0, posinf=0.0, neginf=0.0)
    background = loud_background(first, _zooms(img.affine))
    if background is not None:
        volumes = [np.where(background, vol.min(), vol) for vol in volumes]
    reg = None
    record: dict[str, Any] = {}
    laps: dict[str, float] = {}
    for v, vol in enumerate(volumes):
        scaled = np.nan_to_num(np.asarray(vol, np.float32) * slope + inter, nan=0.0, posinf=0.0, neginf=0.0)
        if reg is None:
            t = time.perf_counter()
            reg = register_template(scaled, img.affine, face, brain, template, seed, threads)
            laps["register"] = time.perf_counter() - t
        values, rec, lap = reface_array(scaled, img.affine, face, brain, template, reg, seed + v)
        for k, s in lap.items():
            if k != "register":
                laps[k] = laps.get(k, 0.0) + s
        if not record:
            t = time.perf_counter()
            rec["FaceSurfaceDistanceMM"] = round(face_distance_mm(scaled, values, face, img.affine), 2)
            laps["distance"] = time.perf_counter() - t
            record = rec
            if background is not None:
                record["BackgroundQuieted"] = True
        new = _to_raw(values[face], raw.dtype, slope, inter)
        if raw.ndim == 3:
            out[face] = new
        else:
            out[..., v][face] = new
    seconds = time.perf_counter() - t0
    record["Seconds"] = round(seconds, 3)
    logger.debug("refaced %d voxels in %.2f s (%s)", int(face.sum()), seconds,
                 ", ".join(f"{k} {s:.2f}" for k, s in laps.items()))
    return RefaceResult(out, record, seconds, laps)
