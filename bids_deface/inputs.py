"""Is there a face to remove? The kind of an input image, judged before anything is removed.

``docs/mask.md``: inputs with no face (skull-stripped, not a head) come out unchanged, with
a flag. The checks here do not trust the face model's face label; they use the image's own
intensities and the model's brain only as a reference position:

* ``empty`` — the image is constant, or almost all of it is zero;
* ``not_head`` — fewer than ``MIN_LEVELS`` distinct intensities: a mask, a label map or a
  drawn object;
* ``noise`` — neighbouring voxels are uncorrelated (a real image, at any resolution and
  contrast, has strongly correlated neighbours);

* ``not_head`` — the model finds no brain of a plausible size (under ``MIN_BRAIN_ML``, a
  tenth of a newborn's) and no face either;
* ``no_face`` — all the tissue in the image lies close to the brain (skull-stripped, or a
  brain-only crop): under ``FACE_TISSUE_ML`` of tissue farther than ``FACE_REACH_MM``
  from the predicted brain. A real face (eyes, lids, nose) lies 20–60 mm in front of the
  brain; a skull-stripped image keeps at most a few millimetres of what surrounded it;
* ``no_face`` — or the image's outer surface is its brain's: ``SURFACE_SHARE`` or more of
  the surface where the tissue meets background inside the field of view (not where the
  image's edge cuts it) lies within ``SURFACE_BAND_MM`` of the predicted brain. A head's
  surface is its skin, beyond scalp and skull; a skull-stripped brain's is its cortex,
  and that holds where the predicted brain falls short of parts of it (the cerebellum,
  a frontal pole), which leave more than ``FACE_TISSUE_ML`` far from it — unless
  ``STRIPPED_FAR_TISSUE_ML`` or more of tissue lies farther than ``FACE_REACH_MM`` from
  the brain: that is a face, not what a skull-stripping leaves (a head whose vertex was
  blanked exposes its brain to background without losing its face);
* ``not_head`` — otherwise a head, but most of its tissue (``UNIFORM_SHARE`` or more)
  lies within ``UNIFORM_BAND`` of one intensity: a phantom's fluid (a head's many tissues
  spread its intensities, a skull-stripped brain's less so; the network may take a
  phantom's cylinder for a brain and a face);
* ``head`` — anything else: defaced as usual.

A head in a background of noise as loud as its tissue (an MP2RAGE ``UNIT1`` image, the
ratio of two images whose background holds nothing but noise; a T1 map) would be taken for
noise, and the network does not see a face in it: :func:`loud_background` finds that
background, and the image is judged and masked with it set to the image's lowest value
(the mask is applied to the image as it is).

Arrays are in RAS axis order with voxel sizes ``zooms`` (mm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from .anatomy import block_expand, block_factors, block_reduce, distance_mm, head_mask, largest_component

__all__ = ["InputKind", "judge_input", "neighbour_correlation", "uniform_share", "outer_surface", "surface_near_brain",
           "KIND_FLAGS", "MIN_BRAIN_ML", "MIN_LEVELS", "FACE_TISSUE_ML", "FACE_REACH_MM",
           "NOISE_CORRELATION", "UNIFORM_SHARE", "UNIFORM_BAND", "SURFACE_BAND_MM", "SURFACE_SHARE",
           "STRIPPED_FAR_TISSUE_ML", "loud_background", "quiet_background", "LOUD_BLOCK_MM", "LOUD_STD",
           "LOUD_SHARE", "DARK_SHARE", "dark_share"]

#: Brain volume below which the model is taken to have found no brain (mL).
MIN_BRAIN_ML = 40.0
#: Tissue farther than ``FACE_REACH_MM`` from the brain needed for a face to be there (mL).
FACE_TISSUE_ML = 8.0
FACE_REACH_MM = 15.0
#: Share of the head's outer surface within ``SURFACE_BAND_MM`` of the predicted brain at
#: and above which the image is taken for a skull-stripped one. Set on three training
#: heads' evaluation cases (``docs/experiments/input-kind-surface.md``): skull-stripped
#: copies 0.30–0.42, heads at most 0.20 (newborn sizes; adult-size heads at most 0.08).
SURFACE_BAND_MM = 3.0
SURFACE_SHARE = 0.25
#: Tissue farther than ``FACE_REACH_MM`` from the brain (mL) at and above which the surface
#: rule does not apply: skull-stripped copies of real heads keep 2.8-13.7 mL there (21.9 with
#: another network), volpack's head, its vertex blanked, 1019 mL.
STRIPPED_FAR_TISSUE_ML = 100.0
#: An image with fewer distinct intensities than this (on a lattice of ~1 M voxels) is a
#: mask, a label map or a drawn object, not an MR image of a head.
MIN_LEVELS = 16
#: Neighbour correlation below which an image is taken for noise.
NOISE_CORRELATION = 0.3
#: Blocks of about ``LOUD_BLOCK_MM`` whose voxels spread (standard deviation) over at least
#: ``LOUD_STD`` of the image's range (1st to 99th percentile) with neighbours uncorrelated
#: (under ``NOISE_CORRELATION``) hold noise as loud as tissue; an image at least
#: ``LOUD_SHARE`` of whose blocks do has a loud background. The sixteen source heads have
#: at most 0.057 of their blocks loud and the 90 evaluation cases of the three tuning heads
#: at most 0.082; MP2RAGE UNIT1 images made from the sixteen heads at least 0.41
#: (``docs/experiments/loud-background.md``).
LOUD_BLOCK_MM = 3.0
LOUD_STD = 0.12
LOUD_SHARE = 0.2
#: An image at least this share of whose voxels are dark (:func:`dark_share`) has the dark
#: background of MR images, and is not measured further for a loud one: the sixteen source
#: heads measure 0.42-0.76 and the tuning heads' cases at least 0.38, their UNIT1 images at
#: most 0.049, pure noise 0.059.
DARK_SHARE = 0.2
#: An image at least this share of whose tissue lies within ``UNIFORM_BAND`` (a fraction)
#: of the tissue's median intensity is a phantom. Set on the tuning heads' evaluation
#: cases, every contrast and size (at most 0.35, in PD) against cylinder phantoms
#: (0.46–0.88 for four of five): ``docs/experiments/not-a-head.md``.
UNIFORM_SHARE = 0.45
UNIFORM_BAND = 0.10
#: The flag each kind writes into the sidecar and the report (``head`` has none).
KIND_FLAGS = {"empty": "empty_image", "noise": "noise_image", "not_head": "not_a_head",
              "no_face": "no_face_in_image"}
_WORK_MM = 3.0
_DESCRIPTIONS = {"head": "a head", "no_face": "the image holds no face (skull-stripped?)",
                 "not_head": "the image is not a head", "noise": "the image is noise",
                 "empty": "the image is empty"}


@dataclass(frozen=True)
class InputKind:
    kind: str
    """``head``, ``no_face``, ``not_head``, ``noise`` or ``empty``."""
    face_tissue_ml: float
    """Tissue farther than ``FACE_REACH_MM`` from the predicted brain (mL)."""
    brain_ml: float
    correlation: float
    tissue_ml: float = 0.0
    """All the image's tissue (the head mask, :func:`bids_deface.anatomy.head_mask`, in mL)."""
    uniform: float = 0.0
    """Share of the tissue within ``UNIFORM_BAND`` of its median intensity (:func:`uniform_share`)."""
    surface_share: float = 0.0
    """Share of the head's outer surface near the predicted brain (:func:`surface_near_brain`)."""
    loud_background: bool = False
    """The image was judged with its background of loud noise quieted (:func:`quiet_background`)."""

    @property
    def removable(self) -> bool:
        """Whether the face mask may remove anything from this image."""
        return self.kind == "head"

    @property
    def flag(self) -> str | None:
        return KIND_FLAGS.get(self.kind)

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.kind]


