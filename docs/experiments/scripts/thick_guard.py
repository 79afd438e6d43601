"""How the brain guard treats thick slices: the app's rule and the others measured on the
same images.

Usage::

    python docs/experiments/scripts/thick_guard.py [--threads 2] [--model-dir DIR] [--markdown docs/experiments/thick_guard.md]

On a thick-slice grid the app draws the guard's brain on sub-slices of each slab (the
network's output at their centres, ``bids_deface.deface.slab_splits``: about as thin as
the finest side) and counts the distance from every sub-slice of a face voxel's slab to
that brain, as the voxel is removed whole (rule ``sub_slab``,
``bids_deface.deface.guard_distance_mm``). The app used to take the brain label at each
voxel's centre as filling its slab and count the distance along the slices' axis between
the slabs: a slab next to a slab of predicted brain is as near to it as a neighbouring
voxel of the finest side (rule ``slabs``). The other rules count between voxel centres,
as on a thin grid, from the predicted brain at each voxel's centre (``centres``) or from a
brain drawn over each slab's whole extent: a voxel is brain when the brain label wins at
any of ``n`` points spread evenly along its slab (``n`` odd, at most 0.75 mm apart;
``any_point``), when the brain probability reaches 0.3, 0.15 or 0.05 at any of them
(``p30``, ``p15``, ``p05``), or when the brain label wins at one of them or the voxel lies
one slab under or over such a voxel with a brain probability of 0.05 at one of its points
(``one_slab``). ``slabs_or_p05`` keeps a face voxel in the mask when ``slabs`` or ``p05``
does (each part's guard passed by either distance): its removed voxels are the union of
theirs (it has no single brain, so no ``missed_brain``). All keep the shipped guard widths
and run on thick-slice images (block means along the voxel axis nearest to superior): the
four training heads in 5 mm slabs at adult size and scaled to newborn size (0.6, about
3 mm slabs), and the 2 mm copy of the held-out head that the tests use in 6 and 8 mm slabs.
Brain is deepbet's mask of the image before slicing, a slab being brain when any of its
slices is. ``missed_brain`` counts the voxels of that brain which the guard's brain leaves
out, anywhere in the head (for ``sub_slab``, a slab is the guard's brain when any of its
sub-slices is); ``gap_mm`` is the smallest distance from a removed voxel to that brain,
between voxel centres. Ear coverage (``docs/validation.md``; the sphere scaled with the
head) is given where the head has ear landmarks: the held-out head, and ds000031, whose
landmarks are for such development measurements only (it made training data).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bids_deface.deface import SLAB_RATIO  # noqa: E402  (a slab: this times the finest side)

#: Largest spacing of the points looked at along a thick slab.
STEP_MM = 0.75


def slab_images(sources: dict[str, Path]):  # type: ignore[no-untyped-def]
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.cases import axial_slabs, block_means
    from small_heads import HEADS, SLAB_MM, scaled

    s1 = block_means(nib.load(sources["pycortex_s1"]))  # as in the tests
    brain = deepbet_brain_mask(s1)
    for mm in (6.0, 8.0):
        yield "pycortex_s1 2 mm (held out)", 1.0, *axial_slabs(s1, brain, mm)
    for name in HEADS:
        img = nib.load(sources[name])
        brain = deepbet_brain_mask(img)
        thick, brain_s = axial_slabs(img, brain, SLAB_MM)
        for s in (1.0, 0.6):
            yield name, s, scaled(thick, s), brain_s


def over_slabs(mode: str, likely_p: float = 0.05) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """A replacement for ``bids_deface.masking.upsample_labels`` whose guard brain is
    drawn over each slab's extent (``mode``: ``any_point``, ``likely`` or ``one_slab``;
    ``likely_p`` is the brain probability that ``likely`` and ``one_slab`` count)."""
    from bids_deface.masking import LABELS, sub_slice_logits, upsample_labels

    def upsample(logits: torch.Tensor, shape: list[int], spacing: list[float]):  # type: ignore[no-untyped-def]
        thick = [a for a, s in enumerate(spacing) if s > min(spacing) * SLAB_RATIO]
        if not thick:
            return upsample_labels(logits, shape, spacing)
        parts = tuple(2 * int(np.ceil((s / STEP_MM - 1) / 2)) + 1 if a in thick else 1
                      for a, s in enumerate(spacing))
        with torch.inference_mode():
            wins = np.zeros(shape, bool)
            likely = np.zeros(shape, bool)
            seg = np.zeros(shape, np.uint8)
            for offset, up in sub_slice_logits(logits, shape, parts):
                labels = up.argmax(0).to(torch.uint8).numpy()
                wins |= labels == LABELS["brain"]
                likely |= (torch.softmax(up, 0)[LABELS["brain"]] >= likely_p).numpy()
                if all(o == n // 2 for o, n in zip(offset, parts)):
                    seg = labels   # the middle point is the voxel's centre
        if mode == "any_point":
            return seg, wins
        if mode == "likely":
            return seg, likely
        beside = np.zeros(shape, bool)
        for a in thick:
            lower, upper = [slice(None)] * 3, [slice(None)] * 3
            lower[a], upper[a] = slice(0, shape[a] - 1), slice(1, shape[a])
            beside[tuple(lower)] |= wins[tuple(upper)]
            beside[tuple(upper)] |= wins[tuple(lower)]
        return seg, wins | (beside & likely)

    return upsample


def centres(brain: np.ndarray, zooms, limit_mm: float = np.inf, shape=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A replacement for ``bids_deface.deface.guard_distance_mm`` counting between voxel
    centres, from a brain on the voxel grid."""
    from bids_deface.anatomy import distance_mm

    return distance_mm(brain, zooms)


