"""The worker's guards and the status' view of workers that vanished."""

import time

from lsbench.store import Store
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec
from lsbench.sweep.status import sweep_status
from lsbench.sweep.worker import run_worker


def make_sweep(tmp_path, spool: bool = False):
    sweep = SweepDir(tmp_path / "sw")
    sweep.path.mkdir()
    spec = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1, steps=20, eval_every=10)
    url = sweep.default_store_url()
    sweep.write_meta({"name": "sw", "grid_hash": "h", "store": url, "backend": "local", "spool": spool})
    sweep.write_plan([spec])
    store = Store(url)
    store.upsert_sweep("sw", "h", "", str(sweep.path), "local")
    store.add_runs("sw", [spec])
    return sweep, spec, store


def test_a_worker_whose_run_is_finished_exits_without_training(tmp_path):
    sweep, spec, store = make_sweep(tmp_path)
    store.set_run_status(spec.run_id, "completed", step=20)
    assert run_worker(sweep.path, 0, device="cpu") == 0
    assert store.attempts(spec.run_id) == []
    assert not (sweep.run_dir(spec.run_id) / "checkpoint.pt").exists()


def test_a_worker_records_its_run_and_removes_the_checkpoints(tmp_path):
    sweep, spec, store = make_sweep(tmp_path)
    assert run_worker(sweep.path, 0, device="cpu") == 0
    (attempt,) = store.attempts(spec.run_id)
    assert attempt.status == "completed" and attempt.exit_code == 0
    assert store.get_run(spec.run_id).status == "completed"
    assert sorted({m.step for m in store.metrics(spec.run_id)}) == [10, 20]
    assert not list(sweep.run_dir(spec.run_id).glob("checkpoint*.pt"))


def test_silent_attempts_on_other_hosts_are_marked_lost(tmp_path):
    _, spec, store = make_sweep(tmp_path)
    store.start_attempt(
        spec.run_id,
        "job/1",
        backend="slurm",
        job_id="1",
        host="node-elsewhere",
        pid=1,
        log_path="-",
        gpu=None,
        versions={},
    )
    store.set_run_status(spec.run_id, "running")
    assert sweep_status(store, "sw", stale_after=3600).counts == {"running": 1}  # still within its heartbeat window
    time.sleep(1.1)
    assert sweep_status(store, "sw", stale_after=1).counts == {"failed": 1}
    (attempt,) = store.attempts(spec.run_id)
    assert (attempt.status, attempt.exit_code) == ("failed", -1)
