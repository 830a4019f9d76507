"""The worker's guards, several units in one process (``--index`` repeated, ``--serve``), and the status' view of
workers that vanished."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lsbench.store import Store
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec
from lsbench.sweep.protocol import EXIT_INTERRUPTED, EXIT_OK
from lsbench.sweep.status import sweep_status
from lsbench.sweep.worker import _ProcessState, parse_unit, run_units, run_worker


def make_sweep(tmp_path, spool: bool = False):
    spec = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1, steps=20, eval_every=10)
    sweep, store = sweep_of(tmp_path / "sw", [spec], spool=spool)
    return sweep, spec, store


def sweep_of(path: Path, specs: list[RunSpec], spool: bool = False) -> tuple[SweepDir, Store]:
    """A sweep directory and store holding ``specs`` as its plan, as ``sweep submit`` leaves them."""
    sweep = SweepDir(path)
    sweep.path.mkdir()
    url = sweep.default_store_url()
    sweep.write_meta({"name": path.name, "grid_hash": "h", "store": url, "backend": "local", "spool": spool})
    sweep.write_plan(specs)
    store = Store(url)
    store.upsert_sweep(path.name, "h", "", str(sweep.path), "local")
    store.add_runs(path.name, specs)
    return sweep, store


def numbers(store: Store, run_id: str) -> tuple[list, dict]:
    """What a run computed: its metrics and its summary, without the wall-clock times."""
    metrics = [(m.step, m.name, m.value) for m in store.metrics(run_id) if m.name != "elapsed"]
    summary = {key: value for key, value in store.get_run(run_id).summary.items() if key != "seconds"}
    return metrics, summary


def worker_command(sweep: SweepDir, *args: str) -> list[str]:
    return [sys.executable, "-m", "lsbench", "worker", "--sweep-dir", str(sweep.path), "--device", "cpu", *args]


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


PAL = {"measuring_step_size": 0.1, "update_step_adaptation": 1.0}


def test_a_serving_worker_trains_unit_after_unit_each_into_its_own_log_and_as_if_alone(tmp_path):
    first = RunSpec.create("digits_mlp", "pal", PAL, seed=1, steps=40, eval_every=20)
    second = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1, "momentum": 0.9}, seed=2, steps=40, eval_every=20)
    sweep, store = sweep_of(tmp_path / "both", [first, second])
    alone, alone_store = sweep_of(tmp_path / "alone", [second])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "serve.err", "wb") as errors:
        server = subprocess.Popen(
            worker_command(sweep, "--serve"), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
        )
        fresh = subprocess.Popen(worker_command(alone, "--index", "0"), env=env)  # meanwhile, on the other core
        server.stdin.write(b"0\n1\n")
        server.stdin.flush()
        answers = [json.loads(server.stdout.readline()) for _ in range(2)]
        server.send_signal(signal.SIGTERM)  # while it waits for the next unit
        assert server.wait(timeout=60) == EXIT_INTERRUPTED
        assert fresh.wait(timeout=120) == EXIT_OK
    assert answers == [{"unit": [0], "codes": {"0": EXIT_OK}}, {"unit": [1], "codes": {"1": EXIT_OK}}]
    assert {a.pid for spec in (first, second) for a in store.attempts(spec.run_id)} == {server.pid}
    for spec, other in ((first, second), (second, first)):
        log = sweep.log_file(spec.run_id).read_text()
        assert f"{spec.optimizer} seed {spec.seed}" in log and "completed at step 40" in log
        assert f"{other.optimizer} seed {other.seed}" not in log
    assert numbers(store, second.run_id)[0]  # it has numbers, and they are bitwise those it has alone:
    assert numbers(store, second.run_id) == numbers(alone_store, second.run_id)


def test_several_units_in_one_process_train_in_order_and_a_bad_index_trains_nothing(tmp_path, capsys):
    specs = [RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=seed, steps=20, eval_every=10) for seed in (1, 2)]
    sweep, store = sweep_of(tmp_path / "sw", specs)
    bad = subprocess.run(worker_command(sweep, "--index", "1", "--index", "0+2"), capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no run with index 2 (the plan has 2)")
    assert store.attempts() == []
    assert run_units(sweep.path, [[1], [0]], device="cpu") == EXIT_OK
    attempts = store.attempts()
    assert [a.run_id for a in sorted(attempts, key=lambda a: a.started_at)] == [specs[1].run_id, specs[0].run_id]
    assert {a.pid for a in attempts} == {os.getpid()} and {a.status for a in attempts} == {"completed"}


def test_units_are_written_i_or_i_plus_j():
    assert parse_unit("3") == [3] and parse_unit(" 7+8+9\n") == [7, 8, 9]
    for text in ("", "7+", "a", "-1", "3+3"):
        with pytest.raises(ValueError, match="not a unit"):
            parse_unit(text)


def test_before_every_unit_the_process_is_put_back_as_a_fresh_worker_has_it():
    fresh = _ProcessState.capture()
    expected = torch.rand(4)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # what a run could leave behind
    torch.use_deterministic_algorithms(not fresh.deterministic[0])
    with fresh.restored():
        assert torch.equal(torch.rand(4), expected)
        assert torch.get_num_threads() == threads
        assert torch.are_deterministic_algorithms_enabled() == fresh.deterministic[0]
