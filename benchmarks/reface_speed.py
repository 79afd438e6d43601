"""CPU time of refacing per image (the face mask already predicted), on 2 threads.

For each real head (its own image, about 1 mm; and pycortex S1 at 2 mm), the shipped
model's face mask and brain are predicted once, then ``bids_deface.reface.reface_image``
runs ``--repeat`` times; the table gives the median wall time and its stages, and the
prediction's own time beside it. The face template is loaded before the clock starts (once
per process in the app).

Usage::

    python benchmarks/reface_speed.py --sources cache/sources --out benchmarks/reface_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HEADS = ("pycortex_s1", "ds000031", "sag_child3")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", type=Path, default=Path("cache/sources"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/reface_speed.md"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    from bids_deface.evaluation.cases import block_means
    from bids_deface.face_template import load_face_template
    from bids_deface.pipeline import load_face_model
    from bids_deface.reface import reface_image

    model = load_face_model(None, device="cpu", threads=args.threads)
    template = load_face_template()
    images = [(h, nib.load(args.sources / f"{h}.nii.gz")) for h in HEADS]
    images.append(("pycortex_s1 at 2 mm", block_means(nib.load(args.sources / "pycortex_s1.nii.gz"))))
    rows = []
    for name, img in images:
        t0 = time.perf_counter()
        pred = model.predict(img)
        predict_s = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeat):
            result = reface_image(img, pred.face, pred.brain, template, threads=args.threads)
            runs.append(result)
        seconds = [r.seconds for r in runs]
        best = runs[int(np.argsort(seconds)[len(seconds) // 2])]
        rows.append({"image": name, "shape": "×".join(map(str, img.shape[:3])),
                     "voxel_mm": "×".join(f"{z:.2f}" for z in img.header.get_zooms()[:3]),
                     "face_voxels": int(pred.face.sum()), "predict_s": round(predict_s, 2),
                     "reface_s": round(float(np.median(seconds)), 2), "max_s": round(max(seconds), 2),
                     "stages": {k: round(v, 2) for k, v in best.timings.items()}})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    lines = [
        "# Refacing: CPU time per image",
        "",
        f"`python benchmarks/reface_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"),
        f"on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
        f"face template {template.name} ({template.source}); median of {args.repeat} runs. The face mask "
        "(the model's prediction, timed once) comes before refacing and is not part of its time.",
        "",
        "| image | voxels | voxel (mm) | face voxels | refacing (s) | slowest run (s) | stages (s) | mask prediction (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        lines.append(f"| {r['image']} | {r['shape']} | {r['voxel_mm']} | {r['face_voxels']} | **{r['reface_s']:.2f}** "
                     f"| {r['max_s']:.2f} | {stages} | {r['predict_s']:.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
