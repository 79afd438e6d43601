"""How close the head's outer surface comes to the predicted brain, in every evaluation
case of the training heads: a skull-stripped image's surface *is* its brain; a head's lies
beyond scalp and skull. Measured to set a skull-stripped rule on training heads only.

    python docs/experiments/scripts/input_kind_surface.py ds000031 colin27 slicer_mrhead \
        > docs/experiments/input-kind-surface.tsv
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.anatomy import block_factors, block_reduce, distance_mm, largest_component
from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import head_cases
from bids_deface.inputs import judge_input, outer_surface
from bids_deface.masking import LABELS, FaceModel, to_ras

#: Training heads of the shipped model and of fold C (pydeface's template and volpack,
#: fold C's held-out heads, are left out).
TRAINING = ("ds000031", "colin27", "slicer_mrhead")
BANDS_MM = (3.0, 4.5, 6.0)
CACHE = Path("cache/input-kind-surface")


def surface_stats(data: np.ndarray, zooms, brain: np.ndarray) -> dict[str, float]:
    """Distances (mm) from the head's outer surface (:func:`bids_deface.inputs.outer_surface`)
    to ``brain``, on the 3 mm grid of :func:`bids_deface.inputs.judge_input`."""
    zooms = np.asarray(zooms, float)
    f = block_factors(zooms, 3.0)
    cz = zooms * f
    surface = outer_surface(block_reduce(data, f), cz)
    cbrain = block_reduce(brain, f, np.any)
    if not surface.any() or not cbrain.any():
        return {"n": 0, "median": float("nan"), **{f"within{b:g}": float("nan") for b in BANDS_MM}}
    d = distance_mm(cbrain, cz)[surface]
    return {"n": int(surface.sum()), "median": float(np.median(d)),
            **{f"within{b:g}": float(np.mean(d <= b)) for b in BANDS_MM}}


def main() -> int:
    heads = sys.argv[1:] or TRAINING
    CACHE.mkdir(parents=True, exist_ok=True)
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    cols = ["n", "median"] + [f"within{b:g}" for b in BANDS_MM]
    print("\t".join(["head", "case", "kind"] + [f"net_{c}" for c in cols] + [f"deepbet_{c}" for c in cols]))
    for head in heads:
        for i, case in enumerate(head_cases(Path("cache/sources") / f"{head}.nii.gz", head)):
            _, data, zooms = to_ras(case.image)
            _, ref, _ = to_ras(nib.Nifti1Image(case.brain.astype(np.uint8), case.image.affine))
            store = CACHE / f"{head}-{i:02d}.npz"
            seg = model.label_map_ras(data, zooms)
            np.savez_compressed(store, seg=seg, case=case.name)
            b = largest_component(seg == LABELS["brain"])
            k = judge_input(data, zooms, b, seg == LABELS["face"], largest=True)
            net = surface_stats(data, zooms, b)
            dbt = surface_stats(data, zooms, ref > 0)
            vals = [net[c] for c in cols] + [dbt[c] for c in cols]
            print("\t".join([head, case.name, k.kind] + [f"{v:.3g}" for v in vals]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
