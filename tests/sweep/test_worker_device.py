"""A worker pinned to a GPU that CUDA cannot use stops with one line, and an attempt records how it computed."""

import os
import subprocess
import sys
from pathlib import Path

import lsbench
from lsbench.store import Store
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec
from lsbench.sweep.worker import run_worker

SRC = Path(lsbench.__file__).resolve().parents[1]


def make_sweep(tmp_path: Path, **settings) -> tuple[SweepDir, RunSpec, Store]:
    sweep = SweepDir(tmp_path / "sw")
    sweep.path.mkdir()
    spec = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1, steps=20, eval_every=10, **settings)
    url = sweep.default_store_url()
    sweep.write_meta({"name": "sw", "grid_hash": "h", "store": url, "backend": "local", "spool": False})
    sweep.write_plan([spec])
    store = Store(url)
    store.upsert_sweep("sw", "h", "", str(sweep.path), "local")
    store.add_runs("sw", [spec])
    return sweep, spec, store


def test_a_worker_told_to_use_a_gpu_that_does_not_exist_exits_with_one_line(tmp_path):
    sweep, spec, store = make_sweep(tmp_path)
    environment = {**os.environ, "PYTHONPATH": str(SRC), "CUDA_VISIBLE_DEVICES": "99", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lsbench", "worker", "--sweep-dir", str(sweep.path), "--index", "0"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("lsbench worker: error: CUDA_VISIBLE_DEVICES=99 names a GPU, but CUDA cannot use it")
    assert store.attempts(spec.run_id) == []  # nothing claimed, nothing recorded
    assert store.get_run(spec.run_id).status == "planned"
    assert not sweep.run_dir(spec.run_id).exists() or not list(sweep.run_dir(spec.run_id).iterdir())


def test_the_attempt_records_the_precision_and_the_device_versions(tmp_path):
    sweep, spec, store = make_sweep(tmp_path, precision="bf16")
    assert run_worker(sweep.path, 0, device="cpu") == 0
    (attempt,) = store.attempts(spec.run_id)
    assert attempt.versions["precision"] == "bf16"
    assert attempt.gpu is None
    assert {"torch", "cuda", "cudnn", "driver", "gpu_uuid"} <= set(attempt.versions)
    assert (attempt.versions["driver"], attempt.versions["gpu_uuid"]) == ("none", "none")  # trained on the CPU
    assert store.get_run(spec.run_id).spec.precision == "bf16"