def neighbour_correlation(data: np.ndarray, zooms: Sequence[float]) -> float:
    """Correlation between each voxel and its neighbour along the finest axis (over the
    voxels that are not background). Near 1 for any real image, near 0 for noise.

    >>> rng = np.random.default_rng(0)
    >>> abs(neighbour_correlation(rng.normal(size=(30, 30, 30)), (1, 1, 1))) < 0.05
    True
    >>> x = np.linspace(0, 6, 30); smooth = np.sin(x)[:, None, None] + np.cos(x)[None, :, None] + 0 * x
    >>> neighbour_correlation(smooth, (1, 1, 1)) > 0.9
    True
    """
    axis = int(np.argmin(zooms))
    a = np.moveaxis(np.asarray(data, np.float32), axis, 0)
    # every pair along that axis, on a lattice of the other two axes of at most ~2 M pairs
    step = max(1, int(np.ceil(np.sqrt(a[:-1].size / 2_000_000))))
    x, y = a[:-1, ::step, ::step].ravel(), a[1:, ::step, ::step].ravel()
    keep = (x != 0) | (y != 0)
    if keep.sum() < 100:
        return 0.0
    x, y = x[keep], y[keep]
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def dark_share(data: np.ndarray) -> float:
    """Share of the voxels (on a lattice of about half a million) within 5 % of the image's
    range (1st to 99th percentile) of its 1st percentile: the air of an MR image (a third
    to two thirds of a head's field of view), a few per cent where the background is
    noise spread over the whole range.

    >>> rng = np.random.default_rng(0)
    >>> round(dark_share(rng.uniform(0, 1000, (40, 40, 40))), 2)
    0.06
    """
    step = max(1, int(round((data.size / 500_000) ** (1 / 3))))
    sample = np.asarray(data[::step, ::step, ::step], np.float32)
    lo, hi = np.percentile(sample, [1, 99])
    return float(np.mean(sample <= lo + 0.05 * (hi - lo)))


