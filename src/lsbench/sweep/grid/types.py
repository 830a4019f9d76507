"""The validated grid: what :func:`lsbench.sweep.grid.load_grid` returns, the limits a grid must keep, and
:class:`GridError`.

Plain frozen dataclasses, free of pydantic models, registries and torch: the planner, the backends and the CLI read
them. :meth:`Grid.to_dict` is the content that :mod:`lsbench.sweep.grid.hashing` hashes; changing what it returns
changes every grid hash, so new keys appear in it only where a grid uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lsbench.runs.spec import DEFAULT_KIND
from lsbench.sweep.schema import one_line

__all__ = [
    "DEFAULT_SEEDS",
    "MAX_RUNS",
    "BestOf",
    "Budget",
    "Grid",
    "GridError",
    "OptimizerGrid",
    "Resources",
    "Training",
]

DEFAULT_SEEDS = (1, 2, 3)
MAX_RUNS = 1_000_000
"""Upper bound on the runs of one grid (before duplicate points are merged); split bigger sweeps."""
MAX_SEED = 2**32 - 1
MAX_STEPS = 10**9
MAX_BATCH_SIZE = 2**20
MAX_GPUS_PER_RUN = 64
MAX_RUNS_PER_WORKER = 64
MAX_FILE_BYTES = 4 * 2**20


class GridError(ValueError):
    """A grid file that cannot be used. ``str(error)`` is one line: ``<file>: <key path>: <problem> (valid: ...)``.

    Attributes:
        file: the file as named by the caller (or ``<string>``).
        key: dotted key path, e.g. ``optimizers.pal.grid.mu`` or ``seeds[2]``; ``line 3 column 5`` for YAML syntax
            errors; empty when the problem is the file itself.
        problem: what is wrong.
        valid: the valid choices, where there is a fixed set of them.
    """

    def __init__(self, file: str, key: str, problem: str, valid: tuple[str, ...] | None = None) -> None:
        self.file = one_line(file)
        self.key = one_line(key)
        self.problem = one_line(problem)
        self.valid = tuple(str(v) for v in valid) if valid else None
        text = f"{self.file}: {self.key}: {self.problem}" if self.key else f"{self.file}: {self.problem}"
        if self.valid:
            text += f" (valid: {', '.join(self.valid)})"
        super().__init__(one_line(text))

    def __reduce__(self) -> tuple[Any, ...]:
        return (GridError, (self.file, self.key, self.problem, self.valid))


@dataclass(frozen=True)
class Budget:
    """Training length of every run on one problem."""

    steps: int
    eval_every: int


@dataclass(frozen=True)
class Training:
    """Fixed training settings of every run on one problem: a value for each field of
    :data:`lsbench.runs.spec.TRAINING_FIELDS` (batch size, weight decay, split, precision, ...), readable as
    attributes (``training.batch_size``). A field added to the run model is a training setting without any edit
    here."""

    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class Resources:
    """What one run asks the scheduler for."""

    gpus_per_run: int = 1
    time_limit: str = "24:00:00"
    memory: str = "16G"
    runs_per_worker: int | None = None
    """Runs one worker trains together as one fused model (lsbench.fused); None: the profile's, else 1."""

    @property
    def time_limit_seconds(self) -> int:
        """``time_limit`` in seconds (``[D-]HH:MM:SS``)."""
        days, _, clock = self.time_limit.rpartition("-")
        hours, minutes, seconds = (int(part) for part in clock.split(":"))
        return (int(days) if days else 0) * 86_400 + hours * 3_600 + minutes * 60 + seconds


@dataclass(frozen=True)
class BestOf:
    """A reference to the best configuration of an optimizer in another sweep (``best_of`` in a grid).

    Attributes:
        sweep: the source sweep's name (its directory under the sweep root).
        problem: the source problem.
        optimizer: the source optimizer.
        hparams: the best point as read from the source sweep's store (every hyperparameter of the source optimizer,
            validated against this section's optimizer); None while unresolved.
        note: how it was resolved (best mean validation accuracy, runs), or why it is not (dry runs only).
    """

    sweep: str
    problem: str
    optimizer: str
    hparams: dict[str, Any] | None = None
    note: str = field(default="", compare=False)

    @property
    def resolved(self) -> bool:
        return self.hparams is not None

    def describe(self) -> str:
        """``sweep S, problem P, optimizer O``: the reference in words."""
        return f"sweep {self.sweep}, problem {self.problem}, optimizer {self.optimizer}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sweep": self.sweep, "problem": self.problem, "optimizer": self.optimizer}
        if self.hparams is not None:
            out["hparams"] = self.hparams
        return out


