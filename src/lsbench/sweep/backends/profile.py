"""Cluster profiles: where and how a sweep's workers run (``--profile tcml`` or ``--profile my-cluster.yaml``).

A profile describes a cluster once -- its nodes, partition, account, container image, how runs are placed on GPUs --
so that a grid (what to train) stays the same on every machine::

    sweep submit grids/pal_cifar10.yaml --profile tcml

The profiles ``local``, ``tcml`` and ``testing`` ship with the package (``lsbench/sweep/profiles/``; in a checkout,
``cluster/*.yaml`` are links to them), so a name works after ``pip install`` in any directory; a file given by path
is read as given (:func:`find_profile`).

:class:`Profile` (a pydantic model, with :class:`NodeFacts` for the ``node:`` block) is the single source of truth
for the valid keys, their defaults, checks and meaning: :func:`parse_profile` validates with it,
:func:`profile_json_schema` describes it for editors, and :data:`PROFILE_KEYS`/:func:`describe_keys` are read from
it. An unknown key, a wrong type or an unsafe value is a :class:`ProfileError` whose message is one line,
``<file>: <key>: <problem> (valid: ...)``, which the CLI reports with exit code 2.

Values that end up in batch scripts and command lines are restricted here (no newlines; scheduler names without
whitespace or quotes; bind paths without ``,`` or ``:``), and quoted again where they are written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, PrivateAttr, model_validator

from lsbench.sweep.schema import Check, Section, ValidationError, fail, first_problem, optional
from lsbench.sweep.yamlfile import YamlProblem, read_yaml

__all__ = [
    "NODE_KEYS",
    "PROFILE_KEYS",
    "Key",
    "NodeFacts",
    "Profile",
    "ProfileError",
    "find_profile",
    "load_profile",
    "parse_profile",
    "profile_json_schema",
    "shipped_profiles",
]

TIME_PATTERN = re.compile(r"(?:[0-9]{1,3}-)?[0-9]{1,4}:[0-5][0-9]:[0-5][0-9]")
SIZE_PATTERN = re.compile(r"[1-9][0-9]{0,9}[KMGT]?")
# Partition, account, QOS and constraint names: Slurm's own syntax (constraints use & | [ ] * ( )), no whitespace,
# quotes, backslashes, '#' or '%'.
SCHEDULER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.,:+@&|!*()\[\]=-]{1,200}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
EXECUTABLE_PATTERN = re.compile(r"[A-Za-z0-9_./+-]{1,200}")
PROFILE_DIR = "cluster"  # a project's own profiles, looked up by name in the working directory
SHIPPED_PROFILES = Path(__file__).resolve().parents[1] / "profiles"  # package data: lsbench/sweep/profiles/


class ProfileError(ValueError):
    """A profile that cannot be used; ``str(error)`` is one line."""

    def __init__(self, file: str, key: str, problem: str, valid: tuple[str, ...] | None = None) -> None:
        text = f"{file}: {key}: {problem}" if key else f"{file}: {problem}"
        if valid:
            text += f" (valid: {', '.join(valid)})"
        super().__init__(" ".join(text.split()))


# ------------------------------------------------------------------------------------------------ leaf values


def _int(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer in [{low}, {high}], not {value!r}")
        return value

    return Check(check, {"type": "integer", "minimum": low, "maximum": high})


def _number(low: float, high: float) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise ValueError(f"must be a number in [{low}, {high}], not {value!r}")
        return float(value)

    return Check(check, {"type": "number", "minimum": low, "maximum": high})


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return Check(check, {"enum": list(choices)})


def _text(value: Any) -> str:
    if not isinstance(value, str) or "\n" in value.strip():
        raise ValueError("must be one line of text")
    return value.strip()


def _pattern(pattern: re.Pattern[str], what: str, numbers: tuple[str, ...] = ()) -> Check:
    """A string matching ``pattern``; a number is read as its text (``partition: 123``), and ``numbers`` are the JSON
    Schema types of the numbers whose text can match."""

    def check(value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"{what}, not {value!r}")
        return value

    return Check(check, {"type": ["string", *numbers], "pattern": f"^(?:{pattern.pattern})$"})


def _base(context: Mapping[str, Any] | None) -> Path:
    """The directory relative paths are resolved against (``model_validate(..., context={"base": ...})``)."""
    return Path((context or {}).get("base") or Path.cwd())


def _path(value: Any, context: Mapping[str, Any] | None) -> str:
    """An absolute path (``~`` expanded; relative paths are relative to the profile's directory)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a path")
    if any(char in value for char in "\n\r\0"):
        raise ValueError("must not contain newlines or NUL characters")
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (_base(context) / path).resolve())


