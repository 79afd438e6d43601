"""The ear zone's brain guard against the ears and the brain of the held-out head at child
and newborn size (measured, not shipped).

Usage::

    python docs/experiments/scripts/ear_zone_guard.py [--threads 2] [--model-dir DIR] [--markdown docs/experiments/ear_zone_guard.md]

At child and newborn size the ear zone is guarded by the 2 mm margin plus room for the
predicted brain's boundary error (``bids_deface.masking.BRAIN_MARGIN_MM``, ``docs/mask.md``):
3.3 mm for a newborn-size head. This benchmark runs the shipped model once on each
held-out case whose guards shrink with the head (``python -m bids_deface.evaluation``'s
cases of child, infant and newborn size) and guards the same masks again with that room
scaled by ``room`` (1 is the shipped guard, 0 the bare 2 mm margin); the model's own face
keeps its shipped guard. For each it gives the ears' coverage, the lowest coverage of the
eyes, nose and mouth, the independent brain mask's voxels removed and the smallest distance
from a removed voxel to it (``docs/validation.md``'s definitions). It shows what less room
for error would buy on the ears and cost in margin. The held-out head is read here, so
nothing is chosen from this table.

The room is there for the predicted brain's boundary error, so each case's first row also
gives that error where the ear zone meets the brain: over the ear zone's voxels within
6 mm of the independent brain mask (inside it included), ``zone_short_mm`` is the largest
amount by which a voxel lies farther from the brain the guard reads than from the
independent one (the guard's margin is that much thinner there), ``spheres_short_mm`` the
same over the ear-zone voxels in the ears' coverage spheres. Distances are counted as in
``benchmarks/small_heads.py`` (on slabs from every sub-slice of a voxel's slab, to the
independent brain on the slices the slabs were made of).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

#: Fractions of the shipped room for error kept in the ear zone's guard.
ROOMS = (1.0, 0.75, 0.5, 0.25, 0.0)

#: The held-out cases whose guards shrink with the head.
SMALL_CASES = ("child 0.7 T1w (real)", "newborn 0.6 T1w", "newborn 0.6 T2w", "infant 0.8 T2w",
               "child 0.7 FLAIR", "newborn 0.6 T2w 3 mm axial")


def truncated(v: float) -> str:
    """Coverage truncated to three decimals, as in ``docs/validation.md``."""
    return f"{math.floor(v * 1000) / 1000:.3f}"


def main(argv: list[str] | None = None) -> int:
    from bids_deface import masking
    from bids_deface.anatomy import head_mask
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.data import default_model_dir
    from bids_deface.evaluation.cases import load_landmarks, make_cases
    from bids_deface.evaluation.metrics import (COVERAGE_RADIUS_MM, brain_gap_mm, brain_voxels_removed,
                                                feature_coverage, sphere_mask)
    from bids_deface.training.fetch import fetch_all
    from small_heads import markdown_table, parse_args, sub_slice_distance_mm, write_page

    args = parse_args(__doc__, argv)
    source = fetch_all(REPO / "cache" / "sources", only=["pycortex"])["pycortex_s1"]
    img = nib.load(source)
    cases = make_cases(img, deepbet_brain_mask(img), load_landmarks("pycortex_s1"), list(SMALL_CASES))
    if {c.name for c in cases} != set(SMALL_CASES):
        raise RuntimeError("the evaluation's small-head cases have changed: update SMALL_CASES")
    model = masking.FaceModel(args.model_dir or default_model_dir(), device="cpu", threads=args.threads)

    shipped = masking.brain_guard_parts
    seen: dict[str, tuple] = {}

    def keep_parts(parts, brain, zooms):  # type: ignore[no-untyped-def]
        seen["guard"] = (parts, brain, zooms)
        return shipped(parts, brain, zooms)

    masking.brain_guard_parts = keep_parts
    rows = []
    try:
        for case in cases:
            pred = model.predict(case.image)
            (face, face_mm), (zone, ears_mm) = seen["guard"][0]
            brain, zooms = seen["guard"][1:]
            tissue = head_mask(case.image.get_fdata(dtype=np.float32), np.asarray(zooms))
            truth = case.brain if case.brain_slices is None else case.brain_slices
            d_true = sub_slice_distance_mm(truth, zooms, zone.shape)
            short = sub_slice_distance_mm(brain, zooms, zone.shape) - d_true
            near = zone & (d_true <= 6.0)
            spheres = np.logical_or.reduce([
                sphere_mask(zone.shape, case.image.affine, case.landmarks[f], COVERAGE_RADIUS_MM * case.scale)
                for f in ("ear_right", "ear_left")])
            errors = {"zone_short_mm": f"{short[near].max():.1f}",
                      "spheres_short_mm": f"{short[near & spheres].max():.1f}"}
            for room in ROOMS:
                guard_mm = masking.BRAIN_MARGIN_MM + (ears_mm - masking.BRAIN_MARGIN_MM) * room
                removed = shipped([(face, face_mm), (zone, guard_mm)], brain, zooms).face
                if room == 1.0 and not np.array_equal(removed, pred.face):
                    raise RuntimeError(f"{case.name}: the guard redone does not give the app's mask")
                cov = {f: feature_coverage(removed, tissue, case.image.affine, case.landmarks[f],
                                           COVERAGE_RADIUS_MM * case.scale)
                       for f in ("ear_right", "ear_left", "eye_right", "eye_left", "nose", "mouth")}
                rows.append({
                    "case": case.name, "room": room,
                    "guard_mm (face, ears)": f"{face_mm:.2f}, {guard_mm:.2f}",
                    "ear_right": truncated(cov["ear_right"]),
                    "ear_left": truncated(cov["ear_left"]),
                    "eyes_nose_mouth_min": truncated(min(cov[f] for f in list(cov)[2:])),
                    "brain_removed": brain_voxels_removed(removed, case.brain),
                    "brain_gap_mm": f"{brain_gap_mm(removed, case.brain, zooms):.1f}",
                    **(errors if room == ROOMS[0] else dict.fromkeys(errors, "")),
                })
                print(rows[-1], flush=True)
    finally:
        masking.brain_guard_parts = shipped
    text = ("# The ear zone's guard at child and newborn size (held-out head)\n\n"
            + __doc__.split("\n\n", 2)[2].strip() + "\n\nCoverage is truncated to three decimals.\n\n"
            + "\n".join(markdown_table(rows)) + "\n\nRegenerate with:\n\n```\n"
            "python docs/experiments/scripts/ear_zone_guard.py --markdown docs/experiments/ear_zone_guard.md\n```\n")
    write_page(text, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
