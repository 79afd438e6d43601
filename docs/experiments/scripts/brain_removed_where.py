"""Where a fold model removes brain: in the network's face label or in the ear zone, how far
from the network's brain, and where relative to the brain's centre (RAS, mm).

    python docs/experiments/scripts/brain_removed_where.py --fold C --heads pydeface_template volpack \\
        --cases "T1w 1 mm (real)"
    python docs/experiments/scripts/brain_removed_where.py --model-dir models/Dataset801_FaceEars/nnUNetTrainer__nnUNetPlans__3d_fullres \\
        --heads sag_child3 --cases "FLAIR 1 mm" "newborn 0.6 T1w" "child 0.7 FLAIR"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.anatomy import distance_mm
from bids_deface.evaluation.__main__ import head_cases
from bids_deface.evaluation.folds import fold_model_dir
from bids_deface.masking import FaceModel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fold", help="the fold whose model masks (see --model-dir)")
    p.add_argument("--model-dir", type=Path, help="this model instead of the fold's (e.g. the shipped one)")
    p.add_argument("--heads", nargs="+", required=True)
    p.add_argument("--cases", nargs="+", default=["T1w 1 mm (real)"])
    args = p.parse_args()
    if not (args.fold or args.model_dir):
        p.error("give --fold or --model-dir")
    model = FaceModel(args.model_dir or fold_model_dir(args.fold), device="cpu", threads=2)
    print("head\tcase\tbrain_removed\tin_face_label\tin_ear_zone_or_else\tdist_net_brain_mm_median\t"
          "dist_net_brain_mm_max\tnet_brain_ml\tdeepbet_ml\toffset_RAS_mm_median")
    for head in args.heads:
        for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, args.cases):
            pred = model.predict(case.image)
            zooms = np.asarray(case.image.header.get_zooms()[:3], float)
            gone = pred.face & case.brain
            in_face = int((gone & pred.face_predicted).sum())
            d = distance_mm(pred.brain, zooms)[gone] if gone.any() else np.zeros(1)
            world = nib.affines.apply_affine(case.image.affine, np.argwhere(gone)) if gone.any() else np.zeros((1, 3))
            centre = nib.affines.apply_affine(case.image.affine, np.argwhere(case.brain).mean(0))
            ml = float(np.prod(zooms)) / 1000.0
            print(f"{head}\t{case.name}\t{int(gone.sum())}\t{in_face}\t{int(gone.sum()) - in_face}\t"
                  f"{np.median(d):.1f}\t{d.max():.1f}\t{pred.brain.sum() * ml:.0f}\t{case.brain.sum() * ml:.0f}\t"
                  f"{np.round(np.median(world - centre, 0)).astype(int).tolist()}", flush=True)


if __name__ == "__main__":
    main()
