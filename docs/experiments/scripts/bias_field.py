"""A strong intensity bias (a 7 T image without bias correction): the mask on each head's
own T1w multiplied by a smooth field, brighter in the middle of the brain.

    python docs/experiments/scripts/bias_field.py ds000031 colin27 --json benchmarks/bias-field/tuning.json
    python docs/experiments/scripts/bias_field.py pycortex_s1 sag_child3 brainbrowser --json benchmarks/bias-field/held-out.json

The field is 1 + (gain - 1) exp(-r² / (2 · 55²)), r the distance (mm) from the centre of the
head's independent brain mask: ``gain`` times brighter there than at the skin and beyond
(gains 2 and 4; the central brightening of uncorrected 7 T images is of that order).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import evaluate_case, head_cases
from bids_deface.evaluation.cases import CASE_NAMES, EvalCase, _image
from bids_deface.masking import FaceModel

GAINS = (2.0, 4.0)
WIDTH_MM = 55.0


def biased(case: EvalCase, gain: float) -> EvalCase:
    """``case`` with its image multiplied by the field (see the module docstring)."""
    data = case.image.get_fdata(dtype=np.float32)
    zooms = nib.affines.voxel_sizes(case.image.affine)
    centre = np.argwhere(case.brain).mean(0)
    idx = np.indices(data.shape, dtype=np.float32)
    r2 = sum(((idx[i] - centre[i]) * zooms[i]) ** 2 for i in range(3))
    field = 1.0 + (gain - 1.0) * np.exp(-r2 / (2.0 * WIDTH_MM ** 2))
    return EvalCase(f"{case.name}, bias ×{gain:g}", _image(data * field, case.image.affine), case.brain,
                    case.reference_face, case.landmarks, eyes=case.eyes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("heads", nargs="+")
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    rows = []
    for head in args.heads:
        case = head_cases(args.sources / f"{head}.nii.gz", head, [CASE_NAMES[0]])[0]
        for gain in GAINS:
            rows.append({"head": head, "gain": gain, **evaluate_case(model, biased(case, gain))})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
