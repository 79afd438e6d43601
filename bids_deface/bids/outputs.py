"""Names and descriptions of the derivative dataset.

File names are rendered from the patterns below (data, not code) with pybids'
:func:`bids.layout.writing.build_path`; the entities come from the source name as pybids
parsed them, so no name is ever built by editing another name.

For a source ``sub-01_ses-1_acq-mp_ce-gad_run-2_T1w.nii.gz`` the outputs are::

    sub-01/ses-1/anat/sub-01_ses-1_acq-mp_ce-gad_run-2_desc-defaced_T1w.nii.gz   (+ .json)
    sub-01/ses-1/anat/sub-01_ses-1_acq-mp_ce-gad_run-2_label-face_desc-T1w_mask.nii.gz (+ .json)
    sub-01/ses-1/anat/sub-01_ses-1_acq-mp_ce-gad_run-2_desc-refaced_T1w.nii.gz   (+ .json, with --reface)

The mask follows the BIDS derivatives rule for masks (``_mask`` with ``label``, ``desc``
and ``"Type": "Face"`` in the sidecar). A mask loses the source's suffix, so the source
contrast goes into ``desc``: the masks of the T1w and the T2w of one session never collide.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bids.layout.writing import build_path

from .. import __version__
from ..io import atomic_path, sha256_file
from .discover import AnatRun

__all__ = [
    "BIDS_VERSION",
    "PIPELINE_NAME",
    "SOURCE_DATASET",
    "PATTERNS",
    "BIDSIGNORE",
    "GROUP_TSV",
    "GROUP_HTML",
    "OutputPaths",
    "output_paths",
    "subject_report_path",
    "source_uri",
    "dataset_links",
    "dataset_description",
    "write_dataset_description",
    "write_bidsignore",
    "write_readme",
    "defaced_sidecar",
    "refaced_sidecar",
    "mask_sidecar",
    "write_json",
    "read_json",
    "sha256_file",
    "detect_container",
]

logger = logging.getLogger(__name__)

#: BIDS version the outputs follow.
BIDS_VERSION = "1.10.0"
#: ``GeneratedBy[].Name`` and the pipeline folder name under ``derivatives/``.
PIPELINE_NAME = "bids-deface"
#: Key of the input dataset in ``DatasetLinks`` and in the BIDS URIs of ``Sources``.
SOURCE_DATASET = "raw"

_ENTITIES = (
    "sub-{subject}[_ses-{session}][_task-{task}][_acq-{acquisition}][_ce-{ceagent}]"
    "[_rec-{reconstruction}][_run-{run}][_echo-{echo}][_flip-{flip}][_inv-{inv}][_mt-{mt}][_part-{part}]"
    "[_chunk-{chunk}]"
)
_DIR = "sub-{subject}[/ses-{session}]/{datatype<anat>|anat}/"

#: Output name patterns (pybids ``build_path`` syntax), one per kind of file.
PATTERNS: Mapping[str, str] = {
    "defaced": _DIR + _ENTITIES + "_desc-{desc<defaced>|defaced}_{suffix}{extension<.nii.gz|.json>|.nii.gz}",
    "refaced": _DIR + _ENTITIES + "_desc-{desc<refaced>|refaced}_{suffix}{extension<.nii.gz|.json>|.nii.gz}",
    "mask": _DIR + _ENTITIES + "_label-{label<face>|face}_desc-{desc}_{suffix<mask>|mask}"
    "{extension<.nii.gz|.json>|.nii.gz}",
    "error_log": "logs/" + _ENTITIES + "_{suffix}_{desc<error>|error}{extension<.log>|.log}",
    "subject_report": "sub-{subject}{extension<.html>|.html}",
}

#: Output paths that are not BIDS files (kept out of validation by ``.bidsignore``).
BIDSIGNORE: tuple[str, ...] = ("logs/", "figures/", "*.html", "group.tsv")
#: Group level outputs, relative to the output folder.
GROUP_TSV = "group.tsv"
GROUP_HTML = "group.html"

#: Text of the derivative dataset's README.
README_TEXT = """# Defaced structural images (bids-deface)

Every selected structural image of the source dataset (`DatasetLinks.raw`) with the face
and ears set to background:

- `*_desc-defaced_<suffix>.nii.gz`: the image; header and every voxel outside the mask
  are those of the source. Its sidecar holds the source metadata and a `Defacing` record
  (tool and model versions, voxels removed, QC flags, input checksum).
