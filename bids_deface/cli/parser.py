"""Command line of the BIDS App: a pure parser and its translation into :class:`Settings`.

``build_parser()`` only builds the parser (no I/O), so docs and tests can reuse it.
``parse_args(argv)`` parses, reads the filter file and checks the paths.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from .. import __version__
from ..bids.discover import load_filters, strip_prefix
from ..errors import UsageError
from ..settings import DEFAULT_SUFFIXES, RUNTIMES, Settings

__all__ = ["build_parser", "parse_args", "positive_int"]


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _label(text: str) -> str:
    if not text or not text.replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"{text!r} is not a BIDS label")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``bids-deface`` argument parser (pure: reads and checks nothing)."""
    parser = argparse.ArgumentParser(
        prog="bids-deface",
        description="Remove faces and ears from the structural MRI of a BIDS dataset. "
                    "Writes a BIDS derivative dataset: defaced images, face masks, sidecars "
                    "and HTML reports; never modifies the input.",
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="where to write the derivative dataset (outside the input, or "
                             "<bids_dir>/derivatives/<name>)")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="'participant' defaces the runs; 'group' summarises all runs in "
                             "group.tsv and group.html")

    sel = parser.add_argument_group("selecting runs")
    sel.add_argument("--participant-label", "--participant_label", nargs="+", type=_label,
                     default=[], metavar="LABEL",
                     help="subjects to process, with or without 'sub-' (default: all)")
    sel.add_argument("--session-label", "--session_label", nargs="+", type=_label, default=[],
                     metavar="LABEL",
                     help="sessions to process, with or without 'ses-' (default: all)")
    sel.add_argument("--bids-filter-file", "--bids_filter_file", type=Path, metavar="FILE",
                     help="JSON file of pybids entity filters: a flat object applied to every "
                          "run, or named queries as in fMRIPrep (see docs/usage.md)")
    sel.add_argument("--suffix", nargs="+", default=list(DEFAULT_SUFFIXES), metavar="SUFFIX",
                     help="anat suffixes to deface; runs with a ce- entity are included (default: "
                          + " ".join(DEFAULT_SUFFIXES) + ")")

    run = parser.add_argument_group("running")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="where the model runs; 'auto' (default) takes a CUDA GPU when there is one")
    run.add_argument("--runtime", choices=list(RUNTIMES), default="auto",
                     help="what runs the network on the CPU; 'auto' (default): OpenVINO when it is "
                          "installed, else ONNX Runtime (each recorded in the sidecars as Runtime)")
    run.add_argument("--nprocs", "--n-cpus", type=positive_int, default=None, metavar="N",
                     help="CPU threads for the model (default: all available)")
    run.add_argument("--jobs", "-j", type=positive_int, default=1, metavar="N",
                     help="images processed at once, each in a process of its own that shares "
                          "--nprocs and holds its own model (about 1 GB each for a 1 mm head; default: 1)")
    run.add_argument("-w", "--work-dir", type=Path, default=None, metavar="DIR",
                     help="folder for scratch files (default: a temporary folder)")
    run.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                     help="nnU-Net v2 model folder to use instead of the shipped model")
    run.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                     help="do not run bids-validator-deno on the input")
    run.add_argument("--overwrite", action="store_true",
                     help="redo runs whose outputs are already complete")

    layout = parser.add_argument_group("output layout")
    layout.add_argument("--output-layout", choices=["derivatives", "raw"], default="derivatives",
                        help="'derivatives' (default): a derivative dataset in output_dir; 'raw': output_dir "
                             "becomes a copy of the input ready for upload (e.g. to OpenNeuro) with the "
                             "defaced images under their own names and the metadata de-identified; reports "
                             "and logs go to the QC folder (docs/outputs.md)")
    layout.add_argument("--qc-dir", type=Path, default=None, metavar="DIR",
                        help="with --output-layout raw: where the reports, logs and the other outputs go "
                             "(default: <output_dir>_qc beside output_dir)")

    layout.add_argument("--reface", action="store_true",
                        help="also write each image refaced (*_desc-refaced_<suffix>.nii.gz, with its sidecar): "
                             "the removed voxels filled with the face of an average head, nobody's "
                             "(TemplateFlow's MNI152NLin2009cAsym when its cache holds it, else the face "
                             "that ships with bids-deface), mapped to the image's contrast; every other "
                             "voxel as in the input (docs/reface.md)")

    qc = parser.add_argument_group("quality control")
    qc.add_argument("--qc-only", action="store_true",
                    help="audit mode: judge the images as they are (a dataset defaced by any tool, or "
                         "this tool's derivatives), change nothing; verdicts in OUTPUT_DIR/qc.tsv and "
                         "per-subject reports; exit code 7 when any image is not 'pass'")
    meta = parser.add_argument_group("metadata")
    meta.add_argument("--scrub-metadata", action="store_true",
                      help="de-identify the outputs' metadata: identifying sidecar fields removed, dates "
                           "shifted per subject, NIfTI header text and extensions cleared (docs/outputs.md)")
    meta.add_argument("--scrub-fields", type=Path, default=None, metavar="FILE",
                      help="more sidecar fields to remove with --scrub-metadata: a JSON list or one name "
                           "per line")

    out = parser.add_argument_group("messages")
    out.add_argument("-v", "--verbose", action="count", default=0, dest="verbosity",
                     help="more messages: -v debug messages of bids-deface, -vv of every library")
    out.add_argument("--no-progress", action="store_true",
                     help="plain log lines instead of a progress bar")
    out.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _dedupe(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Parse ``argv`` (default ``sys.argv[1:]``) into :class:`Settings`.

    Usage errors (unknown options, missing input, an output folder inside the input, an
    unreadable filter file) exit with status 2 and a message, as argparse does.
    """
    from ..bids.scrub import read_field_list
    from ..workflow import check_paths

    parser = build_parser()
    args = parser.parse_args(argv)
    bids_dir = Path(os.path.abspath(args.bids_dir))
    output_dir = Path(os.path.abspath(args.output_dir))
    if not bids_dir.is_dir():
        parser.error(f"the input dataset {args.bids_dir} does not exist")
    try:
        check_paths(bids_dir, output_dir, Path(os.path.abspath(args.work_dir)) if args.work_dir else None)
        filters = load_filters(args.bids_filter_file)
        extra = read_field_list(args.scrub_fields) if args.scrub_fields else ()
    except (UsageError, OSError, ValueError) as exc:
        parser.error(str(exc))
    publish = None
    if args.output_layout == "raw":
        publish = output_dir
        output_dir = (Path(os.path.abspath(args.qc_dir)) if args.qc_dir
                      else publish.parent / f"{publish.name}_qc")
        try:
            check_paths(bids_dir, output_dir)
        except UsageError as exc:
            parser.error(str(exc))
        if output_dir == publish or publish in output_dir.parents:
            parser.error(f"the QC folder {output_dir} must lie outside the upload folder {publish}")
    elif args.qc_dir:
        parser.error("--qc-dir needs --output-layout raw")
    if args.qc_only and (publish or args.scrub_metadata or args.overwrite or args.reface):
        parser.error("--qc-only changes nothing: it cannot be combined with --output-layout raw, "
                     "--scrub-metadata, --overwrite or --reface")
    if args.qc_only and args.analysis_level != "participant":
        parser.error("--qc-only runs at the participant level")
    if args.scrub_fields and not (args.scrub_metadata or publish):
        parser.error("--scrub-fields needs --scrub-metadata (or --output-layout raw)")
    return Settings(
        bids_dir=bids_dir,
        output_dir=output_dir,
        analysis_level=args.analysis_level,
        participant_label=_dedupe([strip_prefix(s, "sub") for s in args.participant_label]),
        session_label=_dedupe([strip_prefix(s, "ses") for s in args.session_label]),
        bids_filters=filters,
        bids_filter_file=Path(os.path.abspath(args.bids_filter_file)) if args.bids_filter_file else None,
        suffixes=_dedupe(args.suffix),
        device=args.device,
        runtime=args.runtime,
        nprocs=args.nprocs,
        jobs=args.jobs,
        work_dir=Path(os.path.abspath(args.work_dir)) if args.work_dir else None,
        model_dir=Path(os.path.abspath(args.model_dir)) if args.model_dir else None,
        skip_bids_validation=args.skip_bids_validation,
        overwrite=args.overwrite,
        publish_dir=publish,
        scrub_metadata=args.scrub_metadata or publish is not None,
        scrub_fields=tuple(extra),
        reface=args.reface,
        qc_only=args.qc_only,
        verbosity=args.verbosity,
        progress=not args.no_progress,
    )
