"""`sweep status` as text: the summary line tests grep for, a progress table, failures with their log verbatim."""

import io

from rich.console import Console

from lsbench.sweep.status import SweepStatus

STATUS = SweepStatus(
    name="demo",
    counts={"completed": 3, "failed": 1, "running": 1},
    progress={"digits_mlp": {"sgd": {"done": 2, "total": 3}, "pal": {"done": 1, "total": 2}}},
    failures=[
        {
            "run_id": "0123456789abcdef",
            "index": 4,
            "status": "failed",
            "label": "digits_mlp sgd seed 2",
            "log_tail": ["[bold]not markup[/bold]", "RuntimeError: " + "q" * 200],
            "scheduler": None,
        }
    ],
)


def test_text_keeps_the_summary_line_and_shows_progress_and_failures():
    text = STATUS.format_text()
    lines = text.splitlines()
    assert lines[0] == "sweep demo: 5 runs (running 1, completed 3, failed 1)"
    assert max(len(line) for line in lines) <= 120
    sgd = next(line for line in lines if " sgd " in f" {line} " and "seed" not in line)
    assert sgd.split()[-2:] == ["2", "3"]
    assert "failed: run 0123456789abcdef (index 4) digits_mlp sgd seed 2" in text
    assert "    [bold]not markup[/bold]" in text  # a log line is shown as written, never read as rich markup
    assert text.count("q") == 200  # a long log line wraps; nothing is cut


def test_a_run_without_a_log_says_so():
    failure = {**STATUS.failures[0], "log_tail": [], "scheduler": "CANCELLED by 0 (sacct)"}
    text = SweepStatus("demo", {"failed": 1}, {}, [failure]).format_text()
    assert "    CANCELLED by 0 (sacct)\n    (no log)" in text


def test_on_a_terminal_the_same_blocks_are_drawn_with_styles():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, markup=False, highlight=False)
    for block in STATUS.renderables():
        console.print(block)
    assert "\x1b[" in out.getvalue() and "[bold]not markup[/bold]" in out.getvalue()