def slab_brain(guard_brain: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A guard brain on the voxel grid of ``shape``: a voxel is brain when any of its
    sub-slices is."""
    from bids_deface.anatomy import block_reduce

    splits = [g // n for g, n in zip(guard_brain.shape, shape)]
    return guard_brain if all(k == 1 for k in splits) else block_reduce(guard_brain, splits, np.any)


def main(argv: list[str] | None = None) -> int:
    from bids_deface import deface, masking
    from bids_deface.anatomy import distance_mm, head_mask
    from bids_deface.data import default_model_dir
    from bids_deface.evaluation.cases import load_landmarks
    from bids_deface.evaluation.metrics import COVERAGE_RADIUS_MM, feature_coverage
    from bids_deface.masking import FaceModel
    from bids_deface.training.fetch import fetch_all
    from small_heads import FETCHERS, markdown_table, parse_args, write_page

    args = parse_args(__doc__, argv)

    sources = fetch_all(REPO / "cache" / "sources", only=[*FETCHERS, "pycortex"])
    model = FaceModel(args.model_dir or default_model_dir(), device="cpu", threads=args.threads)
    shipped = deface.guard_distance_mm, masking.upsample_labels

    def at_centres(logits, shape, spacing):  # type: ignore[no-untyped-def]
        # the brain label at each voxel centre, on the voxel grid itself
        seg, _ = shipped[1](logits, shape, spacing)
        return seg, seg == masking.LABELS["brain"]

    rules = {"sub_slab": shipped, "slabs": (shipped[0], at_centres), "centres": (centres, at_centres),
             "any_point": (centres, over_slabs("any_point")),
             **{f"p{round(p * 100):02d}": (centres, over_slabs("likely", p)) for p in (0.3, 0.15, 0.05)},
             "one_slab": (centres, over_slabs("one_slab", 0.05))}
    landmarks = {h: load_landmarks(h) for h in ("pycortex_s1", "ds000031")}
    rows = []
    try:
        for name, s, img, brain in slab_images(sources):
            zooms = img.header.get_zooms()[:3]
            d_true = distance_mm(brain, zooms)
            head = head_mask(img.get_fdata(dtype=np.float32), np.asarray(zooms))
            faces, guard_brains = {}, {}
            for rule, (distance, upsample) in rules.items():
                # the guard's distance and brain, by this rule
                deface.guard_distance_mm, masking.upsample_labels = distance, upsample
                pred = model.predict(img)
                faces[rule], guard_brains[rule] = pred.face, pred.guard_brain
            # kept when either rule keeps it: the same parts, guarded by either distance
            faces["slabs_or_p05"] = faces["slabs"] | faces["p05"]
            for rule, face in faces.items():
                row = {"head": name, "size": s, "slab_mm": f"{max(zooms):.1f}", "rule": rule,
                       "brain_removed": int((face & brain).sum()),
                       "gap_mm": f"{d_true[face].min():.1f}" if face.any() else "n/a",
                       "ml_removed": f"{face.sum() * np.prod(zooms) / 1000:.1f}",
                       "missed_brain": (int((brain & ~slab_brain(guard_brains[rule], brain.shape)).sum())
                                        if rule in guard_brains else "")}
                marks = landmarks.get(name.split()[0], {})
                for ear in ("ear_right", "ear_left"):
                    # the head and its landmarks scaled about the world origin (``scaled``)
                    cover = (feature_coverage(face, head, img.affine, np.multiply(marks[ear], s),
                                              COVERAGE_RADIUS_MM * s) if ear in marks else None)
                    row[ear] = "" if cover is None else f"{cover:.3f}"
                rows.append(row)
                print(row, flush=True)
    finally:
        deface.guard_distance_mm, masking.upsample_labels = shipped
    text = ("# Thick slices: the brain guard on sub-slices of the slabs, between slabs, or between centres\n\n"
            + __doc__.split("\n\n", 3)[3].strip().replace("``", "`") + "\n\n" + "\n".join(markdown_table(rows))
            + "\n\nRegenerate with:\n\n```\npython docs/experiments/scripts/thick_guard.py --markdown "
            "docs/experiments/thick_guard.md\n```\n")
    write_page(text, args.markdown)
    return 0 if all(r["brain_removed"] == 0 for r in rows if r["rule"] == "sub_slab") else 1


if __name__ == "__main__":
    raise SystemExit(main())
