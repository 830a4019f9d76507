"""Plain row types returned by :class:`lsbench.store.Store` (never ORM objects, so callers hold no sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lsbench.runs.spec import IDENTITY_FIELDS, RunSpec
from lsbench.runs.states import RUN_STATES as RUN_STATES  # re-exported: the store validates statuses


@dataclass(frozen=True)
class SweepRow:
    name: str
    grid_hash: str
    grid_text: str
    sweep_dir: str
    backend: str
    created_at: datetime  # UTC, timezone-aware
    updated_at: datetime  # UTC, timezone-aware


@dataclass(frozen=True, kw_only=True)
class RunRow(RunSpec):
    """A run as the store has it: its identity (every :class:`RunSpec` field) and its state."""

    index: int | None  # the run's index in the sweep it was read through; None from get_run (runs are global)
    status: str
    step: int | None
    diverged_at_step: int | None
    summary: dict[str, float]
    updated_at: datetime  # UTC, timezone-aware
    arrays: str | None = None  # where the run's measured arrays lie (linescan runs), see lsbench.lines.arrays

    __hash__ = RunSpec.__hash__

    @property
    def spec(self) -> RunSpec:
        """The run's identity alone."""
        return RunSpec(**{f.name: getattr(self, f.name) for f in IDENTITY_FIELDS})


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
