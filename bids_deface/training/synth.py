"""Domain-randomised synthetic heads from label maps, exported as an nnU-Net v2 raw dataset.

Each case draws, from one source head's tissue and target label maps:

* **geometry** — rotation (±20°, sometimes ±35°), head size 0.6–1.1 of the source with
  per-axis jitter, child proportions (a smaller face below the orbits), a smooth elastic
  field, a random field of view (chin, neck or ears cut off), and a random stored axis
  order and flips;
* **contrast** — per tissue class a mean and spread, from a contrast family (T1w, T1w-CE,
  T2w, FLAIR, PD, T2*, newborn T1w and T2w with inverted grey/white contrast) or fully
  random, then partial-volume blur, bias field, gamma and Rician noise;
* **input kind** — most cases are whole heads; the others are the kinds real datasets hold
  (``KINDS``): skull-stripped images (only the brain left: nothing to remove, the face
  label is empty), images already defaced by a plane cut or by another tool's mask (what
  face is left keeps its label, the brain stays), heads scanned prone or on their side
  (turned 90° or 180° about the bore's axis), a slab from the orbits up, a stereotactic
  frame with fiducials around the head, and images that are not heads (empty, noise, a
  phantom), whose labels are all *keep*;
* **resolution** — 0.8–6 mm along each axis, thick slices along a random axis (every n-th
  slice kept; its brain label is the brain at the slice's centre, or with
  ``--slab-brain any`` wherever its slab holds brain).

Usage::

    python -m bids_deface.training.synth --labels cache/labels --heads ds000031 colin27 \\
        pydeface_template volpack --cases 240 --out cache/nnunet_raw/Dataset801_FaceEars
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..anatomy import block_reduce, orbit_level

__all__ = ["CONTRASTS", "KINDS", "SourceHead", "load_source", "synthesise", "write_dataset", "main"]

logger = logging.getLogger(__name__)

WORK_MM = 2.0

#: Mean intensity per tissue class: air, brain (CSF, GM, WM by T1 order), head (dark..bright).
CONTRASTS: dict[str, tuple[float, ...]] = {
    "T1w": (0.0, 0.15, 0.45, 0.70, 0.05, 0.35, 0.60, 0.90),
    "T1w-CE": (0.0, 0.20, 0.45, 0.70, 0.05, 0.50, 0.75, 0.95),
    "T2w": (0.0, 0.95, 0.55, 0.40, 0.05, 0.30, 0.50, 0.70),
    "FLAIR": (0.0, 0.08, 0.60, 0.45, 0.05, 0.35, 0.50, 0.80),
    "PD": (0.0, 0.80, 0.70, 0.55, 0.08, 0.50, 0.60, 0.80),
    "T2starw": (0.0, 0.80, 0.50, 0.40, 0.02, 0.30, 0.45, 0.60),
    "newborn-T1w": (0.0, 0.15, 0.60, 0.35, 0.05, 0.35, 0.55, 0.85),
    "newborn-T2w": (0.0, 0.95, 0.40, 0.70, 0.05, 0.30, 0.50, 0.70),
}


#: Input kinds and their share of the cases (the rest are whole heads, ``head``).
KINDS: dict[str, float] = {
    "skull_stripped": 0.07,
    "plane_cut": 0.05,
    "mask_defaced": 0.04,
    "turned": 0.08,
    "orbits_up": 0.06,
    "frame": 0.04,
    "not_head": 0.04,
}


def draw_kind(rng: np.random.Generator) -> str:
    """One input kind, with the shares of :data:`KINDS`."""
    u = rng.random()
    for kind, share in KINDS.items():
        if u < share:
            return kind
        u -= share
    return "head"


@dataclass
class SourceHead:
    name: str
    tissue: np.ndarray
    target: np.ndarray
    affine: np.ndarray  # axis-aligned RAS
    z_orb: float
    y_front: float
    centre: np.ndarray  # world mm


def load_source(labels_dir: Path, name: str) -> SourceHead:
    timg = nib.load(labels_dir / f"{name}_tissue.nii.gz")
    target = np.asanyarray(nib.load(labels_dir / f"{name}_target.nii.gz").dataobj).astype(np.uint8)
    tissue = np.asanyarray(timg.dataobj).astype(np.uint8)
    affine = timg.affine
    bi = np.argwhere(target == 2)
    world = nib.affines.apply_affine(affine, bi)
    y_front, z_orb = orbit_level(world)
    head = np.argwhere(tissue > 0)
    centre = nib.affines.apply_affine(affine, head.mean(0))
    return SourceHead(name, tissue, target, affine, z_orb, y_front, centre)


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], amp: float, ctrl: int = 5) -> np.ndarray:
    coarse = rng.normal(0, amp, (ctrl,) * 3)
    zoom = [s / ctrl for s in shape]
    return ndimage.zoom(coarse, zoom, order=3, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def _sample_geometry(rng: np.random.Generator, src: SourceHead, shape: tuple[int, int, int],
                     out_affine: np.ndarray, turn: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Source voxel coordinates for every output voxel, and the child-scale factor used.

    ``turn`` (degrees) turns the head about the superior axis (the scanner's bore) after
    the random tilt: 180 for a head scanned prone, ±90 for one lying on its side."""
    big = rng.random() < 0.15
    angles = rng.uniform(-35, 35, 3) if big else rng.uniform(-20, 20, 3)
    angles[2] += turn
    scale = rng.uniform(0.6, 1.1) * rng.uniform(0.92, 1.08, 3)
    rot = _rotation(angles)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), 0)
    world = np.tensordot(out_affine[:3, :3], grid, axes=1) + out_affine[:3, 3, None, None, None]
    # elastic displacement (mm) in the output frame
    amp = rng.uniform(0, 4.0)
    if amp > 0.5:
        world = world + np.stack([_smooth_field(rng, shape, amp) for _ in range(3)], 0)
    # inverse of: out = centre_out + R * S * (src - centre)
    inv = np.linalg.inv(rot @ np.diag(scale))
    local = np.tensordot(inv, world, axes=1)
    src_world = local + src.centre[:, None, None, None]
    # child proportions: the face below the orbits is smaller relative to the cranium;
    # sample the source farther from the orbital level (an inverse compression)
    face_f = rng.uniform(0.75, 1.0) if scale.mean() < 0.9 or rng.random() < 0.3 else 1.0
    if face_f < 1.0:
        z = src_world[2]
        below = 1.0 / (1.0 + np.exp((z - src.z_orb) / 6.0))  # ~1 below the orbits
        src_world[2] = src.z_orb + (z - src.z_orb) * (1.0 + below * (1.0 / face_f - 1.0))
        y = src_world[1]
        front = 1.0 / (1.0 + np.exp(-(y - (src.y_front - 40.0)) / 6.0)) * below
        src_world[1] = y + front * (y - (src.y_front - 40.0)) * (1.0 / face_f - 1.0)
    vox = np.tensordot(np.linalg.inv(src.affine)[:3, :3], src_world, axes=1)
    vox += np.linalg.inv(src.affine)[:3, 3, None, None, None]
    return vox, scale


