"""Facial landmarks of a real head placed by a fixed rule, with previews to check them by eye.

The evaluation scores each feature by the share of head tissue removed in a sphere around
its landmark (``metrics.feature_coverage``). Landmarks are placed from the image and an
independent brain mask alone, never from a model's output:

- **eyes**: the front of each eyeball (``bids_deface.eyes.find_globes``: the globe's centre
  moved forward by its radius);
- **nose**: the most anterior tissue within 3 mm of the mid-sagittal plane (midway
  between the globes) below the globes' centres — the tip of the nose;
- **mouth**: the most anterior tissue within 3 mm of that plane, within 5 mm (scaled with
  the head) of the level 30 mm (scaled) below the nose tip — the front of the lips;
- **ears**: the median of each pinna (``bids_deface.anatomy.pinnae`` without its margin:
  what stands out of the head beside the temporal lobes, filled to its hull).

The head's scale is that of the ear zone (``anatomy._EarReference.scale``: the brain's
half-width over 70 mm). A feature the rule cannot place (no globe found, a pinna that does
not stand out of the head, a face below the field of view) has no landmark, and the
evaluation then treats it as out of view: the previews show which. Every landmark is
checked by eye on its three planes before it is used (``--preview``).

    python -m bids_deface.evaluation.landmark_rule colin27 slicer_mrhead --preview /tmp/landmarks
    python -m bids_deface.evaluation.landmark_rule --stored --preview docs/figures/landmarks HEAD ...
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw

from ..anatomy import _EarReference, head_mask, pinnae
from ..eyes import find_globes
from .metrics import COVERAGE_RADIUS_MM

__all__ = ["place_landmarks", "landmark_preview", "MIDLINE_MM", "MOUTH_BELOW_NOSE_MM"]

logger = logging.getLogger(__name__)

#: Half-width of the mid-sagittal band searched for the nose and the lips (mm).
MIDLINE_MM = 3.0
#: How far below the nose tip the lips are looked for (mm, adult size), and within how much of that level.
MOUTH_BELOW_NOSE_MM = 30.0
MOUTH_WITHIN_MM = 5.0


def _ras(img: nib.Nifti1Image, brain: np.ndarray) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray, np.ndarray]:
    ras = nib.as_closest_canonical(img)
    data = ras.get_fdata(dtype=np.float32)
    brain_ras = np.asanyarray(nib.as_closest_canonical(
        nib.Nifti1Image(np.asarray(brain, np.uint8), img.affine)).dataobj) > 0
    return ras, data, brain_ras, np.asarray(ras.header.get_zooms()[:3], float)


def place_landmarks(img: nib.Nifti1Image, brain: np.ndarray) -> dict[str, list[float]]:
    """Landmarks (world RAS mm, one decimal) of the head in ``img`` whose brain (on
    ``img``'s grid) is ``brain``, by the module's rule."""
    ras, data, brain_ras, zooms = _ras(img, brain)
    head = head_mask(data, zooms) | brain_ras

    def world(mm: Sequence[float]) -> list[float]:
        return [round(float(v), 1) for v in (ras.affine @ np.r_[np.asarray(mm, float) / zooms, 1.0])[:3]]

    out: dict[str, list[float]] = {}
    ref = _EarReference.of(brain_ras, zooms)
    scale = ref.scale
    globes = find_globes(data, brain_ras, zooms, head)
    for g in globes:
        out[f"eye_{g.side}"] = world(np.asarray(g.centre_mm) + [0.0, g.radius_mm, 0.0])
    if len(globes) == 2:
        x_mid = float(np.mean([g.centre_mm[0] for g in globes]))
        z_eyes = float(np.mean([g.centre_mm[2] for g in globes]))
        pts = np.argwhere(head) * zooms
        below = pts[(np.abs(pts[:, 0] - x_mid) <= MIDLINE_MM) & (pts[:, 2] < z_eyes)]
        # the most anterior tissue below the eyes; where it runs out of the image's bottom
        # (the field of view ends in the nose) there is no tip to place
        if len(below):
            y_tip = below[:, 1].max()
            tip = below[below[:, 1] >= y_tip - 0.5 * zooms[1]]
            z_tip = float(np.median(tip[:, 2]))
            if z_tip > pts[:, 2].min() + 2 * zooms[2]:
                out["nose"] = world([x_mid, y_tip, z_tip])
                z_lips = z_tip - MOUTH_BELOW_NOSE_MM * scale
                lips = below[np.abs(below[:, 2] - z_lips) <= MOUTH_WITHIN_MM * scale]
                if len(lips) and z_lips - MOUTH_WITHIN_MM * scale > pts[:, 2].min():
                    front = lips[lips[:, 1] >= lips[:, 1].max() - 0.5 * zooms[1]]
                    out["mouth"] = world([x_mid, lips[:, 1].max(), float(np.median(front[:, 2]))])
    ears = np.argwhere(pinnae(head, brain_ras, zooms, margin_mm=0.0)) * zooms
    for side, sel in (("right", ears[:, 0] < ref.x_mid), ("left", ears[:, 0] >= ref.x_mid)):
        if sel.any():
            out[f"ear_{side}"] = world(np.median(ears[sel], 0))
    return out


def landmark_preview(img: nib.Nifti1Image, landmarks: dict[str, list[float]], out: Path,
                     scale: float = 1.0, tile: int = 160) -> None:
    """A PNG with one row per landmark: its sagittal, coronal and axial planes, 60 mm
    (scaled) around it, the landmark's sphere drawn in."""
    ras = nib.as_closest_canonical(img)
    data = ras.get_fdata(dtype=np.float32)
    zooms = np.asarray(ras.header.get_zooms()[:3], float)
    hi = float(np.percentile(data, 99.5)) or 1.0
    inv = np.linalg.inv(ras.affine)
    half = 30.0 * scale
    radius = COVERAGE_RADIUS_MM * scale
    rows = []
    for name, p in landmarks.items():
        v = inv @ np.r_[p, 1.0]
        centre = v[:3]
        tiles = []
        for axis in (0, 1, 2):
            others = [a for a in range(3) if a != axis]
            k = int(np.clip(round(centre[axis]), 0, data.shape[axis] - 1))
            plane = np.take(data, k, axis=axis)
            # a fixed window of ``half`` mm around the landmark, 0.5 mm pixels
            grid = [np.arange(-half, half, 0.5) / zooms[a] + centre[a] for a in others]
            ii, jj = (np.round(g).astype(int) for g in grid)
            inside = ((ii >= 0) & (ii < plane.shape[0]))[:, None] & ((jj >= 0) & (jj < plane.shape[1]))[None]
            win = np.where(inside, plane[np.ix_(np.clip(ii, 0, plane.shape[0] - 1),
                                                np.clip(jj, 0, plane.shape[1] - 1))], 0.0)
            gray = (np.clip(win / hi, 0, 1) * 255).astype(np.uint8)
            im = Image.fromarray(np.rot90(gray)).convert("RGB").resize((tile, tile))
            draw = ImageDraw.Draw(im)
            c = tile / 2.0
            r = radius / (2 * half) * tile
            draw.ellipse([c - r, c - r, c + r, c + r], outline=(255, 60, 40), width=2)
            draw.text((4, 4), f"{name} {'xyz'[axis]}={p[axis]:.0f}", fill=(255, 255, 0))
            tiles.append(im)
        rows.append(tiles)
    sheet = Image.new("RGB", (tile * 3, tile * max(1, len(rows))))
    for r, tiles in enumerate(rows):
        for c, im in enumerate(tiles):
            sheet.paste(im, (c * tile, r * tile))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("heads", nargs="+", help="head names in --sources (e.g. colin27)")
    p.add_argument("--sources", type=Path, default=Path("cache/sources"))
    p.add_argument("--preview", type=Path, help="folder for <head>_landmarks.png")
    p.add_argument("--stored", action="store_true",
                   help="preview the landmarks stored for the evaluation (landmarks.json) instead of placing them")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from ..brainmask import deepbet_brain_mask
    from .cases import load_landmarks

    found = {}
    for head in args.heads:
        img = nib.load(args.sources / f"{head}.nii.gz")
        brain = deepbet_brain_mask(img)
        found[head] = load_landmarks(head) if args.stored else place_landmarks(img, brain)
        logger.info("%s: %s", head, json.dumps(found[head]))
        if args.preview:
            _, _, brain_ras, zooms = _ras(img, brain)
            landmark_preview(img, found[head], args.preview / f"{head}_landmarks.png",
                             _EarReference.of(brain_ras, zooms).scale)
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
