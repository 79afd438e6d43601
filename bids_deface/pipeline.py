"""Deface one run, in a straight line, and many runs with per-run failure isolation.

One run: checksum → (skip when complete) → load → predict mask (+ brain guard) → deface →
write image, mask, mask sidecar, (with ``reface``, the refaced image and its sidecar,
:mod:`bids_deface.reface`), and last the image's sidecar, which marks the run complete.
The mask comes from a :class:`Masker`: the nnU-Net model in the app
(:func:`load_face_model`), any object with the same shape in tests.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, NamedTuple, Protocol, Sequence

import nibabel as nib
import numpy as np

from . import __version__
from .bids.discover import AnatRun, annex_key, annex_sha256
from .bids.companions import needs_magnitude, references
from .bids.outputs import (
    OutputPaths,
    SOURCE_DATASET,
    defaced_sidecar,
    mask_sidecar,
    output_paths,
    read_json,
    refaced_sidecar,
    sha256_file,
    write_json,
)
from .bids.scrub import Scrubber
from .deface import deface_image
from .errors import MissingContentError, ModelError
from .io import atomic_path, held_in_memory, load_nifti, remove_stale_temporaries, save_mask_like, save_raw_like

__all__ = [
    "Prediction",
    "Masker",
    "RunResult",
    "QC_THRESHOLDS",
    "qc_flags",
    "pose_flags",
    "qc_verdict",
    "judge_and_write",
    "load_face_model",
    "input_checksum",
    "same_input",
    "complete_outputs",
    "process_run",
    "process_runs",
    "summarise",
    "WorkerPool",
    "worker_pool",
]

logger = logging.getLogger(__name__)

Status = Literal["ok", "skipped", "failed"]

#: Limits behind the QC flags (heuristics for an adult head; a flag asks for a look).
QC_THRESHOLDS: Mapping[str, float] = {
    "small_face_ml": 25.0,
    "large_face_ml": 1500.0,
    "guard_fraction": 0.25,
}


class Prediction(Protocol):
    """What the pipeline reads from a mask prediction (see ``masking.MaskPrediction``)."""

    face: np.ndarray
    brain: np.ndarray
    face_raw_voxels: int
    guard_voxels: int
    seconds: float
    spacing_mm: tuple[float, ...]
    guard_mm: Mapping[str, float]


class Masker(Protocol):
    """Anything that predicts face masks: ``masking.FaceModel`` or a test double."""

    name: str
    sha256: str
    device: Any
    runtime: str

    def predict(self, img: nib.Nifti1Image) -> Prediction: ...


@dataclass(frozen=True)
class RunResult:
    """Outcome of one run."""

    run: AnatRun
    paths: OutputPaths | None
    status: Status
    sidecar: Mapping[str, Any] = field(default_factory=dict)
    """The defaced image's sidecar (with ``Defacing``); empty for a failed run."""
    error: str | None = None
    flags: tuple[str, ...] = ()
    seconds: float = 0.0
    figures: Any = None
    """The report's figures (:class:`bids_deface.reports.figures.RunFigures`), drawn by
    the run from its images in memory; None when the report draws them from the files."""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def verdict(self) -> str | None:
        """The QC verdict in the sidecar (:mod:`bids_deface.qc`); None when there is none."""
        qc = self.sidecar.get("Defacing", {}).get("QC") if self.sidecar else None
        return qc.get("Verdict") if isinstance(qc, Mapping) else None


def qc_flags(
    removed_voxels: int,
    removed_ml: float,
    brain_voxels: int,
    guard_voxels: int,
    raw_voxels: int,
    thresholds: Mapping[str, float] = QC_THRESHOLDS,
) -> tuple[str, ...]:
    """Flags that ask for a look at a run's result (none means nothing unusual).

    Examples
    --------
    >>> qc_flags(0, 0.0, 1000, 0, 0)
    ('no_face_removed',)
    >>> qc_flags(5000, 300.0, 0, 10, 5010)
    ('no_brain_found',)
    >>> qc_flags(9000, 400.0, 1000, 6000, 15000)
    ('guard_trimmed_face',)
    """
    flags = []
    if removed_voxels == 0:
        flags.append("no_face_removed")
    elif removed_ml < thresholds["small_face_ml"]:
        flags.append("small_face_mask")
    if removed_ml > thresholds["large_face_ml"]:
        flags.append("large_face_mask")
    if brain_voxels == 0:
        flags.append("no_brain_found")
    if raw_voxels and guard_voxels > thresholds["guard_fraction"] * raw_voxels:
        flags.append("guard_trimmed_face")
    return tuple(flags)


