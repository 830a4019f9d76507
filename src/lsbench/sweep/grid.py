"""Sweep grids: the YAML schema, loading and validation.

A grid file names the problems, the optimizers with their hyperparameter sub-grids, the seeds and the budget of a
sweep. :func:`load_grid` reads one (``yaml.safe_load`` only), checks every name and value against the registries
-- :data:`lsbench.problems.PROBLEMS` and :data:`lsbench.optim.OPTIMIZERS` are the only lists of valid names and
hyperparameters -- and returns a :class:`Grid`. :func:`lsbench.sweep.plan.expand` turns a grid into runs.

Schema (every key not listed is an error)::

    name: pal_cifar10            # required; ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$
    problems: [cifar10_resnet32] # required; non-empty list of problem registry names, no repeats
    budget:                      # optional; every value defaults to the problem registry's
      steps: 150000              #   a positive integer for every problem, or a mapping per problem
      eval_every: 1000           #   {cifar10_resnet32: 150000}; problems left out keep the default
    seeds: [1, 2, 3]             # optional, default [1, 2, 3]; distinct integers in [0, 2**32 - 1] (or one integer)
    training:                    # optional; same scalar-or-per-problem rule as budget
      batch_size: 128            #   positive integer
      weight_decay: 1.0e-4       #   number >= 0 (L2 coefficient of the trainer)
      split: default             #   train/validation split rule: default or labpal (lsbench.problems.datasets.SPLITS)
    optimizers:                  # required, non-empty; keys are optimizer registry names
      sgd:                       #   null or {} trains the registry defaults (one point)
        grid:                    #   cartesian product; each value is a list of candidates, a scalar = [scalar]
          lr: [0.1, 0.01]
          momentum: [0.9, 0.95]
        zip:                     #   list of groups (a single mapping is one group); the lists of one group
          - {...}                #   have equal lengths and vary together; each group is one more axis
        fixed: {lr_schedule: piecewise}   # one value per hyperparameter, set in every point
      adam:
        fixed: {lr: 0.001}       #   with vary: the base value
        vary:                    #   one-at-a-time axis: the base point (defaults + fixed), then one point per
          lr: [0.01, 0.0001]     #   listed value, each changing that one hyperparameter only (a sensitivity row)
          beta1: [0.8, 0.95]
        budget: {steps: 600000}  #   overrides of the top-level budget / training for this optimizer's runs only
        training:                #   (same keys, same scalar-or-per-problem rule; part of every run's identity)
          batch_size: {cifar10_resnet32: 100}
      pal:
        best_of:                 #   one point: the best configuration of another sweep (see below)
          sweep: pal_cifar100    #     the source sweep's name (its directory under the sweep root)
          problem: cifar100_resnet32   # a problem registry name (need not be one of this grid's problems)
          optimizer: pal         #     optional; default: this section's optimizer
        fixed: {noise_factor: null}    # with best_of: overrides of the best point (grid, zip, vary not allowed)
    resources:                   # optional; these are the defaults
      gpus_per_run: 1            #   GPUs reserved per run, 1-64
      time_limit: "24:00:00"     #   "HH:MM:SS" or "D-HH:MM:SS", quoted
      memory: 16G                #   Slurm size: digits + optional K, M, G or T
    store: null                  # optional SQLAlchemy URL; null = SQLite file in the sweep directory

Rules:

* A hyperparameter appears in at most one place: one ``grid`` key, one ``zip`` group, or ``fixed`` (a ``vary``
  hyperparameter may also be under ``fixed``, as its base value). Those not named keep the registry default.
  Writing a default explicitly gives the same run as leaving it out.
* Values are checked with the registry's ``HParam.validate``: an integer is accepted where a float is expected
  (``lr: 1`` is ``1.0``), booleans and strings are never converted.
* **List-valued hyperparameters** (registry type ``list``: LABPAL's ``batch_size_schedule`` and
  ``direction_norm_bounds``) have no scalar shorthand. Under ``grid`` and in ``zip`` groups the entry is a list
  of candidate values, each itself a list, e.g. one candidate schedule::

      grid: {batch_size_schedule: [[[0, 1], [0.5, 2], [0.75, 4]]]}

  Under ``fixed`` the entry is the value itself: ``fixed: {batch_size_schedule: [[0, 1], [0.5, 2], [0.75, 4]]}``.
  Numbers inside list values are stored as floats, so ``[0, 1]`` and ``[0.0, 1.0]`` are the same value.
* YAML 1.1 pitfalls: PyYAML reads ``1e-4`` (no dot) as a *string* -- write ``1.0e-4``; an unquoted
  ``24:00:00`` is the base-60 integer 86400 -- quote time limits. Both are reported with that hint.
* YAML aliases and merge keys are fine. A key repeated within one mapping is an error.
* Every combination is also built once as an optimizer on a dummy parameter, so constraints that involve several
  hyperparameters (e.g. Nesterov needs momentum > 0) fail at load time, not in a job.
* ``training.split`` is checked against ``lsbench.problems.datasets.SPLITS``; whether a dataset offers the rule
  (``labpal``: CIFAR-10/100 only) is checked when a run loads its data.
* Expansion order (:func:`lsbench.sweep.plan.expand`): problems, optimizers, then the points -- the product of
  the ``grid`` axes in file order followed by the ``zip`` groups, the last axis varying fastest -- and seeds
  innermost. Points that resolve to the same values are kept once.
* A grid may expand to at most :data:`MAX_RUNS` runs.
* ``vary`` is one more axis after ``grid`` and ``zip``: the base point first, then the values of each listed
  hyperparameter in file order. A ``vary`` hyperparameter may also appear under ``fixed`` (its base value), not
  under ``grid`` or ``zip``. A value equal to the base gives the base point again and is kept once.
* An optimizer section's ``budget`` and ``training`` start from the top-level values of each problem and override
  the keys they name, so e.g. ``training: {batch_size: {cifar10_densenet40: 100}}`` changes the batch size of that
  optimizer on that problem only; steps, batch size, weight decay and split are in every run's identity.
* ``best_of`` names the best hyperparameters of an optimizer in another sweep: the point with the highest mean
  validation accuracy over its seeds, as :func:`lsbench.report.aggregate` chooses it. Loading checks the form
  (sweep name pattern, known problem and optimizer, the source optimizer's hyperparameters known to this one, no
  reference to the grid's own sweep) but cannot resolve it: a loaded grid's ``best_of`` section has no points, and
  :func:`lsbench.sweep.plan.expand` refuses it until :func:`lsbench.sweep.references.resolve_references` has
  replaced it by the concrete point (an ordinary ``fixed`` point, so run ids and the grid hash are stable).

Every problem is reported as a :class:`GridError` whose message is one line,
``<file>: <key path>: <what is wrong> (valid: a, b, c)``, e.g.
``grids/x.yaml: optimizers.pal.grid.mu: unknown hyperparameter 'mu' (valid: measuring_step_size, ...)``.
No input makes loading raise anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from lsbench.optim import OPTIMIZERS, HParam, OptimizerEntry, TrainingContext
from lsbench.problems import PROBLEMS
from lsbench.problems.datasets import SPLITS
from lsbench.sweep.layout import SWEEP_NAME_PATTERN

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
    "load_grid",
    "mark_unresolved",
    "parse_grid",
    "resolve_best_of",
    "resolve_point",
]

TOP_LEVEL_KEYS = ("name", "problems", "budget", "seeds", "training", "optimizers", "resources", "store")
BUDGET_KEYS = ("steps", "eval_every")
TRAINING_KEYS = ("batch_size", "weight_decay", "split")
OPTIMIZER_KEYS = ("grid", "zip", "vary", "fixed", "best_of", "budget", "training")
BEST_OF_KEYS = ("sweep", "problem", "optimizer")
RESOURCE_KEYS = ("gpus_per_run", "time_limit", "memory")
DEFAULT_SEEDS = (1, 2, 3)
MAX_RUNS = 1_000_000
"""Upper bound on the runs of one grid (before duplicate points are merged); split bigger sweeps."""
MAX_SEED = 2**32 - 1
MAX_STEPS = 10**9
MAX_BATCH_SIZE = 2**20
MAX_GPUS_PER_RUN = 64
MAX_FILE_BYTES = 4 * 2**20

TIME_LIMIT_PATTERN = re.compile(r"(?:[0-9]{1,3}-)?[0-9]{1,4}:[0-5][0-9]:[0-5][0-9]")
MEMORY_PATTERN = re.compile(r"[1-9][0-9]{0,9}[KMGT]?")
URL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*://\S*")

# Limits on one hyperparameter value (list-valued ones can nest): keeps YAML alias bombs from blowing up.
_MAX_VALUE_NODES = 10_000
_MAX_VALUE_DEPTH = 16
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # = json.dumps(..., sort_keys=True, separators=...)
# A dummy training-set size for the trial construction of every point (no data is loaded at plan time).
_TRIAL_TRAIN_SIZE = 50_000


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
        self.file = _one_line(file)
        self.key = _one_line(key)
        self.problem = _one_line(problem)
        self.valid = tuple(str(v) for v in valid) if valid else None
        text = f"{self.file}: {self.key}: {self.problem}" if self.key else f"{self.file}: {self.problem}"
        if self.valid:
            text += f" (valid: {', '.join(self.valid)})"
        super().__init__(_one_line(text))

    def __reduce__(self) -> tuple[Any, ...]:
        return (GridError, (self.file, self.key, self.problem, self.valid))


@dataclass(frozen=True)
class Budget:
    """Training length of every run on one problem."""

    steps: int
    eval_every: int


@dataclass(frozen=True)
class Training:
    """Fixed training settings of every run on one problem."""

    batch_size: int
    weight_decay: float
    split: str = "default"


@dataclass(frozen=True)
class Resources:
    """What one run asks the scheduler for."""

    gpus_per_run: int = 1
    time_limit: str = "24:00:00"
    memory: str = "16G"

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
            },
            "store": self.store,
        }


def _budget_dict(budget: Mapping[str, Budget]) -> dict[str, Any]:
    return {p: {"steps": b.steps, "eval_every": b.eval_every} for p, b in budget.items()}


def _training_dict(training: Mapping[str, Training]) -> dict[str, Any]:
    return {
        p: {"batch_size": t.batch_size, "weight_decay": t.weight_decay, "split": t.split} for p, t in training.items()
    }


def _with_hash(grid: Grid) -> Grid:
    digest = hashlib.sha256(json.dumps(grid.to_dict(), separators=(",", ":")).encode()).hexdigest()
    object.__setattr__(grid, "grid_hash", digest)
    return grid


# --------------------------------------------------------------------------------------------------- loading


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read and validate the grid file at ``path``; any problem raises :class:`GridError`.

    The first call in a process takes a second or two longer: building the first optimizer makes torch import
    ``torch._dynamo`` (once per process).
    """
    file = os.fspath(path) if isinstance(path, str | os.PathLike) else repr(path)
    try:
        p = Path(file)
        if not p.is_file():
            problem = "is a directory, not a grid file" if p.is_dir() else "file not found"
            raise GridError(file, "", problem)
        if p.stat().st_size > MAX_FILE_BYTES:
            raise GridError(file, "", f"file too large ({p.stat().st_size} bytes; a grid is at most {MAX_FILE_BYTES})")
        raw = p.read_bytes()
    except GridError:
        raise
    except Exception as exc:
        raise GridError(file, "", f"cannot read the file: {_exception_text(exc)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GridError(file, "", f"not UTF-8 text (byte {exc.start})") from None
    return parse_grid(text, source=file)


def parse_grid(text: str, source: str = "<string>") -> Grid:
    """Validate grid YAML ``text``; ``source`` names it in error messages."""
    source = str(source)
    try:
        return _Validator(source).grid(text)
    except GridError:
        raise
    except Exception as exc:  # a bug of ours must still read as one line about the file
        raise GridError(source, "", f"cannot validate the grid: {_exception_text(exc)}") from None


def resolve_point(entry: OptimizerEntry, values: Mapping[str, Any]) -> dict[str, Any]:
    """All hyperparameters of ``entry``: registry defaults overridden by ``values`` (registry ``resolve``), each in
    canonical form (floats as floats, numbers inside list values as floats), so a default written explicitly and
    one left out give equal dicts and equal run ids."""
    resolved = entry.resolve(values)
    return {hp.name: _canonical(hp, resolved[hp.name]) for hp in entry.hparams}


def resolve_best_of(grid: Grid, optimizer: str, hparams: Mapping[str, Any], note: str = "") -> Grid:
    """``grid`` with the ``best_of`` section of ``optimizer`` turned into one concrete point: ``hparams`` (the
    source sweep's best point) with the section's ``fixed`` values over it, checked like a ``fixed`` point and
    built once as an optimizer. The section keeps its reference (with ``hparams``) as provenance; its ``fixed``
    becomes the whole resolved point. Raises :class:`GridError` when the point does not fit ``optimizer``."""
    og = grid.optimizers[optimizer]
    if og.best_of is None:
        raise ValueError(f"optimizers.{optimizer} has no best_of reference")
    validator = _Validator(grid.source)
    entry = OPTIMIZERS[optimizer]
    key = f"optimizers.{optimizer}.best_of"
    if not isinstance(hparams, Mapping):
        raise validator.error(key, f"the best point of {og.best_of.describe()} is not a mapping: {_type(hparams)}")
    names = tuple(hp.name for hp in entry.hparams)
    checked: dict[str, Any] = {}
    for name, value in hparams.items():
        if not isinstance(name, str) or name not in names:
            raise validator.error(
                key,
                f"the best point of {og.best_of.describe()} has the hyperparameter {_short(name)}, which "
                f"{optimizer!r} does not have (did the registry change since that sweep ran?)",
                names,
            )
        checked[name] = validator.value(entry.hparam(name), value, f"{key}.hparams.{name}")
    values = {**checked, **og.fixed}
    point = resolve_point(entry, values)
    contexts = sorted({(b.steps, t.batch_size) for b, t in (grid.settings(optimizer, p) for p in grid.problems)})
    validator.construct(optimizer, entry, point, values, contexts)
    section = dataclasses.replace(
        og,
        fixed=point,
        points=(point,),
        point_keys=(_ENCODER.encode(point),),
        best_of=dataclasses.replace(og.best_of, hparams=checked, note=note),
    )
    return _with_hash(dataclasses.replace(grid, optimizers={**grid.optimizers, optimizer: section}))


def mark_unresolved(grid: Grid, optimizer: str, reason: str) -> Grid:
    """``grid`` with the unresolved ``best_of`` section of ``optimizer`` counted as one placeholder point (registry
    defaults with the section's ``fixed`` values) and ``reason`` recorded: what a dry run shows before the source
    sweep has a result. Its runs are placeholders, never to be submitted."""
    og = grid.optimizers[optimizer]
    if og.best_of is None or og.best_of.resolved:
        raise ValueError(f"optimizers.{optimizer} has no unresolved best_of reference")
    point = resolve_point(OPTIMIZERS[optimizer], og.fixed)
    section = dataclasses.replace(
        og, points=(point,), point_keys=(_ENCODER.encode(point),), best_of=dataclasses.replace(og.best_of, note=reason)
    )
    return _with_hash(dataclasses.replace(grid, optimizers={**grid.optimizers, optimizer: section}))


# ------------------------------------------------------------------------------------------------ validation


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str, valid: tuple[str, ...] | None = None) -> GridError:
        return GridError(self.source, key, problem, valid)

    # -- top level

    def grid(self, text: str) -> Grid:
        if not isinstance(text, str):
            raise self.error("", f"expected YAML text, got {type(text).__name__}")
        data = self.yaml(text)
        if data is None:
            raise self.error("", "empty document: a grid is a mapping with name, problems and optimizers")
        if not isinstance(data, dict):
            raise self.error("", f"the top level must be a mapping, got {_type(data)}")
        self.keys(data, "", TOP_LEVEL_KEYS)
        for required in ("name", "problems", "optimizers"):
            if required not in data:
                raise self.error(required, "missing (required)")
        name = self.name(data["name"])
        problems = self.problems(data["problems"])
        seeds = self.seeds(data.get("seeds", list(DEFAULT_SEEDS)))
        budget = self.budget(data.get("budget"), problems)
        training = self.training(data.get("training"), problems)
        resources = self.resources(data.get("resources"))
        store = self.store(data.get("store"))
        optimizers = self.optimizers(data["optimizers"], name, problems, seeds, budget, training)
        grid = Grid(
            name=name,
            problems=problems,
            budget=budget,
            seeds=seeds,
            training=training,
            optimizers=optimizers,
            resources=resources,
            store=store,
            source_text=text,
            grid_hash="",
            source=self.source,
        )
        return _with_hash(grid)

    def yaml(self, text: str) -> Any:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            if node is not None:
                self.duplicate_keys(node)
            return yaml.safe_load(text)
        except GridError:
            raise
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc)
            context = getattr(exc, "context", None)
            raise self.error(where, f"invalid YAML: {context + ', ' if context else ''}{what}") from None
        except RecursionError:
            raise self.error("", "invalid YAML: nested too deeply") from None
        except Exception as exc:  # e.g. a timestamp-like scalar that is no valid date
            raise self.error("", f"invalid YAML: {_exception_text(exc)}") from None

    def duplicate_keys(self, root: yaml.Node) -> None:
        """Reject a key written twice in one mapping (``safe_load`` would keep the last silently)."""
        seen: set[int] = set()
        stack: list[tuple[yaml.Node, str]] = [(root, "")]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:  # aliases share nodes: visit each once
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                keys: set[str] = set()
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode):
                        if key_node.tag == "tag:yaml.org,2002:merge":
                            continue
                        if key_node.value in keys:
                            key = _join(path, key_node.value)
                            raise self.error(key, f"duplicate key (line {key_node.start_mark.line + 1})")
                        keys.add(key_node.value)
                        stack.append((value_node, _join(path, key_node.value)))
                    else:
                        stack.append((value_node, path))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))

    def keys(self, mapping: dict[Any, Any], path: str, valid: tuple[str, ...]) -> None:
        for key in mapping:
            if not isinstance(key, str):
                raise self.error(_join(path, key), f"keys must be strings, got {_type(key)}", valid)
            if key not in valid:
                raise self.error(_join(path, key), f"unknown key {_short(key)}", valid)

    def name(self, value: Any) -> str:
        if not isinstance(value, str):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            hint = f" (quote it: name: '{value}')" if number else ""
            raise self.error("name", f"expected a string, got {_type(value)}{hint}")
        if not SWEEP_NAME_PATTERN.fullmatch(value):
            raise self.error(
                "name",
                f"invalid name {_short(value)}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
                "digit (no path separators, spaces or shell metacharacters)",
            )
        return value

    def problems(self, value: Any) -> list[str]:
        items = self.nonempty_list(value, "problems")
        problems: list[str] = []
        for i, item in enumerate(items):
            key = f"problems[{i}]"
            if not isinstance(item, str) or item not in PROBLEMS:
                what = (
                    f"unknown problem {_short(item)}"
                    if isinstance(item, str)
                    else f"expected a name, got {_type(item)}"
                )
                raise self.error(key, what, tuple(PROBLEMS))
            if item in problems:
                raise self.error(key, f"problem {item!r} is listed twice")
            problems.append(item)
        return problems

    def seeds(self, value: Any) -> list[int]:
        seeds: list[int] = []
        if _is_int(value):
            value = [value]
        for i, seed in enumerate(self.nonempty_list(value, "seeds")):
            key = f"seeds[{i}]"
            if not _is_int(seed):
                raise self.error(key, f"expected a non-negative integer, got {_type(seed)}")
            if not 0 <= seed <= MAX_SEED:
                raise self.error(key, f"seed {seed} is outside [0, {MAX_SEED}]")
            if seed in seeds:
                raise self.error(key, f"seed {seed} is listed twice")
            seeds.append(seed)
        return seeds

    def nonempty_list(self, value: Any, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_type(value)}")
        if not value:
            raise self.error(key, "empty list")
        return value

    def mapping(self, value: Any, key: str, valid: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {_type(value)}", valid)
        self.keys(value, key, valid)
        return value

    def per_problem(
        self, value: Any, key: str, problems: list[str], check: Callable[[Any, str], Any]
    ) -> dict[str, Any]:
        """A setting given once for every problem, or as a mapping problem -> value (missing problems: absent)."""
        if isinstance(value, dict):
            out = {}
            for problem, item in value.items():
                item_key = _join(key, problem)
                if not isinstance(problem, str) or problem not in problems:
                    raise self.error(item_key, f"{_short(problem)} is not one of this grid's problems", tuple(problems))
                out[problem] = check(item, item_key)
            return out
        checked = check(value, key)
        return dict.fromkeys(problems, checked)

    def positive_int(self, maximum: int) -> Callable[[Any, str], int]:
        def check(value: Any, key: str) -> int:
            if not _is_int(value):
                raise self.error(key, f"expected a positive integer, got {_type(value)}{_yaml_hint(value)}")
            if not 1 <= value <= maximum:
                raise self.error(key, f"{value} is outside [1, {maximum}]")
            return value

        return check

    def budget(
        self, value: Any, problems: list[str], base: dict[str, Budget] | None = None, key: str = "budget"
    ) -> dict[str, Budget]:
        """Per problem: the given values over ``base`` (the problem registry's defaults when None)."""
        given = self.mapping(value, key, BUDGET_KEYS)
        check = self.positive_int(MAX_STEPS)
        steps = self.per_problem(given["steps"], f"{key}.steps", problems, check) if "steps" in given else {}
        every = (
            self.per_problem(given["eval_every"], f"{key}.eval_every", problems, check) if "eval_every" in given else {}
        )
        out = {}
        for problem in problems:
            if base is not None:
                default = base[problem]
            else:
                defaults = PROBLEMS[problem].defaults
                default = Budget(defaults.steps, defaults.eval_every)
            out[problem] = Budget(steps.get(problem, default.steps), every.get(problem, default.eval_every))
        return out

    def training(
        self, value: Any, problems: list[str], base: dict[str, Training] | None = None, key: str = "training"
    ) -> dict[str, Training]:
        """Per problem: the given values over ``base`` (the problem registry's defaults when None)."""
        given = self.mapping(value, key, TRAINING_KEYS)

        def weight_decay(item: Any, key: str) -> float:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise self.error(key, f"expected a number >= 0, got {_type(item)}{_yaml_hint(item)}")
            try:
                number = float(item)
            except OverflowError:
                number = math.inf
            if not (math.isfinite(number) and number >= 0):
                raise self.error(key, f"expected a finite number >= 0, got {_short(item)}")
            return number

        def split(item: Any, key: str) -> str:
            if not isinstance(item, str) or item not in SPLITS:
                raise self.error(key, f"unknown split {_short(item)}", SPLITS)
            return item

        def field_(name: str, check: Callable[[Any, str], Any]) -> dict[str, Any]:
            return self.per_problem(given[name], f"{key}.{name}", problems, check) if name in given else {}

        batch = field_("batch_size", self.positive_int(MAX_BATCH_SIZE))
        decay = field_("weight_decay", weight_decay)
        splits = field_("split", split)
        out = {}
        for problem in problems:
            if base is not None:
                default = base[problem]
            else:
                defaults = PROBLEMS[problem].defaults
                default = Training(defaults.batch_size, float(defaults.weight_decay), "default")
            out[problem] = Training(
                batch.get(problem, default.batch_size),
                decay.get(problem, default.weight_decay),
                splits.get(problem, default.split),
            )
        return out

    def resources(self, value: Any) -> Resources:
        given = self.mapping(value, "resources", RESOURCE_KEYS)
        defaults = Resources()
        gpus = defaults.gpus_per_run
        if "gpus_per_run" in given:
            gpus = self.positive_int(MAX_GPUS_PER_RUN)(given["gpus_per_run"], "resources.gpus_per_run")
        time_limit = given.get("time_limit", defaults.time_limit)
        if _is_int(time_limit):
            raise self.error(
                "resources.time_limit",
                f"got the integer {time_limit}: YAML reads an unquoted 24:00:00 as a base-60 number; "
                'quote it: "24:00:00"',
            )
        if not isinstance(time_limit, str) or not TIME_LIMIT_PATTERN.fullmatch(time_limit):
            raise self.error("resources.time_limit", f'expected "HH:MM:SS" or "D-HH:MM:SS", got {_type(time_limit)}')
        memory = given.get("memory", defaults.memory)
        if not isinstance(memory, str) or not MEMORY_PATTERN.fullmatch(memory):
            raise self.error(
                "resources.memory", f"expected a Slurm size such as 16G (units K, M, G, T), got {_type(memory)}"
            )
        return Resources(gpus, time_limit, memory)

    def store(self, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not URL_PATTERN.fullmatch(value):
            raise self.error(
                "store",
                f"expected an SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db) or null, got {_type(value)}",
            )
        return value

    # -- optimizers

    def optimizers(
        self,
        value: Any,
        grid_name: str,
        problems: list[str],
        seeds: list[int],
        budget: dict[str, Budget],
        training: dict[str, Training],
    ) -> dict[str, OptimizerGrid]:
        valid = tuple(OPTIMIZERS)
        if not isinstance(value, dict):
            raise self.error("optimizers", f"expected a mapping of optimizer names, got {_type(value)}", valid)
        if not value:
            raise self.error("optimizers", "no optimizers given", valid)
        self.keys(value, "optimizers", valid)
        grids: dict[str, OptimizerGrid] = {}
        total = 0
        for name, spec in value.items():
            axes, og = self.optimizer(name, spec, grid_name)
            base = f"optimizers.{name}"
            section = spec if isinstance(spec, dict) else {}
            og_budget = (
                self.budget(section["budget"], problems, budget, f"{base}.budget") if "budget" in section else None
            )
            og_training = (
                self.training(section["training"], problems, training, f"{base}.training")
                if "training" in section
                else None
            )
            size = 1 if og.best_of is not None else math.prod(len(axis) for axis in axes)
            total += size * len(problems) * len(seeds)
            if total > MAX_RUNS:
                raise self.error(
                    "optimizers",
                    f"the grid expands to more than {MAX_RUNS:,} runs (problems x points x seeds); split it",
                )
            if og.best_of is not None:
                points: tuple[dict[str, Any], ...] = ()
                keys: tuple[str, ...] = ()
            else:
                b, t = og_budget or budget, og_training or training
                contexts = sorted({(b[p].steps, t[p].batch_size) for p in problems})
                points, keys = self.points(name, og, axes, contexts)
            grids[name] = dataclasses.replace(
                og, points=points, point_keys=keys, budget=og_budget, training=og_training
            )
        return grids

    def optimizer(self, name: str, spec: Any, grid_name: str = "") -> tuple[list[list[dict[str, Any]]], OptimizerGrid]:
        """The checked sub-grid and its axes: each axis is a list of partial points (none for ``best_of``)."""
        entry = OPTIMIZERS[name]
        base = f"optimizers.{name}"
        spec = self.mapping(spec, base, OPTIMIZER_KEYS)
        names = tuple(hp.name for hp in entry.hparams)
        where: dict[str, str] = {}  # hyperparameter -> key path where it was set

        def claim(hp_name: Any, key: str) -> HParam:
            if not isinstance(hp_name, str) or hp_name not in names:
                raise self.error(key, f"unknown hyperparameter {_short(hp_name)} for optimizer {name!r}", names)
            if hp_name in where:
                raise self.error(key, f"{hp_name} is already set in {where[hp_name]}")
            where[hp_name] = key
            return entry.hparam(hp_name)

        best_of = None
        if spec.get("best_of") is not None:
            best_of = self.best_of(name, spec["best_of"], grid_name)
            for other in ("grid", "zip", "vary"):
                if spec.get(other) is not None:
                    raise self.error(
                        f"{base}.{other}",
                        "best_of stands for one point: combine it only with fixed (to override some of its values)",
                    )

        grid: dict[str, list[Any]] = {}
        axes: list[list[dict[str, Any]]] = []
        grid_spec = spec.get("grid")
        if grid_spec is not None:
            if not isinstance(grid_spec, dict):
                raise self.error(f"{base}.grid", f"expected a mapping hyperparameter -> values, got {_type(grid_spec)}")
            for hp_name, values in grid_spec.items():
                key = _join(f"{base}.grid", hp_name)
                hp = claim(hp_name, key)
                grid[hp.name] = self.candidates(hp, values, key)
                axes.append([{hp.name: v} for v in grid[hp.name]])

        groups: list[dict[str, list[Any]]] = []
        zip_spec = spec.get("zip")
        if zip_spec is not None:
            if isinstance(zip_spec, dict):
                zip_spec = [zip_spec]
            if not isinstance(zip_spec, list):
                raise self.error(f"{base}.zip", f"expected a list of groups (mappings), got {_type(zip_spec)}")
            for g, group_spec in enumerate(zip_spec):
                gkey = f"{base}.zip[{g}]"
                if not isinstance(group_spec, dict) or not group_spec:
                    raise self.error(
                        gkey, f"expected a non-empty mapping hyperparameter -> values, got {_type(group_spec)}"
                    )
                group: dict[str, list[Any]] = {}
                for hp_name, values in group_spec.items():
                    key = _join(gkey, hp_name)
                    hp = claim(hp_name, key)
                    group[hp.name] = self.candidates(hp, values, key)
                lengths = {len(v) for v in group.values()}
                if len(lengths) > 1:
                    detail = ", ".join(f"{k} has {len(v)}" for k, v in group.items())
                    raise self.error(gkey, f"the lists of a zip group must have equal lengths: {detail}")
                groups.append(group)
                n = lengths.pop()
                axes.append([{k: v[i] for k, v in group.items()} for i in range(n)])

        fixed: dict[str, Any] = {}
        fixed_spec = spec.get("fixed")
        if fixed_spec is not None:
            if not isinstance(fixed_spec, dict):
                raise self.error(
                    f"{base}.fixed", f"expected a mapping hyperparameter -> value, got {_type(fixed_spec)}"
                )
            for hp_name, value in fixed_spec.items():
                key = _join(f"{base}.fixed", hp_name)
                hp = claim(hp_name, key)
                hint = "; fixed takes one value, lists of candidates go under grid" if isinstance(value, list) else ""
                fixed[hp.name] = self.value(hp, value, key, hint)

        vary: dict[str, list[Any]] = {}
        vary_spec = spec.get("vary")
        if vary_spec is not None:
            if not isinstance(vary_spec, dict) or not vary_spec:
                raise self.error(
                    f"{base}.vary", f"expected a non-empty mapping hyperparameter -> values, got {_type(vary_spec)}"
                )
            axis: list[dict[str, Any]] = [{}]  # the base point: defaults and fixed
            for hp_name, values in vary_spec.items():
                key = _join(f"{base}.vary", hp_name)
                if isinstance(hp_name, str) and hp_name in where and not where[hp_name].startswith(f"{base}.fixed"):
                    raise self.error(
                        key, f"{hp_name} is already set in {where[hp_name]} (vary takes its base value from fixed)"
                    )
                if not isinstance(hp_name, str) or hp_name not in names:
                    raise self.error(key, f"unknown hyperparameter {_short(hp_name)} for optimizer {name!r}", names)
                hp = entry.hparam(hp_name)
                vary[hp.name] = self.candidates(hp, values, key)
                axis.extend({hp.name: v} for v in vary[hp.name])
            axes.append(axis)
        return axes, OptimizerGrid(name, grid, groups, fixed, (), vary=vary, best_of=best_of)

    def best_of(self, name: str, value: Any, grid_name: str) -> BestOf:
        """The checked form of a ``best_of`` reference (resolved later, from the source sweep's store)."""
        key = f"optimizers.{name}.best_of"
        given = self.mapping(value, key, BEST_OF_KEYS)
        for required in ("sweep", "problem"):
            if required not in given:
                raise self.error(f"{key}.{required}", "missing (required)")
        sweep = given["sweep"]
        if not isinstance(sweep, str) or not SWEEP_NAME_PATTERN.fullmatch(sweep):
            raise self.error(
                f"{key}.sweep",
                f"expected a sweep name (1-64 letters, digits, '_', '.' or '-', starting with a letter or digit), "
                f"got {_type(sweep)}",
            )
        if sweep == grid_name:
            raise self.error(f"{key}.sweep", f"a grid cannot refer to its own sweep {sweep!r}")
        problem = given["problem"]
        if not isinstance(problem, str) or problem not in PROBLEMS:
            what = (
                f"unknown problem {_short(problem)}"
                if isinstance(problem, str)
                else f"expected a name, got {_type(problem)}"
            )
            raise self.error(f"{key}.problem", what, tuple(PROBLEMS))
        source = given.get("optimizer", name)
        if not isinstance(source, str) or source not in OPTIMIZERS:
            what = (
                f"unknown optimizer {_short(source)}"
                if isinstance(source, str)
                else f"expected a name, got {_type(source)}"
            )
            raise self.error(f"{key}.optimizer", what, tuple(OPTIMIZERS))
        names = {hp.name for hp in OPTIMIZERS[name].hparams}
        foreign = [hp.name for hp in OPTIMIZERS[source].hparams if hp.name not in names]
        if foreign:
            raise self.error(
                f"{key}.optimizer",
                f"the hyperparameters {', '.join(foreign)} of {source!r} are unknown to {name!r}: its best point "
                "cannot be used here",
            )
        return BestOf(sweep, problem, source)

    def candidates(self, hp: HParam, values: Any, key: str) -> list[Any]:
        if hp.type is list:
            if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
                raise self.error(
                    key,
                    f"{hp.name} is list-valued: write its candidates as a list of lists, e.g. "
                    f"{_short(json.dumps([hp.default]))}, or one value under fixed",
                )
        elif not isinstance(values, list):
            values = [values]
        if not values:
            raise self.error(key, "empty list: give at least one value")
        return [self.value(hp, v, f"{key}[{i}]") for i, v in enumerate(values)]

    def value(self, hp: HParam, value: Any, key: str, hint: str = "") -> Any:
        problem = _plain_problem(value)
        if problem:
            raise self.error(key, problem)
        if hp.choices is not None and not isinstance(value, list | dict) and value not in hp.choices:
            raise self.error(key, f"{_short(value)} is not a valid choice", tuple(map(str, hp.choices)))
        try:
            checked = hp.validate(value)
        except Exception as exc:
            message = _exception_text(exc)
            if message.startswith(f"{hp.name}: "):
                message = message[len(hp.name) + 2 :]
            raise self.error(key, f"{message}{_yaml_hint(value)}{hint}") from None
        return _canonical(hp, checked)

    def points(
        self,
        name: str,
        og: OptimizerGrid,
        axes: list[list[dict[str, Any]]],
        contexts: list[tuple[int, int]],
    ) -> tuple[tuple[dict[str, Any], ...], tuple[str, ...]]:
        entry = OPTIMIZERS[name]
        seen: dict[str, dict[str, Any]] = {}
        for combination in itertools.product(*axes):
            values = dict(og.fixed)
            for partial in combination:
                values.update(partial)
            point = resolve_point(entry, values)
            point_key = _ENCODER.encode(point)
            if point_key in seen:
                continue
            seen[point_key] = point
            self.construct(name, entry, point, values, contexts)
        return tuple(seen.values()), tuple(seen)

    def construct(
        self,
        name: str,
        entry: OptimizerEntry,
        point: dict[str, Any],
        values: dict[str, Any],
        contexts: list[tuple[int, int]],
    ) -> None:
        """Build the optimizer once on a dummy parameter: catches constraints between hyperparameters."""
        for steps, batch_size in contexts:
            try:
                entry.build(
                    [torch.zeros(1, requires_grad=True)], point, TrainingContext(steps, batch_size, _TRIAL_TRAIN_SIZE)
                )
            except Exception as exc:
                shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or "registry defaults"
                raise self.error(
                    f"optimizers.{name}", f"invalid combination ({shown}): {_exception_text(exc)}"
                ) from None


# --------------------------------------------------------------------------------------------------- helpers


def _canonical(hp: HParam, value: Any) -> Any:
    if hp.type is float and _is_int(value):
        return float(value)
    if isinstance(value, list):
        return _floats(value)
    return value


def _floats(value: Any) -> Any:
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if _is_int(value):
        return float(value)
    return value


def _plain_problem(value: Any) -> str:
    """Why ``value`` cannot be a hyperparameter value ('' if it can): only JSON scalars and lists, bounded."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_VALUE_NODES or depth > _MAX_VALUE_DEPTH:
            return f"value too large (more than {_MAX_VALUE_NODES} elements or nested deeper than {_MAX_VALUE_DEPTH})"
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"must be finite, got {item!r}"
        elif isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > 2**63:
                return f"integer {_short(item)} is too large"
        elif item is not None and not isinstance(item, bool | str):
            return f"unsupported value {_type(item)} (use numbers, strings, booleans, null or lists)"
    return ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _join(path: str, key: Any) -> str:
    text = key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key) else _short(key)
    return f"{path}.{text}" if path else text


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return f"{names.get(type(value), type(value).__name__)} {_short(value)}"


def _yaml_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (PyYAML reads numbers like 1e-4 without a dot as strings: write 1.0e-4)"
    return ""


def _exception_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return _one_line(text if len(text) <= 300 else text[:297] + "...")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
