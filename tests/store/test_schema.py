"""Store schema: Alembic migrations, SQLite connection settings, concurrent first opens, URL redaction."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import runpy
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

import lsbench.store.migrate as migrate
from lsbench.store import Store, current_revision, head_revision, redact_url
from lsbench.store.engine import create_store_engine
from lsbench.store.migrate import alembic_config
from lsbench.store.schema import metadata

TABLES = {"sweeps", "runs", "sweep_runs", "attempts", "metrics", "alembic_version"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_open_migrates_to_head(db_url: str, tmp_path: Path) -> None:
    Store(db_url).close()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == head_revision() == migrate.HEAD_REVISION  # a new revision must update HEAD_REVISION

    engine = create_store_engine(db_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
        assert current_revision(conn) == head
        # alembic's own `current` command agrees
        buffer = io.StringIO()
        cfg = alembic_config(connection=conn)
        cfg.stdout = buffer
        command.current(cfg)
        assert buffer.getvalue().split() == [head, "(head)"]
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    engine.dispose()
    assert tables == TABLES


def test_reopening_a_migrated_database_is_a_no_op(sqlite_url: str, tmp_path: Path, monkeypatch) -> None:
    db_url = sqlite_url
    with Store(db_url) as store:
        store.upsert_sweep("s", "h", "t", "/tmp", "local")
    before = _sha256(tmp_path / "store.db")

    def no_upgrade(*args, **kwargs):
        raise AssertionError("reopening an up-to-date database must not run migrations")

    monkeypatch.setattr(command, "upgrade", no_upgrade)
    with Store(db_url) as store:
        assert store.get_sweep("s") is not None
    assert _sha256(tmp_path / "store.db") == before


def test_upgrade_to_head_reports_whether_it_migrated(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        assert migrate.upgrade_to_head(engine) is True
        assert migrate.upgrade_to_head(engine) is False
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_table_definitions(db_url: str) -> None:
    """Autogenerate finds nothing to do: the migrations and schema.py describe the same schema."""
    Store(db_url).close()
    engine = create_store_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(db_url: str, tmp_path: Path) -> None:
    Store(db_url).close()
    engine = create_store_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), "base")
    with engine.connect() as conn:
        assert current_revision(conn) is None
    engine.dispose()
    with Store(db_url) as store:
        store.upsert_sweep("s", "h", "t", "/tmp", "local")


def test_sqlite_connection_settings(sqlite_store: Store, tmp_path: Path) -> None:
    with sqlite_store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # WAL is a property of the file: a plain connection sees it too
    with sqlite3.connect(tmp_path / "store.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "store.db.lock").exists()


def test_file_databases_keep_no_pooled_connection(store: Store) -> None:
    assert isinstance(store._engine.pool, NullPool)


def test_concurrent_first_opens_of_a_new_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    helper = str(Path(__file__).with_name("_spawn_open_store.py"))
    ctx = multiprocessing.get_context("spawn")
    n = 2
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=runpy.run_path,
            args=(helper, {"URL": url, "NAME": f"p{i}", "BARRIER": barrier, "RESULTS": results}),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n
    reported = dict(results.get(timeout=10) for _ in range(n))
    assert sorted(reported) == [f"p{i}" for i in range(n)]
    assert sum(reported.values()) == 1  # exactly one process migrated, the others found the schema at head
    with Store(url) as store:
        assert sorted(s.name for s in store.list_sweeps()) == sorted(reported)


def test_redacted_url_hides_the_password() -> None:
    url = "postgresql+psycopg://alice:s3cr%40t@db.example.org:5432/lsbench"
    redacted = redact_url(url)
    assert redacted == "postgresql+psycopg://alice:***@db.example.org:5432/lsbench"
    assert "s3cr" not in redacted


def test_store_url_attributes(sqlite_store: Store, sqlite_url: str) -> None:
    store, db_url = sqlite_store, sqlite_url
    assert store.url == db_url
    assert store.redacted_url == db_url  # nothing to hide
    assert repr(store) == f"Store({db_url!r})"


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported store database 'mysql'"):
        Store("mysql://u:p@localhost/db")


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Store(f"sqlite:///{tmp_path / 'missing' / 'store.db'}")


def test_in_memory_store() -> None:
    with Store("sqlite://") as store:
        store.upsert_sweep("m", "h", "t", "/tmp", "local")
        assert [s.name for s in store.list_sweeps()] == ["m"]


def test_postgres_migration_renders_offline() -> None:
    """The migration compiles for Postgres (JSON, timestamptz, named constraints) without a server."""
    buffer = io.StringIO()
    cfg = alembic_config("postgresql://u:p@h/db")
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    sql = buffer.getvalue()
    assert "CREATE TABLE metrics" in sql
    assert "CONSTRAINT pk_metrics PRIMARY KEY (run_id, step, name)" in sql
    assert "hparams JSON NOT NULL" in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql
    assert "UPDATE alembic_version SET version_num='0001'" in sql or "INSERT INTO alembic_version" in sql
