"""Subject reports and the group index: contexts in Python, HTML in jinja2 templates.

Every report is a single HTML file: CSS and figures are inlined (figures as PNG ``data:``
URIs) and nothing is fetched, so a report opens on an air-gapped workstation. Templates
are autoescaped because sidecar text comes from the input dataset.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from .. import __version__
from ..io import atomic_path
from .figures import RunFigures, make_run_figures
from .mosaic import LABEL_COLOURS, PLANES
from .surface import VIEWS

__all__ = [
    "ReportRun",
    "write_subject_report",
    "write_group_index",
    "subject_context",
    "group_context",
    "problem_rank",
    "render_template",
]

logger = logging.getLogger(__name__)

#: Keys of the sidecar's ``Defacing`` object shown first, with their labels and units.
DEFACING_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("MaskFrom", "Mask of", ""),
    ("VoxelsRemoved", "Voxels removed", ""),
    ("VolumeRemovedML", "Volume removed", "mL"),
    ("GuardVoxels", "Voxels kept by the brain guard", ""),
    ("FaceVoxelsPredicted", "Face voxels predicted", ""),
    ("BrainVoxels", "Brain voxels predicted", ""),
    ("ModelSpacingMM", "Model voxel size", "mm"),
    ("BrainGuardMM", "Brain guard", "mm"),
    ("HeadPoseDeg", "Head pose", "°"),
    ("UprightFrame", "Masked in the head's upright frame", ""),
    ("Seconds", "Run time", "s"),
    ("PredictionSeconds", "Prediction time", "s"),
    ("ModelName", "Model", ""),
    ("Model", "Model", ""),
    ("ModelSHA256", "Model SHA-256", ""),
    ("Device", "Device", ""),
    ("Runtime", "Network runtime", ""),
    ("Tool", "Tool", ""),
    ("ToolVersion", "Tool version", ""),
    ("Version", "Tool version", ""),
    ("InputSHA256", "Input SHA-256", ""),
)

#: Keys of the ``Defacing`` object that hold flags (shown as flags, not as numbers).
FLAG_KEYS: tuple[str, ...] = ("Flags", "QCFlags")

_LABEL_NAMES = {1: "face (removed)", 2: "brain (protected)"}
_VIEW_TITLES = {"left": "Left", "front": "Front", "right": "Right"}
_PLANE_TITLES = {"axial": "Axial", "sagittal": "Sagittal", "coronal": "Coronal"}


@dataclass(frozen=True)
class ReportRun:
    """One image of a subject, as the report shows it.

    Attributes
    ----------
    name : str
        File name of the source image.
    source : Path or None
        The input NIfTI.
    defaced : Path or None
        The defaced NIfTI.
    mask : Path or None
        The ``uint8`` face mask on the grid of ``source``.
    refaced : Path or None
        The refaced NIfTI (``--reface``).
    refacing : dict
        The ``Refacing`` record of the refaced image's sidecar.
    sidecar : dict
        JSON sidecar of the defaced image; its ``Defacing`` object holds the numbers.
    status : str
        ``"ok"``, ``"skipped"`` or ``"failed"``.
    error : str or None
        Traceback text of a failed run (or the reason a run was skipped).
    flags : tuple of str
        Warnings raised for this run (shown prominently).
    """

    name: str
    source: Path | None = None
    defaced: Path | None = None
    mask: Path | None = None
    refaced: Path | None = None
    refacing: dict = field(default_factory=dict)
    sidecar: dict = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    flags: tuple[str, ...] = ()
    audit: bool = False
    """The image is judged as it is (``--qc-only``): it is shown "as audited", not "before"."""
    upload: bool = False
    """The report goes into the upload tree (``--output-layout raw``): ``source`` is the
    defaced image as it is there, shown "as uploaded", and no image before defacing is shown."""
    figures: RunFigures | None = None
    """The figures of these images, drawn already (by the run that wrote them); None: drawn
    from the files."""


# --------------------------------------------------------------------------- formatting


def _fmt(value: Any, unit: str = "") -> str:
    """Human-readable text of a sidecar value; an em dash for missing ones.

    Examples
    --------
    >>> _fmt({"Pitch": 6.3, "Roll": -1.0, "Yaw": -1.0}, "°")
    'pitch 6.3, roll -1.0, yaw -1.0 °'
    >>> _fmt({"Pitch": None, "Roll": -5.0, "Yaw": 0.0}, "°")
    'pitch not measured, roll -5.0, yaw 0 °'
    """
    if value is None or value == "":
        return "\u2014"
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 1 else (
            f"{value:.1f}"
        )
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_fmt(v) for v in value) if value else "none"
    elif isinstance(value, Mapping) and value and all(
            v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        # e.g. a head's pose, whose pitch is not measured where the field of view cuts the brain
        text = ", ".join(f"{str(k).lower()} {'not measured' if v is None else _fmt(v)}" for k, v in value.items())
    elif isinstance(value, Mapping):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def _key_label(key: str) -> str:
    """Words of a CamelCase sidecar key.

    Examples
    --------
    >>> _key_label("PredictionSeconds"), _key_label("InputSHA256")
    ('Prediction seconds', 'Input SHA256')
    """
    words = re.findall(r"[A-Z]+(?![a-z])\d*|[A-Z]?[a-z]+\d*|\d+", str(key))
    if not words:
        return str(key)
    text = " ".join(w if w.isupper() else w.lower() for w in words)
    return text[0].upper() + text[1:]


def _as_flags(value: Any) -> list[str]:
    """Flags given as a string, a sequence or None, as a list of strings."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [f for f in (p.strip() for p in value.split(";")) if f]
    if isinstance(value, (list, tuple, set)):
        return [str(v) for v in value if str(v)]
    return [str(value)]


