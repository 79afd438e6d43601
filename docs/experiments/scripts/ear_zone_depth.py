"""How deep below the skin the ear zone needs to reach, and how deep the brain lies there,
on the tuning heads.

The ear zone (``bids_deface.anatomy.ear_zone``) takes everything beside the temporal lobes
from the skin down to the brain guard: its depth is bounded only by the predicted brain, so
where that brain falls short of the real one the zone reaches real brain. The pinnae and
the scalp around them lie near the skin. This script measures, on each case of the tuning
heads (the heads the shipped model was trained on or tuned on; no held-out head is read),
on the ear zone's own ~2 mm grid and with deepbet's brain as the brain:

- the depth below the skin (distance to the nearest voxel outside the head mask; the
  image's edges count as outside) of the ears as the training labels define them
  (``bids_deface.anatomy.pinnae``: pinna, concha and 5 mm around them) within the zone,
  and of the head tissue in the evaluation's ear spheres where the head has ear landmarks;
- the depth of the shallowest brain voxel in the zone's box (beside the temporal lobes,
  around the ears), and what the zone removes deeper than each candidate depth.

Depths are also given divided by the zone's head scale (``_EarReference.scale``), the factor
a rule scaled with the head would use.

    python docs/experiments/scripts/ear_zone_depth.py --json benchmarks/ear-zone-depth/geometry.json
    python docs/experiments/scripts/ear_zone_depth.py --pipeline --depths 0 14 --json benchmarks/ear-zone-depth/pipeline.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.anatomy import _EarReference, block_factors, block_reduce, ear_zone, edt_mm, head_mask, pinnae
from bids_deface.brainmask import deepbet_brain_mask
from bids_deface.evaluation.cases import CASE_NAMES, INPUT_KIND_CASES, load_landmarks, make_cases
from bids_deface.evaluation.metrics import COVERAGE_RADIUS_MM, sphere_mask

TUNING = ("ds000031", "colin27", "slicer_mrhead", "pydeface_template", "volpack")
#: Heads turned in their grid are masked in their upright frame; their zone is not placed here.
TURNED = ("T1w on its side (real)", "T1w prone (real)", "T1w pitched +30° (real)",
          "T1w pitched -30° (real)", "T1w rolled 30° (real)")
SKIP = ("T1w skull-stripped (real)", "T1w plane-cut defaced (real)") + TURNED


def skin_depth_mm(head: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest voxel outside ``head``, the image's
    edges counting as outside (0 outside the head)."""
    padded = np.pad(head, 1, constant_values=False)
    return edt_mm(padded, zooms)[1:-1, 1:-1, 1:-1]


def geometry(case, landmarks: dict) -> dict:  # type: ignore[no-untyped-def]
    """Depths of the ears and of the brain around them for one case (see the module)."""
    zooms = np.asarray(case.image.header.get_zooms()[:3], float)
    f = block_factors(zooms, 2.0)
    cz = zooms * f
    data = block_reduce(case.image.get_fdata(dtype=np.float32), f)
    brain = block_reduce(case.brain, f, np.any)
    head = head_mask(data, cz)
    zone = ear_zone(head, brain, cz)
    box = ear_zone(head, brain, cz, brain_mm=-1.0, brain_mm_high=-1.0, air_mm=1e9)
    depth = skin_depth_mm(head, cz)
    scale = _EarReference.of(brain, cz).scale
    ears = pinnae(head, brain, cz) & zone
    row: dict = {"case": case.name, "scale": round(scale, 3), "zone_ml": float(zone.sum() * np.prod(cz) / 1000)}
    if ears.any():
        d = depth[ears]
        row["ears_depth_p99_mm"] = float(np.percentile(d, 99))
        row["ears_depth_max_mm"] = float(d.max())
    brain_box = box & brain & head
    row["brain_depth_min_mm"] = float(depth[brain_box].min()) if brain_box.any() else None
    # the evaluation's ear spheres, on the coarse grid (head tissue in them)
    affine = case.image.affine @ np.diag([*f, 1.0])
    affine[:3, 3] = case.image.affine[:3, 3] + case.image.affine[:3, :3] @ ((f - 1) / 2.0)
    for side in ("ear_right", "ear_left"):
        if side in case.landmarks:
            sphere = sphere_mask(head.shape, affine, case.landmarks[side], COVERAGE_RADIUS_MM * case.scale) & head
            if sphere.any():
                row[f"{side}_sphere_depth_max_mm"] = float(depth[sphere].max())
    for limit in (8, 10, 12, 14, 16, 18, 20):
        cut = zone & (depth > limit * scale)
        row[f"zone_deeper_{limit}_ml"] = float(cut.sum() * np.prod(cz) / 1000)
        if ears.any():
            row[f"ears_deeper_{limit}"] = float((ears & cut).sum() / ears.sum())
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--heads", nargs="+", default=list(TUNING))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for head in args.heads:
        img = nib.load(Path("cache/sources") / f"{head}.nii.gz")
        try:
            landmarks = load_landmarks(head)
        except KeyError:
            landmarks = {}
        names = [n for n in CASE_NAMES + INPUT_KIND_CASES if n not in SKIP]
        for case in make_cases(img, deepbet_brain_mask(img), landmarks, names):
            row = {"head": head, **geometry(case, landmarks)}
            rows.append(row)
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
                              if not k.startswith("zone_deeper") and not k.startswith("ears_deeper")}), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
