"""Evaluation cases made from one real head: its own contrast, synthesised contrasts,
clinical 5 mm axial slices and child-size proportions.

Every case carries its image, the head's independent brain mask and the reference face
label on the case's grid, and the facial landmarks in the case's world coordinates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..anatomy import block_reduce, head_mask, orbit_level

__all__ = ["EvalCase", "load_landmarks", "make_cases", "thick_slices", "axial_slabs", "CASE_NAMES",
           "INPUT_KIND_CASES", "not_head_cases", "rotated", "mp2rage_unit1"]


@dataclass
class EvalCase:
    name: str
    image: nib.Nifti1Image
    brain: np.ndarray
    reference_face: np.ndarray
    landmarks: dict[str, list[float]]
    notes: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0
    """Head size relative to the source; coverage spheres shrink with it."""
    brain_slices: np.ndarray | None = None
    """On thick slices: the brain mask on the slices each slab was made of (the slabs'
    sub-slices, ``bids_deface.deface.guard_distance_mm``)."""
    eyes: dict[str, np.ndarray] = field(default_factory=dict)
    """Each eyeball found in the source head (``bids_deface.eyes``) on the case's grid,
    by side (``right``, ``left``)."""
    expect: str = "face"
    """``face``: the thresholds apply (a feature out of view is skipped where
    ``partial``); ``nothing``: the image holds no face, and nothing may be removed."""
    partial: bool = False
    """The field of view leaves features out: a feature with no tissue in view is skipped."""
    tissue: np.ndarray | None = None
    """The head's tissue, where the image's own intensities do not give it
    (:func:`bids_deface.anatomy.head_mask`): the source's, for an image whose background is
    noise as bright as tissue."""


def load_landmarks(head: str) -> dict[str, list[float]]:
    """Landmarks of ``head`` (world RAS mm of the source file)."""
    text = (resources.files("bids_deface.evaluation") / "landmarks.json").read_text()
    data = json.loads(text)
    if head not in data:
        raise KeyError(f"no landmarks for {head}; known: {[k for k in data if not k.startswith('_')]}")
    return data[head]


def _synth_contrast(tissue: np.ndarray, means: tuple[float, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.asarray(means, np.float32)[tissue]
    img = ndimage.gaussian_filter(img, 0.6)
    noise = 0.015
    img = np.sqrt((img + noise * rng.standard_normal(img.shape)) ** 2
                  + (noise * rng.standard_normal(img.shape)) ** 2)
    return (img * 1000).astype(np.float32)


def thick_slices(data: np.ndarray, affine: np.ndarray, factor: int, axis: int = 2,
                 reducer: Callable[..., np.ndarray] = np.mean) -> tuple[np.ndarray, np.ndarray]:
    """``data`` in slabs of ``factor`` voxels along ``axis`` (``reducer`` over each slab:
    the mean, as a thick acquisition averages its slab, or ``np.any`` for masks), and the
    slabs' affine (centred on their voxels)."""
    factors = [1, 1, 1]
    factors[axis] = factor
    out = block_reduce(data, factors, reducer)
    new = affine.copy()
    new[:3, axis] = affine[:3, axis] * factor
    new[:3, 3] = affine[:3, 3] + affine[:3, axis] * (factor - 1) / 2.0
    return out, new


def block_means(img: nib.Nifti1Image, factor: int = 2) -> nib.Nifti1Image:
    """``img`` in cubes of ``factor``³ voxels (block means, int16; a 1 mm head at 2 mm),
    in its stored orientation; incomplete blocks at the far ends are dropped."""
    data, affine = np.asanyarray(img.dataobj).astype(np.float32), img.affine
    for axis in range(3):
        data, affine = thick_slices(data, affine, factor, axis)
    new = nib.Nifti1Image(data.astype(np.int16), affine)
    new.set_qform(affine, 1)
    new.set_sform(affine, 1)
    return new


