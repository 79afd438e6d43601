"""Heads in a background of loud noise (MP2RAGE UNIT1 images): how loud the background of
real heads and of UNIT1 images made from them is, which evaluation cases the detector
takes for such images, and how the mask does on them.

    python docs/experiments/scripts/loud_background.py share --json benchmarks/loud-background/share.json
    python docs/experiments/scripts/loud_background.py cases ds000031 colin27 slicer_mrhead --json benchmarks/loud-background/cases.json
    python docs/experiments/scripts/loud_background.py evaluate ds000031 colin27 slicer_mrhead --json benchmarks/loud-background/tuning.json
    python docs/experiments/scripts/loud_background.py merge --rows benchmarks/loud-background/held-out.json \
        --json benchmarks/folds/fold-A-shipped-model.json benchmarks/folds/fold-N-shipped-model.json

``share``: the share of loud blocks (:func:`bids_deface.inputs._loud_blocks`) of every
source head in ``cache/sources`` as it is and as a UNIT1 image
(:func:`bids_deface.evaluation.cases.mp2rage_unit1`). ``cases``: for every evaluation case
of the heads named (and the images that are not heads), whether
:func:`bids_deface.inputs.loud_background` finds a loud background. ``evaluate``: the
evaluation's row of each head's ``T1w as MP2RAGE UNIT1 (real)`` case with the shipped model.
``merge``: those rows put into fold tables' rows (``--json``, changed in place) of the same
heads where a run of the fold gives them (after the head's ``T1w rolled 30° (real)``), with
the fold's network runtime.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_deface.evaluation.cases import INPUT_KIND_CASES, mp2rage_unit1, not_head_cases
from bids_deface.inputs import LOUD_BLOCK_MM, _loud_blocks, dark_share, loud_background

logger = logging.getLogger("loud_background")
UNIT1_CASE = INPUT_KIND_CASES[15]


def _ras(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(img)
    return img.get_fdata(dtype=np.float32), np.asarray(img.header.get_zooms()[:3], float)


def share(sources: Path) -> list[dict]:
    rows = []
    for path in sorted(sources.glob("*.nii.gz")):
        data, zooms = _ras(nib.load(path))
        if data.ndim != 3:
            continue
        row = {"head": path.name.replace(".nii.gz", ""), "shape": list(data.shape),
               "zooms": [round(float(z), 2) for z in zooms]}
        for name, image in (("as_is", data), ("unit1", mp2rage_unit1(data, zooms, seed=15))):
            loud, _ = _loud_blocks(image, zooms, LOUD_BLOCK_MM)
            row[name] = round(float(loud.mean()), 3)
            row[f"{name}_dark"] = round(dark_share(image), 3)
            row[f"{name}_found"] = loud_background(image, zooms) is not None
        logger.info("%s", row)
        rows.append(row)
    return rows


def cases(sources: Path, heads: list[str]) -> list[dict]:
    from bids_deface.evaluation.__main__ import head_cases

    rows = []
    every = [(h, c) for h in heads for c in head_cases(sources / f"{h}.nii.gz", h, None)]
    every += [("-", c) for c in not_head_cases()]
    for head, case in every:
        data, zooms = _ras(case.image)
        loud, _ = _loud_blocks(data, zooms, LOUD_BLOCK_MM)
        row = {"head": head, "case": case.name, "loud_share": round(float(loud.mean()), 3),
               "dark_share": round(dark_share(data), 3),
               "found": loud_background(data, zooms) is not None}
        logger.info("%s", row)
        rows.append(row)
    return rows


def evaluate(sources: Path, heads: list[str], threads: int) -> list[dict]:
    from bids_deface.evaluation.__main__ import evaluate as evaluate_head

    rows = []
    for head in heads:
        t0 = time.perf_counter()
        for row in evaluate_head(sources / f"{head}.nii.gz", head, None, [UNIT1_CASE], threads, extra=True):
            rows.append({"head": head, **row})
        logger.info("%s in %.0f s", head, time.perf_counter() - t0)
    return rows


def merge(rows_path: Path, tables: list[Path]) -> None:
    """Put the ``UNIT1`` rows of ``rows_path`` into each fold table of ``tables`` (in place)."""
    new = {r["head"]: r for r in json.loads(rows_path.read_text()) if r["case"] == UNIT1_CASE}
    for table in tables:
        rows = [r for r in json.loads(table.read_text()) if r["case"] != UNIT1_CASE]
        out = []
        for r in rows:
            out.append(r)
            if r["case"] == INPUT_KIND_CASES[4] and r["head"] in new:
                out.append({**new[r["head"]], "runtime": r.get("runtime")})
        logger.info("%s: %d rows, %d of them %s", table, len(out), len(out) - len(rows), UNIT1_CASE)
        table.write_text(json.dumps(out, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("share", "cases", "evaluate", "merge"))
    parser.add_argument("heads", nargs="*")
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, nargs="+", required=True)
    parser.add_argument("--rows", type=Path, help="merge: the rows of `evaluate`")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.what == "merge":
        merge(args.rows, args.json)
        return
    if args.what == "share":
        rows = share(args.sources)
    elif args.what == "cases":
        rows = cases(args.sources, args.heads)
    else:
        rows = evaluate(args.sources, args.heads, args.threads)
    args.json[0].parent.mkdir(parents=True, exist_ok=True)
    args.json[0].write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
