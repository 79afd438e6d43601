"""Slabs whose brain runs out of the image's bottom, continued down, scored on the tuning heads.

Every evaluation case (``CASE_NAMES`` and ``INPUT_KIND_CASES``) of the tuning heads, masked
by the shipped model with ``FaceModel(slab_pad_mm=24)``: where the network's brain runs
out of the image's bottom (:func:`bids_deface.masking.brain_cut_below`) the network runs
once more on the image continued down; the other cases are masked as without it. Settings
(``--settings``): ``24`` (the continued pass makes the mask and the guard's brain) and
``24+both`` (the guard keeps its distance from the brain of both passes,
``slab_guard_both``). The rows without it (``0``) are those of the image as it is in
``benchmarks/cut-pad/tuning-heads.json`` (``--baseline``), made by the same pipeline;
``--also`` adds rows saved by earlier runs to the table.

    python docs/experiments/scripts/slab_pad.py --settings 24 --json benchmarks/cut-pad/slab-pad-tuning-heads.json
    python docs/experiments/scripts/slab_pad.py --settings 24+both --json benchmarks/cut-pad/slab-pad-both-tuning-heads.json
    python docs/experiments/scripts/slab_pad.py --baseline benchmarks/cut-pad/tuning-heads.json \\
        --also benchmarks/cut-pad/slab-pad-tuning-heads.json --table benchmarks/cut-pad/slab-pad-both-tuning-heads.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bids_deface.data import default_model_dir
from bids_deface.masking import FaceModel
from guard_margin import settings_command  # docs/experiments/scripts/, run from the repository root
from mirror_tta import TUNING, table

SETTINGS = {"24": {"slab_pad_mm": 24.0}, "24+both": {"slab_pad_mm": 24.0, "slab_guard_both": True}}


def rows_of(path: Path) -> list[dict]:
    """Saved rows, their setting under ``slab_pad`` (rows of the cut-pad experiment: the
    image as it is, ``0``; rows saved with a number under ``slab_pad_mm``: that number)."""
    out = []
    for r in json.loads(path.read_text()):
        if "cut_pad_mm" in r:
            if r["cut_pad_mm"] != 0:
                continue
            setting = "0"
        elif "slab_pad_mm" in r:
            setting = f"{r['slab_pad_mm']:g}"
        else:
            setting = r["slab_pad"]
        out.append({**{k: v for k, v in r.items() if k not in ("cut_pad_mm", "slab_pad_mm")}, "slab_pad": setting})
    return out


def main() -> None:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--baseline", type=Path)
    p.add_argument("--also", type=Path, nargs="*", default=[])
    known, rest = p.parse_known_args()
    sys.argv[1:] = rest
    extra = [r for path in ([known.baseline] if known.baseline else []) + known.also for r in rows_of(path)]

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["24"])

    def shown(rows: list[dict]) -> str:
        return table(extra + [{**r, "slab_pad": r.get("slab_pad", f"{r.get('slab_pad_mm', 0):g}")} for r in rows],
                     "slab_pad", "padded (mm)")

    settings_command(TUNING, "slab_pad", shown,
                     lambda args: {s: FaceModel(default_model_dir(), device="cpu", threads=2, **SETTINGS[s])
                                   for s in args.settings}, add_arguments)


if __name__ == "__main__":
    main()