def axial_slabs(img: nib.Nifti1Image, brain: np.ndarray,
                slab_mm: float) -> tuple[nib.Nifti1Image, np.ndarray]:
    """``img`` in slabs of about ``slab_mm`` along its voxel axis nearest to superior (block
    means, float32) and ``brain`` on the slabs (a slab is brain when any of its slices is)."""
    axis = int(np.argmax(np.abs(img.affine[2, :3]) / np.linalg.norm(img.affine[:3, :3], axis=0)))
    factor = max(2, int(round(slab_mm / float(img.header.get_zooms()[axis]))))
    data, affine = thick_slices(np.asanyarray(img.dataobj).astype(np.float32), img.affine, factor, axis)
    mask, _ = thick_slices(brain, img.affine, factor, axis, reducer=np.any)
    out = nib.Nifti1Image(data, affine)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    return out, mask


def _thick_masks(brain: np.ndarray, face: np.ndarray, affine: np.ndarray,
                 factor: int, axis: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain and reference face on thick slices along ``axis`` (axial by default): a slab
    is brain when any of its slices is, face when most are; and the slabs' affine."""
    b, aff = thick_slices(brain, affine, factor, axis, reducer=np.any)
    f, _ = thick_slices(face.astype(np.float32), affine, factor, axis)
    return b, f > 0.5, aff


def _child_map(shape: tuple[int, ...], affine: np.ndarray, z_orb: float, y_front: float,
               face_f: float) -> np.ndarray:
    """Source voxel coordinates of every output voxel for a face compressed by ``face_f``."""
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), 0)
    world = np.tensordot(affine[:3, :3], grid, axes=1) + affine[:3, 3, None, None, None]
    src = world.copy()
    src[2], src[1] = _child_forward_inverse(world[1], world[2], z_orb, y_front, face_f)
    inv = np.linalg.inv(affine)
    return np.tensordot(inv[:3, :3], src, axes=1) + inv[:3, 3, None, None, None]


def _child_forward_inverse(y: np.ndarray, z: np.ndarray, z_orb: float, y_front: float,
                           face_f: float) -> tuple[np.ndarray, np.ndarray]:
    """Source (z, y) of output points (y, z): the face below the orbits is ``face_f`` as big."""
    below = 1.0 / (1.0 + np.exp((z - z_orb) / 6.0))
    zs = z_orb + (z - z_orb) * (1.0 + below * (1.0 / face_f - 1.0))
    y0 = y_front - 40.0
    front = 1.0 / (1.0 + np.exp(-(y - y0) / 6.0)) * below
    ys = y + front * (y - y0) * (1.0 / face_f - 1.0)
    return zs, ys


def _child_point(p: list[float], z_orb: float, y_front: float, face_f: float) -> list[float]:
    """Output position of source point ``p`` (inverts the map by a fine search)."""
    ys = np.linspace(p[1] - 60, p[1] + 60, 1201)
    zs = np.linspace(p[2] - 60, p[2] + 60, 1201)
    Y, Z = np.meshgrid(ys, zs, indexing="ij")
    sz, sy = _child_forward_inverse(Y, Z, z_orb, y_front, face_f)
    k = np.argmin((sz - p[2]) ** 2 + (sy - p[1]) ** 2)
    return [p[0], float(Y.ravel()[k]), float(Z.ravel()[k])]


