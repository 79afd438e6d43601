"""PNG previews of label maps: three planes with labels, and surface views of the face label."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = ["label_preview", "surface_view"]

_COLOURS = {1: (255, 60, 40), 2: (40, 140, 255)}


def _to_uint8(data: np.ndarray) -> np.ndarray:
    hi = np.percentile(data, 99.5) or 1.0
    return (np.clip(data / hi, 0, 1) * 255).astype(np.uint8)


def _overlay(gray: np.ndarray, lab: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, -1).astype(float)
    for value, colour in _COLOURS.items():
        m = lab == value
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array(colour)
    return rgb.astype(np.uint8)


def surface_view(head: np.ndarray, face: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """Shaded depth render of ``head`` looking along ``axis``; face voxels hit first are red."""
    vol = np.moveaxis(head, axis, 0)
    lab = np.moveaxis(face, axis, 0)
    if reverse:
        vol, lab = vol[::-1], lab[::-1]
    hit = vol.any(0)
    depth = np.where(hit, vol.argmax(0), vol.shape[0]).astype(float)
    gy, gx = np.gradient(depth)
    shade = np.where(hit, 1.0 / np.sqrt(1 + gx**2 + gy**2), 0.0)
    shade = 0.25 + 0.75 * shade
    first = np.take_along_axis(lab, np.minimum(depth, vol.shape[0] - 1).astype(int)[None], 0)[0]
    rgb = np.stack([shade] * 3, -1) * 220
    rgb[hit & first] = rgb[hit & first] * 0.4 + np.array([255, 40, 30]) * 0.6
    rgb[~hit] = 0
    return rgb.astype(np.uint8)


def label_preview(img: nib.Nifti1Image, labels, out: Path) -> None:  # type: ignore[no-untyped-def]
    """Write a PNG: sagittal/coronal/axial planes with labels, and front/left/right surface views."""
    ras = nib.as_closest_canonical(img).get_fdata(dtype=np.float32)
    gray = _to_uint8(ras)
    t = labels.target
    face_idx = np.argwhere(t == 1)
    c = face_idx.mean(0).astype(int) if len(face_idx) else np.array(t.shape) // 2
    mid = np.array(t.shape) // 2
    planes = [
        _overlay(gray[mid[0]], t[mid[0]]),          # sagittal (y, z)
        _overlay(gray[:, c[1]], t[:, c[1]]),         # coronal (x, z)
        _overlay(gray[:, :, c[2]], t[:, :, c[2]]),   # axial (x, y)
    ]
    face = t == 1
    views = [
        surface_view(labels.head, face, 1, True),   # from the front (looking -y)
        surface_view(labels.head, face, 0, False),  # from the left (looking +x)
        surface_view(labels.head, face, 0, True),   # from the right (looking -x)
    ]
    tiles = [Image.fromarray(np.rot90(p)).resize((256, 256)) for p in planes + views]
    sheet = Image.new("RGB", (256 * 3, 512))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 3) * 256, (i // 3) * 256))
    sheet.save(out)
