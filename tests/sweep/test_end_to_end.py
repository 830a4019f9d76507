"""The sweep toolkit end to end through the CLI, on the embedded default (local pool, SQLite, digits)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lsbench.store import Store
from lsbench.sweep.layout import SweepDir

GRID = """\
name: {name}
problems: [digits_mlp]
budget: {{steps: 60, eval_every: 30}}
seeds: [1, 2]
optimizers:
  sgd:
    grid: {{lr: {lrs}}}
  pal:
    fixed: {{measuring_step_size: 0.1, update_step_adaptation: 1.0}}
"""


def write_grid(tmp_path: Path, name: str, lrs: str = "[0.1]") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(GRID.format(name=name, lrs=lrs))
    return path


def attempts_by_run(root: Path, name: str) -> dict[str, list]:
    sweep = SweepDir(root / name)
    with Store(sweep.store_url()) as store:
        attempts = store.attempts()
    grouped: dict[str, list] = {}
    for attempt in attempts:
        grouped.setdefault(attempt.run_id, []).append(attempt)
    return grouped


def test_submit_wait_status_aggregate_and_idempotent_resubmission(tmp_path, sweep_cli):
    root = tmp_path / "runs"
    grid = write_grid(tmp_path, "e2e")
    submitted = sweep_cli(root, "submit", str(grid), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    assert "4 runs, 4 queued, 0 already finished" in submitted.stdout

    status = sweep_cli(root, "status", "e2e", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"] == {"completed": 4}
    assert report["progress"]["digits_mlp"] == {"pal": {"done": 2, "total": 2}, "sgd": {"done": 2, "total": 2}}

    aggregated = sweep_cli(root, "aggregate", "e2e", "--format", "csv")
    assert aggregated.returncode == 0, aggregated.stderr
    table = [line for line in aggregated.stdout.splitlines() if line.startswith(("problem,", "digits"))]
    rows = list(csv.DictReader(table))
    assert [row["optimizer"] for row in rows] == ["pal", "sgd"]
    with Store(SweepDir(root / "e2e").store_url()) as store:
        runs = store.sweep_runs("e2e")
    for values in rows:
        seeds = [run for run in runs if run.optimizer == values["optimizer"]]
        expected_loss = np.mean([run.summary["train_loss"] for run in seeds])  # one point: its seed mean
        expected_test = np.mean([run.summary["test_acc"] for run in seeds])
        assert float(values["train_loss_median"]) == pytest.approx(expected_loss, rel=1e-12)
        assert float(values["test_acc_max"]) == pytest.approx(expected_test, rel=1e-12)
        assert values["points"] == "1" and values["completed"] == "2"
    assert (root / "e2e" / "reports" / "summary.tex").is_file()

    before = attempts_by_run(root, "e2e")
    again = sweep_cli(root, "submit", str(grid), "--wait")
    assert again.returncode == 0 and "0 queued, 4 already finished" in again.stdout
    assert attempts_by_run(root, "e2e") == before  # nothing trained

    extended = write_grid(tmp_path, "e2e", lrs="[0.1, 0.05]")
    grown = sweep_cli(root, "submit", str(extended), "--wait")
    assert grown.returncode == 0 and "6 runs, 2 queued, 4 already finished" in grown.stdout
    after = attempts_by_run(root, "e2e")
    assert len(after) == 6 and {k: v for k, v in after.items() if k in before} == before


def test_killed_pool_then_resubmit_missing_completes_without_duplicates(tmp_path, sweep_cli):
    root = tmp_path / "runs"
    grid = tmp_path / "kill.yaml"
    grid.write_text(GRID.format(name="kill", lrs="[0.1, 0.05, 0.02]").replace("steps: 60", "steps: 400"))
    assert sweep_cli(root, "submit", str(grid), "--workers", "2").returncode == 0
    sweep = SweepDir(root / "kill")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until some run has a checkpoint and another is still unfinished
        checkpoints = list((sweep.path / "runs").glob("*/checkpoint.pt"))
        if checkpoints:
            break
        time.sleep(0.2)
    pool = json.loads((sweep.path / "pool.json").read_text())["pid"]
    os.kill(pool, signal.SIGKILL)
    with Store(sweep.store_url()) as store:  # the orphaned workers get SIGTERM, checkpoint and stop
        while time.monotonic() < deadline and any(run.status == "running" for run in store.sweep_runs("kill")):
            time.sleep(0.2)
        interrupted = {run.status for run in store.sweep_runs("kill")}
    assert "completed" not in interrupted or len(interrupted) > 1

    resumed = sweep_cli(root, "resubmit", "kill", "--missing", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with Store(sweep.store_url()) as store:
        runs = store.sweep_runs("kill")
        assert {run.status for run in runs} == {"completed"}
        for run in runs:
            metrics = store.metrics(run.run_id)
            keys = [(m.step, m.name) for m in metrics]
            assert len(keys) == len(set(keys))
            assert sorted({m.step for m in metrics}) == [30 * k for k in range(1, 14)] + [400]
        attempts = store.attempts()
    ids = [(a.run_id, a.attempt_id) for a in attempts]
    assert len(ids) == len(set(ids))
    completed = [a.run_id for a in attempts if a.status == "completed"]
    assert sorted(completed) == sorted(run.run_id for run in runs)  # each run trained to completion exactly once


BAD_GRIDS = {
    "unknown_optimizer": "name: bad\nproblems: [digits_mlp]\noptimizers: {adamw: {}}\n",
    "unknown_key": "name: bad\nproblems: [digits_mlp]\nbudgets: {steps: 10}\noptimizers: {sgd: {}}\n",
    "wrong_type": "name: bad\nproblems: [digits_mlp]\noptimizers: {sgd: {grid: {lr: fast}}}\n",
    "empty_list": "name: bad\nproblems: [digits_mlp]\noptimizers: {sgd: {grid: {lr: []}}}\n",
    "negative_steps": "name: bad\nproblems: [digits_mlp]\nbudget: {steps: -5}\noptimizers: {sgd: {}}\n",
    "not_a_mapping": "- just\n- a list\n",
    "shell_name": "name: 'x; rm -rf ~'\nproblems: [digits_mlp]\noptimizers: {sgd: {}}\n",
    "path_name": "name: ../escape\nproblems: [digits_mlp]\noptimizers: {sgd: {}}\n",
}


def test_bad_grids_exit_2_with_one_line_and_touch_nothing(tmp_path, sweep_cli):
    root = tmp_path / "runs"
    for case, text in BAD_GRIDS.items():
        path = tmp_path / f"{case}.yaml"
        path.write_text(text)
        result = sweep_cli(root, "submit", str(path))
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], (case, result.stderr)
        assert result.stdout == ""
    assert not root.exists()


def test_every_command_has_help(tmp_path, sweep_cli):
    for command in ([], ["submit"], ["status"], ["aggregate"], ["resubmit"], ["cancel"], ["list"]):
        shown = sweep_cli(tmp_path, *command, "-h")
        assert shown.returncode == 0 and "usage:" in shown.stdout, command
    worker = subprocess.run([sys.executable, "-m", "lsbench", "worker", "-h"], capture_output=True, text=True)
    assert worker.returncode == 0 and "--sweep-dir" in worker.stdout


def test_spool_path_records_through_files_that_status_ingests(tmp_path, sweep_cli):
    root = tmp_path / "runs"
    grid = write_grid(tmp_path, "spooled")
    submitted = sweep_cli(root, "submit", str(grid), "--spool", "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    sweep = SweepDir(root / "spooled")
    assert sweep.read_meta()["spool"] is True
    assert len(list((sweep.path / "spool").glob("*.jsonl"))) == 4  # the workers wrote files, not the store
    report = json.loads(sweep_cli(root, "status", "spooled", "--json").stdout)
    assert report["counts"] == {"completed": 4}
    with Store(sweep.store_url()) as store:
        for run in store.sweep_runs("spooled"):
            assert sorted({m.step for m in store.metrics(run.run_id)}) == [30, 60]
            (attempt,) = store.attempts(run.run_id)
            assert attempt.status == "completed"
