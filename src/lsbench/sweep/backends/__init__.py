"""Backends start workers for the queued runs of a sweep and tell whether any are still in flight.

Every backend starts the same entry, ``python -m lsbench worker --sweep-dir DIR --index I`` (``--index I+J+K`` for
runs trained together as one fused model, ``resources.runs_per_worker``; the local pool keeps one such process per
slot and hands it unit after unit with ``--serve``), which finds its runs in the sweep directory and records its own
progress in the store. A backend therefore only has to start, watch and stop workers:

* ``local`` -- a detached process pool on this machine (:mod:`lsbench.sweep.backends.local`);
* ``slurm`` -- array jobs on a Slurm cluster, each task running workers in an Apptainer image
  (:mod:`lsbench.sweep.backends.slurm`; where and how is described by a cluster profile,
  :mod:`lsbench.sweep.backends.profile`).

The CLI picks the backend named in ``sweep.json`` for every command after ``submit``, so a later shell (or another
login) reattaches to a sweep without knowing how it was started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lsbench.store import RunRow, Store
from lsbench.sweep.layout import SweepDir

if TYPE_CHECKING:
    from lsbench.sweep.grid import Resources

BACKENDS = ("local", "slurm")


class BackendError(RuntimeError):
    """A backend could not do what was asked (e.g. sbatch failed after retries); ``str()`` is one line."""


class BackendInputError(BackendError):
    """What was asked cannot work as configured (a bad profile, resources no node has); exit code 2."""


@dataclass(frozen=True)
class SubmitOptions:
    """Backend settings from the command line (each backend reads the ones it knows)."""

    workers: int | None = None  # local: pool size (default: one per GPU, else one per core)
    profile: str | None = None  # slurm: cluster profile (path or name under cluster/); default: the one last used
    resources: Resources | None = None  # slurm: the grid's resources (None: those recorded at the last submission)


class Backend(Protocol):
    name: str

    def submit(self, sweep: SweepDir, store: Store, runs: Sequence[RunRow], options: SubmitOptions) -> str:
        """Start workers for ``runs`` (already marked ``queued``); return one line saying what was done."""

    def active(self, sweep: SweepDir) -> bool:
        """Whether the backend still has work of this sweep queued or running."""

    def refresh(self, sweep: SweepDir, store: Store) -> None:
        """Bring run states in the store up to date with what the backend knows (e.g. jobs that died)."""

    def vouched(self, sweep: SweepDir) -> set[str]:
        """The runs the scheduler reports as pending or running: never declared lost, whatever their heartbeats."""

    def cancel(self, sweep: SweepDir, store: Store) -> str:
        """Stop the sweep's workers; return one line saying what was stopped."""

    # Optional: ``validate(sweep, store_url, options) -> None`` raises BackendInputError before anything is written
    # (the CLI calls it when a backend has it).


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ValueError lists the valid names."""
    if name == "local":
        from lsbench.sweep.backends.local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from lsbench.sweep.backends.slurm import SlurmBackend

        return SlurmBackend()
    raise ValueError(f"backend {name!r} is not available (available: {', '.join(BACKENDS)})")
