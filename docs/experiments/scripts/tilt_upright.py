"""Tilted heads masked in their upright frame, against the image's own axes, on the
training head ds000031 (all its evaluation cases, landmarks and eyeballs included).

    python docs/experiments/scripts/tilt_upright.py --json benchmarks/folds/tilt-ds000031.json
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bids_deface.data import default_model_dir
from bids_deface.evaluation.__main__ import evaluate
from bids_deface.masking import FaceModel

COLUMNS = ("eye_right", "eye_left", "nose", "mouth", "ear_right", "ear_left", "eyeball_right", "eyeball_left",
           "brain_removed", "seconds", "pass")


class _Frame:
    """The face model with the upright frame on or off."""

    def __init__(self, model: FaceModel, upright: bool) -> None:
        self.model, self.upright = model, upright

    def predict(self, img):  # type: ignore[no-untyped-def]
        pred = self.model.predict(img, upright=self.upright)
        self.last = pred
        return pred


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--head", default="ds000031")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    out = {}
    for upright in (False, True):
        frame = _Frame(model, upright)
        rows = evaluate(Path("cache/sources") / f"{args.head}.nii.gz", args.head, None, args.only, extra=True,
                        model=frame)
        out["upright" if upright else "image axes"] = rows
    for name, rows in out.items():
        print(f"## {name}")
        print("case | " + " | ".join(COLUMNS))
        for r in rows:
            cells = [r.get(c) for c in COLUMNS]
            print(r["case"] + " | " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
