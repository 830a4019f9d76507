"""Resolution of ``best_of`` references: a grid's point that is the best configuration of another sweep.

The thesis reuses the best configuration of one sweep in another (ImageNet with the best CIFAR-100 points,
thesis Section 4.5 and Appendix A.2.3; the LABPAL transfer and batch-size runs with the best CIFAR-10 ResNet-20
points, Section 6.4 and Appendix C.4). A grid writes this as an optimizer section with ``best_of`` (see
:mod:`lsbench.sweep.grid`). Loading cannot know the point; ``sweep submit`` calls :func:`resolve_references`,
which reads the source sweep's store and replaces every ``best_of`` section by its concrete point:

* the source sweep is ``SweepDir(root / sweep)``; its store is the one its ``sweep.json`` names (workers' spool
  files are ingested first, as ``sweep status`` and ``sweep aggregate`` do);
* the point is :attr:`lsbench.report.SummaryRow.best_hparams` of :func:`lsbench.report.aggregate` over the source
  sweep's runs of that problem and optimizer: the highest mean validation accuracy over its completed seeds
  (ties: smallest canonical JSON), exactly what ``sweep aggregate`` reports as the best point;
* the section's ``fixed`` values are set over it, and the result is checked and built once like any ``fixed``
  point. The resolved hyperparameters are ordinary hyperparameters: run ids depend on the values only, and the
  resolved grid's hash changes only if the chosen point does.

A reference is resolved only from a finished group: the source must exist, have at least one completed run with a
validation accuracy for that problem and optimizer, and have no run of them still planned, queued or running
(otherwise the best point could still change). Anything else is a :class:`~lsbench.sweep.grid.GridError` with one
line naming the section, e.g. ``grids/labpal_transfer.yaml: optimizers.pal.best_of.sweep: no sweep
'labpal_cifar10' under runs ...`` -- exit code 2 in the CLI.

**Dry runs** (``dry_run=True``) resolve what can be resolved under the same rules and never fail on a reference:
one that cannot be resolved yet is kept as a placeholder of one point (the registry defaults with the section's
``fixed`` values) per problem and seed, so the run counts are those of the real sweep, and
:meth:`~lsbench.sweep.grid.Grid.unresolved_references` (shown as warnings by :func:`lsbench.sweep.plan.summarize`)
says why. A grid with placeholders must never be submitted.

The resolved grid's ``source_text`` is the file's text with a comment block appended that records each resolved
reference (source, point, mean validation accuracy), so the ``grid.yaml`` kept in the sweep directory and the
store show what was run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from lsbench.sweep.grid import BestOf, Grid, GridError, mark_unresolved, resolve_best_of
from lsbench.sweep.layout import SweepDir

__all__ = ["resolve_references"]

_ANNOTATION = "# --- best_of references resolved at submit time (lsbench.sweep.references) ---"


class _Unresolvable(Exception):
    """Why a reference cannot be resolved (now); ``key`` is the sub-key of ``best_of`` it concerns."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def resolve_references(grid: Grid, root: str | os.PathLike[str], *, dry_run: bool = False) -> Grid:
    """``grid`` with every ``best_of`` section replaced by the best point of its source sweep under ``root``.

    Args:
        grid: a loaded grid (:func:`lsbench.sweep.grid.load_grid`); returned unchanged if it has no unresolved
            ``best_of`` section.
        root: the sweep root (``sweep_root(args.root)``): the source sweep is ``root / <best_of.sweep>``.
        dry_run: keep a reference that cannot be resolved yet as a one-point placeholder (and say why) instead of
            raising.

    Raises:
        GridError: one line, for a source sweep that does not exist under ``root``, whose store cannot be read,
            that has no completed run of that problem and optimizer (or still has unfinished ones), or whose best
            point does not fit the optimizer (not with ``dry_run`` except for the last).
    """
    names = [name for name, og in grid.optimizers.items() if og.unresolved]
    if not names:
        return grid
    root = Path(root)
    cache: dict[str, list[Any] | _Unresolvable] = {}  # sweep name -> its aggregate rows, or why none
    records: list[str] = []
    for name in names:
        reference = grid.optimizers[name].best_of
        assert reference is not None
        try:
            hparams, note = _best_point(root, reference, cache)
        except _Unresolvable as exc:
            if dry_run:
                grid = mark_unresolved(grid, name, exc.reason)
                continue
            raise GridError(grid.source, f"optimizers.{name}.best_of{exc.key}", exc.reason) from None
        grid = resolve_best_of(grid, name, hparams, note)
        resolved = grid.optimizers[name]
        records.append(f"# optimizers.{name}.best_of: {reference.describe()}: {note}")
        records.append(f"#   -> {json.dumps(resolved.fixed, sort_keys=True, separators=(',', ':'))}")
    if records:
        text = grid.source_text if grid.source_text.endswith("\n") or not grid.source_text else grid.source_text + "\n"
        grid = dataclasses.replace(grid, source_text="\n".join([text + _ANNOTATION, *records]) + "\n")
    return grid


