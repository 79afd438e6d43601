"""Evidence about a defaced image that does not trust the mask that made it.

Everything here is measured on the *defaced* image itself (and on the original, when it
is there), never taken from the defacing mask: the face model is run once more on the
defaced image, and what it still calls face, where tissue is missing, and how close the
missing tissue comes to the brain it finds are turned into numbers
(:data:`FEATURES`). :mod:`bids_deface.qc.verdict` turns them into a verdict.

The image is judged on voxels of about ``WORK_MM`` (block means; thick slices are kept
whole), in RAS axis order. Distances scale with the head: a child's face lies closer to
its brain than an adult's.

*Void* is what holds no tissue: outside the head's intensity threshold
(:func:`bids_deface.anatomy.head_mask`). A real head has void only outside it; a defaced
head has void where its face was; a defacing that cut brain has void against the brain.
Removals filled with noise are bright, but rough: neighbouring voxels differ by about as
much as their intensity, as no tissue does (``front_roughness``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..anatomy import (block_factors, block_reduce, bounding_box, distance_mm, ear_zone, head_mask, largest_component,
                       orbit_level)
from ..inputs import MIN_BRAIN_ML, MIN_LEVELS, judge_input, quiet_background

__all__ = ["Evidence", "OriginalContext", "gather_evidence", "original_context", "coarse_labels", "FEATURES",
           "WORK_MM"]

#: Voxel size at which the evidence is measured (mm).
WORK_MM = 3.0
#: How far in front of the lowest brainstem the evidence's ear regions reach (mm, adult
#: size): fixed with the classifier trained on them.
_EARS_AHEAD_MM = 30.0
#: Mean adult brain volume (mL), for the head's linear size.
_ADULT_BRAIN_ML = 1560.0

#: The features, in the classifier's order. ``orig_*`` need the original image (NaN without).
FEATURES = (
    "kind_no_face", "kind_not_head", "head_scale", "brain_ml",
    "face_tissue_ml", "face_front_ml", "face_ear_ml",
    "tissue_front_ml", "tissue_ear_ml", "void_front_frac", "void_ear_frac",
    "void_near_brain_3mm_ml", "void_near_brain_6mm_ml", "brain_contact_frac", "void_min_brain_mm",
    "front_roughness",
    "nose_reach_mm", "mouth_reach_mm", "eye_reach_min_mm", "eye_reach_max_mm", "ear_reach_min_mm",
    "ear_reach_max_mm", "nose_tissue_ml", "mouth_tissue_ml", "eye_tissue_min_ml", "ear_tissue_min_ml",
    "globe_score_max",
    "orig_removed_ml", "orig_removed_brain_ml", "orig_removed_near_brain_ml", "orig_removed_min_brain_mm",
    "orig_face_removed_frac", "orig_front_removed_frac", "orig_ear_removed_frac",
    "orig_nose_removed_frac", "orig_mouth_removed_frac", "orig_eye_removed_min", "orig_ear_region_removed_min",
    "orig_globe_removed_min", "orig_removed_brainlike_ml", "orig_kind_no_face", "orig_removed_tissue_ml",
)


@dataclass(frozen=True)
class Evidence:
    """What :func:`gather_evidence` measured."""

    features: dict[str, float]
    kind: str
    """The defaced image's kind (:func:`bids_deface.inputs.judge_input`): ``head``,
    ``no_face``, ``not_head``, ``noise`` or ``empty``."""
    with_original: bool
    seconds: float = 0.0
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Coarse RAS maps for the report: ``face`` (face still there), ``void``, ``brain``."""

    def vector(self) -> np.ndarray:
        """The features in :data:`FEATURES` order (NaN where not measured)."""
        return np.array([self.features.get(k, math.nan) for k in FEATURES], float)


