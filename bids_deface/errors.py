"""Domain errors of the BIDS App and the exit codes they map to (the one place that does).

Library code raises these; :func:`bids_deface.cli.run.main` turns them into a message and
an exit code. Errors of a single run are not raised out of the pipeline: they are logged
with their traceback and counted, and the run exits with :data:`EXIT_RUN_FAILED`.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_USAGE",
    "EXIT_QC_NOT_PASS",
    "BidsDefaceError",
    "UsageError",
    "InvalidDatasetError",
    "ValidatorNotFoundError",
    "FilterError",
    "NoRunsError",
    "ModelError",
    "MissingContentError",
    "exit_code_for",
]

#: Everything asked for was done (runs already complete count as done).
EXIT_OK = 0
#: At least one run (or a report) failed; the others completed.
EXIT_RUN_FAILED = 1
#: Bad command line (argparse uses the same code).
EXIT_USAGE = 2
#: Every run finished, but the QC verdict of at least one image is not ``pass``
#: (``face-remaining``, ``brain-removed``, ``not-defaced`` or ``review``): look at it
#: before sharing. In ``--qc-only`` mode: an audited image is not ``pass``.
EXIT_QC_NOT_PASS = 7


class BidsDefaceError(Exception):
    """Base class of the errors that stop the whole app with a message, not a traceback."""

    exit_code: int = EXIT_RUN_FAILED


class UsageError(BidsDefaceError):
    """Arguments that parse but cannot be honoured (e.g. an output folder inside the input)."""

    exit_code = EXIT_USAGE


class FilterError(UsageError):
    """A ``--bids-filter-file`` that cannot be read or names unknown entities."""


class InvalidDatasetError(BidsDefaceError):
    """The input is not a BIDS dataset, or the BIDS validator reports errors."""

    exit_code = 3


class ValidatorNotFoundError(InvalidDatasetError):
    """``bids-validator-deno`` is not installed (and validation was not skipped)."""

    exit_code = 4


class NoRunsError(BidsDefaceError):
    """No structural run matches the participant, session, suffix and filter selection."""

    exit_code = 5


class ModelError(BidsDefaceError):
    """The face model cannot be found or loaded."""

    exit_code = 6


class MissingContentError(Exception):
    """An input file is a link to content that is not present (e.g. ``datalad get`` not run).

    Raised per run; the run fails and the others go on.
    """


def exit_code_for(exc: BaseException) -> int:
    """Exit code for an exception that ended the app.

    Examples
    --------
    >>> exit_code_for(NoRunsError("nothing"))
    5
    >>> exit_code_for(KeyboardInterrupt())
    130
    >>> exit_code_for(RuntimeError("unexpected"))
    1
    """
    if isinstance(exc, BidsDefaceError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return EXIT_RUN_FAILED
