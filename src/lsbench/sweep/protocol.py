"""What a worker and the programs that start and watch it agree on: exit codes, run states and the run lock.

Kept free of torch so that the pool and the status commands start in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

EXIT_DONE = 0  # completed, or already finished before this worker started
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 4  # stopped by a signal after checkpointing; the run is "preempted"
EXIT_BUSY = 5  # another worker holds the run's lock; nothing was changed

FINISHED_STATES = ("completed", "diverged")
WORKER_LOCK = "worker.lock"


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


def run_is_locked(run_dir: Path) -> bool:
    """Whether a live worker on this machine holds the run's lock, i.e. is training it right now."""
    lock = run_dir / WORKER_LOCK
    if not lock.exists():
        return False
    with exclusive(lock) as acquired:
        return not acquired
