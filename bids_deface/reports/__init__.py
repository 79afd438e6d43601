"""Self-contained HTML reports: one per subject, and an index of the whole run.

Public API (used by the pipeline and the CLI)::

    from bids_deface.reports import ReportRun, write_subject_report, write_group_index

A subject report shows, for each image, surface renders of the head before and after
defacing, slice mosaics with the face mask, the numbers of the sidecar's ``Defacing``
object, flags and, for failed runs, the error. The group index lists every run, problems
first, with links to the subject reports.
"""

from .core import ReportRun, write_group_index, write_subject_report

__all__ = ["ReportRun", "write_subject_report", "write_group_index"]
