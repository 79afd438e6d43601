"""The two analysis levels of the BIDS App, as library functions the CLI calls.

``participant``: validate the input, find the runs, prepare the derivative dataset, deface
every run (failures isolated), write one HTML report per subject.
``group``: summarise every run of the dataset in ``group.tsv`` and ``group.html``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import logging
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .bids.discover import AnatRun, discover_runs
from .bids.outputs import (
    GROUP_HTML,
    dataset_description,
    GROUP_TSV,
    output_paths,
    read_json,
    subject_report_path,
    write_bidsignore,
    write_dataset_description,
    write_readme,
)
from .bids.publish import for_upload, without_input_dir, write_raw_copy
from .bids.scrub import Scrubber, load_key
from .bids.validate import validate_input
from .errors import NoRunsError, UsageError
from .io import atomic_path
from .pipeline import (Masker, RunResult, input_checksum, load_face_model, process_runs, same_input, summarise,
                       worker_pool)
from .settings import Settings

__all__ = [
    "LevelResult",
    "check_paths",
    "discover",
    "participant_level",
    "group_level",
    "group_rows",
    "GROUP_COLUMNS",
    "write_group_tsv",
]

logger = logging.getLogger(__name__)

#: Columns of ``group.tsv`` (also the keys of the rows given to the group index).
GROUP_COLUMNS: tuple[str, ...] = (
    "subject", "session", "name", "suffix", "status", "flags", "voxels_removed", "ml_removed",
    "guard_voxels", "brain_voxels", "qc_verdict", "qc_probability", "seconds", "device", "model",
    "model_sha256", "source", "defaced", "mask", "report", "error",
)

_STATUS_RANK = {"failed": 0, "missing": 1, "stale": 2}
#: The secret of the per-subject date shifts (``--scrub-metadata``), under ``logs/``: shared
#: by every invocation into one output folder; never to be published.
DATE_SHIFT_KEY = "date-shift.key"


@dataclass(frozen=True)
class LevelResult:
    """What an analysis level did: per-run results and problems outside the runs."""

    results: list[RunResult] = field(default_factory=list)
    report_errors: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return summarise(self.results)

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.results) or bool(self.report_errors)

    @property
    def not_passed(self) -> list[RunResult]:
        """Runs that finished with a QC verdict other than ``pass``."""
        return [r for r in self.results if not r.failed and r.verdict not in (None, "pass")]


def check_paths(bids_dir: Path, output_dir: Path, work_dir: Path | None = None) -> None:
    """Refuse an output (or work) folder that is, or lies in, the input outside ``derivatives/``.

    Raises
    ------
    UsageError
        The output would be written into the input dataset (or contain it).

    Examples
    --------
    >>> check_paths(Path("/data/bids"), Path("/data/bids/derivatives/bids-deface"))
    >>> check_paths(Path("/data/bids"), Path("/data/bids/sub-01"))
    Traceback (most recent call last):
    ...
    bids_deface.errors.UsageError: the output folder /data/bids/sub-01 lies inside the input dataset /data/bids: use a folder outside it, or <bids_dir>/derivatives/<name>
    """
    bids = Path(os.path.realpath(bids_dir))
    out = Path(os.path.realpath(output_dir))
    if out == bids:
        raise UsageError(f"the output folder must not be the input dataset {bids_dir}")
    if bids in out.parents:
        rel = out.relative_to(bids).parts
        if rel[0] != "derivatives" or len(rel) < 2:
            raise UsageError(
                f"the output folder {output_dir} lies inside the input dataset {bids_dir}: "
                "use a folder outside it, or <bids_dir>/derivatives/<name>"
            )
    if out in bids.parents:
        raise UsageError(f"the output folder {output_dir} contains the input dataset {bids_dir}")
    if work_dir is not None:
        work = Path(os.path.realpath(work_dir))
        if work == bids or (bids in work.parents and work.relative_to(bids).parts[0] != "derivatives"):
            raise UsageError(f"the work folder {work_dir} lies inside the input dataset {bids_dir}: "
                             "use a folder outside it")


def _write_settings(settings: Settings) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = settings.output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"settings_{stamp}_", suffix=".json", dir=logs)
    with os.fdopen(fd, "w") as fobj:
        fobj.write(settings.to_json())
    return Path(name)


def _reports_api() -> Any | None:
    """The HTML report module, or None (with the reason logged) when it cannot be used."""
    try:
        from . import reports
    except ImportError as exc:
        logger.warning("HTML reports are not available: %s", exc)
        return None
    names = ("ReportRun", "write_subject_report", "write_group_index")
    if not all(hasattr(reports, n) for n in names):
        logger.warning("HTML reports are not available: bids_deface.reports lacks %s", names)
        return None
    return reports


def _report_run(reports: Any, result: RunResult, output_dir: Path) -> Any:
    paths = result.paths
    exists = (lambda p: p if p is not None and p.is_file() else None)
    # the refaced image, of this invocation or an earlier one (--reface), and its record
    both = output_paths(result.run, output_dir, reface=True) if paths else None
    refaced = both.refaced if both is not None else None
    refacing = (read_json(both.refaced_json) or {}).get("Refacing") if both and both.refaced_json else None
    # the figures the run drew, unless a refaced image of an earlier invocation is shown too
    figures = result.figures
    if figures is not None and exists(refaced) and "refaced" not in figures.renders:
        figures = None
    return reports.ReportRun(
        name=result.run.name,
        source=result.run.path if result.run.content_present else None,
        defaced=exists(paths.defaced) if paths else None,
        mask=exists(paths.mask) if paths else None,
        refaced=exists(refaced),
        refacing=dict(refacing) if isinstance(refacing, dict) and exists(refaced) else {},
        sidecar=dict(result.sidecar),
        status=result.status,
        error=result.error,
        flags=tuple(result.flags),
        figures=figures,
    )


def _earlier_results(bids_dir: Path, output_dir: Path, subject: str,
                     current: Sequence[RunResult]) -> list[RunResult]:
    """Runs of ``subject`` outside this invocation's selection whose outputs an earlier
    invocation completed (found from the defaced sidecars and their ``Sources``), as
    ``skipped`` results: the subject's report keeps showing them. One whose input has
    changed since is a ``failed`` result that says so: its outputs are out of date."""
    from bids.layout import parse_file_entities

    done = {r.paths.defaced_json for r in current if r.paths is not None}
    earlier = []
    for sidecar_path in sorted((output_dir / f"sub-{subject}").rglob("*_desc-defaced_*.json")):
        if sidecar_path in done:
            continue
        sidecar = read_json(sidecar_path) or {}
        sources = sidecar.get("Sources")
        sources = sources if isinstance(sources, list) and sources else [None]
        if not (isinstance(sources[0], str) and sources[0].startswith("bids:raw:")):
            continue
        relpath = sources[0][len("bids:raw:"):]
        entities = {k: str(v) for k, v in parse_file_entities("/" + relpath).items()}
        if entities.get("subject") != subject or "suffix" not in entities:
            continue
        run = AnatRun(Path(bids_dir) / relpath, relpath, entities)
        paths = output_paths(run, output_dir)
        if paths.defaced_json != sidecar_path or not all(p.is_file() for p in paths.products):
            continue
        defacing = sidecar.get("Defacing")
        defacing = defacing if isinstance(defacing, dict) else {}
        if (run.path.exists() or run.path.is_symlink()) and \
                not same_input(defacing, run, input_checksum(run)):
            # the input changed after it was defaced: its outputs are stale, not done
            earlier.append(RunResult(run, paths, "failed", {}, (
                f"{relpath} changed after it was defaced: its outputs are out of date; "
                "run bids-deface on it again"), (), 0.0))
            continue
        flags = tuple(defacing.get("QCFlags", ()))
        earlier.append(RunResult(run, paths, "skipped", sidecar, None, flags, 0.0))
    return earlier


def _upload_run(run: Any, result: RunResult, output_dir: Path, upload_dir: Path, bids_dir: Path) -> Any:
    """``run`` (a :class:`~bids_deface.reports.ReportRun`) as the upload tree's report shows
    it: the defaced image and the mask of the upload tree, nothing before defacing (nor the
    checksum of the image before defacing, nor the input folder's location)."""
    published = upload_dir / result.run.relpath
    mask = None
    if run.mask is not None:
        # derivatives/bids-deface/ holds the QC folder's files at their place below sub-*
        mask = upload_dir / "derivatives" / "bids-deface" / Path(run.mask).relative_to(output_dir)
    return dataclasses.replace(
        run, source=published if run.defaced is not None and published.is_file() else None,
        defaced=None, mask=mask if mask is not None and mask.is_file() else None,
        refaced=None, refacing={}, audit=False, upload=True, figures=None,
        sidecar=for_upload(run.sidecar) if isinstance(run.sidecar, dict) else run.sidecar,
        error=without_input_dir(run.error, bids_dir))


def _write_subject_reports(bids_dir: Path, output_dir: Path, results: Sequence[RunResult],
                           upload_dir: Path | None = None, pool: Any = None) -> list[str]:
    """The subject reports in ``output_dir``; with ``upload_dir`` (``--output-layout raw``)
    also a report of the defaced images alone in its ``derivatives/bids-deface/``. With
    ``pool`` (:class:`~bids_deface.pipeline.WorkerPool`) the subjects are shared among its
    workers."""
    if _reports_api() is None:
        return []
    by_subject: dict[str, list[RunResult]] = {}
    for r in results:
        by_subject.setdefault(r.run.subject, []).append(r)
    jobs = [(bids_dir, output_dir, subject, runs, upload_dir) for subject, runs in sorted(by_subject.items())]
    if pool is None or len(jobs) < 2:
        outcomes = [_subject_report(*job) for job in jobs]
    else:
        outcomes = [f.result() for f in [pool.executor.submit(_subject_report, *job) for job in jobs]]
    return [error for error in outcomes if error is not None]


def _subject_report(bids_dir: Path, output_dir: Path, subject: str, runs: Sequence[RunResult],
                    upload_dir: Path | None) -> str | None:
    """Write one subject's report(s); the error, when it could not be written (logged, with
    its traceback in ``logs/``)."""
    reports = _reports_api()
    if reports is None:
        return None
    out = subject_report_path(output_dir, subject)
    try:
        runs = sorted([*runs, *_earlier_results(bids_dir, output_dir, subject, runs)],
                      key=lambda r: r.run.relpath)
        shown = [_report_run(reports, r, output_dir) for r in runs]
        reports.write_subject_report(out, subject, shown)
        if upload_dir is not None:
            out = subject_report_path(upload_dir / "derivatives" / "bids-deface", subject)
            reports.write_subject_report(out, subject, [_upload_run(s, r, output_dir, upload_dir, bids_dir)
                                                        for s, r in zip(shown, runs)])
    except Exception as exc:  # a report must not hide the outputs already written
        log = output_dir / "logs" / f"{out.stem}_report_error.log"
        with atomic_path(log) as tmp:
            tmp.write_text(traceback.format_exc())
        logger.error("cannot write the report of sub-%s: %s (traceback in %s)", subject, exc, log)
        return f"report of sub-{subject}: {type(exc).__name__}: {exc}"
    return None


#: Images left unchanged because they were judged not to be heads are kept out of the
#: upload (``--output-layout raw``), with these reasons in ``excluded.tsv``: a head the
#: judgement missed would go out with its face.
NOT_A_HEAD_REASON = {
    flag: f"left unchanged as {what} ({flag}): nothing shows that it holds no face; look at it and add "
          "it by hand if it holds none"
    for flag, what in (("noise_image", "noise"), ("not_a_head", "not a head"))
}


def _write_raw_copy(settings: Settings, results: Sequence[RunResult], scrubber: Any) -> None:
    """The upload-ready copy of the input (``--output-layout raw``)."""
    done = [r for r in results if r.status in ("ok", "skipped") and r.paths is not None]
    failed = {r.run.relpath: (without_input_dir(r.error, settings.bids_dir) or "failed") for r in results if r.failed}
    # an image judged not to be a head was left as it is: nothing vouches that it shows no face
    unsure = {r.run.relpath: NOT_A_HEAD_REASON[flag] for r in done
              for flag in NOT_A_HEAD_REASON if flag in r.flags}
    failed.update(unsure)
    defaced = {r.run.relpath: r.paths.defaced for r in done if r.run.relpath not in unsure}
    # into derivatives/: the masks and the QC record of each image (its sidecar: de-identified
    # metadata and the Defacing object), not the defaced image, which is in place in the copy
    derived = [p for r in done for p in (r.paths.mask, r.paths.mask_json, r.paths.defaced_json)]
    root = settings.publish_dir
    description = dataset_description(settings.bids_dir, root / "derivatives" / "bids-deface", source_root=root)
    copy = write_raw_copy(settings.bids_dir, root, defaced, failed, derived, scrubber, description,
                          subjects=settings.participant_label or None, sessions=settings.session_label or None)
    logger.info("upload-ready copy in %s: %d defaced image(s) in place, %d other file(s)%s; reports with the "
                "images before defacing, and logs (not for upload), in %s", root, len(copy.replaced), copy.copied,
                f", {len(copy.excluded)} image(s) left out (derivatives/bids-deface/excluded.tsv)"
                if copy.excluded else "", settings.output_dir)


def discover(settings: Settings) -> list[AnatRun]:
    runs = discover_runs(settings.bids_dir, settings.participant_label, settings.session_label,
                         settings.suffixes, settings.bids_filters)
    if not runs:
        raise NoRunsError(
            f"no structural run in {settings.bids_dir} matches the selection "
            f"(suffixes {', '.join(settings.suffixes)}"
            + (f"; participants {', '.join(settings.participant_label)}" if settings.participant_label else "")
            + (f"; sessions {', '.join(settings.session_label)}" if settings.session_label else "")
            + (f"; filters {settings.bids_filter_file}" if settings.bids_filter_file else "")
            + ")"
        )
    return runs


def participant_level(
    settings: Settings,
    get_masker: Callable[[], Masker] | None = None,
    on_start: Callable[[AnatRun], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    on_runs: Callable[[Sequence[AnatRun]], None] | None = None,
) -> LevelResult:
    """Deface every selected run of the dataset.

    Parameters
    ----------
    settings : Settings
        What to do.
    get_masker : callable, optional
        Returns the masker; default loads the face model of ``settings`` (only when a run
        needs it).
    on_start, on_result : callable, optional
        Progress hooks, called before and after each run.
    on_runs : callable, optional
        Called once with the list of runs found (e.g. to size a progress bar).
    """
    check_paths(settings.bids_dir, settings.output_dir, settings.work_dir)
    if settings.skip_bids_validation:
        logger.info("BIDS validation skipped")
    else:
        # the validator's report is kept in the work folder, when one is given
        report = (Path(settings.work_dir) / "bids_validator_input.json"
                  if settings.work_dir else None)
        validate_input(settings.bids_dir, report_json=report)
    runs = discover(settings)
    if on_runs is not None:
        on_runs(runs)
    output_dir = settings.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    write_dataset_description(settings.bids_dir, output_dir)
    write_bidsignore(output_dir)
    write_readme(output_dir)
    _write_settings(settings)
    if get_masker is None:
        get_masker = functools.partial(load_face_model, settings.model_dir, settings.device,
                                       _threads_per_job(settings.nprocs, settings.jobs), settings.runtime)
    scrubber = None
    if settings.scrub_metadata:
        scrubber = Scrubber(load_key(output_dir / "logs" / DATE_SHIFT_KEY), settings.scrub_fields)
    with contextlib.ExitStack() as stack:
        # one set of worker processes for the runs and then the subjects' reports
        pool = (stack.enter_context(worker_pool(min(settings.jobs, len(runs)), get_masker))
                if settings.jobs > 1 and len(runs) > 1 else None)
        results = process_runs(runs, output_dir, get_masker, overwrite=settings.overwrite,
                               on_start=on_start, on_result=on_result, scrubber=scrubber,
                               reface=settings.reface, pool=pool)
        report_errors = _finish(settings, results, scrubber, pool)
    counts = summarise(results)
    logger.debug("%d run(s): %d defaced, %d already complete, %d failed", len(results),
                counts["ok"], counts["skipped"], counts["failed"])
    return LevelResult(results, report_errors)


def _finish(settings: Settings, results: Sequence[RunResult], scrubber: Any, pool: Any) -> list[str]:
    """After the runs: the upload-ready copy, the de-identification report and the subject
    reports (in the pool's workers, when there is a pool); the reports' errors."""
    output_dir = settings.output_dir
    if settings.publish_dir is not None:
        _write_raw_copy(settings, results, scrubber)
    if scrubber is not None and scrubber.changes:
        report = output_dir / "logs" / f"deidentification_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}.tsv"
        with atomic_path(report) as tmp:
            tmp.write_text(scrubber.report_tsv())
        logger.info("metadata de-identified: %d change(s), listed in %s", len(scrubber.changes), report)
    return _write_subject_reports(settings.bids_dir, output_dir, results, settings.publish_dir, pool)


def _threads_per_job(nprocs: int | None, jobs: int) -> int | None:
    """CPU threads of each job's model: ``nprocs`` (or every CPU this process may use)
    shared among ``jobs``, at least one; ``None`` (the library's default) for one job
    without ``nprocs``.

    >>> _threads_per_job(8, 3), _threads_per_job(2, 4), _threads_per_job(None, 1)
    (2, 1, None)
    """
    if jobs <= 1:
        return nprocs
    cpus = nprocs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return max(1, cpus // jobs)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def group_rows(settings: Settings, runs: Sequence[AnatRun]) -> list[dict[str, Any]]:
    """One row per run (see :data:`GROUP_COLUMNS`), problems first.

    A run is ``ok`` when its outputs are complete for the input as it is now, ``stale``
    when the input changed since, ``failed`` when its last attempt left an error log, and
    ``missing`` when it was never processed.
    """
    out = settings.output_dir
    rows = []
    for run in runs:
        paths = output_paths(run, out)
        sidecar = read_json(paths.defaced_json) if paths.defaced_json.is_file() else None
        defacing = (sidecar or {}).get("Defacing") or {}
        complete = bool(defacing) and all(p.is_file() for p in paths.products)
        flags = list(defacing.get("QCFlags", [])) if complete else []
        error = ""
        if complete:
            status = "ok" if same_input(defacing, run, input_checksum(run)) else "stale"
            if status == "stale":
                flags.append("input_changed")
        elif paths.error_log.is_file():
            status, error = "failed", _last_line(paths.error_log)
        else:
            status = "missing"
            flags.append("not_processed")
        report = subject_report_path(out, run.subject)
        qc = defacing.get("QC") if complete and isinstance(defacing.get("QC"), dict) else {}
        rows.append({
            "subject": run.subject,
            "session": run.session or "",
            "name": run.name,
            "suffix": run.suffix,
            "status": status,
            "flags": flags,
            "voxels_removed": defacing.get("VoxelsRemoved") if complete else None,
            "ml_removed": defacing.get("VolumeRemovedML") if complete else None,
            "guard_voxels": defacing.get("GuardVoxels") if complete else None,
            "brain_voxels": defacing.get("BrainVoxels") if complete else None,
            "qc_verdict": qc.get("Verdict"),
            "qc_probability": qc.get("Probability"),
            "seconds": defacing.get("Seconds") if complete else None,
            "device": defacing.get("Device") if complete else None,
            "model": defacing.get("Model") if complete else None,
            "model_sha256": defacing.get("ModelSHA256") if complete else None,
            "source": run.relpath,
            "defaced": paths.defaced.relative_to(out).as_posix() if complete else None,
            "mask": paths.mask.relative_to(out).as_posix() if complete else None,
            "report": report.relative_to(out).as_posix() if report.is_file() else None,
            "error": error,
        })
    rows.sort(key=lambda r: (_STATUS_RANK.get(r["status"], 2 if r["qc_verdict"] not in (None, "pass")
                                              else 3 if r["flags"] else 4),
                             r["subject"], r["session"], r["name"]))
    return rows


def write_group_tsv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the rows as a BIDS-style TSV (``n/a`` for missing values, flags comma-joined)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(GROUP_COLUMNS)
    for row in rows:
        values = []
        for col in GROUP_COLUMNS:
            value = row.get(col)
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            values.append("n/a" if value is None or value == "" else
                          str(value).replace("\t", " ").replace("\n", " "))
        writer.writerow(values)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(buf.getvalue())


def _write_upload_group(settings: Settings, rows: Sequence[Mapping[str, Any]], reports: Any) -> list[str]:
    """``group.tsv`` and ``group.html`` of the upload tree (``--output-layout raw``), in its
    ``derivatives/bids-deface/``: the same rows, with each defaced image where it is in the
    upload (under its source's name), the reports of the defaced images beside them, and
    error messages without the input folder's location."""
    deriv = Path(settings.publish_dir) / "derivatives" / "bids-deface"
    if not deriv.is_dir():
        logger.warning("no upload copy in %s: run the participant level first", settings.publish_dir)
        return []
    shared = []
    for row in rows:
        report = row.get("report")
        shared.append({
            **row,
            "defaced": f"../../{row['source']}" if row.get("defaced") else None,
            "report": report if report and (deriv / report).is_file() else None,
            "error": without_input_dir(str(row["error"]), settings.bids_dir) if row.get("error") else None,
        })
    write_group_tsv(deriv / GROUP_TSV, shared)
    if reports is None:
        return []
    try:
        reports.write_group_index(deriv / GROUP_HTML, shared)
    except Exception as exc:
        logger.exception("cannot write the group index of the upload")
        return [f"group index of the upload: {type(exc).__name__}: {exc}"]
    return []


def group_level(settings: Settings) -> LevelResult:
    """Write ``group.tsv`` and ``group.html`` for every selected run of the dataset."""
    check_paths(settings.bids_dir, settings.output_dir)
    runs = discover(settings)
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_bidsignore(out)
    rows = group_rows(settings, runs)
    write_group_tsv(out / GROUP_TSV, rows)
    report_errors = []
    reports = _reports_api()
    if reports is not None:
        try:
            reports.write_group_index(out / GROUP_HTML, rows)
        except Exception as exc:
            report_errors.append(f"group index: {type(exc).__name__}: {exc}")
            logger.exception("cannot write the group index")
    if settings.publish_dir is not None:
        report_errors += _write_upload_group(settings, rows, reports)
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    logger.info("group summary of %d run(s) (%s) in %s", len(rows),
                ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())), out / GROUP_TSV)
    return LevelResult([], report_errors, rows)
