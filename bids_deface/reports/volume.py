"""Volumes prepared for figures: RAS orientation, near-isotropic grid, head threshold.

Every figure of a report is drawn from a :class:`RasVolume`, so that "up" is superior,
"front" is anterior and the subject's left is known without looking at the affine again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "RasVolume",
    "load_ras",
    "to_ras",
    "mask_to_ras",
    "to_isotropic",
    "render_spacing",
    "MAX_RENDER_VOXELS",
    "RENDER_MM",
    "label_values",
    "head_threshold",
    "otsu_threshold",
]

logger = logging.getLogger(__name__)

#: Above this many voxels the render grid is coarsened (about a 256 mm cube at 1.1 mm).
MAX_RENDER_VOXELS = 14_000_000


@dataclass(frozen=True)
class RasVolume:
    """A 3D array whose axes point to the subject's Right, Anterior and Superior.

    Attributes
    ----------
    data : ndarray
        3D array, axis 0 from left to right, axis 1 from posterior to anterior and axis 2
        from inferior to superior.
    spacing : tuple of float
        Voxel size in mm along each axis.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of :attr:`data`."""
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]


def _first_volume(img: nib.spatialimages.SpatialImage) -> nib.spatialimages.SpatialImage:
    """Keep the first volume of a 4D image (a few anatomical files carry a 4th axis of 1)."""
    if len(img.shape) > 3:
        logger.debug("image of shape %s: using its first volume", img.shape)
        return img.slicer[..., 0] if img.shape[3] > 0 else img
    return img


def to_ras(img: nib.spatialimages.SpatialImage, dtype: type = np.float32) -> RasVolume:
    """Reorient ``img`` to the closest RAS axis order (no interpolation).

    Parameters
    ----------
    img : nibabel image
        3D image (a 4D one gives its first volume).
    dtype : numpy dtype
        Type of the returned array (``float32`` for intensities, ``uint8`` for labels).

    Returns
    -------
    RasVolume

    Examples
    --------
    >>> import nibabel as nib, numpy as np
    >>> aff = np.diag([-2.0, 1.0, 1.0, 1.0])   # LAS
    >>> v = to_ras(nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), aff))
    >>> v.spacing, v.data[0, 0, 0]
    ((2.0, 1.0, 1.0), np.float32(12.0))
    """
    img = nib.as_closest_canonical(_first_volume(img))
    if dtype == np.uint8:
        data = np.asarray(img.dataobj)
        if data.dtype != np.uint8:
            data = np.rint(np.nan_to_num(data)).clip(0, 255).astype(np.uint8)
    else:
        data = img.get_fdata(dtype=np.float32)
        if not np.isfinite(data).all():
            data = np.nan_to_num(data, copy=False)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    # nibabel's arrays are in Fortran order: kept as they are (a reordering copy of a large
    # image costs more than every figure drawn from it)
    return RasVolume(data=np.asarray(data), spacing=zooms)  # type: ignore[arg-type]


def load_ras(path: Path, dtype: type = np.float32) -> RasVolume:
    """Load a NIfTI file and reorient it with :func:`to_ras`."""
    return to_ras(nib.load(str(path)), dtype=dtype)


def label_values(labels: np.ndarray) -> list[int]:
    """The values present in a ``uint8`` label array (by counting, without sorting).

    >>> label_values(np.array([[0, 2], [2, 0]], np.uint8))
    [0, 2]
    """
    top = int(labels.max()) if labels.size else 0
    if top <= 2:  # the usual 0/1(/2) mask: one comparison per value, no copy
        return [v for v in range(top + 1) if v == top or bool((labels == v).any())]
    return np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()


def mask_to_ras(
    mask_img: nib.spatialimages.SpatialImage, reference: nib.spatialimages.SpatialImage
) -> RasVolume:
    """Labels of ``mask_img`` on the RAS grid of ``reference``.

    The mask is expected on the grid of the reference; if its shape or affine differ it is
    resampled there by nearest neighbour (and a warning is logged). Values other than the
    labels 0 (keep), 1 (face) and 2 (brain) make every non-zero voxel face.
    """
    mask_img = _first_volume(mask_img)
    reference = _first_volume(reference)
    same = mask_img.shape[:3] == reference.shape[:3] and np.allclose(
        mask_img.affine, reference.affine, atol=1e-3
    )
    if not same:
        logger.warning(
            "mask grid %s differs from the image grid %s: resampling it for the figures",
            mask_img.shape[:3],
            reference.shape[:3],
        )
        # voxel of the reference -> voxel of the mask
        vox2vox = np.linalg.inv(mask_img.affine) @ reference.affine
        data = ndimage.affine_transform(
            np.asarray(mask_img.dataobj).astype(np.float32),
            vox2vox[:3, :3],
            offset=vox2vox[:3, 3],
            output_shape=reference.shape[:3],
            order=0,
            mode="constant",
            cval=0.0,
        )
        mask_img = nib.Nifti1Image(data.astype(np.uint8), reference.affine)
    labels = to_ras(mask_img, dtype=np.uint8)
    if not set(label_values(labels.data)) <= {0, 1, 2}:
        # not a 0/1/2 label map (e.g. 0/255): every non-zero voxel is face
        labels = RasVolume(data=(labels.data > 0).astype(np.uint8), spacing=labels.spacing)
    return labels


#: Voxel size (mm) of the grid the surfaces are rendered on: finer grids are averaged
#: down to it (a render shows the face's shape, not 1 mm detail; 3.4 times fewer voxels
#: than at 1 mm).
RENDER_MM = 1.5


def render_spacing(spacing: tuple[float, float, float], shape: tuple[int, int, int]) -> float | None:
    """Isotropic spacing to resample to before rendering, or ``None`` to keep the grid.

    A grid is kept when its voxels are nearly cubic (at most 20 % apart), not finer than
    :data:`RENDER_MM` and not too large; otherwise it goes to the finest voxel size, at
    least :data:`RENDER_MM`, coarsened further if the volume would exceed
    :data:`MAX_RENDER_VOXELS`.

    >>> render_spacing((1.0, 1.0, 1.0), (256, 256, 176)), render_spacing((2.0, 2.0, 2.0), (100, 100, 100))
    (1.5, None)
    """
    lo, hi = min(spacing), max(spacing)
    n = float(np.prod(shape))
    if hi / lo <= 1.2 and lo >= RENDER_MM and n <= MAX_RENDER_VOXELS:
        return None
    target = float(max(lo, RENDER_MM))
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    while np.prod(extent / target) > MAX_RENDER_VOXELS:
        target *= 1.1
    return target


def to_isotropic(vol: RasVolume, spacing: float | None) -> RasVolume:
    """Resample ``vol`` to cubic voxels of ``spacing`` mm (``None``: unchanged): box
    averages along the axes it coarsens, linear along the axes it refines (thick slices).

    >>> v = to_isotropic(RasVolume(np.ones((6, 6, 2), np.float32), (1.0, 1.0, 3.0)), 1.5)
    >>> v.shape, v.spacing, float(v.data.min())
    ((4, 4, 4), (1.5, 1.5, 1.5), 1.0)
    """
    if spacing is None:
        return vol
    import torch

    size = [max(1, int(round(n * s / spacing))) for n, s in zip(vol.shape, vol.spacing)]
    data = np.asarray(vol.data, dtype=np.float32)
    # a Fortran-ordered volume is resampled as its C-ordered transpose (no reordering copy)
    order = (2, 1, 0) if not data.flags.c_contiguous and data.flags.f_contiguous else (0, 1, 2)
    x = torch.from_numpy(data).permute(*order)[None, None]
    size = [size[a] for a in order]
    with torch.inference_mode():
        coarse = [min(n, m) for n, m in zip(x.shape[2:], size)]
        if coarse != list(x.shape[2:]):
            x = torch.nn.functional.interpolate(x, size=coarse, mode="area")
        if coarse != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    return RasVolume(data=x[0, 0].permute(*order).numpy(), spacing=(spacing, spacing, spacing))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (maximises the between-class variance).

    Examples
    --------
    >>> v = np.r_[np.zeros(100), np.full(100, 10.0)]
    >>> 0 < otsu_threshold(v) < 10
    True
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = (w0 * w1 * (mu0 - mu1) ** 2)[:-1]
    # empty bins between the classes give a plateau of equal scores: take its middle
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[int(round((best[0] + best[-1]) / 2)) + 1])


def head_threshold(data: np.ndarray, fraction: float = 0.5, seed: int = 0) -> float:
    """Intensity that separates head from air, for surface renders.

    Otsu's threshold of the intensities (clipped at their 99.5th percentile so that a few
    bright vessels or artefacts do not pull it up) splits air from tissue; ``fraction`` of it
    keeps darker skin and fat inside the surface. Computed on a subsample of at most two
    million voxels, so it costs a few milliseconds.

    Parameters
    ----------
    data : ndarray
        Image intensities (any shape).
    fraction : float
        Multiplier of Otsu's threshold.
    seed : int
        Seed of the subsample (the result is deterministic).
    """
    flat = np.asarray(data).ravel(order="K")  # no copy of a Fortran-ordered volume
    if flat.size > 2_000_000:
        rng = np.random.default_rng(seed)
        flat = flat[rng.integers(0, flat.size, 2_000_000)]
    flat = flat[np.isfinite(flat)].astype(np.float32)
    lo = float(np.min(flat)) if flat.size else 0.0
    hi = float(np.percentile(flat, 99.5)) if flat.size else 0.0
    if hi <= lo:
        return hi
    t = otsu_threshold(np.clip(flat, lo, hi))
    return float(lo + fraction * (t - lo))