@dataclass(frozen=True)
class OptimizerGrid:
    """The validated sub-grid of one optimizer.

    Attributes:
        optimizer: registry name.
        grid: hyperparameter -> candidate values (validated), in file order; one axis each.
        zip: groups of hyperparameter -> equally long value lists; one axis each.
        fixed: hyperparameter -> value, set in every point. Once a ``best_of`` reference is resolved, the whole
            resolved point (the best point with the file's ``fixed`` values over it).
        points: every distinct hyperparameter point, fully resolved (all registry defaults filled in) and in
            expansion order: the cartesian product of the ``grid`` axes (file order), the ``zip`` groups and the
            ``vary`` axis, the last axis varying fastest. Repeated points (same resolved values) are kept once, at
            the first place. Empty for an unresolved ``best_of`` section.
        point_keys: canonical JSON of each point (what run ids hash).
        vary: hyperparameter -> values varied one at a time around the base point (one axis in all).
        best_of: the reference of a ``best_of`` section, else None.
        budget: per problem, this optimizer's budget where the section overrides it (every problem), else None.
        training: per problem, this optimizer's training settings where the section overrides them, else None.
    """

    optimizer: str
    grid: dict[str, list[Any]]
    zip: list[dict[str, list[Any]]]
    fixed: dict[str, Any]
    points: tuple[dict[str, Any], ...] = field(repr=False)
    point_keys: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """Canonical JSON (sorted keys, no spaces) of each point, in the order of :attr:`points`."""
    vary: dict[str, list[Any]] = field(default_factory=dict)
    best_of: BestOf | None = None
    budget: dict[str, Budget] | None = None
    training: dict[str, Training] | None = None

    @property
    def unresolved(self) -> bool:
        """A ``best_of`` section whose reference has not been read from the source sweep yet."""
        return self.best_of is not None and not self.best_of.resolved

    def to_dict(self) -> dict[str, Any]:
        # Keys added to the schema later appear only when used: the hash of a grid without them is unchanged.
        out: dict[str, Any] = {"grid": self.grid, "zip": self.zip, "fixed": self.fixed}
        if self.vary:
            out["vary"] = self.vary
        if self.best_of is not None:
            out["best_of"] = self.best_of.to_dict()
        if self.budget is not None:
            out["budget"] = _budget_dict(self.budget)
        if self.training is not None:
            out["training"] = _training_dict(self.training)
        return out


@dataclass(frozen=True)
class Grid:
    """A validated sweep grid (see the module docstring for the schema).

    Attributes:
        name: sweep name, safe as a file name and in shell commands.
        problems: problem registry names, in file order.
        budget: per problem, the resolved step budget and evaluation interval.
        seeds: run seeds, in file order.
        training: per problem, the resolved batch size, weight decay and split.
        optimizers: optimizer name -> :class:`OptimizerGrid`, in file order.
        resources: scheduler request of one run.
        store: SQLAlchemy URL, or None for the SQLite file under the sweep directory.
        kind: what every run does (:data:`lsbench.runs.KINDS`).
        linescan: a linescan grid's measurement settings, every default filled in; empty for other kinds.
        source_text: the YAML text as read.
        grid_hash: sha256 (hex) of the canonical JSON of the validated grid (:meth:`to_dict`); it changes whenever
            the set or order of the runs could change, not when only comments or formatting do.
        source: the file name used in error messages.
    """

    name: str
    problems: list[str]
    budget: dict[str, Budget]
    seeds: list[int]
    training: dict[str, Training]
    optimizers: dict[str, OptimizerGrid]
    resources: Resources
    store: str | None
    source_text: str = field(repr=False)
    grid_hash: str
    source: str = "<string>"
    kind: str = DEFAULT_KIND
    linescan: dict[str, Any] = field(default_factory=dict)

    def settings(self, optimizer: str, problem: str) -> tuple[Budget, Training]:
        """The budget and training settings of ``optimizer``'s runs on ``problem`` (its section's overrides, else
        the grid's)."""
        og = self.optimizers[optimizer]
        budget = og.budget[problem] if og.budget is not None else self.budget[problem]
        training = og.training[problem] if og.training is not None else self.training[problem]
        return budget, training

    def unresolved_references(self) -> tuple[str, ...]:
        """One line per ``best_of`` section not resolved yet: what it refers to and, after a dry-run resolution,
        why it could not be resolved and how it is counted."""
        lines = []
        for name, og in self.optimizers.items():
            if og.unresolved:
                assert og.best_of is not None
                counted = "counted as 1 point" if og.points else "not expanded"
                note = f": {og.best_of.note}" if og.best_of.note else ""
                lines.append(
                    f"optimizers.{name}.best_of ({og.best_of.describe()}) is unresolved{note}; {counted} until "
                    "it is resolved at submit time"
                )
        return tuple(lines)

    def to_dict(self) -> dict[str, Any]:
        """The validated content as plain JSON data (every default resolved), in file order."""
        return {
            "name": self.name,
            "problems": list(self.problems),
            "budget": _budget_dict(self.budget),
            "seeds": list(self.seeds),
            "training": _training_dict(self.training),
            "optimizers": {name: og.to_dict() for name, og in self.optimizers.items()},
            "resources": {
                "gpus_per_run": self.resources.gpus_per_run,
                "time_limit": self.resources.time_limit,
                "memory": self.resources.memory,
                # Only when set: the hashes of grids written before fused training existed stay the same.
                **(
                    {"runs_per_worker": self.resources.runs_per_worker}
                    if self.resources.runs_per_worker is not None
                    else {}
                ),
            },
            "store": self.store,
            # Only when not the default: the hashes of grids written before kinds existed stay the same.
            **({"kind": self.kind, "linescan": dict(self.linescan)} if self.kind != DEFAULT_KIND else {}),
        }


def _budget_dict(budget: Mapping[str, Budget]) -> dict[str, Any]:
    return {p: {"steps": b.steps, "eval_every": b.eval_every} for p, b in budget.items()}


def _training_dict(training: Mapping[str, Training]) -> dict[str, Any]:
    return {p: dict(t.values) for p, t in training.items()}
