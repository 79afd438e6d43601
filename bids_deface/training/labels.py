"""Label maps of the source heads: 0 keep / 1 face / 2 brain, plus tissue classes.

The ``face`` label follows ``docs/mask.md`` and is derived from two masks of the head itself:

* ``brain`` — an independent brain mask (deepbet);
* ``head`` — the head's tissue, thresholded and filled.

Working in the head's RAS frame (millimetres), with ``y_front`` the most anterior brain
point and ``z_orb`` the underside of the frontal lobe just behind it (the orbital roofs):

* **front of the face** — every voxel, tissue or air, in front of the coronal plane
  ``y_front - behind_mm`` and below ``z_orb + above_mm``: eyeballs and lids, nose, lips,
  cheeks and chin in front of the jaw, and the air in front of them;
* **eyeballs** — each globe found in the orbits (:mod:`bids_deface.eyes`) and taken whole
  with ``eye_wall_mm`` around it, wherever the coronal box above ends;
* **ears** — what a morphological opening of the head (ball of ``ear_open_mm``) removes
  beside the temporal lobes: the pinnae, which are thin plates standing out of the head,
  grown by ``ear_margin_mm`` into the surrounding air;
* minus everything within ``brain_margin_mm`` of the brain.

The tissue classes (k-means of the intensities, separately inside and outside the brain,
plus air) are used only to synthesise training images.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..anatomy import distance_mm, head_mask, orbit_level, pinnae
from ..eyes import find_globes, globe_masks

__all__ = ["FaceRule", "HeadLabels", "face_label", "tissue_classes", "make_labels", "main"]

logger = logging.getLogger(__name__)

N_BRAIN_CLASSES = 3
N_HEAD_CLASSES = 4


@dataclass(frozen=True)
class FaceRule:
    """Geometry of the face label, in millimetres."""

    behind_mm: float = 28.0
    above_mm: float = 4.0
    ear_open_mm: float = 7.0
    ear_margin_mm: float = 5.0
    brain_margin_mm: float = 3.0
    air_mm: float = 20.0
    ear_brain_mm: float = 12.0
    eye_wall_mm: float = 2.0


@dataclass
class HeadLabels:
    """Label maps of one head on its own RAS grid."""

    affine: np.ndarray
    target: np.ndarray  # uint8: 0 keep, 1 face, 2 brain
    tissue: np.ndarray  # uint8: 0 air, 1..N tissue classes
    head: np.ndarray  # bool
    globes: np.ndarray | None = None  # uint8: 0 none, 1 right eyeball, 2 left eyeball


def _world_coords(shape: tuple[int, ...], affine: np.ndarray, axis: int) -> np.ndarray:
    """World coordinate (RAS, mm) along ``axis`` for an axis-aligned RAS affine."""
    idx = np.arange(shape[axis])
    return affine[axis, axis] * idx + affine[axis, 3]


def face_label(head: np.ndarray, brain: np.ndarray, affine: np.ndarray,
               rule: FaceRule = FaceRule(), eyes: np.ndarray | None = None) -> np.ndarray:
    """Boolean face-and-ears label on a RAS grid (see module docstring); ``eyes`` (the
    eyeballs with their wall) are added whole."""
    zooms = np.abs(np.diag(affine)[:3])
    xs, ys, zs = (_world_coords(head.shape, affine, a) for a in range(3))
    bi = np.argwhere(brain)
    bx, by, bz = xs[bi[:, 0]], ys[bi[:, 1]], zs[bi[:, 2]]
    y_front, z_orb = orbit_level(np.c_[bx, by, bz])
    Y = ys[None, :, None]
    Z = zs[None, None, :]
    front = (Y > y_front - rule.behind_mm) & (Z < z_orb + rule.above_mm)
    # the air in front of the face, not the whole field of view
    front = np.broadcast_to(front, head.shape) & (distance_mm(head, zooms) <= rule.air_mm)

    ears = pinnae(head, brain, zooms, rule.ear_open_mm, rule.ear_margin_mm, rule.ear_brain_mm)

    protected = distance_mm(brain, zooms) <= rule.brain_margin_mm
    face = front | ears
    if eyes is not None:
        face = face | eyes
    return face & ~protected


def _kmeans_1d(values: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Sorted cluster centres of 1D values (Lloyd's algorithm on quantile starts)."""
    rng = np.random.default_rng(seed)
    sample = values if values.size < 200_000 else rng.choice(values, 200_000, replace=False)
    centres = np.quantile(sample, (np.arange(k) + 0.5) / k)
    for _ in range(50):
        assign = np.abs(sample[:, None] - centres[None]).argmin(1)
        new = np.array([sample[assign == i].mean() if (assign == i).any() else centres[i]
                        for i in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def tissue_classes(data: np.ndarray, head: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """0 air; 1..3 brain intensity clusters; 4..7 other head tissue clusters."""
    out = np.zeros(data.shape, np.uint8)
    for mask, offset, k in ((brain, 1, N_BRAIN_CLASSES), (head & ~brain, 1 + N_BRAIN_CLASSES, N_HEAD_CLASSES)):
        vals = data[mask]
        centres = _kmeans_1d(vals, k)
        edges = (centres[1:] + centres[:-1]) / 2
        out[mask] = (np.searchsorted(edges, vals) + offset).astype(np.uint8)
    return out


def make_labels(img: nib.Nifti1Image, brain: np.ndarray, rule: FaceRule = FaceRule()) -> HeadLabels:
    """Label maps of one head, on its closest-canonical (RAS) grid."""
    ras = nib.as_closest_canonical(img)
    brain_img = nib.as_closest_canonical(nib.Nifti1Image(brain.astype(np.uint8), img.affine))
    data = ras.get_fdata(dtype=np.float32)
    brain_ras = np.asanyarray(brain_img.dataobj) > 0
    # an axis-aligned RAS affine (rotations of a few degrees in the header are dropped)
    zooms = np.asarray(ras.header.get_zooms()[:3], float)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = ras.affine[:3, 3]
    head = head_mask(data, zooms) | brain_ras
    found = find_globes(data, brain_ras, zooms, head)
    globes = np.zeros(data.shape, np.uint8)
    for side, ball in globe_masks(data.shape, zooms, found, wall_mm=0.0).items():
        globes[ball & head] = 1 if side == "right" else 2
    eyes = np.zeros(data.shape, bool)
    for ball in globe_masks(data.shape, zooms, found, wall_mm=rule.eye_wall_mm).values():
        eyes |= ball
    face = face_label(head, brain_ras, affine, rule, eyes)
    target = np.zeros(data.shape, np.uint8)
    target[face] = 1
    target[brain_ras] = 2
    tissue = tissue_classes(data, head, brain_ras)
    return HeadLabels(affine=affine, target=target, tissue=tissue, head=head, globes=globes)


def save_labels(labels: HeadLabels, out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.target, labels.affine), out_dir / f"{name}_target.nii.gz")
    nib.save(nib.Nifti1Image(labels.tissue, labels.affine), out_dir / f"{name}_tissue.nii.gz")
    if labels.globes is not None:
        nib.save(nib.Nifti1Image(labels.globes, labels.affine), out_dir / f"{name}_globes.nii.gz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build label maps of the source heads.")
    parser.add_argument("--sources", type=Path, default=Path("cache/sources"))
    parser.add_argument("--out", type=Path, default=Path("cache/labels"))
    parser.add_argument("--heads", nargs="+", required=True)
    parser.add_argument("--previews", action="store_true", help="write PNG previews")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from ..brainmask import deepbet_brain_mask

    for name in args.heads:
        img = nib.load(args.sources / f"{name}.nii.gz")
        brain_path = args.out / f"{name}_brain.nii.gz"  # deepbet's mask, kept for reruns
        if brain_path.is_file():
            brain = np.asanyarray(nib.load(brain_path).dataobj) > 0
        else:
            brain = deepbet_brain_mask(img)
            args.out.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(brain.astype(np.uint8), img.affine), brain_path)
        labels = make_labels(img, brain)
        save_labels(labels, args.out, name)
        zooms = np.abs(np.diag(labels.affine)[:3])
        vml = float(np.prod(zooms)) / 1000
        eyes = labels.globes if labels.globes is not None else np.zeros(1)
        whole = [float(((labels.target == 1) & (eyes == v)).sum() / max((eyes == v).sum(), 1))
                 for v in (1, 2)]
        logger.info("%s: face %.0f mL, brain %.0f mL, eyeballs %.0f / %.0f voxels, in face %.3f / %.3f",
                    name, (labels.target == 1).sum() * vml, (labels.target == 2).sum() * vml,
                    (eyes == 1).sum(), (eyes == 2).sum(), *whole)
        if args.previews:
            from .preview import label_preview

            label_preview(img, labels, args.out / f"{name}_preview.png")
    (args.out / "rule.json").write_text(json.dumps(asdict(FaceRule()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
