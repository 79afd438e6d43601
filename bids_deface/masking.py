"""Face-and-ears masks from the nnU-Net v2 model: the only module that imports nnunetv2.

The model sees images the way nnU-Net's ``NibabelIO`` reads them: the voxel array of a
RAS-oriented image, transposed from ``[x, y, z]`` to ``[z, y, x]``, with the spacing
reversed alike. :class:`FaceModel` owns that conversion, so callers give a nibabel image
in any orientation, voxel size and dtype and get masks back on the image's own grid.
"""

from __future__ import annotations

import hashlib
import logging
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import nibabel as nib
import numpy as np
import torch

from .anatomy import (block_expand, block_factors, block_reduce, set_threads, drop_behind_ears, ear_zone, head_mask,
                      largest_component)
from .deface import brain_guard_parts, clean_face_mask, slab_splits
from .inputs import InputKind, judge_input, quiet_background
from .pose import (PRONE_AHEAD_ML, PRONE_CHECK_ML, PRONE_FACE_ML, PRONE_RATIO, HeadPose, UprightFrame,
                   face_in_front_ml, head_pose)

__all__ = ["MaskPrediction", "FaceModel", "resolve_device", "model_sha256", "to_ras",
           "head_scale", "image_head_scale", "shown_scale", "LABELS"]

logger = logging.getLogger(__name__)

#: Label values of the model (``docs/mask.md``).
LABELS = {"keep": 0, "face": 1, "brain": 2}

Device = Literal["auto", "cpu", "cuda"]

#: Mean brain volume (mL, deepbet) of the adult heads the training images were made from.
ADULT_BRAIN_ML = 1560.0
#: The training images scale those heads by 0.6 to 1.1 (``training.synth``). A head smaller
#: than ``ADAPT_BELOW`` (the middle of that range) is shown to the model at a finer spacing,
#: as a larger head: the smaller the head, the larger it is shown, up to the adult size
#: (``SHOWN_AT_MIN``) for the ``MIN_SCALE`` head. The predicted brain's boundary error is
#: about a fraction of the model's voxel and shrinks with it (``benchmarks/small_heads.md``).
ADAPT_BELOW = 0.85
#: The margin kept from the brain (``docs/mask.md``); the brain guard adds room for the
#: predicted brain's boundary error to it.
BRAIN_MARGIN_MM = 2.0
MIN_SCALE = 0.6
SHOWN_AT_MIN = 1.0


