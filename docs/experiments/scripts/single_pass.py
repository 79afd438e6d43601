"""Would one network pass over the whole head do instead of the sliding window?

The shipped model sees a 1 mm adult head as 59×85×85 voxels at 3 mm: four overlapping
64³ patches, and the QC verdict runs the network a second time on the defaced image.
This compares, on the heads the shipped model was trained on (no held-out head is used
for this decision), the masks of :meth:`bids_deface.engine.Network.sliding_window` with

- **whole head**: one pass over the whole image on the model grid, padded to a multiple
  of 16 voxels (the network is fully convolutional), and
- **head box**: the sliding window over the head's bounding box only (plus 4 voxels),
  background elsewhere,

and times the network stage of each (two threads, median of three runs after a warm-up).

Usage::

    python docs/experiments/scripts/single_pass.py --sources cache/sources --out docs/experiments/speed-single-pass.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

HEADS = ("ds000031", "colin27", "pydeface_template", "volpack", "slicer_mrhead")


def whole_head(self, image: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    shape = [max(((n + 15) // 16) * 16, p) for n, p in zip(image.shape, self.patch)]
    pad = [s - n for s, n in zip(shape, image.shape)]
    before = [p // 2 for p in pad]
    padded = np.pad(image, [(b, p - b) for b, p in zip(before, pad)]).astype(np.float32)
    out = self._forward(np.ascontiguousarray(padded))
    return out[(slice(None), *(slice(b, b + n) for b, n in zip(before, image.shape)))]


def head_box(self, image: np.ndarray, margin: int = 4) -> np.ndarray:  # type: ignore[no-untyped-def]
    lo, hi = image.min(), np.percentile(image, 99)
    lab, n = ndimage.label(image > lo + 0.1 * (hi - lo))
    head = lab == 1 + int(np.argmax(ndimage.sum(lab > 0, lab, range(1, n + 1)))) if n else lab >= 0
    idx = np.argwhere(head)
    a, b = np.maximum(idx.min(0) - margin, 0), np.minimum(idx.max(0) + 1 + margin, image.shape)
    out = np.zeros((self.classes, *image.shape), np.float32)
    out[0] = 10.0
    out[(slice(None), *(slice(x, y) for x, y in zip(a, b)))] = self._window(
        np.ascontiguousarray(image[tuple(slice(x, y) for x, y in zip(a, b))]))
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from bids_deface.data import default_model_dir
    from bids_deface.masking import FaceModel

    model = FaceModel(default_model_dir(), device="cpu", threads=2)
    net = model._network
    net._window = net.sliding_window
    schemes = {"sliding window": net._window, "whole head": types.MethodType(whole_head, net),
               "head box": types.MethodType(head_box, net)}
    rows = []
    for head in HEADS:
        img = nib.load(args.sources / f"{head}.nii.gz")
        preds, secs = {}, {}
        for name, fn in schemes.items():
            net.sliding_window = fn
            runs = [model.predict(img) for _ in range(args.repeats + 1)][1:]
            preds[name] = runs[-1]
            secs[name] = statistics.median(r.timings["network"] for r in runs)
        ref = preds["sliding window"]
        row = [head, "×".join(map(str, img.shape)), f"{secs['sliding window']:.2f}"]
        for name in ("whole head", "head box"):
            p = preds[name]
            row += [f"{secs[name]:.2f}", f"{dice(np.asarray(ref.face, bool), np.asarray(p.face, bool)):.3f}",
                    f"{dice(np.asarray(ref.brain, bool), np.asarray(p.brain, bool)):.3f}"]
        rows.append(row)
        print(" | ".join(row), file=sys.stderr, flush=True)
    net.sliding_window = net._window
    lines = [
        "# One network pass over the whole head, or the sliding window over the head's box",
        "",
        "Made by `python docs/experiments/scripts/single_pass.py --sources cache/sources --out "
        "docs/experiments/speed-single-pass.md` (two CPU threads, network stage only, median of "
        f"{args.repeats} runs; training heads of the shipped model, no held-out head). Dice is "
        "against the shipped sliding window's masks (face mask after the guard, and the guard's brain).",
        "",
        "| head | grid | sliding window (s) | whole head (s) | face Dice | brain Dice | head box (s) | face Dice | brain Dice |",
        "|---|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
