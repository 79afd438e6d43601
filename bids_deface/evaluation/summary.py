"""Every real head scored by a model that never saw it: one row per head, from the fold tables.

Usage::

    python -m bids_deface.evaluation.summary --markdown docs/validation/summary.md \\
        A=benchmarks/folds/fold-A-shipped-model.json B=benchmarks/folds/fold-B.json C=benchmarks/folds/fold-C.json

Each argument names a fold and the rows its evaluation saved (``python -m
bids_deface.evaluation.folds --json``). Nothing is scored again: the rows are counted as the
fold tables count them (``pass`` by today's acceptance, :func:`bids_deface.evaluation.__main__.passes`).
Per head: cases, cases passing, cases with brain removed (and the most voxels), cases with an
eye, eyeball, nose or mouth short of 0.99, cases with an ear short of 0.95, and how far the
predicted brain's boundary lies from the independent one where the face meets it
(``brain_short_mm``: the guard's margin is that much thinner; ``brain_over_mm``: it takes back
that much more), median and largest over the head's cases.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .__main__ import passes
from .folds import summary_rows

__all__ = ["head_rows", "summary_markdown"]

def _spread(values: list[float]) -> str:
    vals = sorted(v for v in values if isinstance(v, float) and not math.isnan(v))
    if not vals:
        return "–"
    n = len(vals)
    median = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    return f"{median:.1f} ({vals[-1]:.1f})"


def head_rows(folds: dict[str, list[dict]]) -> list[dict]:
    """One summary per real head (rows of the non-head images, head ``-``, are left out):
    the fold tables' counts (:func:`bids_deface.evaluation.folds.summary_rows`, each row
    passed by today's acceptance) and the brain boundary's spread."""
    out = []
    for fold, rows in folds.items():
        for head in dict.fromkeys(r["head"] for r in rows if r["head"] != "-"):
            rs = [{**r, "pass": passes(r)} for r in rows if r["head"] == head]
            n = summary_rows(rs)
            faced = [r for r in rs if r.get("expect") != "nothing"]
            out.append({
                "fold": fold, "head": head, "cases": n["cases"], "pass": n["pass"],
                "brain_cases": n["brain_removed_cases"], "brain_most": n["brain_removed_max"],
                "face_short": n["eyes_nose_mouth_short"], "ear_short": n["ears_short"],
                "short_mm": _spread([r.get("brain_short_mm") for r in faced]),
                "over_mm": _spread([r.get("brain_over_mm") for r in faced]),
            })
    return out


def summary_markdown(folds: dict[str, list[dict]], sources: dict[str, str], command: str) -> str:
    """The page: one row per head, the totals, and where the rows come from."""
    rows = head_rows(folds)
    lines = [
        "# Every real head, scored by a model that never saw it",
        "",
        "One row per real image of a head, counted from its fold's table (nothing scored again; "
        "the images that are not heads are left out, and `brainbrowser_rescan` is a second scan "
        "of `brainbrowser`'s person). The "
        "thresholds are those of the fold tables ([validation](README.md)): eyes, nose and mouth "
        "≥ 0.99 and each eyeball ≥ 0.99; each ear ≥ 0.95 where in view; no voxel of deepbet's "
        "brain removed; skull-stripped images: nothing removed. `short` / `over`: how far the "
        "predicted brain's boundary lies inside / outside deepbet's where the face meets it, "
        "median (largest) over the head's cases, in mm.",
        "",
        "| fold | head | cases | passing | with brain removed (most voxels) | eye, eyeball, nose or mouth short | ear short | brain short, mm | brain over, mm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['fold']} | {r['head']} | {r['cases']} | {r['pass']} | {r['brain_cases']}"
                     f" ({r['brain_most']}) | {r['face_short']} | {r['ear_short']} | {r['short_mm']} | {r['over_mm']} |")
    total = {k: sum(r[k] for r in rows) for k in ("cases", "pass", "brain_cases", "face_short", "ear_short")}
    lines.append(f"| all | {len(rows)} real images | {total['cases']} | **{total['pass']}** | {total['brain_cases']} | "
                 f"{total['face_short']} | {total['ear_short']} | | |")
    lines += ["", "Rows from: " + "; ".join(f"fold {k}: `{v}`" for k, v in sources.items()) + ".", "",
              "```", command, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import shlex
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folds", nargs="+", help="FOLD=rows.json, e.g. B=benchmarks/folds/fold-B.json")
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    sources = dict(a.split("=", 1) for a in args.folds)
    folds = {k: json.loads(Path(v).read_text()) for k, v in sources.items()}
    words = sys.argv[1:] if argv is None else argv
    text = summary_markdown(folds, sources, "python -m bids_deface.evaluation.summary " + shlex.join(words))
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