def shown_scale(scale: float) -> float:
    """The size at which a head of linear size ``scale`` is shown to the model (below
    ``ADAPT_BELOW``): rising linearly from ``ADAPT_BELOW`` to ``SHOWN_AT_MIN`` as the head
    shrinks to ``MIN_SCALE``.

    >>> [round(shown_scale(s), 2) for s in (0.85, 0.7, 0.6, 0.5)]
    [0.85, 0.94, 1.0, 1.0]
    """
    t = (ADAPT_BELOW - max(scale, MIN_SCALE)) / (ADAPT_BELOW - MIN_SCALE)
    return ADAPT_BELOW + t * (SHOWN_AT_MIN - ADAPT_BELOW)


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda`` (or ``cuda:N``) into a torch device; ``auto`` prefers CUDA."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def model_sha256(model_dir: Path) -> str:
    """SHA-256 over the model folder's plans, dataset, checkpoint and ONNX files (sorted by path)."""
    digest = hashlib.sha256()
    model_dir = Path(model_dir)
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in {".json", ".pth", ".onnx"}:
            digest.update(path.relative_to(model_dir).as_posix().encode())
            with open(path, "rb") as fobj:
                for chunk in iter(lambda: fobj.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class MaskPrediction:
    """Masks on the input image's grid (boolean arrays of the image's 3D shape)."""

    face: np.ndarray
    """Voxels to remove, after cleaning and the brain guard."""
    brain: np.ndarray
    """Voxels predicted as brain."""
    face_raw_voxels: int
    """Face voxels predicted before the brain guard."""
    guard_voxels: int
    """Face voxels the brain guard gave back."""
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    spacing_mm: tuple[float, ...] = ()
    """Voxel size (z, y, x) at which the model saw the image (finer than the plan's for small heads)."""
    guard_mm: dict[str, float] = field(default_factory=dict)
    """Brain guard applied to each part of the mask: ``face`` (the model's) and ``ears``
    (the ear zone, when added)."""
    guard_brain: np.ndarray | None = None
    """The brain the guard kept its distance from (:func:`upsample_labels`): on thick
    slices on a grid that splits each slab into sub-slices."""
    input_kind: InputKind | None = None
    """What the image holds (:func:`bids_deface.inputs.judge_input`); nothing is removed
    unless it is a head with a face."""
    face_predicted: np.ndarray | None = None
    """The network's face label before cleaning, the ear zone and the guard (for the QC
    verdict's evidence, :mod:`bids_deface.qc`)."""
    pose: HeadPose | None = None
    """The head's pose from the first pass's brain (:func:`bids_deface.pose.head_pose`)."""
    upright: bool = False
    """Whether the masks were made in the head's upright frame (a tilted head)."""
    face_in_front_ml: float = 0.0
    """In the upright frame: the network's face in front of the brain
    (:func:`bids_deface.pose.face_in_front_ml`)."""

    def label_map(self) -> np.ndarray:
        """The network's labels on the image's grid: 0 keep, 1 face (as predicted), 2 brain."""
        out = np.zeros(self.brain.shape, np.uint8)
        if self.face_predicted is not None:
            out[self.face_predicted] = LABELS["face"]
        out[self.brain] = LABELS["brain"]
        return out

    @property
    def notes(self) -> tuple[str, ...]:
        """QC flags from the input's kind (``no_face_in_image``, ``not_a_head``, ...) and
        ``loud_background`` (:func:`bids_deface.inputs.loud_background`)."""
        if self.input_kind is None:
            return ()
        flags = (self.input_kind.flag,) if self.input_kind.flag else ()
        return flags + (("loud_background",) if self.input_kind.loud_background else ())


def _as_3d_float(img: nib.Nifti1Image) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    elif data.ndim != 3:
        raise ValueError(f"expected a 3D image (or 4D with volumes last), got shape {data.shape}")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data


def _ras_frame(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """Orientation of ``img`` to RAS axis order and its voxel sizes in that order."""
    ornt = nib.orientations.io_orientation(img.affine)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)[ornt[:, 0].astype(int).argsort()]
    return ornt, zooms


def _to_ras(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation, voxel data (float32, 3D) and voxel sizes of ``img`` in RAS axis order
    (flips and axis swaps only, no interpolation)."""
    ornt, zooms = _ras_frame(img)
    return ornt, nib.orientations.apply_orientation(_as_3d_float(img), ornt), zooms


#: Public name of :func:`_to_ras` for the modules that judge images in RAS axis order.
to_ras = _to_ras


def _from_ras(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`_to_ras` on an array computed in RAS axis order."""
    back = nib.orientations.apply_orientation(
        arr, nib.orientations.ornt_transform(np.c_[np.arange(3), np.ones(3)], ornt))
    return np.ascontiguousarray(back)


#: The most brain (mm²) on an image's bottom slice of a brain the field of view does not
#: cut: a brainstem running out of the image (common in axial clinical scans) stays below
#: it; a cut through the cerebellum or the temporal lobes does not.
BRAINSTEM_MM2 = 400.0


def brain_cut_below(brain: np.ndarray, zooms: Sequence[float], limit_mm2: float = BRAINSTEM_MM2) -> bool:
    """Whether ``brain`` (RAS axis order, its largest part) runs out of the image's
    bottom: more than ``limit_mm2`` of it on the bottom slice.

    >>> brain = np.zeros((40, 40, 40), bool); brain[5:35, 5:35, 5:35] = True
    >>> brain_cut_below(brain, (3.0, 3.0, 3.0)), brain_cut_below(brain[:, :, 10:], (3.0, 3.0, 3.0))
    (False, True)
    """
    return bool(np.count_nonzero(brain[:, :, 0]) * float(zooms[0]) * float(zooms[1]) > limit_mm2)


def head_scale(brain: np.ndarray, zooms: Sequence[float], border_mm2: float = 50.0,
               brainstem_mm2: float = BRAINSTEM_MM2, largest: bool = False) -> float | None:
    """Linear size of a head relative to the adult training heads, from the volume of its
    predicted brain: ``(volume / ADULT_BRAIN_ML) ** (1/3)``.

    ``brain`` and ``zooms`` are in RAS axis order (``brain[:, :, 0]`` is the inferior
    face of the image). Only the largest connected part of ``brain`` counts: a stray speck
    of brain label neither adds to the volume nor makes the brain look cut. ``None`` when
    there is no brain, or when the brain is cut by the field of view: more than
    ``border_mm2`` of it on one of the image's outer faces, or, on the inferior face, more
    than ``brainstem_mm2`` (a brainstem running out of the image at the bottom, common
    in axial clinical scans, leaves the volume nearly whole; a cut through the cerebellum or
    the temporal lobes does not). A cut brain's volume says nothing about the head's size.
    ``largest=True`` says that ``brain`` is already its largest connected part.

    Examples
    --------
    >>> brain = np.zeros((40, 40, 40), bool); brain[5:35, 5:35, 5:35] = True
    >>> round(head_scale(brain, (3.0, 3.0, 3.0)), 3)   # 729 mL
    0.776
    >>> head_scale(brain[:20], (3.0, 3.0, 3.0)) is None
    True
    >>> brain[0, 20:30, 20:30] = True   # a speck on the border, apart from the brain
    >>> round(head_scale(brain, (3.0, 3.0, 3.0)), 3)
    0.776
    >>> brain[18:23, 18:23, :5] = True   # a brainstem of 2.25 cm² out of the bottom
    >>> round(head_scale(brain, (3.0, 3.0, 3.0)), 3)
    0.777
    >>> head_scale(brain[:, :, 10:], (3.0, 3.0, 3.0)) is None   # the bottom cut off
    True
    """
    if not brain.any():
        return None
    if not largest:
        brain = largest_component(brain)
    zooms = tuple(float(z) for z in zooms)
    if brain_cut_below(brain, zooms, brainstem_mm2):
        return None
    for axis in range(3):
        face_mm2 = float(np.prod([z for k, z in enumerate(zooms) if k != axis]))
        for end in ((-1,) if axis == 2 else (0, -1)):
            if np.count_nonzero(brain[(slice(None),) * axis + (end,)]) * face_mm2 > border_mm2:
                return None
    ml = float(np.count_nonzero(brain)) * float(np.prod(zooms)) / 1000.0
    return (ml / ADULT_BRAIN_ML) ** (1.0 / 3.0)


def image_head_scale(img: nib.Nifti1Image, brain: np.ndarray) -> float | None:
    """:func:`head_scale` of the brain mask ``brain`` on the grid of ``img``."""
    ornt, zooms = _ras_frame(img)
    return head_scale(nib.orientations.apply_orientation(brain, ornt), tuple(zooms))


def upsample_labels(logits: torch.Tensor, shape: list[int],
                    spacing: list[float], guard_margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels on a grid of ``shape`` (voxel size ``spacing``) from ``logits`` (classes
    first, on the model's grid over the same box), and the brain the guard keeps its
    distance from.

    The logits are upsampled trilinearly on torch (nnU-Net's export resamples each class
    with scikit-image, several times slower on a 1 mm head) and the label is the class
    that wins at each voxel centre. The guard's brain is that label map's brain; on thick
    slices it is drawn finer, at the centres of the sub-slices of
    :func:`bids_deface.deface.slab_splits` (``shape`` times those splits), so that the
    guard knows where within its slab the network puts the brain
    (:func:`bids_deface.deface.guard_distance_mm`). With ``guard_margin`` > 0 the guard's
    brain also holds the voxels where the brain's logit falls short of the winner's by
    less than ``guard_margin`` (three classes only).

    Examples
    --------
    >>> logits = torch.zeros(3, 2, 1, 1); logits[0] = 0.5; logits[2, 0] = 1.0
    >>> seg, brain = upsample_labels(logits, [4, 1, 1], [1.0, 1.0, 1.0])
    >>> seg.ravel().tolist(), brain.ravel().tolist()
    ([2, 2, 0, 0], [True, True, False, False])

    Two 3 mm slabs, each split into three sub-slices: the brain reaches into the lowest
    sub-slice of the second slab, whose centre is not brain.

    >>> logits = torch.zeros(3, 2, 1, 1); logits[0] = 0.2; logits[2, 0] = 1.0
    >>> seg, brain = upsample_labels(logits, [2, 1, 1], [3.0, 1.0, 1.0])
    >>> seg.ravel().tolist(), brain.ravel().astype(int).tolist()
    ([2, 0], [1, 1, 1, 1, 0, 0])

    The guard's brain at a margin of 1: also where the brain's logit trails by up to 1.

    >>> logits = torch.zeros(3, 4, 1, 1); logits[0] = 1.0; logits[2] = torch.tensor([2.0, 1.0, 0.5, -0.5])[:, None, None]
    >>> seg, brain = upsample_labels(logits, [4, 1, 1], [1.0, 1.0, 1.0], guard_margin=1.0)
    >>> seg.ravel().tolist(), brain.ravel().astype(int).tolist()
    ([2, 0, 0, 0], [1, 1, 1, 0])
    """
    splits = slab_splits(spacing)
    with torch.inference_mode():
        # the winner of three classes needs only two differences (face - keep, brain - keep),
        # and interpolation commutes with them: a third less to upsample
        diff = logits.shape[0] == 3
        if diff:
            logits = logits[1:] - logits[:1]
        up = torch.nn.functional.interpolate(logits[None], size=shape, mode="trilinear",
                                             align_corners=False)[0]
        seg = _winning_labels(up, diff)

        def guard(values: torch.Tensor, labels: np.ndarray | None = None) -> np.ndarray:
            if guard_margin > 0 and diff:
                return (values[1] - torch.clamp(values[0], min=0.0) > -guard_margin).numpy()
            return (labels if labels is not None else _winning_labels(values, diff)) == LABELS["brain"]

        if all(k == 1 for k in splits):
            return seg, guard(up, seg)
        brain = np.zeros([n * k for n, k in zip(shape, splits)], bool)
        for offset, sub in sub_slice_logits(logits, shape, splits):
            brain[tuple(slice(o, None, k) for o, k in zip(offset, splits))] = guard(sub)
    return seg, brain


@torch.inference_mode()
def sub_slice_logits(logits: torch.Tensor, shape: list[int], splits: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """``(offset, logits)`` for every sub-slice offset of a grid of ``shape`` whose voxels
    are split ``splits`` times along each axis: the trilinear upsampling of ``logits`` (on
    the model's grid over the same box) at the centres of those sub-slices, on ``shape``.

    Trilinear is separable: along the split axes to every sub-slice first (on the model's
    coarse grid in-plane), then in-plane for each offset.
    """
    along = torch.nn.functional.interpolate(
        logits[None], size=[n * k if k > 1 else m for n, k, m in zip(shape, splits, logits.shape[1:])],
        mode="trilinear", align_corners=False)[0]
    for offset in np.ndindex(*splits):
        view = along[(slice(None), *(slice(o, None, k) for o, k in zip(offset, splits)))]
        yield offset, torch.nn.functional.interpolate(view[None], size=shape, mode="trilinear",
                                                      align_corners=False)[0]


def _winning_labels(logits: torch.Tensor, differences: bool = False) -> np.ndarray:
    """The winning label at each voxel as uint8, the first of equal ones: ``logits.argmax(0)``,
    or with ``differences``, of three classes given as their logits less the first class's
    (face - keep, brain - keep), by comparisons.

    >>> l3 = torch.tensor([[0.0, 1.0, 2.0, 1.0], [1.0, 1.0, 0.0, 1.0], [0.0, 2.0, 2.0, 1.0]])
    >>> _winning_labels(l3).tolist(), _winning_labels(l3[1:] - l3[:1], differences=True).tolist()
    ([1, 2, 0, 0], [1, 2, 0, 0])
    """
    if not differences:
        return logits.argmax(0).to(torch.uint8).numpy()
    face, brain = logits[0], logits[1]
    out = (face > 0).to(torch.uint8)
    out[(brain > 0) & (brain > face)] = 2
    return out.numpy()


class FaceModel:
    """A loaded face-and-ears model.

    Parameters
    ----------
    model_dir : Path
        nnU-Net v2 model folder: ``dataset.json``, ``plans.json`` and ``fold_*/``.
    device : {"auto", "cpu", "cuda"}
        Where to run; ``auto`` takes CUDA when available.
    threads : int or None
        CPU threads for the network and torch; ``None`` leaves torch's setting.
    checkpoint : str
        Checkpoint file name in the folder's ``fold_*/``.
    guard_margin : float
        The brain guard keeps its distance from the voxels whose brain logit comes within
        this much of the winning label's (:func:`upsample_labels`); 0: the brain label.
    mirror : bool
        The mask's predictions also see the image mirrored left to right, and average the
        two (test-time mirroring; twice the network's time). :meth:`label_map_ras`, which
        the QC's evidence uses, never mirrors.
    cut_pad_mm : float
        Where the field of view cuts through the head at its top or bottom (a slab from the
        orbits up), the mask's predictions see the image continued up or down by this much
        (:func:`bids_deface.engine.cut_sides`); 0: as it is. :meth:`label_map_ras` never pads.
    slab_pad_mm : float
        Where the network's brain runs out of the image's bottom (:func:`brain_cut_below`:
        a slab from the orbits up), the network runs once more on the image continued down
        by this much, and that pass makes the mask; 0: never. An image whose brain is not
        cut so is masked as without it.
    slab_guard_both : bool
        With ``slab_pad_mm``, the brain guard keeps its distance from the brain of both
        passes (the image as it is, and continued), not the continued pass's alone.

    runtime : str
        Where the network runs (:data:`bids_deface.settings.RUNTIMES`): ``auto`` takes, on the
        CPU, OpenVINO or else ONNX Runtime when the folder holds its checkpoint's ONNX
        export, PyTorch otherwise (:class:`bids_deface.engine.Network`).
    """

    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        threads: int | None = None,
        checkpoint: str = "checkpoint_final.pth",
        guard_margin: float = 0.0,
        mirror: bool = False,
        cut_pad_mm: float = 0.0,
        slab_pad_mm: float = 24.0,
        slab_guard_both: bool = True,
        runtime: str = "auto",
    ) -> None:
        from .engine import Network

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "plans.json").is_file():
            raise FileNotFoundError(f"{self.model_dir} is not an nnU-Net v2 model folder (no plans.json)")
        self.device = resolve_device(device)
        self.guard_margin = float(guard_margin)
        self.mirror = bool(mirror)
        self.cut_pad_mm = float(cut_pad_mm)
        self.slab_pad_mm = float(slab_pad_mm)
        self.slab_guard_both = bool(slab_guard_both)
        if threads:
            torch.set_num_threads(int(threads))
        set_threads(threads or torch.get_num_threads())
        self._network = Network(self.model_dir, self.device, threads=threads, checkpoint=checkpoint,
                                runtime=runtime)
        #: the runtime the network runs in, with its version (e.g. ``openvino 2026.4.1``)
        self.runtime = self._network.backend
        self.spacing_zyx = self._network.spacing
        # the dataset's name from the plans (the folder may be anywhere, e.g. /model)
        self.name = self._network.dataset_name
        self.sha256 = model_sha256(self.model_dir)
        logger.info("loaded model %s (%s) on %s, network in %s", self.name, self.sha256[:12], self.device,
                    self._network.backend)

    def adapted_spacing(self, scale: float | None) -> tuple[float, ...]:
        """The model's voxel size for a head of linear size ``scale`` (see :func:`head_scale`):
        the plan's spacing for a head of ``ADAPT_BELOW`` or larger, or of unknown size; for a
        smaller head the spacing that shows it at :func:`shown_scale` (3 mm × 0.6 / 1.0 =
        1.8 mm for a newborn-size head, 3 mm × 0.7 / 0.94 = 2.2 mm for a 0.7-size child)."""
        if scale is None or scale >= ADAPT_BELOW:
            return self.spacing_zyx
        factor = max(scale, MIN_SCALE) / shown_scale(scale)
        return tuple(round(s * factor, 3) for s in self.spacing_zyx)

    def _labels_ras(self, ras: np.ndarray, ras_zooms: np.ndarray, spacing_zyx: tuple[float, ...] | None = None,
                    clock: _Clock | None = None, plain: bool = False,
                    pad_below: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Label map and guard brain (:func:`upsample_labels`) of an image in RAS axis
        order (:func:`_to_ras`), with the model seeing it at ``spacing_zyx`` (nnU-Net's
        ``[z, y, x]`` order; default: the plan's), mirrored and padded as the model's
        ``mirror`` and ``cut_pad_mm`` say unless ``plain``, continued down by
        ``slab_pad_mm`` where ``pad_below``: C-contiguous RAS arrays."""
        spacing = [float(z) for z in ras_zooms]
        cut_pad_mm = self.slab_pad_mm if pad_below else 0.0 if plain else self.cut_pad_mm
        # nnU-Net's NibabelIO convention: the network sees RAS [x, y, z] as [z, y, x]
        logits = self._network.logits(ras, spacing, (spacing_zyx or self.spacing_zyx)[::-1], axes=(2, 1, 0),
                                      mirror=(0,) if self.mirror and not plain else (), cut_pad_mm=cut_pad_mm,
                                      cut_axes=(2,), cut_ends=(True, not pad_below))
        if clock is not None:
            clock.lap("network")
        shape = [b.stop - b.start for b in logits.box]
        seg, brain = upsample_labels(logits.values, shape, spacing, self.guard_margin)
        out = []
        for part in (seg, brain):
            # the guard's brain may split the voxels into sub-slices (``upsample_labels``)
            splits = [p_ // s_ for p_, s_ in zip(part.shape, shape)]
            where = tuple(slice(b.start * k, b.stop * k) for b, k in zip(logits.box, splits))
            full = np.zeros([n * k for n, k in zip(logits.shape, splits)], part.dtype)
            full[where] = part
            out.append(full)
        if clock is not None:
            clock.lap("resample_back")
        return out[0], out[1]

    def _labels(self, img: nib.Nifti1Image,
                spacing_zyx: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Label map and guard brain (:func:`upsample_labels`) on the grid of ``img``."""
        ornt, ras, ras_zooms = _to_ras(img)
        seg, brain = self._labels_ras(ras, ras_zooms, spacing_zyx)
        return _from_ras(seg, ornt), _from_ras(brain, ornt)

    def label_map_ras(self, data: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
        """Label map (0 keep, 1 face, 2 brain) of an image already in RAS axis order
        (``data``, voxel sizes ``zooms``), on that grid, with the model at its plan's spacing."""
        return self._labels_ras(np.ascontiguousarray(data, np.float32), np.asarray(zooms, float), plain=True)[0]

    def predict_labels(self, img: nib.Nifti1Image, spacing_zyx: tuple[float, ...] | None = None) -> np.ndarray:
        """Label map (0 keep, 1 face, 2 brain) on the grid of ``img``, with the model
        seeing the image at ``spacing_zyx`` (default: the plan's spacing)."""
        return self._labels(img, spacing_zyx)[0]

    def ear_zone(self, img: nib.Nifti1Image, brain: np.ndarray) -> np.ndarray:
        """The ear zone of :func:`bids_deface.anatomy.ear_zone` on the grid of ``img``
        (:func:`ear_zone_ras`)."""
        ornt, data, zooms = _to_ras(img)
        return _from_ras(ear_zone_ras(data, zooms, nib.orientations.apply_orientation(brain, ornt)), ornt)

    def predict(
        self, img: nib.Nifti1Image, guard_mm: float = 4.0, min_component_ml: float = 0.5,
        ears: bool = True, upright: bool = True, ear_guard_mm: float | None = None,
    ) -> MaskPrediction:
        """Face and brain masks of ``img`` with the brain guard applied.

        Parameters
        ----------
        img : nibabel image
            Any orientation, voxel size and dtype; 4D images use their first volume.
        guard_mm : float
            No face voxel is kept within this distance of the predicted brain (on
            thick slices from any part of the face voxel's slab to the brain drawn on
            sub-slices of the slabs: see :func:`bids_deface.deface.guard_distance_mm`). For a small head, predicted on
            finer voxels (:meth:`adapted_spacing`), the model's face is guarded by this
            distance shrunk in proportion to the voxel, the ear zone by ``BRAIN_MARGIN_MM``
            plus the rest of it shrunk so (3.3 mm for a newborn-size head).
        min_component_ml : float
            Face islands smaller than this are dropped before the guard, and so are the
            parts lying wholly behind the ears (:func:`bids_deface.anatomy.drop_behind_ears`).
        ears : bool
            Add the ear zone placed from the predicted brain
            (:func:`bids_deface.anatomy.ear_zone`) to the model's face and ears.
        upright : bool
            Mask a head tilted by more than :data:`bids_deface.pose.TILT_LIMIT_DEG` in its
            upright frame (:meth:`_predict_upright`), and a head on its side or prone under
            a supine header turned back (:mod:`bids_deface.pose`).
        ear_guard_mm : float, optional
            The ear zone's guard at adult size, where it differs from ``guard_mm`` (shrunk
            for a small head as ``guard_mm`` is).

        Every step works on one C-contiguous RAS copy of the image; the masks are brought
        back to the image's axis order at the end.
        """
        clock = _Clock()
        ornt, ras, ras_zooms = _to_ras(img)
        ras = np.ascontiguousarray(ras)
        zooms = tuple(float(z) for z in ras_zooms)
        clock.lap("conform")
        quiet = quiet_background(ras, zooms)
        loud = quiet is not None
        if loud:
            # an MP2RAGE UNIT1 image, a T1 map: the head in noise as loud as its tissue
            logger.info("the background is noise as loud as the head's tissue (an MP2RAGE UNIT1 image?): the head "
                        "is judged and masked with its background set to the image's lowest value")
            ras = quiet
        del quiet
        clock.lap("input_kind")
        seg, guard_brain = self._labels_ras(ras, ras_zooms, clock=clock)
        brain = largest_component(seg == LABELS["brain"])
        if self.slab_pad_mm > 0 and brain_cut_below(brain, zooms):
            # a slab from the orbits up: the network sees what its bottom cuts continued down
            logger.info("the brain runs out of the image's bottom: the network sees the image continued "
                        "%.0f mm down", self.slab_pad_mm)
            seg, padded_brain = self._labels_ras(ras, ras_zooms, clock=clock, pad_below=True)
            guard_brain = guard_brain | padded_brain if self.slab_guard_both else padded_brain
            brain = largest_component(seg == LABELS["brain"])
        kind = judge_input(ras, zooms, brain, seg == LABELS["face"], largest=True)
        if loud:
            kind = dataclasses.replace(kind, loud_background=True)
        clock.lap("input_kind")
        if not kind.removable:
            logger.info("nothing removed: %s (tissue beyond the brain %.1f mL, brain %.0f mL, "
                        "neighbour correlation %.2f)", kind.description, kind.face_tissue_ml, kind.brain_ml,
                        kind.correlation)
            return MaskPrediction(
                face=np.zeros(img.shape[:3], bool), brain=_from_ras(seg == LABELS["brain"], ornt),
                face_raw_voxels=int(np.count_nonzero(seg == LABELS["face"])), guard_voxels=0,
                seconds=clock.total, timings=clock.laps, spacing_mm=self.spacing_zyx,
                guard_mm={}, guard_brain=_from_ras(guard_brain, ornt), input_kind=kind,
                face_predicted=_from_ras(seg == LABELS["face"], ornt))
        scale = head_scale(brain, zooms, largest=True)
        # (a brain cut by the field of view, whose size is unknown, has no pitch either)
        pose = head_pose(brain, zooms, pitch=scale is not None, turns=upright)
        clock.lap("pose")
        # the network's face in front of the brain as the head lies: a head turned under a
        # supine header (on its side, prone) is masked turned back only where it finds more
        here = face_in_front_ml(seg == LABELS["face"], brain, zooms) if upright and pose is not None else 0.0
        if upright and pose is not None and pose.turned:
            # on its side with a supine header: the face may look either way along the
            # mirror plane; the way the network finds more face in front of the brain is
            # kept, if it finds more than in the image's own axes
            best, front = None, here
            for reverse in (False, True):
                way = head_pose(brain, zooms, pitch=scale is not None, reverse=reverse)
                turned = self._predict_upright(ras, zooms, ornt, way, guard_brain, kind, clock,  # type: ignore[arg-type]
                                               guard_mm=guard_mm, min_component_ml=min_component_ml, ears=ears,
                                               ear_guard_mm=ear_guard_mm)
                logger.info("head turned by %.0f°: the network finds %.0f mL of face in front of the brain "
                            "(%.0f mL as it lies)", way.yaw, turned.face_in_front_ml, here)  # type: ignore[union-attr]
                if turned.face_in_front_ml > front:
                    best, front = turned, turned.face_in_front_ml
            if best is not None:
                return best
            logger.info("the head's mirror plane is turned by %.0f° but the network finds no more face in front "
                        "of the brain either way: masked as it lies", pose.yaw)
            pose = head_pose(brain, zooms, pitch=scale is not None, turns=False)
            clock.lap("pose")
        elif upright and pose is not None:
            if here < PRONE_CHECK_ML and self._face_ahead_turned(ras, ras_zooms, zooms, clock) >= max(
                    PRONE_RATIO * here, PRONE_AHEAD_ML):
                # little face in front, more with the image turned by a half turn: perhaps
                # prone under a supine header (the mirror plane where an upright head has it)
                way = head_pose(brain, zooms, pitch=scale is not None, reverse=True)
                back = self._predict_upright(ras, zooms, ornt, way, guard_brain, kind, clock,  # type: ignore[arg-type]
                                             guard_mm=guard_mm, min_component_ml=min_component_ml, ears=ears,
                                             ear_guard_mm=ear_guard_mm)
                if back.face_in_front_ml >= max(PRONE_RATIO * here, PRONE_FACE_ML):
                    logger.info("the network finds %.0f mL of face in front of the brain with the face looking "
                                "posterior (%.0f mL as it lies): masked as a prone head", back.face_in_front_ml, here)
                    return back
        if upright and pose is not None and pose.tilted:
            return self._predict_upright(ras, zooms, ornt, pose, guard_brain, kind, clock,
                                         guard_mm=guard_mm, min_component_ml=min_component_ml, ears=ears,
                                         ear_guard_mm=ear_guard_mm)
        spacing = self.adapted_spacing(scale)
        if spacing != self.spacing_zyx:
            # a small head: once more, at the finer spacing that shows it larger
            seg, guard_brain = self._labels_ras(ras, ras_zooms, spacing, clock=clock)
        face = seg == LABELS["face"]
        face_predicted = face.copy()
        brain = seg == LABELS["brain"]
        del seg
        face = drop_behind_ears(clean_face_mask(face, zooms, min_component_ml), brain, zooms)
        clock.lap("clean")
        # the guard shrinks with the voxel the model saw: a small head's brain is drawn on
        # finer voxels, and its boundary is off by less (on the training heads, up to 0.8
        # of that voxel beside the ears, 1.0 beside the face). The model's face, trained to
        # stay off the brain, is guarded by guard_mm scaled with the voxel; the ear zone,
        # placed by rule right against the predicted brain, keeps BRAIN_MARGIN_MM whole and
        # only the rest of guard_mm, the room for the boundary's error, shrinks
        ratio = min(1.0, spacing[0] / self.spacing_zyx[0])
        guards = {"face": guard_mm * ratio}
        parts = [(face, guards["face"])]
        if ears:
            ear_mm = guard_mm if ear_guard_mm is None else ear_guard_mm
            guards["ears"] = min(ear_mm, BRAIN_MARGIN_MM + (ear_mm - BRAIN_MARGIN_MM) * ratio)
            parts.append((ear_zone_ras(ras, ras_zooms, brain), guards["ears"]))
            clock.lap("ears")
        del ras
        guarded = brain_guard_parts(parts, guard_brain, zooms)
        clock.lap("guard")
        result = MaskPrediction(
            face=_from_ras(guarded.face, ornt),
            brain=_from_ras(brain, ornt),
            face_raw_voxels=int(np.count_nonzero(guarded.face)) + guarded.guard_voxels,
            guard_voxels=guarded.guard_voxels,
            seconds=0.0,
            spacing_mm=spacing,
            guard_mm=guards,
            guard_brain=_from_ras(guard_brain, ornt),
            input_kind=kind,
            face_predicted=_from_ras(face_predicted, ornt),
            pose=pose,
        )
        clock.lap("conform")
        return dataclasses.replace(result, seconds=clock.total, timings=clock.laps)

    def _face_ahead_turned(self, ras: np.ndarray, ras_zooms: np.ndarray, zooms: tuple[float, ...],
                           clock: _Clock) -> float:
        """The network's face in front of the brain (mL, first pass) with the image turned by
        a half turn about the superior axis in its grid (no resampling): the quick look that
        decides whether a head is masked the other way (:data:`bids_deface.pose.PRONE_AHEAD_ML`)."""
        seg, _ = self._labels_ras(np.ascontiguousarray(ras[::-1, ::-1]), ras_zooms)
        brain = largest_component(seg == LABELS["brain"])
        ahead = face_in_front_ml(seg == LABELS["face"], brain, zooms)
        clock.lap("pose")
        return ahead

    def _predict_upright(self, ras: np.ndarray, zooms: tuple[float, ...], ornt: np.ndarray, pose: HeadPose,
                         guard_brain: np.ndarray, kind: InputKind, clock: _Clock,
                         **options: float | bool | None) -> MaskPrediction:
        """Masks of a tilted head (``ras``, RAS axis order), made in its upright frame.

        The image is resampled (linearly) onto an isotropic grid in which the head sits
        upright (:class:`bids_deface.pose.UprightFrame`, as fine as the image's finest side,
        1 mm at the finest), and masked there by :meth:`predict` (network, cleaning, ear
        zone and brain guard). The face is brought back to the image's grid (nearest
        voxel) and guarded once more, by the smallest of the guards used upright, from
        the upright pass's brain brought back to the image's grid (on thick slices, to its
        sub-slices).

        The result records the network's face in front of the brain in the upright frame
        (:func:`bids_deface.pose.face_in_front_ml`).
        """
        frame = UprightFrame.of(pose, ras.shape, zooms)
        data = frame.upright(ras)
        affine = np.diag([frame.spacing] * 3 + [1.0])
        clock.lap("upright")
        inner = self.predict(nib.Nifti1Image(data, affine), upright=False, **options)  # type: ignore[arg-type]
        del data
        clock.add(inner.timings)
        front = face_in_front_ml(inner.face_predicted, inner.brain, (frame.spacing,) * 3)
        face = frame.back(inner.face)
        brain = frame.back(inner.brain)
        face_predicted = frame.back(inner.face_predicted)
        # the upright pass's guard brain alone: the first pass's is the one an upright head's own
        # path replaces too (drawn tilted, and for a small head on the plan's coarse voxels,
        # where it reaches into the orbits)
        splits = [g // n for g, n in zip(guard_brain.shape, ras.shape)]
        guard_brain = frame.back(inner.guard_brain, splits)
        margin = min(inner.guard_mm.values()) if inner.guard_mm else float(options.get("guard_mm", 4.0))
        guarded = brain_guard_parts([(face, margin)], guard_brain, zooms)
        clock.lap("upright")
        # the upright pass's guard counted its own voxels: in the image's, by volume
        inner_guard = int(round(inner.guard_voxels * frame.spacing ** 3 / float(np.prod(zooms))))
        result = MaskPrediction(
            face=_from_ras(guarded.face, ornt),
            brain=_from_ras(brain, ornt),
            face_raw_voxels=int(np.count_nonzero(guarded.face)) + guarded.guard_voxels + inner_guard,
            guard_voxels=guarded.guard_voxels + inner_guard,
            seconds=0.0,
            spacing_mm=inner.spacing_mm,
            guard_mm=dict(inner.guard_mm),
            guard_brain=_from_ras(guard_brain, ornt),
            input_kind=kind,
            face_predicted=_from_ras(face_predicted, ornt),
            pose=pose,
            upright=True,
            face_in_front_ml=front,
        )
        clock.lap("conform")
        return dataclasses.replace(result, seconds=clock.total, timings=clock.laps)


class _Clock:
    """Seconds spent per named stage (laps of the same name add up)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.last
        self.last = now

    def add(self, laps: dict[str, float]) -> None:
        """Add the stages another clock timed meanwhile to these; the next lap starts now."""
        for name, seconds in laps.items():
            self.laps[name] = self.laps.get(name, 0.0) + seconds
        self.last = time.perf_counter()

    @property
    def total(self) -> float:
        return self.last - self.start


def ear_zone_ras(data: np.ndarray, zooms: Sequence[float], brain: np.ndarray) -> np.ndarray:
    """The ear zone of :func:`bids_deface.anatomy.ear_zone` for an image ``data`` in RAS
    axis order (voxel sizes ``zooms``) and its ``brain``, on that grid.

    Computed on voxels of about 2 mm (block means of the image, any-brain blocks), then
    brought back to the image's grid.
    """
    zooms = np.asarray(zooms, float)
    f = block_factors(zooms, 2.0)
    czooms = zooms * f
    coarse_brain = block_reduce(brain, f, np.any)
    zone = ear_zone(head_mask(block_reduce(data, f), czooms), coarse_brain, czooms)
    return block_expand(zone, f, data.shape)