def _intensities(rng: np.random.Generator, tissue: np.ndarray) -> tuple[np.ndarray, str]:
    if rng.random() < 0.25:
        family = "random"
        means = rng.uniform(0, 1, 8)
        means[0] = rng.uniform(0, 0.1)
    else:
        family = str(rng.choice(list(CONTRASTS)))
        means = np.array(CONTRASTS[family]) + rng.normal(0, 0.06, 8)
        means[0] = abs(means[0])
    stds = rng.uniform(0.01, 0.07, 8)
    img = means[tissue] + stds[tissue] * rng.standard_normal(tissue.shape).astype(np.float32)
    return np.clip(img, 0, None).astype(np.float32), family


def _plane_cut(rng: np.random.Generator, vox: np.ndarray, src: SourceHead) -> np.ndarray:
    """Output voxels in front of a quickshear-like plane: through a point in front of the
    brain at the orbital roofs, tilted back towards the chin (source frame, mm)."""
    world = np.tensordot(src.affine[:3, :3], vox, axes=1) + src.affine[:3, 3, None, None, None]
    pitch = np.deg2rad(rng.uniform(20, 60))
    normal = np.array([0.0, np.cos(pitch), -np.sin(pitch)])  # anterior and down: the face side
    point = np.array([src.centre[0], src.y_front + rng.uniform(-15, 5), src.z_orb + rng.uniform(-5, 10)])
    return np.tensordot(normal, world - point[:, None, None, None], axes=1) > 0


