"""Surface renders of a head from the front and from both sides, in numpy alone.

The renderer is a ray caster on the voxel grid, with rays parallel to one axis of a RAS
volume (an orthographic camera):

1. the volume is smoothed lightly (Gaussian, about 1 mm) so that noise in the air and
   the staircase of voxels do not show;
2. along each ray the first voxel above the head threshold is found (``argmax`` of a
   boolean array), and the crossing is placed between that voxel and the one before it by
   linear interpolation, which gives a depth map in mm with sub-voxel precision;
3. the depth map is shaded: its gradient gives the surface normal, lit by a light near
   the viewer (Lambertian term plus a little ambient and specular light), and darkened
   slightly with depth so that the nose stands out from the cheeks.

A 256 x 256 x 176 head renders its three views in well under a second on one core.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .volume import RasVolume

__all__ = ["VIEWS", "SurfaceRender", "smooth", "depth_map", "shade", "render_surface"]

logger = logging.getLogger(__name__)

#: View names, in the order they are shown (left profile, front, right profile).
VIEWS: tuple[str, ...] = ("left", "front", "right")


@dataclass(frozen=True)
class SurfaceRender:
    """Shaded images and depth maps of one volume.

    Attributes
    ----------
    images : dict of str to ndarray
        View name to a 2D ``uint8`` image (row 0 at the top; 0 where no surface was hit).
    depth : dict of str to ndarray
        View name to the distance in mm from the volume's face on the viewer's side to the
        surface, ``nan`` where the ray hit nothing. Same layout as ``images``.
    pixel_mm : dict of str to tuple of float
        View name to the size in mm of one pixel (rows, columns).
    threshold : float
        Intensity of the rendered surface.
    """

    images: dict[str, np.ndarray]
    depth: dict[str, np.ndarray]
    pixel_mm: dict[str, tuple[float, float]]
    threshold: float


def _view_array(data: np.ndarray, view: str) -> np.ndarray:
    """``data`` (RAS) arranged as ``[ray step, image row, image column]`` for ``view``.

    Rays start on the viewer's side. Rows run from superior to inferior; columns run
    from the viewer's left to the viewer's right. Only strides change (no copy).
    """
    if view == "front":  # viewer anterior, looking back: subject's right on the left
        return np.transpose(data[::-1, ::-1, ::-1], (1, 2, 0))
    if view == "left":  # viewer at the subject's left: face points to the viewer's left
        return np.transpose(data[:, ::-1, ::-1], (0, 2, 1))
    if view == "right":  # viewer at the subject's right: face points to the viewer's right
        return np.transpose(data[::-1, :, ::-1], (0, 2, 1))
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")


def _view_spacing(spacing: tuple[float, float, float], view: str) -> tuple[float, float, float]:
    """Voxel size (ray, row, column) for ``view``."""
    sx, sy, sz = spacing
    if view == "front":
        return sy, sz, sx
    return sx, sz, sy


def smooth(vol: RasVolume, sigma_mm: float | tuple[float, float, float] = 1.0) -> RasVolume:
    """Gaussian smoothing of ``vol`` with a standard deviation of ``sigma_mm`` (per axis)."""
    sig = (sigma_mm,) * 3 if np.isscalar(sigma_mm) else tuple(sigma_mm)  # type: ignore[arg-type]
    if max(sig) <= 0:
        return vol
    sigma = [m / s for m, s in zip(sig, vol.spacing)]
    data = ndimage.gaussian_filter(vol.data.astype(np.float32, copy=False), sigma, truncate=2.5)
    return RasVolume(data=data, spacing=vol.spacing)


def depth_map(vol: RasVolume, threshold: float, view: str) -> np.ndarray:
    """Depth in mm of the first crossing of ``threshold`` along the rays of ``view``.

    Parameters
    ----------
    vol : RasVolume
        Volume to cast rays through.
    threshold : float
        Surface intensity.
    view : {"left", "front", "right"}
        Side the viewer stands on.

    Returns
    -------
    ndarray of float32
        2D map (rows superior to inferior, columns left to right as the viewer sees them);
        ``nan`` where no voxel along the ray exceeds the threshold.

    Examples
    --------
    >>> data = np.zeros((3, 5, 3), np.float32); data[:, :3, :] = 1.0   # a slab at the back
    >>> d = depth_map(RasVolume(data, (1.0, 1.0, 1.0)), 0.5, "front")
    >>> float(d[1, 1])   # two empty voxels, then halfway from their centre to the next
    2.0
    """
    arr = _view_array(vol.data, view)
    step = _view_spacing(vol.spacing, view)[0]
    above = arr > threshold
    first = np.argmax(above, axis=0)
    hit = np.take_along_axis(above, first[None], axis=0)[0]
    v_hit = np.take_along_axis(arr, first[None], axis=0)[0].astype(np.float32)
    prev = np.maximum(first - 1, 0)
    v_prev = np.take_along_axis(arr, prev[None], axis=0)[0].astype(np.float32)
    denom = v_hit - v_prev
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(denom > 0, (threshold - v_prev) / denom, 1.0)
    frac = np.clip(frac, 0.0, 1.0)
    # voxel centres: the crossing lies between centre (first - 1) and centre (first)
    depth = np.where(first > 0, first - 1 + frac, 0.0) + 0.5
    depth = (depth * step).astype(np.float32)
    depth[~hit] = np.nan
    return depth


def shade(
    depth: np.ndarray,
    pixel_mm: tuple[float, float],
    light: tuple[float, float, float] = (-0.35, -0.45, 1.0),
    ambient: float = 0.12,
    depth_cue: float = 0.35,
) -> np.ndarray:
    """Shade a depth map as a lit surface.

    Parameters
    ----------
    depth : ndarray
        Depth in mm (``nan`` = background), as returned by :func:`depth_map`.
    pixel_mm : tuple of float
        Size of a pixel in mm (rows, columns).
    light : tuple of float
        Direction towards the light in image coordinates (column to the right, row down,
        towards the viewer); the default lights from the upper left, near the viewer.
    ambient : float
        Fraction of light that reaches every visible point.
    depth_cue : float
        How much darker the farthest surface is than the nearest one.

    Returns
    -------
    ndarray of uint8
        Grey levels, 0 for the background.
    """
    hit = np.isfinite(depth)
    if not hit.any():
        return np.zeros(depth.shape, np.uint8)
    near, far = float(np.nanmin(depth)), float(np.nanmax(depth))
    # the background sits a little behind the farthest surface, so silhouettes turn away
    d = np.where(hit, depth, far + 10.0).astype(np.float32)
    d = ndimage.gaussian_filter(d, 0.7)
    g_row, g_col = np.gradient(d, *pixel_mm)
    # surface z = -depth(col, row) with z towards the viewer: normal ~ (d_col, d_row, 1)
    norm = np.sqrt(g_col**2 + g_row**2 + 1.0)
    lx, ly, lz = np.asarray(light, np.float32) / np.linalg.norm(light)
    lambert = np.clip((g_col * lx + g_row * ly + lz) / norm, 0.0, 1.0)
    # Blinn-Phong highlight with the viewer straight ahead
    hx, hy, hz = np.asarray([lx, ly, lz + 1.0]) / np.linalg.norm([lx, ly, lz + 1.0])
    spec = np.clip((g_col * hx + g_row * hy + hz) / norm, 0.0, 1.0) ** 24
    span = max(far - near, 1e-6)
    cue = 1.0 - depth_cue * np.clip((d - near) / span, 0.0, 1.0)
    value = (ambient + (1.0 - ambient) * lambert) * cue + 0.15 * spec
    value = np.clip(value, 0.0, 1.0) ** (1 / 1.2)
    out = np.rint(value * 254.0 + 1.0).astype(np.uint8)  # 1..255: 0 stays background
    out[~hit] = 0
    return out


def render_surface(
    vol: RasVolume,
    threshold: float,
    views: tuple[str, ...] = VIEWS,
    sigma_mm: float | tuple[float, float, float] = 1.0,
) -> SurfaceRender:
    """Render the surface ``vol > threshold`` from each of ``views``.

    Parameters
    ----------
    vol : RasVolume
        Volume on a (nearly) isotropic grid, see :func:`~.volume.to_isotropic`.
    threshold : float
        Surface intensity (use the same value for an image and its defaced copy).
    views : tuple of str
        Any of :data:`VIEWS`.
    sigma_mm : float or tuple of float
        Smoothing applied before casting rays, in mm, overall or per axis (0 disables it).

    Returns
    -------
    SurfaceRender
    """
    smoothed = smooth(vol, sigma_mm)
    images: dict[str, np.ndarray] = {}
    depths: dict[str, np.ndarray] = {}
    pixels: dict[str, tuple[float, float]] = {}
    for view in views:
        depth = depth_map(smoothed, threshold, view)
        _, row_mm, col_mm = _view_spacing(vol.spacing, view)
        pixels[view] = (row_mm, col_mm)
        depths[view] = depth
        images[view] = shade(depth, (row_mm, col_mm))
    return SurfaceRender(images=images, depth=depths, pixel_mm=pixels, threshold=threshold)
