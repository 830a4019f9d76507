"""The report's self-contained ``index.html``: status panel, Table A.1 under both divergence conventions, figures
(and the line analysis of linescan runs, :mod:`lsbench.report.lines`).

Figures are inlined as base64 PNG and the style sheet is inline, so the page needs no network access and no other
file to be viewed (the PDF and CSV files next to it are linked for download). Everything shown is escaped; the page
runs no script.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from lsbench.files import atomic_write_text
from lsbench.report import figures_data as fd
from lsbench.report.figures import Figure

__all__ = ["figure_html", "summary_table", "write_page"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}
figure{margin:1.5em 0}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#444}
pre{background:#f7f7f7;font-size:11px;padding:.5em;overflow-x:auto}
.partial{background:#fff3cd;padding:.5em;border:1px solid #e0c060}
"""


def _fmt(metric: str, value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{100 * value:.2f}" if metric != "train_loss" else f"{value:#.4g}"


def summary_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Table A.1 from :func:`lsbench.report.figures_data.box_stats`: per problem and optimizer, training loss min and
    "median; p25; p75", validation and test accuracy (%) max and "median; p25; p75", and the counts."""
    rows = []
    for (problem, optimizer), pair in stats.groupby(["problem", "optimizer"], sort=True):
        by = pair.set_index("metric")
        first = by.iloc[0]
        row = {"problem": problem, "optimizer": optimizer, "points": int(by.loc["val_acc", "points"])}
        for metric in fd.METRICS:
            m = by.loc[metric]
            best = "min" if metric == "train_loss" else "max"
            row[f"{metric} {best}"] = _fmt(metric, m[best])
            row[f"{metric} median; p25; p75"] = "; ".join(_fmt(metric, m[k]) for k in ("median", "p25", "p75"))
        row.update(
            runs=int(first["runs"]),
            diverged=int(first["diverged_runs"]),
            failed=int(first["failed_runs"]),
            unfinished=int(first["unfinished_runs"]),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def figure_html(figure: Figure) -> str:
    """A figure as the page shows it: the PNG inlined, its caption, links to its PDF and CSV."""
    data = base64.b64encode(figure.png.read_bytes()).decode("ascii")
    links = " · ".join(
        f'<a href="{html.escape(p.name)}">{ext}</a>' for ext, p in (("PDF", figure.pdf), ("CSV", figure.csv))
    )
    return (
        f'<figure id="{html.escape(figure.name)}"><img alt="{html.escape(figure.title)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(figure.caption)} ({links})</figcaption></figure>'
    )


def _status(name: str, counts: dict[str, int], failures: Sequence[dict]) -> str:
    total = sum(counts.values())
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in counts.items())
    parts = [f"<h2>Status of {html.escape(name)}</h2><table>{cells}<tr><th>total</th><td>{total}</td></tr></table>"]
    unfinished = sum(v for k, v in counts.items() if k in ("planned", "queued", "running"))
    if unfinished:
        parts.append(f'<p class="partial">Partial results: {unfinished} of {total} runs have not finished.</p>')
    if failures:
        parts.append(f"<h3>Failures ({len(failures)})</h3>")
        for failure in failures:
            tail = "\n".join(failure.get("log_tail") or ["(no log)"])
            label = f"{failure['label']} — {failure['status']} (run {failure['run_id']})"
            parts.append(f"<p>{html.escape(label)}</p><pre>{html.escape(tail)}</pre>")
    return "\n".join(parts)


def write_page(
    path: Path,
    name: str,
    statuses: Sequence[tuple[str, dict[str, int], Sequence[dict]]],
    tables: dict[str, pd.DataFrame],
    figures: Sequence[Figure],
    sections: Sequence[str] = (),
) -> Path:
    """Write ``index.html``: one status panel per sweep, the summary tables by convention, then the figures, then
    ``sections`` (HTML that escapes what it shows, such as :meth:`lsbench.report.lines.LineSection.html`)."""
    body = [f"<h1>Report of {html.escape(name)}</h1>"]
    body.append(f"<p>Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by lsbench.</p>")
    body += [_status(*status) for status in statuses]
    for convention, table in tables.items():
        default = " (default)" if convention == fd.DEFAULT_CONVENTION else ""
        what = (
            "diverged runs counted at ∞ training loss and chance-level accuracy"
            if convention == "penalized"
            else "diverged runs excluded (the numbers of sweep aggregate)"
        )
        body.append(
            f"<h2>Table A.1 — {html.escape(convention)}{default}</h2><p>{html.escape(what)}; accuracies in %.</p>"
        )
        body.append(table.to_html(index=False, border=0, escape=True))
    body.append("<h2>Figures</h2>")
    body += [figure_html(figure) for figure in figures]
    body += list(sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>lsbench report: {html.escape(name)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    atomic_write_text(path, page)
    return path
