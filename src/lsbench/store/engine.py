"""Engine creation for the result store: URL handling, SQLite connection settings, transaction modes.

SQLite (``sqlite:///path``):

- every new DBAPI connection gets ``busy_timeout`` 30000 ms, ``foreign_keys`` on and (file databases) the WAL journal,
  set by a ``connect`` event listener;
- the ``sqlite3`` driver's own transaction handling is switched off (``isolation_level = None``) and SQLAlchemy emits
  ``BEGIN`` itself, so a transaction really starts at its first statement (reads included) and DDL is transactional.
  Write transactions use ``BEGIN IMMEDIATE`` (the engine from :func:`writer`): they take the write lock up front and
  wait up to ``busy_timeout`` for it, instead of failing with "database is locked" when a read transaction tries to
  become a write transaction after another writer committed;
- file databases use :class:`~sqlalchemy.pool.NullPool` (no pooled connection outlives an operation or a worker);
  in-memory databases (``sqlite://``) use one shared connection (:class:`~sqlalchemy.pool.StaticPool`), for tests.

Other databases (Postgres) also use ``NullPool``: a sweep may run hundreds of workers that write rarely, and each
would otherwise keep idle connections open.

SQLite is for one machine: its locking (and WAL) does not work over network file systems. On a cluster use Postgres.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool, StaticPool

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000

_BEGIN_OPTION = "lsbench_sqlite_begin"


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (safe to print or log)."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a file-backed SQLite URL, made absolute; None for other URLs and in-memory SQLite."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    database = u.database or ""
    if database in ("", ":memory:") or u.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):  # URI filename (uri=true); strip the scheme and any query
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database).expanduser().absolute()


def create_store_engine(url: str | URL) -> Engine:
    """An engine configured as described in the module docstring."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return create_engine(u, poolclass=NullPool)

    path = sqlite_file(u)
    kwargs: dict[str, Any]
    if path is None:
        kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    else:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"directory of the SQLite database does not exist: {path.parent}")
        kwargs = {"poolclass": NullPool}
    engine = create_engine(u, **kwargs)
    file_backed = path is not None

    @event.listens_for(engine, "connect")
    def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _sqlite_on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if file_backed:
                mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("SQLite store %s: journal mode is %s, not wal", path, mode)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer(engine: Engine) -> Engine:
    """A view of ``engine`` whose transactions are write transactions (``BEGIN IMMEDIATE`` on SQLite).

    Shares the pool and event listeners of ``engine``; on other databases it is the same as ``engine``.
    """
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
