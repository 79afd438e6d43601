"""Slabs whose brain runs out of the image's bottom, continued down, scored on the tuning heads.

Every evaluation case (``CASE_NAMES`` and ``INPUT_KIND_CASES``) of the tuning heads, masked
by the shipped model with ``FaceModel(slab_pad_mm=...)``: where the network's brain runs
out of the image's bottom (:func:`bids_deface.masking.brain_cut_below`) the network runs
once more on the image continued down; the other cases are masked as without it. The rows
without it (0) are those of the image as it is in ``benchmarks/cut-pad/tuning-heads.json``
(``--baseline``), made by the same pipeline.

    python docs/experiments/scripts/slab_pad.py --pads 24 --json benchmarks/cut-pad/slab-pad-tuning-heads.json
    python docs/experiments/scripts/slab_pad.py --baseline benchmarks/cut-pad/tuning-heads.json \\
        --table benchmarks/cut-pad/slab-pad-tuning-heads.json
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


def baseline_rows(path: Path) -> list[dict]:
    """The rows of the image as it is (``cut_pad_mm`` 0) of the cut-pad experiment, under ``slab_pad_mm``."""
    return [{**{k: v for k, v in r.items() if k != "cut_pad_mm"}, "slab_pad_mm": 0.0}
            for r in json.loads(path.read_text()) if r["cut_pad_mm"] == 0]


def main() -> None:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--baseline", type=Path)
    known, rest = p.parse_known_args()
    sys.argv[1:] = rest
    base = baseline_rows(known.baseline) if known.baseline else []

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pads", type=float, nargs="+", default=[24.0])

    settings_command(TUNING, "slab_pad_mm", lambda rows: table(base + rows, "slab_pad_mm", "padded (mm)"),
                     lambda args: {m: FaceModel(default_model_dir(), device="cpu", threads=2, slab_pad_mm=m)
                                   for m in args.pads}, add_arguments)


if __name__ == "__main__":
    main()
