"""Run ``bids-validator-deno`` (the BIDS validator) on a dataset and read its verdict."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidDatasetError, ValidatorNotFoundError

__all__ = ["VALIDATOR", "ValidationReport", "find_validator", "run_validator", "validate_input"]

logger = logging.getLogger(__name__)

#: Console script of the validator (PyPI ``bids-validator-deno``, which brings ``deno``).
VALIDATOR = "bids-validator-deno"

_INSTALL_HINT = (
    f"{VALIDATOR} is not installed: install it with `pip install bids-validator-deno` "
    "(or skip the check with --skip-bids-validation)"
)


@dataclass(frozen=True)
class ValidationReport:
    """Issues the validator found, split by severity."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def describe_errors(self, limit: int = 10) -> str:
        """One line per error (code, location, message), at most ``limit`` lines."""
        lines = []
        for issue in self.errors[:limit]:
            where = issue.get("location", "")
            what = issue.get("issueMessage") or issue.get("subCode") or ""
            lines.append(f"  {issue.get('code', '?')} {where} {what}".rstrip())
        if len(self.errors) > limit:
            lines.append(f"  ... and {len(self.errors) - limit} more")
        return "\n".join(lines)


def find_validator() -> str | None:
    """Path of the validator: on ``PATH``, or next to the running Python (a venv's bin)."""
    found = shutil.which(VALIDATOR)
    if found:
        return found
    local = Path(sys.executable).parent / VALIDATOR
    return str(local) if local.is_file() else None


def run_validator(dataset: Path, timeout: float | None = None) -> ValidationReport:
    """Validate ``dataset`` and return the issues.

    Raises
    ------
    ValidatorNotFoundError
        The validator is not installed.
    InvalidDatasetError
        The validator could not run or its output could not be read.
    """
    exe = find_validator()
    if exe is None:
        raise ValidatorNotFoundError(_INSTALL_HINT)
    cmd = [exe, str(dataset), "--format", "json", "--no-color"]
    logger.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InvalidDatasetError(f"{VALIDATOR} could not run on {dataset}: {exc}") from exc
    try:
        result = json.loads(proc.stdout)
        issues = result["issues"]["issues"]
    except (ValueError, KeyError, TypeError) as exc:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise InvalidDatasetError(
            f"{VALIDATOR} failed on {dataset} (exit code {proc.returncode}): {tail}"
        ) from exc
    return ValidationReport(
        errors=[i for i in issues if i.get("severity") == "error"],
        warnings=[i for i in issues if i.get("severity") == "warning"],
        summary=result.get("summary", {}),
    )


def validate_input(bids_dir: Path, report_json: Path | None = None) -> ValidationReport:
    """Validate the input dataset; raise :class:`InvalidDatasetError` when it has errors.

    Parameters
    ----------
    bids_dir : Path
        Dataset to check.
    report_json : Path or None
        Where to save the issues (e.g. in the work folder) for later reading.
    """
    report = run_validator(bids_dir)
    if report_json is not None:
        report_json.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_text(json.dumps({"errors": report.errors, "warnings": report.warnings},
                                          indent=2) + "\n")
    logger.info("BIDS validator: %d error(s), %d warning(s) in %s",
                len(report.errors), len(report.warnings), bids_dir)
    if not report.ok:
        raise InvalidDatasetError(
            f"the BIDS validator found {len(report.errors)} error(s) in {bids_dir} "
            f"(fix them or pass --skip-bids-validation):\n{report.describe_errors()}"
        )
    return report