def _apply_kind(rng: np.random.Generator, kind: str, tissue: np.ndarray, target: np.ndarray,
                vox: np.ndarray, src: SourceHead) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Tissue and target of one input kind (:data:`KINDS`), and a frame's voxels or None."""
    brain_classes = np.arange(1, 4)
    frame = None
    if kind == "skull_stripped":
        # a brain mask a little off the true brain, as extraction tools leave it
        keep = ndimage.binary_dilation(target == 2, iterations=int(rng.integers(0, 3)))
        tissue = np.where(keep, tissue, 0)
        target = np.where(target == 2, 2, 0).astype(np.uint8)
    elif kind == "plane_cut":
        cut = _plane_cut(rng, vox, src) & (target != 2)
        tissue = np.where(cut, 0, tissue)
    elif kind == "mask_defaced":
        # another tool's mask: the face label shrunk or grown a little, zero-filled
        face = target == 1
        it = int(rng.integers(1, 4))
        face = ndimage.binary_erosion(face, iterations=it) if rng.random() < 0.5 else \
            ndimage.binary_dilation(face, iterations=it) & (target != 2)
        tissue = np.where(face, 0, tissue)
    elif kind == "frame":
        frame = _frame(rng, tissue.shape, tissue > 0)
        tissue = np.where(frame > 0, 0, tissue)
    elif kind == "not_head":
        target = np.zeros_like(target)
        what = rng.choice(["empty", "noise", "phantom"])
        if what == "empty":
            tissue = np.zeros_like(tissue)
        elif what == "noise":
            tissue = rng.integers(0, 8, tissue.shape).astype(np.uint8)
        else:  # a cylinder of fluid with a few inserts
            grid = np.indices(tissue.shape, dtype=np.float32)
            c = np.array(tissue.shape, np.float32)[:, None, None, None] / 2
            r = np.sqrt(((grid[:2] - c[:2]) ** 2).sum(0))
            radius = rng.uniform(0.25, 0.45) * min(tissue.shape[:2])
            tissue = np.where(r < radius, int(rng.choice(brain_classes)), 0).astype(np.uint8)
            for _ in range(int(rng.integers(2, 6))):
                p = c[:, 0, 0, 0] + rng.uniform(-0.5, 0.5, 3) * radius
                ball = ((grid - p[:, None, None, None]) ** 2).sum(0) < rng.uniform(5, 15) ** 2
                tissue[ball & (r < radius)] = int(rng.integers(4, 8))
    return tissue.astype(np.uint8), target.astype(np.uint8), frame


def _frame(rng: np.random.Generator, shape: tuple[int, ...], head: np.ndarray) -> np.ndarray:
    """A stereotactic frame on the working grid: four posts and a ring around the head, with
    bright fiducial rods, none touching the head."""
    out = np.zeros(shape, np.uint8)
    if not head.any():
        return out
    idx = np.argwhere(head)
    lo, hi = idx.min(0), idx.max(0)
    c = (lo + hi) / 2
    half = (hi - lo) / 2 + rng.uniform(4, 10)
    grid = np.indices(shape, dtype=np.float32)
    for sx in (-1, 1):
        for sy in (-1, 1):
            px, py = c[0] + sx * half[0], c[1] + sy * half[1] * 0.8
            post = ((grid[0] - px) ** 2 + (grid[1] - py) ** 2) < rng.uniform(2, 4) ** 2
            out[post & (grid[2] < c[2] + rng.uniform(0, half[2]))] = 1
    ring_z = c[2] + rng.uniform(-0.6, 0.2) * half[2]
    ell = ((grid[0] - c[0]) / half[0]) ** 2 + ((grid[1] - c[1]) / half[1]) ** 2
    out[(np.abs(ell - 1.0) < 0.06) & (np.abs(grid[2] - ring_z) < 3)] = 1
    return np.where(head, 0, out).astype(np.uint8)


