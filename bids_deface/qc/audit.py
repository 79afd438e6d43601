"""Audit mode (``--qc-only``): a verdict on every structural image of a dataset as it is.

For a dataset defaced by any tool (pydeface, quickshear, mri_deface, ...), usually right
before an upload, or for a derivatives dataset made by this tool. Nothing in the dataset
is changed. The output folder gets:

* ``qc.tsv``: one row per image — its path in the dataset, the verdict, its probability,
  the notes, and every piece of evidence (:data:`bids_deface.qc.evidence.FEATURES`);
* ``sub-<label>.html``: per-subject reports with the verdict, the evidence and surface
  renders of each image as it is;
* ``logs/``: the traceback of an image that could not be judged.

The exit code is 0 when every image is ``pass``, :data:`bids_deface.errors.EXIT_QC_NOT_PASS`
when an image is not, and :data:`bids_deface.errors.EXIT_RUN_FAILED` when an image could
not be read or judged (the others are still judged).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bids.discover import AnatRun
from ..bids.outputs import subject_report_path
from ..errors import EXIT_OK, EXIT_QC_NOT_PASS, EXIT_RUN_FAILED
from ..io import atomic_path, load_nifti
from .evidence import FEATURES

__all__ = ["AuditRow", "audit_runs", "audit_level", "write_qc_tsv", "QC_TSV", "QC_COLUMNS"]

logger = logging.getLogger(__name__)

QC_TSV = "qc.tsv"
QC_COLUMNS: tuple[str, ...] = ("path", "verdict", "probability", "notes", *FEATURES, "seconds", "error")


@dataclass
class AuditRow:
    run: AnatRun
    record: dict[str, Any] = field(default_factory=dict)
    """The verdict's sidecar record (:meth:`bids_deface.qc.verdict.Verdict.record`)."""
    error: str | None = None

    @property
    def verdict(self) -> str | None:
        return self.record.get("Verdict")

    def tsv_values(self) -> list[str]:
        ev = self.record.get("Evidence", {})
        values: list[Any] = [self.run.relpath, self.verdict, self.record.get("Probability"),
                             ",".join(self.record.get("Notes", []))]
        values += [ev.get(k) for k in FEATURES]
        values += [self.record.get("Seconds"), self.error]
        out = []
        for v in values:
            if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
                out.append("n/a")
            else:
                out.append(str(v).replace("\t", " ").replace("\n", " "))
        return out


def audit_runs(runs: list[AnatRun], model, output_dir: Path) -> list[AuditRow]:  # type: ignore[no-untyped-def]
    """Judge each run's image; a run that cannot be judged is logged and the others go on."""
    from .verdict import judge_image

    rows = []
    for run in runs:
        try:
            if not run.content_present:
                raise FileNotFoundError(f"{run.path} is a link to content that is not present")
            verdict = judge_image(model, load_nifti(run.path))
            rows.append(AuditRow(run, verdict.record()))
            logger.info("%s: %s (%.2f)", run.relpath, verdict.verdict, verdict.probability)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log = output_dir / "logs" / f"{run.name}_qc-error.txt"
            log.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(log) as tmp:
                tmp.write_text(f"source: {run.path}\n\n{traceback.format_exc()}")
            logger.error("%s: cannot be judged: %s", run.relpath, error)
            rows.append(AuditRow(run, {}, error))
    return rows


def write_qc_tsv(path: Path, rows: list[AuditRow]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(QC_COLUMNS)
    for row in rows:
        writer.writerow(row.tsv_values())
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _write_reports(output_dir: Path, rows: list[AuditRow]) -> list[str]:
    from ..reports import ReportRun, write_subject_report

    errors = []
    by_subject: dict[str, list[AuditRow]] = {}
    for row in rows:
        by_subject.setdefault(row.run.subject, []).append(row)
    for subject, items in sorted(by_subject.items()):
        runs = [ReportRun(name=r.run.name, source=r.run.path if r.error is None else None,
                          sidecar={"Defacing": {"QC": r.record}} if r.record else {},
                          status="failed" if r.error else "ok", error=r.error,
                          flags=tuple(r.record.get("Notes", ())), audit=True) for r in items]
        try:
            write_subject_report(subject_report_path(output_dir, subject), subject, runs)
        except Exception as exc:
            logger.exception("cannot write the QC report of sub-%s", subject)
            errors.append(f"sub-{subject}: {exc}")
    return errors


def audit_level(settings) -> int:  # type: ignore[no-untyped-def]
    """Run the audit of ``settings.bids_dir`` into ``settings.output_dir``; the exit code."""
    from ..pipeline import load_face_model
    from ..workflow import discover, check_paths

    check_paths(settings.bids_dir, settings.output_dir, settings.work_dir)
    logger.info("QC only: the images are judged as they are; nothing is changed, and the dataset is not "
                "validated (it may be a derivatives dataset)")
    runs = discover(settings)
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    model = load_face_model(settings.model_dir, settings.device, settings.nprocs)
    rows = audit_runs(runs, model, out)
    write_qc_tsv(out / QC_TSV, rows)
    report_errors = _write_reports(out, rows)
    counts: dict[str, int] = {}
    for r in rows:
        key = r.verdict or "failed"
        counts[key] = counts.get(key, 0) + 1
    logger.info("QC of %d image(s): %s; verdicts in %s", len(rows),
                ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), out / QC_TSV)
    if any(r.error for r in rows) or report_errors:
        return EXIT_RUN_FAILED
    if any(r.verdict != "pass" for r in rows):
        return EXIT_QC_NOT_PASS
    return EXIT_OK
