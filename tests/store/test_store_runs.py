"""Store sweeps, runs and attempts: idempotent, append-only writes and round trips."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from lsbench.store import RUN_STATES, AttemptRow, RunRow, Store, SweepRow


def _ids(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i:015x}" for i in range(n)]


def test_upsert_sweep_creates_then_updates(store: Store) -> None:
    first = store.get_sweep("demo")
    assert isinstance(first, SweepRow)
    assert (first.grid_hash, first.backend, first.sweep_dir) == ("a" * 64, "local", "/tmp/demo")
    assert first.created_at.tzinfo is not None and first.created_at.utcoffset().total_seconds() == 0

    store.upsert_sweep("demo", grid_hash="b" * 64, grid_text="changed\n", sweep_dir="/x", backend="slurm")
    second = store.get_sweep("demo")
    assert (second.grid_hash, second.grid_text, second.sweep_dir, second.backend) == (
        "b" * 64,
        "changed\n",
        "/x",
        "slurm",
    )
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at

    store.upsert_sweep("other", "c", "t", "/y", "local")
    assert [s.name for s in store.list_sweeps()] == ["demo", "other"]
    assert store.get_sweep("nope") is None


def test_add_runs_is_idempotent_and_append_only(store: Store, make_spec) -> None:
    specs = [make_spec(run_id=rid, seed=i) for i, rid in enumerate(_ids(5))]
    assert store.add_runs("demo", specs) == [0, 1, 2, 3, 4]
    assert store.add_runs("demo", specs) == [0, 1, 2, 3, 4]
    assert store.add_runs("demo", list(reversed(specs))) == [4, 3, 2, 1, 0]

    new = make_spec(run_id="new000000000000a", seed=99)
    assert store.add_runs("demo", [*specs[:2], new, *specs[2:]]) == [0, 1, 5, 2, 3, 4]
    assert store.add_runs("demo", [new]) == [5]

    runs = store.sweep_runs("demo")
    assert [r.index for r in runs] == [0, 1, 2, 3, 4, 5]
    assert [r.run_id for r in runs] == [*_ids(5), new.run_id]
    assert {r.status for r in runs} == {"planned"}


def test_add_runs_gives_a_repeated_run_id_one_index(store: Store, make_spec) -> None:
    a, b = (make_spec(run_id=rid) for rid in _ids(2))
    assert store.add_runs("demo", [a, b, a]) == [0, 1, 0]
    assert len(store.sweep_runs("demo")) == 2


def test_runs_are_global_and_shared_between_sweeps(store: Store, make_spec) -> None:
    shared, own = make_spec(run_id="shared0000000000"), make_spec(run_id="own0000000000000")
    store.add_runs("demo", [own, shared])
    store.set_run_status(shared.run_id, "completed", step=100, summary={"val_acc": 0.9})

    store.upsert_sweep("second", "h", "t", "/s", "local")
    assert store.add_runs("second", [shared]) == [0]  # its own index space
    run = store.sweep_runs("second")[0]
    assert (run.index, run.status, run.step, run.summary) == (0, "completed", 100, {"val_acc": 0.9})  # untouched


def test_add_runs_needs_the_sweep(store: Store, make_spec) -> None:
    with pytest.raises(KeyError, match="unknown sweep 'missing'"):
        store.add_runs("missing", [make_spec(run_id="x" * 16)])
    assert store.get_run("x" * 16) is None  # nothing written


def test_run_row_round_trip(store: Store, make_spec) -> None:
    spec = make_spec(run_id="f" * 16, hparams={"mu": 0.1, "nested": {"a": [1, 2]}}, seed=3, weight_decay=0.0)
    store.add_runs("demo", [spec])
    run = store.get_run(spec.run_id)
    assert isinstance(run, RunRow)
    assert run.index is None  # runs are global; the index belongs to a sweep
    assert (run.problem, run.optimizer, run.hparams, run.seed) == ("digits_mlp", "pal", spec.hparams, 3)
    assert (run.steps, run.eval_every, run.batch_size, run.weight_decay) == (100, 10, 32, 0.0)
    assert (run.status, run.step, run.diverged_at_step, run.summary) == ("planned", None, None, {})
    assert run.updated_at.tzinfo is not None and run.updated_at.utcoffset().total_seconds() == 0
    assert store.get_run("nope") is None


def test_set_run_status_and_summary_round_trip(store: Store, make_spec) -> None:
    rid = "1" * 16
    store.add_runs("demo", [make_spec(run_id=rid)])
    before = store.get_run(rid).updated_at

    store.set_run_status(rid, "running", step=10)
    run = store.get_run(rid)
    assert (run.status, run.step, run.summary) == ("running", 10, {})
    assert run.updated_at >= before

    summary = {"train_loss": 0.25, "val_loss": 0.3, "val_acc": 0.91, "test_loss": 0.31, "test_acc": 0.9,
               "mean_effective_lr": 0.05, "seconds": 12.5}  # fmt: skip
    store.set_run_status(rid, "completed", step=100, summary=summary)
    run = store.get_run(rid)
    assert (run.status, run.step, run.diverged_at_step) == ("completed", 100, None)
    assert run.summary == summary

    store.set_run_status(rid, "diverged", diverged_at_step=57)  # step and summary unchanged when not given
    run = store.get_run(rid)
    assert (run.status, run.step, run.diverged_at_step, run.summary) == ("diverged", 100, 57, summary)


def test_summary_keeps_non_finite_values(store: Store, make_spec) -> None:
    rid = "2" * 16
    store.add_runs("demo", [make_spec(run_id=rid)])
    store.set_run_status(rid, "diverged", summary={"train_loss": math.nan, "val_loss": math.inf, "x": -math.inf})
    summary = store.get_run(rid).summary
    assert math.isnan(summary["train_loss"])
    assert summary["val_loss"] == math.inf and summary["x"] == -math.inf


def test_set_run_status_rejects_bad_input(store: Store, make_spec) -> None:
    store.add_runs("demo", [make_spec(run_id="3" * 16)])
    with pytest.raises(ValueError, match="unknown status 'done'"):
        store.set_run_status("3" * 16, "done")
    with pytest.raises(KeyError, match="unknown run"):
        store.set_run_status("nope", "completed")
    assert set(RUN_STATES) >= {"planned", "completed", "diverged", "preempted"}


def _start(store: Store, run_id: str, attempt_id: str, **overrides) -> None:
    kwargs = {"backend": "local", "job_id": None, "host": "node1", "pid": 123, "log_path": "/logs/a.log",
              "gpu": "NVIDIA H100", "versions": {"torch": "2.5.0", "lsbench": "0.1.0"}}  # fmt: skip
    store.start_attempt(run_id, attempt_id, **{**kwargs, **overrides})


def test_attempts_are_idempotent_and_round_trip(store: Store, make_spec) -> None:
    rid = "4" * 16
    store.add_runs("demo", [make_spec(run_id=rid)])
    _start(store, rid, "local/aaaa0001")
    _start(store, rid, "local/aaaa0001", host="other", pid=999)  # a repeat leaves the first row
    (att,) = store.attempts(rid)
    assert isinstance(att, AttemptRow)
    assert (att.attempt_id, att.host, att.pid, att.status, att.exit_code) == (
        "local/aaaa0001",
        "node1",
        123,
        "running",
        None,
    )
    assert (att.gpu, att.job_id, att.log_path) == ("NVIDIA H100", None, "/logs/a.log")
    assert att.versions == {"torch": "2.5.0", "lsbench": "0.1.0"}
    assert att.started_at.tzinfo is not None and att.ended_at is None

    store.heartbeat(rid, "local/aaaa0001", step=40)
    att = store.attempts(rid)[0]
    assert att.heartbeat_step == 40 and att.heartbeat_at >= att.started_at

    store.end_attempt(rid, "local/aaaa0001", "preempted", exit_code=143)
    _start(store, rid, "1234_7/bbbb0002", backend="slurm", job_id="1234_7")
    store.end_attempt(rid, "1234_7/bbbb0002", "completed", exit_code=0)

    first, second = store.attempts(rid)
    assert (first.status, first.exit_code) == ("preempted", 143) and first.ended_at >= first.started_at
    assert (second.backend, second.job_id, second.status, second.exit_code) == ("slurm", "1234_7", "completed", 0)
    assert len(store.attempts()) == 2


def test_attempts_of_unknown_runs_and_attempts(store: Store, make_spec) -> None:
    with pytest.raises(KeyError, match="unknown run"):
        _start(store, "nope", "a")
    store.add_runs("demo", [make_spec(run_id="5" * 16)])
    with pytest.raises(KeyError, match="unknown attempt"):
        store.heartbeat("5" * 16, "missing", step=1)
    with pytest.raises(KeyError, match="unknown attempt"):
        store.end_attempt("5" * 16, "missing", "failed", exit_code=1)
    _start(store, "5" * 16, "a")
    with pytest.raises(ValueError, match="unknown status"):
        store.end_attempt("5" * 16, "a", "crashed", exit_code=1)


def test_timestamps_are_utc(store: Store, make_spec) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    store.add_runs("demo", [make_spec(run_id="6" * 16)])
    run = store.get_run("6" * 16)
    assert run.updated_at.tzinfo == UTC
    assert t0 <= run.updated_at <= datetime.now(UTC)


def test_concurrent_add_runs_keep_indices_unique_and_dense(store: Store, make_spec) -> None:
    shared = [make_spec(run_id=rid) for rid in _ids(5, "s")]
    batches = [shared + [make_spec(run_id=rid) for rid in _ids(25, f"t{t}")] for t in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda specs: store.add_runs("demo", specs), batches))
    assert len({tuple(r[:5]) for r in results}) == 1  # the shared runs got one index each
    indices = [r.index for r in store.sweep_runs("demo")]
    assert indices == list(range(5 + 4 * 25))


def test_writes_take_the_sqlite_write_lock_up_front(sqlite_store: Store, make_spec) -> None:
    store = sqlite_store
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(store._engine, "before_cursor_execute", record)
    try:
        store.add_runs("demo", [make_spec(run_id="7" * 16)])
        store.get_run("7" * 16)
    finally:
        event.remove(store._engine, "before_cursor_execute", record)
    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN DEFERRED"]


def test_set_status_many_changes_only_the_allowed_runs_in_one_transaction(store: Store, make_spec) -> None:
    ids = _ids(5)
    store.add_runs("demo", [make_spec(run_id=rid, seed=i) for i, rid in enumerate(ids)])
    store.set_run_status(ids[1], "completed")
    store.set_run_status(ids[3], "diverged")
    transactions: list[object] = []

    def count(conn: object) -> None:
        transactions.append(conn)

    event.listen(store._engine, "begin", count)
    try:
        changed = store.set_status_many([*reversed(ids), "unknown00000000"], "queued", unless=("completed", "diverged"))
    finally:
        event.remove(store._engine, "begin", count)
    assert changed == [ids[4], ids[2], ids[0]]
    assert len(transactions) == 1
    assert [r.status for r in store.sweep_runs("demo")] == ["queued", "completed", "queued", "diverged", "queued"]
    assert store.set_status_many(ids, "cancelled") == ids
