"""Fixtures of the store tests: a fresh SQLite store per test and a minimal run spec."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.factories import run_spec

from lsbench.runs import RunSpec
from lsbench.store import Store


@pytest.fixture
def make_spec() -> Callable[..., RunSpec]:
    return run_spec


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs against a SQLite file and against a fresh database on a real Postgres server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the tests of SQLite specifics (file, pragmas, query plans)."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as s:
        s.upsert_sweep("demo", grid_hash="a" * 64, grid_text="name: demo\n", sweep_dir="/tmp/demo", backend="local")
        yield s


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upsert_sweep("demo", grid_hash="a" * 64, grid_text="name: demo\n", sweep_dir="/tmp/demo", backend="local")
    yield s
    s.close()
