"""Alembic migrations of the result store, run programmatically (no ``alembic.ini`` on disk).

:func:`upgrade_to_head` is what :class:`lsbench.store.Store` runs on open. It is idempotent and safe when several
processes open the same database at once:

- SQLite file: an exclusive ``fcntl.flock`` on ``<database file>.lock`` (next to the database) is held around the
  check and the upgrade; the upgrade itself runs in one ``BEGIN IMMEDIATE`` transaction (SQLite DDL is
  transactional), so a crash leaves the previous revision. The lock is node-local, like SQLite itself.
- Postgres: the check and upgrade run in one transaction that first takes ``pg_advisory_xact_lock`` (released at
  commit), so concurrent openers from any machine wait and then find the schema at head. DDL is transactional.
- Other databases: no lock; run the upgrade once (e.g. open the store once on the login node before submitting).

Opening a database that is already at head only reads ``alembic_version`` (no writes; Alembic is not even imported,
which keeps worker and CLI start-up short). That check compares with :data:`HEAD_REVISION`, which a test keeps equal
to the head of ``migrations/versions``: a new revision must update it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from lsbench.store.engine import sqlite_file, writer

if TYPE_CHECKING:
    from alembic.config import Config

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")

HEAD_REVISION = "0005"
"""The head revision of ``migrations/versions`` (the schema this version of lsbench expects)."""

VERSION_TABLE = "alembic_version"

# Key of the Postgres transaction-level advisory lock held while migrating (any fixed 64-bit integer).
POSTGRES_LOCK_KEY = 0x6C73_6265_6E63_68  # "lsbench"

LOCK_TIMEOUT_S = 600.0


def alembic_config(url: str | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations, for ``alembic.command`` functions.

    ``connection`` is used as is (the caller owns its transaction); otherwise ``url`` is used by ``env.py``.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The head revision read from the packaged migration scripts (equal to :data:`HEAD_REVISION`)."""
    from alembic.script import ScriptDirectory

    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database behind ``conn`` is at, as Alembic reports it (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _at_head(conn: Connection) -> bool:
    if not inspect(conn).has_table(VERSION_TABLE):
        return False
    versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return versions == [HEAD_REVISION]


def upgrade_to_head(engine: Engine) -> bool:
    """Migrate the database behind ``engine`` to head; True if a migration ran, False if it was already at head."""
    path = sqlite_file(engine.url)
    with _file_lock(path.with_name(path.name + ".lock")) if path is not None else contextlib.nullcontext():
        with engine.connect() as conn, conn.begin():
            if _at_head(conn):
                return False
        with writer(engine).connect() as conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POSTGRES_LOCK_KEY})")
            if _at_head(conn):  # someone else migrated between our check and our lock
                return False
            from alembic import command

            command.upgrade(alembic_config(connection=conn), "head")
            if not _at_head(conn):
                raise RuntimeError(f"migrated to {current_revision(conn)!r} but HEAD_REVISION is {HEAD_REVISION!r}")
            return True


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing, never deleted)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout:.0f} s") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
