"""The demo trains every line search on digits to a useful accuracy, and the CLI entry points answer."""

import subprocess
import sys

import pytest

from lsbench import __version__
from lsbench.cli import main
from lsbench.demo import DEMO_RUNS, format_table, run_demo


def test_every_demo_optimizer_reaches_90_percent_on_digits():
    results = run_demo(seed=1)
    assert [run.optimizer for run, _ in results] == ["sgd", "pal", "labpal_nsgd", "labpal_sgd", "sls"]
    for run, result in results:
        assert result.status == "completed", run.label
        assert result.final["test_acc"] >= 0.90, (run.label, result.final)
    table = format_table(results)
    assert all(run.label in table for run in DEMO_RUNS)


def test_version_and_help(capsys):
    version = subprocess.run([sys.executable, "-m", "lsbench", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"lsbench {__version__}"
    commands = (["-h"], ["train", "-h"], ["demo", "-h"], ["worker", "-h"], ["sweep", "-h"], ["sweep", "list", "-h"])
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            main(command)
        assert exited.value.code == 0 and "usage:" in capsys.readouterr().out
