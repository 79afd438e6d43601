"""``bids-deface``: the console script. Parses, sets up messages, runs a level, exits.

Handlers, verbosity and the progress bar live here and nowhere else; the library only
logs. Exceptions become exit codes in :func:`bids_deface.errors.exit_code_for`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import EXIT_OK, EXIT_QC_NOT_PASS, EXIT_RUN_FAILED, BidsDefaceError, exit_code_for
from ..settings import Settings

__all__ = ["main"]

logger = logging.getLogger("bids_deface.cli")

_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
_DATEFMT = "%H:%M:%S"


def _console_level(verbosity: int, progress: bool) -> int:
    if verbosity >= 1:
        return logging.DEBUG
    return logging.WARNING if progress else logging.INFO


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Console handler that prints above the progress bar while one is shown."""

    bar_active = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.bar_active:
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # never let a message break the run
            self.handleError(record)


_CONSOLE = _ConsoleHandler(sys.stderr)


@contextlib.contextmanager
def _logging(settings: Settings, progress: bool) -> Iterator[Path | None]:
    """Console handler (and a debug log file in ``<output_dir>/logs``) for one invocation."""
    package = logging.getLogger("bids_deface")
    root = logging.getLogger()
    console = _CONSOLE
    try:
        console.setStream(sys.stderr)
    except ValueError:  # the stream of an earlier in-process invocation was closed since
        console.stream = sys.stderr
    console.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    console.setLevel(_console_level(settings.verbosity, progress))
    old = (package.level, root.level)
    package.setLevel(logging.DEBUG)
    root.setLevel(logging.DEBUG if settings.verbosity >= 2 else logging.WARNING)
    package.addHandler(console)
    if settings.verbosity >= 2:
        root.addHandler(console)
    file_handler = None
    log_path = None
    try:
        logs = settings.output_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # the process id keeps the logs of array jobs that start in the same second apart
        log_path = logs / f"bids-deface_{settings.analysis_level}_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}.log"
        file_handler = logging.FileHandler(log_path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        file_handler.setLevel(logging.DEBUG)
        package.addHandler(file_handler)
    except OSError as exc:
        logger.warning("no log file: %s", exc)
    try:
        yield log_path
    finally:
        package.removeHandler(console)
        root.removeHandler(console)
        if file_handler is not None:
            package.removeHandler(file_handler)
            file_handler.close()
        package.setLevel(old[0])
        root.setLevel(old[1])


class _Progress:
    """Progress display: a tqdm bar on a terminal, numbered log lines otherwise."""

    def __init__(self, bar: bool) -> None:
        self.use_bar = bar
        self.bar: Any = None
        self.total = 0
        self.done = 0
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}

    def on_runs(self, runs: Sequence[Any]) -> None:
        self.total = len(runs)
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="run", file=sys.stderr, dynamic_ncols=True)

    def on_start(self, run: Any) -> None:
        if self.bar is not None:
            self.bar.set_description(run.name)
        else:
            logger.debug("[%d/%d] %s", self.done + 1, self.total, run.relpath)

    def on_result(self, result: Any) -> None:
        self.done += 1
        self.counts[result.status] += 1
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)
            if result.failed:
                self.bar.write(f"FAILED {result.run.relpath}: {result.error}", file=sys.stderr)
        else:
            defacing = result.sidecar.get("Defacing", {})
            what = (f", {defacing.get('VoxelsRemoved')} voxels "
                    f"({defacing.get('VolumeRemovedML')} mL) removed" if defacing else "")
            extra = f" [{', '.join(result.flags)}]" if result.flags else ""
            detail = f": {result.error}" if result.error else ""
            level = logging.ERROR if result.failed else logging.INFO
            logger.log(level, "[%d/%d] %s: %s%s in %.1f s%s%s", self.done, self.total,
                       result.run.relpath, result.status, what, result.seconds, extra, detail)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(settings: Settings, progress: _Progress) -> int:
    from ..workflow import group_level, participant_level

    if settings.qc_only:
        from ..qc.audit import audit_level

        return audit_level(settings)
    if settings.analysis_level == "group":
        result = group_level(settings)
    else:
        _CONSOLE.bar_active = progress.use_bar
        try:
            result = participant_level(settings, on_start=progress.on_start,
                                       on_result=progress.on_result, on_runs=progress.on_runs)
        finally:
            progress.close()
            _CONSOLE.bar_active = False
        counts = result.counts
        summary = (f"{len(result.results)} run(s): {counts['ok']} defaced, {counts['skipped']} "
                   f"already complete, {counts['failed']} failed")
        if result.failed:
            logger.error("%s%s; see %s", summary,
                         f", {len(result.report_errors)} report(s) failed" if result.report_errors else "",
                         settings.output_dir / "logs")
        else:
            logger.info(summary)
            if progress.use_bar:
                sys.stderr.write(summary + "\n")
    for message in result.report_errors:
        logger.error(message)
    if result.failed:
        return EXIT_RUN_FAILED
    if result.not_passed:
        logger.warning("%d image(s) finished with a QC verdict other than pass: %s", len(result.not_passed),
                       ", ".join(f"{r.run.name} ({r.verdict})" for r in result.not_passed))
        return EXIT_QC_NOT_PASS
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bids-deface`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from .parser import parse_args

    try:
        settings = parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    use_bar = settings.progress and settings.analysis_level == "participant" and sys.stderr.isatty()
    with _logging(settings, use_bar):
        try:
            return _run(settings, _Progress(use_bar))
        except BidsDefaceError as exc:
            logger.error("%s", exc)
            return exit_code_for(exc)
        except KeyboardInterrupt as exc:
            logger.error("interrupted")
            return exit_code_for(exc)
        except Exception as exc:
            logger.exception("unexpected error: %s", exc)
            return exit_code_for(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