def _best_point(
    root: Path, reference: BestOf, cache: dict[str, list[Any] | _Unresolvable]
) -> tuple[dict[str, Any], str]:
    """The best hyperparameters of ``reference`` and a note on how they were chosen; raises :class:`_Unresolvable`."""
    rows = cache.get(reference.sweep)
    if rows is None:
        try:
            rows = _aggregate(root, reference.sweep)
        except _Unresolvable as exc:
            rows = exc
        cache[reference.sweep] = rows
    if isinstance(rows, _Unresolvable):
        raise rows
    where = f"{reference.optimizer} on {reference.problem}"
    row = next((r for r in rows if (r.problem, r.optimizer) == (reference.problem, reference.optimizer)), None)
    if row is None:
        pairs = ", ".join(f"{r.optimizer} on {r.problem}" for r in rows) or "none"
        raise _Unresolvable("", f"sweep {reference.sweep!r} has no runs of {where} (it has: {pairs})")
    if row.unfinished:
        raise _Unresolvable(
            "",
            f"sweep {reference.sweep!r} still has {row.unfinished} unfinished runs of {where} ({row.completed} of "
            f"{row.runs} completed), so its best point may still change: wait for them (sweep status "
            f"{reference.sweep}) or cancel them",
        )
    if row.best_hparams is None:
        raise _Unresolvable(
            "",
            f"sweep {reference.sweep!r} has no completed run of {where} with a validation accuracy yet ({row.runs} "
            f"runs: {row.completed} completed, {row.diverged} diverged, {row.failed} failed)",
        )
    note = (
        f"best mean validation accuracy {row.best_val_acc:.4f} of {row.points} points "
        f"({row.completed} of {row.runs} runs completed, {row.diverged} diverged, {row.failed} failed)"
    )
    return dict(row.best_hparams), note


def _aggregate(root: Path, sweep_name: str) -> list[Any]:
    """:func:`lsbench.report.aggregate` of the sweep ``root / sweep_name``; raises :class:`_Unresolvable`."""
    # Imported here: the api module imports the backends, and it imports this module.
    from lsbench.report import aggregate
    from lsbench.sweep.api import open_store, sweep_outcomes

    sweep = SweepDir(root / sweep_name)
    if not sweep.exists():
        known = ", ".join(sorted(p.parent.name for p in root.glob("*/sweep.json"))) or "none"
        raise _Unresolvable(
            ".sweep",
            f"no sweep {sweep_name!r} under {root} (sweeps there: {known}): submit its grid first and let it finish",
        )
    try:
        with open_store(sweep) as store:
            return aggregate(sweep_outcomes(store, sweep_name))
    except Exception as exc:
        text = " ".join((str(exc) or type(exc).__name__).split())
        raise _Unresolvable(".sweep", f"cannot read the results of sweep {sweep_name!r}: {text[:300]}") from None
