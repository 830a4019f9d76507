"""Fixtures of the Slurm backend tests.

Tests marked ``slurm`` run against the real single-node test cluster of ``cluster/testing/``: the session fixture
starts it with ``cluster/testing/start.sh`` unless it is already up (``make test`` starts it before pytest and
stops it afterwards; a cluster the fixture started itself is stopped at the end of the session). Workers run
through the stand-in ``apptainer`` of ``bin/`` here, which checks its arguments and runs the worker on the host.
The other tests here (scripts, golden files, state parsing) need no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests import paths

from lsbench.store import Store
from lsbench.sweep.cli import main as sweep_main
from lsbench.sweep.layout import SweepDir

REPO = paths.REPO
START = REPO / "cluster" / "testing" / "start.sh"
STOP = REPO / "cluster" / "testing" / "stop.sh"
STAND_IN_BIN = paths.STAND_IN_BIN
TEST_PROFILE = REPO / "cluster" / "testing.yaml"
REQUIRE_SLURM_ENV = "LSBENCH_REQUIRE_SLURM"  # set by `make test`: a missing cluster fails instead of skipping


def _ping() -> bool:
    try:
        done = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "UP" in done.stdout


def _config(name: str) -> str:
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    return ""


def start_cluster(*flags: str) -> None:
    done = subprocess.run(["bash", str(START), *flags], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"cluster/testing/start.sh {' '.join(flags)} failed:\n{done.stdout}\n{done.stderr}")


@dataclass
class Cluster:
    """The running test cluster."""

    max_array_size: int

    @staticmethod
    def accounting() -> bool:
        return _config("AccountingStorageType") != "accounting_storage/none"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """The test cluster, with accounting, started here if it is not up (and then stopped after the session)."""
    if os.geteuid() != 0:
        reason = "the test cluster needs root (cluster/testing/start.sh installs packages and starts daemons)"
        if os.environ.get(REQUIRE_SLURM_ENV):
            pytest.fail(f"{REQUIRE_SLURM_ENV} is set but {reason}")
        pytest.skip(reason)
    was_up = _ping()
    if not was_up or _config("AccountingStorageType") == "accounting_storage/none":
        start_cluster()
    yield Cluster(int(_config("MaxArraySize") or 1001))
    if not was_up:
        subprocess.run(["bash", str(STOP)], capture_output=True, timeout=300)


@pytest.fixture
def no_accounting(slurm_cluster: Cluster) -> Iterator[None]:
    """The test cluster without slurmdbd for one test; accounting is switched on again afterwards."""
    start_cluster("--no-accounting")
    try:
        yield
    finally:
        start_cluster()


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class SlurmSweepEnv:
    """What a test needs to submit sweeps to the test cluster through the CLI."""

    tmp: Path
    root: Path
    image: Path
    calls: Path  # the stand-in apptainer's records
    run: Callable[..., Outcome]

    def profile(self, name: str = "profile", **changes: Any) -> Path:
        """cluster/testing.yaml with this test's image and ``changes``."""
        data = yaml.safe_load(TEST_PROFILE.read_text())
        data["image"] = str(self.image)
        data.update(changes)
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def grid(self, name: str, *, lrs: list[float], seeds: list[int], steps: int = 40, eval_every: int = 20,
             time_limit: str = "00:10:00", runs_per_worker: int | None = None) -> Path:  # fmt: skip
        path = self.tmp / f"{name}.yaml"
        resources: dict[str, Any] = {"gpus_per_run": 1, "time_limit": time_limit, "memory": "1G"}
        if runs_per_worker is not None:
            resources["runs_per_worker"] = runs_per_worker
        grid = {
            "name": name,
            "problems": ["digits_mlp"],
            "budget": {"steps": steps, "eval_every": eval_every},
            "seeds": seeds,
            "optimizers": {"sgd": {"grid": {"lr": lrs}}},
            "resources": resources,
        }
        path.write_text(yaml.safe_dump(grid, sort_keys=False))
        return path

    def sweep(self, name: str) -> SweepDir:
        return SweepDir(self.root / name)

    def jobs(self, name: str) -> dict[str, Any]:
        return json.loads((self.root / name / "slurm" / "jobs.json").read_text())

    def status(self, name: str) -> dict[str, Any]:
        outcome = self.run("status", name, "--json")
        assert outcome.returncode == 0, outcome.stderr
        return json.loads(outcome.stdout)

    def stand_in_calls(self) -> list[dict[str, Any]]:
        return [json.loads(path.read_text()) for path in sorted(self.calls.glob("*.json"))]

    def wait(self, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 240.0) -> dict[str, Any]:
        """Poll `sweep status --json` (which refreshes from Slurm) until ``done(status)``."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if done(status):
                return status
            if time.monotonic() > deadline:
                squeue = subprocess.run(["squeue", "-r", "-t", "all"], capture_output=True, text=True).stdout
                pytest.fail(f"timed out waiting for sweep {name}: {status['counts']}\n{squeue}")
            time.sleep(1.0)

    def store(self, name: str) -> Store:
        return Store(self.sweep(name).store_url())


@pytest.fixture
def slurm_env(
    slurm_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> SlurmSweepEnv:
    """PATH with the stand-in apptainer and this Python first, a fake image, and the `sweep` CLI in-process."""
    image = tmp_path / "images" / "lsbench.sif"
    image.parent.mkdir()
    image.write_text("not a real image: the stand-in apptainer only checks that it exists\n")
    calls = tmp_path / "apptainer-calls"
    python_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{STAND_IN_BIN}{os.pathsep}{python_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LSBENCH_FAKE_APPTAINER_LOG", str(calls))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LSBENCH_FAKE_APPTAINER_FAIL", raising=False)
    monkeypatch.chdir(tmp_path)  # sbatch starts jobs in the submitting directory
    root = tmp_path / "runs"

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            code = sweep_main([*args[:1], "--root", str(root), *args[1:]])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return SlurmSweepEnv(tmp_path, root, image, calls, run)


def scontrol_job(job: str) -> dict[str, str]:
    """``scontrol show job`` as a flat dict (for array elements pass ``<array>_<task>``)."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
    fields: dict[str, str] = {}
    for word in done.stdout.split():
        key, sep, value = word.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def have_slurm_commands() -> bool:
    return all(shutil.which(name) for name in ("sbatch", "squeue", "scontrol"))
