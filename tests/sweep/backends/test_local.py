"""The local pool's slots -- the GPUs CUDA can use (MIG instances included), and a fair share of CPU threads each --
and its long-lived workers: stopped, they leave their run preempted; killed, their run is failed and the slot goes
on."""

import os
import signal
import time
from types import SimpleNamespace

import pytest

from lsbench.store import RunRow, Store
from lsbench.sweep.backends import local
from lsbench.sweep.backends.local import Slot, default_slots, mig_slots, visible_gpus
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec
from lsbench.sweep.protocol import EXIT_INTERRUPTED

LISTING = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5c3e2a-0000-1111-2222-333344445555)
  MIG 3g.40gb     Device  0: (UUID: MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff)
  MIG 3g.40gb     Device  1: (UUID: MIG-1a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-6d5c3e2a-0000-1111-2222-333344445555)
"""


def test_mig_instances_are_pinned_by_uuid_and_plain_gpus_beside_them_too():
    assert mig_slots(LISTING) == [
        "MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff",
        "MIG-1a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff",
        "GPU-6d5c3e2a-0000-1111-2222-333344445555",
    ]
    assert mig_slots("GPU 0: NVIDIA H200 (UUID: GPU-5d5c3e2a)\nGPU 1: NVIDIA H200 (UUID: GPU-6d5c3e2a)\n") == []


def test_without_mig_the_pool_counts_what_cuda_enumerates(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local, "_nvidia_driver_present", lambda: True)
    asked = []

    def run(command):
        asked.append(command[0])
        return "GPU 0: A (UUID: GPU-1)\nGPU 1: B (UUID: GPU-2)\n" if command[0] == "nvidia-smi" else "noise\n2\n"

    monkeypatch.setattr(local, "_run_quietly", run)
    assert visible_gpus() == ["0", "1"]
    assert asked[0] == "nvidia-smi" and "python" in asked[1]


def test_no_driver_means_no_gpus_without_starting_anything(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local, "_nvidia_driver_present", lambda: False)
    monkeypatch.setattr(local, "_run_quietly", lambda command: pytest.fail(f"ran {command}"))
    assert visible_gpus() == []


def test_gpu_slots_share_the_cpus_and_set_the_thread_count(monkeypatch):
    monkeypatch.setattr(local, "visible_gpus", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(local, "available_cpus", lambda: 18)
    slots = default_slots()
    assert slots == [Slot(gpu, 4) for gpu in ("0", "1", "2", "3")]
    environment = slots[1].environment()
    assert (environment["CUDA_VISIBLE_DEVICES"], environment["OMP_NUM_THREADS"], environment["MKL_NUM_THREADS"]) == (
        "1",
        "4",
        "4",
    )
    assert default_slots(workers=2) == [Slot("0", 9), Slot("1", 9)]


def test_cpu_slots_are_single_threaded_and_hide_the_gpus(monkeypatch):
    monkeypatch.setattr(local, "visible_gpus", lambda: [])
    monkeypatch.setattr(local, "available_cpus", lambda: 3)
    slots = default_slots()
    assert slots == [Slot(None)] * 3
    environment = slots[0].environment()
    assert (environment["CUDA_VISIBLE_DEVICES"], environment["OMP_NUM_THREADS"]) == ("", "1")


# -- the pool's long-lived workers: real processes training digits ---------------------------------------------


GRID = """\
name: {name}
problems: [digits_mlp]
budget: {{steps: 5000, eval_every: 250}}
seeds: [1, 2]
optimizers:
  sgd: {{grid: {{lr: [0.05]}}}}