def _loud_blocks(data: np.ndarray, zooms: Sequence[float], mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Which blocks of about ``mm`` (``block_factors``, at least two voxels along axes of
    voxels under 4 mm) hold loud noise (see ``LOUD_STD``), and the blocks' factors. Each
    block's spread and neighbour correlation are measured on the pairs of neighbours along
    the finest axis that start in it."""
    zooms = np.asarray(zooms, float)
    # at least two voxels along every axis of voxels under 4 mm (a 2×3×2 mm grid's blocks
    # of one voxel would have no spread)
    f = np.where(zooms < 4.0, np.maximum(block_factors(zooms, mm), 2), block_factors(zooms, mm))
    axis = int(np.argmin(zooms))
    n = [s // k for s, k in zip(data.shape, f)]
    x = np.moveaxis(data, axis, 0)
    x, y = np.moveaxis(x[:-1], 0, axis), np.moveaxis(x[1:], 0, axis)
    if n[axis] * f[axis] > x.shape[axis]:  # the last block along that axis lacks its last pair
        n[axis] -= 1
    if min(n) < 1:
        return np.zeros([max(1, k) for k in n], bool), f
    box = tuple(slice(0, k * m) for k, m in zip(n, f))
    x = np.asarray(x[box], np.float32)
    y = np.asarray(y[box], np.float32)
    mx, my = block_reduce(x, f), block_reduce(y, f)
    vx = np.maximum(block_reduce(x * x, f) - mx * mx, 0.0)
    vy = np.maximum(block_reduce(y * y, f) - my * my, 0.0)
    corr = (block_reduce(x * y, f) - mx * my) / np.sqrt(np.maximum(vx * vy, 1e-20))
    lo, hi = np.percentile(data[::2, ::2, ::2], [1, 99])
    spread = np.sqrt(vx) / max(float(hi - lo), 1e-12)
    return (spread >= LOUD_STD) & (corr < NOISE_CORRELATION), f


def loud_background(data: np.ndarray, zooms: Sequence[float]) -> np.ndarray | None:
    """The background of ``data`` (voxel sizes ``zooms``) where it is noise as loud as the
    head's tissue (``LOUD_SHARE`` of its blocks or more hold loud noise: an MP2RAGE
    ``UNIT1`` image, a T1 map), as a boolean array on ``data``'s grid: everything outside
    the largest connected part of the other blocks, its holes filled (the head). None for an
    image whose background is quiet, as MR images' is, or that holds nothing but noise.

    >>> rng = np.random.default_rng(0)
    >>> ball = np.linalg.norm(np.indices((60, 60, 60)) - 29.5, axis=0) < 22
    >>> x = np.indices((60, 60, 60))[0]
    >>> head = np.where(ball, 400.0 + 10.0 * x + 5 * rng.standard_normal(ball.shape), 0.0)
    >>> loud_background(head, (1, 1, 1)) is None  # a quiet background
    True
    >>> noisy = np.where(ball, head, rng.uniform(0, 1000, head.shape))
    >>> bg = loud_background(noisy, (1, 1, 1))
    >>> bool(bg[0, 0, 0]), bool(bg[30, 30, 30]), float(np.mean(bg[ball])) < 0.15, float(np.mean(bg[~ball])) > 0.95
    (True, False, True, True)
    >>> loud_background(rng.uniform(0, 1000, head.shape), (1, 1, 1)) is None  # noise alone
    True
    """
    data = np.asarray(data, np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if dark_share(data) >= DARK_SHARE:
        return None  # a dark background, as MR images have: nothing more to measure
    loud, f = _loud_blocks(data, zooms, LOUD_BLOCK_MM)
    if loud.size == 0 or float(loud.mean()) < LOUD_SHARE:
        return None
    # the largest connected part of the quiet blocks (noise alone leaves a few blocks
    # together by chance: at 2 mm, parts of up to 3 mL). A block on the skin that holds more
    # noise than tissue goes with the background: noise left around the face, as a block
    # more all round would leave, keeps the network from seeing the eyes whole
    # (docs/experiments/loud-background.md)
    head = ndimage.binary_fill_holes(largest_component(~loud))
    voxel_ml = float(np.prod(np.asarray(zooms, float) * f)) / 1000.0
    if float(np.count_nonzero(head)) * voxel_ml < MIN_BRAIN_ML:
        return None  # no part of it is quiet enough to be tissue
    return block_expand(~head, f, data.shape, fill=True)


def quiet_background(data: np.ndarray, zooms: Sequence[float]) -> np.ndarray | None:
    """``data`` (float) with its loud background (:func:`loud_background`) set to its lowest
    value; None where it has none."""
    background = loud_background(data, zooms)
    if background is None:
        return None
    data = np.asarray(data, np.float32)
    finite = data[np.isfinite(data)]
    return np.where(background, float(finite.min()) if finite.size else 0.0, data).astype(np.float32)


def uniform_share(data: np.ndarray, tissue: np.ndarray, band: float = UNIFORM_BAND) -> float:
    """Share of the ``tissue`` voxels of ``data`` within ``band`` (a fraction) of their
    median intensity, counted from the image's floor (the 2nd percentile of all its voxels,
    from which :func:`bids_deface.anatomy.tissue_level` counts too; 0 in most images): most
    of a phantom, a fifth to a third of a head, whatever constant the image's values are
    shifted by.

    >>> rng = np.random.default_rng(0)
    >>> air = np.zeros((20, 20, 20)); air[4:16, 4:16, 4:16] = 1.0
    >>> fluid = air * (600 + 10 * rng.standard_normal((20, 20, 20)))
    >>> head = air * rng.choice([100.0, 400.0, 700.0, 900.0], (20, 20, 20))
    >>> tissue = air > 0
    >>> uniform_share(fluid, tissue) > 0.9, uniform_share(head, tissue) < 0.35
    (True, True)
    >>> uniform_share(head + 30000, tissue) == uniform_share(head, tissue)
    True
    """
    data = np.asarray(data, np.float32)
    values = data[np.asarray(tissue, bool)]
    if values.size == 0:
        return 0.0
    finite = data[np.isfinite(data)]
    floor = float(np.percentile(finite, 2)) if finite.size else 0.0
    median = float(np.median(values))
    return float(np.mean(np.abs(values - median) <= band * abs(median - floor)))


def outer_surface(data: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """The head's outer surface in ``data``: where its head mask
    (:func:`bids_deface.anatomy.head_mask`) meets background inside the field of view. The
    image's edge is continued outward first, so that a head cut by it has no surface there."""
    pad = 3
    tissue = head_mask(np.pad(np.asarray(data, np.float32), pad, mode="edge"), zooms)
    return (tissue & ~ndimage.binary_erosion(tissue, border_value=1))[pad:-pad, pad:-pad, pad:-pad]


