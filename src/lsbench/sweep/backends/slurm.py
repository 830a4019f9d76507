"""The Slurm backend: a sweep's queued runs become array jobs whose tasks run the worker in an Apptainer image.

``sweep submit GRID --backend slurm --profile cluster/tcml.yaml`` writes, per array, a task table and a batch
script under ``<sweep>/slurm/``, calls ``sbatch`` and returns as soon as the arrays are queued. The array job
ids go to ``<sweep>/slurm/jobs.json`` (with the profile and resources used), so any later shell -- ``sweep
status``, ``resubmit``, ``cancel`` -- reattaches from the sweep directory alone.

What it adds to plain ``sbatch --array``:

* **Chunking.** Array indices must stay below the cluster's ``MaxArraySize`` (read from ``scontrol show config``
  unless the profile sets ``max_array_size``), so the tasks are split into arrays of at most that many, each
  indexed from 0; the task table maps an array index back to the sweep's plan indices.
* **A sweep-wide throttle.** ``max_concurrent_runs`` is divided among the arrays as their ``%`` limits (summing
  to the limit); with more arrays than the limit allows, array k waits for array k - limit
  (``--dependency=afterany``). Each refresh hands the share of a finished array to the arrays still pending
  (``scontrol update ArrayTaskThrottle``), never exceeding the limit.
* **Placement** from the profile: ``gpu`` -- one task per run with ``--gres=gpu:N`` (shared partitions);
  ``node`` -- one task takes a node and runs one worker per GPU slot, each an ``srun --exact`` step.
* **Robust submission.** ``sbatch`` is retried with exponential back-off on transient errors (socket timeouts,
  a busy controller); ``SBATCH_*`` variables are always dropped from its environment (the profile decides), and
  inside an allocation the inherited ``SLURM_*`` variables as well (except ``SLURM_CONF``).
* **Status.** :meth:`SlurmBackend.refresh` reconciles the store with one batched ``sacct`` (or ``squeue``)
  query; see :mod:`lsbench.sweep.backends.slurm_state`.

Why not submitit: its payload is a pickle that ``python -m submitit.core._submit`` unpickles inside the job, so
the image would need submitit and the host's exact Python version, and host objects would cross the container
boundary (DESIGN.md forbids both). Its batch command always ends in ``<python> -u -m submitit.core._submit
<folder>`` (behind one ``srun`` or none), which leaves no place for a host-side entry that forwards signals and
requeues with ``scontrol`` (absent inside containers), nor for several ``srun --exact`` steps per task. It has
no ``MaxArraySize`` chunking and no status path without ``sacct``. What it would still have offered -- writing
``#SBATCH`` lines and calling ``sbatch`` -- is a few lines here, tested against golden files.

Never written into a batch script or command line: the store URL (workers read it from the sweep directory, so
a password stays in the owner-only ``.store-url``) and anything not quoted (see
:mod:`lsbench.sweep.backends.slurm_script`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from lsbench.files import atomic_write_text
from lsbench.fused.groups import group_runs
from lsbench.store import RunRow, Store
from lsbench.store.spool import ingest
from lsbench.sweep.backends import BackendError, BackendInputError, SubmitOptions
from lsbench.sweep.backends.profile import PROFILE_KEYS, Profile, ProfileError, load_profile, parse_profile
from lsbench.sweep.backends.slurm_script import (
    ENTRY_NAME,
    ArrayTask,
    BatchSpec,
    container_command,
    render_batch_script,
    render_tasks,
)
from lsbench.sweep.backends.slurm_state import (
    ACTIVE_STATES,
    PENDING_STATES,
    RUNNING_STATES,
    ElementState,
    SchedulerUnavailable,
    query,
    reconcile,
)
from lsbench.sweep.layout import SweepDir

__all__ = [
    "ConfigurationError",
    "Prepared",
    "SlurmBackend",
    "SubmissionError",
    "clean_environment",
    "plan_arrays",
    "read_max_array_size",
    "run_sbatch",
    "scheduler_notes",
    "throttle_shares",
]

SLURM_DIR = "slurm"
JOBS_FILE = "jobs.json"
STATE_FILE = "state.json"
NOTES_FILE = "notes.json"
PROFILE_COPY = "profile.yaml"
RECENT_SUBMISSION_S = 120.0  # an element Slurm does not list yet this soon after sbatch is on its way
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default, used if scontrol cannot tell
TRANSIENT_SBATCH_ERRORS = (
    "socket timed out",
    "unable to contact slurm controller",
    "slurm temporarily unable to accept job",
    "resource temporarily unavailable",
    "transport endpoint is not connected",
    "connection refused",
    "connection reset",
    "sending message to slurmctld",
    "temporarily",
)
_SUBMITTED = re.compile(r"Submitted batch job ([0-9]+)|^([0-9]+)(?:;\S+)?$", re.MULTILINE)


class SubmissionError(BackendError):
    """sbatch (or scancel) failed, after retries where the error was transient; one line."""


class ConfigurationError(BackendInputError):
    """The sweep cannot run as configured (profile, store, resources); one line, exit code 2."""


# -- environment and sbatch ------------------------------------------------------------------------------------


def clean_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for sbatch: without ``SBATCH_*``/``SALLOC_*``; inside an allocation also without ``SLURM_*``.

    A job submitted from inside another job inherits that job's ``SLURM_*`` variables, which sbatch reads as
    defaults (wrong GPU counts, task layouts, even the wrong job id; submitit #1753); ``SBATCH_*`` variables
    override ``#SBATCH`` lines, so a stray ``SBATCH_PARTITION`` in a login shell would silently beat the profile.
    ``SLURM_CONF`` is kept: it says which cluster to talk to.
    """
    inside = "SLURM_JOB_ID" in environ or "SLURM_JOBID" in environ
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(("SBATCH_", "SALLOC_"))
        and not (inside and name.startswith(("SLURM_", "SRUN_")) and name != "SLURM_CONF")
    }