def _bind_path(value: Any, context: Mapping[str, Any] | None) -> str:
    path = _path(value, context)
    if "," in path or ":" in path:
        raise ValueError(f"must not contain ',' or ':' (Apptainer's bind syntax), not {value!r}")
    return path


def _binds(value: Any, context: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Extra directories bound into the container at the same path: ``/path`` or ``/path:ro``."""
    if not isinstance(value, list):
        raise ValueError("must be a list of paths")
    binds = []
    for entry in value:
        path, _, mode = str(entry).partition(":") if isinstance(entry, str) else (entry, "", "")
        if mode not in ("", "ro", "rw"):
            raise ValueError(f"{entry!r}: the only suffixes are :ro and :rw")
        binds.append(_bind_path(path, context) + (f":{mode}" if mode else ""))
    return tuple(binds)


def _scratch(value: Any, context: Mapping[str, Any] | None) -> str:
    """A node-local directory, or ``$NAME``: the directory named by that variable on the node (e.g. $TMPDIR)."""
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:].strip("{}")
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"must be a path or $VARIABLE, not {value!r}")
        return f"${name}"
    return _bind_path(value, context)


_PATH = {"type": "string", "minLength": 1}
TIME = _pattern(TIME_PATTERN, 'must be a quoted time "HH:MM:SS" or "D-HH:MM:SS"')
SIZE = _pattern(SIZE_PATTERN, "must be a Slurm size: digits and an optional K, M, G or T (e.g. 16G)", ("integer",))
SCHEDULER_NAME = _pattern(
    SCHEDULER_NAME_PATTERN, "must be a Slurm name without whitespace, quotes, '#' or '%'", ("number",)
)
EXECUTABLE = _pattern(EXECUTABLE_PATTERN, "must be a command name or path without whitespace or quotes", ("number",))
BOOL = Check(_bool, {"type": "boolean"})
TEXT = Check(_text, {"type": "string"})
BIND_PATH = Check(_bind_path, _PATH, context=True)
BINDS = Check(_binds, {"type": "array", "items": {"type": "string", "pattern": "^[^,:]+(:ro|:rw)?$"}}, context=True)
SCRATCH = Check(_scratch, _PATH, context=True)


# ------------------------------------------------------------------------------------------------------ models


class NodeFacts(Section):
    """Facts about a compute node (sizes; informational except as documentation). ``node["gpus"]`` works too."""

    gpus: Annotated[int | None, optional(_int(1, 64))] = Field(None, description="GPUs per node")
    gpu_model: Annotated[str | None, optional(TEXT)] = Field(None, description="GPU model (informational)")
    cpu_model: Annotated[str | None, optional(TEXT)] = Field(None, description="CPU model (informational)")
    sockets: Annotated[int | None, optional(_int(1, 16))] = Field(None, description="CPU sockets per node")
    cores: Annotated[int | None, optional(_int(1, 4096))] = Field(None, description="physical cores per node")
    threads: Annotated[int | None, optional(_int(1, 8192))] = Field(
        None, description="hardware threads per node (what Slurm counts as CPUs)"
    )
    memory: Annotated[str | None, optional(SIZE)] = Field(None, description="memory per node")
    scratch_size: Annotated[str | None, optional(SIZE)] = Field(None, description="node-local scratch space")

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)


class Profile(Section):
    """A validated cluster profile: every valid key with its default, check and meaning (``description``).

    ``source`` (the file as named) and ``text`` (its YAML) are set by :func:`parse_profile`; they are not keys.
    """

    # -- which backend and what the cluster looks like
    backend: Annotated[str, _choice("slurm", "local")] = Field(
        "slurm", description="where workers run: slurm (array jobs) or local (a pool)"
    )
    description: Annotated[str, TEXT] = Field("", description="one line saying which cluster this is")
    node: NodeFacts = Field(
        NodeFacts(), description="facts about a compute node (sizes; informational except as documentation)"
    )
    workers: Annotated[int | None, optional(_int(1, 1024))] = Field(
        None, description="local: pool size (default: one per GPU, else one per core)"
    )
    runs_per_worker: Annotated[int, _int(1, 64)] = Field(
        1, description="compatible runs one worker trains as one fused model, unless a grid's resources say otherwise"
    )
    # -- placement of runs on GPUs
    placement: Annotated[str, _choice("gpu", "node")] = Field(
        "gpu",
        description="gpu: one array task per run (--gres=gpu:N, shared nodes); node: one array task takes a node and "
        "runs gpus_per_node/gpus_per_run workers, one srun --exact step per slot",
    )
    gpus_per_node: Annotated[int, _int(1, 64)] = Field(4, description="GPUs of one node (packing: slots per task)")
    cpus_per_gpu: Annotated[int, _int(1, 1024)] = Field(1, description="CPUs requested per GPU")
    memory_per_gpu: Annotated[str | None, optional(SIZE)] = Field(
        None, description="memory per GPU; default: the grid's resources.memory per run"
    )
    threads_per_run: Annotated[int | None, optional(_int(1, 1024))] = Field(
        None, description="OMP/MKL threads of a worker; default: its CPUs"
    )
    exclusive: Annotated[bool, BOOL] = Field(False, description="node placement: ask for the whole node (--exclusive)")
    # -- scheduler settings
    partition: Annotated[str | None, optional(SCHEDULER_NAME)] = Field(None, description="Slurm partition")
    account: Annotated[str | None, optional(SCHEDULER_NAME)] = Field(None, description="Slurm account (--account)")
    qos: Annotated[str | None, optional(SCHEDULER_NAME)] = Field(None, description="Slurm quality of service (--qos)")
    constraint: Annotated[str | None, optional(SCHEDULER_NAME)] = Field(None, description="node features")
    time_limit: Annotated[str | None, optional(TIME)] = Field(
        None, description="time limit of a task; default: the grid's resources.time_limit"
    )
    max_time_limit: Annotated[str | None, optional(TIME)] = Field(
        None, description="the partition's limit: a longer request is an error"
    )
    signal_seconds: Annotated[int, _int(30, 65535)] = Field(
        120, description="USR2 to the job this many seconds before its time limit (checkpoint + requeue)"
    )
    max_requeues: Annotated[int, _int(0, 1000)] = Field(3, description="requeues of one array task after a signal")
    max_concurrent_runs: Annotated[int | None, optional(_int(1, 1_000_000))] = Field(
        None, description="sweep-wide limit on runs at once (% throttle)"
    )
    max_array_size: Annotated[int | None, optional(_int(1, 4_000_000))] = Field(
        None, description="default: MaxArraySize of `scontrol show config`"
    )
    poll_seconds: Annotated[float, _number(0.0, 3600.0)] = Field(
        10.0, description="at most one sacct/squeue query per this many seconds"
    )
    sbatch_retries: Annotated[int, _int(0, 100)] = Field(5, description="retries of sbatch after a transient error")
    sbatch_backoff_seconds: Annotated[float, _number(0.0, 600.0)] = Field(
        2.0, description="first retry delay; doubles with every retry"
    )
    # -- container and data
    image: Annotated[str | None, optional(BIND_PATH)] = Field(
        None, description="the Apptainer/Singularity image (.sif) the workers run in"
    )
    apptainer: Annotated[str, _choice("apptainer", "singularity")] = Field(
        "apptainer", description="the container runtime's command"
    )
    python: Annotated[str, EXECUTABLE] = Field("python", description="the Python inside the image")
    device: Annotated[str, _choice("auto", "cuda", "cpu")] = Field(
        "auto",
        description="what workers train on: auto (the GPU Slurm allocated, which must work), or cpu on clusters "
        "whose GPUs are only scheduled, like the test cluster's fake ones",
    )
    binds: Annotated[tuple[str, ...], BINDS] = Field(
        (), description="more directories bound into the container at the same path (suffix :ro or :rw)"
    )
    data_dir: Annotated[str | None, optional(BIND_PATH)] = Field(
        None, description="datasets on the shared file system ($LSBENCH_DATA of workers)"
    )
    stage_data: Annotated[bool, BOOL] = Field(
        False, description="copy data_dir to node-local scratch before the workers start"
    )
    scratch: Annotated[str, SCRATCH] = Field(
        "$TMPDIR", description="node-local scratch: a path or $VARIABLE evaluated on the node"
    )

    _source: str = PrivateAttr(default="<string>")
    _text: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.backend == "slurm" and self.image is None:
            raise fail("a slurm profile needs the container image (.sif)", at=("image",))
        if self.stage_data and self.data_dir is None:
            raise fail("needs data_dir (what to stage)", at=("stage_data",))
        return self

    @property
    def source(self) -> str:
        """The profile file as named (error messages, the sweep's records)."""
        return self._source

    @property
    def text(self) -> str:
        """The profile's YAML as read (copied into the sweep directory)."""
        return self._text

    def slots(self, gpus_per_run: int) -> int:
        """Runs per array task: 1, or with node placement as many as fit on a node's GPUs."""
        if self.placement == "gpu":
            return 1
        return max(1, self.gpus_per_node // gpus_per_run)


@dataclass(frozen=True)
class Key:
    """One valid profile key as :class:`Profile` declares it: its default and meaning."""

    default: Any
    help: str


def _keys(model: type[BaseModel]) -> dict[str, Key]:
    return {name: Key(info.default, info.description or "") for name, info in model.model_fields.items()}


PROFILE_KEYS: dict[str, Key] = _keys(Profile)
"""Every valid key of a profile with its default and meaning, read from :class:`Profile`."""
NODE_KEYS: dict[str, Key] = _keys(NodeFacts)
"""Every valid key of a profile's ``node:`` block, read from :class:`NodeFacts`."""


def parse_profile(text: str, source: str = "<string>", base: Path | None = None) -> Profile:
    """Validate a profile's YAML text; relative paths are resolved against ``base`` (the profile's directory)."""
    base = base if base is not None else Path.cwd()
    try:
        data = read_yaml(text)
    except YamlProblem as problem:
        raise ProfileError(source, problem.key, problem.problem) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProfileError(source, "", "must be a mapping of keys to values")
    try:
        profile = Profile.model_validate(data, context={"base": base})
    except ValidationError as error:
        raise ProfileError(source, *first_problem(error)) from None
    profile._source = source
    profile._text = text
    return profile


def shipped_profiles() -> dict[str, Path]:
    """The profiles that ship with the package, by name."""
    return {path.stem: path for path in sorted(SHIPPED_PROFILES.glob("*.yaml"))}


def find_profile(name: str) -> Path:
    """The file of profile ``name``: ``name`` itself if that file exists; else, for a bare name (``tcml`` or
    ``tcml.yaml``) or the checkout's spelling ``cluster/tcml.yaml``, ``cluster/<name>.yaml`` in the working
    directory, then the profile shipped with the package. Otherwise ``name`` as given (reading it fails)."""
    given = Path(name)
    if given.is_file():
        return given
    if given.parent not in (Path("."), Path(PROFILE_DIR)):
        return given  # a path elsewhere: the user's own file, which does not exist
    stem = given.name if given.suffix in (".yaml", ".yml") else f"{given.name}.yaml"
    for candidate in (Path(PROFILE_DIR) / stem, SHIPPED_PROFILES / stem):
        if candidate.is_file():
            return candidate
    return given


def load_profile(name: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile file (see :func:`find_profile` for the lookup)."""
    path = find_profile(str(name))
    try:
        text = path.read_text()
    except OSError as error:
        shipped = ", ".join(shipped_profiles())
        raise ProfileError(
            str(name), "", f"cannot read the profile: {error.strerror or error} (shipped profiles: {shipped})"
        ) from None
    return parse_profile(text, str(path), path.resolve().parent)


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a cluster profile file, as a plain dict, e.g. for editors
    (``sweep schema profile``). Generated from :class:`Profile`: every key with its type, range or pattern, default
    and meaning. Paths are checked for safety and resolved when a profile is loaded, not by the schema."""
    schema = Profile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "lsbench cluster profile"}


def describe_keys() -> str:
    """Every valid key with its default and meaning (for documentation and `--help`)."""
    lines = []
    for name, key in PROFILE_KEYS.items():
        default = "null" if key.default is None else key.default
        lines.append(f"{name} (default {default!r}): {key.help}")
    return "\n".join(lines)