def synthesise(src: SourceHead, rng: np.random.Generator, slab_brain: str = "centre",
               kind: str | None = None) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict]:
    """One synthetic image and its target label map (same grid).

    ``kind`` forces an input kind (:data:`KINDS` or ``head``) instead of drawing one.

    ``slab_brain`` says which voxels of a thick-slice case are brain: ``centre``, those
    whose slice centre is brain; ``any``, those whose slab holds brain anywhere (the
    brain a guard must keep off).
    """
    # output field of view in a RAS frame centred on the head (working resolution)
    drawn = draw_kind(rng)
    kind = drawn if kind is None else kind
    fov = np.array([rng.uniform(170, 230), rng.uniform(200, 256), rng.uniform(190, 256)])
    turn = 0.0
    if kind == "turned":
        turn = float(rng.choice([90.0, -90.0, 180.0]))
        if abs(turn) == 90.0:
            fov[:2] = fov[[1, 0]]
    shape = tuple(int(v) for v in np.round(fov / WORK_MM))
    shift = rng.normal(0, 8, 3)
    if rng.random() < 0.15:  # head off-centre in the field of view
        shift[:2] += rng.uniform(-25, 25, 2)
    if kind == "orbits_up":  # a slab from about the orbits up: its lower edge near the eyes
        z_low = src.z_orb - src.centre[2] + rng.uniform(-35, 5)
        fov[2] = rng.uniform(90, 140)
        shape = tuple(int(v) for v in np.round(fov / WORK_MM))
        shift[2] = z_low + fov[2] / 2
    elif rng.random() < 0.3:  # clinical crops: field of view moved up (chin/neck out) or narrowed
        shift[2] += rng.uniform(10, 40)
    if rng.random() < 0.15:
        fov[0] *= rng.uniform(0.7, 0.85)
        shape = (int(round(fov[0] / WORK_MM)), shape[1], shape[2])
    out_affine = np.diag([WORK_MM] * 3 + [1.0])
    out_affine[:3, 3] = -fov / 2 + shift
    vox, scale = _sample_geometry(rng, src, shape, out_affine, turn)
    tissue = ndimage.map_coordinates(src.tissue, vox, order=0, mode="constant", cval=0)
    target = ndimage.map_coordinates(src.target, vox, order=0, mode="constant", cval=0)
    tissue, target, frame = _apply_kind(rng, kind, tissue, target, vox, src)
    img, family = _intensities(rng, tissue)
    if frame is not None:
        img = np.where(frame > 0, rng.uniform(0.6, 1.2), img).astype(np.float32)

    # acquisition resolution
    acq = rng.uniform(0.8, 2.0, 3)
    if rng.random() < 0.45:
        acq[rng.integers(3)] = rng.uniform(3.0, 6.5)
    sigma = np.maximum(acq / WORK_MM * 0.45, rng.uniform(0.2, 0.6))
    img = ndimage.gaussian_filter(img, sigma)
    # bias field, gamma, noise
    bias = np.exp(_smooth_field(rng, img.shape, rng.uniform(0, 0.35), ctrl=4))
    img = img * bias
    img = np.clip(img, 0, None) ** np.exp(rng.normal(0, 0.25))
    noise = rng.uniform(0.003, 0.05) * img.max()
    img = np.sqrt((img + noise * rng.standard_normal(img.shape)) ** 2 + (noise * rng.standard_normal(img.shape)) ** 2)

    # thick axes are stored at their acquired spacing
    step = np.maximum(1, np.round(acq / WORK_MM)).astype(int)
    slicer = tuple(slice(rng.integers(s), None, s) for s in step)
    if slab_brain == "any" and (step > 1).any():
        brain = target == 2
        for ax in np.flatnonzero(step > 1):
            # a kept slice's slab reaches half a step to either side of it
            half = int(step[ax]) // 2
            brain = ndimage.maximum_filter1d(brain, size=2 * half + 1, axis=int(ax))
        target = np.where(brain, 2, target)
    img, target = img[slicer], target[slicer]
    affine = out_affine.copy()
    affine[:3, :3] = np.diag(WORK_MM * step)
    affine[:3, 3] = out_affine[:3, 3] + WORK_MM * np.array([sl.start for sl in slicer])

    # random storage order and flips (the header says how)
    perm = rng.permutation(3)
    flips = rng.random(3) < 0.5
    img = np.transpose(img, perm)
    target = np.transpose(target, perm)
    affine = affine[:, list(perm) + [3]]
    for ax in range(3):
        if flips[ax]:
            img = np.flip(img, ax)
            target = np.flip(target, ax)
            n = img.shape[ax]
            affine[:, 3] = affine[:, 3] + affine[:, ax] * (n - 1)
            affine[:, ax] = -affine[:, ax]
    img = (img / (np.percentile(img, 99.9) + 1e-6) * rng.uniform(200, 3000)).astype(np.float32)
    meta = {"source": src.name, "kind": kind, "contrast": family, "scale": [round(float(s), 3) for s in scale],
            "acquired_mm": [round(float(a), 2) for a in acq]}
    im = nib.Nifti1Image(np.ascontiguousarray(img), affine)
    lb = nib.Nifti1Image(np.ascontiguousarray(target.astype(np.uint8)), affine)
    for x in (im, lb):
        x.set_qform(affine, 1)
        x.set_sform(affine, 1)
    return im, lb, meta


