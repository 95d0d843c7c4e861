"""Group level: what the participant runs left, as ``group_ct.tsv`` and ``group_report.html``.

Participant runs may have been separate processes (SLURM array tasks); the group level reads only
files: the provenance in each defaced sidecar, each scan's figure and thumbnail, and the raw
dataset's list of CT scans, so a scan that was never processed (or failed) shows up as
``missing``. Parts: :mod:`~ctadeface.report.table` (rows, TSV, what needs a look),
:mod:`~ctadeface.report.figures` (the files each row links), :mod:`~ctadeface.report.plots`
(inline SVG) and :mod:`~ctadeface.report.page` (the HTML).
"""

from ctadeface.report.figures import Links, scan_links
from ctadeface.report.page import group_report_html
from ctadeface.report.table import (
    COLUMNS,
    group_table,
    needs_a_look,
    provenance_row,
    read_provenance_for,
    sort_rows,
    to_tsv,
    urgency,
)

__all__ = [
    "COLUMNS",
    "Links",
    "group_report_html",
    "group_table",
    "needs_a_look",
    "provenance_row",
    "read_provenance_for",
    "scan_links",
    "sort_rows",
    "to_tsv",
    "urgency",
]
