"""Cluster profiles: where and how a sweep's workers run (``cluster/*.yaml``).

A profile describes a cluster once -- its nodes, partition, account, container image, how runs are placed on GPUs --
so that a grid (what to train) stays the same on every machine::

    sweep submit grids/pal_cifar10.yaml --profile cluster/tcml.yaml

:data:`PROFILE_KEYS` (and :data:`NODE_KEYS` for the ``node:`` block) is the single source of truth for the valid
keys, their defaults, checks and meaning: validation reads it, :class:`Profile` must have exactly its keys as
fields (checked at import), and :func:`describe_keys` prints it for the documentation. An unknown key, a wrong type
or an unsafe value is a :class:`ProfileError` whose message is one line, ``<file>: <key>: <problem> (valid: ...)``,
which the CLI reports with exit code 2.

Values that end up in batch scripts and command lines are restricted here (no newlines; scheduler names without
whitespace or quotes; bind paths without ``,`` or ``:``), and quoted again where they are written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = ["NODE_KEYS", "PROFILE_KEYS", "Key", "Profile", "ProfileError", "load_profile", "parse_profile"]

TIME_PATTERN = re.compile(r"(?:[0-9]{1,3}-)?[0-9]{1,4}:[0-5][0-9]:[0-5][0-9]")
SIZE_PATTERN = re.compile(r"[1-9][0-9]{0,9}[KMGT]?")
# Partition, account, QOS and constraint names: Slurm's own syntax (constraints use & | [ ] * ( )), no whitespace,
# quotes, backslashes, '#' or '%'.
SCHEDULER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.,:+@&|!*()\[\]=-]{1,200}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
EXECUTABLE_PATTERN = re.compile(r"[A-Za-z0-9_./+-]{1,200}")
PROFILE_DIR = "cluster"


class ProfileError(ValueError):
    """A profile that cannot be used; ``str(error)`` is one line."""

    def __init__(self, file: str, key: str, problem: str, valid: tuple[str, ...] | None = None) -> None:
        text = f"{file}: {key}: {problem}" if key else f"{file}: {problem}"
        if valid:
            text += f" (valid: {', '.join(valid)})"
        super().__init__(" ".join(text.split()))


@dataclass(frozen=True)
class Key:
    """One valid profile key: its default and a checker that returns the normalized value or raises ValueError."""

    default: Any
    check: Callable[[Any, Path], Any]
    help: str


def _int(low: int, high: int) -> Callable[[Any, Path], int]:
    def check(value: Any, _base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer in [{low}, {high}], not {value!r}")
        return value

    return check


def _optional(check: Callable[[Any, Path], Any]) -> Callable[[Any, Path], Any]:
    return lambda value, base: None if value is None else check(value, base)


def _number(low: float, high: float) -> Callable[[Any, Path], float]:
    def check(value: Any, _base: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"must be a number in [{low}, {high}], not {value!r}")
        return float(value)

    return check


def _bool(value: Any, _base: Path) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _choice(*choices: str) -> Callable[[Any, Path], str]:
    def check(value: Any, _base: Path) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def _text(value: Any, _base: Path) -> str:
    if not isinstance(value, str) or "\n" in value.strip():
        raise ValueError("must be one line of text")
    return value.strip()


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[Any, Path], str]:
    def check(value: Any, _base: Path) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{what}, not {value!r}")
        return value

    return check


_time = _pattern(TIME_PATTERN, 'must be a quoted time "HH:MM:SS" or "D-HH:MM:SS"')
_size = _pattern(SIZE_PATTERN, "must be a Slurm size: digits and an optional K, M, G or T (e.g. 16G)")
_scheduler_name = _pattern(SCHEDULER_NAME_PATTERN, "must be a Slurm name without whitespace, quotes, '#' or '%'")
_executable = _pattern(EXECUTABLE_PATTERN, "must be a command name or path without whitespace or quotes")


def _path(value: Any, base: Path) -> str:
    """An absolute path (``~`` expanded; relative paths are relative to the profile's directory)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a path")
    if any(char in value for char in "\n\r\0"):
        raise ValueError("must not contain newlines or NUL characters")
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def _bind_path(value: Any, base: Path) -> str:
    path = _path(value, base)
    if "," in path or ":" in path:
        raise ValueError(f"must not contain ',' or ':' (Apptainer's bind syntax), not {value!r}")
    return path


def _binds(value: Any, base: Path) -> tuple[str, ...]:
    """Extra directories bound into the container at the same path: ``/path`` or ``/path:ro``."""
    if not isinstance(value, list):
        raise ValueError("must be a list of paths")
    binds = []
    for entry in value:
        path, _, mode = str(entry).partition(":") if isinstance(entry, str) else (entry, "", "")
        if mode not in ("", "ro", "rw"):
            raise ValueError(f"{entry!r}: the only suffixes are :ro and :rw")
        binds.append(_bind_path(path, base) + (f":{mode}" if mode else ""))
    return tuple(binds)


def _scratch(value: Any, base: Path) -> str:
    """A node-local directory, or ``$NAME``: the directory named by that variable on the node (e.g. $TMPDIR)."""
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:].strip("{}")
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"must be a path or $VARIABLE, not {value!r}")
        return f"${name}"
    return _bind_path(value, base)


