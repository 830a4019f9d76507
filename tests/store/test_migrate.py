"""Upgrading a store written by an earlier lsbench: every run comes back with its full identity."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from lsbench.runs import RunSpec, run_id_of
from lsbench.store import Store
from lsbench.store.engine import create_store_engine
from lsbench.store.migrate import alembic_config
from lsbench.store.schema import UTCDateTime

# The identity columns of revision 0001.
OLD_IDENTITY = ("run_id", "problem", "optimizer", "seed", "steps", "eval_every", "batch_size", "weight_decay")

# Runs as revision 0001 stored them: no split and no kind column, although a non-default split entered the id.
OLD_RUNS = [
    RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1),
    RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1, split="labpal"),
    RunSpec.create("digits_cnn", "pal", {"measuring_step_size": 0.3}, seed=7, steps=500, weight_decay=5e-4),
    RunSpec.create("digits_mlp", "labpal_sgd", seed=2, batch_size=32, split="labpal"),
]


def _write_revision_0001_store(url: str) -> None:
    engine = create_store_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), "0001")
        conn.execute(
            sa.text("INSERT INTO sweeps VALUES ('old', 'h', 'name: old', '/tmp/old', 'local', :now, :now)"),
            {"now": now},
        )
        json_columns = (sa.column("hparams", sa.JSON), sa.column("summary", sa.JSON))
        times = (sa.column("created_at", UTCDateTime), sa.column("updated_at", UTCDateTime))
        state = (sa.column("status"), sa.column("step"))
        runs = sa.table("runs", *(sa.column(name) for name in OLD_IDENTITY), *json_columns, *times, *state)
        for index, spec in enumerate(OLD_RUNS):
            identity = {name: getattr(spec, name) for name in (*OLD_IDENTITY, "hparams")}
            state_values = {"status": "completed", "step": spec.steps, "summary": {}}
            conn.execute(sa.insert(runs).values(**identity, **state_values, created_at=now, updated_at=now))
            conn.execute(sa.text(f"INSERT INTO sweep_runs VALUES ('old', '{spec.run_id}', {index})"))
    engine.dispose()


def test_upgrade_recovers_every_identity_field_and_the_ids_recompute(db_url: str) -> None:
    _write_revision_0001_store(db_url)
    assert {spec.split for spec in OLD_RUNS} == {"default", "labpal"}
    with Store(db_url) as store:  # opening upgrades in place
        rows = store.sweep_runs("old")
    assert [row.spec for row in rows] == OLD_RUNS  # every field, split and kind included
    for row in rows:
        assert run_id_of(row.spec.identity()) == row.run_id
        assert RunSpec.from_dict(row.spec.to_dict()).run_id == row.run_id
        assert (row.kind, row.status) == ("train", "completed")


def test_upgrade_from_0003_gives_existing_runs_the_fp32_precision_and_keeps_their_ids(db_url: str) -> None:
    engine = create_store_engine(db_url)
    now = datetime.now(UTC)
    old = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=3, split="labpal")
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), "0003")
        later = ("precision", "linescan")  # added by revisions after 0003
        columns = [name for name in old.to_dict() if name not in later]
        runs = sa.table(
            "runs",
            *(sa.column(name) for name in columns if name != "hparams"),
            sa.column("hparams", sa.JSON),
            sa.column("summary", sa.JSON),
            sa.column("created_at", UTCDateTime),
            sa.column("updated_at", UTCDateTime),
            sa.column("status"),
        )
        identity = {name: value for name, value in old.to_dict().items() if name not in later}
        conn.execute(sa.insert(runs).values(**identity, summary={}, status="planned", created_at=now, updated_at=now))
    engine.dispose()
    with Store(db_url) as store:  # opening upgrades in place
        row = store.get_run(old.run_id)
        assert row.spec == old and row.spec.precision == "fp32"
        assert run_id_of(row.spec.identity()) == old.run_id
        bf16 = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=3, split="labpal", precision="bf16")
        store.upsert_sweep("new", "h", "", "/tmp/new", "local")
        store.add_runs("new", [bf16])
        assert store.get_run(bf16.run_id).spec.precision == "bf16" and bf16.run_id != old.run_id
        assert row.spec.linescan == {} and row.arrays is None
        scan = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, seed=3, split="labpal", kind="linescan")
        store.add_runs("new", [scan])
        store.set_run_status(scan.run_id, "running", arrays="/shared/runs/x/lines.zarr")
        stored = store.get_run(scan.run_id)
        assert stored.spec == scan and stored.spec.linescan["resolution"] == 0.006
        assert stored.arrays == "/shared/runs/x/lines.zarr" and scan.run_id != old.run_id
