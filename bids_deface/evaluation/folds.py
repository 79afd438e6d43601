"""Evaluation by held-out heads: each fold's model scores the real heads it never saw.

Usage::

    python -m bids_deface.evaluation.folds --fold A --markdown docs/validation/fold-A.md \\
        --json benchmarks/folds/fold-A.json

For every held-out head of the fold (``bids_deface.training.folds``): its own contrast and
the synthesised looks, 5 mm slabs and child sizes of ``CASE_NAMES``, and the input kinds of
``INPUT_KIND_CASES`` (skull-stripped, a slab from the orbits up, pitched and rolled by 30°,
5 mm slabs along the other axes, fields of view cut through the ears or the face, a face
already plane-cut, a stereotactic frame, a 0.43 mm in-plane grid in 3 mm slices, a head on
its side and a prone head under a supine header, a head off-centre in a wide field of
view); then images that are not heads (all zero, pure noise, a phantom). One table per fold.
Heads a fold scores on their own image alone (``Fold.own_image_only``: clinical images
already in thick slices, a second scan of a held-out head) have one row, ``own image (real)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path

from ..training.folds import FOLDS
from .__main__ import FEATURES, add_runtime_option, evaluate, evaluate_case, passes
from .cases import CASE_NAMES, not_head_cases
from .metrics import REQUIRED

__all__ = ["fold_model_dir", "evaluate_fold", "fold_markdown", "main"]

logger = logging.getLogger("bids_deface.evaluation")

#: The case name of a head scored on its own image alone (``Fold.own_image_only``).
OWN_IMAGE = "own image (real)"
_MODEL_SUBDIR = Path("model/Dataset801_FaceEars/nnUNetTrainer__nnUNetPlans__3d_fullres")


def fold_model_dir(fold: str, cache: Path = Path("cache")) -> Path:
    """Where ``python -m bids_deface.training.folds <fold>`` exports the fold's model."""
    return cache / f"fold{fold}" / _MODEL_SUBDIR


def evaluate_fold(fold: str, sources: Path, model_dir: Path, threads: int = 2,
                  runtime: str = "auto") -> list[dict]:
    """The rows of a fold's held-out cases, each recording the runtime its network ran in."""
    from ..masking import FaceModel

    model = FaceModel(model_dir, device="cpu", threads=threads, runtime=runtime)
    rows = []
    f = FOLDS[fold]
    for head in f.held_out:
        if head in f.own_image_only:
            for row in evaluate(sources / f"{head}.nii.gz", head, None, [CASE_NAMES[0]], threads, model=model):
                rows.append({"head": head, **row, "case": OWN_IMAGE})
            continue
        for row in evaluate(sources / f"{head}.nii.gz", head, None, None, threads, extra=True, model=model):
            rows.append({"head": head, **row})
    for case in not_head_cases():
        rows.append({"head": "-", **evaluate_case(model, case)})
    return [{**row, "runtime": model.runtime} for row in rows]


def _cell(v: object, col: str) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if col in REQUIRED or col.startswith("eyeball"):
            return f"{math.floor(v * 1000) / 1000:.3f}"
        return f"{v:.1f}" if col in ("ml_removed", "seconds") or col.endswith("_mm") else f"{v:.3f}"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or "–"
    return str(v)


def fold_markdown(fold: str, rows: list[dict], command: str, model_note: str | None = None) -> str:
    """The fold's table; ``model_note`` names another model than the fold's own."""
    cols = ["head", "case", *FEATURES[:2], "eyeball_right", "eyeball_left", *FEATURES[2:],
            "brain_removed", "brain_gap_mm", "brain_short_mm", "brain_over_mm", "ml_removed", "input_kind", "flags", "seconds", "pass"]
    f = FOLDS[fold]
    n_pass = sum(bool(r["pass"]) for r in rows)
    runtimes = sorted({str(r["runtime"]) for r in rows if r.get("runtime")})
    own = (f"Model trained on {', '.join(f.train)}"
           + (" (fine-tuned from the shipped weights, which never saw the held-out heads)" if f.from_shipped else ""))
    lines = [
        f"# Fold {fold}: scored on heads its model never saw" if model_note is None
        else f"# Fold {fold}'s held-out cases scored by another model",
        "",
        (own if model_note is None else model_note) + f"; scored here: **{', '.join(f.held_out)}**."
        + (f" Network runtime: {', '.join(runtimes)}." if runtimes else ""),
        "",
        f"**{n_pass} of {len(rows)} cases meet every threshold.** Thresholds: eyes, nose and mouth "
        "coverage ≥ 0.99 and each eyeball ≥ 0.99 of its voxels removed; each ear ≥ 0.95 where in "
        "view; no voxel of the independent brain mask (deepbet) removed; for skull-stripped and "
        "non-head images, nothing removed. `–`: not in the field of view (no head tissue in the "
        "feature's sphere in the case's image, or no landmark for it on its head).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, float("nan")), c) for c in cols) + " |")
    lines += ["", "Reproduce:", "", "```", command, "```", ""]
    return "\n".join(lines)


def summary_rows(rows: list[dict]) -> dict[str, object]:
    """Counts over one table's rows: cases, passing, with brain removed, and the failures
    by reason."""
    def fails_on(r: dict, feats: tuple[str, ...]) -> bool:
        return any(not math.isnan(v) and v < REQUIRED[f] for f in feats
                   if isinstance(v := r.get(f, float("nan")), float))

    face = [r for r in rows if r.get("expect") != "nothing"]
    return {
        "cases": len(rows),
        "pass": sum(bool(r["pass"]) for r in rows),
        "brain_removed_cases": sum(r["brain_removed"] > 0 for r in rows),
        "brain_removed_max": max((r["brain_removed"] for r in rows), default=0),
        "no_face_removed_anything": sum(r["ml_removed"] > 0 for r in rows if r.get("expect") == "nothing"),
        "eyes_nose_mouth_short": sum(fails_on(r, ("eye_right", "eye_left", "eyeball_right", "eyeball_left",
                                                   "nose", "mouth")) for r in face),
        "ears_short": sum(fails_on(r, ("ear_right", "ear_left")) for r in face),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score a fold's held-out heads with the fold's model.")
    parser.add_argument("--fold", required=True, choices=sorted(FOLDS))
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the fold's export under cache/")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    add_runtime_option(parser)
    parser.add_argument("--model-note", help="what the table's model is, when --model-dir is not the fold's")
    parser.add_argument("--from-json", type=Path, help="write the table from rows saved by --json (no image scored again; each row passed again by the thresholds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    model_dir = args.model_dir or fold_model_dir(args.fold)
    words = list(argv if argv is not None else sys.argv[1:])
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        for row in rows:  # scored again by the acceptance of today's evaluation
            row["pass"] = passes(row)
        i = words.index("--from-json")  # the command that made the rows, and saved them there
        if "--json" in words:
            del words[i:i + 2]
        else:
            words[i] = "--json"
    else:
        rows = evaluate_fold(args.fold, args.sources, model_dir, args.threads, args.runtime)
    command = "python -m bids_deface.evaluation.folds " + shlex.join(words)
    table = fold_markdown(args.fold, rows, command, args.model_note)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
