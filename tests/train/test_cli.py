"""``lsbench train`` on the command line: options, the summary line, and one-line usage errors."""

import argparse
import json
from pathlib import Path

import pytest

from lsbench.train import RESULT_FILE
from lsbench.train.cli import add_train_parser, main, run_train

BASE = ["--problem", "synthetic_mlp", "--steps", "20", "--eval-every", "10"]


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-h"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--problem", "--optimizer", "--set KEY=VALUE", "--checkpoint-every", "--out", "--device"):
        assert option in help_text


def test_subcommand_registers_its_handler() -> None:
    parser = argparse.ArgumentParser(prog="lsbench")
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *BASE, "--optimizer", "sgd", "--set", "lr=0.5"])
    assert args.handler is run_train
    assert args.hparams == [("lr", 0.5)]


def test_run_prints_one_summary_line_and_writes_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*BASE, "--optimizer", "adam", "--set", "lr=1e-3", "--set", "lr_schedule=piecewise", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("synthetic_mlp adam seed 1: completed, 20 steps, train loss ")
    hparams = json.loads((tmp_path / RESULT_FILE).read_text())["config"]["hparams"]
    assert hparams["lr"] == 0.001  # YAML 1.1 alone would have read "1e-3" as a string
    assert hparams["lr_schedule"] == "piecewise"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimizer", "nope"], "unknown optimizer 'nope'"),
        (["--optimizer", "sgd", "--set", "learning_rate=0.1"], "unknown hyperparameter 'learning_rate'"),
        (["--optimizer", "sgd", "--set", "lr=fast"], "lr: expected float, got str 'fast'"),
        (["--optimizer", "sgd", "--steps", "0"], "steps: expected a positive integer"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*BASE, *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("lsbench train: error: ")
    assert message in captured.err


def test_malformed_set_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, "--optimizer", "sgd", "--set", "lr"])
    assert exit_info.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_out_dir_of_another_run_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The first run finishes; its last checkpoint (step 10) stays, so the directory belongs to that run.
    assert main([*BASE, "--optimizer", "sgd", "--checkpoint-every", "10", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([*BASE, "--optimizer", "sgd", "--seed", "2", "--out", str(tmp_path)]) == 2
    assert "belongs to a different run: seed=1 (requested 2)" in capsys.readouterr().err