def _merge_flags(*groups: Any) -> list[str]:
    """Union of flag lists, first occurrence order."""
    seen: dict[str, None] = {}
    for group in groups:
        for flag in _as_flags(group):
            seen.setdefault(flag, None)
    return list(seen)


def _subject_label(subject: str) -> str:
    """``sub-<label>`` whether or not ``subject`` already carries the prefix."""
    subject = str(subject)
    return subject if subject.startswith("sub-") else f"sub-{subject}"


def _anchor(index: int, name: str) -> str:
    """HTML id of a run section."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name.split(".nii")[0]).strip("-")
    return f"run{index + 1}-{stem}" if stem else f"run{index + 1}"


def _safe_href(href: Any) -> str | None:
    """``href`` if it is a relative link (no scheme, not protocol-relative), else None.

    Examples
    --------
    >>> _safe_href("sub-01.html#run1"), _safe_href("javascript:alert(1)")
    ('sub-01.html#run1', None)
    """
    if not href:
        return None
    href = str(href)
    if href.startswith("//") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", href):
        return None
    return href


def _counts(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Numbers of runs per outcome, and the summary boxes shown at the top of a page."""
    by_status: dict[str, int] = {}
    for item in items:
        by_status[item["status"]] = by_status.get(item["status"], 0) + 1
    failed = by_status.get("failed", 0)
    flagged = sum(bool(r["flags"]) and r["status"] != "failed" for r in items)
    clean = sum(r["rank"] == 4 for r in items)
    boxes = [
        {"label": "images", "n": len(items), "cls": ""},
        {"label": "failed", "n": failed, "cls": "bad" if failed else ""},
        {"label": "flagged", "n": flagged, "cls": "warn" if flagged else ""},
    ]
    not_pass = sum(r.get("verdict") not in (None, "pass") and r["status"] != "failed" for r in items)
    if any(r.get("verdict") is not None for r in items):
        boxes.append({"label": "QC verdict not pass", "n": not_pass, "cls": "warn" if not_pass else ""})
    boxes += [
        {"label": status, "n": n, "cls": ""}
        for status, n in sorted(by_status.items())
        if status not in ("ok", "failed")
    ]
    boxes.append({"label": "ok, no flags", "n": clean, "cls": "good" if clean else ""})
    return {"runs": len(items), "failed": failed, "flagged": flagged, "ok": clean,
            "by_status": by_status, "boxes": boxes}