def write_dataset(labels_dir: Path, heads: list[str], cases: int, out: Path, seed: int = 0,
                  start: int = 0, slab_brain: str = "centre") -> None:
    """Write ``cases`` synthetic cases (round-robin over ``heads``) as an nnU-Net v2 raw dataset."""
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    sources = [load_source(labels_dir, h) for h in heads]
    meta_path = out / "cases.jsonl"  # one line per case; parallel writers append whole lines
    for i in range(start, start + cases):
        case = f"synth_{i:04d}"
        rng = np.random.default_rng([seed, i])
        im, lb, meta = synthesise(sources[i % len(sources)], rng, slab_brain)
        nib.save(im, out / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(lb, out / "labelsTr" / f"{case}.nii.gz")
        with open(meta_path, "a") as fobj:
            fobj.write(json.dumps({"case": case, **meta}) + "\n")
        logger.info("%s %s", case, meta)
    n = len(list((out / "labelsTr").glob("*.nii.gz")))
    dataset = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "face": 1, "brain": 2},
        "numTraining": n,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "NibabelIOWithReorient",
        "name": "FaceEars",
        "description": "Face-and-ears masks (docs/mask.md) on domain-randomised synthetic heads",
        "reference": "bids-deface",
        "licence": "Apache-2.0",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Synthesise an nnU-Net v2 raw dataset.")
    parser.add_argument("--labels", type=Path, default=Path("cache/labels"))
    parser.add_argument("--heads", nargs="+", required=True)
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--slab-brain", choices=["centre", "any"], default="centre",
                        help="brain label of thick-slice cases: at the slice centre, or "
                             "wherever the slab holds brain")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    write_dataset(args.labels, args.heads, args.cases, args.out, args.seed, args.start,
                  args.slab_brain)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def render_head(src: SourceHead, contrast: str, spacing: tuple[float, float, float],
                scale: float = 1.0, seed: int = 0) -> nib.Nifti1Image:
    """A clean synthetic scan of ``src`` (no deformation): one contrast, one voxel size.

    Used for the example dataset; thick slices are block averages of the 1 mm image.
    """
    rng = np.random.default_rng(seed)
    head = np.argwhere(src.tissue > 0)
    lo = nib.affines.apply_affine(src.affine, head.min(0)) - 12
    hi = nib.affines.apply_affine(src.affine, head.max(0)) + 12
    fov = (hi - lo) * scale
    fine = 1.0
    shape = tuple(int(v) for v in np.ceil(fov / fine))
    out = np.diag([fine] * 3 + [1.0])
    out[:3, 3] = src.centre - fov / 2
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), 0)
    world = np.tensordot(out[:3, :3], grid, axes=1) + out[:3, 3, None, None, None]
    world = src.centre[:, None, None, None] + (world - src.centre[:, None, None, None]) / scale
    inv = np.linalg.inv(src.affine)
    vox = np.tensordot(inv[:3, :3], world, axes=1) + inv[:3, 3, None, None, None]
    tissue = ndimage.map_coordinates(src.tissue, vox, order=0)
    means = np.asarray(CONTRASTS[contrast], np.float32)
    img = ndimage.gaussian_filter(means[tissue], 0.7)
    img = img * np.exp(_smooth_field(rng, img.shape, 0.1, ctrl=4))
    noise = 0.012
    img = np.sqrt((img + noise * rng.standard_normal(img.shape)) ** 2 + (noise * rng.standard_normal(img.shape)) ** 2)
    factors = [max(1, int(round(s / fine))) for s in spacing]
    img = block_reduce(img, factors)
    affine = out.copy()
    affine[:3, :3] = np.diag([fine * f for f in factors])
    affine[:3, 3] = out[:3, 3] + fine * (np.asarray(factors) - 1) / 2
    data = np.round(img / img.max() * 1000).astype(np.int16)
    im = nib.Nifti1Image(data, affine)
    im.set_qform(affine, 1)
    im.set_sform(affine, 1)
    im.header.set_xyzt_units("mm", "sec")
    return im
