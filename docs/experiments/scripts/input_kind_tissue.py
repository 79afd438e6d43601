"""Tissue and predicted brain of every evaluation case of the training heads: what
``bids_deface.inputs.judge_input`` sees, to set the skull-stripped rule on training heads.

    python docs/experiments/scripts/input_kind_tissue.py > docs/experiments/input-kind-tissue.tsv
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.anatomy import largest_component
from bids_deface.brainmask import deepbet_brain_mask
from bids_deface.data import default_model_dir
from bids_deface.evaluation.cases import load_landmarks, make_cases
from bids_deface.inputs import judge_input
from bids_deface.masking import LABELS, FaceModel, to_ras

TRAINING = ("ds000031", "colin27", "slicer_mrhead", "pydeface_template", "volpack")


def main() -> int:
    heads = sys.argv[1:] or TRAINING
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    print("head\tcase\tkind\ttissue_ml\tbrain_ml\tface_tissue_ml\tratio\tdeepbet_ml")
    for head in heads:
        img = nib.load(Path("cache/sources") / f"{head}.nii.gz")
        brain = deepbet_brain_mask(img)
        try:
            landmarks = load_landmarks(head)
        except KeyError:
            landmarks = {}
        for case in make_cases(img, brain, landmarks):
            _, data, zooms = to_ras(case.image)
            seg = model.label_map_ras(data, zooms)
            b = largest_component(seg == LABELS["brain"])
            k = judge_input(data, zooms, b, seg == LABELS["face"], largest=True)
            ml = float(np.prod(case.image.header.get_zooms()[:3])) / 1000.0
            print(f"{head}\t{case.name}\t{k.kind}\t{k.tissue_ml:.0f}\t{k.brain_ml:.0f}\t{k.face_tissue_ml:.1f}\t"
                  f"{k.tissue_ml / max(k.brain_ml, 1):.2f}\t{case.brain.sum() * ml:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
