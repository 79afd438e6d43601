"""Heads turned by quarter turns about the superior axis under an unchanged header (on their
side, prone), on the five tuning heads: the network's face in front of the brain in each
turn, and the cases on their side and prone masked with the shipped pipeline against the
image's own axes.

    python docs/experiments/scripts/turned_heads.py --json benchmarks/turned-heads.json
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
from bids_deface.evaluation.cases import quarter_turned
from bids_deface.masking import LABELS, FaceModel, _to_ras, largest_component
from bids_deface.pose import face_in_front_ml

HEADS = ("ds000031", "colin27", "pydeface_template", "volpack", "slicer_mrhead")
CASES = ("T1w on its side (real)", "T1w prone (real)")
COLUMNS = ("ear_right", "ear_left", "eyeball_right", "eyeball_left", "brain_removed", "seconds", "pass")


class _Axes:
    """The face model with the upright frame on or off."""

    def __init__(self, model: FaceModel, upright: bool) -> None:
        self.model, self.upright = model, upright

    def predict(self, img):  # type: ignore[no-untyped-def]
        return self.model.predict(img, upright=self.upright)


def face_in_front_by_turn(model: FaceModel, path: Path) -> list[float]:
    """The network's face in front of the brain (mL, first pass) with the head turned by 0,
    1, 2 and 3 quarter turns in its grid."""
    img = nib.as_closest_canonical(nib.load(path))
    data = img.get_fdata(dtype=np.float32)
    out = []
    for turns in range(4):
        turned, affine, _ = quarter_turned(data, img.affine, turns)
        _, ras, zooms = _to_ras(nib.Nifti1Image(np.ascontiguousarray(turned), affine))
        seg, _ = model._labels_ras(np.ascontiguousarray(ras), zooms)
        brain = largest_component(seg == LABELS["brain"])
        out.append(face_in_front_ml(seg == LABELS["face"], brain, tuple(float(z) for z in zooms)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    result: dict = {"face_in_front_ml": {}, "rows": []}
    for head in HEADS:
        path = args.sources / f"{head}.nii.gz"
        ml = face_in_front_by_turn(model, path)
        result["face_in_front_ml"][head] = [round(v) for v in ml]
        print(head, "face in front by quarter turn:", [round(v) for v in ml], flush=True)
        for case in head_cases(path, head, list(CASES)):
            for name, upright in (("shipped", True), ("as it lies", False)):
                row = evaluate_case(_Axes(model, upright), case)
                keep = {"head": head, "case": case.name, "masking": name,
                        **{k: row.get(k) for k in COLUMNS}}
                result["rows"].append(keep)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in keep.items()}),
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
