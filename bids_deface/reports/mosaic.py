"""Slice mosaics of an image with its face mask drawn over it in translucent colour.

Slices are shown in neurological orientation: in axial and coronal slices the subject's
left is on the left of the picture; sagittal slices have the face on the left, like the
left-profile surface render.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .volume import RasVolume

__all__ = [
    "PLANES",
    "LABEL_COLOURS",
    "head_bbox",
    "window",
    "slice_positions",
    "plane_slice",
    "slice_mosaic",
]

logger = logging.getLogger(__name__)

#: Planes in the order the mosaic rows are shown.
PLANES: tuple[str, ...] = ("axial", "sagittal", "coronal")

#: Mask label -> (RGB colour, opacity) of the overlay. 1 = face (removed), 2 = brain.
LABEL_COLOURS: dict[int, tuple[tuple[int, int, int], float]] = {
    1: ((255, 72, 40), 0.45),
    2: ((64, 150, 255), 0.30),
}

_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
#: Letters drawn on the first tile of each row: (left edge, right edge).
_PLANE_LETTERS = {"axial": ("L", "R"), "coronal": ("L", "R"), "sagittal": ("A", "P")}


def head_bbox(
    head: np.ndarray, spacing: tuple[float, float, float], margin_mm: float = 6.0
) -> tuple[slice, slice, slice]:
    """Bounding box of the ``True`` voxels of ``head`` widened by ``margin_mm``.

    Returns the whole grid when ``head`` is empty.
    """
    if not head.any():
        return tuple(slice(0, n) for n in head.shape)  # type: ignore[return-value]
    box = []
    for axis, n in enumerate(head.shape):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(head.any(axis=other))
        pad = int(round(margin_mm / spacing[axis]))
        box.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + 1 + pad, n)))
    return tuple(box)  # type: ignore[return-value]


def window(data: np.ndarray, threshold: float) -> tuple[float, float]:
    """Display range: from the lowest intensity (or 0) to the 99.5th percentile of the head
    (read on every other voxel along each axis of a large image)."""
    sample = data[::2, ::2, ::2] if data.size > 8_000_000 else data
    values = sample[sample > threshold]
    if values.size > 1_000_000:
        values = values[:: values.size // 1_000_000]
    lo = min(float(data.min()), 0.0)
    hi = float(np.percentile(values, 99.5)) if values.size else float(data.max())
    return lo, (hi if hi > lo else lo + 1.0)


def slice_positions(n_slices: int, length: int, lo: float = 0.08, hi: float = 0.92) -> list[int]:
    """``n_slices`` evenly spaced indices between fractions ``lo`` and ``hi`` of ``length``.

    Examples
    --------
    >>> slice_positions(3, 101, 0.0, 1.0)
    [0, 50, 100]
    """
    pos = np.linspace(lo * (length - 1), hi * (length - 1), n_slices)
    return sorted({int(round(p)) for p in pos})


def plane_slice(
    data: np.ndarray, plane: str, index: int, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, tuple[float, float]]:
    """One slice of a RAS array, oriented for display, and its pixel size (rows, columns)."""
    sx, sy, sz = spacing
    if plane == "axial":  # anterior at the top, subject's left on the left
        return data[:, :, index].T[::-1, :], (sy, sx)
    if plane == "coronal":  # superior at the top, subject's left on the left
        return data[:, index, :].T[::-1, :], (sz, sx)
    if plane == "sagittal":  # superior at the top, anterior on the left
        return data[index, :, :].T[::-1, ::-1], (sz, sy)
    raise ValueError(f"unknown plane {plane!r}; expected one of {PLANES}")


def _tile(
    grey: np.ndarray,
    labels: np.ndarray | None,
    pixel_mm: tuple[float, float],
    height: int,
    vrange: tuple[float, float],
) -> Image.Image:
    """An RGB tile of ``height`` pixels with square pixels in mm and the labels blended in."""
    rows, cols = grey.shape
    width = max(1, int(round(height * (cols * pixel_mm[1]) / (rows * pixel_mm[0]))))
    lo, hi = vrange
    g8 = np.clip((grey - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    g_img = Image.fromarray(np.ascontiguousarray(g8)).resize((width, height), Image.BILINEAR)
    rgb = np.repeat(np.asarray(g_img, np.float32)[..., None], 3, axis=2)
    if labels is not None and labels.any():
        lab = np.asarray(
            Image.fromarray(np.ascontiguousarray(labels)).resize((width, height), Image.NEAREST)
        )
        for value, (colour, alpha) in LABEL_COLOURS.items():
            sel = lab == value
            if not sel.any():
                continue
            col = np.asarray(colour, np.float32)
            rgb[sel] = (1 - alpha) * rgb[sel] + alpha * col
            edge = sel & ~ndimage.binary_erosion(sel, iterations=1, border_value=0)
            rgb[edge] = col
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` pixels (a bitmap font on old Pillow)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def slice_mosaic(
    vol: RasVolume,
    plane: str,
    threshold: float,
    labels: RasVolume | None = None,
    n_slices: int = 7,
    height: int = 170,
    gap: int = 3,
) -> np.ndarray:
    """A row of ``n_slices`` slices of ``vol`` across the head, with ``labels`` overlaid.

    Parameters
    ----------
    vol : RasVolume
        Image in RAS orientation.
    plane : {"axial", "sagittal", "coronal"}
        Slice orientation.
    threshold : float
        Head threshold; slices are spread over the head's bounding box.
    labels : RasVolume, optional
        Mask on the same grid (values as in :data:`LABEL_COLOURS`).
    n_slices : int
        Number of slices.
    height : int
        Height in pixels of each slice.
    gap : int
        Pixels between slices.

    Returns
    -------
    ndarray of uint8
        RGB image ``(height, width, 3)``.
    """
    if labels is not None and labels.shape != vol.shape:
        raise ValueError(f"labels {labels.shape} and image {vol.shape} differ in shape")
    box = head_bbox(vol.data > threshold, vol.spacing)
    data = vol.data[box]
    lab = labels.data[box] if labels is not None else None
    vrange = window(data, threshold)
    axis = _PLANE_AXIS[plane]
    tiles = []
    for index in slice_positions(n_slices, data.shape[axis]):
        grey, pixel_mm = plane_slice(data, plane, index, vol.spacing)
        lab2 = plane_slice(lab, plane, index, vol.spacing)[0] if lab is not None else None
        tiles.append(_tile(grey, lab2, pixel_mm, height, vrange))
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + gap
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, height // 12))
    left, right = _PLANE_LETTERS[plane]
    first = tiles[0].width
    draw.text((4, 3), left, fill=(235, 235, 235), font=font)
    draw.text((first - 4 - draw.textlength(right, font=font), 3), right, fill=(235, 235, 235),
              font=font)
    return np.asarray(canvas)