def load_face_model(model_dir: Path | None, device: str = "auto", threads: int | None = None,
                    runtime: str = "auto") -> Masker:
    """The nnU-Net face model (the shipped one when ``model_dir`` is None).

    Raises
    ------
    ModelError
        No model folder, or it cannot be loaded on ``device``.
    """
    from .data import default_model_dir

    try:
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (folder / "plans.json").is_file():
            raise FileNotFoundError(f"{folder} is not an nnU-Net v2 model folder (no plans.json)")
        from .masking import FaceModel

        return FaceModel(folder, device=device, threads=threads, runtime=runtime)
    except (FileNotFoundError, RuntimeError, ValueError, OSError, ImportError) as exc:
        raise ModelError(f"cannot load the face model: {exc}") from exc


def input_checksum(run: AnatRun) -> str | None:
    """SHA-256 of the run's image: of its content, or, for a git-annex link whose content
    was dropped, the one its key names (SHA256 backends); None when neither is known."""
    return sha256_file(run.path) if run.content_present else annex_sha256(run.path)


def same_input(defacing: Mapping[str, Any], run: AnatRun, checksum: str | None) -> bool:
    """Whether a ``Defacing`` record was made from the run's image as it is now: the same
    SHA-256 (``checksum``, see :func:`input_checksum`) or, for a git-annex link whose
    content was dropped after defacing, the same annex key (any backend)."""
    if checksum is not None and defacing.get("InputSHA256") == checksum:
        return True
    key = None if run.content_present else annex_key(run.path)
    return key is not None and defacing.get("InputAnnexKey") == key


def complete_outputs(paths: OutputPaths, run: AnatRun, checksum: str | None,
                     scrubbed: bool = False, mask_from: ReferenceMask | None = None) -> dict[str, Any] | None:
    """The defaced sidecar when every output of a run exists and was made from the run's
    image as it is now (:func:`same_input`), its metadata de-identified if ``scrubbed``
    is asked for, and, for a companion (``mask_from``: :func:`_reference_mask`), with the
    reference's mask as it is now; None when the run must be (re)done."""
    if not all(p.is_file() for p in paths.products):
        return None
    sidecar = read_json(paths.defaced_json)
    if not sidecar:
        return None
    defacing = sidecar.get("Defacing")
    if not isinstance(defacing, dict) or not same_input(defacing, run, checksum):
        return None
    if bool(defacing.get("MetadataScrubbed", False)) != scrubbed:
        return None
    if mask_from is not None and defacing.get("MaskFromSHA256") != mask_from.sha256:
        return None  # its reference was defaced again since
    return sidecar


def qc_verdict(masker: Masker, img: nib.Nifti1Image, defaced: np.ndarray,
               prediction: Prediction) -> dict[str, Any] | None:
    """The QC verdict on ``defaced`` (:func:`bids_deface.qc.verdict.judge_image`) as its
    sidecar record; None for a masker that is not the face model (it has no network to
    judge with)."""
    if not hasattr(masker, "label_map_ras"):
        return None
    from .qc.verdict import judge_image

    labels = prediction.label_map() if hasattr(prediction, "label_map") else None
    verdict = judge_image(masker, img, defaced, labels)
    logger.debug("%s: QC verdict %s (%.2f) in %.1f s", img.get_filename(), verdict.verdict, verdict.probability,
                 verdict.evidence.seconds)
    return verdict.record()