def surface_near_brain(data: np.ndarray, brain: np.ndarray, zooms: Sequence[float],
                       band_mm: float = SURFACE_BAND_MM) -> float:
    """Share of the outer surface of the head in ``data`` (:func:`outer_surface`) that lies
    within ``band_mm`` of ``brain`` (both on one grid of voxel sizes ``zooms``).

    >>> z = np.ones(3) * 3.0
    >>> ball = np.linalg.norm(np.indices((40, 40, 40)) - 19.5, axis=0)
    >>> brain = ball < 12
    >>> round(surface_near_brain(np.where(ball < 18, 100.0, 0.0), brain, z), 2)  # scalp and skull
    0.0
    >>> round(surface_near_brain(np.where(brain, 100.0, 0.0), brain, z), 2)  # skull-stripped
    1.0
    """
    surface = outer_surface(data, zooms)
    brain = np.asarray(brain, bool)
    if not surface.any() or not brain.any():
        return 0.0
    return float(np.mean(distance_mm(brain, zooms)[surface] <= band_mm))


def judge_input(data: np.ndarray, zooms: Sequence[float], brain: np.ndarray,
                face: np.ndarray | None = None, largest: bool = False, surface: bool = True) -> InputKind:
    """The kind of the image ``data`` (RAS, float) with the model's ``brain`` (and ``face``,
    for ``not_head``) on its grid; see the module docstring. Only the largest connected
    part of ``brain`` counts (``largest=True``: ``brain`` is that part already).
    ``surface=False`` leaves the surface rule out (the QC's classifier was trained on the
    kinds judged without it)."""
    zooms = np.asarray(zooms, float)
    voxel_ml = float(np.prod(zooms)) / 1000.0
    data = np.asarray(data, np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if float(np.ptp(data)) == 0.0 or np.count_nonzero(data) < 0.001 * data.size:
        return InputKind("empty", 0.0, 0.0, 0.0)
    step = max(1, int(round((data.size / 1_000_000) ** (1 / 3))))
    if np.unique(data[::step, ::step, ::step]).size < MIN_LEVELS:
        # a mask, a label map or a drawn object: no MR image has so few intensities
        return InputKind("not_head", 0.0, 0.0, 1.0)
    corr = neighbour_correlation(data, zooms)
    brain = np.asarray(brain, bool)
    if not largest:
        brain = largest_component(brain)
    brain_ml = float(np.count_nonzero(brain)) * voxel_ml
    if corr < NOISE_CORRELATION:
        return InputKind("noise", 0.0, brain_ml, corr)
    f = block_factors(zooms, _WORK_MM)
    czooms = zooms * f
    cdata = block_reduce(data, f)
    tissue = head_mask(cdata, czooms)
    cml = float(np.prod(czooms)) / 1000.0
    tissue_ml = float(np.count_nonzero(tissue)) * cml
    uniform = uniform_share(cdata, tissue)
    face_ml = float(np.count_nonzero(face)) * voxel_ml if face is not None else 0.0
    if brain_ml < MIN_BRAIN_ML:
        kind = "not_head" if face_ml < FACE_TISSUE_ML else "head"
        return InputKind(kind, 0.0, brain_ml, corr, tissue_ml, uniform)
    cbrain = block_reduce(brain, f, np.any)
    far = distance_mm(cbrain, czooms) > FACE_REACH_MM
    face_tissue_ml = float(np.count_nonzero(tissue & far)) * cml
    share = surface_near_brain(cdata, cbrain, czooms) if surface else 0.0
    if face_tissue_ml < FACE_TISSUE_ML:
        kind = "no_face"
    elif uniform >= UNIFORM_SHARE:
        kind = "not_head"  # a phantom: one fluid fills most of it
    else:
        stripped = share >= SURFACE_SHARE and face_tissue_ml < STRIPPED_FAR_TISSUE_ML
        kind = "no_face" if stripped else "head"
    return InputKind(kind, face_tissue_ml, brain_ml, corr, tissue_ml, uniform, share)
