"""Postgres specifics of the store, on a real throw-away server (each test gets a fresh database)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool
from tests.factories import run_spec

from lsbench.runs import RunSpec
from lsbench.store import Store, current_revision
from lsbench.store.migrate import HEAD_REVISION


def spec(run_id: str, **changes: object) -> RunSpec:
    return run_spec(run_id, **{"optimizer": "sgd", "hparams": {"lr": 0.1}, "weight_decay": 0.0, **changes})


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    return postgres_url


def test_concurrent_first_opens_migrate_once(pg_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(Store, [pg_url] * 4))
    for s in stores:
        s.close()
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert current_revision(conn) == HEAD_REVISION
    engine.dispose()


def test_round_trip_on_postgres(pg_url: str) -> None:
    with Store(pg_url) as store:
        store.upsert_sweep("pg", "h", "t", "/d", "slurm")
        store.upsert_sweep("pg", "h2", "t", "/d", "slurm")
        specs = [spec(run_id=f"{i:016x}", seed=i) for i in range(4)]
        assert store.add_runs("pg", specs) == [0, 1, 2, 3]
        assert store.add_runs("pg", [spec(run_id="new0000000000000"), *specs]) == [4, 0, 1, 2, 3]

        rid = specs[0].run_id
        store.add_metrics(rid, 10, {"train_loss": 0.5, "val_acc": math.nan})
        store.add_metrics(rid, 10, {"train_loss": 0.7})
        store.add_metrics_many(
            [(rid, 20, "train_loss", 0.25), (rid, 20, "train_loss", 0.3), (specs[1].run_id, 5, "x", 1.0)]
        )
        assert [(m.step, m.name) for m in store.metrics(rid)] == [
            (10, "train_loss"),
            (10, "val_acc"),
            (20, "train_loss"),
        ]
        assert store.final_metrics("pg") == {rid: {"train_loss": 0.25}, specs[1].run_id: {"x": 1.0}}

        store.set_run_status(rid, "diverged", step=20, diverged_at_step=20, summary={"train_loss": math.inf})
        run = store.get_run(rid)
        assert run.status == "diverged" and run.summary == {"train_loss": math.inf}
        assert run.updated_at.tzinfo == UTC

        versions = {"torch": "2.5"}
        for _ in range(2):
            store.start_attempt(rid, "j/1", backend="slurm", job_id="j", host="n", pid=1, log_path="l", gpu=None,
                                versions=versions)  # fmt: skip
        store.heartbeat(rid, "j/1", 5)
        store.end_attempt(rid, "j/1", "failed", 1)
        (att,) = store.attempts(rid)
        assert (att.status, att.exit_code, att.heartbeat_step, att.versions) == ("failed", 1, 5, versions)
        assert store.get_sweep("pg").grid_hash == "h2"


def test_concurrent_add_runs_on_postgres(pg_url: str) -> None:
    with Store(pg_url) as store:
        store.upsert_sweep("pg", "h", "t", "/d", "slurm")
        shared = [spec(run_id=f"s{i:015x}") for i in range(5)]
        batches = [shared + [spec(run_id=f"t{t}{i:014x}") for i in range(25)] for t in range(4)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda specs: store.add_runs("pg", specs), batches))
        assert len({tuple(r[:5]) for r in results}) == 1
        assert [r.index for r in store.sweep_runs("pg")] == list(range(105))


def test_an_unreachable_server_fails_after_the_retry_budget_with_the_url_redacted(monkeypatch) -> None:
    from lsbench.store import StoreUnavailable

    monkeypatch.setenv("LSBENCH_STORE_RETRY_SECONDS", "1.5")
    url = "postgresql+psycopg://lsbench:s3cret-pw@127.0.0.1:9/nowhere"  # nothing listens on port 9
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        Store(url)
    assert 1.5 <= time.monotonic() - started < 10  # retried with back-off, then gave up within the budget
    message = str(raised.value)
    assert "s3cret-pw" not in message and "***" in message and len(message.splitlines()) == 1
