"""Defacing outcomes made from real heads, with the verdict each one deserves.

From one evaluation case (:mod:`bids_deface.evaluation.cases`: a real head in one of its
contrasts, sizes or input kinds, with its independent brain mask, reference face label,
eyeballs and landmarks) :func:`synthetic_removals` makes the removals other tools and
failures produce: the reference mask as it is, shrunk, shifted, with an eye, the nose or
the ears left out, biting into the brain, a mask that misses the face, and nothing at
all. :func:`apply_removal` fills what is removed with zeros, a constant or noise, as
defacing tools do. :func:`true_verdict` measures what the removal did with the metrics of
the real-heads evaluation (:mod:`bids_deface.evaluation.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..anatomy import distance_mm, edt_mm, head_mask
from ..evaluation.metrics import COVERAGE_RADIUS_MM, REQUIRED, feature_coverage, sphere_mask

__all__ = ["Removal", "synthetic_removals", "apply_removal", "true_verdict", "VERDICTS", "FILLS"]

#: The verdicts, in the order of the classifier's classes.
VERDICTS = ("pass", "face-remaining", "brain-removed", "not-defaced")
#: How removed voxels are filled.
FILLS = ("zero", "constant", "noise")
_FACE_FEATURES = ("eye_right", "eye_left", "nose", "mouth")


@dataclass(frozen=True)
class Removal:
    name: str
    removed: np.ndarray
    fill: str = "zero"


def _shifted(mask: np.ndarray, zooms: np.ndarray, shift_mm: tuple[float, float, float]) -> np.ndarray:
    vox = [int(round(s / z)) for s, z in zip(shift_mm, zooms)]
    out = np.zeros_like(mask)
    src = tuple(slice(max(0, -v), n - max(0, v)) for v, n in zip(vox, mask.shape))
    dst = tuple(slice(max(0, v), n - max(0, -v)) for v, n in zip(vox, mask.shape))
    out[dst] = mask[src]
    return out


def correct_mask(case, head: np.ndarray, own: np.ndarray | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A removal that meets every threshold of the real-heads evaluation: the reference
    face label with each eyeball and the tissue around each ear landmark (15 mm, scaled
    with the head), and ``own`` (another mask, e.g. this tool's) where given, all kept
    more than 2 mm from the independent brain mask."""
    zooms = np.sqrt((case.image.affine[:3, :3] ** 2).sum(0))
    face = case.reference_face.copy()
    if own is not None:
        face |= own
    for eye in case.eyes.values():
        face |= distance_mm(eye, zooms) <= 2.0
    for feat in ("ear_right", "ear_left"):
        if feat in case.landmarks:
            face |= sphere_mask(face.shape, case.image.affine, case.landmarks[feat], 15.0 * case.scale)
    return face & head & (distance_mm(case.brain, zooms) > 2.0)


def synthetic_removals(case, head: np.ndarray, seed: int,  # type: ignore[no-untyped-def]
                       own: np.ndarray | None = None) -> Iterator[Removal]:
    """Removals for ``case`` (RAS grid), ``head`` its tissue mask; fills chosen by ``seed``.
    The removals that should pass are made from :func:`correct_mask` (with ``own``), and
    the failures from it too."""
    zooms = np.sqrt((case.image.affine[:3, :3] ** 2).sum(0))
    rng = np.random.default_rng(seed)
    brain = case.brain
    s = case.scale
    face = correct_mask(case, head, own) if case.expect != "nothing" else np.zeros_like(head)

    def fill() -> str:
        return str(rng.choice(FILLS, p=[0.6, 0.15, 0.25]))

    yield Removal("untouched", np.zeros_like(head))
    if case.expect == "nothing":
        # a skull-stripped image: only a bite into its brain can go wrong
        d = distance_mm(~brain, zooms)
        front = np.zeros_like(brain)
        ys = np.argwhere(brain)[:, 1]
        front[:, int(np.percentile(ys, 92)):, :] = True
        yield Removal("frontal pole cut", brain & front & (d < 8.0), fill())
        return
    if not face.any():
        return
    inside = edt_mm(face, zooms)
    yield Removal("correct mask", face, fill())
    yield Removal("correct mask, another fill", face, fill())
    yield Removal("correct mask grown 3 mm", face | ((distance_mm(face, zooms) <= 3.0) & head
                                                    & (distance_mm(brain, zooms) > 2.0)), fill())
    yield Removal("shrunk 3 mm", face & (inside > 3.0 * s), fill())
    yield Removal("shrunk 7 mm", face & (inside > 7.0 * s), fill())
    side = ("right", "left")[seed % 2]
    eye = case.eyes.get(side)
    if eye is not None and eye.any():
        yield Removal(f"{side} eye left", face & ~(distance_mm(eye, zooms) <= 2.0), fill())
        # the back half of the globe left (the mask stops in front of the equator)
        ey = np.argwhere(eye)[:, 1].mean()
        back = eye.copy()
        back[:, int(math.ceil(ey)):, :] = False
        yield Removal(f"{side} eyeball's back half left", face & ~back, fill())
    lms = case.landmarks
    for part, radius in (("nose", 12.0), (f"ear_{side}", 22.0), ("mouth", 12.0)):
        if part in lms:
            ball = sphere_mask(face.shape, case.image.affine, lms[part], radius * s)
            yield Removal(f"{part.replace('_', ' ')} left", face & ~ball, fill())
    if "ear_right" in lms and "ear_left" in lms:
        balls = (sphere_mask(face.shape, case.image.affine, lms["ear_right"], 25.0 * s)
                 | sphere_mask(face.shape, case.image.affine, lms["ear_left"], 25.0 * s))
        yield Removal("both ears left", face & ~balls, fill())
    for shift in ((0.0, -5.0, 0.0), (0.0, -12.0, 0.0), (0.0, 0.0, -12.0), (0.0, 30.0, 0.0)):
        yield Removal(f"shifted {shift[1]:+.0f} mm A-P, {shift[2]:+.0f} mm I-S", _shifted(face, zooms, shift) & head,
                      fill())
    # the mask grown into the brain where it comes closest: by 2 mm, and by 8 mm
    grown = distance_mm(face, zooms)
    gap = float(grown[brain].min()) if brain.any() else 0.0
    yield Removal("bite into the brain 2 mm", face | (brain & (grown <= gap + 2.0)), fill())
    yield Removal("bite into the brain 8 mm", face | (brain & (grown <= gap + 8.0)), fill())
    # a mask that misses the face: a cap of scalp on the back of the head
    d_brain = distance_mm(brain, zooms)
    yc = np.argwhere(brain)[:, 1]
    back = np.zeros_like(head)
    back[:, : max(1, int(np.percentile(yc, 8))), :] = True
    yield Removal("scalp at the back removed", head & back & (d_brain > 4.0), fill())


