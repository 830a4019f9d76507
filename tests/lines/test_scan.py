"""A linescan run: trains exactly like the same training, measures the lines it should, resumes without gaps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.paths import REPO

from lsbench.lines.arrays import ARRAYS_DIR, LineWriter, read_lines
from lsbench.train import TrainConfig, train
from lsbench.train.checkpoint import CHECKPOINT, load_checkpoint

SETTINGS = {"resolution": 0.05, "samples": 200, "per_sample": True}  # 21 step sizes: quick lines


def _config(**changes) -> TrainConfig:
    values = {"steps": 24, "eval_every": 8, "kind": "linescan", "linescan": SETTINGS, "checkpoint_every": 8}
    values.update(changes)
    hparams = values.pop("hparams", {"lr": 0.1, "momentum": 0.0})
    return TrainConfig.create("digits_mlp", values.pop("optimizer", "sgd"), hparams, **values)


def test_linescan_trains_like_the_plain_run_and_measures_the_sgd_line(tmp_path: Path) -> None:
    scanned = train(_config(), tmp_path)
    plain = train(_config(kind="train", linescan=None))
    assert [p["train_loss"] for p in scanned.history] == [p["train_loss"] for p in plain.history]
    assert [p["val_loss"] for p in scanned.history] == [p["val_loss"] for p in plain.history]
    lines = read_lines(tmp_path / ARRAYS_DIR)
    assert list(lines.step) == list(range(1, 25))
    assert lines.full_loss.shape == (24, 21) and lines.per_sample.shape == (24, 21, 200)
    assert lines.batch_per_sample.shape == (24, 21, 32)
    zero = int(np.flatnonzero(lines.step_sizes == 0.0)[0])
    # SGD without momentum: the line is -g/|g|, its slope -|g| and the step taken lr * |g| (Eq. 5.3).
    np.testing.assert_allclose(lines.batch_slope, -lines.grad_norm, rtol=1e-5)
    np.testing.assert_allclose(lines.step_taken, 0.1 * lines.grad_norm, rtol=1e-4)
    # The full-batch line is the mean of the stored per-sample losses (no weight decay on digits).
    np.testing.assert_allclose(lines.full_loss, lines.per_sample[:].astype(np.float64).mean(axis=2), atol=2e-3)
    # Descending lines: the loss falls from s = 0 towards the optimizer's step.
    assert np.all(lines.batch_loss[:, zero + 1] < lines.batch_loss[:, zero])


def test_the_angle_at_the_new_point_tells_how_exact_the_line_search_was(tmp_path: Path) -> None:
    """PAL without update-step adaptation lands near the batch loss' minimum along its line (thesis Figure 4.2):
    the gradient there is nearly orthogonal to the line; SGD's short steps leave the loss still falling (> 90°)."""
    pal = {"measuring_step_size": 0.1, "update_step_adaptation": 1.0, "direction_adaptation": 0.0}
    train(_config(optimizer="pal", hparams=pal, checkpoint_every=None), tmp_path / "pal")
    train(_config(checkpoint_every=None), tmp_path / "sgd")
    pal_angle = np.median(read_lines(tmp_path / "pal" / ARRAYS_DIR).angle)
    sgd_angle = np.median(read_lines(tmp_path / "sgd" / ARRAYS_DIR).angle)
    assert 80 < pal_angle < 110 and sgd_angle > 140


def test_every_kth_step_and_momentum_direction(tmp_path: Path) -> None:
    train(_config(hparams={"lr": 0.1, "momentum": 0.9}, linescan={**SETTINGS, "every": 5}), tmp_path)
    lines = read_lines(tmp_path / ARRAYS_DIR)
    assert list(lines.step) == [5, 10, 15, 20]
    # With momentum the line follows m, not g: the batch slope is no longer -|g|, but still descending.
    assert np.all(lines.batch_slope < 0)
    assert not np.allclose(lines.batch_slope, -lines.grad_norm, rtol=1e-3)


def test_a_step_that_does_not_move_is_measured_along_the_negative_gradient(tmp_path: Path) -> None:
    """LABPAL's measuring steps do not update: their lines follow -g/|g| and record a step of 0."""
    labpal = {"sgd_steps": 4, "approximation_batch_size": 64, "untrustworthy_updates": 1}
    train(_config(optimizer="labpal_nsgd", hparams=labpal, steps=12, eval_every=12, checkpoint_every=None), tmp_path)
    lines = read_lines(tmp_path / ARRAYS_DIR)
    still = lines.step_taken == 0
    assert still.any() and (~still).any()
    np.testing.assert_allclose(lines.batch_slope[still], -lines.grad_norm[still], rtol=1e-5)


def test_validation_subset_and_a_missing_out_dir(tmp_path: Path) -> None:
    train(_config(steps=2, eval_every=2, linescan={"data": "validation", "samples": 50, "resolution": 0.1}), tmp_path)
    lines = read_lines(tmp_path / ARRAYS_DIR)
    assert lines.attrs["samples"] == 50 and lines.per_sample is None and len(lines) == 2
    with pytest.raises(ValueError, match="out_dir"):
        train(_config())


def test_another_runs_arrays_are_not_overwritten(tmp_path: Path) -> None:
    train(_config(steps=2, eval_every=2), tmp_path)
    other = _config(steps=2, eval_every=2, hparams={"lr": 0.05, "momentum": 0.0})
    with pytest.raises(ValueError, match="another run"):
        train(other, tmp_path)


# -- killed mid-way and resumed: every step's line exactly once, the same as an uninterrupted run ---------------

_SCRIPT = """
import sys, torch
from lsbench.train import TrainConfig, train
torch.set_num_threads(1)
config = TrainConfig.create("digits_mlp", "sgd", {"lr": 0.1, "momentum": 0.9}, steps=60, eval_every=10,
    checkpoint_every=10, kind="linescan", linescan={"resolution": 0.05, "samples": 200, "per_sample": True})
print(train(config, sys.argv[1]).status)
"""


def test_a_killed_linescan_run_resumes_with_every_line_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", _SCRIPT, str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    state, _ = load_checkpoint(out)
    assert state["step"] < 60
    # Lines appended after the checkpoint but before the kill (a flush the checkpoint never recorded): a resumed
    # run must drop them, not keep them twice.
    group = read_lines(out / ARRAYS_DIR)
    writer = LineWriter(
        out / ARRAYS_DIR,
        step_sizes=list(group.step_sizes),
        samples=200,
        batch_size=32,
        per_sample=True,
        attrs={"run": group.attrs["run"]},
    )
    writer.truncate(state["lines"]["rows"])
    for step in (state["step"] + 1, state["step"] + 2):
        writer.add(
            {
                "step": step,
                "full_loss": np.zeros(21),
                "batch_loss": np.zeros(21),
                "grad_norm": 0.0,
                "batch_slope": 0.0,
                "angle": 0.0,
                "step_taken": 0.0,
                "per_sample": np.zeros((21, 200)),
                "batch_per_sample": np.zeros((21, 32)),
            }
        )
    writer.flush()

    restart = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert restart.returncode == 0 and "completed" in restart.stdout, restart.stderr
    resumed = read_lines(out / ARRAYS_DIR)
    assert list(resumed.step) == list(range(1, 61))
    reference_dir = tmp_path / "reference"
    reference = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(reference_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    uninterrupted = read_lines(reference_dir / ARRAYS_DIR)
    for name in ("full_loss", "batch_loss", "grad_norm", "batch_slope", "step_taken", "angle"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(uninterrupted, name), err_msg=name)
    np.testing.assert_array_equal(resumed.per_sample[:], uninterrupted.per_sample[:])
