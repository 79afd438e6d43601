"""Metrics of refacing (``docs/reface.md``): the seam at the mask's edge, how far a face
surface lies from another, and how a downstream registration moves.

- :func:`seam_steps` — the intensity step across the face mask's edge, in patches along
  it, against the image's own local variation there;
- :func:`face_surface_distance` — mean symmetric distance (mm) between two heads' skin
  surfaces within a face region, after :func:`align_face` has fitted one face to the other
  (an affine on the face region: what an attacker matching faces would do first);
- :func:`affine_to_template` and :func:`displacement_mm` — a whole-head affine registration
  to a template (SimpleITK, as FSL FLIRT or ANTs would do for a pipeline) and how far
  two such registrations place the brain apart.
"""

from __future__ import annotations

from typing import Any, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..anatomy import edt_mm, head_mask
from ..reface import affine_ras

__all__ = ["seam_steps", "skin_surface", "align_face", "face_surface_distance", "affine_to_template",
           "displacement_mm"]


def seam_steps(image: np.ndarray, face: np.ndarray, zooms: Sequence[float], reference: np.ndarray,
               patch_mm: float = 8.0, shell_mm: float = 2.0, min_voxels: int = 8) -> dict[str, Any]:
    """The step in mean intensity across the edge of ``face`` in ``image``, per patch.

    The edge is cut into cubes of ``patch_mm``; in each, ``inside`` are the mask's voxels
    within ``shell_mm`` of the edge, ``outside`` the voxels outside within ``shell_mm`` of
    it and ``beyond`` those ``shell_mm`` to ``2 * shell_mm`` out. A patch counts when the
    ``reference`` image (the original) has tissue there (outside mean above its air
    level). The step is ``|mean(inside) - mean(outside)|`` of ``image``; the local variation
    is the standard deviation of ``reference`` over ``outside`` and ``beyond`` of the patch,
    and the natural step ``|mean(outside) - mean(beyond)|`` of ``reference``.

    Returns
    -------
    dict
        ``patches``, the medians of ``step``, ``local_sd`` and ``natural_step``, the median
        of ``step / local_sd`` (``ratio``) and the fraction of patches whose step exceeds
        their local variation (``above_sd``).
    """
    face = np.asarray(face, bool)
    zooms = np.asarray(zooms, float)
    out_mm = edt_mm(~face, zooms)
    in_mm = edt_mm(face, zooms)
    inside = face & (in_mm <= shell_mm)
    outside = ~face & (out_mm <= shell_mm)
    beyond = ~face & (out_mm > shell_mm) & (out_mm <= 2 * shell_mm)
    finite = reference[np.isfinite(reference)]
    lo, hi = np.percentile(finite, [2, 99.5])
    air = lo + 0.08 * (hi - lo)
    cell = np.floor(np.indices(face.shape, dtype=np.float32).reshape(3, -1).T * zooms / patch_mm).astype(np.int64)
    dims = cell.max(axis=0) + 1
    key = np.ravel_multi_index(cell.T, dims)
    img = np.asarray(image, np.float64).ravel()
    ref = np.asarray(reference, np.float64).ravel()
    n = int(np.prod(dims))

    def stats(mask: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sel = mask.ravel()
        count = np.bincount(key[sel], minlength=n)
        total = np.bincount(key[sel], weights=values[sel], minlength=n)
        squares = np.bincount(key[sel], weights=values[sel] ** 2, minlength=n)
        return count, total, squares

    c_in, s_in, _ = stats(inside, img)
    c_out, s_out, _ = stats(outside, img)
    r_out_c, r_out, r_out2 = stats(outside, ref)
    r_bey_c, r_bey, r_bey2 = stats(beyond, ref)
    ok = (c_in >= min_voxels) & (c_out >= min_voxels) & (r_bey_c >= min_voxels)
    ok &= np.divide(r_out, np.maximum(r_out_c, 1)) > air
    if not ok.any():
        return {"patches": 0}
    step = np.abs(s_in[ok] / c_in[ok] - s_out[ok] / c_out[ok])
    both_c = r_out_c[ok] + r_bey_c[ok]
    mean = (r_out[ok] + r_bey[ok]) / both_c
    sd = np.sqrt(np.maximum((r_out2[ok] + r_bey2[ok]) / both_c - mean ** 2, 0.0))
    natural = np.abs(r_out[ok] / r_out_c[ok] - r_bey[ok] / r_bey_c[ok])
    return {
        "patches": int(ok.sum()),
        "step": float(np.median(step)),
        "local_sd": float(np.median(sd)),
        "natural_step": float(np.median(natural)),
        "ratio": float(np.median(step / np.maximum(sd, 1e-6))),
        "above_sd": float(np.mean(step > sd)),
    }


def skin_surface(data: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """The voxels of the head's outer boundary (:func:`bids_deface.anatomy.head_mask`)."""
    head = head_mask(np.asarray(data, np.float32), zooms)
    return head & ~ndimage.binary_erosion(head)


def _sitk(data: np.ndarray, affine: np.ndarray, block_mm: float | None = None):  # type: ignore[no-untyped-def]
    """A SimpleITK image of ``data`` (block means of about ``block_mm`` when given)."""
    from ..reface import _coarse, _sitk_image

    if block_mm:
        data, affine = _coarse(np.asarray(data, np.float32), affine, block_mm)
    return _sitk_image(data, affine)


def align_face(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
               region: np.ndarray, initial: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """``moving`` resampled onto the grid of ``fixed`` after an affine fit of its face to
    the face of ``fixed`` (SimpleITK, Mattes mutual information within ``region`` of
    ``fixed`` grown by 10 mm, on 2 mm block means at 4 and 2 mm, started from ``initial`` (a world-to-world RAS matrix,
    fixed to moving) or from the heads' centres of intensity)."""
    import SimpleITK as sitk

    zooms = np.sqrt((np.asarray(fixed_affine)[:3, :3] ** 2).sum(axis=0))
    grown = edt_mm(~np.asarray(region, bool), zooms) <= 10.0
    f = _sitk(fixed, fixed_affine, 2.0)
    m = _sitk(moving, moving_affine, 2.0)
    mask = sitk.Cast(_sitk(grown.astype(np.float32), fixed_affine, 2.0) > 0.5, sitk.sitkUInt8)
    if initial is None:
        init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3),
                                                 sitk.CenteredTransformInitializerFilter.MOMENTS)
    else:
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(initial, float) @ np.diag([-1.0, -1.0, 1.0, 1.0])
        init = sitk.AffineTransform(3)
        init.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
        init.SetTranslation([float(v) for v in lps[:3, 3]])
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed + 1)  # SimpleITK's seed 0 is the wall clock
    reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=0.005, numberOfIterations=150,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(f, m)
    out = sitk.Resample(_sitk(moving, moving_affine), _sitk(fixed, fixed_affine), tx, sitk.sitkLinear, 0.0)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def face_surface_distance(a: np.ndarray, b: np.ndarray, zooms: Sequence[float], region: np.ndarray) -> float:
    """Mean symmetric distance (mm) between the skin surfaces of ``a`` and ``b`` (on one
    grid) within ``region``: each surface voxel's distance to the other surface, averaged
    over both surfaces' voxels in the region."""
    zooms = np.asarray(zooms, float)
    sa, sb = skin_surface(a, zooms), skin_surface(b, zooms)
    region = np.asarray(region, bool)
    pa, pb = sa & region, sb & region
    if not pa.any() or not pb.any() or not sa.any() or not sb.any():
        return float("nan")
    da = edt_mm(~sb, zooms)[pa]
    db = edt_mm(~sa, zooms)[pb]
    return float((da.sum() + db.sum()) / (da.size + db.size))


def affine_to_template(image: nib.Nifti1Image, template: nib.Nifti1Image, seed: int = 0) -> np.ndarray:
    """A whole-head affine registration of ``image`` to ``template`` (SimpleITK: centres
    of intensity, then 12 parameters, Mattes mutual information, on 2 mm block means at
    8, 4 and 2 mm, no masks): the
    world-to-world RAS matrix from template to image space (ITK's fixed-to-moving)."""
    import SimpleITK as sitk

    data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    f = _sitk(np.asarray(template.get_fdata(dtype=np.float32)), template.affine, 2.0)
    m = _sitk(data, image.affine, 2.0)
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # a fixed seed (SimpleITK's seed 0 is the wall clock): the same images give the same
    # samples, so that two images' transforms differ by what differs between the images
    reg.SetMetricSamplingPercentage(0.1, seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=0.01, numberOfIterations=100,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    return affine_ras(reg.Execute(f, m))


def displacement_mm(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Mean and largest distance (mm) between where the matrices ``a`` and ``b`` take the
    world ``points`` (N×3)."""
    pa = nib.affines.apply_affine(a, points)
    pb = nib.affines.apply_affine(b, points)
    d = np.linalg.norm(pa - pb, axis=1)
    return float(d.mean()), float(d.max())
