"""Settings of one invocation: frozen, typed, passed down explicitly, saved with the outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping

__all__ = ["DEFAULT_SUFFIXES", "Settings"]

#: Structural suffixes that can show a face (BIDS raw ``anat`` non-parametric images).
#: Runs with a ``ce-`` entity (contrast-enhanced) carry the same suffixes and are included.
DEFAULT_SUFFIXES: tuple[str, ...] = (
    "T1w",
    "T2w",
    "FLAIR",
    "PDw",
    "T2starw",
    "PDT2",
    "inplaneT1",
    "inplaneT2",
    "angio",
)

AnalysisLevel = Literal["participant", "group"]
DeviceName = Literal["auto", "cpu", "cuda"]
RuntimeName = Literal["auto", "openvino", "onnxruntime", "torch"]
#: What can run the network (:class:`bids_deface.engine.Network`); ``auto`` takes the first
#: of the others that is installed and applies.
RUNTIMES: tuple[str, ...] = ("auto", "openvino", "onnxruntime", "torch")


@dataclass(frozen=True)
class Settings:
    """Everything that decides what an invocation does.

    Built by :func:`bids_deface.cli.parser.parse_args`; library functions take the fields
    they need. :meth:`to_json` writes it next to the outputs for provenance.
    """

    bids_dir: Path
    """Input BIDS dataset (read only)."""
    output_dir: Path
    """Derivative dataset to write."""
    analysis_level: AnalysisLevel = "participant"
    participant_label: tuple[str, ...] = ()
    """Subject labels without ``sub-``; empty means every subject."""
    session_label: tuple[str, ...] = ()
    """Session labels without ``ses-``; empty means every session."""
    bids_filters: Mapping[str, Any] = field(default_factory=dict)
    """Parsed ``--bids-filter-file`` (see :func:`bids_deface.bids.discover.load_filters`)."""
    bids_filter_file: Path | None = None
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES
    device: DeviceName = "auto"
    runtime: RuntimeName = "auto"
    """What runs the network (:data:`RUNTIMES`)."""
    nprocs: int | None = None
    """CPU threads for the model; ``None`` leaves the library default."""
    jobs: int = 1
    """Runs processed at once, each in a process of its own; ``nprocs`` (or every CPU the
    process may use) is shared among them."""
    work_dir: Path | None = None
    """Scratch folder (validator reports); ``None`` uses a temporary folder."""
    model_dir: Path | None = None
    """nnU-Net v2 model folder; ``None`` uses the shipped model."""
    skip_bids_validation: bool = False
    overwrite: bool = False
    publish_dir: Path | None = None
    """``--output-layout raw``: the upload-ready copy of the input (``output_dir`` is then
    the QC folder beside it, :mod:`bids_deface.bids.publish`)."""
    scrub_metadata: bool = False
    """De-identify the metadata of the outputs (:mod:`bids_deface.bids.scrub`)."""
    scrub_fields: tuple[str, ...] = ()
    """Fields removed besides the default list (from ``--scrub-fields``)."""
    reface: bool = False
    """``--reface``: also write each image refaced (``_desc-refaced_<suffix>``): the face
    mask filled with the face of an average head (:mod:`bids_deface.reface`)."""
    qc_only: bool = False
    """``--qc-only``: judge the dataset's images as they are (audit mode,
    :mod:`bids_deface.qc.audit`); change nothing, write ``qc.tsv`` and reports."""
    verbosity: int = 0
    """0 warnings and run results, 1 info, 2 debug."""
    progress: bool = True
    """Show a progress bar when the log goes to a terminal."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings, tuples as lists).

        Examples
        --------
        >>> Settings(Path("/in"), Path("/out")).to_dict()["output_dir"]
        '/out'
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = json.loads(json.dumps(dict(value), default=str))
            out[f.name] = value
        return out

    def to_json(self) -> str:
        """The settings as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

