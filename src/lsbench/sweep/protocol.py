"""What a worker and the programs that start and watch it agree on: exit codes, heartbeats, claims and the run lock.

The exit codes are the only definition of them: the ``sweep`` and ``lsbench`` commands use the first three, a worker
all six. Kept free of torch so that the pool and the status commands start in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

EXIT_OK = 0  # a command succeeded; a worker's run completed, or was finished before the worker started
EXIT_FAILURE = 1  # a command failed (e.g. a run of `--wait` did not finish); a worker's run failed
EXIT_BAD_INPUT = 2  # the user asked for something impossible; one line on stderr says why, nothing was written
EXIT_DIVERGED = 3  # worker: the run diverged (a result, not a failure)
EXIT_INTERRUPTED = 4  # worker: stopped by a signal after checkpointing; the run is "preempted"
EXIT_BUSY = 5  # worker: another worker holds the run (its claim or lock); nothing was changed

WORKER_LOCK = "worker.lock"

HEARTBEAT_ENV = "LSBENCH_HEARTBEAT_SECONDS"
HEARTBEAT_SECONDS = 60.0
"""How often a worker reports that it is alive, on a timer, whatever its evaluation schedule
(``$LSBENCH_HEARTBEAT_SECONDS`` overrides it, e.g. for tests)."""
CLAIM_STALE_HEARTBEATS = 5
"""A claim whose holder sent no heartbeat for this many periods is free to take over: the holder is dead or cut off."""


def heartbeat_seconds() -> float:
    """The heartbeat period in force (the environment's, else :data:`HEARTBEAT_SECONDS`)."""
    value = os.environ.get(HEARTBEAT_ENV)
    return float(value) if value else HEARTBEAT_SECONDS


def claim_stale_seconds() -> float:
    """After how many seconds of silence a run's claim may be taken over."""
    return CLAIM_STALE_HEARTBEATS * heartbeat_seconds()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """Hold a non-blocking exclusive ``flock`` on ``path`` for the block; yield whether it was acquired.

    The kernel drops the lock when the process dies, however it dies, so a killed worker never blocks its run.
    """
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


LOCK_DIR_ENV = "LSBENCH_LOCK_DIR"


def lock_file(run_dir: Path, run_id: str) -> Path:
    """The worker's file lock of a run: in ``$LSBENCH_LOCK_DIR`` when set (a node-local directory), else in the run
    directory. Only a second line of defence: the store's claim is what keeps two nodes from training one run."""
    directory = os.environ.get(LOCK_DIR_ENV)
    if not directory:
        return run_dir / WORKER_LOCK
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) / f"{run_id}.lock"
