"""Figures of one run, encoded as PNG ``data:`` URIs ready to inline in a report."""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
from PIL import Image

from ..inputs import loud_background
from .mosaic import LABEL_COLOURS, PLANES, slice_mosaic
from .surface import VIEWS, SurfaceRender, render_surface
from .volume import RasVolume, head_threshold, label_values, mask_to_ras, render_spacing, to_isotropic, to_ras

__all__ = ["RunFigures", "png_data_uri", "render_pair", "render_like", "surface_images", "make_run_figures"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFigures:
    """Inline images of one run.

    Attributes
    ----------
    renders : dict
        ``{"before" | "after" | "refaced": {view: data URI}}`` for the views in
        :data:`~.surface.VIEWS` (``refaced`` when there is a refaced image).
    mosaics : dict
        ``{plane: data URI}`` for the planes in :data:`~.mosaic.PLANES`.
    labels : tuple of int
        Mask labels present in the mosaics (keys of :data:`~.mosaic.LABEL_COLOURS`).
    notes : tuple of str
        Figures that could not be made, and why.
    """

    renders: dict[str, dict[str, str]] = field(default_factory=dict)
    mosaics: dict[str, str] = field(default_factory=dict)
    labels: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()


def png_data_uri(image: np.ndarray | Image.Image) -> str:
    """Encode a ``uint8`` grey or RGB image as a ``data:image/png;base64,...`` URI.

    Examples
    --------
    >>> png_data_uri(np.zeros((2, 2), np.uint8))[:22]
    'data:image/png;base64,'
    """
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _crop_box(render: SurfaceRender, view: str, margin: int = 4) -> tuple[slice, slice]:
    """Rows and columns around the pixels of ``view`` where a ray hit the surface."""
    hit = np.isfinite(render.depth[view])
    if not hit.any():
        return slice(None), slice(None)
    rows = np.flatnonzero(hit.any(axis=1))
    cols = np.flatnonzero(hit.any(axis=0))
    return (
        slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + 1 + margin),
        slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + 1 + margin),
    )


def surface_images(
    render: SurfaceRender,
    crops: dict[str, tuple[slice, slice]] | None = None,
    px_per_mm: float | None = None,
) -> dict[str, Image.Image]:
    """Shaded views cropped to ``crops`` and resized so that pixels are square in mm.

    Parameters
    ----------
    render : SurfaceRender
        Output of :func:`~.surface.render_surface`.
    crops : dict, optional
        View name to (rows, columns) slices; default: around the surface of each view.
    px_per_mm : float, optional
        Output resolution; default: one pixel per smallest voxel size.
    """
    out: dict[str, Image.Image] = {}
    for view, image in render.images.items():
        box = (crops or {}).get(view) or _crop_box(render, view)
        img = image[box]
        row_mm, col_mm = render.pixel_mm[view]
        scale = px_per_mm or 1.0 / min(row_mm, col_mm)
        size = (
            max(1, int(round(img.shape[1] * col_mm * scale))),
            max(1, int(round(img.shape[0] * row_mm * scale))),
        )
        pil = Image.fromarray(np.ascontiguousarray(img))
        out[view] = pil if pil.size == size else pil.resize(size, Image.BICUBIC)
    return out


def render_pair(
    source: RasVolume, defaced: RasVolume | None, threshold: float | None = None
) -> tuple[SurfaceRender, SurfaceRender | None]:
    """Render an image and its defaced copy with the same threshold and grid.

    Parameters
    ----------
    source, defaced : RasVolume
        The original and the defaced image in RAS orientation (``defaced`` may be None).
    threshold : float, optional
        Surface intensity; default :func:`~.volume.head_threshold` of ``source``.
    """
    spacing = render_spacing(source.spacing, source.shape)
    src = to_isotropic(source, spacing)
    if threshold is None:
        threshold = head_threshold(src.data)
    before = render_surface(src, threshold, sigma_mm=_sigma(source))
    after = render_like(source, defaced, threshold) if defaced is not None else None
    return before, after


def _sigma(source: RasVolume) -> tuple[float, ...]:
    # thick slices: smooth across them by half their thickness, so steps do not show
    return tuple(max(1.0, 0.5 * s) for s in source.spacing)


def render_like(source: RasVolume, other: RasVolume, threshold: float) -> SurfaceRender:
    """Render ``other`` (the defaced or refaced copy of ``source``) as :func:`render_pair`
    renders ``source``: on its grid, with its smoothing and the ``threshold`` given."""
    if other.shape != source.shape:
        logger.warning("image %s and source %s differ in shape", other.shape, source.shape)
    return render_surface(to_isotropic(other, render_spacing(source.spacing, source.shape)), threshold,
                          sigma_mm=_sigma(source))


