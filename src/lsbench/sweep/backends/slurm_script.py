"""The text a Slurm submission consists of: the batch script, the container command line and the task table.

Everything here is a pure function of its inputs (no clock, no environment), so the generated files can be
compared with recorded ones under ``tests/sweep/backends/slurm/golden/``.

Quoting rules (every value that reaches a shell, a batch script or the container command line goes through one):

* shell words -- :func:`shlex.quote` (:func:`shell_words` for a command); any value round-trips, newlines
  included;
* ``#SBATCH`` lines are read by sbatch, not by a shell: sbatch splits at whitespace, honours single and double
  quotes and backslash escapes, and treats an unquoted ``#`` as the start of a comment. :func:`sbatch_value`
  writes such values in double quotes with ``\\`` and ``"`` escaped; a newline cannot be written in an
  ``#SBATCH`` line at all and raises :class:`ValueError`, as does ``%`` in a path (Slurm would read it as a file
  name pattern).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ArrayTask",
    "BatchSpec",
    "container_command",
    "render_batch_script",
    "render_tasks",
    "sbatch_value",
    "shell_words",
]

_PLAIN_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_./:=,@+%-]+")
ENTRY_NAME = "lsbench-job.sh"


def shell_words(words: Sequence[str]) -> str:
    """``words`` as one shell command line (each word quoted as needed)."""
    return " ".join(shlex.quote(str(word)) for word in words)


def sbatch_value(value: str) -> str:
    """``value`` written so that sbatch's ``#SBATCH`` parser reads it back unchanged (see the module docstring)."""
    value = str(value)
    if any(char in value for char in "\n\r\0"):
        raise ValueError(f"a newline cannot be written into an #SBATCH line: {value!r}")
    if _PLAIN_SBATCH_VALUE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ArrayTask:
    """One array task: one unit of work per slot, each the runs one worker trains, as (plan index, run id) -- one
    run, or several trained together as one fused model (``resources.runs_per_worker``, :mod:`lsbench.fused`)."""

    units: tuple[tuple[tuple[int, str], ...], ...]

    @property
    def runs(self) -> tuple[tuple[int, str], ...]:
        """Every run of the task, in order."""
        return tuple(run for unit in self.units for run in unit)


def render_tasks(tasks: Sequence[ArrayTask], header: str) -> str:
    """The task table the job entry reads: ``TASK UNIT [UNIT ...]`` per line, a unit being ``INDEX:RUN_ID`` for one
    run and ``INDEX+INDEX:RUN_ID+RUN_ID`` for a fused group.

    Array indices are re-based to 0 in every array; the table maps them back to the sweep's plan indices, so a
    worker still needs nothing but the sweep directory and its plan indices.
    """
    lines = [f"# {line}" for line in header.splitlines()]
    for task_id, task in enumerate(tasks):
        units = (
            "+".join(str(index) for index, _ in unit) + ":" + "+".join(run_id for _, run_id in unit)
            for unit in task.units
        )
        lines.append(f"{task_id} " + " ".join(units))
    return "\n".join(lines) + "\n"


def container_command(
    *,
    runtime: str,
    image: str,
    python: str,
    sweep_dir: str,
    binds: Sequence[str],
    image_digest: str,
    device: str = "auto",
) -> list[str]:
    """The worker command inside the container, without ``--index`` and ``--job-id`` (the job entry adds them).

    Every bind maps a host directory to the same path inside, so paths recorded by the worker (logs,
    checkpoints) mean the same on both sides; the sweep directory comes last, so that a read-only bind of a
    parent directory cannot cover it. ``--nv`` makes the host's NVIDIA driver visible; the GPU a worker
    uses is chosen by ``CUDA_VISIBLE_DEVICES``, which Slurm sets and the container inherits (a ``device`` other than
    ``auto`` is passed on to the worker). ``PYTHONNOUSERSITE``
    keeps packages under the bind-mounted ``$HOME/.local`` from shadowing the image's.
    """
    command = [runtime, "exec", "--nv"]
    for bind in (*binds, sweep_dir):  # the sweep directory last: a bind of a parent must not hide (or freeze) it
        path, _, mode = bind.partition(":")
        command += ["--bind", f"{path}:{path}" + (f":{mode}" if mode else "")]
    command += ["--env", "PYTHONNOUSERSITE=1", "--env", f"LSBENCH_IMAGE_DIGEST={image_digest}"]
    command += [image, python, "-m", "lsbench", "worker", "--sweep-dir", sweep_dir, "--backend", "slurm"]
    return command if device == "auto" else [*command, "--device", device]


