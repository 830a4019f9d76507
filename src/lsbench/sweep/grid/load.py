"""Loading a grid: read the YAML, validate it against :class:`~lsbench.sweep.grid.schema.GridFile`, fill in the
registry defaults, expand and trial-build every point, hash; and the two later changes of a loaded grid, resolving a
``best_of`` reference and counting an unresolved one as a placeholder.

Every problem is a :class:`~lsbench.sweep.grid.types.GridError` (one line naming the file and the key path); no
input makes these functions raise anything else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lsbench.lines.settings import resolve_scan
from lsbench.optim import OPTIMIZERS, OptimizerEntry
from lsbench.problems import PROBLEMS
from lsbench.runs.spec import TRAINING_FIELDS
from lsbench.sweep.grid import points as expansion
from lsbench.sweep.grid.build import build_problem
from lsbench.sweep.grid.hashing import point_key, with_hash
from lsbench.sweep.grid.schema import BudgetSection, GridFile, OptimizerSection, TrainingSection, hparam_value
from lsbench.sweep.grid.types import (
    MAX_FILE_BYTES,
    MAX_RUNS,
    BestOf,
    Budget,
    Grid,
    GridError,
    OptimizerGrid,
    Resources,
    Training,
)
from lsbench.sweep.schema import ValidationError, describe, exception_text, first_problem, problem_of, short
from lsbench.sweep.yamlfile import YamlProblem, read_yaml

__all__ = ["load_grid", "mark_unresolved", "parse_grid", "resolve_best_of"]


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read and validate the grid file at ``path``; any problem raises :class:`GridError`.

    The first call in a process takes a second or two longer: building the first optimizer makes torch import
    ``torch._dynamo`` (once per process).
    """
    file = os.fspath(path) if isinstance(path, str | os.PathLike) else repr(path)
    try:
        p = Path(file)
        if not p.is_file():
            raise GridError(file, "", "is a directory, not a grid file" if p.is_dir() else "file not found")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise GridError(file, "", f"file too large ({p.stat().st_size} bytes; a grid is at most {MAX_FILE_BYTES})")
        raw = p.read_bytes()
    except GridError:
        raise
    except Exception as exc:
        raise GridError(file, "", f"cannot read the file: {exception_text(exc)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GridError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    return parse_grid(text, source=file)


def parse_grid(text: str, source: str = "<string>") -> Grid:
    """Validate grid YAML ``text``; ``source`` names it in error messages."""
    source = str(source)
    try:
        return _Assembly(source).grid(text)
    except GridError:
        raise
    except Exception as exc:  # a bug of ours must still read as one line about the file
        raise GridError(source, "", f"cannot validate the grid: {exception_text(exc)}") from None


def resolve_best_of(grid: Grid, optimizer: str, hparams: Mapping[str, Any], note: str = "") -> Grid:
    """``grid`` with the ``best_of`` section of ``optimizer`` turned into one concrete point: ``hparams`` (the
    source sweep's best point) with the section's ``fixed`` values over it, checked like a ``fixed`` point and
    built once as an optimizer. The section keeps its reference (with ``hparams``) as provenance; its ``fixed``
    becomes the whole resolved point. Raises :class:`GridError` when the point does not fit ``optimizer``."""
    og = grid.optimizers[optimizer]
    if og.best_of is None:
        raise ValueError(f"optimizers.{optimizer} has no best_of reference")
    entry = OPTIMIZERS[optimizer]
    key = f"optimizers.{optimizer}.best_of"
    if not isinstance(hparams, Mapping):
        raise GridError(
            grid.source, key, f"the best point of {og.best_of.describe()} is not a mapping: {describe(hparams)}"
        )
    names = tuple(hp.name for hp in entry.hparams)
    checked: dict[str, Any] = {}
    for name, value in hparams.items():
        if not isinstance(name, str) or name not in names:
            raise GridError(
                grid.source,
                key,
                f"the best point of {og.best_of.describe()} has the hyperparameter {short(name)}, which "
                f"{optimizer!r} does not have (did the registry change since that sweep ran?)",
                names,
            )
        try:
            checked[name] = hparam_value(entry.hparam(name), value)
        except ValueError as error:
            _, problem, valid = problem_of(error)
            raise GridError(grid.source, f"{key}.hparams.{name}", problem, valid) from None
    values = {**checked, **og.fixed}
    point = expansion.resolve_point(entry, values)
    contexts = sorted({(b.steps, t.batch_size) for b, t in (grid.settings(optimizer, p) for p in grid.problems)})
    _Assembly(grid.source).build(optimizer, entry, point, values, contexts)
    section = dataclasses.replace(
        og,
        fixed=point,
        points=(point,),
        point_keys=(point_key(point),),
        best_of=dataclasses.replace(og.best_of, hparams=checked, note=note),
    )
    return with_hash(dataclasses.replace(grid, optimizers={**grid.optimizers, optimizer: section}))


def mark_unresolved(grid: Grid, optimizer: str, reason: str) -> Grid:
    """``grid`` with the unresolved ``best_of`` section of ``optimizer`` counted as one placeholder point (registry
    defaults with the section's ``fixed`` values) and ``reason`` recorded: what a dry run shows before the source
    sweep has a result. Its runs are placeholders, never to be submitted."""
    og = grid.optimizers[optimizer]
    if og.best_of is None or og.best_of.resolved:
        raise ValueError(f"optimizers.{optimizer} has no unresolved best_of reference")
    point = expansion.resolve_point(OPTIMIZERS[optimizer], og.fixed)
    section = dataclasses.replace(
        og, points=(point,), point_keys=(point_key(point),), best_of=dataclasses.replace(og.best_of, note=reason)
    )
    return with_hash(dataclasses.replace(grid, optimizers={**grid.optimizers, optimizer: section}))


class _Assembly:
    """A validated :class:`GridFile` with every default filled in, expanded and trial-built: a :class:`Grid`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str, valid: tuple[str, ...] | None = None) -> GridError:
        return GridError(self.source, key, problem, valid)

    def grid(self, text: str) -> Grid:
        if not isinstance(text, str):
            raise self.error("", f"expected YAML text, got {type(text).__name__}")
        try:
            data = read_yaml(text)
        except YamlProblem as problem:
            raise self.error(problem.key, problem.problem) from None
        if data is None:
            raise self.error("", "empty document: a grid is a mapping with name, problems and optimizers")
        if not isinstance(data, dict):
            raise self.error("", f"the top level must be a mapping, got {describe(data)}")
        try:
            file = GridFile.model_validate(data)
        except ValidationError as error:
            raise self.error(*first_problem(error)) from None
        problems, seeds = list(file.problems), list(file.seeds)
        budget = _budget(file.budget, problems)
        training = _training(file.training, problems)
        grid = Grid(
            name=file.name,
            problems=problems,
            budget=budget,
            seeds=seeds,
            training=training,
            optimizers=self.optimizers(file, budget, training),
            resources=_resources(file),
            store=file.store,
            source_text=text,
            grid_hash="",
            source=self.source,
            kind=file.kind,
            linescan=resolve_scan(dict(file.linescan.items()) if file.linescan else {})
            if file.kind == "linescan"
            else {},
        )
        return with_hash(grid)

    def optimizers(
        self, file: GridFile, budget: dict[str, Budget], training: dict[str, Training]
    ) -> dict[str, OptimizerGrid]:
        grids: dict[str, OptimizerGrid] = {}
        total = 0
        for name, section in file.optimizers.items():
            og = _optimizer_grid(name, section)
            written = section.written if section is not None else ()
            if "budget" in written:
                og = dataclasses.replace(og, budget=_budget(section.budget, file.problems, budget))
            if "training" in written:
                og = dataclasses.replace(og, training=_training(section.training, file.problems, training))
            total += expansion.size(og) * len(file.problems) * len(file.seeds)
            if total > MAX_RUNS:
                raise self.error(
                    "optimizers",
                    f"the grid expands to more than {MAX_RUNS:,} runs (problems x points x seeds); split it",
                )
            if og.best_of is None:
                entry = OPTIMIZERS[name]
                b, t = og.budget or budget, og.training or training
                contexts = sorted({(b[p].steps, t[p].batch_size) for p in file.problems})
                points, keys = [], []
                for point, key, values in expansion.expand(entry, og):
                    self.build(name, entry, point, values, contexts)
                    points.append(point)
                    keys.append(key)
                og = dataclasses.replace(og, points=tuple(points), point_keys=tuple(keys))
            grids[name] = og
        return grids

    def build(
        self,
        name: str,
        entry: OptimizerEntry,
        point: dict[str, Any],
        values: dict[str, Any],
        contexts: list[tuple[int, int]],
    ) -> None:
        """Build the optimizer once on a dummy parameter: catches constraints between hyperparameters."""
        problem = build_problem(entry, point, contexts)
        if problem:
            shown = ", ".join(f"{k}={short(v)}" for k, v in values.items()) or "registry defaults"
            raise self.error(f"optimizers.{name}", f"invalid combination ({shown}): {problem}")


def _optimizer_grid(name: str, section: OptimizerSection | None) -> OptimizerGrid:
    """The section's hyperparameters in file order (no points yet)."""
    if section is None:
        return OptimizerGrid(name, {}, [], {}, ())
    best_of = None
    if section.best_of is not None:
        reference = section.best_of
        best_of = BestOf(reference.sweep, reference.problem, reference.optimizer or name)
    return OptimizerGrid(
        name,
        grid=dict(section.grid.items()) if section.grid is not None else {},
        zip=[dict(group.items()) for group in section.zip or ()],
        fixed=dict(section.fixed.items()) if section.fixed is not None else {},
        points=(),
        vary=dict(section.vary.items()) if section.vary is not None else {},
        best_of=best_of,
    )


def _budget(
    section: BudgetSection | None, problems: list[str], base: dict[str, Budget] | None = None
) -> dict[str, Budget]:
    """Per problem: the section's values over ``base`` (the problem registry's defaults when None)."""
    out = {}
    for problem in problems:
        default = base[problem] if base is not None else _registry_budget(problem)
        steps = _for_problem(section.steps if section else None, problem, default.steps)
        every = _for_problem(section.eval_every if section else None, problem, default.eval_every)
        out[problem] = Budget(steps, every)
    return out


def _training(
    section: TrainingSection | None, problems: list[str], base: dict[str, Training] | None = None
) -> dict[str, Training]:
    """Per problem: the section's values over ``base`` (the problem registry's defaults when None)."""
    out = {}
    for problem in problems:
        default = base[problem] if base is not None else _registry_training(problem)
        out[problem] = Training(
            {
                f.name: _for_problem(getattr(section, f.name) if section else None, problem, default.values[f.name])
                for f in TRAINING_FIELDS
            }
        )
    return out


def _resources(file: GridFile) -> Resources:
    given = file.resources
    if given is None:
        return Resources()
    return Resources(given.gpus_per_run, given.time_limit, given.memory, given.runs_per_worker)


def _for_problem(value: Any, problem: str, default: Any) -> Any:
    """A per-problem setting's value for ``problem``: one value for all, a mapping problem -> value, or unset."""
    if value is None:
        return default
    if isinstance(value, dict):
        return value.get(problem, default)
    return value


def _registry_budget(problem: str) -> Budget:
    defaults = PROBLEMS[problem].defaults
    return Budget(defaults.steps, defaults.eval_every)


def _registry_training(problem: str) -> Training:
    """The problem's own settings (batch size, weight decay), the run model's defaults for the rest."""
    defaults = PROBLEMS[problem].defaults
    values = {f.name: getattr(defaults, f.name, f.default) for f in TRAINING_FIELDS}
    return Training({**values, "weight_decay": float(values["weight_decay"])})
