"""How many CPUs this process may use. Torch-free: the local pool, which must start quickly, asks too."""

from __future__ import annotations

import os

__all__ = ["available_cpus"]


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what Slurm's task binding and cgroups leave it), capped
    by ``$SLURM_CPUS_PER_TASK`` when Slurm set it; ``os.cpu_count()`` (the whole node) only where neither is known.
    A 4-GPU node shared by four runs must not start four times the node's core count of workers or threads."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        count = min(count, int(slurm))
    return max(1, count)