def pose_flags(prediction: Prediction) -> tuple[str, ...]:
    """``head_turned`` where the head lay turned in its image by a quarter or a half turn
    about the superior axis (on its side or prone under a header that says supine) and was
    masked turned back (:mod:`bids_deface.pose`); otherwise nothing."""
    pose = getattr(prediction, "pose", None)
    turned = bool(getattr(prediction, "upright", False)) and pose is not None and pose.turned
    return ("head_turned",) if turned else ()


def _defacing_record(
    masker: Masker, prediction: Prediction, img: nib.Nifti1Image, checksum: str, seconds: float,
    annex: str | None = None, qc: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    zooms = img.header.get_zooms()[:3]
    voxel_ml = float(np.prod([float(z) for z in zooms])) / 1000.0
    removed = int(np.count_nonzero(prediction.face))
    removed_ml = removed * voxel_ml
    brain_voxels = int(np.count_nonzero(prediction.brain))
    notes = tuple(getattr(prediction, "notes", ()))
    flags = notes + tuple(f for f in qc_flags(removed, removed_ml, brain_voxels, int(prediction.guard_voxels),
                                              int(prediction.face_raw_voxels)) if f not in notes)
    if "mask_of_companion" in notes:  # the brain was predicted on its reference, not on it
        flags = tuple(f for f in flags if f != "no_brain_found")
    flags += pose_flags(prediction)
    return {
        "Tool": "bids-deface",
        "Version": __version__,
        "Model": masker.name,
        "ModelSHA256": masker.sha256,
        "Device": str(masker.device),
        "Runtime": masker.runtime,
        "Seconds": round(seconds, 3),
        "PredictionSeconds": round(float(prediction.seconds), 3),
        "VoxelsRemoved": removed,
        "VolumeRemovedML": round(removed_ml, 3),
        "FaceVoxelsPredicted": int(prediction.face_raw_voxels),
        "GuardVoxels": int(prediction.guard_voxels),
        "BrainVoxels": brain_voxels,
        # (the prediction's spacing is in nnU-Net's z, y, x order; the sidecar's in R, A, S)
        "ModelSpacingMM": [float(v) for v in prediction.spacing_mm][::-1] or None,
        "BrainGuardMM": {k.capitalize(): round(float(v), 2) for k, v in prediction.guard_mm.items()} or None,
        "QCFlags": list(flags),
        **({"HeadPoseDeg": prediction.pose.record(), "UprightFrame": bool(getattr(prediction, "upright", False))}
           if getattr(prediction, "pose", None) is not None else {}),
        **({"InputKind": prediction.input_kind.kind}
           if getattr(prediction, "input_kind", None) is not None else {}),
        **({"QC": dict(qc)} if qc is not None else {}),
        "InputSHA256": checksum,
        **({"InputAnnexKey": annex} if annex else {}),
    }


def process_run(
    run: AnatRun, paths: OutputPaths, get_masker: Callable[[], Masker], overwrite: bool = False,
    scrubber: Scrubber | None = None, reference: tuple[AnatRun, OutputPaths | None] | None = None,
) -> RunResult:
    """Deface one run and write its outputs (or skip it when they are complete).

    When ``paths`` names a refaced image (``output_paths(..., reface=True)``) it is
    written too, with its sidecar. With ``scrubber`` the sidecars and headers of the
    outputs are de-identified (:mod:`bids_deface.bids.scrub`). With ``reference`` (the run
    and outputs of the image of its acquisition whose mask it takes,
    :mod:`bids_deface.bids.companions`), the run is defaced with that image's mask,
    written before. Raises whatever goes wrong; :func:`process_runs` isolates the failures.
    """
    t0 = time.perf_counter()
    checksum = input_checksum(run)
    reference_mask = _reference_mask(run, reference) if reference is not None else None
    if not overwrite:
        existing = complete_outputs(paths, run, checksum, scrubbed=scrubber is not None,
                                    mask_from=reference_mask)
        if existing is not None:
            flags = tuple(existing.get("Defacing", {}).get("QCFlags", ()))
            logger.debug("%s: outputs complete for this input, skipped", run.name)
            return RunResult(run, paths, "skipped", existing, None, flags,
                             time.perf_counter() - t0)
    if not run.content_present:
        raise MissingContentError(
            f"{run.path} is a link to content that is not present "
            "(for a datalad dataset, run `datalad get` on it first)"
        )
    if run.metadata_error:
        raise ValueError(run.metadata_error)
    assert checksum is not None
    # the sidecar marks completion: drop it before rewriting anything
    paths.defaced_json.unlink(missing_ok=True)
    for product in paths.products:
        for stale in remove_stale_temporaries(product):
            logger.debug("removed %s, left by an interrupted run", stale)

    img = load_nifti(run.path)
    if small_enough(img.shape):
        # read by the mask, the removal, the verdict and the figures: decompressed once
        img = held_in_memory(img)
    masker = get_masker()
    if reference_mask is not None:
        logger.info("%s takes the mask of %s (the same acquisition, on the same grid)", run.name,
                    reference_mask.uri.rsplit("/", 1)[-1])
        prediction: Prediction = companion_prediction(img, reference_mask.mask)
    else:
        prediction = masker.predict(img)
    face = np.asarray(prediction.face, dtype=bool)
    raw = deface_image(img, face)
    header = scrubber.header(img.header, paths.defaced.name) if scrubber else None
    # a companion's verdict is its reference's: the same voxels removed from the same head
    # (its own image may be a phase image, which the evidence cannot judge)
    judged = judge_and_write(masker, img, raw, prediction, paths.defaced, paths.mask, header,
                             judge=reference_mask is None,
                             verdict=reference_mask.verdict if reference_mask is not None else None,
                             draw=paths.refaced is None)
    qc, defaced_img, mask_img, figures = judged.qc, judged.defaced, judged.mask, judged.figures
    write_json(paths.mask_json, mask_sidecar(run))
    refaced = _reface(img, face, prediction) if paths.refaced is not None else None
    record = _defacing_record(masker, prediction, img, checksum, time.perf_counter() - t0,
                              annex_key(run.path), qc)
    if reference_mask is not None:
        record["MaskFrom"] = reference_mask.uri
        record["MaskFromSHA256"] = reference_mask.sha256
    metadata = None
    if scrubber is not None:
        record["MetadataScrubbed"] = True
        metadata = scrubber.sidecar(run.metadata, run.subject, paths.defaced_json.name)
    if refaced is not None and paths.refaced is not None and paths.refaced_json is not None:
        refaced_img = save_raw_like(refaced.raw, img, paths.refaced,
                                    header=scrubber.header(img.header, paths.refaced.name) if scrubber else None)
        if small_enough(img.shape[:3]):  # (larger: drawn by the report)
            figures = run_figures(img, defaced_img, mask_img, refaced_img)
        refaced_metadata = (scrubber.sidecar(run.metadata, run.subject, paths.refaced_json.name)
                            if scrubber is not None else None)
        write_json(paths.refaced_json, refaced_sidecar(run, record, refaced.record, refaced_metadata))
    sidecar = defaced_sidecar(run, record, metadata)
    write_json(paths.defaced_json, sidecar)
    paths.error_log.unlink(missing_ok=True)
    logger.debug("%s: removed %d voxels (%.1f mL) in %.1f s%s", run.name, record["VoxelsRemoved"],
                record["VolumeRemovedML"], record["Seconds"],
                f" [{', '.join(record['QCFlags'])}]" if record["QCFlags"] else "")
    return RunResult(run, paths, "ok", sidecar, None, tuple(record["QCFlags"]),
                     time.perf_counter() - t0, figures)


#: Images of more voxels than this (a 0.5 mm isotropic head has 92 M) are judged and written
#: one after the other (:func:`judge_and_write`): side by side they would need 1.5 times the
#: memory (5.9 GB against 3.6 GB on 180 M voxels).
BESIDE_MAX_VOXELS = 40_000_000


def small_enough(shape: Sequence[int]) -> bool:
    """Whether an array of ``shape`` has at most :data:`BESIDE_MAX_VOXELS` voxels: a run
    holds its image's file in memory, and judges beside writing and drawing, up to there."""
    return int(np.prod(shape)) <= BESIDE_MAX_VOXELS


class Judged(NamedTuple):
    """What :func:`judge_and_write` gives."""

    qc: dict[str, Any] | None
    defaced: nib.Nifti1Image
    """The defaced image as written, held in memory."""
    mask: nib.Nifti1Image
    figures: Any
    """The report's figures (:func:`run_figures`), or None."""
    seconds: dict[str, float]
    """``qc``, ``write`` and ``figures`` (each as it ran beside the other) and ``together``."""


def judge_and_write(masker: Masker, img: nib.Nifti1Image, raw: np.ndarray, prediction: Prediction,
                    defaced: Path, mask: Path, header: nib.Nifti1Header | None = None,
                    judge: bool = True, verdict: dict[str, Any] | None = None, draw: bool = True) -> Judged:
    """The QC verdict of ``img`` defaced to ``raw`` (:func:`qc_verdict`; without ``judge``,
    ``verdict`` instead), while in a second thread the defaced image (under ``header`` when
    given) and the face mask are written to ``defaced`` and ``mask`` and, with ``draw``,
    the report's figures drawn from them (:func:`run_figures`).

    On two cores the verdict's network runs beside the writing and drawing, which use one.
    When the verdict fails the two files are removed again. An image of more than
    :data:`BESIDE_MAX_VOXELS` is judged, then written, one after the other, and its figures
    are left to the report: the two side by side would hold both their arrays at once."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    def judged() -> dict[str, Any] | None:
        qc = qc_verdict(masker, img, raw, prediction) if judge else verdict
        seconds["qc"] = time.perf_counter() - t0
        return qc

    def write(draw: bool) -> tuple[nib.Nifti1Image, nib.Nifti1Image, Any]:
        t = time.perf_counter()
        written = save_raw_like(raw, img, defaced, header=header), \
            save_mask_like(np.asarray(prediction.face, bool), img, mask)
        seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        figures = run_figures(img, *written) if draw else None
        seconds["figures"] = time.perf_counter() - t
        return (*written, figures)

    if not small_enough(img.shape[:3]):
        qc = judged()
        defaced_img, mask_img, figures = write(draw=False)
    else:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bids-deface-write") as pool:
            writing = pool.submit(write, draw)
            try:
                qc = judged()
            except BaseException:
                wait([writing])
                for product in (defaced, mask):
                    product.unlink(missing_ok=True)
                raise
            defaced_img, mask_img, figures = writing.result()
    seconds["together"] = time.perf_counter() - t0
    return Judged(qc, defaced_img, mask_img, figures, seconds)


def run_figures(img: nib.Nifti1Image, defaced: nib.Nifti1Image, mask: nib.Nifti1Image,
                refaced: nib.Nifti1Image | None = None) -> Any:
    """The report's figures of a run (:func:`bids_deface.reports.figures.make_run_figures`),
    drawn from its images in memory; None when they cannot be drawn here (the report then
    draws them from the files, and says why it could not)."""
    try:
        from .reports.figures import make_run_figures
        return make_run_figures(img, defaced, mask, refaced)
    except Exception:  # never a reason for a run to fail: the report tries again
        logger.debug("figures of %s not drawn with the run", img.get_filename(), exc_info=True)
        return None


@dataclass(frozen=True)
class CompanionMask:
    """The mask of a companion image: its reference's (:mod:`bids_deface.bids.companions`),
    as the pipeline's prediction."""

    face: np.ndarray
    brain: np.ndarray
    face_raw_voxels: int
    guard_voxels: int = 0
    seconds: float = 0.0
    spacing_mm: tuple[float, ...] = ()
    guard_mm: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ("mask_of_companion",)


class ReferenceMask(NamedTuple):
    """The mask a companion image takes (:mod:`bids_deface.bids.companions`)."""

    mask: np.ndarray
    uri: str
    """The reference image, as a BIDS URI (``bids:raw:<path>``)."""
    sha256: str
    """SHA-256 of the reference's mask file: a companion made with another is redone."""
    verdict: dict[str, Any] | None = None
    """The reference's QC verdict (its sidecar's ``QC``), noted ``verdict_of_reference``."""


def _reference_mask(run: AnatRun, reference: tuple[AnatRun, OutputPaths | None]) -> ReferenceMask:
    """The mask of a companion's reference; raises where the reference was not defaced or
    its mask is not on the run's grid."""
    ref_run, ref_paths = reference
    if ref_paths is None or not ref_paths.defaced_json.is_file() or not ref_paths.mask.is_file():
        raise ValueError(f"{run.name} is defaced with the mask of {ref_run.name} (the same acquisition), which "
                         "was not defaced")
    mask_img = nib.load(ref_paths.mask)
    context = f"{run.name} is defaced with the mask of {ref_run.name} (the same acquisition)"
    # (a dropped annexed image is known by its key: see process_run)
    mask = mask_on_grid(mask_img, nib.load(run.path) if run.content_present else None, context)
    qc = (read_json(ref_paths.defaced_json) or {}).get("Defacing", {}).get("QC")
    verdict = {**qc, "Notes": [*qc.get("Notes", []), "verdict_of_reference"]} if isinstance(qc, dict) else None
    return ReferenceMask(mask, f"bids:{SOURCE_DATASET}:{ref_run.relpath}", sha256_file(ref_paths.mask), verdict)


def mask_on_grid(mask_img: nib.Nifti1Image, img: nib.Nifti1Image | None, context: str) -> np.ndarray:
    """The non-zero voxels of ``mask_img`` (its first volume) as a mask of ``img``; raises
    ``ValueError`` (its message begins with ``context``) where the two lie on other grids.
    ``img`` None: not checked."""
    if img is not None and (mask_img.shape[:3] != img.shape[:3]
                            or not np.allclose(mask_img.affine, img.affine, atol=1e-3)):
        raise ValueError(f"{context}, but the two images lie on other grids ({img.shape[:3]} and "
                         f"{mask_img.shape[:3]})")
    mask = np.asanyarray(mask_img.dataobj)
    return (mask[..., 0] if mask.ndim == 4 else mask) != 0


def companion_prediction(img: nib.Nifti1Image, mask: np.ndarray) -> CompanionMask:
    """The prediction of an image defaced with another's ``mask`` (its reference's): no brain
    predicted on it (the guard kept the mask from the other image's)."""
    return CompanionMask(face=mask, brain=np.zeros(img.shape[:3], bool), face_raw_voxels=int(np.count_nonzero(mask)))


def _reface(img: nib.Nifti1Image, face: np.ndarray, prediction: Prediction):  # type: ignore[no-untyped-def]
    """The refaced image (:func:`bids_deface.reface.reface_image`) with the face template
    loaded once per process (:func:`bids_deface.face_template.load_face_template`)."""
    from .face_template import load_face_template
    from .reface import reface_image

    result = reface_image(img, face, np.asarray(prediction.brain, bool), load_face_template())
    logger.debug("%s: refaced %d voxels in %.1f s", img.get_filename(), result.record.get("VoxelsRefaced", 0),
                 result.seconds)
    return result


class _OnceMasker:
    """Calls a masker factory the first time a masker is needed, then reuses it."""

    def __init__(self, factory: Callable[[], Masker]) -> None:
        self._factory = factory
        self._masker: Masker | None = None

    def __call__(self) -> Masker:
        if self._masker is None:
            self._masker = self._factory()
        return self._masker


def _write_error_log(path: Path, run: AnatRun, text: str) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(f"source: {run.path}\n\n{text}")
    except OSError:
        logger.exception("cannot write the error log %s", path)


def process_runs(
    runs: Sequence[AnatRun],
    output_dir: Path,
    get_masker: Callable[[], Masker],
    overwrite: bool = False,
    on_start: Callable[[AnatRun], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    scrubber: Scrubber | None = None,
    reface: bool = False,
    pool: WorkerPool | None = None,
) -> list[RunResult]:
    """Process ``runs``; a failing run does not stop the others (with ``reface``, each is
    also refaced). Results come back in the order of ``runs``.

    The traceback of a failed run goes to its error log under ``<output_dir>/logs/``.
    ``get_masker`` is called once per process, when the first run needs a mask, so a rerun
    that skips everything never loads the model. A :class:`~bids_deface.errors.ModelError`
    stops all.

    Parameters
    ----------
    on_start, on_result : callable, optional
        Called before and after each run (progress display).
    pool : WorkerPool, optional
        Worker processes (:func:`worker_pool`, which takes ``get_masker``): the runs are
        shared among them, each worker loading its own masker, and the pool is left
        running (e.g. for the reports). None: one run after the other, in this process.
    """
    claimed: dict[Path, AnatRun] = {}
    todo: list[Todo] = []
    refs = references(runs)
    for i, run in enumerate(runs):
        paths: OutputPaths | None = None
        clash = None
        try:
            paths = output_paths(run, output_dir, reface=reface)
            other = claimed.setdefault(paths.defaced, run)
            if other is not run:
                clash = f"{run.relpath} and {other.relpath} would both be written to {paths.defaced.name}"
        except Exception as exc:
            clash = f"{type(exc).__name__}: {exc}"
        if clash is None and run.relpath not in refs and needs_magnitude(run):
            clash = (f"{run.name} is a {run.entities.get('part')} image: it is defaced with the mask of its "
                     "magnitude image (part-mag, the same other entities), which is not among the selected runs")
        todo.append((i, run, paths, clash, refs.get(run.relpath)))
    # each reference before its companions (they take its mask)
    todo.sort(key=lambda t: (t[4] is not None, t[0]))
    if pool is not None:
        results = _process_in_workers(todo, output_dir, overwrite, on_start, on_result, scrubber, pool)
    else:
        masker = _OnceMasker(get_masker)
        done: dict[str, OutputPaths | None] = {}
        results = []
        for i, run, paths, clash, ref in todo:
            if on_start is not None:
                on_start(run)
            result = _run_isolated(run, paths, clash, masker, output_dir, overwrite, scrubber,
                                   _with_paths(ref, done))
            done[run.relpath] = paths
            results.append(result)
            if on_result is not None:
                on_result(result)
    order = {t[0]: k for k, t in enumerate(todo)}
    return [results[order[i]] for i in range(len(runs))]


#: One run to process: its index among the runs, the run, its outputs (None where they
#: cannot be named), why it cannot be processed at all, and its reference run.
Todo = tuple[int, AnatRun, "OutputPaths | None", "str | None", "AnatRun | None"]


def _with_paths(ref: AnatRun | None,
                done: Mapping[str, OutputPaths | None]) -> tuple[AnatRun, OutputPaths | None] | None:
    """The reference of a companion with its outputs (processed before; None where they
    could not be named)."""
    if ref is None:
        return None
    if ref.relpath not in done:
        raise RuntimeError(f"{ref.relpath} was to be processed before its companions")
    return ref, done[ref.relpath]


def _run_isolated(run: AnatRun, paths: OutputPaths | None, clash: str | None, masker: Callable[[], Masker],
                  output_dir: Path, overwrite: bool, scrubber: Scrubber | None,
                  reference: tuple[AnatRun, OutputPaths | None] | None = None) -> RunResult:
    """:func:`process_run`, its failure turned into a failed result with an error log
    (``clash``: why the run cannot be processed at all)."""
    t0 = time.perf_counter()
    try:
        if clash is not None:
            raise ValueError(clash)
        assert paths is not None
        return process_run(run, paths, masker, overwrite=overwrite, scrubber=scrubber, reference=reference)
    except (ModelError, KeyboardInterrupt):
        raise
    except Exception as exc:
        text = traceback.format_exc()
        error = f"{type(exc).__name__}: {exc}"
        logger.debug("%s failed: %s", run.name, error)
        if paths is not None:
            _write_error_log(paths.error_log, run, text)
            error = f"{error} (traceback in {paths.error_log.relative_to(output_dir)})"
        return RunResult(run, paths, "failed", {}, error, (), time.perf_counter() - t0)


#: A worker process's masker (:func:`_worker_start`).
_WORKER_MASKER: _OnceMasker | None = None


def _worker_start(get_masker: Callable[[], Masker], log_queue: Any, level: int) -> None:
    """In a worker process: its log records go to the parent's handlers through
    ``log_queue``, and its masker is loaded when its first run needs it."""
    import logging.handlers

    global _WORKER_MASKER
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(level)
    _WORKER_MASKER = _OnceMasker(get_masker)


def _worker_run(run: AnatRun, paths: OutputPaths | None, clash: str | None, output_dir: Path, overwrite: bool,
                scrubber: Scrubber | None, reference: tuple[AnatRun, OutputPaths | None] | None = None,
                ) -> tuple[RunResult, list[tuple[str, str, str]]]:
    """One run in a worker process, with the de-identification changes it made."""
    assert _WORKER_MASKER is not None
    if scrubber is not None:
        scrubber.changes = []
    result = _run_isolated(run, paths, clash, _WORKER_MASKER, output_dir, overwrite, scrubber, reference)
    return result, list(scrubber.changes) if scrubber is not None else []


class _ToOwnLoggers(logging.Handler):
    """Hands records from worker processes to the loggers of their names in this process."""

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        logger_ = logging.getLogger(record.name)
        if logger_.isEnabledFor(record.levelno):
            logger_.handle(record)
        return True


@dataclass
class WorkerPool:
    """Worker processes (:func:`worker_pool`): ``executor`` runs functions of this package
    in them; each worker loads its masker when its first run needs it."""

    executor: Any
    jobs: int


@contextlib.contextmanager
def worker_pool(jobs: int, get_masker: Callable[[], Masker]) -> Iterator[WorkerPool]:
    """``jobs`` worker processes (``spawn``), their log records handed to this process's
    loggers; ``get_masker`` must be picklable (e.g. a :func:`functools.partial` of
    :func:`load_face_model`)."""
    import concurrent.futures as cf
    import logging.handlers
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    log_queue = ctx.Queue()
    listener = logging.handlers.QueueListener(log_queue, _ToOwnLoggers(), respect_handler_level=False)
    listener.start()
    level = min(logging.getLogger().getEffectiveLevel(), logging.getLogger("bids_deface").getEffectiveLevel())
    try:
        with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_start,
                                    initargs=(get_masker, log_queue, level)) as executor:
            try:
                yield WorkerPool(executor, jobs)
            except BaseException:
                executor.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        listener.stop()
        log_queue.close()


def _process_in_workers(todo: Sequence[Todo], output_dir: Path,
                        overwrite: bool, on_start: Callable[[AnatRun], None] | None,
                        on_result: Callable[[RunResult], None] | None,
                        scrubber: Scrubber | None, pool: WorkerPool) -> list[RunResult]:
    """:func:`process_runs` in the pool's workers, at most one run per worker in flight; a
    companion is started once its reference has finished."""
    import concurrent.futures as cf

    results: dict[int, RunResult] = {}
    pending = list(todo)
    running: dict[cf.Future, int] = {}
    finished: dict[str, OutputPaths | None] = {}

    def submit() -> bool:
        """Start the first pending run that can start; whether one could."""
        for k, (i, run, paths, clash, ref) in enumerate(pending):
            if ref is not None and ref.relpath not in finished:
                continue
            del pending[k]
            if on_start is not None:
                on_start(run)
            future = pool.executor.submit(_worker_run, run, paths, clash, output_dir, overwrite, scrubber,
                                          _with_paths(ref, finished))
            running[future] = i
            return True
        return False

    try:
        while pending and len(running) < pool.jobs and submit():
            pass
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                i = running.pop(future)
                result, changes = future.result()  # a ModelError stops all
                if scrubber is not None:
                    scrubber.changes.extend(changes)
                results[i] = result
                finished[result.run.relpath] = result.paths
                if on_result is not None:
                    on_result(result)
            while pending and len(running) < pool.jobs and submit():
                pass
    except BaseException:
        for future in running:
            future.cancel()
        raise
    return [results[t[0]] for t in todo]


def summarise(results: Iterable[RunResult]) -> dict[str, int]:
    """Count of results per status.

    Examples
    --------
    >>> summarise([])
    {'ok': 0, 'skipped': 0, 'failed': 0}
    """
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    for r in results:
        counts[r.status] += 1
    return counts
