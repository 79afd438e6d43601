"""Metadata de-identification: identifying fields out of sidecars, dates shifted per
subject, ages above 89 binned, NIfTI header text and extensions cleared.

The default field list (:data:`REMOVED_FIELDS`) holds what DICOM-to-BIDS converters copy
from DICOM headers that names or locates a person, an institution or a device, and the
free-text fields that can hold such names. Dates and date-times (:data:`DATE_FIELDS`, and
``acq_time`` columns of ``scans.tsv`` / ``sessions.tsv``) move by one offset per subject, a
whole number of days drawn from a secret key and the subject's label: the same for every
file of that subject, in every run, resume and parallel task that shares the key, and
unknown to whoever has only the outputs. Intervals between a subject's dates are kept.

Every change is recorded as ``(file, field, action)``, never with the removed value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

import nibabel as nib

__all__ = ["REMOVED_FIELDS", "DATE_FIELDS", "HEADER_TEXT_FIELDS", "MAX_SHIFT_DAYS", "DEIDENTIFICATION",
           "Scrubber", "load_key", "read_field_list"]

#: Sidecar fields removed (names, IDs, birth dates, institution, station, device serials,
#: operators, physicians, and free text that can hold them).
REMOVED_FIELDS: tuple[str, ...] = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
    "PatientTelephoneNumbers", "PatientInsurancePlanCodeSequence", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "Occupation", "EthnicGroup",
    "PatientWeight", "PatientSize", "PatientComments", "AdditionalPatientHistory",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "StationName", "DeviceSerialNumber", "DeviceUID", "OperatorsName", "PerformingPhysicianName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "RequestingPhysician",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "AccessionNumber", "StudyID",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "ImageComments", "StudyComments", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "ProcedureStepDescription", "RequestAttributesSequence",
)
#: Sidecar fields holding a date or a date-time (ISO 8601 or DICOM ``YYYYMMDD``): shifted.
DATE_FIELDS: tuple[str, ...] = (
    "AcquisitionDateTime", "AcquisitionDate", "ContentDate", "SeriesDate", "StudyDate",
    "InstanceCreationDate", "PerformedProcedureStepStartDate", "DateOfLastCalibration",
)
#: NIfTI header fields of free text, cleared.
HEADER_TEXT_FIELDS: tuple[str, ...] = ("descrip", "aux_file", "intent_name", "db_name")
#: Dates move back by 1 to this many days.
MAX_SHIFT_DAYS = 3652
#: BIDS ``DeidentificationMethod`` / ``DeidentificationMethodCodeSequence`` (DICOM CID 7050).
DEIDENTIFICATION = {
    "method": ["bids-deface: face and ears removed from the image; identifying metadata removed, "
               "dates shifted per subject, NIfTI header text and extensions cleared"],
    "codes": [
        {"CodeValue": "113102", "CodingSchemeDesignator": "DCM",
         "CodeMeaning": "Clean Recognizable Visual Features Option"},
        {"CodeValue": "113105", "CodingSchemeDesignator": "DCM", "CodeMeaning": "Clean Descriptors Option"},
        {"CodeValue": "113107", "CodingSchemeDesignator": "DCM",
         "CodeMeaning": "Retain Longitudinal Temporal Information Modified Dates Option"},
    ],
}
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(.*)$")
_DICOM_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def load_key(path: Path) -> bytes:
    """The secret of the date shifts, kept in ``path``: read, or made (32 random bytes)
    by whichever process gets there first (``O_EXCL``), so parallel tasks share it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # another process may be writing it right now
            key = bytes.fromhex(path.read_text().strip() or "00")
            if len(key) == 32:
                return key
            time.sleep(0.01)
        raise ValueError(f"{path} does not hold a date-shift key")
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fobj:
        fobj.write(key.hex() + "\n")
    return key


