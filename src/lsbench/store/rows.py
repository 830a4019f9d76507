"""Plain row types returned by :class:`lsbench.store.Store` (never ORM objects, so callers hold no sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from lsbench.runs.states import RUN_STATES as RUN_STATES  # re-exported: the store validates statuses


class RunSpecLike(Protocol):
    """What :meth:`Store.add_runs` reads from a run spec.

    :class:`lsbench.sweep.plan.RunSpec` satisfies it; the store does not import the sweep package, so any object with
    these attributes works (tests use a small local dataclass).
    """

    @property
    def run_id(self) -> str: ...
    @property
    def problem(self) -> str: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def hparams(self) -> dict[str, Any]: ...
    @property
    def seed(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def eval_every(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def weight_decay(self) -> float: ...


@dataclass(frozen=True)
class SweepRow:
    name: str
    grid_hash: str
    grid_text: str
    sweep_dir: str
    backend: str
    created_at: datetime  # UTC, timezone-aware
    updated_at: datetime  # UTC, timezone-aware


@dataclass(frozen=True)
class RunRow:
    run_id: str
    index: int | None  # the run's index in the sweep it was read through; None from get_run (runs are global)
    problem: str
    optimizer: str
    hparams: dict[str, Any]
    seed: int
    steps: int
    eval_every: int
    batch_size: int
    weight_decay: float
    status: str
    step: int | None
    diverged_at_step: int | None
    summary: dict[str, float]
    updated_at: datetime  # UTC, timezone-aware


@dataclass(frozen=True)
class AttemptRow:
    run_id: str
    attempt_id: str
    backend: str
    job_id: str | None
    host: str
    pid: int
    gpu: str | None
    log_path: str
    status: str  # "running" until end_attempt
    exit_code: int | None
    started_at: datetime
    ended_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_step: int | None
    versions: dict[str, str]


@dataclass(frozen=True)
class MetricRow:
    run_id: str
    step: int
    name: str
    value: float  # NaN round-trips (SQLite stores it as NULL, read back as NaN)