@dataclass(frozen=True)
class BatchSpec:
    """Everything one array's batch script says.

    Attributes:
        sweep: sweep name (already restricted to ``[A-Za-z0-9_.-]``).
        sweep_dir: absolute sweep directory.
        label: a comment line describing this array (e.g. ``submission 2, array 1 of 3``).
        tasks: number of array tasks (indices ``0..tasks-1``).
        throttle: the array's ``%`` limit on tasks running at once, or None.
        dependency: ``afterany:<job id>`` or None.
        placement: ``gpu`` (one run per task) or ``node`` (``slots`` runs per task, one ``srun`` step each).
        slots: runs per task.
        gpus_per_run, cpus_per_run, memory_per_run, threads_per_run: what one run gets.
        time_limit: ``[D-]HH:MM:SS``.
        partition, account, qos, constraint: scheduler names or None.
        exclusive: node placement: ``--exclusive``.
        signal_seconds: ``--signal=B:USR2@<seconds>``.
        max_requeues: the entry requeues a task at most this often (``SLURM_RESTART_COUNT``).
        output: the batch shell's own log (``%A``/``%a`` patterns allowed).
        tasks_file: the task table.
        entry: the job entry script (a copy of ``jobs/lsbench-job.sh`` in the sweep directory).
        worker: :func:`container_command`.
        runtime_env_prefix: ``APPTAINER`` or ``SINGULARITY`` (for ``*_BIND`` and ``*ENV_*`` variables).
        data_dir, stage_data, scratch: dataset staging (see ``jobs/lsbench-job.sh``).
    """

    sweep: str
    sweep_dir: str
    label: str
    tasks: int
    throttle: int | None
    dependency: str | None
    placement: str
    slots: int
    gpus_per_run: int
    cpus_per_run: int
    memory_per_run: str
    threads_per_run: int
    time_limit: str
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    exclusive: bool
    signal_seconds: int
    max_requeues: int
    output: str
    tasks_file: str
    entry: str
    worker: tuple[str, ...]
    runtime_env_prefix: str
    data_dir: str | None
    stage_data: bool
    scratch: str


def _memory_times(size: str, factor: int) -> str:
    number, unit = (size[:-1], size[-1]) if size[-1] in "KMGT" else (size, "")
    return f"{int(number) * factor}{unit}"


def sbatch_options(spec: BatchSpec) -> list[tuple[str, str | None]]:
    """The ``#SBATCH`` options of the array as (name, value); value None for a flag."""
    array = f"0-{spec.tasks - 1}" + (f"%{spec.throttle}" if spec.throttle else "")
    options: list[tuple[str, str | None]] = [("job-name", f"lsbench-{spec.sweep}"), ("array", array)]
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(spec, name)
        if value:
            options.append((name, value))
    options += [("time", spec.time_limit), ("nodes", "1")]
    if spec.placement == "node":
        options += [
            ("ntasks", str(spec.slots)),
            ("gres", f"gpu:{spec.gpus_per_run * spec.slots}"),
            ("cpus-per-task", str(spec.cpus_per_run)),
            ("mem", _memory_times(spec.memory_per_run, spec.slots)),
        ]
        if spec.exclusive:
            options.append(("exclusive", None))
    else:
        options += [
            ("ntasks", "1"),
            ("gres", f"gpu:{spec.gpus_per_run}"),
            ("cpus-per-task", str(spec.cpus_per_run)),
            ("mem", spec.memory_per_run),
        ]
    if spec.dependency:
        options.append(("dependency", spec.dependency))
    options += [
        ("signal", f"B:USR2@{spec.signal_seconds}"),
        ("requeue", None),
        ("open-mode", "append"),
        ("output", spec.output),
    ]
    return options


def render_batch_script(spec: BatchSpec) -> str:
    """The batch script of one array: ``#SBATCH`` options, the entry's settings, and the worker command."""
    if "%" in spec.sweep_dir:
        raise ValueError(f"a sweep directory containing '%' cannot be named in Slurm options: {spec.sweep_dir!r}")
    lines = [
        "#!/bin/bash",
        f"# lsbench sweep {spec.sweep}: {spec.label}.",
        "# Generated by `sweep submit`; the job entry it runs is documented in jobs/lsbench-job.sh.",
    ]
    for name, value in sbatch_options(spec):
        lines.append(f"#SBATCH --{name}" + ("" if value is None else f"={sbatch_value(value)}"))
    settings = {
        "LSBENCH_SWEEP_DIR": spec.sweep_dir,
        "LSBENCH_TASKS": spec.tasks_file,
        "LSBENCH_PLACEMENT": spec.placement,
        "LSBENCH_GPUS_PER_RUN": str(spec.gpus_per_run),
        "LSBENCH_CPUS_PER_RUN": str(spec.cpus_per_run),
        "LSBENCH_MEMORY_PER_RUN": spec.memory_per_run,
        "LSBENCH_THREADS_PER_RUN": str(spec.threads_per_run),
        "LSBENCH_MAX_REQUEUES": str(spec.max_requeues),
        "LSBENCH_CONTAINER_ENV_PREFIX": spec.runtime_env_prefix,
        "LSBENCH_DATA_DIR": spec.data_dir or "",
        "LSBENCH_STAGE_DATA": "1" if spec.stage_data else "0",
        "LSBENCH_SCRATCH": spec.scratch,
    }
    lines.append("set -euo pipefail")
    lines += [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]
    lines.append("# The entry appends --index I --job-id J to the worker command and runs it once per slot.")
    lines.append(f"exec /bin/bash {shlex.quote(spec.entry)} \\")
    lines.append("    " + shell_words(spec.worker))
    return "\n".join(lines) + "\n"
