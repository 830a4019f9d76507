"""Output formats of the Table A.1 summary: terminal text, GitHub Markdown, CSV and LaTeX (booktabs).

Markdown and LaTeX follow the thesis layout: the median and quartiles share one cell as "median; p25; p75"; they are
the full table, written to files. The terminal form (``"text"``, :func:`summary_tables`) has to fit a terminal, and
the full table is about 260 characters wide: it shows the same numbers as four tables (training loss, validation
accuracy, test accuracy, runs with the best point), each well under 120 columns, drawn by rich.
Losses are shown with 4 significant digits (trailing zeros kept), accuracies as percentages with 2 decimals, a missing
value as "-" ("--" in LaTeX). CSV carries every :class:`~lsbench.report.summary.SummaryRow` field at full precision
(accuracies as fractions, ``best_hparams`` as canonical JSON, a missing value as an empty cell).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lsbench.files import atomic_write_text
from lsbench.report.summary import SummaryRow, canonical_hparams

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

__all__ = [
    "FORMATS",
    "REPORT_FILES",
    "TEXT_WIDTH",
    "format_table",
    "latex_escape",
    "plain_text",
    "print_blocks",
    "summary_tables",
]

Format = Literal["md", "csv", "latex", "text"]
FORMATS: tuple[str, ...] = ("text", "md", "csv", "latex")
REPORT_FILES = {"md": "summary.md", "csv": "summary.csv", "latex": "summary.tex"}
"""The files :func:`write_reports` writes, by format."""

TEXT_WIDTH = 120
"""The terminal width ``format_table(rows, "text")`` renders for."""

_MISSING = "-"
_COUNTS = ("points", "runs", "diverged", "failed", "unfinished")


def _loss(value: float | None) -> str:
    return _MISSING if value is None else f"{value:#.4g}"


def _acc(value: float | None) -> str:
    return _MISSING if value is None else f"{100.0 * value:.2f}"


def _spread(show: Callable[[float | None], str], median: float | None, p25: float | None, p75: float | None) -> str:
    if median is None:
        return _MISSING
    return f"{show(median)}; {show(p25)}; {show(p75)}"


def _hparams_text(hparams: dict | None, varied: Sequence[str]) -> str:
    """The best point by the hyperparameters that vary in the row (the others are the same for every point)."""
    if hparams is None:
        return _MISSING
    if not varied:
        return "(one point)"
    return ", ".join(f"{key}={json.dumps(hparams.get(key))}" for key in varied)


def _metric_cells(row: SummaryRow) -> list[str]:
    return [
        _loss(row.train_loss_min),
        _spread(_loss, row.train_loss_median, row.train_loss_p25, row.train_loss_p75),
        _acc(row.val_acc_max),
        _spread(_acc, row.val_acc_median, row.val_acc_p25, row.val_acc_p75),
        _acc(row.test_acc_max),
        _spread(_acc, row.test_acc_median, row.test_acc_p25, row.test_acc_p75),
        _acc(row.best_test_acc),
    ]


_METRIC_HEADERS = [
    "train loss min",
    "train loss median; p25; p75",
    "val acc max (%)",
    "val acc median; p25; p75 (%)",
    "test acc max (%)",
    "test acc median; p25; p75 (%)",
    "best (val) test acc (%)",
]
_HEADERS = ["problem", "optimizer", *_METRIC_HEADERS, *_COUNTS, "best hparams"]
# Columns holding names (left-aligned); the others hold numbers (right-aligned).
_LEFT = {0, 1, len(_HEADERS) - 1}


def _cells(row: SummaryRow) -> list[str]:
    counts = [str(getattr(row, name)) for name in _COUNTS]
    return [row.problem, row.optimizer, *_metric_cells(row), *counts, _hparams_text(row.best_hparams, row.varied)]


def summary_tables(rows: Sequence[SummaryRow]) -> list[Table]:
    """The summary as four rich tables for a terminal: training loss (min, median, p25, p75), validation accuracy
    and test accuracy (max, median, p25, p75; test also at the best validation point), and the run counts with the
    best point's hyperparameters. A problem is named on its first row only."""
    from rich import box
    from rich.table import Table

    def table(title: str, headers: Sequence[str], cells: Callable[[SummaryRow], list[str]]) -> Table:
        shown = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for column, header in enumerate(["problem", "optimizer", *headers]):
            left = column < 2 or header == "best point"
            shown.add_column(header, justify="left" if left else "right", overflow="fold")
        previous = None
        for index, row in enumerate(rows):
            last_of_problem = index + 1 < len(rows) and rows[index + 1].problem != row.problem
            problem = row.problem if row.problem != previous else ""
            previous = row.problem
            shown.add_row(problem, row.optimizer, *cells(row), end_section=last_of_problem)
        return shown

    def spread(show: Callable[[float | None], str], values: Sequence[float | None]) -> list[str]:
        return [show(value) for value in values]

    return [
        table(
            "training loss",
            ["min", "median", "p25", "p75"],
            lambda r: spread(_loss, [r.train_loss_min, r.train_loss_median, r.train_loss_p25, r.train_loss_p75]),
        ),
        table(
            "validation accuracy (%)",
            ["max", "median", "p25", "p75"],
            lambda r: spread(_acc, [r.val_acc_max, r.val_acc_median, r.val_acc_p25, r.val_acc_p75]),
        ),
        table(
            "test accuracy (%)",
            ["max", "median", "p25", "p75", "at best val"],
            lambda r: spread(
                _acc, [r.test_acc_max, r.test_acc_median, r.test_acc_p25, r.test_acc_p75, r.best_test_acc]
            ),
        ),
        table(
            "runs",
            [*_COUNTS, "best point"],
            lambda r: [*(str(getattr(r, name)) for name in _COUNTS), _hparams_text(r.best_hparams, r.varied)],
        ),
    ]


