"""Fused groups through the trainer: each run trains as it would alone, keeps its own checkpoint and results,
diverges alone, and a group killed mid-way resumes bitwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lsbench.fused.trainer import train_group
from lsbench.train import TrainConfig, train
from lsbench.train.checkpoint import CHECKPOINT, load_checkpoint
from lsbench.train.trainer import FINAL_MODEL_FILE, FUSED_CHECKPOINT, RESULT_FILE, CheckpointMismatchError

REPO = Path(__file__).resolve().parents[2]
LRS = (0.3, 0.1, 0.03, 0.01)


def group_configs(optimizer: str = "sgd", **settings) -> list[TrainConfig]:
    hparams = {
        "sgd": lambda lr: {"lr": lr, "momentum": 0.9},
        "adam": lambda lr: {"lr": lr / 30},
        "pal": lambda lr: {"measuring_step_size": lr},
    }
    settings = {"steps": 60, "eval_every": 20, **settings}
    return [
        TrainConfig.create("digits_mlp", optimizer, hparams[optimizer](lr), seed=seed, **settings)
        for seed, lr in enumerate(LRS, start=1)
    ]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_run_of_a_group_trains_and_evaluates_as_it_would_alone(optimizer: str, tmp_path: Path) -> None:
    configs = group_configs(optimizer)
    fused = train_group(configs, [tmp_path / f"run{k}" for k in range(4)])
    for k, (config, result) in enumerate(zip(configs, fused, strict=True)):
        alone = train(config)
        assert result.status == alone.status == "completed"
        assert [p["step"] for p in result.history] == [20, 40, 60]
        # float32, and fused kernels round differently: close, not equal (tests/fused/test_equivalence.py checks every
        # fused optimizer step for step in float64, to 1e-6; line searches amplify float32 rounding too much for that)
        for got, want in zip(result.history, alone.history, strict=True):
            for name in ("train_loss", "val_loss", "test_loss", "mean_effective_lr"):
                assert got[name] == pytest.approx(want[name], rel=2e-3, abs=1e-6), (k, name)
            for name in ("val_acc", "test_acc", "updates", "forward_passes", "backward_passes"):
                assert got[name] == pytest.approx(want[name], abs=2 / 300), (k, name)
        saved = json.loads((tmp_path / f"run{k}" / RESULT_FILE).read_text())
        assert saved["status"] == "completed" and saved["config"]["seed"] == config.run.seed
        final = torch.load(tmp_path / f"run{k}" / FINAL_MODEL_FILE)
        assert set(final) == set(build_alone_state(config))


def build_alone_state(config: TrainConfig) -> dict:
    from lsbench.problems import build_problem

    return build_problem(config.run.problem, seed=config.run.seed).model.state_dict()


def test_a_diverging_run_is_recorded_diverged_and_the_others_go_on(tmp_path: Path) -> None:
    configs = group_configs()
    configs[1] = TrainConfig.create("digits_mlp", "sgd", {"lr": 1e6, "momentum": 0.9}, seed=2, steps=60, eval_every=20)
    results = train_group(configs, [tmp_path / f"run{k}" for k in range(4)])
    assert results[1].status == "diverged" and results[1].diverged_at_step is not None
    assert results[1].steps_done == 20 and len(results[1].history) == 1
    assert json.loads((tmp_path / "run1" / RESULT_FILE).read_text())["status"] == "diverged"
    for k in (0, 2, 3):
        alone = train(configs[k])
        assert results[k].status == "completed" and results[k].steps_done == 60
        assert results[k].final["train_loss"] == pytest.approx(alone.final["train_loss"], rel=1e-4)
        assert results[k].final["val_acc"] == pytest.approx(alone.final["val_acc"], abs=2 / 300)


_SCRIPT = """
import sys
from lsbench.fused.trainer import train_group
from lsbench.train import TrainConfig
configs = [TrainConfig.create("digits_mlp", "pal", {"measuring_step_size": lr}, seed=seed, steps=400, eval_every=50,
           checkpoint_every=10) for seed, lr in ((1, 1.0), (2, 0.1), (3, 0.3), (4, 0.03))]
results = train_group(configs, [sys.argv[1] + f"/run{k}" for k in range(4)])
print(" ".join(result.status for result in results))
"""


def test_a_group_killed_mid_way_resumes_bitwise_like_an_uninterrupted_one(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    killed = tmp_path / "killed"
    command = [sys.executable, "-c", _SCRIPT, str(killed)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not all((killed / f"run{k}" / CHECKPOINT).exists() for k in range(4)):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoints within 120 s"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    steps = {load_checkpoint(killed / f"run{k}")[0]["step"] for k in range(4)}
    assert len(steps) == 1 and steps.pop() < 400
    assert load_checkpoint(killed / "run0")[0][FUSED_CHECKPOINT]

    restart = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert restart.returncode == 0 and restart.stdout.split() == ["completed"] * 4, restart.stderr
    reference = tmp_path / "reference"
    uninterrupted = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(reference)], env=env, capture_output=True, text=True, timeout=300
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    for k in range(4):
        got = json.loads((killed / f"run{k}" / RESULT_FILE).read_text())
        want = json.loads((reference / f"run{k}" / RESULT_FILE).read_text())
        for point in (*got["history"], *want["history"]):
            point.pop("elapsed")
        assert got["history"] == want["history"]
        got_model = torch.load(killed / f"run{k}" / FINAL_MODEL_FILE)
        want_model = torch.load(reference / f"run{k}" / FINAL_MODEL_FILE)
        assert all(torch.equal(got_model[name], want_model[name]) for name in want_model)


def test_a_run_checkpointed_in_a_group_continues_alone_and_a_single_checkpoint_is_not_fused(tmp_path: Path) -> None:
    configs = group_configs(steps=40, checkpoint_every=10)
    dirs = [tmp_path / f"run{k}" for k in range(4)]
    stops = iter([False] * 14 + [True])
    assert {r.status for r in train_group(configs, dirs, should_stop=lambda: next(stops))} == {"interrupted"}
    reference = train_group(configs, [None] * 4)
    continued = train(configs[2], dirs[2])  # the single-run trainer hands a fused checkpoint to a group of one
    assert continued.status == "completed" and continued.resumed_from_step == 15
    assert continued.final["train_loss"] == pytest.approx(reference[2].final["train_loss"], rel=1e-5)

    single = tmp_path / "single"
    stops = iter([False] * 14 + [True])
    train(configs[0], single, should_stop=lambda: next(stops))
    with pytest.raises(CheckpointMismatchError, match="written by a single run"):
        train_group([configs[0], configs[1]], [single, tmp_path / "fresh"])