def coarse_labels(model, defaced: np.ndarray, zooms: Sequence[float]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The model's label map of ``defaced`` on the grid the evidence is measured on."""
    zooms = np.asarray(zooms, float)
    f = _factors(zooms)
    data = _finite(defaced)
    return model.label_map_ras(block_reduce(data, f), zooms * f)


def _finite(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data, np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def _quieted(data: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """``data`` with a background of loud noise (an MP2RAGE UNIT1 image) quieted, as the
    mask judges it (:func:`bids_deface.inputs.quiet_background`); otherwise as it is."""
    quiet = quiet_background(data, zooms)
    return data if quiet is None else quiet


def _factors(zooms: np.ndarray) -> np.ndarray:
    return block_factors(zooms, WORK_MM)


def _roughness(data: np.ndarray, zooms: np.ndarray, f: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Mean absolute difference between neighbours along the finest axis, relative to the
    intensity, in the coarse voxels ``where`` (about 0.67 for uniform noise, lower for
    tissue); computed within their bounding box only."""
    if not where.any():
        return np.zeros(0)
    box = bounding_box(where)
    fine = data[tuple(slice(b.start * k, b.stop * k) for b, k in zip(box, f))]
    axis = int(np.argmin(zooms))
    diff = np.abs(np.diff(fine, axis=axis))
    pad = [(0, 0)] * 3
    pad[axis] = (0, 1)
    diff = np.pad(diff, pad, mode="edge")
    rough = block_reduce(diff, f) / np.maximum(block_reduce(fine, f), 1e-6)
    return rough[where[box]]


def _regions(brain: np.ndarray, cz: np.ndarray, shape: Sequence[int], s: float) -> dict[str, np.ndarray]:
    """Boxes where the nose, the mouth, each eye and each ear belong, placed from the brain
    (RAS voxel grid of voxel size ``cz``; ``s``: the head's linear size), and the frame
    used: ``x_mid``, ``half_width``, ``y_front`` (in a dict of 0-d arrays)."""
    from ..anatomy import _EarReference

    points = np.argwhere(brain) * cz
    y_front, z_orb = orbit_level(points)
    ref = _EarReference.of(brain, cz)
    X, Y, Z = _EarReference.grids(tuple(shape), cz)
    dx = np.abs(X - ref.x_mid)
    front = Y > y_front - 25.0 * s
    out = {
        "nose": (dx < 12.0 * s) & (Z > z_orb - 55.0 * s) & (Z < z_orb - 10.0 * s) & (Y > y_front - 10.0 * s),
        "mouth": (dx < 20.0 * s) & (Z > z_orb - 100.0 * s) & (Z < z_orb - 60.0 * s) & (Y > y_front - 20.0 * s),
    }
    eyes = (dx > 15.0 * s) & (dx < 45.0 * s) & (Z > z_orb - 30.0 * s) & (Z < z_orb + 5.0 * s) & front
    ears = ((dx > ref.half_width - 15.0 * ref.scale) & (Y > ref.back) & (Y < ref.y_stem + _EARS_AHEAD_MM * ref.scale)
            & (Z > ref.z_temporal - 50.0 * ref.scale) & (Z < ref.z_temporal + 40.0 * ref.scale))
    for side, here in (("right", X > ref.x_mid), ("left", X < ref.x_mid)):
        out[f"eye_{side}"] = eyes & here
        out[f"ear_{side}"] = ears & here
    for k in out:
        out[k] = np.broadcast_to(out[k], tuple(shape))
    out["_x_mid"], out["_half_width"], out["_y_front"] = (np.asarray(ref.x_mid), np.asarray(ref.half_width),
                                                         np.asarray(y_front))
    return out


def _reach(tissue: np.ndarray, box: np.ndarray, along: np.ndarray, s: float) -> float:
    """How far (mm, divided by the head's size) the tissue in ``box`` reaches along ``along``
    (an mm coordinate relative to the brain's edge); -30 when the box holds none."""
    sel = tissue & box
    if not sel.any():
        return -30.0
    return float(np.broadcast_to(along, tissue.shape)[sel].max()) / s


def _globes(data: np.ndarray, brain: np.ndarray, cz: np.ndarray, tissue: np.ndarray) -> list:  # type: ignore[type-arg]
    from ..eyes import find_globes

    try:
        return find_globes(data, brain, cz, tissue)
    except (ValueError, IndexError):
        return []


def _tissue(cdata: np.ndarray, cz: np.ndarray) -> np.ndarray:
    """Tissue of the coarse image: the head (:func:`bids_deface.anatomy.head_mask`) and
    every other part above the same threshold of at least ``_ISLAND_ML`` — what a defacing
    left behind as an island (the tip of the nose, an eyeball) counts."""
    head = head_mask(cdata, cz)
    finite = cdata[np.isfinite(cdata)]
    hi, lo = np.percentile(finite, 99.5), np.percentile(finite, 2)
    bright = cdata > lo + 0.08 * (hi - lo)
    labels, n = ndimage.label(bright & ~head)
    if n:
        sizes = np.bincount(labels.ravel())[1:] * float(np.prod(cz)) / 1000.0
        keep = np.flatnonzero(sizes >= _ISLAND_ML) + 1
        head = head | np.isin(labels, keep)
    return head


#: The smallest island of tissue that counts (mL): about a 10 mm sphere.
_ISLAND_ML = 0.5


def _inner(shape: Sequence[int], margin: int = 2) -> np.ndarray:
    """Voxels at least ``margin`` voxels from the image's faces (where the field of view,
    not a defacing, ends the tissue)."""
    out = np.zeros(shape, bool)
    out[tuple(slice(margin, max(margin, n - margin)) for n in shape)] = True
    return out


def _nanmin(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return min(kept) if kept else math.nan


def _ml(mask: np.ndarray, voxel_ml: float) -> float:
    return float(np.count_nonzero(mask)) * voxel_ml


@dataclass(frozen=True)
class OriginalContext:
    """What the evidence needs of the original image, measured once (:func:`original_context`)."""

    data: np.ndarray
    """The original on its own grid (float, finite)."""
    coarse: np.ndarray
    brain: np.ndarray
    face: np.ndarray
    tissue: np.ndarray
    d_brain: np.ndarray
    balls: tuple  # type: ignore[type-arg]
    """Each eyeball found on the original (coarse boolean masks)."""
    kind: str = "head"
    """The original's kind (:func:`bids_deface.inputs.judge_input`)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def original_context(model, original: np.ndarray, zooms: Sequence[float],  # type: ignore[no-untyped-def]
                     original_labels: np.ndarray | None = None) -> OriginalContext:
    """The original image's brain, face, tissue and eyeballs on the evidence grid.
    ``original_labels``: the model's label map of the original on its own grid, when
    already predicted (otherwise it is predicted here, on the coarse grid)."""
    zooms = np.asarray(zooms, float)
    f = _factors(zooms)
    cz = zooms * f
    odata = _finite(original)
    coarse = block_reduce(_quieted(odata, zooms), f)
    if original_labels is None:
        olabels = model.label_map_ras(coarse, cz)
    else:
        olabels = block_reduce(np.asarray(original_labels) == 2, f, np.any).astype(np.uint8) * 2
        olabels[block_reduce(np.asarray(original_labels) == 1, f, np.mean) > 0.5] = 1
    brain = largest_component(olabels == 2)
    tissue = head_mask(coarse, cz)
    d_brain = distance_mm(brain, cz) if brain.any() else np.full(coarse.shape, 99.0, np.float32)
    balls: tuple = ()  # type: ignore[type-arg]
    if brain.any():
        globes = _globes(coarse, brain, cz, tissue)
        if globes:
            from ..eyes import globe_masks

            balls = tuple(globe_masks(coarse.shape, cz, globes, wall_mm=0.0).values())
    kind = judge_input(coarse, cz, brain, olabels == 1, largest=True, surface=False).kind if brain.any() else "not_head"
    return OriginalContext(odata, coarse, brain, olabels == 1, tissue, d_brain, balls, kind)


def _removal_features(ctx: OriginalContext, removed: np.ndarray, regions: dict[str, np.ndarray],
                      front: np.ndarray, ears: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """The ``orig_*`` features: what was removed (coarse ``removed``) against the original."""
    feats: dict[str, float] = {}
    obrain, oface, d_obrain = ctx.brain, ctx.face, ctx.d_brain
    feats["orig_removed_ml"] = _ml(removed, voxel_ml)
    feats["orig_kind_no_face"] = float(ctx.kind == "no_face")
    feats["orig_removed_tissue_ml"] = _ml(removed & ctx.tissue, voxel_ml)
    feats["orig_removed_brain_ml"] = _ml(removed & obrain, voxel_ml)
    feats["orig_removed_near_brain_ml"] = _ml(removed & (d_obrain <= 3.0), voxel_ml)
    feats["orig_removed_min_brain_mm"] = float(min(30.0, d_obrain[removed].min())) if removed.any() else 30.0
    feats["orig_face_removed_frac"] = float(np.count_nonzero(removed & oface)) / max(1, np.count_nonzero(oface))
    ofront, oears = oface & front, oface & ears
    feats["orig_front_removed_frac"] = float(np.count_nonzero(removed & ofront)) / max(1, np.count_nonzero(ofront))
    feats["orig_ear_removed_frac"] = float(np.count_nonzero(removed & oears)) / max(1, np.count_nonzero(oears))
    ofar = ctx.tissue & (d_obrain > 3.0)

    def removed_frac(box: np.ndarray) -> float:
        n = np.count_nonzero(ofar & box)
        return float(np.count_nonzero(removed & ofar & box)) / n if n else math.nan

    feats["orig_nose_removed_frac"] = removed_frac(regions["nose"])
    feats["orig_mouth_removed_frac"] = removed_frac(regions["mouth"])
    feats["orig_eye_removed_min"] = _nanmin([removed_frac(regions[f"eye_{k}"]) for k in ("right", "left")])
    feats["orig_ear_region_removed_min"] = _nanmin([removed_frac(regions[f"ear_{k}"]) for k in ("right", "left")])
    if ctx.balls:
        feats["orig_globe_removed_min"] = min(float(np.count_nonzero(removed & b)) / max(1, np.count_nonzero(b))
                                              for b in ctx.balls)
    # removed voxels near the brain that look like brain (within its 5th-95th percentiles)
    if obrain.any():
        lo_b, hi_b = np.percentile(ctx.coarse[obrain], [5, 95])
        like = (ctx.coarse >= lo_b) & (ctx.coarse <= hi_b)
        feats["orig_removed_brainlike_ml"] = _ml(removed & like & (d_obrain <= 6.0), voxel_ml)
    return feats


def _context(model, original: "np.ndarray | OriginalContext", zooms: Sequence[float],  # type: ignore[no-untyped-def]
             original_labels: np.ndarray | None) -> OriginalContext:
    return original if isinstance(original, OriginalContext) else original_context(
        model, original, zooms, original_labels)


def gather_evidence(model, defaced: np.ndarray, zooms: Sequence[float],  # type: ignore[no-untyped-def]
                    original: "np.ndarray | OriginalContext | None" = None,
                    original_labels: np.ndarray | None = None,
                    labels: np.ndarray | None = None) -> Evidence:
    """The evidence about ``defaced`` (RAS, float, voxel sizes ``zooms``).

    ``model`` is a :class:`bids_deface.masking.FaceModel`. With ``original`` (the same grid)
    the removed voxels are known exactly and compared with the model's brain and face on
    the original (``original_labels``: its label map on the full grid, when already
    predicted; otherwise it is predicted here). A defaced image taken for a phantom by the
    uniformity of its tissue is judged as the head it was when its original is judged a
    head. ``labels``: the model's label map of the defaced image on the coarse grid
    (:func:`coarse_labels`), when already predicted.
    """
    import time

    t0 = time.perf_counter()
    zooms = np.asarray(zooms, float)
    raw = _finite(defaced)  # what was removed is told from these values
    data = _quieted(raw, zooms)
    f = _factors(zooms)
    cz = zooms * f
    voxel_ml = float(np.prod(cz)) / 1000.0
    cdata = block_reduce(data, f)
    feats: dict[str, float] = {k: math.nan for k in FEATURES}
    step = max(1, int(round((data.size / 1_000_000) ** (1 / 3))))
    levels = np.unique(data[::step, ::step, ::step]).size
    seg = model.label_map_ras(cdata, cz) if labels is None else labels
    brain = largest_component(seg == 2)
    ctx = None
    if levels < MIN_LEVELS:  # one value is an empty image; a few, a mask or a label map
        kind = "empty" if levels == 1 and float(data.max()) == float(data.min()) else "not_head"
    else:
        judged = judge_input(cdata, cz, brain, seg == 1, largest=True, surface=False)
        kind = judged.kind
        if kind == "not_head" and judged.brain_ml >= MIN_BRAIN_ML and original is not None:
            # taken for a phantom by the uniformity of its tissue: removing a face leaves a
            # head's tissue more uniform (a clinical contrast-enhanced T1 in thick slices:
            # 0.425 before, 0.458 after). The defaced image of an original judged a head
            # is that head.
            ctx = _context(model, original, zooms, original_labels)
            if ctx.kind == "head":
                kind = "head"
    feats["kind_no_face"] = float(kind == "no_face")
    feats["kind_not_head"] = float(kind in ("not_head", "noise", "empty"))
    brain_ml = _ml(brain, voxel_ml)
    feats["brain_ml"] = brain_ml
    scale = (brain_ml / _ADULT_BRAIN_ML) ** (1 / 3) if brain_ml > 0 else 0.0
    feats["head_scale"] = scale
    maps: dict[str, np.ndarray] = {"brain": brain}
    if kind in ("not_head", "noise", "empty") or not brain.any():
        return Evidence(feats, kind, original is not None, time.perf_counter() - t0, maps)

    tissue = _tissue(cdata, cz)
    void = ~tissue
    inner = _inner(cdata.shape)
    d_brain = distance_mm(brain, cz)
    s = max(scale, 0.5)

    # where the face and the ears belong, placed from the brain (RAS mm of the grid)
    points = np.argwhere(brain) * cz
    y_front, z_orb = orbit_level(points)
    y_mid = float(np.median(points[:, 1]))
    X, Y, Z = np.ogrid[tuple(slice(0, n) for n in cdata.shape)]
    Y, Z = Y * cz[1], Z * cz[2]
    front = (Y > y_mid + 0.25 * (y_front - y_mid)) & (Z < z_orb + 25.0 * s) & (d_brain > 3.0) & (d_brain < 60.0 * s)
    front_near = front & (d_brain < 25.0 * s) & inner
    # the QC's own ear region, fixed with its classifier (not the mask's ear zone)
    ears = ear_zone(np.ones(cdata.shape, bool), brain, cz, brain_mm=3.0, ahead_mm=_EARS_AHEAD_MM) & (d_brain < 30.0 * s)
    ears_near = ears & (d_brain < 15.0 * s) & inner
    face = (seg == 1) & tissue
    rough = _roughness(data, zooms, f, front_near & tissue)
    feats["front_roughness"] = float(np.median(rough)) if rough.size else 0.0
    feats["face_tissue_ml"] = _ml(face, voxel_ml)
    feats["face_front_ml"] = _ml(face & front, voxel_ml)
    feats["face_ear_ml"] = _ml(face & ears, voxel_ml)
    feats["tissue_front_ml"] = _ml(tissue & front & (d_brain > 15.0 * s), voxel_ml)
    feats["tissue_ear_ml"] = _ml(tissue & ears & (d_brain > 8.0 * s), voxel_ml)
    feats["void_front_frac"] = float(np.count_nonzero(void & front_near)) / max(1, np.count_nonzero(front_near))
    feats["void_ear_frac"] = float(np.count_nonzero(void & ears_near)) / max(1, np.count_nonzero(ears_near))
    void_in = void & inner
    feats["void_near_brain_3mm_ml"] = _ml(void_in & (d_brain <= 3.0), voxel_ml)
    feats["void_near_brain_6mm_ml"] = _ml(void_in & (d_brain <= 6.0), voxel_ml)
    surface = brain & ~ndimage.binary_erosion(brain) & inner
    near_void = distance_mm(void_in, cz) <= 2.0 * float(cz.max()) if void_in.any() else np.zeros_like(brain)
    feats["brain_contact_frac"] = float(np.count_nonzero(surface & near_void)) / max(1, np.count_nonzero(surface))
    feats["void_min_brain_mm"] = float(min(30.0, d_brain[void_in].min())) if void_in.any() else 30.0
    maps.update(face=face, void=void & (front | ears) & (d_brain < 30.0 * s))

    # does the tissue still reach where the nose, the mouth, the eyes and the pinnae are?
    regions = _regions(brain, cz, cdata.shape, s)
    _, Yg, _ = np.ogrid[tuple(slice(0, n) for n in cdata.shape)]
    ahead = Yg * cz[1] - float(regions["_y_front"])
    Xg = np.arange(cdata.shape[0])[:, None, None] * cz[0]
    aside = np.abs(Xg - float(regions["_x_mid"])) - float(regions["_half_width"])
    far = d_brain > 5.0 * s
    feats["nose_reach_mm"] = _reach(tissue, regions["nose"], ahead, s)
    feats["mouth_reach_mm"] = _reach(tissue, regions["mouth"], ahead, s)
    eye_reach = [_reach(tissue, regions[f"eye_{k}"], ahead, s) for k in ("right", "left")]
    ear_reach = [_reach(tissue, regions[f"ear_{k}"], aside, s) for k in ("right", "left")]
    feats["eye_reach_min_mm"], feats["eye_reach_max_mm"] = min(eye_reach), max(eye_reach)
    feats["ear_reach_min_mm"], feats["ear_reach_max_mm"] = min(ear_reach), max(ear_reach)
    feats["nose_tissue_ml"] = _ml(tissue & regions["nose"] & far, voxel_ml)
    feats["mouth_tissue_ml"] = _ml(tissue & regions["mouth"] & far, voxel_ml)
    feats["eye_tissue_min_ml"] = min(_ml(tissue & regions[f"eye_{k}"] & far, voxel_ml) for k in ("right", "left"))
    feats["ear_tissue_min_ml"] = min(_ml(tissue & regions[f"ear_{k}"] & far, voxel_ml) for k in ("right", "left"))
    globes = _globes(cdata, brain, cz, tissue)
    feats["globe_score_max"] = max((g.score for g in globes), default=0.0)

    if original is not None:
        if ctx is None:
            ctx = _context(model, original, zooms, original_labels)
        if ctx.shape != data.shape:
            raise ValueError(f"original {ctx.shape} and defaced {data.shape} images differ in shape")
        removed = block_reduce(ctx.data != raw, f, np.any)
        feats.update(_removal_features(ctx, removed, regions, front, ears, voxel_ml))
        maps["removed"] = removed
    return Evidence(feats, kind, original is not None, time.perf_counter() - t0, maps)