def _transient(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in TRANSIENT_SBATCH_ERRORS)


def run_sbatch(
    script: Path,
    *,
    env: Mapping[str, str],
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Submit ``script``; return the job id. Transient errors are retried ``retries`` times, waiting ``backoff``
    seconds and doubling; anything else, or the last failure, raises :class:`SubmissionError`."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            done = subprocess.run(
                ["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=dict(env), timeout=120
            )
        except FileNotFoundError:
            raise SubmissionError("sbatch is not on PATH: submit from a Slurm login node") from None
        except subprocess.TimeoutExpired:
            message = "sbatch did not answer within 120 s"
        else:
            match = _SUBMITTED.search(done.stdout)
            if done.returncode == 0 and match:
                return match.group(1) or match.group(2)
            message = " ".join((done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").split())
            if not _transient(message):
                raise SubmissionError(f"sbatch {script.name}: {message}")
        if attempt < retries:
            print(f"sbatch {script.name}: {message}; retrying in {delay:g}s", file=sys.stderr, flush=True)
            sleep(delay)
            delay *= 2
    raise SubmissionError(f"sbatch {script.name}: {message} (gave up after {retries} retries)")


def read_max_array_size(env: Mapping[str, str] | None = None) -> int:
    """``MaxArraySize`` of ``scontrol show config`` (Slurm's default 1001 if it cannot be read)."""
    try:
        done = subprocess.run(
            ["scontrol", "show", "config"],
            capture_output=True,
            text=True,
            timeout=60,
            env=None if env is None else dict(env),
        )
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    match = re.search(r"^MaxArraySize\s*=\s*([0-9]+)", done.stdout, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


# -- planning ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayPlan:
    """One array to submit: its tasks (indices 0..n-1), its ``%`` throttle and the array it waits for."""

    tasks: tuple[ArrayTask, ...]
    throttle: int | None
    after: int | None  # position of the array this one waits for (afterany), or None


def throttle_shares(sizes: Sequence[int], limit: int | None) -> tuple[list[int | None], list[int | None]]:
    """Split a sweep-wide limit of ``limit`` tasks at once over arrays of ``sizes`` tasks.

    Returns (throttle per array, position of the array it must wait for). With ``limit`` None nothing is limited.
    With at least as many task slots as arrays, the shares sum to ``limit`` (never more than an array's size);
    with more arrays than ``limit``, every array gets 1 and array k waits for array k - limit.
    """
    count = len(sizes)
    if limit is None:
        return [None] * count, [None] * count
    if count > limit:
        return [1] * count, [k - limit if k >= limit else None for k in range(count)]
    shares = [limit // count + (1 if k < limit % count else 0) for k in range(count)]
    return [min(share, size) for share, size in zip(shares, sizes, strict=True)], [None] * count


def plan_arrays(
    units: Sequence[Sequence[tuple[int, str]]], slots: int, max_array_size: int, max_concurrent_runs: int | None
) -> list[ArrayPlan]:
    """Put units of work (each the runs, as (plan index, run id), one worker trains) into tasks of ``slots`` units
    and the tasks into arrays.

    An array holds at most ``max_array_size`` tasks: Slurm's limit is on the index (< MaxArraySize), and every
    array is indexed from 0. ``max_concurrent_runs`` becomes a limit in tasks (``ceil(runs / slots)``), counting a
    fused unit as one run: it takes one slot.
    """
    units = [tuple(unit) for unit in units]
    tasks = [ArrayTask(tuple(units[start : start + slots])) for start in range(0, len(units), slots)]
    size = max(1, max_array_size)
    groups = [tuple(tasks[start : start + size]) for start in range(0, len(tasks), size)]
    limit = None if max_concurrent_runs is None else max(1, -(-max_concurrent_runs // slots))
    throttles, after = throttle_shares([len(group) for group in groups], limit)
    return [ArrayPlan(group, throttle, wait) for group, throttle, wait in zip(groups, throttles, after, strict=True)]


# -- the sweep's Slurm records ---------------------------------------------------------------------------------


@dataclass
class Records:
    """``<sweep>/slurm/jobs.json``: the profile and resources of the sweep and every array submitted."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, sweep: SweepDir) -> Records:
        path = sweep.path / SLURM_DIR / JOBS_FILE
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.setdefault("arrays", [])
        return cls(path, data)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    @property
    def arrays(self) -> list[dict[str, Any]]:
        return self.data["arrays"]

    def placements(self) -> dict[str, tuple[dict[str, Any], int]]:
        """run id -> (array record, task id) of the latest submission of the run."""
        latest: dict[str, tuple[dict[str, Any], int]] = {}
        for array in self.arrays:
            for task_id, task in enumerate(array["tasks"]):
                for _index, run_id in task:
                    latest[run_id] = (array, task_id)
        return latest


def _profile_for(sweep: SweepDir, records: Records, options: SubmitOptions) -> Profile:
    """``--profile``, else the copy kept from the sweep's last submission, else ``$LSBENCH_PROFILE``."""
    if options.profile:
        return load_profile(options.profile)
    copy = sweep.path / SLURM_DIR / PROFILE_COPY
    if copy.is_file():
        return parse_profile(copy.read_text(), records.data.get("profile", str(copy)), copy.parent)
    env_profile = os.environ.get("LSBENCH_PROFILE")
    if env_profile:
        return load_profile(env_profile)
    raise ProfileError("sweep", "--profile", "the slurm backend needs a cluster profile (e.g. cluster/tcml.yaml)")


def _resources_for(records: Records, options: SubmitOptions) -> dict[str, Any]:
    if options.resources is not None:
        return {
            "gpus_per_run": options.resources.gpus_per_run,
            "time_limit": options.resources.time_limit,
            "memory": options.resources.memory,
        }
    recorded = records.data.get("resources")
    if recorded:
        return dict(recorded)
    return {"gpus_per_run": 1, "time_limit": "24:00:00", "memory": "16G"}


def _seconds(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return (int(days) if days else 0) * 86_400 + hours * 3_600 + minutes * 60 + seconds


def _times(size: str, factor: int) -> str:
    number, unit = (size[:-1], size[-1]) if size[-1] in "KMGT" else (size, "")
    return f"{int(number) * factor}{unit}"


def _image_digest(image: str) -> str:
    """``sha256:<hex>`` of the image, from the ``<image>.sha256`` file that ``sweep image build`` writes (if it is
    newer than the image), else computed -- and cached there when the directory is writable."""
    path = Path(image)
    sidecar = path.with_name(path.name + ".sha256")
    try:
        if sidecar.is_file() and sidecar.stat().st_mtime >= path.stat().st_mtime:
            return "sha256:" + sidecar.read_text().split()[0]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise SubmissionError(f"cannot read the container image {image}: {error.strerror or error}") from None
    with contextlib.suppress(OSError):  # a read-only image directory: compute it again next time
        atomic_write_text(sidecar, f"{digest.hexdigest()}  {path.name}\n")
    return "sha256:" + digest.hexdigest()


def _install_entry(slurm_dir: Path) -> Path:
    """Copy the job entry into the sweep directory, named by its content: queued jobs keep the entry they were
    submitted with even if the checkout changes, and compute nodes need only the shared sweep directory."""
    source = resources.files("lsbench.sweep.backends").joinpath(ENTRY_NAME).read_bytes()
    target = slurm_dir / f"{Path(ENTRY_NAME).stem}-{hashlib.sha256(source).hexdigest()[:12]}.sh"
    if not target.is_file() or target.read_bytes() != source:
        atomic_write_text(target, source.decode())
    return target


# -- the backend -------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What :meth:`SlurmBackend.prepare` wrote: one (batch script, task table, plan, spec) per array."""

    records: Records
    profile: Profile
    resources: dict[str, Any]
    submission: int
    arrays: list[tuple[Path, Path, ArrayPlan, BatchSpec]]


class SlurmBackend:
    """The :class:`lsbench.sweep.backends.Backend` for Slurm clusters (see the module docstring)."""

    name = "slurm"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    @property
    def environ(self) -> dict[str, str]:
        """The environment of every Slurm command this backend runs (see :func:`clean_environment`)."""
        return clean_environment(os.environ if self._environ is None else self._environ)

    # -- submit --------------------------------------------------------------------------------------------

    def _settings(
        self, sweep: SweepDir, store_url: str, options: SubmitOptions
    ) -> tuple[Records, Profile, dict[str, Any]]:
        """The records, profile and resources of a submission, checked (ConfigurationError says what is wrong)."""
        records = Records.read(sweep)
        try:
            profile = _profile_for(sweep, records, options)
        except ProfileError as error:
            raise ConfigurationError(str(error)) from None
        if profile.backend != "slurm":
            raise ConfigurationError(f"{profile.source}: backend: is {profile.backend!r}, not slurm")
        wanted = _resources_for(records, options)
        sweep_dir = sweep.path.resolve()
        for char in ("\n", "\r", "%"):
            if char in str(sweep_dir):
                raise ConfigurationError(
                    f"the sweep directory {str(sweep_dir)!r} contains {char!r}; Slurm cannot take it"
                )
        gpus = int(wanted["gpus_per_run"])
        if gpus > profile.gpus_per_node:
            raise ConfigurationError(
                f"a run asks for {gpus} GPUs; a node of {profile.source} has {profile.gpus_per_node}"
            )
        time_limit = profile.time_limit or wanted["time_limit"]
        if profile.max_time_limit and _seconds(time_limit) > _seconds(profile.max_time_limit):
            raise ConfigurationError(
                f"time limit {time_limit} exceeds max_time_limit {profile.max_time_limit} of {profile.source}"
            )
        if not Path(str(profile.image)).is_file():
            raise ConfigurationError(f"{profile.source}: image: {profile.image} does not exist (sweep image build)")
        return records, profile, wanted

    def validate(self, sweep: SweepDir, store_url: str, options: SubmitOptions) -> None:
        """Check a submission before anything is written (raises ConfigurationError)."""
        self._settings(sweep, store_url, options)

    def data_dir(self, sweep: SweepDir, options: SubmitOptions) -> tuple[str | None, str]:
        """The data directory the workers of a submission read, as a path on the shared file system that the login
        node sees too, and the profile that says so; ``None`` when the profile sets no ``data_dir`` (the workers then
        read ``$LSBENCH_DATA`` as sbatch passes it on from here). Lets ``sweep submit`` check the data first."""
        try:
            profile = _profile_for(sweep, Records.read(sweep), options)
        except ProfileError as error:
            raise ConfigurationError(str(error)) from None
        return profile.data_dir, profile.source

    def prepare(self, sweep: SweepDir, runs: Sequence[RunRow], options: SubmitOptions) -> Prepared:
        """Write the task tables and batch scripts for ``runs`` under ``<sweep>/slurm/``; submit nothing."""
        records, profile, wanted = self._settings(sweep, sweep.store_url(), options)
        sweep_dir = sweep.path.resolve()
        gpus = int(wanted["gpus_per_run"])
        time_limit = profile.time_limit or wanted["time_limit"]
        slots = profile.slots(gpus)
        max_array = profile.max_array_size or read_max_array_size(self.environ)
        runs_per_worker = int(sweep.read_meta().get("runs_per_worker", 1))
        if runs_per_worker > 1:  # fused groups of compatible runs (lsbench.fused.groups), one worker each
            grouped = group_runs([row.spec for row in runs], runs_per_worker)
        else:
            grouped = [[position] for position in range(len(runs))]
        units = [[(runs[position].index, runs[position].run_id) for position in unit] for unit in grouped]
        plans = plan_arrays(units, slots, max_array, profile.max_concurrent_runs)

        slurm_dir = sweep_dir / SLURM_DIR
        slurm_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "logs" / SLURM_DIR).mkdir(parents=True, exist_ok=True)
        entry = _install_entry(slurm_dir)
        submission = 1 + max((array.get("submission", 0) for array in records.arrays), default=0)
        worker = container_command(
            runtime=profile.apptainer,
            image=str(profile.image),
            python=profile.python,
            sweep_dir=str(sweep_dir),
            binds=profile.binds,
            image_digest=_image_digest(str(profile.image)),
            device=profile.device,
        )
        memory = _times(profile.memory_per_gpu, gpus) if profile.memory_per_gpu else wanted["memory"]
        cpus = profile.cpus_per_gpu * gpus
        arrays = []
        for position, plan in enumerate(plans, start=1):
            stem = f"s{submission:03d}-a{position:03d}"
            runs_each = f"{slots} {'run' if slots == 1 else 'runs'}"
            if runs_per_worker > 1:
                runs_each = f"{slots} {'worker' if slots == 1 else 'workers'} of up to {runs_per_worker} fused runs"
            label = f"submission {submission}, array {position} of {len(plans)}: {len(plan.tasks)} tasks of {runs_each}"
            tasks_file = slurm_dir / f"{stem}.tasks"
            atomic_write_text(tasks_file, render_tasks(plan.tasks, f"lsbench sweep {sweep.name}: {label}"))
            spec = BatchSpec(
                sweep=sweep.name,
                sweep_dir=str(sweep_dir),
                label=label,
                tasks=len(plan.tasks),
                throttle=plan.throttle,
                dependency=None,  # set at submission, once the id of the array it waits for is known
                placement=profile.placement,
                slots=slots,
                gpus_per_run=gpus,
                cpus_per_run=cpus,
                memory_per_run=memory,
                threads_per_run=profile.threads_per_run or cpus,
                time_limit=time_limit,
                partition=profile.partition,
                account=profile.account,
                qos=profile.qos,
                constraint=profile.constraint,
                exclusive=profile.exclusive,
                signal_seconds=profile.signal_seconds,
                max_requeues=profile.max_requeues,
                output=str(sweep_dir / "logs" / SLURM_DIR / "%A_%a.out"),
                tasks_file=str(tasks_file),
                entry=str(entry),
                worker=tuple(worker),
                runtime_env_prefix=profile.apptainer.upper(),
                data_dir=profile.data_dir,
                stage_data=profile.stage_data,
                scratch=profile.scratch,
            )
            script = slurm_dir / f"{stem}.sbatch"
            atomic_write_text(script, render_batch_script(spec))
            arrays.append((script, tasks_file, plan, spec))
        records.data["profile"] = profile.source  # what reattaching and resubmitting need
        records.data["resources"] = wanted
        atomic_write_text(slurm_dir / PROFILE_COPY, profile.text)
        return Prepared(records, profile, wanted, submission, arrays)

    def submit(self, sweep: SweepDir, store: Store, runs: Sequence[RunRow], options: SubmitOptions) -> str:
        if not runs:
            return "nothing to run"
        job_ids: list[str] = []
        submitted: set[str] = set()
        try:
            prepared = self.prepare(sweep, runs, options)
            records, profile = prepared.records, prepared.profile
            records.write()
            env = self.environ
            for position, (script, tasks_file, plan, spec) in enumerate(prepared.arrays, start=1):
                if plan.after is not None:
                    spec = replace(spec, dependency=f"afterany:{job_ids[plan.after]}")
                    atomic_write_text(script, render_batch_script(spec))
                job_id = run_sbatch(
                    script, env=env, retries=profile.sbatch_retries, backoff=profile.sbatch_backoff_seconds
                )
                job_ids.append(job_id)
                records.arrays.append(
                    {
                        "job_id": job_id,
                        "submission": prepared.submission,
                        "position": position,
                        "script": str(script),
                        "tasks_file": str(tasks_file),
                        "tasks": [[list(run) for run in task.runs] for task in plan.tasks],
                        "throttle": plan.throttle,
                        "limit": None if plan.throttle is None else profile.max_concurrent_runs,
                        "slots": spec.slots,
                        "submitted_at": time.time(),
                    }
                )
                records.write()  # at once: a later failure must not lose the ids of arrays already queued
                submitted.update(run_id for task in plan.tasks for _index, run_id in task.runs)
        except BackendError as error:
            for row in runs:  # runs whose array never reached Slurm are not queued anywhere
                if row.run_id not in submitted:
                    store.set_run_status(row.run_id, "planned")
            if job_ids:
                raise type(error)(
                    f"{error} (arrays {', '.join(job_ids)} were queued; `sweep resubmit {sweep.name}` submits the rest)"
                ) from None
            raise
        return f"queued Slurm {'array' if len(job_ids) == 1 else 'arrays'} {', '.join(job_ids)}"

    # -- watch ---------------------------------------------------------------------------------------------

    def _snapshot(self, sweep: SweepDir, records: Records, max_age: float) -> dict[str, Any]:
        """Scheduler states of the sweep's arrays; a snapshot younger than ``max_age`` seconds is reused."""
        path = sweep.path / SLURM_DIR / STATE_FILE
        tasks = {array["job_id"]: len(array["tasks"]) for array in records.arrays}
        try:
            cached = json.loads(path.read_text())
            fresh = time.time() - cached.get("time", 0) < max_age and cached.get("jobs") == sorted(tasks)
            if fresh and cached.get("elements") is not None:
                return cached
        except (OSError, ValueError):
            pass
        asked = time.time()  # the states are at least this new
        try:
            source, elements = query(list(tasks), self.environ, tasks)
        except SchedulerUnavailable as error:
            return {"time": asked, "source": "unavailable", "error": str(error), "elements": None}
        snapshot = {
            "time": asked,
            "jobs": sorted(tasks),
            "source": source,
            "elements": {key: [e.state, e.detail, e.exit_code] for key, e in elements.items()},
        }
        atomic_write_text(path, json.dumps(snapshot, indent=1, sort_keys=True) + "\n")
        return snapshot

    @staticmethod
    def _poll_seconds(sweep: SweepDir) -> float:
        copy = sweep.path / SLURM_DIR / PROFILE_COPY
        try:
            return parse_profile(copy.read_text(), str(copy), copy.parent).poll_seconds
        except (OSError, ProfileError):
            return PROFILE_KEYS["poll_seconds"].default

    def refresh(self, sweep: SweepDir, store: Store) -> None:
        """Reconcile the store's run states with the scheduler's (rules: :func:`slurm_state.reconcile`).

        The scheduler is asked first and the store read afterwards (spool files ingested in between), and a run
        whose row changed after the scheduler was asked keeps its state: a worker that starts, or records its end
        and exits, between the two reads is never overruled by the older view of the scheduler.
        """
        records = Records.read(sweep)
        if not records.arrays:
            return
        snapshot = self._snapshot(sweep, records, self._poll_seconds(sweep))
        if snapshot["elements"] is None:
            return  # the scheduler did not answer: change nothing rather than guess
        if sweep.read_meta().get("spool"):
            # The store is read after the scheduler was asked: a worker that recorded its end and exited between
            # the two must not look like a job that ended without a word.
            ingest(store, sweep.path)
        source = snapshot["source"]
        elements = {key: ElementState(*value, source=source) for key, value in snapshot["elements"].items()}
        placements = records.placements()
        known_arrays = {key.split("_")[0] for key in elements}
        asked = datetime.fromtimestamp(snapshot["time"], UTC)
        now = time.time()
        notes: dict[str, str] = {}
        for row in store.sweep_runs(sweep.name):
            placed = placements.get(row.run_id)
            if placed is None:
                continue
            array, task_id = placed
            element_id = f"{array['job_id']}_{task_id}"
            element = elements.get(element_id)
            described = element.describe() if element is not None else "not listed by Slurm"
            notes[row.run_id] = f"Slurm {element_id} ({source}): {described}"
            if row.updated_at >= asked:
                continue  # the store changed after Slurm was asked (e.g. a worker started): it knows better
            recent = now - array.get("submitted_at", 0) < RECENT_SUBMISSION_S
            new_state = reconcile(
                row.status, element, recently_submitted=recent, array_known=array["job_id"] in known_arrays
            )
            if new_state is None or new_state == row.status:
                continue
            if new_state in ("failed", "timeout", "cancelled") and row.status in ("queued", "running"):
                self._record_end(sweep, store, row, element_id, described, new_state)
            store.set_run_status(row.run_id, new_state)
        with contextlib.suppress(OSError):  # notes only decorate `sweep status`
            path = sweep.path / SLURM_DIR / NOTES_FILE
            atomic_write_text(path, json.dumps({"time": snapshot["time"], "runs": notes}, indent=1, sort_keys=True))
        self._rebalance(records, elements)

    @staticmethod
    def _record_end(sweep: SweepDir, store: Store, row: RunRow, element_id: str, described: str, state: str) -> None:
        """A run ended without a word from its worker: say why in the run's log and close (or add) its attempt, so
        that `sweep status` shows the reason with the log's tail."""
        log = sweep.log_file(row.run_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"{stamp} sweep: Slurm {element_id} ended {described}; the run is {state}\n")
        attempts = [attempt for attempt in store.attempts(row.run_id) if attempt.job_id == element_id]
        still_open = [attempt for attempt in attempts if attempt.status == "running"]
        if still_open:
            store.end_attempt(row.run_id, still_open[-1].attempt_id, state, -1)
        elif not attempts:
            attempt_id = f"{element_id}/slurm"
            store.start_attempt(
                row.run_id,
                attempt_id,
                backend="slurm",
                job_id=element_id,
                host="",
                pid=0,
                log_path=str(log),
                gpu=None,
                versions={},
            )
            store.end_attempt(row.run_id, attempt_id, state, -1)

    def _rebalance(self, records: Records, elements: Mapping[str, ElementState]) -> None:
        """Hand the unused throttle share of arrays without pending tasks to arrays that still have some.

        Within one submission's limit L (in tasks), an array with pending tasks may run up to its throttle and one
        without can only run fewer than now, so raising throttles by at most ``L - sum(those)`` keeps the sweep
        at or below L. Throttles are only ever raised; an element the snapshot does not list counts as pending.
        """
        groups: dict[int, list[dict[str, Any]]] = {}
        for array in records.arrays:
            if array.get("limit") and array.get("throttle"):
                groups.setdefault(array["submission"], []).append(array)
        changed = False
        for group in groups.values():
            limit = -(-group[0]["limit"] // max(1, group[0].get("slots", 1)))
            if len(group) < 2 or len(group) > limit:
                continue  # one array needs no rebalancing; more arrays than the limit wait in a dependency chain
            pending: dict[str, int] = {}
            used = 0
            for array in group:
                states = [elements.get(f"{array['job_id']}_{task}") for task in range(len(array["tasks"]))]
                # An element Slurm does not list (not yet in sacct, or forgotten) may still start: count it.
                waiting = sum(1 for s in states if s is None or s.state in PENDING_STATES)
                running = sum(1 for s in states if s is not None and s.state in RUNNING_STATES)
                pending[array["job_id"]] = waiting
                used += array["throttle"] if waiting else running
            spare = limit - used
            for array in group:
                grow = min(spare, pending[array["job_id"]])
                if grow <= 0:
                    continue
                throttle = array["throttle"] + grow
                command = ["scontrol", "update", f"JobId={array['job_id']}", f"ArrayTaskThrottle={throttle}"]
                done = subprocess.run(command, capture_output=True, text=True, env=self.environ, timeout=60)
                # Exit status 1 with "A_0-1: Job has already finished / A_2-4: No error": it did apply to the rest.
                if done.returncode == 0 or "No error" in done.stderr:
                    array["throttle"] = throttle
                    spare -= grow
                    changed = True
        if changed:
            records.write()

    def active(self, sweep: SweepDir) -> bool:
        records = Records.read(sweep)
        if not records.arrays:
            return False
        snapshot = self._snapshot(sweep, records, self._poll_seconds(sweep))
        if snapshot["elements"] is None:
            return True  # cannot tell: assume the work is still there
        return any(state in ACTIVE_STATES for state, *_ in snapshot["elements"].values())

    def vouched(self, sweep: SweepDir) -> set[str]:
        """The runs whose latest array element Slurm lists as pending or running; every submitted run while Slurm
        does not answer (a silent scheduler is no evidence that a run died)."""
        records = Records.read(sweep)
        placements = records.placements()
        if not placements:
            return set()
        elements = self._snapshot(sweep, records, self._poll_seconds(sweep))["elements"]
        if elements is None:
            return set(placements)
        return {
            run_id
            for run_id, (array, task_id) in placements.items()
            if elements.get(f"{array['job_id']}_{task_id}", ("",))[0] in ACTIVE_STATES
        }

    def cancel(self, sweep: SweepDir, store: Store) -> str:
        records = Records.read(sweep)
        if not records.arrays:
            return "no Slurm arrays were submitted"
        snapshot = self._snapshot(sweep, records, 0.0)
        ids = [array["job_id"] for array in records.arrays]
        if snapshot["elements"] is not None:
            live = {
                key.split("_")[0] for key, (state, *_rest) in snapshot["elements"].items() if state in ACTIVE_STATES
            }
            ids = [job_id for job_id in ids if job_id in live]
        if not ids:
            return "no Slurm array of the sweep is pending or running"
        done = subprocess.run(["scancel", *ids], capture_output=True, text=True, env=self.environ, timeout=120)
        if done.returncode != 0:
            raise SubmissionError(f"scancel {' '.join(ids)}: {' '.join(done.stderr.split())}")
        (sweep.path / SLURM_DIR / STATE_FILE).unlink(missing_ok=True)
        return f"cancelled Slurm {'array' if len(ids) == 1 else 'arrays'} {', '.join(ids)}"


def scheduler_notes(sweep_dir: str | os.PathLike[str]) -> dict[str, str]:
    """run id -> what Slurm said about its latest array element at the last refresh (empty if never refreshed)."""
    try:
        return dict(json.loads((Path(sweep_dir) / SLURM_DIR / NOTES_FILE).read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
