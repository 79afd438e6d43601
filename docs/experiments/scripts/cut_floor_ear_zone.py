"""The ear zone on images whose brain runs out of the image's bottom (slabs from the orbits
up), on the training heads: the near margin below 20 mm above the lowest brain (shipped)
against the far margin everywhere when more than 400 mm² of brain lie in the lowest slice
(tried, not shipped).

    python docs/experiments/scripts/cut_floor_ear_zone.py
"""
from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

import bids_deface.masking as masking
from bids_deface.anatomy import ear_zone
from bids_deface.brainmask import deepbet_brain_mask
from bids_deface.data import default_model_dir
from bids_deface.evaluation.cases import make_cases
from bids_deface.masking import FaceModel

TRAINING = ("ds000031", "colin27", "slicer_mrhead", "pydeface_template", "volpack")
CASES = ["T1w orbits up (real)", "T1w 1 mm (real)", "T1w 5 mm axial (real)", "newborn 0.6 T2w 3 mm axial"]


def far_when_cut(head, brain, zooms, **options):  # type: ignore[no-untyped-def]
    """The ear zone, with the far margin everywhere when the brain runs out of the bottom."""
    if np.count_nonzero(brain[:, :, 0]) * float(zooms[0] * zooms[1]) > 400.0:
        options["high_from_mm"] = -np.inf
    return ear_zone(head, brain, zooms, **options)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    print("| head | case | rule | brain removed | mL removed |")
    print("|---|---|---|---|---|")
    for head in TRAINING:
        path = Path("cache/sources") / f"{head}.nii.gz"
        img = nib.load(path)
        brain = deepbet_brain_mask(img)
        cases = make_cases(img, brain, {}, CASES)
        for case in cases:
            for rule, zone in (("near margin low (shipped)", ear_zone), ("far margin (tried)", far_when_cut)):
                masking.ear_zone = zone
                pred = model.predict(case.image)
                ml = float(pred.face.sum()) * float(np.prod(case.image.header.get_zooms()[:3])) / 1000
                print(f"| {head} | {case.name} | {rule} | {int((pred.face & case.brain).sum())} | {ml:.1f} |",
                      flush=True)
    masking.ear_zone = ear_zone
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