def _scaled(affine: np.ndarray, centre: np.ndarray, s: float) -> np.ndarray:
    scale = np.diag([s, s, s, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = centre - s * centre
    return shift @ scale @ affine


CASE_NAMES = [
    "T1w 1 mm (real)", "T2w 1 mm", "FLAIR 1 mm", "PD 1 mm", "T2starw 1 mm", "newborn T2w 1 mm",
    "T1w 5 mm axial (real)", "T2w 5 mm axial", "child 0.7 T1w (real)", "newborn 0.6 T1w",
    "newborn 0.6 T2w", "infant 0.8 T2w", "child 0.7 FLAIR", "newborn 0.6 T2w 3 mm axial",
]


#: Cases of the input kinds real datasets hold, made from the head's own image.
INPUT_KIND_CASES = [
    "T1w skull-stripped (real)", "T1w orbits up (real)", "T1w pitched +30° (real)",
    "T1w pitched -30° (real)", "T1w rolled 30° (real)",
    "T1w 5 mm sagittal (real)", "T1w 5 mm coronal (real)", "T1w ears cut (real)", "T1w face cut (real)",
    "T1w plane-cut defaced (real)", "T1w in a stereotactic frame (real)",
    "T1w 0.43 mm in-plane, 3 mm axial (real)", "T1w on its side (real)", "T1w prone (real)",
    "T1w off-centre (real)", "T1w as MP2RAGE UNIT1 (real)",
]


def mp2rage_unit1(data: np.ndarray, zooms: np.ndarray, seed: int = 0, snr: float = 40.0,
                  fluid: np.ndarray | None = None) -> np.ndarray:
    """An MP2RAGE ``UNIT1`` image (0-4095) made from the T1w ``data``: the ratio
    Re(S1 S2*) / (|S1|² + |S2|²) of a second inversion S2 that is proton-density-like in the
    head and a first inversion S1 = g S2 whose ratio is the T1w's contrast, both with
    complex Gaussian noise (``snr``: against S2's brightest tissue). S2 is the square root
    of the T1w's intensity in the head (dark bone and air cavities give little signal),
    at least 0.8 in ``fluid`` (CSF and the eyeballs: dark in T1w, bright in proton
    density), and nothing outside the head. In the head the image has the T1w's contrast,
    noisy where S2 is weak; outside it, the ratio of two noises spreads uniformly over
    the whole range: the salt-and-pepper background of real UNIT1 images."""
    rng = np.random.default_rng(seed)
    d = np.clip(data / float(np.percentile(data, 99.5)), 0.0, 1.0)
    head = ndimage.gaussian_filter(head_mask(data, zooms).astype(np.float32), 1.0)
    u = 0.8 * (d - 0.5)  # the ratio in tissue, within (-0.5, 0.5)
    u = np.where(np.abs(u) < 1e-6, 1e-6, u)
    g = (1.0 - np.sqrt(np.maximum(1.0 - 4.0 * u ** 2, 0.0))) / (2.0 * u)  # g / (1 + g²) = u
    pd = np.sqrt(d)
    if fluid is not None:
        pd = np.where(fluid, np.maximum(pd, 0.8), pd)
    s2 = pd * head
    sigma = 1.0 / snr

    def noise() -> np.ndarray:
        return sigma * (rng.standard_normal(d.shape) + 1j * rng.standard_normal(d.shape))

    s1_n, s2_n = g * s2 + noise(), s2 + noise()
    ratio = (s1_n * np.conj(s2_n)).real / (np.abs(s1_n) ** 2 + np.abs(s2_n) ** 2)
    return np.round((ratio + 0.5) * 4095.0).astype(np.float32)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    """3×3 rotation by ``degrees`` about RAS ``axis`` (right-handed)."""
    a = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return rot


def rotated(data: np.ndarray, zooms: np.ndarray, centre_vox: np.ndarray, axis: int, degrees: float,
            order: int) -> np.ndarray:
    """``data`` (RAS axes) turned by ``degrees`` about the RAS ``axis`` through
    ``centre_vox``, on the same grid (what leaves the field of view is lost)."""
    # output voxel -> source voxel: source = C + Z^-1 R^T Z (out - C)
    m = np.diag(1 / zooms) @ _rotation(axis, degrees).T @ np.diag(zooms)
    off = centre_vox - m @ centre_vox
    return ndimage.affine_transform(data, m, offset=off, order=order, mode="constant", cval=0)


def _image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A float32 image with ``affine`` as both qform and sform."""
    im = nib.Nifti1Image(data.astype(np.float32), affine)
    im.set_qform(affine, 1)
    im.set_sform(affine, 1)
    return im


def _phantom(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A cylinder of fluid along the last axis with five spheres of other intensities (a
    quality-control phantom), blurred and with Rician noise."""
    grid = np.indices(shape, dtype=np.float32)
    c = np.array(shape, np.float32)[:, None, None, None] / 2
    r = np.sqrt(((grid[:2] - c[:2]) ** 2).sum(0))
    radius = 0.4 * min(shape[:2])
    img = np.where((r < radius) & (np.abs(grid[2] - c[2]) < 0.4 * shape[2]), 600.0, 0.0)
    for k in range(5):
        a = 2 * np.pi * k / 5
        p = c[:, 0, 0, 0] + np.array([0.5 * radius * np.cos(a), 0.5 * radius * np.sin(a), 0.0])
        img[((grid - p[:, None, None, None]) ** 2).sum(0) < (4 + 2 * k) ** 2] = 200.0 + 150.0 * k
    img = ndimage.gaussian_filter(img, 0.8)
    return np.sqrt((img + 15 * rng.standard_normal(shape)) ** 2 + (15 * rng.standard_normal(shape)) ** 2)


def not_head_cases(seed: int = 0) -> list[EvalCase]:
    """Images that are not heads: all zero, pure noise and a phantom (1.5 mm, 160×160×120)."""
    rng = np.random.default_rng(seed)
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    out = []
    for name, data in (("all-zero image", np.zeros((160, 160, 120), np.float32)),
                       ("pure noise", rng.uniform(0, 1000, (160, 160, 120)).astype(np.float32)),
                       ("phantom", _phantom((160, 160, 120), rng).astype(np.float32))):
        empty = np.zeros(data.shape, bool)
        out.append(EvalCase(name, _image(data, aff), empty, empty, {}, expect="nothing"))
    return out


def make_cases(img: nib.Nifti1Image, brain: np.ndarray, landmarks: dict[str, list[float]],
               only: list[str] | None = None) -> list[EvalCase]:
    """All evaluation cases of one real head (``brain`` on ``img``'s grid): those of
    ``CASE_NAMES`` and ``INPUT_KIND_CASES``."""
    from ..training.labels import make_labels
    from ..training.synth import CONTRASTS

    ras = nib.as_closest_canonical(img)
    affine = ras.affine
    data = ras.get_fdata(dtype=np.float32)
    brain_ras = np.asanyarray(nib.as_closest_canonical(
        nib.Nifti1Image(brain.astype(np.uint8), img.affine)).dataobj) > 0
    labels = make_labels(img, brain)
    face_ref = labels.target == 1
    tissue = labels.tissue
    globes = labels.globes if labels.globes is not None else np.zeros(data.shape, np.uint8)
    eyes = {side: globes == v for side, v in (("right", 1), ("left", 2)) if (globes == v).any()}
    world_brain = nib.affines.apply_affine(affine, np.argwhere(brain_ras))
    y_front, z_orb = orbit_level(world_brain)
    centre = world_brain.mean(0)

    cases: list[EvalCase] = []

    def want(name: str) -> bool:
        return only is None or name in only

    if want(CASE_NAMES[0]):
        cases.append(EvalCase(CASE_NAMES[0], _image(data, affine), brain_ras, face_ref, landmarks, eyes=eyes))
    for name, contrast, seed in ((CASE_NAMES[1], "T2w", 1), (CASE_NAMES[2], "FLAIR", 2),
                                 (CASE_NAMES[3], "PD", 3), (CASE_NAMES[4], "T2starw", 4),
                                 (CASE_NAMES[5], "newborn-T2w", 5)):
        if want(name):
            cases.append(EvalCase(name, _image(_synth_contrast(tissue, CONTRASTS[contrast], seed), affine),
                                  brain_ras, face_ref, landmarks, eyes=eyes))
    if want(CASE_NAMES[6]) or want(CASE_NAMES[7]):
        # about 5 mm slabs: five 1 mm slices (two or three of a coarser source's)
        k5 = max(2, int(round(5.0 / float(np.sqrt((affine[:3, 2] ** 2).sum())))))
        b5, f5, a5 = _thick_masks(brain_ras, face_ref, affine, k5)
        slices5 = brain_ras[:, :, : b5.shape[2] * k5]
        eyes5 = {k: thick_slices(v.astype(np.float32), affine, k5)[0] > 0.5 for k, v in eyes.items()}
        if want(CASE_NAMES[6]):
            d5, _ = thick_slices(data, affine, k5)
            cases.append(EvalCase(CASE_NAMES[6], _image(d5, a5), b5, f5, landmarks, brain_slices=slices5,
                                  eyes=eyes5))
        if want(CASE_NAMES[7]):
            t2 = _synth_contrast(tissue, CONTRASTS["T2w"], 7)
            d5, _ = thick_slices(t2, affine, k5)
            cases.append(EvalCase(CASE_NAMES[7], _image(d5, a5), b5, f5, landmarks, brain_slices=slices5,
                                  eyes=eyes5))
    # child sizes: (name, size, face below the orbits, contrast, seed, slice thickness
    # as a multiple of the source's 1 mm, before scaling)
    for name, scale, face_f, source, seed, thick in (
            (CASE_NAMES[8], 0.7, 0.85, "real", 0, 1),
            (CASE_NAMES[9], 0.6, 0.75, "newborn-T1w", 9, 1),
            (CASE_NAMES[10], 0.6, 0.75, "newborn-T2w", 9, 1),
            (CASE_NAMES[11], 0.8, 0.9, "T2w", 11, 1),
            (CASE_NAMES[12], 0.7, 0.85, "FLAIR", 12, 1),
            (CASE_NAMES[13], 0.6, 0.75, "newborn-T2w", 13, 5)):
        if not want(name):
            continue
        vox = _child_map(data.shape, affine, z_orb, y_front, face_f)
        src = data if source == "real" else _synth_contrast(tissue, CONTRASTS[source], seed)
        d = ndimage.map_coordinates(src, vox, order=1, mode="constant", cval=0)
        b = ndimage.map_coordinates(brain_ras.astype(np.uint8), vox, order=0) > 0
        f = ndimage.map_coordinates(face_ref.astype(np.uint8), vox, order=0) > 0
        ce = {k: ndimage.map_coordinates(v.astype(np.uint8), vox, order=0) > 0 for k, v in eyes.items()}
        aff = affine
        slices = None
        if thick > 1:
            d, _ = thick_slices(d, affine, thick)
            slices = b
            b, f, aff = _thick_masks(b, f, affine, thick)
            slices = slices[:, :, : b.shape[2] * thick]
            ce = {k: thick_slices(v.astype(np.float32), affine, thick)[0] > 0.5 for k, v in ce.items()}
        aff = _scaled(aff, centre, scale)
        lms = {}
        for key, p in landmarks.items():
            q = _child_point(p, z_orb, y_front, face_f)
            q = centre + scale * (np.asarray(q) - centre)
            lms[key] = [float(v) for v in q]
        cases.append(EvalCase(name, _image(d, aff), b, f, lms,
                              {"scale": str(scale), "face_ratio": str(face_f)}, scale=scale,
                              brain_slices=slices, eyes=ce))
    cases += _input_kind_cases(data, affine, brain_ras, face_ref, eyes, landmarks, z_orb, want)
    cases += _more_input_kind_cases(data, affine, brain_ras, face_ref, eyes, landmarks, z_orb, y_front, want)
    cases += _clinical_and_turned_cases(data, affine, brain_ras, face_ref, eyes, landmarks, want)
    return cases


def _input_kind_cases(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, face: np.ndarray,
                      eyes: dict[str, np.ndarray], landmarks: dict[str, list[float]], z_orb: float,
                      want: Callable[[str], bool]) -> list[EvalCase]:
    """The cases of ``INPUT_KIND_CASES`` (RAS grid ``affine``)."""
    out = []
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    if want(INPUT_KIND_CASES[0]):
        # skull-stripped with the independent brain mask itself: nothing left to remove
        out.append(EvalCase(INPUT_KIND_CASES[0], _image(np.where(brain, data, 0), affine), brain,
                            np.zeros_like(face), {}, expect="nothing"))
    if want(INPUT_KIND_CASES[1]):
        # a slab from 25 mm below the orbital roofs up (the lower face, the mouth, most of
        # the nose and the ears' lower halves are cut by the image's edge)
        inv = np.linalg.inv(affine)
        k0 = int(max(0, np.floor(inv[2, 2] * (z_orb - 25.0) + inv[2, 3])))
        aff = affine.copy()
        aff[:3, 3] = affine[:3, 3] + affine[:3, 2] * k0
        out.append(EvalCase(INPUT_KIND_CASES[1], _image(data[:, :, k0:], aff), brain[:, :, k0:],
                            face[:, :, k0:], landmarks, eyes={k: v[:, :, k0:] for k, v in eyes.items()},
                            partial=True))
    centre = np.argwhere(brain).mean(0)
    for name, axis, deg in ((INPUT_KIND_CASES[2], 0, 30.0), (INPUT_KIND_CASES[3], 0, -30.0),
                            (INPUT_KIND_CASES[4], 1, 30.0)):
        if not want(name):
            continue
        d = rotated(data, zooms, centre, axis, deg, 1)
        b = rotated(brain.astype(np.uint8), zooms, centre, axis, deg, 0) > 0
        f = rotated(face.astype(np.uint8), zooms, centre, axis, deg, 0) > 0
        e = {k: rotated(v.astype(np.uint8), zooms, centre, axis, deg, 0) > 0 for k, v in eyes.items()}
        # landmarks turned like the voxels: in the grid's millimetres, then back to world
        inv = np.linalg.inv(affine)
        rot, c_mm = _rotation(axis, deg), centre * zooms
        lms = {}
        for k, p in landmarks.items():
            q_mm = (inv[:3, :3] @ np.asarray(p, float) + inv[:3, 3]) * zooms
            q = (c_mm + rot @ (q_mm - c_mm)) / zooms
            lms[k] = [float(v) for v in affine[:3, :3] @ q + affine[:3, 3]]
        out.append(EvalCase(name, _image(d, affine), b, f, lms, {"rotation": f"{deg:+.0f} deg about axis {axis}"},
                            eyes=e, partial=True))
    if want(INPUT_KIND_CASES[15]):
        # a 7 T dataset's MP2RAGE UNIT1 image: the head in a background of loud noise
        fluid = brain.copy()
        for eye in eyes.values():
            fluid |= eye
        out.append(EvalCase(INPUT_KIND_CASES[15], _image(mp2rage_unit1(data, zooms, seed=15, fluid=fluid), affine),
                            brain, face, landmarks, eyes=eyes, tissue=head_mask(data, zooms)))
    return out


def _padded_affine(affine: np.ndarray, pad: list[tuple[int, int]]) -> np.ndarray:
    """The affine of a grid padded by ``pad`` (``np.pad``'s widths): every voxel keeps its
    world position."""
    out = affine.copy()
    out[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.array([p[0] for p in pad], float)
    return out


def _crop(case_name: str, data: np.ndarray, affine: np.ndarray, brain: np.ndarray, face: np.ndarray,
          eyes: dict[str, np.ndarray], landmarks: dict[str, list[float]], axis: int, lo: int, hi: int) -> EvalCase:
    """The voxels ``lo:hi`` along ``axis`` of a RAS grid, as a case with a partial field of view."""
    where = tuple(slice(lo, hi) if a == axis else slice(None) for a in range(3))
    aff = affine.copy()
    aff[:3, 3] = affine[:3, 3] + affine[:3, axis] * lo
    return EvalCase(case_name, _image(data[where], aff), brain[where], face[where], landmarks,
                    eyes={k: v[where] for k, v in eyes.items()}, partial=True)


def _more_input_kind_cases(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, face: np.ndarray,
                           eyes: dict[str, np.ndarray], landmarks: dict[str, list[float]], z_orb: float,
                           y_front: float, want: Callable[[str], bool]) -> list[EvalCase]:
    """5 mm slabs along the other two axes, fields of view that cut the ears or the face,
    a face already cut off by a plane, and a stereotactic frame (RAS grid ``affine``)."""
    from ..training.synth import _frame

    out = []
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    inv = np.linalg.inv(affine)

    def vox(p: list[float]) -> np.ndarray:
        return inv[:3, :3] @ np.asarray(p, float) + inv[:3, 3]

    for name, axis in ((INPUT_KIND_CASES[5], 0), (INPUT_KIND_CASES[6], 1)):
        if not want(name):
            continue
        k = max(2, int(round(5.0 / float(zooms[axis]))))
        d, _ = thick_slices(data, affine, k, axis)
        b, f, aff = _thick_masks(brain, face, affine, k, axis)
        n = b.shape[axis] * k
        slices = brain[tuple(slice(0, n) if a == axis else slice(None) for a in range(3))]
        e = {key: thick_slices(v.astype(np.float32), affine, k, axis)[0] > 0.5 for key, v in eyes.items()}
        out.append(EvalCase(name, _image(d, aff), b, f, landmarks, brain_slices=slices, eyes=e))
    if want(INPUT_KIND_CASES[7]) and {"ear_right", "ear_left"} <= set(landmarks):
        # the image's sides run through the middle of each pinna
        xs = sorted(int(round(vox(landmarks[k])[0])) for k in ("ear_right", "ear_left"))
        out.append(_crop(INPUT_KIND_CASES[7], data, affine, brain, face, eyes, landmarks, 0, xs[0], xs[1] + 1))
    if want(INPUT_KIND_CASES[8]) and {"eye_right", "eye_left", "nose"} <= set(landmarks):
        # the image's front runs through the lenses: the nose and the lips' front out of view
        y = int(round(np.mean([vox(landmarks[k])[1] for k in ("eye_right", "eye_left")])))
        out.append(_crop(INPUT_KIND_CASES[8], data, affine, brain, face, eyes, landmarks, 1, 0, y + 1))
    if want(INPUT_KIND_CASES[9]):
        # another tool's plane cut (quickshear's kind), 40° from the coronal plane, through a
        # point 5 mm behind the brain's front at the orbital roofs: whatever face is left goes
        world = np.tensordot(affine[:3, :3], np.indices(data.shape, dtype=np.float32), axes=1)
        world += affine[:3, 3, None, None, None]
        pitch = np.deg2rad(40.0)
        normal = np.array([0.0, np.cos(pitch), -np.sin(pitch)])
        point = np.array([0.0, y_front - 5.0, z_orb])
        cut = (np.tensordot(normal, world - point[:, None, None, None], axes=1) > 0) & ~brain
        out.append(EvalCase(INPUT_KIND_CASES[9], _image(np.where(cut, 0, data), affine), brain, face & ~cut,
                            landmarks, eyes={k: v & ~cut for k, v in eyes.items()}, partial=True))
    if want(INPUT_KIND_CASES[10]):
        # four posts and a ring around the head with bright fiducial rods, none touching it,
        # in a field of view widened by 30 mm on each side to hold them
        pad = [(int(np.ceil(30.0 / z)),) * 2 if a < 2 else (0, 0) for a, z in enumerate(zooms)]
        aff = _padded_affine(affine, pad)
        d = np.pad(data, pad)
        head = head_mask(d, zooms)
        frame = _frame(np.random.default_rng(10), d.shape, ndimage.binary_dilation(head, iterations=3)) > 0
        d[frame] = float(np.percentile(d[head], 99.5)) * 1.2
        out.append(EvalCase(INPUT_KIND_CASES[10], _image(d, aff), np.pad(brain, pad), np.pad(face, pad), landmarks,
                            eyes={k: np.pad(v, pad) for k, v in eyes.items()}))
    return out


#: The in-plane voxel and the slice thickness of the fine clinical grid (mm).
CLINICAL_IN_PLANE_MM, CLINICAL_SLICE_MM = 0.43, 3.0


def _in_plane(mask: np.ndarray, factors: tuple[float, float]) -> np.ndarray:
    """A mask on a grid ``factors`` times finer along the first two axes (nearest voxel)."""
    return ndimage.zoom(mask.astype(np.uint8), (*factors, 1.0), order=0, grid_mode=True,
                        mode="grid-constant") > 0


def quarter_turned(data: np.ndarray, affine: np.ndarray, turns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``data`` (RAS axes) turned by ``turns`` quarter turns about the superior axis inside
    the grid (each turns the face from anterior towards the image's left), on a grid whose
    header keeps the scanner's axes (as when a head lies prone or on its side but the
    scanner was told it lies supine); the turned grid's affine; and the 4×4 matrix from a
    source voxel index to a turned one.

    >>> d = np.zeros((3, 5, 1)); d[2, 4, 0] = 1  # right, front
    >>> t, aff, m = quarter_turned(d, np.eye(4), 1)
    >>> t.shape, np.argwhere(t)[0].tolist(), (m @ [2, 4, 0, 1])[:3].tolist()
    ((5, 3, 1), [0, 2, 0], [0.0, 2.0, 0.0])
    """
    shape = np.array(data.shape[:3], float)
    index = np.eye(4)
    for _ in range(turns % 4):
        # np.rot90 over (x, y): new (x, y) = (ny - 1 - y, x)
        step = np.array([[0.0, -1.0, 0.0, shape[1] - 1], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])
        index = step @ index
        shape = shape[[1, 0, 2]]
    out = np.rot90(data, turns, axes=(0, 1))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    directions = affine[:3, :3] / zooms
    new_zooms = np.abs(index[:3, :3]) @ zooms
    aff = np.eye(4)
    aff[:3, :3] = directions * new_zooms
    # the grid's centre stays where it was
    centre = affine[:3, :3] @ ((np.array(data.shape[:3], float) - 1) / 2) + affine[:3, 3]
    aff[:3, 3] = centre - aff[:3, :3] @ ((shape - 1) / 2)
    return out, aff, index


def _clinical_and_turned_cases(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, face: np.ndarray,
                               eyes: dict[str, np.ndarray], landmarks: dict[str, list[float]],
                               want: Callable[[str], bool]) -> list[EvalCase]:
    """A fine clinical grid with thick axial slices, the head prone or on its side with the
    header of a supine head, and the head off-centre in a wide field of view (RAS grid
    ``affine``)."""
    out = []
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    name = INPUT_KIND_CASES[11]
    if want(name):
        # slabs of the source's slices, then linear interpolation in-plane (a reconstruction
        # on a finer matrix than was acquired, as scanners do)
        k = max(2, int(round(CLINICAL_SLICE_MM / float(zooms[2]))))
        f = (float(zooms[0]) / CLINICAL_IN_PLANE_MM, float(zooms[1]) / CLINICAL_IN_PLANE_MM)
        d, aff = thick_slices(data, affine, k)
        d = ndimage.zoom(d, (*f, 1.0), order=1, grid_mode=True, mode="grid-constant")
        b, fc, aff = _thick_masks(brain, face, affine, k)
        e = {key: thick_slices(v.astype(np.float32), affine, k)[0] > 0.5 for key, v in eyes.items()}
        # the finer grid covers the same field of view: voxel edges stay where they were
        scale = np.array([b.shape[0] / d.shape[0], b.shape[1] / d.shape[1], 1.0])
        fine = aff.copy()
        fine[:3, :3] = aff[:3, :3] * scale
        fine[:3, 3] = aff[:3, 3] + aff[:3, :3] @ ((scale - 1) / 2)
        out.append(EvalCase(name, _image(d, fine), _in_plane(b, f), _in_plane(fc, f), landmarks,
                            eyes={key: _in_plane(v, f) for key, v in e.items()}))
    for name, turns in ((INPUT_KIND_CASES[12], 1), (INPUT_KIND_CASES[13], 2)):
        if not want(name):
            continue
        # padded to a square in-plane field of view first, so the turned head stays in view
        side = max(data.shape[0] * zooms[0], data.shape[1] * zooms[1])
        pad = [(int(np.ceil((side / z - n) / 2)),) * 2 if a < 2 else (0, 0)
               for a, (n, z) in enumerate(zip(data.shape, zooms))]
        padded = _padded_affine(affine, pad)
        d, aff, index = quarter_turned(np.pad(data, pad), padded, turns)
        inv = np.linalg.inv(padded)
        lms = {key: [float(v) for v in (aff @ index @ inv @ np.r_[p, 1.0])[:3]] for key, p in landmarks.items()}

        def turn(mask: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(quarter_turned(np.pad(mask, pad), padded, turns)[0])

        out.append(EvalCase(name, _image(np.ascontiguousarray(d), aff), turn(brain), turn(face), lms,
                            {"turned": f"{90 * turns} deg about the superior axis, header unchanged"},
                            eyes={key: turn(v) for key, v in eyes.items()}))
    if want(INPUT_KIND_CASES[14]):
        # the head in a corner of a field of view widened by 60 mm on its left and behind
        # it and 30 mm above it
        pad = [(int(np.ceil(60.0 / zooms[0])), 0), (int(np.ceil(60.0 / zooms[1])), 0),
               (0, int(np.ceil(30.0 / zooms[2])))]
        out.append(EvalCase(INPUT_KIND_CASES[14], _image(np.pad(data, pad), _padded_affine(affine, pad)),
                            np.pad(brain, pad), np.pad(face, pad), landmarks,
                            eyes={k: np.pad(v, pad) for k, v in eyes.items()}))
    return out
