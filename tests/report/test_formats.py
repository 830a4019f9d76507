"""Output formats of the summary: text, Markdown, CSV (round trip), LaTeX (escaping) and write_reports."""

import csv
import dataclasses
import io
import json
import re

import pytest

from lsbench.report import (
    FORMATS,
    TEXT_WIDTH,
    RunOutcome,
    SummaryRow,
    aggregate,
    format_table,
    latex_escape,
    summary_tables,
    write_reports,
)


@pytest.fixture
def rows(example) -> list[SummaryRow]:
    """The example sweep, a row with no completed run, and one whose names need escaping."""
    extra = [
        RunOutcome("cifar10_resnet32", "adam", {"lr": 1e-3}, 1, "diverged", None, None, None),
        RunOutcome("digits_mlp", "pal|v2 & co_1", {"mu": 0.1, "s_max": 3.16}, 1, "completed", 0.0123456, 0.9, 0.891),
    ]
    return aggregate([*example, *extra])


def test_every_format_renders_rows_and_empty_tables(rows):
    for fmt in FORMATS:
        for table in (format_table(rows, fmt), format_table([], fmt)):
            assert table.endswith("\n")
            assert table.strip()
    with pytest.raises(ValueError, match="unknown report format 'html'"):
        format_table(rows, "html")


def test_text_fits_120_columns_and_shows_every_number(rows):
    text = format_table(rows, "text")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= TEXT_WIDTH == 120
    assert len(format_table(rows, "md").splitlines()[0]) > 200  # the full table would not have fitted
    titles = ["training loss", "validation accuracy (%)", "test accuracy (%)", "runs"]
    assert [line for line in lines if line in titles] == titles
    # Each table has one line per summary row, and a row's numbers sit on its line in header order.
    example = [line for line in lines if "sgd_mom" in line]
    assert len(example) == 4
    loss, val, test, runs = (line.split("sgd_mom")[1].split() for line in example)
    assert loss == ["1.000", "2.000", "1.500", "3.500"]
    assert val == ["85.00", "60.00", "50.00", "72.50"]
    assert test == ["75.00", "50.00", "40.00", "62.50", "75.00"]
    assert runs[:5] == ["3", "14", "4", "2", "1"] and "lr=0.01" in example[3]
    empty = next(line for line in lines if "adam" in line)
    assert empty.split("adam")[1].split() == ["-", "-", "-", "-"]


def test_the_terminal_tables_fit_a_120_column_console(rows):
    from rich.console import Console

    console = Console(width=120, record=True, file=io.StringIO())
    long = {"a" * 60: 1, "b" * 60: 2}
    wide = [*rows, dataclasses.replace(rows[-1], optimizer="labpal_nsgd", best_hparams=long, varied=tuple(long))]
    for table in summary_tables(wide):
        console.print(table)
    shown = console.export_text()
    assert max(len(line) for line in shown.splitlines()) <= 120
    for letter in "ab":  # the long names are wrapped onto more lines, not cut
        assert sum(len(run) for run in re.findall(f"{letter}{{5,}}", shown)) == 60
    assert "…" not in shown


def test_markdown_is_a_table_with_escaped_pipes(rows):
    lines = format_table(rows, "md").splitlines()
    assert lines[1].startswith("|:---|")
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in lines]
    assert len({len(line) for line in cells}) == 1
    assert r"pal\|v2 & co_1" in lines[-1]
    assert "| 2.000; 1.500; 3.500 |" in lines[3]


def test_csv_parses_back_to_the_same_numbers(rows):
    parsed = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    names = [field.name for field in dataclasses.fields(SummaryRow) if field.name != "varied"]
    assert len(parsed) == len(rows)
    for row, record in zip(rows, parsed, strict=True):
        assert list(record) == names
        for name in names:
            value, text = getattr(row, name), record[name]
            if value is None:
                assert text == ""
            elif name == "best_hparams":
                assert json.loads(text) == value
            elif isinstance(value, float):
                assert float(text) == value  # full precision, not the rounded display
            elif isinstance(value, int):
                assert int(text) == value
            else:
                assert text == value
    assert parsed[-1]["train_loss_min"] == "0.0123456"


def test_latex_escapes_special_characters(rows):
    table = format_table(rows, "latex")
    assert table.startswith(r"\begin{tabular}{ll")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}"):
        assert rule in table
    assert r"cifar10\_resnet32" in table and "cifar10_resnet32" not in table
    assert r"sgd\_mom" in table
    assert r"pal|v2 \& co\_1" in table
    assert "2.000; 1.500; 3.500 & 85.00 & 60.00; 50.00; 72.50" in table
    # Every body line has as many cells as the tabular has columns; a problem is named on its first row only.
    spec = re.match(r"\\begin\{tabular\}\{(\w+)\}", table).group(1)
    body = [line for line in table.splitlines() if line.endswith(r"\\") and "multicolumn" not in line]
    for line in body:
        assert len(re.split(r"(?<!\\)&", line)) == len(spec)
    assert sum(line.startswith(r"cifar10\_resnet32 &") for line in body) == 1


def test_latex_escape_handles_every_special_character():
    escaped = latex_escape(r"a&b%c$d#e_f{g}h~i^j\k")
    assert escaped == r"a\&b\%c\$d\#e\_f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"


def test_write_reports_writes_all_three_files_atomically(rows, tmp_path):
    directory = tmp_path / "reports" / "sweep"
    paths = write_reports(rows, directory)
    assert {fmt: path.name for fmt, path in paths.items()} == {
        "md": "summary.md",
        "csv": "summary.csv",
        "latex": "summary.tex",
    }
    for fmt, path in paths.items():
        assert path.parent == directory
        assert path.read_text(encoding="utf-8") == format_table(rows, fmt)
    # Writing again replaces the files and leaves no temporary file behind.
    write_reports(rows[:1], directory)
    assert sorted(p.name for p in directory.iterdir()) == ["summary.csv", "summary.md", "summary.tex"]
    assert paths["csv"].read_text(encoding="utf-8") == format_table(rows[:1], "csv")
