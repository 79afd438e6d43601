"""Why the brain guard counts between slabs on thick slices: brain removed when it counts
between voxel centres instead.

Usage::

    python benchmarks/thick_guard.py [--threads 2] [--model-dir DIR] [--markdown benchmarks/thick_guard.md]

On a thick-slice grid ``bids_deface.deface.guard_distance_mm`` counts an offset along
the slices' axis between the slabs: a slab next to a slab of predicted brain is as near to
it as a neighbouring voxel of the finest side. The alternative counts between voxel
centres, as on a thin grid. Both are run here with the shipped guards on thick-slice images
(block means along the voxel axis nearest to superior): the four training heads in 5 mm
slabs at adult size and scaled to newborn size (0.6, about 3 mm slabs), and the 2 mm copy of
the held-out head that the tests use in 6 and 8 mm slabs. Brain is deepbet's mask of the
image before slicing, a slab being brain when any of its slices is. ``missed_brain`` counts
the voxels of that brain which the predicted brain leaves out, anywhere in the head. The
predicted brain under-segments slabs that hold only a little brain, and a guard counted
between centres then lets the mask into them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def slab_images(sources: dict[str, Path]):  # type: ignore[no-untyped-def]
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.evaluation.cases import axial_slabs, block_means
    from small_heads import HEADS, SLAB_MM, scaled

    s1 = block_means(nib.load(sources["pycortex_s1"]))  # as in the tests
    brain = deepbet_brain_mask(s1)
    for mm in (6.0, 8.0):
        yield "pycortex_s1 2 mm (held out)", 1.0, *axial_slabs(s1, brain, mm)
    for name in HEADS:
        img = nib.load(sources[name])
        brain = deepbet_brain_mask(img)
        thick, brain_s = axial_slabs(img, brain, SLAB_MM)
        for s in (1.0, 0.6):
            yield name, s, scaled(thick, s), brain_s


def main(argv: list[str] | None = None) -> int:
    from bids_deface import deface
    from bids_deface.anatomy import distance_mm
    from bids_deface.data import default_model_dir
    from bids_deface.masking import FaceModel
    from bids_deface.training.fetch import fetch_all
    from small_heads import FETCHERS, markdown_table, parse_args, write_page

    args = parse_args(__doc__, argv)

    sources = fetch_all(REPO / "cache" / "sources", only=[*FETCHERS, "pycortex"])
    model = FaceModel(args.model_dir or default_model_dir(), device="cpu", threads=args.threads)
    between_slabs = deface.guard_distance_mm
    rules = {"slabs": between_slabs,
             "centres": lambda brain, zooms, limit_mm=np.inf: distance_mm(brain, zooms)}
    rows = []
    try:
        for name, s, img, brain in slab_images(sources):
            zooms = img.header.get_zooms()[:3]
            d_true = distance_mm(brain, zooms)
            row = {"head": name, "size": s, "slab_mm": f"{max(zooms):.1f}"}
            for rule, fn in rules.items():
                deface.guard_distance_mm = fn  # the guard's distance, counted by this rule
                pred = model.predict(img)
                row[f"{rule}_brain_removed"] = int((pred.face & brain).sum())
                row[f"{rule}_gap_mm"] = f"{d_true[pred.face].min():.1f}" if pred.face.any() else "n/a"
                row[f"{rule}_ml_removed"] = f"{pred.face.sum() * np.prod(zooms) / 1000:.1f}"
            row["missed_brain"] = int((brain & ~pred.brain).sum())
            rows.append(row)
            print(row, flush=True)
    finally:
        deface.guard_distance_mm = between_slabs
    text = ("# Thick slices: the brain guard counted between slabs or between centres\n\n"
            + __doc__.split("\n\n", 3)[3].strip().replace("``", "`") + "\n\n" + "\n".join(markdown_table(rows))
            + "\n\nRegenerate with:\n\n```\npython benchmarks/thick_guard.py --markdown "
            "benchmarks/thick_guard.md\n```\n")
    write_page(text, args.markdown)
    return 0 if all(r["slabs_brain_removed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