- `*_label-face_desc-<suffix>_mask.nii.gz`: the voxels removed (1) on the source grid.
- `*_desc-refaced_<suffix>.nii.gz` (with `--reface`): the image with the removed voxels
  filled by the face of an average head (nobody's), mapped to the image's contrast; every
  voxel outside the mask is the source's. Its sidecar's `Refacing` record names the face
  template, where it came from and its licence.
- `sub-<label>.html`: visual report per subject; it shows the faces before defacing:
  leave these files out when publishing. `group.tsv`, `group.html`: summary.
- `logs/`: settings of each invocation, logs and tracebacks of failed runs (and, with
  `--scrub-metadata`, the secret of the date shifts and what was de-identified): leave it
  out when publishing.
"""

_NAME_ENTITIES = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction",
                  "run", "echo", "flip", "inv", "mt", "part", "chunk")


@dataclass(frozen=True)
class OutputPaths:
    """Where the outputs of one run go (``refaced`` and ``refaced_json`` with ``--reface``)."""

    defaced: Path
    defaced_json: Path
    mask: Path
    mask_json: Path
    error_log: Path
    refaced: Path | None = None
    refaced_json: Path | None = None

    @property
    def products(self) -> tuple[Path, ...]:
        """The files a complete run leaves (the defaced sidecar is written last)."""
        extra = ((self.refaced, self.refaced_json)
                 if self.refaced is not None and self.refaced_json is not None else ())
        return (self.defaced, self.mask, self.mask_json, *extra, self.defaced_json)


def _render(kind: str, entities: Mapping[str, str]) -> str:
    path = build_path(dict(entities), PATTERNS[kind], strict=False)
    if path is None:
        raise ValueError(f"cannot name the {kind} output for entities {dict(entities)}")
    return path


def output_paths(run: AnatRun, output_dir: Path, reface: bool = False) -> OutputPaths:
    """Output paths of ``run`` inside ``output_dir`` (with the refaced image's if ``reface``).

    Examples
    --------
    >>> run = AnatRun(Path("/d/sub-01/anat/sub-01_ce-gad_run-01_T2w.nii"),
    ...               "sub-01/anat/sub-01_ce-gad_run-01_T2w.nii",
    ...               {"subject": "01", "ceagent": "gad", "run": "01", "suffix": "T2w",
    ...                "datatype": "anat", "extension": ".nii"})
    >>> p = output_paths(run, Path("/o"))
    >>> p.defaced.as_posix(), p.mask.name
    ('/o/sub-01/anat/sub-01_ce-gad_run-01_desc-defaced_T2w.nii.gz', 'sub-01_ce-gad_run-01_label-face_desc-T2w_mask.nii.gz')
    >>> p.refaced is None, output_paths(run, Path("/o"), reface=True).refaced.name
    (True, 'sub-01_ce-gad_run-01_desc-refaced_T2w.nii.gz')
    """
    base = {k: run.entities[k] for k in _NAME_ENTITIES if run.entities.get(k)}
    base["datatype"] = "anat"
    suffix = run.suffix
    out = Path(output_dir)
    defaced = {**base, "desc": "defaced", "suffix": suffix}
    mask = {**base, "label": "face", "desc": suffix, "suffix": "mask"}
    refaced = {**base, "desc": "refaced", "suffix": suffix}
    return OutputPaths(
        defaced=out / _render("defaced", {**defaced, "extension": ".nii.gz"}),
        defaced_json=out / _render("defaced", {**defaced, "extension": ".json"}),
        mask=out / _render("mask", {**mask, "extension": ".nii.gz"}),
        mask_json=out / _render("mask", {**mask, "extension": ".json"}),
        error_log=out / _render("error_log", {**base, "suffix": suffix, "desc": "error",
                                               "extension": ".log"}),
        refaced=out / _render("refaced", {**refaced, "extension": ".nii.gz"}) if reface else None,
        refaced_json=out / _render("refaced", {**refaced, "extension": ".json"}) if reface else None,
    )


def subject_report_path(output_dir: Path, subject: str) -> Path:
    """``<output_dir>/sub-<label>.html``."""
    return Path(output_dir) / _render("subject_report", {"subject": subject, "extension": ".html"})


def source_uri(run: AnatRun) -> str:
    """BIDS URI of the source image, e.g. ``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``."""
    return f"bids:{SOURCE_DATASET}:{run.relpath}"


def dataset_links(bids_dir: Path, output_dir: Path) -> dict[str, str]:
    """``DatasetLinks`` of the output: the input as a relative path when the output lies
    inside it (``derivatives/<name>``), as a ``file://`` URI otherwise."""
    bids_dir, output_dir = Path(bids_dir).absolute(), Path(output_dir).absolute()
    try:
        output_dir.relative_to(bids_dir)
        link = Path(os.path.relpath(bids_dir, output_dir)).as_posix()
    except ValueError:
        link = bids_dir.as_uri()
    return {SOURCE_DATASET: link}


#: Written by the project's Dockerfile: the image's type and tag.
CONTAINER_MARKER = "opt/bids-deface/container.json"


def detect_container(root: Path = Path("/")) -> dict[str, str] | None:
    """``GeneratedBy[].Container`` when running in the bids-deface image, else None.

    The image says so in :data:`CONTAINER_MARKER`; a Singularity/Apptainer image built from
    it (``/.singularity.d``) keeps the tag with type ``singularity``. A pip install inside
    some other container records none: that container is not the tool's.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> detect_container(root) is None
    True
    >>> (root / "opt/bids-deface").mkdir(parents=True)
    >>> _ = (root / CONTAINER_MARKER).write_text('{"Type": "docker", "Tag": "bidsdeface/bids-deface:0.1.0"}')
    >>> detect_container(root)
    {'Type': 'docker', 'Tag': 'bidsdeface/bids-deface:0.1.0'}
    >>> (root / ".singularity.d").mkdir()
    >>> detect_container(root)["Type"]
    'singularity'
    """
    marker = read_json(Path(root) / CONTAINER_MARKER)
    if not isinstance(marker, dict) or not marker.get("Type"):
        return None
    info = {k: str(marker[k]) for k in ("Type", "Tag") if marker.get(k)}
    if (Path(root) / ".singularity.d").is_dir():
        info["Type"] = "singularity"
    return info


def dataset_description(bids_dir: Path, output_dir: Path, source_root: Path | None = None) -> dict[str, Any]:
    """``dataset_description.json`` of the derivative dataset in ``output_dir``, made from
    the input ``bids_dir``. Its links point to ``source_root`` (default: ``bids_dir``): the
    upload's derivative (``--output-layout raw``) links to the upload that holds it, by a
    relative path, which names no folder of the machine it was made on."""
    source = read_json(Path(bids_dir) / "dataset_description.json") or {}
    links = dataset_links(source_root if source_root is not None else bids_dir, output_dir)
    generated: dict[str, Any] = {
        "Name": PIPELINE_NAME,
        "Version": __version__,
        "Description": "Face and ears removed from structural MRI (nnU-Net v2 face mask, brain guard).",
        "CodeURL": "https://pypi.org/project/bids-deface/",
    }
    container = detect_container()
    if container:
        generated["Container"] = container
    source_entry: dict[str, Any] = {"URL": links[SOURCE_DATASET]}
    if source.get("DatasetDOI"):
        source_entry["DOI"] = source["DatasetDOI"]
    name = source.get("Name")
    desc: dict[str, Any] = {
        "Name": f"{name} (defaced)" if name else "Defaced structural images",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source_entry],
        "DatasetLinks": links,
    }
    if source.get("License"):
        desc["License"] = source["License"]
    return desc


def write_dataset_description(bids_dir: Path, output_dir: Path) -> Path:
    """Write (or refresh) ``dataset_description.json``; returns its path."""
    path = Path(output_dir) / "dataset_description.json"
    write_json(path, dataset_description(bids_dir, output_dir))
    return path


def write_bidsignore(output_dir: Path) -> Path:
    """Write ``.bidsignore`` with :data:`BIDSIGNORE`, keeping lines already there."""
    path = Path(output_dir) / ".bidsignore"
    lines = path.read_text().splitlines() if path.exists() else []
    missing = [entry for entry in BIDSIGNORE if entry not in lines]
    if missing or not path.exists():
        text = "\n".join([*lines, *missing]) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return path


def defaced_sidecar(run: AnatRun, defacing: Mapping[str, Any],
                    metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sidecar of the defaced image: the source metadata (after inheritance; or
    ``metadata``, e.g. de-identified), then ``Description``, ``Sources``, ``SkullStripped``
    and the ``Defacing`` record."""
    sidecar = dict(run.metadata if metadata is None else metadata)
    sidecar.update({
        "Description": "Source image with the face and ears set to background; every other "
                       "voxel and the header are unchanged.",
        "Sources": [source_uri(run)],
        "SkullStripped": False,
        "Defacing": dict(defacing),
    })
    return sidecar


def refaced_sidecar(run: AnatRun, defacing: Mapping[str, Any], refacing: Mapping[str, Any],
                    metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sidecar of the refaced image: the source metadata (or ``metadata``), then
    ``Description``, ``Sources``, ``SkullStripped``, the ``Defacing`` record of the mask it
    fills and the ``Refacing`` record (the face template, its source and licence)."""
    sidecar = dict(run.metadata if metadata is None else metadata)
    sidecar.update({
        "Description": "Source image with the face and ears replaced by the face of an average head "
                       "(nobody's), mapped to the image's contrast; every other voxel and the header are "
                       "unchanged.",
        "Sources": [source_uri(run)],
        "SkullStripped": False,
        "Defacing": dict(defacing),
        "Refacing": dict(refacing),
    })
    return sidecar


def mask_sidecar(run: AnatRun) -> dict[str, Any]:
    """Sidecar of the face mask."""
    return {
        "Type": "Face",
        "Description": f"Voxels removed from the {run.suffix} image (1 = face and ears, removed).",
        "Sources": [source_uri(run)],
        "SpatialReference": source_uri(run),
    }


def write_readme(output_dir: Path) -> Path:
    """Write a short ``README.md`` describing the derivative dataset, unless one exists."""
    path = Path(output_dir) / "README.md"
    if not any((Path(output_dir) / n).exists() for n in ("README", "README.md", "README.txt", "README.rst")):
        with atomic_path(path) as tmp:
            tmp.write_text(README_TEXT)
    return path


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
