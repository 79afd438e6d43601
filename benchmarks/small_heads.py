"""Brain safety of the shipped model on the training source heads shrunk to child and
newborn size and cut into thick slices.

Usage::

    python benchmarks/small_heads.py [--threads 2] [--model-dir DIR] [--markdown benchmarks/small_heads.md]

Each source head (ds000031, the pydeface template, Colin27, volpack) keeps its voxels and
gets a voxel size of 0.7× and 0.6× its own: a child-size and a newborn-size head (1.0, the
head as it is, for reference). The adult and the newborn size are also cut into thick axial
slabs (block means along the voxel axis nearest to superior, about 5 mm at adult size, so
about 3 mm at newborn size). The shipped model's final mask is compared with deepbet's
brain mask of the original head (same voxels; in slabs, a slab is brain when any of its
slices is): brain voxels removed, and the smallest distance from a removed voxel to that
brain (between voxel centres, as in ``docs/validation.md``). These heads made the training
data, so this is no test of accuracy (the held-out evaluation is ``docs/validation.md``);
it checks that the brain guard of small heads, shrunk with the model's voxel, and the
guard of thick slices, which reads the brain on sub-slices of the slabs
(``docs/mask.md``), keep off the brain of more than one head.

The guard works from the predicted brain, so the table also gives that brain's boundary
error where each part of the mask meets it: over the voxels of the unguarded part within
8 mm of deepbet's brain and outside it, ``short`` is the largest amount by which a voxel
lies farther from the predicted brain than from deepbet's (the guard's margin is that
much less than it says), ``over`` the largest amount by which it lies nearer (the guard
takes back voxels that were far enough). ``face`` is the network's face label, ``ears``
the ear zone. On slabs both distances are counted as the guard counts them, from every
sub-slice of a voxel's slab, to the brain the guard reads on sub-slices and to deepbet's
brain on the slices the slabs were made of.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEADS = ("ds000031", "pydeface_template", "colin27", "volpack")
FETCHERS = ("pydeface", "colin", "volpack")
# (size, thick axial slabs)
VARIANTS = ((1.0, False), (0.7, False), (0.6, False), (1.0, True), (0.6, True))
SLAB_MM = 5.0


def scaled(img: nib.Nifti1Image, s: float) -> nib.Nifti1Image:
    """The same voxels with ``s`` times the voxel size (about the world origin)."""
    if s == 1.0:
        return img
    affine = np.diag([s, s, s, 1.0]) @ img.affine
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), affine, img.header)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    return out


def slab_slices(brain: np.ndarray, slab_shape: tuple[int, ...], zooms: tuple[float, ...]) -> np.ndarray:
    """``brain`` (on the slices of :func:`bids_deface.evaluation.cases.axial_slabs`) on the
    sub-slices the guard splits the slabs of ``slab_shape`` (voxel size ``zooms``) into:
    the slices themselves, which must be as many per slab."""
    from bids_deface.deface import slab_splits

    splits = slab_splits(zooms)
    want = tuple(n * k for n, k in zip(slab_shape, splits))
    if any(b < w or b >= w + k for b, w, k in zip(brain.shape, want, splits)):
        raise ValueError(f"{brain.shape} slices do not make the guard's {splits} sub-slices of {slab_shape}")
    return brain[tuple(slice(0, w) for w in want)]


def sub_slice_distance_mm(brain: np.ndarray, zooms: tuple[float, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Distance in mm from every voxel of a grid of ``shape`` to ``brain``, given on that grid
    or on sub-slices of it (as the guard reads it): between sub-slice centres, the smallest
    of a voxel's sub-slices (``bids_deface.deface.guard_distance_mm`` without its allowance
    for sub-slices a few per cent longer than the finest side)."""
    from bids_deface.anatomy import distance_mm

    splits = [b // n for b, n in zip(brain.shape, shape)]
    fine = distance_mm(brain, [z / k for z, k in zip(zooms, splits)])
    return fine.reshape([v for n, k in zip(shape, splits) for v in (n, k)]).min(axis=(1, 3, 5))


def parse_args(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """The options of the benchmarks that run the model on heads: threads, model, output."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, help="model folder (default: the shipped one)")
    parser.add_argument("--markdown", type=Path)
    return parser.parse_args(argv)


def markdown_table(rows: list[dict]) -> list[str]:
    """``rows`` as the lines of a Markdown table, one column per key of the first row."""
    cols = list(rows[0])
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return table + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def write_page(text: str, path: Path | None) -> None:
    """The benchmark's page to ``path``, or to the terminal."""
    if path:
        path.write_text(text, encoding="utf-8")
    else:
        print(text)


def to_markdown(rows: list[dict]) -> str:
    """The benchmark's page: this module's description and the table of ``rows``."""
    table = markdown_table(rows)
    return ("# Small heads: brain safety on the training heads\n\n"
            + __doc__.split("\n\n", 2)[2].strip() + "\n\n"
            "`slab_mm` is the thickness of the thick rows' slabs; `size_estimate` is the head\n"
            "size judged from the predicted brain's volume\n"
            "(`bids_deface.masking.head_scale`; n/a when the image border cuts that brain).\n\n"
            + "\n".join(table) + "\n\nRegenerate with:\n\n```\npython benchmarks/small_heads.py"
            " --markdown benchmarks/small_heads.md\n```\n")


def main(argv: list[str] | None = None) -> int:
    from bids_deface.anatomy import distance_mm
    from bids_deface.brainmask import deepbet_brain_mask
    from bids_deface.data import default_model_dir
    from bids_deface.evaluation.cases import axial_slabs
    from bids_deface.masking import FaceModel, image_head_scale
    from bids_deface.training.fetch import fetch_all

    args = parse_args(__doc__, argv)

    sources = fetch_all(REPO / "cache" / "sources", only=list(FETCHERS))
    model = FaceModel(args.model_dir or default_model_dir(), device="cpu", threads=args.threads)
    rows = []
    for name in HEADS:
        img = nib.load(sources[name])
        brain = deepbet_brain_mask(img)
        for s, thick in VARIANTS:
            small, brain_s = axial_slabs(img, brain, SLAB_MM) if thick else (img, brain)
            small = scaled(small, s)
            zooms = small.header.get_zooms()[:3]
            pred = model.predict(small)
            face = pred.face
            d_true = distance_mm(brain_s, zooms)
            gap = float(d_true[face].min()) if face.any() else float("nan")
            size = image_head_scale(small, pred.brain)
            # the unguarded parts, and the predicted brain's error where they meet it,
            # counted as the guard counts (on slabs: from sub-slices to sub-slices)
            raw = model.predict(small, guard_mm=0.0, ears=False)
            d_pred = sub_slice_distance_mm(raw.guard_brain, zooms, face.shape)
            if thick:
                d_true = sub_slice_distance_mm(slab_slices(brain, face.shape, zooms), zooms, face.shape)
            errors = {}
            for part, mask in (("face", raw.face), ("ears", model.ear_zone(small, raw.brain))):
                band = mask & (d_true <= 8.0) & ~brain_s
                diff = d_pred[band] - d_true[band]
                errors[part] = (f"{diff.max():.1f}", f"{-diff.min():.1f}") if band.any() else ("n/a", "n/a")
            rows.append({
                "head": name, "size": s,
                "slab_mm": f"{max(zooms):.1f}" if thick else "",
                "size_estimate": "cut (n/a)" if size is None else f"{size:.2f}",
                "model_voxel_mm": f"{pred.spacing_mm[0]:.2f}",
                "ml_removed": f"{face.sum() * np.prod(zooms) / 1000:.1f}",
                "brain_removed": int((face & brain_s).sum()),
                "brain_gap_mm": f"{gap:.1f}",
                "face_short_mm": errors["face"][0], "face_over_mm": errors["face"][1],
                "ears_short_mm": errors["ears"][0], "ears_over_mm": errors["ears"][1],
            })
            print(rows[-1], flush=True)
    write_page(to_markdown(rows), args.markdown)
    return 0 if all(r["brain_removed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