NODE_KEYS: dict[str, Key] = {
    "gpus": Key(None, _optional(_int(1, 64)), "GPUs per node"),
    "gpu_model": Key(None, _optional(_text), "GPU model (informational)"),
    "cpu_model": Key(None, _optional(_text), "CPU model (informational)"),
    "sockets": Key(None, _optional(_int(1, 16)), "CPU sockets per node"),
    "cores": Key(None, _optional(_int(1, 4096)), "physical cores per node"),
    "threads": Key(None, _optional(_int(1, 8192)), "hardware threads per node (what Slurm counts as CPUs)"),
    "memory": Key(None, _optional(_size), "memory per node"),
    "scratch_size": Key(None, _optional(_size), "node-local scratch space"),
}


def _node(value: Any, base: Path) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping of node facts")
    return _check_keys(value, NODE_KEYS, base, prefix="node.")


PROFILE_KEYS: dict[str, Key] = {
    # -- which backend and what the cluster looks like
    "backend": Key("slurm", _choice("slurm", "local"), "where workers run: slurm (array jobs) or local (a pool)"),
    "description": Key("", _text, "one line saying which cluster this is"),
    "node": Key({}, _node, "facts about a compute node (sizes; informational except as documentation)"),
    "workers": Key(None, _optional(_int(1, 1024)), "local: pool size (default: one per GPU, else one per core)"),
    # -- placement of runs on GPUs
    "placement": Key(
        "gpu",
        _choice("gpu", "node"),
        "gpu: one array task per run (--gres=gpu:N, shared nodes); node: one array task takes a node and runs "
        "gpus_per_node/gpus_per_run workers, one srun --exact step per slot",
    ),
    "gpus_per_node": Key(4, _int(1, 64), "GPUs of one node (packing: slots per array task)"),
    "cpus_per_gpu": Key(1, _int(1, 1024), "CPUs requested per GPU"),
    "memory_per_gpu": Key(None, _optional(_size), "memory per GPU; default: the grid's resources.memory per run"),
    "threads_per_run": Key(None, _optional(_int(1, 1024)), "OMP/MKL threads of a worker; default: its CPUs"),
    "exclusive": Key(False, _bool, "node placement: ask for the whole node (--exclusive)"),
    # -- scheduler settings
    "partition": Key(None, _optional(_scheduler_name), "Slurm partition (--partition)"),
    "account": Key(None, _optional(_scheduler_name), "Slurm account (--account)"),
    "qos": Key(None, _optional(_scheduler_name), "Slurm quality of service (--qos)"),
    "constraint": Key(None, _optional(_scheduler_name), "node features (--constraint)"),
    "time_limit": Key(None, _optional(_time), "time limit of a task; default: the grid's resources.time_limit"),
    "max_time_limit": Key(None, _optional(_time), "the partition's limit: a longer request is an error"),
    "signal_seconds": Key(
        120, _int(30, 65535), "USR2 to the job this many seconds before its time limit (checkpoint + requeue)"
    ),
    "max_requeues": Key(3, _int(0, 1000), "requeues of one array task after a time-limit signal"),
    "max_concurrent_runs": Key(None, _optional(_int(1, 1_000_000)), "sweep-wide limit on runs at once (% throttle)"),
    "max_array_size": Key(None, _optional(_int(1, 4_000_000)), "default: MaxArraySize of `scontrol show config`"),
    "poll_seconds": Key(10.0, _number(0.0, 3600.0), "at most one sacct/squeue query per this many seconds"),
    "sbatch_retries": Key(5, _int(0, 100), "retries of sbatch after a transient error"),
    "sbatch_backoff_seconds": Key(2.0, _number(0.0, 600.0), "first retry delay; doubles with every retry"),
    # -- container and data
    "image": Key(None, _optional(_bind_path), "the Apptainer/Singularity image (.sif) the workers run in"),
    "apptainer": Key("apptainer", _choice("apptainer", "singularity"), "the container runtime's command"),
    "python": Key("python", _executable, "the Python inside the image"),
    "binds": Key((), _binds, "more directories bound into the container at the same path (suffix :ro or :rw)"),
    "data_dir": Key(None, _optional(_bind_path), "datasets on the shared file system ($LSBENCH_DATA of workers)"),
    "stage_data": Key(False, _bool, "copy data_dir to node-local scratch before the workers start"),
    "scratch": Key("$TMPDIR", _scratch, "node-local scratch: a path or $VARIABLE evaluated on the node"),
}


