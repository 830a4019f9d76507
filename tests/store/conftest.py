"""Fixtures of the store tests: a fresh SQLite store per test and a minimal run spec."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lsbench.store import Store


@dataclass(frozen=True)
class Spec:
    """The attributes of lsbench.sweep.plan.RunSpec that the store reads."""

    run_id: str
    problem: str = "digits_mlp"
    optimizer: str = "pal"
    hparams: dict[str, Any] = field(default_factory=lambda: {"mu": 0.1, "s_max": 10.0})
    seed: int = 1
    steps: int = 100
    eval_every: int = 10
    batch_size: int = 32
    weight_decay: float = 1e-4


@pytest.fixture
def make_spec() -> Callable[..., Spec]:
    return Spec


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
