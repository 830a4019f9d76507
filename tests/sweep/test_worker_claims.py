"""Run claims: two workers of one run on nodes that cannot see each other's file locks never both train it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lsbench.store import Store
from lsbench.store.spool import FileClaims, ingest
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec
from lsbench.sweep.protocol import EXIT_BUSY, EXIT_OK, HEARTBEAT_ENV, LOCK_DIR_ENV


def make_sweep(
    tmp_path: Path, url: str | None, *, spool: bool, steps: int = 3000, eval_every: int | None = None
) -> tuple[SweepDir, RunSpec]:
    sweep = SweepDir(tmp_path / "sw")
    sweep.path.mkdir()
    spec = RunSpec.create("digits_mlp", "sgd", {"lr": 0.05}, seed=1, steps=steps, eval_every=eval_every or steps // 2)
    url = url or sweep.default_store_url()
    sweep.write_meta({"name": "sw", "grid_hash": "h", "store": url, "backend": "local", "spool": spool})
    sweep.write_plan([spec])
    with Store(url) as store:
        store.upsert_sweep("sw", "h", "", str(sweep.path), "local")
        store.add_runs("sw", [spec])
    return sweep, spec


def start_worker(sweep: SweepDir, lock_dir: Path) -> subprocess.Popen[str]:
    """A worker as a backend starts it, with a lock directory of its own: a node that sees no other node's locks."""
    env = {**os.environ, LOCK_DIR_ENV: str(lock_dir), HEARTBEAT_ENV: "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lsbench", "worker", "--sweep-dir", str(sweep.path), "--index", "0"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(params=["spool", "postgres"])
def recording(request: pytest.FixtureRequest) -> tuple[str | None, bool]:
    """SQLite read through spool files (the cluster path for SQLite), and Postgres."""
    if request.param == "spool":
        return None, True
    return request.getfixturevalue("postgres_url"), False


def claimed(sweep: SweepDir, spec: RunSpec, url: str | None, spool: bool) -> bool:
    if spool:
        return bool(FileClaims(sweep.path).live([spec.run_id], stale_after=60))
    with Store(url) as store:
        return bool(store.live_claims("sw", stale_after=60))


def test_a_second_worker_elsewhere_exits_busy_while_the_first_trains(tmp_path, recording) -> None:
    url, spool = recording
    sweep, spec = make_sweep(tmp_path, url, spool=spool, steps=20_000)  # seconds of training: the second meets it
    first = start_worker(sweep, tmp_path / "node-a")
    wait_until(lambda: claimed(sweep, spec, url, spool))
    second = start_worker(sweep, tmp_path / "node-b")
    second_output, _ = second.communicate(timeout=120)
    first_output, _ = first.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (EXIT_OK, EXIT_BUSY), (first_output, second_output)
    assert "claimed by a live worker" in second_output
    _assert_trained_once(sweep, spec, url)


def test_workers_started_at_the_same_instant_train_the_run_once(tmp_path, recording) -> None:
    url, spool = recording
    sweep, spec = make_sweep(tmp_path, url, spool=spool, steps=400)
    workers = [start_worker(sweep, tmp_path / f"node-{i}") for i in range(3)]
    codes = sorted(worker.wait(timeout=300) for worker in workers)
    # The run is either held (busy) or already finished (a late starter finds it completed and exits 0 at once).
    assert codes.count(EXIT_BUSY) + codes.count(EXIT_OK) == 3 and EXIT_OK in codes
    _assert_trained_once(sweep, spec, url)


def _assert_trained_once(sweep: SweepDir, spec: RunSpec, url: str | None) -> None:
    with Store(url or sweep.default_store_url()) as store:
        ingest(store, sweep.path)
        attempts = store.attempts(spec.run_id)
        assert [a.status for a in attempts] == ["completed"]  # the losers left no attempt behind
        assert store.get_run(spec.run_id).status == "completed"
        steps = [m.step for m in store.metrics(spec.run_id) if m.name == "train_loss"]
        assert steps == sorted(set(steps)) == [spec.eval_every, spec.steps]


def test_a_stale_claim_is_taken_over_and_its_holder_learns_it_lost(tmp_path) -> None:
    claims = FileClaims(tmp_path)
    assert claims.claim("r", "a/1", stale_after=60)
    assert not claims.claim("r", "b/1", stale_after=60)  # a/1 is live
    assert claims.refresh("r", "a/1")
    time.sleep(0.2)
    assert claims.claim("r", "b/1", stale_after=0.1)  # a/1 went silent
    assert not claims.refresh("r", "a/1")  # so a/1 must stop
    assert claims.live(["r", "other"], stale_after=60) == {"r"}
    claims.release("r", "b/1")  # b/1's attempt ended (a requeue after a time limit, say): the run is free at once
    assert claims.live(["r"], stale_after=60) == set()
    assert claims.claim("r", "c/1", stale_after=60)


def test_the_store_claim_is_taken_over_only_when_its_holder_is_silent(tmp_path) -> None:
    sweep, spec = make_sweep(tmp_path, None, spool=False)
    fields = {"backend": "local", "job_id": None, "host": "h", "pid": 1, "log_path": "-", "gpu": None, "versions": {}}
    with Store(sweep.default_store_url()) as store:
        assert store.start_attempt(spec.run_id, "a/1", **fields, claim_stale_after=60)
        assert not store.start_attempt(spec.run_id, "b/1", **fields, claim_stale_after=60)
        assert store.heartbeat(spec.run_id, "a/1", 5)
        assert store.live_claims("sw", stale_after=60) == {spec.run_id}
        time.sleep(0.2)
        assert store.start_attempt(spec.run_id, "b/1", **fields, claim_stale_after=0.1)
        assert not store.heartbeat(spec.run_id, "a/1", 6)  # a/1 lost the run
        assert [a.attempt_id for a in store.attempts(spec.run_id)] == ["a/1", "b/1"]


def test_a_healthy_run_that_evaluates_only_at_its_end_is_never_declared_lost(tmp_path) -> None:
    """Heartbeats come on a timer (1 s here), so `status` with a staleness of 3 periods sees the run alive all along,
    although its only evaluation point is its last step."""
    from lsbench.sweep.status import sweep_status

    sweep, spec = make_sweep(tmp_path, None, spool=False, steps=20_000, eval_every=20_000)
    worker = start_worker(sweep, tmp_path / "node")
    seen: set[str] = set()
    with Store(sweep.default_store_url()) as store:
        while worker.poll() is None:
            for attempt in store.attempts(spec.run_id):  # as if on another node: only heartbeats say it lives
                store._update_attempt(spec.run_id, attempt.attempt_id, host="node-elsewhere")
            seen |= set(sweep_status(store, "sw", stale_after=3.0).counts)
            time.sleep(0.5)
        assert worker.returncode == EXIT_OK, worker.stdout.read() if worker.stdout else ""
        final = sweep_status(store, "sw", stale_after=3.0)
        (attempt,) = store.attempts(spec.run_id)
    assert "running" in seen and "failed" not in seen
    assert final.counts == {"completed": 1} and attempt.status == "completed"
