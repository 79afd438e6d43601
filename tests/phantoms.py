"""A small geometric head phantom (2 mm, RAS) with brain, skull, scalp, eyes, nose and ears."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def _ellipsoid(world: np.ndarray, centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    d = sum(((world[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    return d <= 1.0


def head_phantom(zoom: float = 2.0, with_ears: bool = False):  # type: ignore[no-untyped-def]
    """T1-like phantom head and its brain mask (and its ears, when asked)."""
    shape = tuple(int(v / zoom) for v in (190, 230, 200))
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = [-95.0, -120.0, -90.0]
    idx = np.indices(shape).astype(np.float32)
    world = np.stack([affine[i, i] * idx[i] + affine[i, 3] for i in range(3)])
    scalp = _ellipsoid(world, (0, -10, 25), (72, 90, 70))
    skull = _ellipsoid(world, (0, -10, 25), (66, 84, 64))
    csf = _ellipsoid(world, (0, -10, 25), (62, 80, 58))
    brain = _ellipsoid(world, (0, -10, 25), (60, 78, 55))
    wm = _ellipsoid(world, (0, -10, 25), (45, 60, 40))
    face = _ellipsoid(world, (0, 50, -45), (50, 40, 45))
    neck = _ellipsoid(world, (0, -15, -70), (40, 40, 35))
    eyes = _ellipsoid(world, (-32, 72, -28), (11, 11, 11)) | _ellipsoid(world, (32, 72, -28), (11, 11, 11))
    nose = _ellipsoid(world, (0, 92, -50), (9, 14, 18))
    ears = _ellipsoid(world, (-77, -5, -2), (6, 14, 22)) | _ellipsoid(world, (77, -5, -2), (6, 14, 22))
    data = np.zeros(shape, np.float32)
    data[scalp | face | neck | nose | ears] = 0.85
    data[skull & ~face] = 0.1
    data[csf] = 0.2
    data[brain] = 0.45
    data[wm] = 0.7
    data[eyes] = 0.15
    rng = np.random.default_rng(0)
    data = np.abs(data + rng.normal(0, 0.02, shape)).astype(np.float32) * 1000
    img = nib.Nifti1Image(data.astype(np.int16), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return (img, brain, ears) if with_ears else (img, brain)
