"""Throw-away Postgres databases for tests: one server per test session, one database per test.

The server comes from ``tests/services/postgres.sh`` (installed and started on demand, so a fresh machine needs
nothing else); ``make test`` starts it up front and passes its URL in ``LSBENCH_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

SCRIPT = Path(__file__).with_name("postgres.sh")
URL_ENV = "LSBENCH_TEST_POSTGRES_URL"


def control(command: str, instance: dict[str, str] | None = None) -> str:
    """Run ``postgres.sh COMMAND`` (for a private instance: ``{"LSBENCH_PG_DIR": ..., "LSBENCH_PG_PORT": ...}``)."""
    env = {**os.environ, **(instance or {})}
    done = subprocess.run([str(SCRIPT), command], check=True, capture_output=True, text=True, env=env)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def server_url() -> tuple[str, bool]:
    """The base URL of a running server, and whether this call started it."""
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV], False
    return control("start"), True


def stop_server() -> None:
    control("stop")


def _admin(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
    )


@contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``base_url``; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin(base_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin(base_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
