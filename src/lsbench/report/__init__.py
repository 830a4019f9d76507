"""Aggregation of sweep results into the thesis' Table A.1 sensitivity summary, and its output formats.

    >>> from lsbench.report import RunOutcome, aggregate, format_table, write_reports
    >>> rows = aggregate([RunOutcome("digits_mlp", "sgd", {"lr": 0.1}, 1, "completed", 0.12, 0.95, 0.94)])
    >>> print(format_table(rows, "md"), end="")
    >>> write_reports(rows, "reports/")  # summary.md, summary.csv, summary.tex

:mod:`lsbench.report.summary` holds the statistics, :mod:`lsbench.report.formats` the renderers (the files' full
table, and :func:`summary_tables`, the same numbers split to fit a terminal).
"""

from lsbench.report.formats import (
    FORMATS,
    REPORT_FILES,
    TEXT_WIDTH,
    format_table,
    latex_escape,
    plain_text,
    summary_tables,
    write_reports,
)
from lsbench.report.summary import METRICS, RunOutcome, SummaryRow, aggregate, canonical_hparams

__all__ = [
    "FORMATS",
    "METRICS",
    "REPORT_FILES",
    "TEXT_WIDTH",
    "RunOutcome",
    "SummaryRow",
    "aggregate",
    "canonical_hparams",
    "format_table",
    "latex_escape",
    "plain_text",
    "summary_tables",
    "write_reports",
]
