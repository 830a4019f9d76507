"""Fixtures of the sweep tests: the `sweep` CLI run in this process, with its output and exit code."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from lsbench.sweep.cli import main


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def sweep_cli(capsys, monkeypatch):
    """Run the `sweep` CLI in this process (the pool and its workers are real subprocesses all the same)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    def run(root: Path, *args: str) -> Outcome:
        monkeypatch.setenv("LSBENCH_ROOT", str(root))
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's -h and usage errors
            code = exit_.code
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run