def status_class(status: str) -> str:
    """CSS class of a status badge: ``ok``, ``failed``, ``skipped`` or ``other``."""
    return status if status in ("ok", "failed", "skipped") else "other"


def problem_rank(status: str, flags: Sequence[str], verdict: str | None = None) -> int:
    """Sort key of a run, problems first.

    ``failed`` (0); any other status that is neither ``ok`` nor ``skipped``, such as
    ``stale`` or ``missing``, and a QC verdict other than ``pass`` (1); flagged runs (2);
    ``skipped`` (3); ``ok`` (4).

    Examples
    --------
    >>> [problem_rank(s, f) for s, f in [("ok", ()), ("failed", ()), ("ok", ("x",))]]
    [4, 0, 2]
    >>> problem_rank("ok", (), "review"), problem_rank("ok", (), "pass")
    (1, 4)
    """
    if status == "failed":
        return 0
    if status not in ("ok", "skipped") or verdict not in (None, "pass"):
        return 1
    if flags:
        return 2
    if status == "skipped":
        return 3
    return 4


# --------------------------------------------------------------------------- templates


def _environment() -> jinja2.Environment:
    """Jinja2 environment over the packaged templates, autoescaping everything."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bids_deface.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["status_class"] = status_class
    return env


def render_template(name: str, context: Mapping[str, Any]) -> str:
    """Render the packaged template ``name`` with ``context``."""
    return _environment().get_template(name).render(**context)


def _write_html(out_html: Path, text: str) -> None:
    """Write ``text`` to ``out_html`` atomically (UTF-8)."""
    out_html = Path(out_html)
    with atomic_path(out_html) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)  # reports are meant to be read by others (mkstemp gives 0600)
    logger.info("wrote %s (%.0f kB)", out_html, out_html.stat().st_size / 1024)


def _common_context() -> dict[str, Any]:
    return {
        "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------- subject report


def _run_context(index: int, run: ReportRun, figures: RunFigures | None) -> dict[str, Any]:
    sidecar = run.sidecar if isinstance(run.sidecar, Mapping) else {}
    defacing = sidecar.get("Defacing")
    defacing = defacing if isinstance(defacing, Mapping) else {}
    flags = _merge_flags(run.flags, *(defacing.get(k) for k in FLAG_KEYS))
    numbers = [
        {"key": key, "label": label, "value": _fmt(defacing.get(key), unit)}
        for key, label, unit in DEFACING_FIELDS
        if key in defacing
    ]
    known = {k for k, _, _ in DEFACING_FIELDS} | set(FLAG_KEYS) | {"QC"}
    numbers += [
        {"key": str(k), "label": _key_label(k), "value": _fmt(v)}
        for k, v in defacing.items()
        if k not in known
    ]
    figures = figures or RunFigures()
    qc = defacing.get("QC") if isinstance(defacing.get("QC"), Mapping) else {}
    verdict = qc.get("Verdict")
    return {
        "anchor": _anchor(index, run.name),
        "name": run.name,
        "status": run.status,
        "rank": problem_rank(run.status, flags, verdict),
        "verdict": verdict,
        "qc": _qc_context(qc) if qc else None,
        "flags": flags,
        "error": run.error,
        "numbers": numbers,
        "voxels_removed": _fmt(defacing.get("VoxelsRemoved")),
        "ml_removed": _fmt(defacing.get("VolumeRemovedML")),
        "guard_voxels": _fmt(defacing.get("GuardVoxels")),
        "seconds": _fmt(defacing.get("Seconds")),
        "files": [
            {"label": label, "value": Path(p).name}
            for label, p in (("Image (defaced)" if run.upload else "Input", run.source), ("Defaced", run.defaced),
                             ("Mask", run.mask),
                             ("Refaced", run.refaced))
            if p is not None
        ],
        "renders": [
            {"title": title, "images": [(_VIEW_TITLES[v], figures.renders[key][v]) for v in VIEWS
                                        if v in figures.renders[key]]}
            for key, title in (("before", "As uploaded" if run.upload else "As audited" if run.audit else "Before"),
                               ("after", "Defaced" if "refaced" in figures.renders else "After"),
                               ("refaced", "Refaced"))
            if key in figures.renders
        ],
        "refacing": _refacing_context(run.refacing) if run.refacing else None,
        "view_titles": [_VIEW_TITLES[v] for v in VIEWS],
        "mosaics": [(_PLANE_TITLES[p], figures.mosaics[p]) for p in PLANES if p in figures.mosaics],
        "legend": [
            {"name": _LABEL_NAMES[v], "rgb": "rgb({}, {}, {})".format(*LABEL_COLOURS[v][0])}
            for v in figures.labels
        ],
        "notes": list(figures.notes),
        "image_label": "Defaced image, as uploaded," if run.upload else "Input image",
        "sidecar_json": json.dumps(sidecar, indent=2, default=str) if sidecar else "",
    }


def _refacing_context(refacing: Mapping[str, Any]) -> dict[str, Any]:
    """What the report says of a refaced image: the face's template, source and licence,
    and how far its face lies from the subject's own, beside two different people's."""
    from ..reface import PEOPLE_FACE_MM

    distance = refacing.get("FaceSurfaceDistanceMM")
    return {
        "template": _fmt(refacing.get("Template")),
        "source": {"templateflow": "TemplateFlow", "fallback": "shipped with bids-deface"}.get(
            str(refacing.get("TemplateSource")), _fmt(refacing.get("TemplateSource"))),
        "licence": _fmt(refacing.get("TemplateLicense")),
        "voxels": _fmt(refacing.get("VoxelsRefaced")),
        "scale": _fmt(refacing.get("HeadScale")),
        "seconds": _fmt(refacing.get("Seconds"), "s"),
        "distance": _fmt(distance, "mm"),
        "people": f"median {PEOPLE_FACE_MM['median']:.1f} mm, {PEOPLE_FACE_MM['min']:.1f} to "
                  f"{PEOPLE_FACE_MM['max']:.1f} mm over {PEOPLE_FACE_MM['pairs']:.0f} pairs",
        "nearest": f"{PEOPLE_FACE_MM['min']:.1f} mm",
        "apart": isinstance(distance, (int, float)) and distance >= PEOPLE_FACE_MM["min"],
    }


#: What each verdict tells the reader (``bids_deface.qc``).
VERDICT_TEXT = {
    "pass": "No face feature left and no brain removed, as far as the QC classifier can tell.",
    "face-remaining": "An eye, the nose, the mouth or an ear is still there: do not share this image.",
    "brain-removed": "Brain tissue was cut or zeroed: the image is damaged for analysis.",
    "not-defaced": "Nothing was removed, or the removal misses the face: do not share this image.",
    "review": "The QC classifier is not sure, or the image is not a head: look at it before sharing.",
}


def verdict_class(verdict: str | None) -> str:
    """CSS class of a verdict badge."""
    return "ok" if verdict == "pass" else "other" if verdict == "review" else "failed" if verdict else "skipped"


def _qc_context(qc: Mapping[str, Any]) -> dict[str, Any]:
    evidence = qc.get("Evidence") if isinstance(qc.get("Evidence"), Mapping) else {}
    probs = qc.get("Probabilities") if isinstance(qc.get("Probabilities"), Mapping) else {}
    verdict = str(qc.get("Verdict", ""))
    return {
        "verdict": verdict,
        "cls": verdict_class(verdict),
        "text": VERDICT_TEXT.get(verdict, ""),
        "probability": _fmt(qc.get("Probability")),
        "probabilities": ", ".join(f"{k} {_fmt(v)}" for k, v in probs.items()),
        "notes": _as_flags(qc.get("Notes")),
        "with_original": bool(qc.get("WithOriginal")),
        "evidence": [{"key": str(k), "value": _fmt(v)} for k, v in evidence.items() if v is not None],
    }


def _figures_for(run: ReportRun) -> RunFigures | None:
    """Figures of ``run``; a failure to draw them becomes a note, never an exception."""
    if run.source is None:
        return None
    if run.figures is not None:
        return run.figures
    try:
        return make_run_figures(run.source, run.defaced, run.mask, run.refaced)
    except Exception as exc:  # a report must not fail because one figure did
        if run.status == "failed":
            # the run's own error says why already (often the same unreadable file)
            logger.debug("no figures of the failed run %s: %s", run.name, exc, exc_info=True)
        else:
            logger.exception("figures of %s failed", run.name)
        return RunFigures(notes=(f"Figures could not be made: {type(exc).__name__}: {exc}",))


def subject_context(
    subject: str, runs: Sequence[ReportRun], figures: Sequence[RunFigures | None]
) -> dict[str, Any]:
    """Template context of a subject report (figures already made, one per run)."""
    items = [_run_context(i, run, fig) for i, (run, fig) in enumerate(zip(runs, figures))]
    counts = _counts(items)
    return {**_common_context(), "subject": _subject_label(subject), "runs": items,
            "counts": counts, "upload": bool(runs) and all(r.upload for r in runs)}


def write_subject_report(out_html: Path, subject: str, runs: Sequence[ReportRun]) -> None:
    """Write the self-contained HTML report of one subject.

    Each run gets a section with its status and flags, the numbers of the sidecar's
    ``Defacing`` object, surface renders of the head before and after defacing (left,
    front, right), slice mosaics of the input with the face mask overlaid, and the error
    text of a failed run.

    Parameters
    ----------
    out_html : Path
        Report to write (its folder is created).
    subject : str
        Subject label, with or without ``sub-``.
    runs : sequence of ReportRun
        The subject's runs, in the order to show them.
    """
    t0 = time.perf_counter()
    figures = [_figures_for(run) for run in runs]
    text = render_template("subject.html.j2", subject_context(subject, runs, figures))
    _write_html(Path(out_html), text)
    logger.debug("report of %s made in %.1f s", _subject_label(subject), time.perf_counter() - t0)


# --------------------------------------------------------------------------- group index


def _row_context(row: Mapping[str, Any]) -> dict[str, Any]:
    flags = _as_flags(row.get("flags"))
    status = str(row.get("status") or "ok")
    error = row.get("error") or ""
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    session = "" if row.get("session") in (None, "") else str(row.get("session"))
    if session and not session.startswith("ses-"):
        session = f"ses-{session}"
    verdict = row.get("qc_verdict") or None
    return {
        "subject": _subject_label(row.get("subject", "")),
        "session": session,
        "name": str(row.get("name", "")),
        "status": status,
        "flags": flags,
        "verdict": verdict,
        "verdict_cls": verdict_class(verdict),
        "qc_probability": _fmt(row.get("qc_probability")),
        "rank": problem_rank(status, flags, verdict),
        "voxels_removed": _fmt(row.get("voxels_removed")),
        "ml_removed": _fmt(row.get("ml_removed")),
        "guard_voxels": _fmt(row.get("guard_voxels")),
        "seconds": _fmt(row.get("seconds")),
        "report": _safe_href(row.get("report")),
        "error": str(error).strip(),
        "error_line": lines[-1] if lines else "",
    }


def group_context(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Template context of the group index, rows sorted problems first."""
    items = sorted(
        (_row_context(r) for r in rows),
        key=lambda r: (r["rank"], r["subject"], r["session"], r["name"]),
    )
    counts = _counts(items)
    counts["subjects"] = len({r["subject"] for r in items})
    return {**_common_context(), "rows": items, "counts": counts}


def write_group_index(out_html: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the group index: one row per run, failed first, then flagged, then ok.

    Parameters
    ----------
    out_html : Path
        Index to write (its folder is created).
    rows : sequence of dict
        One per run, with keys ``subject``, ``session``, ``name``, ``status``, ``flags``,
        ``voxels_removed``, ``ml_removed``, ``guard_voxels``, ``seconds``, ``report`` (link
        to the subject report, relative to ``out_html``) and ``error``; missing keys show
        as blanks. Links with a scheme (``http:``, ``javascript:``) are not linked.
    """
    _write_html(Path(out_html), render_template("group.html.j2", group_context(rows)))