def _quieted(volume: RasVolume, background: np.ndarray | None) -> RasVolume:
    """``volume`` with ``background`` (:func:`bids_deface.inputs.loud_background` of the
    source, on the same grid) set to its lowest value; as it is without one."""
    if background is None or background.shape != volume.shape:
        return volume
    data = np.where(background, float(np.min(volume.data)), volume.data).astype(np.float32)
    return RasVolume(data=data, spacing=volume.spacing)


#: An image as :func:`make_run_figures` takes it: its file, or the image itself (in memory,
#: as a run has just written it).
ImageSource = Union[Path, nib.spatialimages.SpatialImage]


def _present(image: ImageSource) -> bool:
    return isinstance(image, nib.spatialimages.SpatialImage) or Path(image).exists()


def _load(image: ImageSource) -> nib.spatialimages.SpatialImage:
    return image if isinstance(image, nib.spatialimages.SpatialImage) else nib.load(str(image))


def make_run_figures(
    source: ImageSource | None, defaced: ImageSource | None = None, mask: ImageSource | None = None,
    refaced: ImageSource | None = None,
) -> RunFigures:
    """Surface renders (before/after, and refaced) and mask mosaics for one run.

    Each figure that cannot be made (file missing or unreadable) is left out with a note,
    so that a broken output never prevents the report itself.

    Parameters
    ----------
    source : Path, image or None
        The input image.
    defaced : Path, image or None
        The defaced image.
    mask : Path, image or None
        Face mask on the grid of ``source``.
    refaced : Path, image or None
        The refaced image (``--reface``), rendered like the defaced one.

    Each may be given as its file or as the nibabel image itself (a run draws its figures
    from the images it has just written, without reading them back); the figures are the
    same.
    """
    notes: list[str] = []
    if source is None or not _present(source):
        return RunFigures(notes=("No input image: no figures.",))
    t0 = time.perf_counter()
    src_img = _load(source)
    src = to_ras(src_img)
    # a head in loud noise (an MP2RAGE UNIT1 image) is drawn with its background quieted,
    # as it was masked; its copies with the same background
    background = loud_background(src.data, src.spacing)
    src = _quieted(src, background)
    threshold = head_threshold(src.data)

    dfc = None
    if defaced is not None and _present(defaced):
        try:
            dfc = _quieted(to_ras(_load(defaced)), background)
        except Exception as exc:  # nibabel raises many types for broken files
            logger.exception("cannot read defaced image %s", defaced)
            notes.append(f"Defaced image could not be read: {exc}")
    elif defaced is not None:
        notes.append(f"Defaced image not found: {Path(defaced).name}")

    renders: dict[str, dict[str, str]] = {}
    before, after = render_pair(src, dfc, threshold)
    crops = {view: _crop_box(before, view) for view in VIEWS}
    # one pixel per mm (at least), whatever grid the surfaces were rendered on
    px_per_mm = max(1.0, 1.0 / min(src.spacing))
    renders["before"] = {v: png_data_uri(i) for v, i in surface_images(before, crops, px_per_mm).items()}
    if after is not None:
        same = dfc is not None and dfc.shape == src.shape
        images = surface_images(after, crops if same else None, px_per_mm)
        renders["after"] = {v: png_data_uri(i) for v, i in images.items()}
    if refaced is not None and _present(refaced):
        try:
            rfc = to_ras(_load(refaced))
            # quieted by its own background: the template's face may reach where the
            # source's background was
            rfc = _quieted(rfc, loud_background(rfc.data, rfc.spacing) if background is not None else None)
            images = surface_images(render_like(src, rfc, threshold), crops if rfc.shape == src.shape else None,
                                    px_per_mm)
            renders["refaced"] = {v: png_data_uri(i) for v, i in images.items()}
        except Exception as exc:  # nibabel raises many types for broken files
            logger.exception("cannot render refaced image %s", refaced)
            notes.append(f"Refaced image could not be rendered: {exc}")

    labels_vol = None
    if mask is not None and _present(mask):
        try:
            labels_vol = mask_to_ras(_load(mask), src_img)
        except Exception as exc:  # nibabel raises many types for broken files
            logger.exception("cannot read mask %s", mask)
            notes.append(f"Face mask could not be read: {exc}")
    elif mask is not None:
        notes.append(f"Face mask not found: {Path(mask).name}")
    mosaics = {
        plane: png_data_uri(slice_mosaic(src, plane, threshold, labels_vol)) for plane in PLANES
    }
    present: tuple[int, ...] = ()
    if labels_vol is not None:
        values = set(label_values(labels_vol.data))
        present = tuple(v for v in LABEL_COLOURS if v in values)
    logger.debug("figures of %s made in %.2f s", src_img.get_filename(), time.perf_counter() - t0)
    return RunFigures(renders=renders, mosaics=mosaics, labels=present, notes=tuple(notes))
