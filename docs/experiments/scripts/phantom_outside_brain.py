"""How uniform the tissue outside the predicted brain is, against the whole tissue's
uniformity that tells phantoms today (``bids_deface.inputs.uniform_share``), on every
evaluation case of the tuning heads, each as it is and defaced by its own mask (the image
the QC verdict judges), and on the synthetic images that are not heads of
``brain_exposure.py`` plus the evaluation's phantom. A head's brain is itself one tissue
of fairly even intensity; the scalp, muscle, fat and marrow around it are not, and a
phantom's fluid is the same inside the network's "brain" and out of it.

    python docs/experiments/scripts/phantom_outside_brain.py --json benchmarks/not-a-head/outside-brain.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.anatomy import block_factors, block_reduce, distance_mm, head_mask, largest_component
from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import head_cases
from bids_deface.evaluation.cases import CASE_NAMES, INPUT_KIND_CASES, not_head_cases
from bids_deface.inputs import uniform_share
from bids_deface.masking import FaceModel, to_ras
from bids_deface.training.synth import load_source, synthesise

logger = logging.getLogger("phantom_outside_brain")

#: Tissue closer than this to the predicted brain counts as the brain's edge (mm).
EDGE_MM = 3.0


def shares(data: np.ndarray, zooms: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """Whole-tissue and outside-the-brain uniformity on ~3 mm blocks (RAS arrays)."""
    f = block_factors(zooms, 3.0)
    cz = zooms * f
    cdata = block_reduce(data, f)
    tissue = head_mask(cdata, cz)
    cbrain = block_reduce(brain, f, np.any)
    outside = tissue & (distance_mm(cbrain, cz) > EDGE_MM) if cbrain.any() else tissue
    return {"uniform": round(uniform_share(cdata, tissue), 3),
            "uniform_outside": round(uniform_share(cdata, outside), 3),
            "outside_ml": round(float(np.count_nonzero(outside)) * float(np.prod(cz)) / 1000.0, 1)}


def row(model: FaceModel, head: str, name: str, img: nib.Nifti1Image, expect: str) -> list[dict]:
    pred = model.predict(img)
    ornt = nib.orientations.io_orientation(img.affine)
    _, data, zooms = to_ras(img)
    brain = nib.orientations.apply_orientation(largest_component(pred.brain), ornt).astype(bool)
    face = nib.orientations.apply_orientation(pred.face, ornt).astype(bool)
    out = [{"head": head, "case": name, "expect": expect, "kind": pred.input_kind.kind, "image": "as it is",
            **shares(data, zooms, brain)}]
    if expect == "face" and face.any():
        defaced = np.where(face, float(np.percentile(data, 1)), data)
        out.append({**out[0], "image": "defaced", **shares(defaced, zooms, brain)})
    for r in out:
        logger.info("%s", json.dumps(r))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--heads", nargs="+", default=["ds000031", "slicer_mrhead", "colin27", "pydeface_template",
                                                   "volpack"])
    p.add_argument("--phantoms", type=int, default=24)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    rows: list[dict] = []
    for case in not_head_cases():
        rows += row(model, "-", case.name, case.image, "nothing")
    src = load_source(Path("cache/labels"), args.heads[0])
    for seed in range(args.phantoms):
        im, _, _ = synthesise(src, np.random.default_rng([11, seed]), kind="not_head")
        data = np.asanyarray(im.dataobj)
        if np.ptp(data) == 0 or np.unique(data[::4, ::4, ::4]).size < 16:
            continue
        rows += row(model, "-", f"synthetic not-head {seed}", im, "nothing")
    for head in args.heads:
        for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, CASE_NAMES + INPUT_KIND_CASES):
            rows += row(model, head, case.name, case.image, case.expect)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
    heads = [r for r in rows if r["expect"] == "face"]
    for image in ("as it is", "defaced"):
        sel = [r for r in heads if r["image"] == image]
        print(f"heads {image} ({len(sel)}): uniform max {max(r['uniform'] for r in sel):.3f}, "
              f"outside the brain max {max(r['uniform_outside'] for r in sel):.3f}")
    for r in rows:
        if r["expect"] == "nothing":
            print(r["case"], r["kind"], r["uniform"], r["uniform_outside"], r["outside_ml"])


if __name__ == "__main__":
    main()
