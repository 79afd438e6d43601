"""Two ways to widen the network's brain where it falls short of deepbet's, measured.

For every case of the tuning heads: how far the predicted brain falls short of deepbet's
where the face meets it (``short_mm``, the evaluation's ``brain_short_mm``), how much brain
it adds outside deepbet's, and how near it comes to each eyeball (the guard gives back
every face voxel within 4 mm of it), for

* the brain grown into brain-like intensities (:func:`grow_brain`, ``--reach``), and
* the brain at a margin of its logit over the other labels (``--margins``).

    python docs/experiments/scripts/brain_edge.py --reach 2 3 4 --json /tmp/grown.json
    python docs/experiments/scripts/brain_edge.py --margins 0 1 2 3 4 --json /tmp/margins.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_deface.anatomy import block_factors, block_reduce, bounding_box, distance_mm, edt_mm
from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import brain_boundary_error, head_cases
from bids_deface.evaluation.cases import CASE_NAMES
from bids_deface.masking import FaceModel, to_ras

logger = logging.getLogger("brain_edge")

#: How far :func:`grow_brain` lets the brain grow beyond the network's (mm).
GROW_REACH_MM = 4.0


def grow_brain(data: np.ndarray, zooms: Sequence[float], brain: np.ndarray, reach_mm: float = GROW_REACH_MM,
               core_mm: float = 3.0, quantiles: tuple[float, float] = (5.0, 99.5),
               work_mm: float = 1.0) -> np.ndarray:
    """``brain`` grown into the brain-like tissue around it: every voxel within
    ``reach_mm`` of ``brain`` whose intensity lies within the brain's own (the
    ``quantiles`` of the voxels deeper than ``core_mm`` inside it), connected to the brain
    through such voxels.

    The network draws the brain on its coarse voxels and its boundary may fall short of
    the cortex by a few millimetres where the face meets it; the cortex it misses has the
    brain's intensities and touches the brain, while the cerebrospinal fluid, the skull
    and the orbital roofs that part the brain from the face do not. Computed on blocks of
    about ``work_mm`` (block means) and brought back to the grid of ``data`` (RAS axis
    order, voxel sizes ``zooms``). The result holds ``brain`` whole.

    >>> data = np.zeros((30, 1, 1)); data[:20] = 1.0; data[20:22] = 0.2; data[22:] = 1.0
    >>> brain = np.zeros((30, 1, 1), bool); brain[:16] = True
    >>> int(np.flatnonzero(grow_brain(data, (1.0, 1.0, 1.0), brain, core_mm=0.0)[:, 0, 0]).max())
    19
    """
    brain = np.asarray(brain, bool)
    if not brain.any() or reach_mm <= 0:
        return brain
    zooms = np.asarray(zooms, float)
    f = block_factors(zooms, work_mm)
    cz = zooms * f
    coarse = block_reduce(np.asarray(data, np.float32), f)
    cbrain = block_reduce(brain, f) >= 0.5
    if not cbrain.any():
        return brain
    box = tuple(slice(max(0, b.start - int(np.ceil(reach_mm / z)) - 1), b.stop + int(np.ceil(reach_mm / z)) + 1)
                for b, z in zip(bounding_box(cbrain), cz))
    depth = edt_mm(cbrain[box], cz)
    inner = coarse[box][depth > core_mm] if np.count_nonzero(depth > core_mm) >= 100 else coarse[box][cbrain[box]]
    lo, hi = np.percentile(inner, quantiles)
    alike = (distance_mm(cbrain[box], cz) <= reach_mm) & (coarse[box] >= lo) & (coarse[box] <= hi)
    labels, _ = ndimage.label(alike | cbrain[box])
    touching = np.unique(labels[cbrain[box]])
    grown = np.zeros(cbrain.shape, bool)
    grown[box] = np.isin(labels, touching[touching > 0]) & ~cbrain[box]
    for axis, k in enumerate(f):
        grown = np.repeat(grown, k, axis)
    out = brain.copy()
    out[: grown.shape[0], : grown.shape[1], : grown.shape[2]] |= grown
    return out




def _row(case, setting: str, value: float, brain: np.ndarray, base: np.ndarray, true: np.ndarray,  # type: ignore[no-untyped-def]
         face: np.ndarray, eyes: dict, zooms) -> dict:
    """One case at one setting: the widened ``brain`` against deepbet's ``true`` brain, and
    what it adds to the network's brain ``base`` outside ``true``."""
    vox_ml = float(np.prod(zooms)) / 1000.0
    row: dict = {"case": case.name, setting: value}
    row["short"], row["over"] = brain_boundary_error(brain, true, face, zooms)
    row["added_ml"] = float((brain & ~base & ~true).sum()) * vox_ml
    row["missed_ml"] = float((true & ~brain).sum()) * vox_ml
    d = distance_mm(brain, zooms)
    for side, e in eyes.items():
        row[f"eye_{side}_mm"] = float(d[e].min())
    logger.info("%s", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    return row


def _ras_case(case):  # type: ignore[no-untyped-def]
    ornt, ras, zooms = to_ras(case.image)
    true = nib.orientations.apply_orientation(case.brain, ornt)
    face = nib.orientations.apply_orientation(case.reference_face, ornt)
    eyes = {side: nib.orientations.apply_orientation(e, ornt) for side, e in case.eyes.items()}
    return ornt, np.ascontiguousarray(ras), zooms, true, face, {k: v for k, v in eyes.items() if v.any()}


def measure_grown(model: FaceModel, case, reaches) -> list[dict]:  # type: ignore[no-untyped-def]
    ornt, ras, zooms, true, face, eyes = _ras_case(case)
    base = nib.orientations.apply_orientation(model.predict(case.image).brain, ornt)
    return [_row(case, "reach_mm", r, grow_brain(ras, zooms, base, reach_mm=r) if r > 0 else base, base, true,
                 face, eyes, zooms) for r in reaches]


def logit_brains(model: FaceModel, ras: np.ndarray, zooms, margins) -> dict:  # type: ignore[no-untyped-def]
    """The brain at each margin ``t`` of the brain logit over the larger of the others
    (``t = 0``: the winning label), upsampled trilinearly to the image's grid, at the
    plan's spacing."""
    import torch

    logits = model._network.logits(ras, [float(z) for z in zooms], model.spacing_zyx[::-1], axes=(2, 1, 0))
    shape = [b.stop - b.start for b in logits.box]
    with torch.inference_mode():
        v = logits.values
        lead = v[2] - torch.maximum(v[0], v[1])
        up = torch.nn.functional.interpolate(lead[None, None], size=shape, mode="trilinear",
                                             align_corners=False)[0, 0].numpy()
    out = {}
    for t in margins:
        full = np.zeros(ras.shape, bool)
        full[logits.box] = up > -t
        out[t] = full
    return out


def measure_margins(model: FaceModel, case, margins) -> list[dict]:  # type: ignore[no-untyped-def]
    ornt, ras, zooms, true, face, eyes = _ras_case(case)
    brains = logit_brains(model, ras, zooms, sorted(set(margins) | {0.0}))
    return [_row(case, "margin", t, brains[t], brains[0.0], true, face, eyes, zooms) for t in margins]


def summary(rows: list[dict], key: str, guard_mm: float = 4.0) -> list[str]:
    """Markdown rows, one per setting (``key``): how far the widened brain still falls short
    of deepbet's beside the face, what it adds outside deepbet's brain, and in how many
    cases an eyeball comes within the guard of it. Each row holds ``short``, ``added_ml``
    and ``eye_<side>_mm`` of its setting."""
    lines = []
    for value in sorted({r[key] for r in rows}):
        sel = [r for r in rows if r[key] == value]
        short = np.array([r["short"] for r in sel], float)
        added = np.array([r["added_ml"] for r in sel], float)
        eyes = [min((r[c] for c in r if c.startswith("eye_")), default=np.inf) for r in sel]
        lines.append(f"| {value:g} | {np.nanmedian(short):.1f} | {np.nanmax(short):.1f} | "
                     f"{int(np.sum(short > 2.0))} of {len(sel)} | {np.median(added):.0f} | "
                     f"{sum(e < guard_mm for e in eyes)} of {sum(np.isfinite(e) for e in eyes)} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--heads", nargs="+", default=["ds000031", "slicer_mrhead", "colin27"])
    p.add_argument("--cases", nargs="*", default=None, help="default: CASE_NAMES")
    p.add_argument("--reach", type=float, nargs="*", default=None, help="reaches of grow_brain (0: none)")
    p.add_argument("--margins", type=float, nargs="*", default=None, help="logit margins (0: the label)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    rows = []
    for head in args.heads:
        for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, args.cases or list(CASE_NAMES)):
            if args.margins:
                rows += [{"head": head, **r} for r in measure_margins(model, case, args.margins)]
            if args.reach:
                rows += [{"head": head, **r} for r in measure_grown(model, case, args.reach)]
    header = ["| {} | short (median, mm) | short (max, mm) | cases short > 2 mm | added outside deepbet (median, mL) | "
              "cases with an eyeball within 4 mm |", "|---|---|---|---|---|---|"]
    for key, rowsel in (("reach_mm", [r for r in rows if "reach_mm" in r]), ("margin", [r for r in rows if "margin" in r])):
        if rowsel:
            print("\n".join([header[0].format(key), header[1], *summary(rowsel, key)]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
