"""Every case of a training head forced into its upright frame (tilt limit 0), its face
guarded once more on the image's grid from the upright pass's brain alone (shipped) or
from that and the first pass's brain (the rule first scored on fold A).

    python docs/experiments/scripts/tilt_guard_brain.py [--head ds000031] [--only CASE ...]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


import bids_deface.masking as masking
import bids_deface.pose as pose
from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import evaluate
from bids_deface.masking import FaceModel

COLUMNS = ("eyeball_right", "eyeball_left", "ear_right", "ear_left", "brain_removed", "pass")


class _Union(FaceModel):
    """The face model whose upright path guards from both passes' brains."""

    def _predict_upright(self, ras, zooms, ornt, pose_, guard_brain, kind, clock, **options):  # type: ignore[no-untyped-def]
        first = guard_brain
        original = masking.UprightFrame.back

        def back(frame, mask, splits=None):  # type: ignore[no-untyped-def]
            out = original(frame, mask, splits)
            return out | first if splits is not None and out.shape == first.shape else out

        masking.UprightFrame.back = back  # type: ignore[method-assign]
        try:
            return super()._predict_upright(ras, zooms, ornt, pose_, guard_brain, kind, clock, **options)
        finally:
            masking.UprightFrame.back = original  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head", default="ds000031")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pose.TILT_LIMIT_DEG = 0.0
    print("| case | guard brain | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for name, cls in (("upright pass", FaceModel), ("both passes", _Union)):
        model = cls(default_model_dir(), device="cpu", threads=2)
        for r in evaluate(Path("cache/sources") / f"{args.head}.nii.gz", args.head, None, args.only, extra=True,
                          model=model):
            cells = [r.get(c) for c in COLUMNS]
            print(f"| {r['case']} | {name} | " + " | ".join(
                ("–" if c != c else f"{c:.3f}") if isinstance(c, float) else str(c) for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
