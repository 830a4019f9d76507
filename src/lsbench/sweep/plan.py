"""Expansion of a grid into runs, content-derived run ids, and the dry-run summary.

    >>> from lsbench.sweep.grid import load_grid
    >>> from lsbench.sweep.plan import expand, summarize
    >>> grid = load_grid("sweeps/grids/demo_digits.yaml")
    >>> runs = expand(grid)
    >>> print(summarize(runs, grid).format_text())

Runs are :class:`lsbench.runs.RunSpec`, identified by their content (see :mod:`lsbench.runs.spec`): the same grid
always gives the same ids, and adding a value to a grid list adds exactly the new runs. :func:`expand` computes the
ids itself, hashing each run's canonical JSON from a template cut at the hyperparameters and the seed, which is what
makes a 100,000-run grid expand in about a second; a test checks that it equals :meth:`RunSpec.from_dict`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lsbench.runs.spec import RunSpec, canonical_json, implicit_default, run_id_of
from lsbench.sweep import costs
from lsbench.sweep.grid import Grid, GridError

__all__ = [
    "DryRunSummary",
    "RunSpec",
    "SummaryRow",
    "canonical_json",
    "expand",
    "run_id_of",
    "summarize",
]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: allocating 10^5 small objects otherwise triggers many full collections
    (half of the expansion time). Nothing allocated here forms reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _template(fixed: Mapping[str, Any], holes: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """Canonical JSON of ``fixed`` plus the keys ``holes``, cut at the holes' values.

    Returns the holes in key order and the literal pieces around them: ``pieces[0] + json(hole_0) + pieces[1] + ...
    + pieces[-1]`` is exactly :func:`canonical_json` of the whole mapping.
    """
    keys = sorted([*fixed, *holes])
    pieces = ["{"]
    for i, key in enumerate(keys):
        pieces[-1] += ("," if i else "") + json.dumps(key) + ":"
        if key in holes:
            pieces.append("")
        else:
            pieces[-1] += canonical_json(fixed[key])
    pieces[-1] += "}"
    return tuple(k for k in keys if k in holes), pieces


def _copy(value: Any) -> Any:
    """Copy of a JSON value (lists and dicts copied, scalars shared); much faster than ``copy.deepcopy``."""
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def expand(grid: Grid) -> list[RunSpec]:
    """Every run of ``grid``, in a deterministic order: problems (file order), optimizers (file order),
    hyperparameter points (:attr:`OptimizerGrid.points` order), seeds (file order, innermost).

    Each run appears once (points are distinct after resolution, problems and seeds are distinct). A section's
    ``budget``/``training`` overrides apply to its runs (:meth:`Grid.settings`). Raises :class:`GridError` for a
    ``best_of`` section that :func:`lsbench.sweep.references.resolve_references` has not resolved.
    """
    with _gc_paused():
        return _expand(grid)


def _expand(grid: Grid) -> list[RunSpec]:
    for optimizer, og in grid.optimizers.items():
        if og.best_of is not None and not og.points:
            raise GridError(
                grid.source,
                f"optimizers.{optimizer}.best_of",
                f"refers to the best configuration in {og.best_of.describe()}, which is read from that sweep's "
                "store at submit time: resolve it first (lsbench.sweep.references.resolve_references)",
            )
    runs: list[RunSpec] = []
    append = runs.append
    seen: set[str] = set()
    sha256 = hashlib.sha256
    new = object.__new__
    for problem in grid.problems:
        for optimizer, og in grid.optimizers.items():
            # The section's budget/training overrides, else the grid's (Grid.settings).
            budget, training = grid.settings(optimizer, problem)
            settings = {
                "steps": budget.steps,
                "eval_every": budget.eval_every,
                **training.values,
                "kind": grid.kind,
                "linescan": grid.linescan,
            }
            hashed = {name: value for name, value in settings.items() if not implicit_default(name, value)}
            fixed: dict[str, Any] = {"problem": problem, "optimizer": optimizer, **hashed}
            holes, (p0, p1, p2) = _template(fixed, ("hparams", "seed"))
            assert holes == ("hparams", "seed")
            keys = og.point_keys or tuple(canonical_json(p) for p in og.points)
            for point, point_json in zip(og.points, keys, strict=True):
                head = f"{p0}{point_json}{p1}"
                nested = any(isinstance(v, list | dict) for v in point.values())
                for seed in grid.seeds:
                    run_id = sha256(f"{head}{seed}{p2}".encode()).hexdigest()[:16]
                    if run_id in seen:
                        continue
                    seen.add(run_id)
                    # Equivalent to RunSpec(...) (a test checks it), without the frozen dataclass's per-field
                    # object.__setattr__ calls, which were a third of the expansion time.
                    spec = new(RunSpec)
                    spec.__dict__.update(
                        run_id=run_id,
                        problem=problem,
                        optimizer=optimizer,
                        hparams=_copy(point) if nested else dict(point),
                        seed=seed,
                        **settings,
                    )
                    spec.__dict__["linescan"] = _copy(grid.linescan)
                    append(spec)
    return runs


# ------------------------------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class SummaryRow:
    """Counts and estimate of one (problem, optimizer) pair of a sweep."""

    problem: str
    optimizer: str
    points: int
    seeds: int
    runs: int
    gpu_hours: float
    max_run_hours: float


@dataclass(frozen=True)
class DryRunSummary:
    """What a sweep would run and roughly cost (GPU-hours on :data:`costs.REFERENCE_GPU`, see :mod:`.costs`)."""

    sweep: str | None
    rows: tuple[SummaryRow, ...]
    reference_gpu: str = costs.REFERENCE_GPU
    warnings: tuple[str, ...] = ()

    @property
    def total_runs(self) -> int:
        return sum(row.runs for row in self.rows)

    @property
    def total_gpu_hours(self) -> float:
        return sum(row.gpu_hours for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        """``{"sweep", "problems": {problem: {optimizer: {points, seeds, runs, gpu_hours}}}, "total": {runs,
        gpu_hours}}``; GPU-hours rounded to 3 decimals."""
        problems: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.rows:
            problems.setdefault(row.problem, {})[row.optimizer] = {
                "points": row.points,
                "seeds": row.seeds,
                "runs": row.runs,
                "gpu_hours": round(row.gpu_hours, 3),
            }
        return {
            "sweep": self.sweep,
            "problems": problems,
            "total": {"runs": self.total_runs, "gpu_hours": round(self.total_gpu_hours, 3)},
        }

    def format_text(self) -> str:
        """A readable table: problem, optimizer, points, seeds, runs, GPU-hours, and the total."""
        header = ("problem", "optimizer", "points", "seeds", "runs", "GPU-hours")
        body = [
            (r.problem, r.optimizer, f"{r.points:,}", f"{r.seeds:,}", f"{r.runs:,}", _hours(r.gpu_hours))
            for r in self.rows
        ]
        total = ("total", "", "", "", f"{self.total_runs:,}", _hours(self.total_gpu_hours))
        widths = [max(len(line[i]) for line in (header, *body, total)) for i in range(len(header))]

        def fmt(line: tuple[str, ...]) -> str:
            cells = [line[i].ljust(widths[i]) if i < 2 else line[i].rjust(widths[i]) for i in range(len(line))]
            return "  ".join(cells).rstrip()

        rule = "  ".join("-" * w for w in widths)
        title = f"sweep {self.sweep}" if self.sweep else "sweep"
        lines = [
            f"{title}: {self.total_runs:,} runs, about {_hours(self.total_gpu_hours)} GPU-hours "
            f"(rough estimate for one {self.reference_gpu} per run)",
            "",
            fmt(header),
            rule,
            *(fmt(line) for line in body),
            rule,
            fmt(total),
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def summarize(runs: Iterable[RunSpec], grid: Grid | None = None) -> DryRunSummary:
    """Per (problem, optimizer), in order of first appearance: distinct hyperparameter points, distinct seeds, runs
    and estimated GPU-hours; with ``grid``, its name, its ``gpus_per_run`` and a warning where a run is estimated to
    take longer than the time limit."""
    with _gc_paused():
        return _summarize(runs, grid)


def _summarize(runs: Iterable[RunSpec], grid: Grid | None) -> DryRunSummary:
    groups: dict[tuple[str, str], list[Any]] = {}  # -> [points set, seeds set, runs, seconds, max seconds]
    for run in runs:
        group = groups.get((run.problem, run.optimizer))
        if group is None:
            group = groups[(run.problem, run.optimizer)] = [set(), set(), 0, 0.0, 0.0]
        try:
            group[0].add(frozenset(run.hparams.items()))
        except TypeError:  # list values
            group[0].add(canonical_json(run.hparams))
        group[1].add(run.seed)
        group[2] += 1
        seconds = costs.run_seconds(
            run.problem, run.optimizer, run.hparams, run.steps, run.eval_every, run.batch_size, run.split
        ) + costs.scan_seconds(run.problem, run.steps, run.batch_size, run.linescan)
        group[3] += seconds
        if seconds > group[4]:
            group[4] = seconds
    gpus = grid.resources.gpus_per_run if grid is not None else 1
    rows = tuple(
        SummaryRow(problem, optimizer, len(points), len(seeds), count, seconds * gpus / 3600, longest / 3600)
        for (problem, optimizer), (points, seeds, count, seconds, longest) in groups.items()
    )
    warnings: list[str] = []
    if grid is not None:
        warnings.extend(grid.unresolved_references())  # dry runs before a best_of source sweep has results
        limit = grid.resources.time_limit_seconds
        for row in rows:
            if row.max_run_hours * 3600 > limit:
                warnings.append(
                    f"{row.problem}/{row.optimizer}: a run is estimated at up to {row.max_run_hours:.1f} h, longer "
                    f"than the time limit {grid.resources.time_limit}; it will need checkpoints and requeues"
                )
    return DryRunSummary(grid.name if grid is not None else None, rows, warnings=tuple(warnings))


def _hours(hours: float) -> str:
    if hours == 0:
        return "0"
    if hours < 0.1:
        return f"{hours:.3f}"
    if hours < 100:
        return f"{hours:.1f}"
    return f"{math.floor(hours + 0.5):,}"