"""


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def runs_of(sweep: SweepDir) -> dict[str, RunRow]:
    with Store(sweep.store_url()) as store:
        return {row.run_id: row for row in store.sweep_runs(sweep.name)}


def test_a_stopped_pool_leaves_the_run_of_its_worker_preempted_and_resubmit_completes_it(tmp_path, sweep_cli):
    root = tmp_path / "runs"
    grid = tmp_path / "stop.yaml"
    grid.write_text(GRID.format(name="stop"))
    assert sweep_cli(root, "submit", str(grid), "--workers", "1").returncode == 0
    sweep = SweepDir(root / "stop")

    def second_run_under_way() -> bool:  # the first unit done, the next one trained by the same worker
        runs = runs_of(sweep).values()
        done = [run for run in runs if run.status == "completed"]
        return bool(done) and any((sweep.run_dir(run.run_id) / "checkpoint.pt").exists() for run in runs)

    wait_until(second_run_under_way)
    assert local.cancel_pool(sweep)  # SIGTERM to the pool's process group, as `sweep cancel` sends it
    runs = runs_of(sweep)
    (stopped,) = [run for run in runs.values() if run.status != "completed"]
    assert stopped.status == "preempted" and (sweep.run_dir(stopped.run_id) / "checkpoint.pt").exists()
    with Store(sweep.store_url()) as store:
        attempts = store.attempts()
    assert len({a.pid for a in attempts}) == 1  # one worker trained both
    assert [a.exit_code for a in attempts if a.run_id == stopped.run_id] == [EXIT_INTERRUPTED]

    resumed = sweep_cli(root, "resubmit", "stop", "--missing", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with Store(sweep.store_url()) as store:
        assert {run.status for run in store.sweep_runs("stop")} == {"completed"}
        keys = [(m.step, m.name) for m in store.metrics(stopped.run_id)]
        assert len(keys) == len(set(keys)) and sorted({step for step, _ in keys}) == list(range(250, 5001, 250))
        assert [a.status for a in store.attempts(stopped.run_id)] == ["preempted", "completed"]
    assert 0 < stopped.step < 5000


def test_a_killed_worker_has_its_run_failed_and_the_slot_goes_on_with_a_fresh_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sweep = SweepDir(tmp_path / "kill")
    sweep.path.mkdir()
    long = RunSpec.create("digits_mlp", "sgd", {"lr": 0.05}, seed=1, steps=50_000, eval_every=500)
    short = RunSpec.create("digits_mlp", "sgd", {"lr": 0.05}, seed=2, steps=40, eval_every=20)
    url = sweep.default_store_url()
    sweep.write_meta({"name": "kill", "grid_hash": "h", "store": url, "backend": "local", "spool": False})
    sweep.write_plan([long, short])
    with Store(url) as store:
        store.upsert_sweep("kill", "h", "", str(sweep.path), "local")
        store.add_runs("kill", [long, short])
        store.set_status_many([long.run_id, short.run_id], "queued")
        assert local.start_pool(sweep, workers=1)
        wait_until(lambda: runs_of(sweep)[long.run_id].status == "running")
        (victim,) = store.attempts(long.run_id)
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: local.pool_pid(sweep) is None)
        runs = runs_of(sweep)
        assert (runs[long.run_id].status, runs[short.run_id].status) == ("failed", "completed")
        (after,) = store.attempts(short.run_id)
    assert after.pid != victim.pid
    assert "killed by signal 9" in sweep.log_file(long.run_id).read_text()


class FakeWorker:
    """Stands in for a worker process where only the pool's bookkeeping is tested."""

    def __init__(self) -> None:
        self.unit: list[RunRow] | None = None
        self.closed = False
        self.sent: list[list[int]] = []

    def send(self, unit: list[RunRow]) -> bool:
        self.unit = unit
        self.sent.append([row.index for row in unit])
        return True


def queued_sweep(tmp_path, specs: list[RunSpec], **meta) -> tuple[SweepDir, Store]:
    sweep = SweepDir(tmp_path / "sw")
    sweep.path.mkdir()
    url = sweep.default_store_url()
    sweep.write_meta({"name": "sw", "grid_hash": "h", "store": url, "backend": "local", "spool": False, **meta})
    sweep.write_plan(specs)
    store = Store(url)
    store.upsert_sweep("sw", "h", "", str(sweep.path), "local")
    store.add_runs("sw", specs)
    store.set_status_many([spec.run_id for spec in specs], "queued")
    return sweep, store


def test_a_run_another_worker_holds_waits_a_heartbeat_before_it_is_handed_out_again(tmp_path, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(local, "time", SimpleNamespace(monotonic=lambda: clock.now))
    specs = [RunSpec.create("digits_mlp", "sgd", {"lr": lr}, seed=1, steps=20) for lr in (0.1, 0.2)]
    sweep, store = queued_sweep(tmp_path, specs)
    pool, worker = local.Pool(sweep, []), FakeWorker()
    pool.workers = [worker]
    pool._launch(pool._queued(store))
    pool._settle(store, worker, b'{"unit": [0], "codes": {"0": 5}}')  # EXIT_BUSY
    pool._launch(pool._queued(store))
    pool._settle(store, worker, b'{"unit": [1], "codes": {"1": 1}}')  # a failure its worker could not record
    assert store.get_run(specs[1].run_id).status == "failed"
    pool._launch(pool._queued(store))
    assert worker.sent == [[0], [1]] and worker.unit is None  # run 0 is not tried again at once
    clock.now += local.heartbeat_seconds()  # its holder has recorded it by now, or gone silent
    pool._launch(pool._queued(store))
    assert worker.sent == [[0], [1], [0]]


def test_units_follow_the_sweeps_runs_per_worker(tmp_path):
    specs = [RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=seed, steps=20) for seed in (1, 2, 3)]
    sweep, store = queued_sweep(tmp_path, specs, runs_per_worker=2)
    pool, first, second = local.Pool(sweep, []), FakeWorker(), FakeWorker()
    pool.workers = [first, second]
    pool._launch(pool._queued(store))
    assert (first.sent, second.sent) == ([[0, 1]], [[2]])
    pool._launch(pool._queued(store))  # a unit in flight is busy: none of its runs goes out twice
    assert (first.sent, second.sent) == ([[0, 1]], [[2]])
