"""The states a run (and each of its attempts) can be in, and the named groups every module decides with.

A run is ``planned`` when a sweep first records it, ``queued`` when a backend was asked to train it, ``running``
while a worker trains it, and ends in one of the terminal states. Which states count as a result, a failure or
work still to do is decided here once: status, aggregation, resubmission and every backend read these groups
instead of listing states themselves, so they cannot disagree.

Members are ``str`` subclasses equal to their names (``RunState.COMPLETED == "completed"``), so plain strings read
from a store or a JSON file test correctly against the groups.

Torch-free: imported by the login-node commands, which must start quickly.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ACTIVE",
    "FAILED",
    "FINISHED",
    "NO_RESULT",
    "PENDING",
    "RESUBMIT_FAILED",
    "RESUBMIT_MISSING",
    "RUN_STATES",
    "STOPPED",
    "RunState",
]


class RunState(str, Enum):  # noqa: UP042 -- kept: StrEnum would change what str() and f-strings print
    """One state of a run or attempt; the value is what the store keeps."""

    PLANNED = "planned"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


RUN_STATES: tuple[str, ...] = tuple(state.value for state in RunState)
"""Every state, in lifecycle order (the order tables and counts show them in)."""

FINISHED = frozenset({RunState.COMPLETED, RunState.DIVERGED})
"""The run has its result. A diverged run is a result (the thesis counts it), not a failure."""

FAILED = frozenset({RunState.FAILED, RunState.TIMEOUT})
"""The run's last attempt ended in an error or hit its time limit: shown with the tail of its log."""

STOPPED = frozenset({RunState.PREEMPTED, RunState.CANCELLED})
"""The run was stopped from outside (a scheduler signal, ``sweep cancel``) before it finished; no error."""

NO_RESULT = FAILED | STOPPED
"""Ended without a result: what the summary counts as failed runs."""

PENDING = frozenset({RunState.PLANNED, RunState.QUEUED, RunState.RUNNING})
"""Not ended yet: recorded, waiting for a worker, or being trained."""

ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING})
"""A backend has the run: a worker trains it or is about to."""

RESUBMIT_FAILED = NO_RESULT
"""What ``sweep resubmit --failed`` queues again."""

RESUBMIT_MISSING = PENDING | STOPPED
"""What ``sweep resubmit --missing`` queues again: runs that never finished (minus those a live worker holds)."""