def apply_removal(data: np.ndarray, removal: Removal, seed: int) -> np.ndarray:
    """``data`` with ``removal`` filled with zeros, a constant (the image's 2nd percentile)
    or noise (uniform up to the image's 95th percentile)."""
    out = np.array(data, np.float32, copy=True)
    r = removal.removed
    if not r.any():
        return out
    if removal.fill == "zero":
        out[r] = 0.0
    elif removal.fill == "constant":
        out[r] = float(np.percentile(data[::2, ::2, ::2], 2))
    else:
        rng = np.random.default_rng(seed)
        out[r] = rng.uniform(0.0, float(np.percentile(data[::2, ::2, ::2], 95)), int(r.sum())).astype(np.float32)
    return out


def true_verdict(case, removed: np.ndarray, head: np.ndarray) -> tuple[str, dict[str, float]]:  # type: ignore[no-untyped-def]
    """The verdict ``removed`` deserves on ``case`` (``head``: the case's tissue), and the
    measurements it rests on (coverage per feature, eyeballs, brain voxels removed).

    ``not-defaced`` when nothing is removed from a head with a face, or none of the eyes,
    nose and mouth is half removed; then ``brain-removed`` when any voxel of the
    independent brain mask is removed; then ``face-remaining`` when a feature in view is
    below the real-heads thresholds; otherwise ``pass``. A skull-stripped image is ``pass``
    unless brain was removed.
    """
    affine = case.image.affine
    m: dict[str, float] = {"brain_removed": float(np.count_nonzero(removed & case.brain))}
    if case.expect == "nothing":
        return ("brain-removed" if m["brain_removed"] > 0 else "pass"), m
    for feat, lm in case.landmarks.items():
        if feat in REQUIRED:
            m[feat] = feature_coverage(removed, head, affine, lm, COVERAGE_RADIUS_MM * case.scale)
    for side in ("right", "left"):
        eye = case.eyes.get(side)
        if eye is not None and eye.any():
            m[f"eyeball_{side}"] = float(np.count_nonzero(removed & eye)) / float(np.count_nonzero(eye))
    face_cov = [m[k] for k in _FACE_FEATURES if k in m and not math.isnan(m[k])]
    if not removed.any() or (face_cov and max(face_cov) < 0.5):
        return "not-defaced", m
    if m["brain_removed"] > 0:
        return "brain-removed", m
    for feat, need in REQUIRED.items():
        v = m.get(feat, math.nan)
        if not math.isnan(v) and v < need:
            return "face-remaining", m
    return "pass", m


def case_head(case) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Head tissue of a case's image (:func:`bids_deface.anatomy.head_mask`)."""
    zooms = np.sqrt((case.image.affine[:3, :3] ** 2).sum(0))
    return head_mask(case.image.get_fdata(dtype=np.float32), zooms) | case.brain