def print_blocks(console: Console, renderables: Sequence[RenderableType]) -> None:
    """Print ``renderables`` on ``console`` one after another, a blank line between two."""
    for index, renderable in enumerate(renderables):
        if index:
            console.print()
        console.print(renderable)


def plain_text(renderables: Sequence[RenderableType], width: int = TEXT_WIDTH) -> str:
    """``renderables`` (rich tables, text) drawn without colour or styles into at most ``width`` columns."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, color_system=None, force_terminal=False, highlight=False, markup=False, emoji=False
    )
    print_blocks(console, renderables)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def _text(rows: Sequence[SummaryRow]) -> str:
    return plain_text(summary_tables(rows))


def _md_cell(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(rows: Sequence[SummaryRow]) -> str:
    lines = ["| " + " | ".join(_HEADERS) + " |"]
    lines.append("|" + "|".join(":---" if column in _LEFT else "---:" for column in range(len(_HEADERS))) + "|")
    lines.extend("| " + " | ".join(_md_cell(cell) for cell in _cells(row)) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[SummaryRow]) -> str:
    names = [f.name for f in fields(SummaryRow) if f.name != "varied"]  # best_hparams is complete here
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        values = []
        for name in names:
            value = getattr(row, name)
            if value is None:
                values.append("")
            elif name == "best_hparams":
                values.append(canonical_hparams(value))
            else:
                values.append(repr(value) if isinstance(value, float) else str(value))
        writer.writerow(values)
    return buffer.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_PATTERN = re.compile("|".join(re.escape(char) for char in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters (``\\ & % $ # _ { } ~ ^``) escaped for use in a table cell."""
    return _LATEX_PATTERN.sub(lambda match: _LATEX_SPECIAL[match.group()], text)


def _latex(rows: Sequence[SummaryRow]) -> str:
    def cell(text: str) -> str:
        return "--" if text == _MISSING else text

    columns = 2 + len(_METRIC_HEADERS) + len(_COUNTS)
    lines = [
        r"\begin{tabular}{ll" + "r" * (columns - 2) + "}",
        r"\toprule",
        r" & & \multicolumn{2}{c}{training loss} & \multicolumn{2}{c}{validation accuracy (\%)}"
        r" & \multicolumn{3}{c}{test accuracy (\%)}" + " &" * len(_COUNTS) + r" \\",
        r"\cmidrule(lr){3-4} \cmidrule(lr){5-6} \cmidrule(lr){7-9}",
        "problem & optimizer & min & median; p25; p75 & max & median; p25; p75 & max & median; p25; p75"
        " & best (val) & " + " & ".join(_COUNTS) + r" \\",
        r"\midrule",
    ]
    previous: str | None = None
    for row in rows:
        if previous is not None and row.problem != previous:
            lines.append(r"\midrule")
        # Like the thesis, a problem is named on the first of its rows only.
        problem = latex_escape(row.problem) if row.problem != previous else ""
        previous = row.problem
        counts = [str(getattr(row, name)) for name in _COUNTS]
        body = [problem, latex_escape(row.optimizer), *(cell(text) for text in _metric_cells(row)), *counts]
        lines.append(" & ".join(body) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


_RENDERERS: dict[str, Callable[[Sequence[SummaryRow]], str]] = {
    "text": _text,
    "md": _markdown,
    "csv": _csv,
    "latex": _latex,
}


def format_table(rows: Sequence[SummaryRow], fmt: Format) -> str:
    """Render ``rows`` as ``fmt``: ``"text"`` (terminal tables, :func:`summary_tables`, at most
    :data:`TEXT_WIDTH` columns), ``"md"`` (GitHub Markdown), ``"csv"`` (header
    row, then one line per row) or ``"latex"`` (booktabs ``tabular``). The result ends with a newline."""
    try:
        render = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r} (valid: {', '.join(FORMATS)})") from None
    return render(rows)


def write_reports(rows: Sequence[SummaryRow], directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv`` and ``summary.tex`` into ``directory`` (created if missing), each
    atomically, and return their paths by format (``"md"``, ``"csv"``, ``"latex"``)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for fmt, name in REPORT_FILES.items():
        path = target / name
        atomic_write_text(path, format_table(rows, fmt))  # type: ignore[arg-type]
        paths[fmt] = path
    return paths
