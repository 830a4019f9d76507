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


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.upsert_sweep("demo", grid_hash="a" * 64, grid_text="name: demo\n", sweep_dir="/tmp/demo", backend="local")
    yield s
    s.close()
