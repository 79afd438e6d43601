"""Two signs that an image is not a head, on every evaluation case of the tuning heads and
on synthetic images that are not heads: how much of the predicted brain's surface touches
air (a head wraps its brain in skull and scalp), and how much of the tissue lies within
10 % of one intensity (``InputKind.uniform``: a phantom's fluid). The cases are those of
``bids_deface.evaluation.cases`` (own contrast, synthesised looks, thick slabs along each
axis, child sizes, skull-stripped, partial views, tilts, a frame); the phantoms are the
``not_head`` kind of ``bids_deface.training.synth`` drawn from the tuning heads' label maps
(random size, contrast, resolution and noise), kept when they are neither empty nor noise.

    python docs/experiments/scripts/brain_exposure.py --json benchmarks/brain-edge/exposure.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import head_cases
from bids_deface.evaluation.cases import CASE_NAMES, INPUT_KIND_CASES
from bids_deface.masking import FaceModel
from bids_deface.training.synth import load_source, synthesise

logger = logging.getLogger("brain_exposure")


def brain_exposure(tissue: np.ndarray, brain: np.ndarray, zooms, exposed_mm: float = 6.0) -> float:  # type: ignore[no-untyped-def]
    """Share of the surface voxels of ``brain`` within ``exposed_mm`` of a voxel outside
    ``tissue`` (the image's border does not count as air)."""
    from scipy import ndimage

    from bids_deface.anatomy import distance_mm

    surface = brain & ~ndimage.binary_erosion(brain, border_value=1)
    if not surface.any():
        return 0.0
    near_air = distance_mm(~tissue, zooms) <= exposed_mm
    return float(np.count_nonzero(surface & near_air)) / float(np.count_nonzero(surface))


def _row(model: FaceModel, name: str, head: str, img: nib.Nifti1Image, expect: str) -> dict:
    """The judge's verdict and its ``uniform`` share, and the brain's exposure, on the
    judge's ~3 mm blocks."""
    from bids_deface.anatomy import block_factors, block_reduce, head_mask, largest_component
    from bids_deface.masking import to_ras

    pred = model.predict(img)
    k = pred.input_kind
    _, data, zooms = to_ras(img)
    f = block_factors(zooms, 3.0)
    brain = block_reduce(nib.orientations.apply_orientation(
        largest_component(pred.brain), nib.orientations.io_orientation(img.affine)), f, np.any)
    tissue = head_mask(block_reduce(data, f), zooms * f)
    row = {"head": head, "case": name, "expect": expect, "kind": k.kind, "brain_ml": round(k.brain_ml, 1),
           "face_tissue_ml": round(k.face_tissue_ml, 1), "brain_exposed": round(brain_exposure(tissue, brain, zooms * f), 3),
           "uniform": round(k.uniform, 3)}
    logger.info("%s", json.dumps(row))
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--heads", nargs="+", default=["ds000031", "slicer_mrhead", "colin27", "pydeface_template",
                                                   "volpack"])
    p.add_argument("--phantoms", type=int, default=24, help="synthetic not-head draws")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    rows = []
    for head in args.heads:
        for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, CASE_NAMES + INPUT_KIND_CASES):
            rows.append(_row(model, case.name, head, case.image, case.expect))
        # the not-head draws come out the same from any head's label maps: drawn once
        src = load_source(Path("cache/labels"), head)
        for seed in range(args.phantoms if head == args.heads[0] else 0):
            im, _, _ = synthesise(src, np.random.default_rng([11, seed]), kind="not_head")
            data = np.asanyarray(im.dataobj)
            if np.ptp(data) == 0 or np.unique(data[::4, ::4, ::4]).size < 16:
                continue  # empty, or a few levels (judged before the brain is looked at)
            row = _row(model, f"synthetic not-head {seed}", head, im, "nothing")
            if row["kind"] != "noise":
                rows.append(row)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
    for key in ("brain_exposed", "uniform"):
        heads = [r[key] for r in rows if r["expect"] == "face" and r["kind"] == "head"]
        print(f"{key}: heads judged 'head': {len(heads)}, max {max(heads):.3f}, "
              f"99th percentile {np.percentile(heads, 99):.3f}")
    for r in sorted((r for r in rows if r["expect"] == "nothing"), key=lambda r: r["brain_exposed"]):
        print(r["head"], r["case"], r["kind"], r["brain_exposed"], r["uniform"], r["brain_ml"])


if __name__ == "__main__":
    main()
