"""What Slurm says about a sweep's array elements, and what that means for the runs in the store.

One query per refresh for all arrays of a sweep: ``sacct -P -X`` when accounting exists (it also knows finished
jobs, with their exit codes and ``CANCELLED by <uid>``), else ``squeue -r -t all``, which knows finished jobs only
for ``MinJobAge`` seconds. Elements a scheduler no longer knows are ``None``; what to make of them is decided by
:func:`reconcile`, from the store's side.

The store stays the record of what a worker did (completed, diverged, failed with a traceback, preempted after a
checkpoint). The scheduler adds what a worker cannot report itself: that it was never started, killed without
warning (OOM, node failure, the time limit), cancelled, or requeued and about to resume. :func:`reconcile` is the
one table of those rules.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lsbench.runs import FINISHED

__all__ = [
    "ACTIVE_STATES",
    "ElementState",
    "SchedulerUnavailable",
    "expand_job_id",
    "parse_sacct",
    "parse_squeue",
    "query",
    "reconcile",
]

# Slurm states in which an element will still (re)start or is running.
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"})
RUNNING_STATES = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "SPECIAL_EXIT"}
)
ACTIVE_STATES = PENDING_STATES | RUNNING_STATES
# Ended states -> the run state of a run whose worker did not record an end of its own.
ENDED_RUN_STATE = {
    "COMPLETED": "failed",  # the task ended without the worker recording anything: it never really ran
    "FAILED": "failed",
    "OUT_OF_MEMORY": "failed",
    "NODE_FAIL": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "REVOKED": "cancelled",
    "TIMEOUT": "timeout",
    "PREEMPTED": "preempted",
    "CANCELLED": "cancelled",
}
QUERY_CHUNK = 200  # job ids per sacct/squeue call: long lists fail ("argument list too long") or lose rows
QUERY_TIMEOUT_S = 60


class SchedulerUnavailable(RuntimeError):
    """Neither sacct nor squeue answered (the controller is down or the commands are missing)."""


@dataclass(frozen=True)
class ElementState:
    """One array element as Slurm reports it: ``state`` without the ``by <uid>`` suffix, which is in ``detail``."""

    state: str
    detail: str = ""
    exit_code: str = ""
    source: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def describe(self) -> str:
        parts = [self.state]
        if self.detail:
            parts.append(self.detail)
        if self.exit_code and self.exit_code not in ("0:0", ""):
            parts.append(f"exit {self.exit_code}")
        return " ".join(parts)


_ARRAY_ID = re.compile(r"(?P<job>[0-9]+)_(?P<tasks>[0-9]+|\[[0-9,\-%]+\])$")


def expand_job_id(job_id: str) -> list[str]:
    """``12_3`` -> [``12_3``]; ``12_[4-6,9%2]`` -> [``12_4``, ``12_5``, ``12_6``, ``12_9``]; ``12`` -> [``12``]."""
    match = _ARRAY_ID.match(job_id.strip())
    if match is None:
        return [job_id.strip()]
    job, tasks = match["job"], match["tasks"]
    if not tasks.startswith("["):
        return [f"{job}_{tasks}"]
    elements = []
    for part in tasks.strip("[]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low:
            elements += [f"{job}_{task}" for task in range(int(low), int(high or low) + 1)]
    return elements


def _split_state(raw: str) -> tuple[str, str]:
    state, _, detail = raw.strip().partition(" ")
    return state.rstrip("+"), detail.strip()


def parse_sacct(text: str) -> dict[str, ElementState]:
    """Rows of ``sacct -P -X -n -o JobID,State,ExitCode``."""
    elements: dict[str, ElementState] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3 or "." in fields[0]:
            continue
        state, detail = _split_state(fields[1])
        for element in expand_job_id(fields[0]):
            elements[element] = ElementState(state, detail, fields[2].strip(), "sacct")
    return elements


def parse_squeue(text: str) -> dict[str, ElementState]:
    """Rows of ``squeue -h -r -t all -o %i|%T|%r``."""
    elements: dict[str, ElementState] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 2:
            continue
        state, detail = _split_state(fields[1])
        reason = fields[2].strip() if len(fields) > 2 and fields[2].strip() not in ("None", "") else ""
        for element in expand_job_id(fields[0]):
            elements[element] = ElementState(state, detail or reason, "", "squeue")
    return elements


def _run(command: list[str], env: Mapping[str, str] | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, env=None if env is None else dict(env)
    )


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _squeue(ids: list[str], env: Mapping[str, str] | None) -> dict[str, ElementState]:
    elements: dict[str, ElementState] = {}
    for chunk in _chunks(ids, QUERY_CHUNK):
        done = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(chunk), "-o", "%i|%T|%r"], env)
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:  # every id of the chunk is gone (older than MinJobAge)
                continue
            raise SchedulerUnavailable(f"squeue: {done.stderr.strip() or done.returncode}")
        elements.update(parse_squeue(done.stdout))
    return elements


def query(
    job_ids: Iterable[str], env: Mapping[str, str] | None = None, tasks: Mapping[str, int] | None = None
) -> tuple[str, dict[str, ElementState]]:
    """The elements of ``job_ids`` (array job ids) and which command said so: ``sacct`` or ``squeue``.

    sacct is asked first; if accounting is disabled (or sacct fails), squeue. With ``tasks`` (array id -> number
    of tasks), elements sacct does not list -- not yet in the database, or a pending task cancelled, which leaves
    no record -- are looked up with one squeue call, which asks the controller itself. Raises
    :class:`SchedulerUnavailable` if neither command answers.
    """
    ids = sorted(set(job_ids), key=int)
    if not ids:
        return "none", {}
    try:
        elements: dict[str, ElementState] = {}
        for chunk in _chunks(ids, QUERY_CHUNK):
            done = _run(["sacct", "-P", "-X", "-n", "-o", "JobID,State,ExitCode", "-j", ",".join(chunk)], env)
            if done.returncode != 0:
                raise OSError(done.stderr.strip() or f"sacct exited with {done.returncode}")
            elements.update(parse_sacct(done.stdout))
    except (OSError, subprocess.TimeoutExpired):
        pass  # accounting disabled ("Slurm accounting storage is disabled"), slurmdbd down, or no sacct at all
    else:
        gaps = [i for i in ids if any(f"{i}_{t}" not in elements for t in range((tasks or {}).get(i, 0)))]
        if gaps:
            try:
                for key, element in _squeue(gaps, env).items():
                    elements.setdefault(key, element)
            except (OSError, subprocess.TimeoutExpired, SchedulerUnavailable):
                pass  # what sacct said stands
        return "sacct", elements
    try:
        return "squeue", _squeue(ids, env)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SchedulerUnavailable(f"neither sacct nor squeue answered: {error}") from None


def reconcile(
    run_state: str, element: ElementState | None, *, recently_submitted: bool, array_known: bool = False
) -> str | None:
    """The run state implied by the store's ``run_state`` and the scheduler's ``element``; None = keep it.

    Rules (the store wins for everything a worker records itself):

    * finished runs (completed, diverged) never change;
    * element pending (also after a requeue): a run left ``running`` or ``preempted`` by the last attempt is
      ``queued`` again -- it resumes when the element starts;
    * element running: a ``preempted`` run is ``queued`` (the requeued element is starting its worker);
    * element ended: a run still ``queued`` or ``running`` whose worker recorded no end takes the state of the
      element (FAILED, OUT_OF_MEMORY, NODE_FAIL -> failed, TIMEOUT -> timeout, CANCELLED -> cancelled,
      PREEMPTED -> preempted, COMPLETED -> failed); a ``preempted`` run (checkpointed, not requeued) becomes
      ``cancelled``, ``timeout`` or stays ``preempted``;
    * element listed neither by sacct nor by squeue, while its array is (``array_known``): a ``queued`` run's task
      was cancelled while pending -- Slurm 22.05 drops such a task without any record -> cancelled; a ``running``
      run's task ended longer than MinJobAge ago without accounting -> failed;
    * array not listed at all: right after submission it is on its way (keep the state); later the job is lost
      (older than MinJobAge without accounting) -> failed.
    """
    if run_state in FINISHED:
        return None
    if element is None:
        if run_state not in ("queued", "running"):
            return None
        if array_known:  # Slurm lists the array but not this task: removed while pending, or long gone
            return "cancelled" if run_state == "queued" else "failed"
        return None if recently_submitted else "failed"
    if element.state in PENDING_STATES:
        return "queued" if run_state in ("running", "preempted") else None
    if element.state in RUNNING_STATES:
        return "queued" if run_state == "preempted" else None
    ended = ENDED_RUN_STATE.get(element.state, "failed")
    if run_state in ("queued", "running"):
        return ended
    if run_state == "preempted" and ended in ("cancelled", "timeout"):
        return ended
    return None
