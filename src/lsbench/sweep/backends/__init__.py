"""Backends start workers for the queued runs of a sweep and tell whether any are still in flight.

Every backend starts the same entry, ``python -m lsbench worker --sweep-dir DIR --index I``, which finds its run in
the sweep directory and records its own progress in the store. A backend therefore only has to start, watch and
stop workers:

* ``local`` -- a detached process pool on this machine (:mod:`lsbench.sweep.backends.local`);
* ``slurm`` -- array jobs on a Slurm cluster.

The CLI picks the backend named in ``sweep.json`` for every command after ``submit``, so a later shell (or another
login) reattaches to a sweep without knowing how it was started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lsbench.store import RunRow, Store
from lsbench.sweep.layout import SweepDir

BACKENDS = ("local", "slurm")


@dataclass(frozen=True)
class SubmitOptions:
    """Backend settings from the command line (each backend reads the ones it knows)."""

    workers: int | None = None  # local: pool size (default: one per GPU, else one per core)


class Backend(Protocol):
    name: str

    def submit(self, sweep: SweepDir, store: Store, runs: Sequence[RunRow], options: SubmitOptions) -> str:
        """Start workers for ``runs`` (already marked ``queued``); return one line saying what was done."""

    def active(self, sweep: SweepDir) -> bool:
        """Whether the backend still has work of this sweep queued or running."""

    def refresh(self, sweep: SweepDir, store: Store) -> None:
        """Bring run states in the store up to date with what the backend knows (e.g. jobs that died)."""

    def cancel(self, sweep: SweepDir, store: Store) -> str:
        """Stop the sweep's workers; return one line saying what was stopped."""


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ValueError lists the valid names."""
    if name == "local":
        from lsbench.sweep.backends.local import LocalBackend

        return LocalBackend()
    raise ValueError(f"backend {name!r} is not available (available: local)")
