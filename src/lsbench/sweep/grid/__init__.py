"""Sweep grids: the YAML schema, loading and validation.

A grid file names the problems, the optimizers with their hyperparameter sub-grids, the seeds and the budget of a
sweep. :func:`load_grid` reads one (safe YAML only), checks every name and value against the registries
-- :data:`lsbench.problems.PROBLEMS` and :data:`lsbench.optim.OPTIMIZERS` are the only lists of valid names and
hyperparameters -- and returns a :class:`Grid`. :func:`lsbench.sweep.plan.expand` turns a grid into runs;
:func:`grid_json_schema` gives the schema to editors.

The package, one module per job:

    types     the validated grid (Grid, OptimizerGrid, Budget, ...), GridError, limits      no registries, no torch
    schema    the file schema as pydantic models generated from the registries; JSON Schema
    points    expansion of one optimizer's sub-grid into resolved points
    build     the trial build of every point (the only module that uses torch itself)
    hashing   canonical JSON of points and grids (run ids and grid hashes)
    load      load_grid / parse_grid and the later best_of resolution
    (lsbench.sweep.yamlfile reads the YAML, lsbench.sweep.schema holds the pydantic building blocks)

Importing this package loads none of the registries (which import torch); the functions below import them on
first use.

Schema (every key not listed is an error)::

    name: pal_cifar10            # required; ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$
    problems: [cifar10_resnet32] # required; non-empty list of problem registry names, no repeats (or one name)
    budget:                      # optional; every value defaults to the problem registry's
      steps: 150000              #   a positive integer for every problem, or a mapping per problem
      eval_every: 1000           #   {cifar10_resnet32: 150000}; problems left out keep the default
    seeds: [1, 2, 3]             # optional, default [1, 2, 3]; distinct integers in [0, 2**32 - 1] (or one integer)
    training:                    # optional; same scalar-or-per-problem rule as budget
      batch_size: 128            #   positive integer
      weight_decay: 1.0e-4       #   number >= 0 (L2 coefficient of the trainer)
      split: default             #   train/validation split rule: default or labpal (lsbench.runs.SPLITS)
      precision: fp32            #   numerics of the training passes: fp32, tf32 or bf16 (lsbench.runs.PRECISIONS)
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
      runs_per_worker: null      #   1-64: compatible runs trained together as one fused model (lsbench.fused);
                                 #   null = the profile's runs_per_worker, else 1
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
* Numbers are read as YAML 1.2 reads them: ``1e-3``, ``1E-4`` and ``5e3`` are floats (YAML 1.1, and plain
  PyYAML, read them as strings; :mod:`lsbench.sweep.yamlfile`). One YAML 1.1 pitfall remains: an unquoted
  ``24:00:00`` is the base-60 integer 86400 -- quote time limits (reported with that hint).
* YAML aliases and merge keys are fine. A key repeated within one mapping is an error.
* Every combination is also built once as an optimizer on a dummy parameter, so constraints that involve several
  hyperparameters (e.g. Nesterov needs momentum > 0) fail at load time, not in a job.
* ``training`` holds the run model's training fields (:data:`lsbench.runs.spec.TRAINING_FIELDS`: batch size,
  weight decay, split, precision); ``split`` and ``precision`` take the values the run model lists. Whether a
  dataset offers a split (:func:`lsbench.problems.sources.offered_splits`) is checked by ``sweep submit``,
  ``--dry-run`` included, before anything is queued.
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

from typing import TYPE_CHECKING, Any

from lsbench.sweep.grid.points import resolve_point
from lsbench.sweep.grid.types import (
    DEFAULT_SEEDS,
    MAX_RUNS,
    BestOf,
    Budget,
    Grid,
    GridError,
    OptimizerGrid,
    Resources,
    Training,
)

if TYPE_CHECKING:
    from lsbench.sweep.grid.load import load_grid, mark_unresolved, parse_grid, resolve_best_of
    from lsbench.sweep.grid.schema import grid_json_schema

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
    "grid_json_schema",
    "load_grid",
    "mark_unresolved",
    "parse_grid",
    "resolve_best_of",
    "resolve_point",
]

# Imported on first use: they read the registries, which import torch (most sweep commands never need it).
_LAZY = {
    "load_grid": "load",
    "mark_unresolved": "load",
    "parse_grid": "load",
    "resolve_best_of": "load",
    "grid_json_schema": "schema",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