def read_field_list(path: Path) -> tuple[str, ...]:
    """Extra fields to remove: a JSON list, or one name per line (``#`` starts a comment)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("["):
        names = json.loads(text)
    else:
        names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    names = [str(n) for n in names if str(n).strip()]
    for n in names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n):
            raise ValueError(f"{path}: {n!r} is not a field name")
    return tuple(names)


@dataclass
class Scrubber:
    """Applies the de-identification to sidecars, tables and NIfTI headers, and records it.

    Parameters
    ----------
    key : bytes
        Secret of the date shifts (:func:`load_key`).
    extra_fields : iterable of str
        Fields removed besides :data:`REMOVED_FIELDS`.
    """

    key: bytes
    extra_fields: Iterable[str] = ()
    changes: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.removed = frozenset(REMOVED_FIELDS) | frozenset(self.extra_fields)

    def shift_days(self, subject: str) -> int:
        """The subject's date shift: back by 1 to ``MAX_SHIFT_DAYS`` days.

        >>> s = Scrubber(b"k" * 32); s.shift_days("01") == s.shift_days("01"), 1 <= s.shift_days("01") <= 3652
        (True, True)
        """
        digest = hmac.new(self.key, subject.encode(), hashlib.sha256).digest()
        return 1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS

    def shift_date(self, value: str, subject: str) -> str | None:
        """``value`` (ISO 8601 date or date-time, or DICOM ``YYYYMMDD``) moved back by the
        subject's shift, in the same format; ``None`` when it is not a date.

        >>> s = Scrubber(b"k" * 32); d = s.shift_days("01")
        >>> s.shift_date("2020-03-01T10:11:12.5", "01") == (datetime(2020, 3, 1) - timedelta(days=d)).strftime("%Y-%m-%d") + "T10:11:12.5"
        True
        >>> s.shift_date("n/a", "01") is None
        True
        """
        delta = timedelta(days=self.shift_days(subject))
        if m := _ISO.match(value):
            try:
                day = datetime(int(m[1]), int(m[2]), int(m[3])) - delta
            except ValueError:
                return None
            return day.strftime("%Y-%m-%d") + m[4]
        if m := _DICOM_DATE.match(value):
            try:
                day = datetime(int(m[1]), int(m[2]), int(m[3])) - delta
            except ValueError:
                return None
            return day.strftime("%Y%m%d")
        return None

    def sidecar(self, meta: Mapping[str, Any], subject: str, where: str) -> dict[str, Any]:
        """A de-identified copy of a sidecar's metadata, with ``DeidentificationMethod``."""
        out: dict[str, Any] = {}
        for key, value in meta.items():
            if key in self.removed:
                self.changes.append((where, key, "removed"))
                continue
            if key in DATE_FIELDS:
                shifted = self.shift_date(str(value), subject) if isinstance(value, str) else None
                if shifted is None:
                    self.changes.append((where, key, "removed (not a date)"))
                    continue
                self.changes.append((where, key, "date shifted"))
                value = shifted
            out[key] = value
        out["DeidentificationMethod"] = DEIDENTIFICATION["method"]
        out["DeidentificationMethodCodeSequence"] = DEIDENTIFICATION["codes"]
        return out

    def table(self, text: str, subject: str | None, where: str) -> str:
        """A TSV (``scans.tsv``, ``sessions.tsv``, ``participants.tsv``) with ``acq_time``
        shifted (the subject's, or per row from ``participant_id``), ages above 89 binned as
        ``89+`` and removed-field columns dropped."""
        lines = text.splitlines()
        if not lines:
            return text
        head = lines[0].split("\t")
        drop = [i for i, name in enumerate(head) if name in self.removed]
        for i in drop:
            self.changes.append((where, head[i], "column removed"))
        rows = [ln.split("\t") for ln in lines[1:] if ln.strip()]
        col = {name: i for i, name in enumerate(head)}
        for row in rows:
            sub = subject
            if sub is None and "participant_id" in col:
                sub = row[col["participant_id"]].removeprefix("sub-")
            if "acq_time" in col and sub and row[col["acq_time"]] not in ("", "n/a"):
                shifted = self.shift_date(row[col["acq_time"]], sub)
                row[col["acq_time"]] = shifted if shifted is not None else "n/a"
                self.changes.append((where, "acq_time", "date shifted" if shifted else "removed (not a date)"))
            if "age" in col:
                try:
                    if float(row[col["age"]]) > 89:
                        row[col["age"]] = "89+"
                        self.changes.append((where, "age", "binned as 89+"))
                except ValueError:
                    pass
        keep = [i for i in range(len(head)) if i not in drop]
        out = ["\t".join(head[i] for i in keep)] + ["\t".join(r[i] for i in keep if i < len(r)) for r in rows]
        return "\n".join(out) + "\n"

    def header(self, header: nib.Nifti1Header, where: str) -> nib.Nifti1Header:
        """A copy of a NIfTI header with its text fields cleared and no extensions."""
        out = header.copy()
        for name in HEADER_TEXT_FIELDS:
            if name in out and bytes(out[name].tobytes()).strip(b"\x00 "):
                out[name] = b""
                self.changes.append((where, f"NIfTI {name}", "cleared"))
        if out.extensions:
            self.changes.append((where, "NIfTI extensions", f"{len(out.extensions)} removed"))
            del out.extensions[:]
        return out

    def report_tsv(self) -> str:
        """The changes as a TSV (file, field, action): what was changed, never the values."""
        rows = ["file\tfield\taction"] + [f"{w}\t{f}\t{a}" for w, f, a in sorted(set(self.changes))]
        return "\n".join(rows) + "\n"
