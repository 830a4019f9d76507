"""A sweep with ``resources: runs_per_worker: 4`` on the local pool: compatible runs train as fused groups, and
everything a user sees -- status, the store's rows, metrics, logs, aggregate -- has the form of an unfused sweep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lsbench.store import Store
from lsbench.sweep.layout import SweepDir
from lsbench.train.checkpoint import CHECKPOINT

GRID = """\
name: {name}
problems: [digits_mlp]
seeds: [1, 2]
budget: {{steps: 60, eval_every: 20}}
optimizers:
  sgd:
    grid: {{lr: [0.3, 0.1, 0.03]}}
    fixed: {{momentum: 0.9}}
  pal:
    fixed: {{measuring_step_size: 0.1, update_step_adaptation: 1.0}}
resources: {{runs_per_worker: {k}}}
"""


def submit(tmp_path: Path, sweep_cli, name: str, k: int) -> tuple[Path, SweepDir]:
    root = tmp_path / "runs"
    grid = tmp_path / f"{name}.yaml"
    grid.write_text(GRID.format(name=name, k=k))
    submitted = sweep_cli(root, "submit", str(grid), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    return root, SweepDir(root / name)


def test_a_fused_sweep_records_every_run_as_an_unfused_one_does(tmp_path: Path, sweep_cli) -> None:
    root, fused = submit(tmp_path, sweep_cli, "fused", 4)
    _, plain = submit(tmp_path, sweep_cli, "plain", 1)
    status = json.loads(sweep_cli(root, "status", "fused", "--json").stdout)
    plain_status = json.loads(sweep_cli(root, "status", "plain", "--json").stdout)
    assert status["counts"] == plain_status["counts"] == {"completed": 8}
    assert status.keys() == plain_status.keys()

    with Store(fused.store_url()) as store, Store(plain.store_url()) as reference:
        rows = {row.run_id: row for row in store.sweep_runs("fused")}
        assert rows.keys() == {row.run_id for row in reference.sweep_runs("plain")}  # the same runs
        for run_id in rows:
            metrics = {(m.step, m.name): m.value for m in store.metrics(run_id)}
            expected = {(m.step, m.name): m.value for m in reference.metrics(run_id)}
            assert metrics.keys() == expected.keys()
            # float32 and fused kernels: close, not equal (PAL's steps amplify rounding; tests/fused/test_equivalence.py
            # holds the step-for-step float64 check)
            for key in ("train_loss", "val_loss", "test_loss"):
                assert metrics[(60, key)] == pytest.approx(expected[(60, key)], rel=0.05), (run_id, key)
            [attempt] = store.attempts(run_id)
            assert attempt.status == "completed"
            log = fused.log_file(run_id).read_text()
            assert f"attempt {attempt.attempt_id}" in log and "completed at step 60" in log
    sgd_runs = [run_id for run_id, row in rows.items() if row.optimizer == "sgd"]
    grouped = sum("fused group of 4" in fused.log_file(run_id).read_text() for run_id in sgd_runs)
    assert grouped == 4  # six SGD runs: one group of 4, one of 2; the two PAL runs another group of 2

    fused_table = sweep_cli(root, "aggregate", "fused", "--format", "csv").stdout.splitlines()
    plain_table = sweep_cli(root, "aggregate", "plain", "--format", "csv").stdout.splitlines()
    assert fused_table[0] == plain_table[0] and len(fused_table) == len(plain_table)


STOPPED = """\
name: stopped
problems: [digits_mlp]
seeds: [1]
budget: {steps: 30000, eval_every: 1000}
optimizers:
  sgd:
    grid: {lr: [1000.0, 0.1, 0.03, 0.01]}
    fixed: {momentum: 0.9}
resources: {runs_per_worker: 4}
"""


def test_a_cancelled_group_resumes_its_unfinished_runs_and_leaves_the_diverged_one(tmp_path: Path, sweep_cli) -> None:
    root = tmp_path / "runs"
    grid = tmp_path / "stopped.yaml"
    grid.write_text(STOPPED)
    assert sweep_cli(root, "submit", str(grid)).returncode == 0
    sweep = SweepDir(root / "stopped")
    deadline = time.monotonic() + 120
    while True:  # the diverged run is recorded at its first evaluation point; the others train on
        status = json.loads(sweep_cli(root, "status", "stopped", "--json").stdout)
        if status["counts"].get("diverged") == 1:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert sweep_cli(root, "cancel", "stopped").returncode == 0
    with Store(sweep.store_url()) as store:
        states = {row.run_id: row.status for row in store.sweep_runs("stopped")}
    assert sorted(states.values()) == ["cancelled", "cancelled", "cancelled", "diverged"], states
    unfinished = {run_id for run_id, state in states.items() if state == "cancelled"}
    assert all((sweep.run_dir(run_id) / CHECKPOINT).exists() for run_id in unfinished)

    again = sweep_cli(root, "resubmit", "stopped", "--wait")
    assert again.returncode == 0, again.stderr
    with Store(sweep.store_url()) as store:
        for row in store.sweep_runs("stopped"):
            attempts = [attempt.status for attempt in store.attempts(row.run_id)]
            if row.run_id in unfinished:  # resumed from its own checkpoint, in a group of the three
                assert row.status == "completed" and attempts == ["preempted", "completed"]
                assert sorted({m.step for m in store.metrics(row.run_id)}) == list(range(1000, 30001, 1000))
                assert "fused group of 3" in sweep.log_file(row.run_id).read_text()
            else:
                assert row.status == "diverged" and attempts == ["diverged"]
