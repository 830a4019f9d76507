"""Checkpoint/resume: an interrupted run, continued, ends bitwise identical to an uninterrupted one."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

import lsbench
from lsbench.train import RESULT_FILE, CheckpointMismatchError, TrainConfig, TrainResult, load_checkpoint, train
from lsbench.train.checkpoint import CHECKPOINT, PREVIOUS_CHECKPOINT

SRC = Path(lsbench.__file__).resolve().parents[1]
PAL = {"measuring_step_size": 0.1, "update_step_adaptation": 1.0}


def stop_after(steps: int):
    """A ``should_stop`` that asks to stop after ``steps`` steps of this session."""
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls >= steps

    return should_stop


@pytest.fixture(scope="module")
def pal_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path, TrainResult]:
    config = TrainConfig.create("digits_mlp", "pal", PAL, seed=4, steps=160, eval_every=40, checkpoint_every=30)
    out = tmp_path_factory.mktemp("reference")
    return config, out, train(config, out)


def test_interrupted_run_resumes_bitwise_identically(tmp_path: Path, pal_reference, assert_same_run) -> None:
    config, reference_out, reference = pal_reference
    # Stop mid-window (evaluations at 40, 80, …) and between two regular checkpoints (30, 60, 90, …).
    first = train(config, tmp_path, should_stop=stop_after(70))
    assert first.status == "interrupted"
    assert first.steps_done == 70
    assert [p["step"] for p in first.history] == [40]
    assert not (tmp_path / RESULT_FILE).exists()

    points = []
    second = train(config, tmp_path, on_eval=points.append)
    assert second.resumed_from_step == 70
    assert [p["step"] for p in points] == [80, 120, 160]
    assert second.elapsed > first.elapsed
    assert_same_run(tmp_path, reference_out, second.to_dict(), reference.to_dict())


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, pal_reference, assert_same_run, caplog: pytest.LogCaptureFixture
) -> None:
    config, reference_out, reference = pal_reference
    train(config, tmp_path, should_stop=stop_after(70))  # checkpoints at 60 (previous) and 70 (newest)
    newest = tmp_path / CHECKPOINT
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    with caplog.at_level(logging.WARNING, logger="lsbench.train"):
        result = train(config, tmp_path)
    assert "cannot read checkpoint" in caplog.text
    assert result.resumed_from_step == 60
    assert_same_run(tmp_path, reference_out, result.to_dict(), reference.to_dict())


def test_unreadable_checkpoints_start_the_run_afresh(tmp_path: Path) -> None:
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    result = train(TrainConfig.create("synthetic_mlp", "sgd", steps=20, eval_every=10, checkpoint_every=10), tmp_path)
    assert result.status == "completed"
    assert result.resumed_from_step is None
    assert load_checkpoint(tmp_path)[0]["step"] == 10


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    config = TrainConfig.create("synthetic_mlp", "sgd", {"lr": 0.1}, steps=20, eval_every=10, checkpoint_every=5)
    train(config, tmp_path, should_stop=stop_after(5))

    other = TrainConfig.create("synthetic_mlp", "sgd", {"lr": 0.2}, steps=20, eval_every=10, checkpoint_every=5)
    with pytest.raises(CheckpointMismatchError, match=r"hparams=.*'lr': 0\.1"):
        train(other, tmp_path)
    # Where and how often it checkpoints does not change what a run computes: it may resume with other values.
    same_run = TrainConfig.create("synthetic_mlp", "sgd", {}, steps=20, eval_every=10, checkpoint_every=7, data_dir="x")
    assert train(same_run, tmp_path).resumed_from_step == 5


def test_no_checkpoints_unless_asked(tmp_path: Path) -> None:
    result = train(
        TrainConfig.create("synthetic_mlp", "sgd", steps=20, eval_every=10), tmp_path, should_stop=stop_after(5)
    )
    assert result.status == "interrupted"
    assert load_checkpoint(tmp_path) is None


# -- the acceptance test: SIGKILL a training process, start it again, compare with an uninterrupted run ----------


KILL_CASES = {
    # A checkpoint at 150 lies between the evaluations at 100 and 200, so the window sums must survive too.
    "pal": TrainConfig.create("digits_mlp", "pal", PAL, seed=1, steps=400, eval_every=100, checkpoint_every=150),
    # LABPAL measures 4 batches every 20 updates; at 50 % of the budget (step 200) its batch-size schedule
    # doubles k and starts a measurement over 8 batches. The only checkpoint, after step 201, lands inside it,
    # with one of the two gradients of the first batch group accumulated and the measurement batches pending.
    "labpal_nsgd": TrainConfig.create(
        "digits_mlp",
        "labpal_nsgd",
        {"sgd_steps": 20, "approximation_batch_size": 4 * 64, "untrustworthy_updates": 3},
        seed=1,
        steps=400,
        eval_every=100,
        checkpoint_every=201,
    ),
}


def cli_command(config: TrainConfig, out: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "lsbench.train.cli",
        "--problem",
        config.run.problem,
        "--optimizer",
        config.run.optimizer,
    ]
    for key, value in config.run.hparams.items():
        command += ["--set", f"{key}={value}"]
    command += [
        "--seed",
        str(config.run.seed),
        "--steps",
        str(config.run.steps),
        "--eval-every",
        str(config.run.eval_every),
    ]
    return [*command, "--checkpoint-every", str(config.checkpoint_every), "--out", str(out)]


class Killed(NamedTuple):
    """A run whose process was SIGKILLed and then started again with the same command."""

    out: Path
    checkpoint: dict  # the state the restarted process found
    restart: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Killed]:
    """Every case of KILL_CASES, killed right after its first checkpoint appeared, then restarted.

    The cases run side by side, so their interpreter start-ups (importing torch: seconds) overlap.
    """
    root = tmp_path_factory.mktemp("killed")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    commands = {name: cli_command(config, root / name) for name, config in KILL_CASES.items()}
    running = {
        name: subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    deadline = time.monotonic() + 120
    while running:
        for name, process in list(running.items()):
            if (root / name / CHECKPOINT).exists():
                process.send_signal(signal.SIGKILL)
                process.communicate()
                del running[name]
            elif process.poll() is not None:
                pytest.fail(f"{name} ended before its first checkpoint: {process.communicate()[1]}")
        assert time.monotonic() < deadline, f"no checkpoint within 120 s: {', '.join(running)}"
        time.sleep(0.002)
    for name in commands:
        assert not (root / name / RESULT_FILE).exists(), f"{name} finished before it could be killed"
    checkpoints = {name: load_checkpoint(root / name) for name in commands}

    restarted = {
        name: subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    killed = {}
    for name, process in restarted.items():
        stdout, stderr = process.communicate(timeout=300)
        restart = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        killed[name] = Killed(root / name, checkpoints[name][0], restart)
    return killed


@pytest.mark.parametrize("name", list(KILL_CASES))
def test_killed_training_process_resumes_bitwise_identically(
    tmp_path: Path, name: str, killed_runs: dict[str, Killed], assert_same_run
) -> None:
    config, (out, checkpoint, restart) = KILL_CASES[name], killed_runs[name]
    assert checkpoint["step"] < config.run.steps
    if config.run.optimizer.startswith("labpal"):
        shared = checkpoint["optimizer"]["shared"]
        assert shared["measuring"], f"the checkpoint at step {checkpoint['step']} is not inside a measurement"
        assert shared["closures"], "a measurement in progress keeps its batches"

    assert restart.returncode == 0, restart.stderr
    assert restart.stdout.count("\n") == 1 and "completed" in restart.stdout
    resumed = json.loads((out / RESULT_FILE).read_text())
    assert resumed["resumed_from_step"] == checkpoint["step"]

    reference = train(config, tmp_path)
    assert_same_run(out, tmp_path, resumed, reference.to_dict())
