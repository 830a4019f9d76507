"""Store metrics: keyed writes without duplicates, bulk writes, and the final metrics of a sweep in one query."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

import lsbench.store.store as store_module
from lsbench.store import MetricRow, Store


def _count_rows(store: Store) -> int:
    with store._engine.connect() as conn:
        return conn.execute(sqlalchemy.text("SELECT count(*) FROM metrics")).scalar_one()


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements (other than BEGIN) the store sends while the block runs."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(store._engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store._engine, "before_cursor_execute", record)


@pytest.fixture
def runs(store: Store, make_spec) -> list[str]:
    ids = [f"{i:016x}" for i in range(3)]
    store.add_runs("demo", [make_spec(run_id=rid) for rid in ids])
    return ids


def test_writing_a_metric_twice_leaves_one_row(store: Store, runs: list[str], tmp_path: Path) -> None:
    rid = runs[0]
    store.add_metrics(rid, 10, {"train_loss": 0.5, "val_acc": 0.8})
    store.add_metrics(rid, 10, {"train_loss": 0.5, "val_acc": 0.8})
    store.add_metrics(rid, 10, {"train_loss": 9.9})  # same key, other value: the first write stays
    assert _count_rows(store) == 2
    assert store.metrics(rid) == [MetricRow(rid, 10, "train_loss", 0.5), MetricRow(rid, 10, "val_acc", 0.8)]


def test_metrics_are_ordered_by_step_and_name(store: Store, runs: list[str]) -> None:
    rid = runs[0]
    store.add_metrics(rid, 20, {"b": 2.0, "a": 1.0})
    store.add_metrics(rid, 0, {"z": 0.0})
    store.add_metrics(rid, 10, {})  # nothing to write
    assert [(m.step, m.name) for m in store.metrics(rid)] == [(0, "z"), (20, "a"), (20, "b")]
    assert store.metrics(runs[1]) == []


def test_metric_values_convert_and_keep_non_finite(store: Store, runs: list[str]) -> None:
    import numpy as np
    import torch

    rid = runs[0]
    store.add_metrics(
        rid, np.int64(5), {"nan": math.nan, "inf": math.inf, "np": np.float32(0.5), "t": torch.tensor(2.0)}
    )
    values = {m.name: m.value for m in store.metrics(rid)}
    assert math.isnan(values["nan"]) and values["inf"] == math.inf
    assert values["np"] == 0.5 and values["t"] == 2.0
    assert all(type(v) is float for v in values.values())
    assert math.isnan(store.final_metrics("demo")[rid]["nan"])


def test_add_metrics_needs_a_known_run(store: Store) -> None:
    with pytest.raises(KeyError, match="unknown run 'nope'"):
        store.add_metrics("nope", 1, {"x": 1.0})


def test_add_metrics_many_is_one_idempotent_transaction(
    store: Store, runs: list[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(store_module, "_BULK_CHUNK", 7)  # several chunks per call
    rows = [(rid, step, name, float(step)) for rid in runs for step in range(0, 50, 10) for name in ("a", "b")]
    store.add_metrics_many(iter(rows))
    store.add_metrics_many(rows + rows)  # duplicates inside one call and across calls
    assert _count_rows(store) == len(rows) == 30
    assert [(m.step, m.name, m.value) for m in store.metrics(runs[2])][-2:] == [(40, "a", 40.0), (40, "b", 40.0)]

    # an unknown run id fails the whole call: nothing of it is written
    with pytest.raises(IntegrityError):
        store.add_metrics_many([(runs[0], 1000, "a", 1.0)] * 3 + [("nope", 0, "a", 1.0)])
    assert _count_rows(store) == 30


def test_final_metrics_picks_each_runs_last_step(store: Store, runs: list[str], make_spec) -> None:
    a, b, _no_metrics = runs
    for step in (0, 10, 20):
        store.add_metrics(a, step, {"train_loss": 1.0 / (step + 1), "val_acc": step / 100})
    store.add_metrics(b, 0, {"train_loss": 2.0, "val_acc": 0.1})
    store.add_metrics(b, 5, {"train_loss": 1.5})  # b's last step has only one metric
    # c has no metrics: absent from the result

    store.upsert_sweep("other", "h", "t", "/o", "local")
    store.add_runs("other", [make_spec(run_id="other00000000000")])
    store.add_metrics("other00000000000", 99, {"train_loss": 0.0})

    assert store.final_metrics("demo") == {
        a: {"train_loss": 1.0 / 21, "val_acc": 0.2},
        b: {"train_loss": 1.5},
    }
    assert store.final_metrics("other") == {"other00000000000": {"train_loss": 0.0}}
    assert store.final_metrics("missing") == {}


def test_sweep_reads_are_single_queries(store: Store, make_spec) -> None:
    ids = [f"{i:016x}" for i in range(20)]
    store.add_runs("demo", [make_spec(run_id=rid, seed=i) for i, rid in enumerate(ids)])
    store.add_metrics_many((rid, step, name, 1.0) for rid in ids for step in range(0, 100, 10) for name in "abc")

    with _statements(store) as seen:
        final = store.final_metrics("demo")
    assert len(final) == 20 and len(seen) == 1

    with _statements(store) as seen:
        rows = store.sweep_runs("demo")
    assert [r.index for r in rows] == list(range(20)) and len(seen) == 1


def test_final_metrics_uses_the_primary_key_for_the_last_step(sqlite_store: Store, tmp_path: Path) -> None:
    """The query plan looks up each run's last step in the metrics primary key, never scanning the table."""
    store = sqlite_store
    with _statements(store) as seen:
        store.final_metrics("demo")
    (sql,) = seen
    with sqlite3.connect(tmp_path / "store.db") as con:
        plan = [row[3] for row in con.execute("EXPLAIN QUERY PLAN " + sql, ("demo",))]
    assert not any(step.startswith("SCAN") for step in plan), plan
    assert any("metrics USING PRIMARY KEY (run_id=? AND step=?)" in step for step in plan), plan
