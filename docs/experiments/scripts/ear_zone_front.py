"""The ear zone's front limit, scored on the tuning heads.

The ear zone reaches ``anatomy.EAR_AHEAD_MM`` (scaled with the head) in front of the lowest
brainstem. Every evaluation case of the five tuning heads (``CASE_NAMES`` and
``INPUT_KIND_CASES``), masked by the shipped model with the zone's front limit at each
``--ahead`` value, and scored as the held-out evaluation scores its cases; with each case,
how far in front of the brainstem (divided by the head's scale) the evaluation's ear spheres
reach in the case's own axes, deepbet's brain placing the brainstem.

    python docs/experiments/scripts/ear_zone_front.py --ahead 30 40 --json benchmarks/ear-zone-front/tuning-heads.json
    python docs/experiments/scripts/ear_zone_front.py --whole-only benchmarks/ear-zone-front/tuning-heads.json
    python docs/experiments/scripts/ear_zone_front.py --floor-cut benchmarks/ear-zone-front/tuning-heads.json

``--whole-only`` scores, from the rows saved by the first command, the rule that takes the
farther limit only where the network's brain is whole (``masking.head_scale`` is not None on
the first pass: a brain the field of view does not cut) and the shipped one elsewhere (a slab
from the orbits up places the brainstem at the image's edge): per case the row of the one
limit or the other, the network's brain of each case predicted once more to tell.
``--floor-cut`` does the same with the shipped limit only where that brain runs out of the
image's bottom through the temporal lobes (more than 400 mm² of it in the lowest slice, in
the case's own axes).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

import bids_deface.anatomy as anatomy
from bids_deface.anatomy import _EarReference, head_mask, largest_component
from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import evaluate_case, head_cases
from bids_deface.evaluation.cases import CASE_NAMES, INPUT_KIND_CASES
from bids_deface.evaluation.folds import summary_rows
from bids_deface.evaluation.metrics import COVERAGE_RADIUS_MM, sphere_mask
from bids_deface.masking import FaceModel, head_scale

TUNING = ("ds000031", "colin27", "slicer_mrhead", "pydeface_template", "volpack")


def sphere_reach(case) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """How far in front of the lowest brainstem (mm / head scale) each ear sphere's head
    tissue reaches (its most anterior voxel)."""
    zooms = np.asarray(case.image.header.get_zooms()[:3], float)
    ref = _EarReference.of(case.brain, zooms)
    tissue = head_mask(case.image.get_fdata(dtype=np.float32), zooms)
    out = {}
    for side in ("ear_right", "ear_left"):
        if side in case.landmarks:
            sphere = sphere_mask(tissue.shape, case.image.affine, case.landmarks[side],
                                 COVERAGE_RADIUS_MM * case.scale) & tissue
            if sphere.any():
                out[side] = round(float(((np.argwhere(sphere)[:, 1] * zooms[1]) - ref.y_stem).max() / ref.scale), 1)
    return out


def table(rows: list[dict]) -> str:
    """One line per front limit: the fold tables' counts (:func:`summary_rows`), the lowest
    ear and the median volume removed."""
    lines = ["| front limit (mm) | cases passing | cases with brain removed (voxels) | cases with an ear < 0.95 | "
             "lowest ear | cases with an eye, eyeball, nose or mouth short | mL removed (median) |",
             "|---|---|---|---|---|---|---|"]
    for a in sorted({r["ahead"] for r in rows}):
        sel = [r for r in rows if r["ahead"] == a]
        n = summary_rows(sel)
        ears = [v for r in sel for k, v in r.items() if k in ("ear_right", "ear_left") and isinstance(v, float)
                and not np.isnan(v)]
        lines.append(f"| {a:g} | {n['pass']} of {n['cases']} | {n['brain_removed_cases']} "
                     f"({sum(r['brain_removed'] for r in sel)}) | {n['ears_short']} | {min(ears):.3f} | "
                     f"{n['eyes_nose_mouth_short']} | {np.median([r['ml_removed'] for r in sel]):.0f} |")
    return "\n".join(lines)


def brain_cut(brain: np.ndarray, zooms: np.ndarray, criterion: str) -> bool:
    """Whether ``criterion`` takes the network's brain (RAS) for one the field of view cuts:
    ``whole`` — anywhere (``masking.head_scale`` is None); ``floor`` — through the temporal
    lobes at the image's bottom (more than 400 mm² of brain in its lowest slice)."""
    if criterion == "whole":
        return head_scale(brain, tuple(zooms), largest=True) is None
    return float(np.count_nonzero(brain[:, :, 0])) * float(zooms[0] * zooms[1]) > 400.0


def whole_only(saved: Path, model: FaceModel, criterion: str = "whole") -> None:
    """The rows of the farther limit where the network's brain is not cut (by ``criterion``,
    :func:`brain_cut`), of the shipped one where it is, next to both limits' tables."""
    rows = json.loads(saved.read_text())
    limits = sorted({r["ahead"] for r in rows})
    near, far = limits[0], limits[-1]
    cut: dict[tuple[str, str], bool] = {}
    for head in dict.fromkeys(r["head"] for r in rows):
        names = list(dict.fromkeys(r["case"] for r in rows if r["head"] == head))
        for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, names):
            zooms = np.asarray(case.image.header.get_zooms()[:3], float)
            brain = largest_component(model.label_map_ras(case.image.get_fdata(dtype=np.float32), zooms) == 2)
            cut[(head, case.name)] = brain_cut(brain, zooms, criterion)
    chosen = []
    for r in rows:
        want = near if cut[(r["head"], r["case"])] else far
        if r["ahead"] == want:
            chosen.append({**r, "ahead": -1.0, "brain_cut": cut[(r["head"], r["case"])]})
    print("cases with a cut brain:", sorted(k for k, v in cut.items() if v))
    where = "is whole" if criterion == "whole" else "does not run out of the image's bottom"
    print(table(rows + chosen).replace("| -1 |", f"| {far:g} where the brain {where}, {near:g} elsewhere |"))
    name = "-whole-only.json" if criterion == "whole" else "-floor-cut.json"
    saved.with_name(saved.stem + name).write_text(json.dumps(chosen, indent=1, default=str))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--heads", nargs="+", default=list(TUNING))
    p.add_argument("--ahead", type=float, nargs="+", default=[30.0, 40.0])
    p.add_argument("--json", type=Path)
    p.add_argument("--whole-only", type=Path, help="rows saved by --json (see the module)")
    p.add_argument("--floor-cut", type=Path, help="rows saved by --json: the farther limit except where the "
                   "brain runs out of the image's bottom (see the module)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    if args.whole_only or args.floor_cut:
        whole_only(args.whole_only or args.floor_cut, model, "whole" if args.whole_only else "floor")
        return
    shipped = anatomy.EAR_AHEAD_MM
    names = CASE_NAMES + INPUT_KIND_CASES
    rows = []
    try:
        for head in args.heads:
            for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, names):
                reach = sphere_reach(case)
                for a in args.ahead:
                    anatomy.EAR_AHEAD_MM = a
                    row = evaluate_case(model, case)
                    rows.append({"head": head, "ahead": a, "sphere_reach": reach,
                                 **{k: v for k, v in row.items() if k != "timings"}})
                    print(json.dumps({k: rows[-1].get(k) for k in ("head", "case", "ahead", "sphere_reach", "ear_right",
                                                                  "ear_left", "brain_removed", "pass")}), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=1, default=str))
    finally:
        anatomy.EAR_AHEAD_MM = shipped
    print(table(rows))


if __name__ == "__main__":
    main()
