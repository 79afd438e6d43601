"""Measure the QC evidence on defacing outcomes made from the real heads.

Usage::

    python -m bids_deface.qc.build --json benchmarks/qc/outcomes.json

For every real head with landmarks (``bids_deface/evaluation/landmarks.json``) and each of
its cases in :data:`QC_CASES` (its own contrast, synthesised contrasts, 5 mm slabs, child
and newborn sizes, skull-stripped, a slab from the orbits up, pitched by 30°), the
outcomes are: the removals of :func:`bids_deface.qc.outcomes.synthetic_removals`; this
tool's own mask (:class:`bids_deface.masking.FaceModel`); quickshear's plane cut with the
independent brain mask (when quickshear is installed). Each outcome's row holds its true
verdict and measurements (:func:`bids_deface.qc.outcomes.true_verdict`) and the evidence
(:func:`bids_deface.qc.evidence.gather_evidence`) without and with the original image.
Images that are not heads (all zero, noise, a mask) are added once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from .evidence import OriginalContext, gather_evidence, original_context
from .outcomes import Removal, apply_removal, case_head, synthetic_removals, true_verdict

__all__ = ["QC_CASES", "HEADS", "build_rows"]

logger = logging.getLogger("bids_deface.qc")

#: The real heads with landmarks.
HEADS = ("pycortex_s1", "ds000031", "sag_child3", "itk_t1", "brainbrowser", "robex")
QC_CASES = ("T1w 1 mm (real)", "T2w 1 mm", "FLAIR 1 mm", "T1w 5 mm axial (real)",
            "child 0.7 T1w (real)", "newborn 0.6 T2w", "T1w skull-stripped (real)", "T1w orbits up (real)",
            "T1w pitched +30° (real)")


def _quickshear(case) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    try:
        import quickshear
    except ImportError:
        return None
    mask = nib.Nifti1Image(case.brain.astype(np.uint8), case.image.affine)
    out = quickshear.quickshear(case.image, mask)
    return np.asanyarray(out.dataobj).astype(np.float32)


#: The cases deepdefacer (a T1w tool) is run on.
DEEPDEFACER_CASES = ("T1w 1 mm (real)", "T2w 1 mm", "T1w 5 mm axial (real)", "child 0.7 T1w (real)")


def _deepdefacer(case, python: str, keep: Path | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """deepdefacer's output for the case's image (``benchmarks/peers/deepdefacer_run.py``
    run by ``python``, an environment where deepdefacer 2.1.2 works); kept as ``keep``
    and read back from there when it exists."""
    import subprocess
    import tempfile

    if keep is not None and keep.is_file():
        return np.asanyarray(nib.load(keep).dataobj).astype(np.float32)
    shim = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "deepdefacer_run.py"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.nii.gz", Path(tmp) / "out.nii.gz"
        nib.save(case.image, src)
        done = subprocess.run([python, str(shim), str(src), str(dst)], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0 or not dst.is_file():
            raise RuntimeError(f"deepdefacer failed on {case.name}: {done.stderr[-2000:]}")
        out = np.asanyarray(nib.load(dst).dataobj).astype(np.float32)
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(out, case.image.affine), keep)
    if out.shape != case.image.shape:
        raise RuntimeError(f"deepdefacer returned shape {out.shape} for {case.image.shape}")
    return out


def _case_context(model, case) -> tuple[np.ndarray, OriginalContext]:  # type: ignore[no-untyped-def]
    """A case's original voxels and what the paired evidence measures of them once."""
    original = case.image.get_fdata(dtype=np.float32)
    zooms = np.sqrt((case.image.affine[:3, :3] ** 2).sum(0))
    return original, original_context(model, original, zooms, model.label_map_ras(original, zooms))


def deepdefacer_rows(sources: Path, python: str, heads=HEADS, threads: int = 2,  # type: ignore[no-untyped-def]
                     part_dir: Path | None = None) -> list[dict]:
    """Rows of deepdefacer's outputs on the cases of :data:`DEEPDEFACER_CASES`."""
    from ..brainmask import deepbet_brain_mask
    from ..data import default_model_dir
    from ..evaluation.cases import load_landmarks, make_cases
    from ..masking import FaceModel

    model = FaceModel(default_model_dir(), device="cpu", threads=threads)
    rows: list[dict] = []
    for head in heads:
        part = part_dir / f"{head}_deepdefacer.json" if part_dir is not None else None
        if part is not None and part.is_file():
            rows += json.loads(part.read_text())
            continue
        first = len(rows)
        img = nib.load(sources / f"{head}.nii.gz")
        brain = deepbet_brain_mask(img)
        for case in make_cases(img, brain, load_landmarks(head), list(DEEPDEFACER_CASES)):
            original, ctx = _case_context(model, case)
            keep = None if part_dir is None else part_dir / "deepdefacer" / f"{head}_{len(rows) - first}.nii.gz"
            rows.append(_row(head, case, "deepdefacer", "zero", ctx, _deepdefacer(case, python, keep),
                             case_head(case), model))
        if part is not None:
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_text(_dumps(rows[first:]))
    return rows