def _check_keys(data: Mapping[Any, Any], keys: Mapping[str, Key], base: Path, prefix: str = "") -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in keys:
            raise _KeyProblem(f"{prefix}{name}", "unknown key", tuple(keys))
        try:
            values[name] = keys[name].check(value, base)
        except _KeyProblem:
            raise
        except ValueError as error:
            raise _KeyProblem(f"{prefix}{name}", str(error)) from None
    for name, key in keys.items():
        values.setdefault(name, key.default)
    return values


class _KeyProblem(Exception):
    def __init__(self, key: str, problem: str, valid: tuple[str, ...] | None = None) -> None:
        super().__init__(key, problem, valid)
        self.key, self.problem, self.valid = key, problem, valid


@dataclass(frozen=True)
class Profile:
    """A validated profile; attribute names are the keys of :data:`PROFILE_KEYS`."""

    source: str
    text: str = field(repr=False)
    backend: str = "slurm"
    description: str = ""
    node: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None
    placement: str = "gpu"
    gpus_per_node: int = 4
    cpus_per_gpu: int = 1
    memory_per_gpu: str | None = None
    threads_per_run: int | None = None
    exclusive: bool = False
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_limit: str | None = None
    max_time_limit: str | None = None
    signal_seconds: int = 120
    max_requeues: int = 3
    max_concurrent_runs: int | None = None
    max_array_size: int | None = None
    poll_seconds: float = 10.0
    sbatch_retries: int = 5
    sbatch_backoff_seconds: float = 2.0
    image: str | None = None
    apptainer: str = "apptainer"
    python: str = "python"
    binds: tuple[str, ...] = ()
    data_dir: str | None = None
    stage_data: bool = False
    scratch: str = "$TMPDIR"

    def slots(self, gpus_per_run: int) -> int:
        """Runs per array task: 1, or with node placement as many as fit on a node's GPUs."""
        if self.placement == "gpu":
            return 1
        return max(1, self.gpus_per_node // gpus_per_run)


_FIELDS = {item.name for item in fields(Profile)} - {"source", "text"}
if set(PROFILE_KEYS) != _FIELDS:  # the dataclass must mirror the one list of valid keys
    raise ImportError(f"Profile fields and PROFILE_KEYS differ: {sorted(_FIELDS ^ set(PROFILE_KEYS))}")


def parse_profile(text: str, source: str = "<string>", base: Path | None = None) -> Profile:
    """Validate a profile's YAML text; relative paths are resolved against ``base`` (the profile's directory)."""
    base = base if base is not None else Path.cwd()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(source, where, f"not valid YAML: {getattr(error, 'problem', error)}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProfileError(source, "", "must be a mapping of keys to values")
    try:
        values = _check_keys(data, PROFILE_KEYS, base)
    except _KeyProblem as problem:
        raise ProfileError(source, problem.key, problem.problem, problem.valid) from None
    profile = Profile(source=source, text=text, **values)
    if profile.backend == "slurm" and profile.image is None:
        raise ProfileError(source, "image", "a slurm profile needs the container image (.sif)")
    if profile.stage_data and profile.data_dir is None:
        raise ProfileError(source, "stage_data", "needs data_dir (what to stage)")
    return profile


def find_profile(name: str) -> Path:
    """``name`` as a path, else ``cluster/<name>.yaml`` in the working directory or in this checkout."""
    given = Path(name)
    if given.is_file():
        return given
    stem = given.name if given.suffix in (".yaml", ".yml") else f"{given.name}.yaml"
    candidates = [Path(PROFILE_DIR) / stem, Path(__file__).resolve().parents[4] / PROFILE_DIR / stem]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return given


def load_profile(name: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile file (see :func:`find_profile` for the lookup)."""
    path = find_profile(str(name))
    try:
        text = path.read_text()
    except OSError as error:
        raise ProfileError(str(name), "", f"cannot read the profile: {error.strerror or error}") from None
    return parse_profile(text, str(path), path.resolve().parent)


def describe_keys() -> str:
    """Every valid key with its default and meaning (for documentation and `--help`)."""
    lines = []
    for name, key in PROFILE_KEYS.items():
        default = "null" if key.default is None else key.default
        lines.append(f"{name} (default {default!r}): {key.help}")
    return "\n".join(lines)
