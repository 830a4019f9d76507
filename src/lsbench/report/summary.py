"""Aggregation of final run results into the thesis' Table A.1 sensitivity summary.

Per (problem, optimizer) the completed runs are grouped by hyperparameter point (canonical JSON of the hparams), each
final metric is averaged over the point's seeds, and the distribution of these per-point means over the grid is
summarised: training loss min / median / p25 / p75, validation and test accuracy max / median / p25 / p75 (quartiles by
numpy's default linear interpolation). The best point is the one with the highest mean validation accuracy; its
test accuracy is the "best (val) test acc" of the table. Diverged runs are counted, never averaged (a point all of
whose seeds diverged contributes no metric), and runs that did not finish are counted apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsbench.runs import NO_RESULT

__all__ = [
    "METRICS",
    "RunOutcome",
    "SummaryRow",
    "aggregate",
    "canonical_hparams",
]

METRICS = ("train_loss", "val_acc", "test_acc")
"""The final metrics that are aggregated, in table order."""

# Runs in lsbench.runs.NO_RESULT states count as failed; any state other than these, completed and diverged
# (planned, queued, running or one this module does not know) counts as unfinished.


@dataclass(frozen=True)
class RunOutcome:
    """The final outcome of one run: the input to :func:`aggregate`, independent of how results are stored.

    ``status`` is a run state (``completed``, ``diverged``, ``failed``, ...); the metrics are the final values, ``None``
    where missing. Only completed runs contribute metrics; a NaN or infinite value is treated as missing.
    """

    problem: str
    optimizer: str
    hparams: dict
    seed: int
    status: str
    train_loss: float | None
    val_acc: float | None
    test_acc: float | None


@dataclass(frozen=True)
class SummaryRow:
    """One (problem, optimizer) line of the Table A.1 summary.

    Counts: ``points`` is the number of hyperparameter points with at least one completed run, ``runs`` the number of
    runs, split as ``completed + diverged + failed + unfinished`` (``failed`` holds failed, timeout, preempted and
    cancelled runs; ``unfinished`` planned, queued, running and unknown states). ``seeds_per_point`` is the smallest
    number of completed seeds over the counted points.

    Statistics are over the per-point means (each metric averaged over the point's completed seeds); accuracies are
    fractions in [0, 1] as the trainer reports them. Every statistic is ``None`` when no point has a value for it.
    ``best_*`` describe the point with the highest mean validation accuracy (ties: smallest canonical hparams JSON).
    """

    problem: str
    optimizer: str
    points: int
    runs: int
    completed: int
    diverged: int
    failed: int
    unfinished: int
    train_loss_min: float | None
    train_loss_median: float | None
    train_loss_p25: float | None
    train_loss_p75: float | None
    val_acc_max: float | None
    val_acc_median: float | None
    val_acc_p25: float | None
    val_acc_p75: float | None
    test_acc_max: float | None
    test_acc_median: float | None
    test_acc_p25: float | None
    test_acc_p75: float | None
    best_hparams: dict | None
    best_val_acc: float | None
    best_test_acc: float | None
    seeds_per_point: int | None
    # hyperparameters whose value differs between the row's points: what the tables show of the best point
    varied: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict in field order (``best_hparams`` copied)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if out["best_hparams"] is not None:
            out["best_hparams"] = dict(out["best_hparams"])
        return out


def canonical_hparams(hparams: Mapping[str, Any]) -> str:
    """The identity of a hyperparameter point: compact JSON with sorted keys, floats as Python repr."""
    return json.dumps(hparams, sort_keys=True, separators=(",", ":"))


@dataclass
class _Point:
    hparams: Mapping[str, Any]
    seeds: set[int] = field(default_factory=set)
    sums: list[float] = field(default_factory=lambda: [0.0] * len(METRICS))
    counts: list[int] = field(default_factory=lambda: [0] * len(METRICS))

    def mean(self, index: int) -> float | None:
        count = self.counts[index]
        return self.sums[index] / count if count else None


@dataclass
class _Group:
    runs: int = 0
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    unfinished: int = 0
    points: dict[str, _Point] = field(default_factory=dict)


def aggregate(outcomes: Sequence[RunOutcome]) -> list[SummaryRow]:
    """Summarise ``outcomes`` into one :class:`SummaryRow` per (problem, optimizer), sorted by problem then optimizer.

    Each outcome is counted once; callers scope the outcomes to one sweep (never "everything in a folder").
    """
    groups: dict[tuple[str, str], _Group] = {}
    for outcome in outcomes:
        key = (outcome.problem, outcome.optimizer)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
        group.runs += 1
        status = outcome.status
        if status == "completed":
            group.completed += 1
        elif status == "diverged":
            group.diverged += 1
            continue
        elif status in NO_RESULT:
            group.failed += 1
            continue
        else:
            group.unfinished += 1
            continue
        point_key = canonical_hparams(outcome.hparams)
        point = group.points.get(point_key)
        if point is None:
            point = group.points[point_key] = _Point(outcome.hparams)
        point.seeds.add(outcome.seed)
        for index, value in enumerate((outcome.train_loss, outcome.val_acc, outcome.test_acc)):
            if value is not None and math.isfinite(value):
                point.sums[index] += value
                point.counts[index] += 1
    return [_summarize(problem, optimizer, groups[problem, optimizer]) for problem, optimizer in sorted(groups)]


def _quartiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(median, p25, p75) by numpy's default linear interpolation, or Nones for no values."""
    if not values:
        return None, None, None
    p25, median, p75 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(median), float(p25), float(p75)


def _summarize(problem: str, optimizer: str, group: _Group) -> SummaryRow:
    means: list[list[float]] = [[] for _ in METRICS]
    best: tuple[float, str] | None = None  # (mean val acc, canonical hparams)
    for point_key, point in group.points.items():
        for index in range(len(METRICS)):
            value = point.mean(index)
            if value is not None:
                means[index].append(value)
        val = point.mean(1)
        # Highest mean validation accuracy; among equals the smallest canonical JSON, whatever the input order.
        if val is not None and (best is None or val > best[0] or (val == best[0] and point_key < best[1])):
            best = (val, point_key)
    train, val, test = means
    train_median, train_p25, train_p75 = _quartiles(train)
    val_median, val_p25, val_p75 = _quartiles(val)
    test_median, test_p25, test_p75 = _quartiles(test)
    best_point = group.points[best[1]] if best is not None else None
    return SummaryRow(
        problem=problem,
        optimizer=optimizer,
        points=len(group.points),
        runs=group.runs,
        completed=group.completed,
        diverged=group.diverged,
        failed=group.failed,
        unfinished=group.unfinished,
        train_loss_min=min(train) if train else None,
        train_loss_median=train_median,
        train_loss_p25=train_p25,
        train_loss_p75=train_p75,
        val_acc_max=max(val) if val else None,
        val_acc_median=val_median,
        val_acc_p25=val_p25,
        val_acc_p75=val_p75,
        test_acc_max=max(test) if test else None,
        test_acc_median=test_median,
        test_acc_p25=test_p25,
        test_acc_p75=test_p75,
        best_hparams=dict(best_point.hparams) if best_point is not None else None,
        best_val_acc=best_point.mean(1) if best_point is not None else None,
        best_test_acc=best_point.mean(2) if best_point is not None else None,
        seeds_per_point=min(len(p.seeds) for p in group.points.values()) if group.points else None,
        varied=_varied([point.hparams for point in group.points.values()]),
    )


def _varied(points: Sequence[dict]) -> tuple[str, ...]:
    """Names of the hyperparameters that take more than one value across ``points``."""
    names = {name for hparams in points for name in hparams}
    return tuple(sorted(name for name in names if len({canonical_hparams({"v": hp.get(name)}) for hp in points}) > 1))
