"""Where the eyeball voxels a mask leaves lie: outside the network's face label, or inside
it but taken back by the brain guard (or dropped by the cleaning), and how far from the
guard's brain; for named evaluation cases of one head, scored by one model. The same for
the head tissue of each ear's sphere (``ear_right`` / ``ear_left``), where the head has ear
landmarks: the voxels left, how many lie in the network's face label, how far from the
guard's brain (median), and how many lie within the ear zone's guard of it.

    python docs/experiments/scripts/eyeball_shortfall.py --model-dir cache/foldB/model/... \\
        --head slicer_mrhead --cases "newborn 0.6 T1w" "child 0.7 T1w (real)" --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from bids_deface.anatomy import distance_mm, head_mask
from bids_deface.evaluation.metrics import COVERAGE_RADIUS_MM, sphere_mask
from bids_deface.evaluation.__main__ import head_cases
from bids_deface.masking import FaceModel


def shortfall(model: FaceModel, case) -> dict:  # type: ignore[no-untyped-def]
    pred = model.predict(case.image)
    zooms = np.asarray(case.image.header.get_zooms()[:3], float)
    brain = np.asarray(pred.brain, bool)
    to_brain = distance_mm(brain, zooms)
    out: dict = {"case": case.name, "upright_frame": pred.upright, "guard_mm": pred.guard_mm}
    for side, eye in case.eyes.items():
        left = eye & ~pred.face
        n = int(np.count_nonzero(eye))
        in_label = left & pred.face_predicted
        out[side] = {
            "eyeball_voxels": n,
            "covered": round(1.0 - np.count_nonzero(left) / max(n, 1), 3),
            "left_outside_network_face": int(np.count_nonzero(left & ~pred.face_predicted)),
            "left_inside_network_face": int(np.count_nonzero(in_label)),
            "left_to_brain_mm_median": (round(float(np.median(to_brain[left])), 1) if left.any() else None),
            "left_in_label_to_brain_mm_max": (round(float(to_brain[in_label].max()), 1) if in_label.any() else None),
        }
    tissue = None
    for side in ("ear_right", "ear_left"):
        if side not in case.landmarks:
            continue
        if tissue is None:
            tissue = head_mask(case.image.get_fdata(dtype=np.float32), zooms)
        sphere = sphere_mask(tissue.shape, case.image.affine, case.landmarks[side],
                             COVERAGE_RADIUS_MM * case.scale) & tissue
        n = int(np.count_nonzero(sphere))
        if not n:
            continue
        left = sphere & ~pred.face
        guard = min(pred.guard_mm.values()) if pred.guard_mm else 0.0
        out[side] = {
            "sphere_voxels": n,
            "covered": round(1.0 - np.count_nonzero(left) / n, 3),
            "left_inside_network_face": int(np.count_nonzero(left & pred.face_predicted)),
            "left_to_brain_mm_median": (round(float(np.median(to_brain[left])), 1) if left.any() else None),
            "left_within_guard": int(np.count_nonzero(left & (to_brain <= guard))),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--head", required=True)
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = FaceModel(args.model_dir, device="cpu", threads=2)
    rows = []
    for case in head_cases(args.sources / f"{args.head}.nii.gz", args.head, args.cases):
        rows.append({"head": args.head, **shortfall(model, case)})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