def _row(head: str, case, name: str, fill: str, original: OriginalContext, defaced: np.ndarray,  # type: ignore[no-untyped-def]
         tissue: np.ndarray, model) -> dict:  # type: ignore[no-untyped-def]
    """One outcome's row. The audit evidence (defaced image alone) is the paired evidence
    without its ``orig_*`` part: :func:`gather_evidence` measures that part last, from the
    rest, so one call gives both."""
    zooms = np.sqrt((case.image.affine[:3, :3] ** 2).sum(0))
    removed = original.data != defaced
    verdict, measured = true_verdict(case, removed, tissue)
    paired = gather_evidence(model, defaced, zooms, original=original)
    audit = {k: (math.nan if k.startswith("orig_") else v) for k, v in paired.features.items()}
    row = {"head": head, "case": case.name, "outcome": name, "fill": fill, "verdict": verdict,
           "measured": measured, "removed_ml": float(removed.sum()) * float(np.prod(zooms)) / 1000.0,
           "kind": paired.kind, "audit": audit, "paired": paired.features,
           "seconds": paired.seconds}
    logger.info("%-10s %-26s %-36s %-8s -> %s (%.1f s)", head, case.name, name, fill, verdict, paired.seconds)
    return row


def build_rows(sources: Path, heads=HEADS, cases=QC_CASES, threads: int = 2,  # type: ignore[no-untyped-def]
               part_dir: Path | None = None, not_heads: bool = True) -> list[dict]:
    """The rows of every head (and of the non-head images). With ``part_dir``, each head's
    rows are saved there as they are made (``<head>.json``) and read back on a rerun."""
    from ..brainmask import deepbet_brain_mask
    from ..data import default_model_dir
    from ..evaluation.cases import load_landmarks, make_cases, not_head_cases
    from ..masking import FaceModel

    model = FaceModel(default_model_dir(), device="cpu", threads=threads)
    rows: list[dict] = []
    for head in heads:
        part = part_dir / f"{head}.json" if part_dir is not None else None
        if part is not None and part.is_file():
            rows += json.loads(part.read_text())
            logger.info("%s: %s read back", head, part)
            continue
        first = len(rows)
        h = HEADS.index(head) if head in HEADS else len(HEADS)
        img = nib.load(sources / f"{head}.nii.gz")
        brain = deepbet_brain_mask(img)
        for c, case in enumerate(make_cases(img, brain, load_landmarks(head), list(cases))):
            original, ctx = _case_context(model, case)
            tissue = case_head(case)
            seed = 1000 * h + 37 * c
            pred = model.predict(case.image)
            own = apply_removal(original, Removal("bids-deface", pred.face), 0)
            rows.append(_row(head, case, "bids-deface", "zero", ctx, own, tissue, model))
            for k, removal in enumerate(synthetic_removals(case, tissue, seed, own=pred.face)):
                defaced = apply_removal(original, removal, seed + k)
                rows.append(_row(head, case, removal.name, removal.fill, ctx, defaced, tissue, model))
            sheared = _quickshear(case)
            if sheared is not None and case.expect != "nothing":
                rows.append(_row(head, case, "quickshear", "zero", ctx, sheared, tissue, model))
        if part is not None:
            part.parent.mkdir(parents=True, exist_ok=True)
            part.write_text(_dumps(rows[first:]))
    for case in (not_head_cases() if not_heads else []):
        data = case.image.get_fdata(dtype=np.float32)
        zooms = np.sqrt((case.image.affine[:3, :3] ** 2).sum(0))
        ev = gather_evidence(model, data, zooms)
        rows.append({"head": "-", "case": case.name, "outcome": "untouched", "fill": "-", "verdict": "review",
                     "measured": {}, "removed_ml": 0.0, "kind": ev.kind, "audit": ev.features,
                     "paired": ev.features, "seconds": ev.seconds})
    return rows


def _dumps(rows: list[dict]) -> str:
    """JSON of ``rows`` with NaN as null."""
    clean = json.loads(json.dumps(rows, default=float).replace("NaN", "null"))
    return json.dumps(clean, indent=0, allow_nan=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--heads", nargs="+", default=list(HEADS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part-dir", type=Path, default=Path("cache/qc_outcomes"),
                        help="each head's rows are kept here as they are made; a rerun reads them back")
    parser.add_argument("--no-not-heads", action="store_true", help="leave out the non-head images")
    parser.add_argument("--deepdefacer", metavar="PYTHON",
                        help="also the outputs of deepdefacer, run by this Python (an environment with "
                             "deepdefacer 2.1.2, see benchmarks/peers/deepdefacer_run.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    rows = build_rows(args.sources, args.heads, threads=args.threads, part_dir=args.part_dir,
                      not_heads=not args.no_not_heads)
    if args.deepdefacer:
        rows += deepdefacer_rows(args.sources, args.deepdefacer, args.heads, args.threads, args.part_dir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(_dumps(rows))
    logger.info("%d outcomes in %.0f s", len(rows), time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
