"""The brain guard drawn from the brain's logit margin, scored on the tuning heads.

Every evaluation case (``CASE_NAMES`` and ``INPUT_KIND_CASES``) of the tuning heads, masked
by the shipped model with the guard's brain at each ``--margins`` value
(``FaceModel(guard_margin=...)``: 0 is the brain label), and scored as the held-out
evaluation scores its cases (eyeballs, ears where landmarks exist, deepbet's brain).

    python docs/experiments/scripts/guard_margin.py --margins 0 1 2 --json benchmarks/brain-edge/guard-margin.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import evaluate_case, head_cases
from bids_deface.evaluation.cases import CASE_NAMES, INPUT_KIND_CASES
from bids_deface.masking import FaceModel

logger = logging.getLogger("guard_margin")


def table(rows: list[dict]) -> str:
    """One line per margin: cases passing, cases and voxels of brain removed, cases with an
    eyeball short of 0.99 and with an ear short of 0.95 (where landmarks exist)."""
    lines = ["| margin | cases passing | cases with brain removed (voxels) | cases with an eyeball < 0.99 | "
             "cases with an ear < 0.95 |", "|---|---|---|---|---|"]
    for m in sorted({r["margin"] for r in rows}):
        sel = [r for r in rows if r["margin"] == m]
        brain = [r["brain_removed"] for r in sel]

        def short(prefix: str, need: float) -> int:
            return sum(any(isinstance(v, float) and not np.isnan(v) and v < need
                           for k, v in r.items() if k.startswith(prefix)) for r in sel)

        lines.append(f"| {m:g} | {sum(bool(r['pass']) for r in sel)} of {len(sel)} | "
                     f"{sum(b > 0 for b in brain)} ({sum(brain)}) | {short('eyeball_', 0.99)} | "
                     f"{short('ear_', 0.95)} |")
    return "\n".join(lines)


def main() -> None:
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--margins", type=float, nargs="+", default=[0.0, 1.0, 2.0])

    settings_command(("ds000031", "slicer_mrhead", "colin27"), "margin", table,
                     lambda args: {m: FaceModel(default_model_dir(), device="cpu", threads=2, guard_margin=m)
                                   for m in args.margins}, add_arguments)


def settings_command(heads: tuple[str, ...], key: str, table, models_of, add_arguments=None) -> None:  # type: ignore[no-untyped-def]
    """The command line of an experiment scoring a few settings of the shipped model:
    ``--heads``, ``--json`` (the rows, saved as :func:`score` goes) and ``--table`` (the
    table of saved rows, scoring nothing), with the experiment's own arguments from
    ``add_arguments(parser)``; ``models_of(args)`` gives ``{setting: model}`` and
    ``table(rows)`` the Markdown table of the rows, whose setting is stored under ``key``."""
    p = argparse.ArgumentParser()
    p.add_argument("--heads", nargs="+", default=list(heads))
    if add_arguments is not None:
        add_arguments(p)
    p.add_argument("--json", type=Path)
    p.add_argument("--table", type=Path, help="print the table of rows saved by --json, scoring nothing")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    print(table(score(args.heads, models_of(args), key, args.json)))


def score(heads: list[str], models: dict, key: str, json_path: Path | None) -> list[dict]:  # type: ignore[type-arg]
    """Every evaluation case of ``heads`` masked by each of ``models`` (by a value stored
    under ``key`` in its rows) and scored as the held-out evaluation scores; the rows so
    far saved to ``json_path`` after each head."""
    rows = []
    for head in heads:
        for case in head_cases(Path(f"cache/sources/{head}.nii.gz"), head, CASE_NAMES + INPUT_KIND_CASES):
            for value, model in models.items():
                row = evaluate_case(model, case)
                rows.append({"head": head, key: value, **{k: v for k, v in row.items() if k != "timings"}})
                logger.info("%s | %s | %s %s: pass %s, brain %s", head, case.name, key, value, row["pass"],
                            row["brain_removed"])
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(rows, indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
