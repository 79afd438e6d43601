"""The image continued outward where its field of view cuts the head, scored on the tuning heads.

The network's face and brain stop short where the field of view cuts through them (a slab
from the orbits up, a face cut at the lenses). Every evaluation case (``CASE_NAMES`` and
``INPUT_KIND_CASES``) of the tuning heads, masked by the shipped model with the image as
it is and with each side that cuts through tissue continued outward by ``--pads`` mm
(``FaceModel(cut_pad_mm=...)``, :func:`bids_deface.engine.cut_sides`), scored as the
held-out evaluation scores its cases. Only the top and the bottom are continued: continuing
the front and the sides as well (a first run, ds000031 only, `benchmarks/cut-pad/every-side-ds000031.json`)
left the ears of its face-cut and ears-cut cases in the image.

    python docs/experiments/scripts/cut_pad.py --pads 0 24 --json benchmarks/cut-pad/tuning-heads.json
    python docs/experiments/scripts/cut_pad.py --table benchmarks/cut-pad/tuning-heads.json
"""

from __future__ import annotations

import argparse

from bids_deface.data import default_model_dir
from bids_deface.masking import FaceModel
from guard_margin import settings_command  # docs/experiments/scripts/, run from the repository root
from mirror_tta import TUNING, table


def main() -> None:
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--pads", type=float, nargs="+", default=[0.0, 24.0])

    settings_command(TUNING, "cut_pad_mm", lambda rows: table(rows, "cut_pad_mm", "padded (mm)"),
                     lambda args: {m: FaceModel(default_model_dir(), device="cpu", threads=2, cut_pad_mm=m)
                                   for m in args.pads}, add_arguments)


if __name__ == "__main__":
    main()
