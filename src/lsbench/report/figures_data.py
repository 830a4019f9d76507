"""The numbers behind the report's figures, as plain functions of two pandas tables.

Inputs (:func:`load` reads both from a store in two queries):

- ``runs``: one row per run -- ``run_id, problem, optimizer, point`` (canonical hyperparameter JSON), ``hparams``,
  ``seed, status, step`` and the final ``train_loss, val_acc, test_acc, seconds`` from the run's summary;
- ``metrics``: the long table ``run_id, step, name, value`` of every evaluation point.

Divergence conventions (:data:`CONVENTIONS`): under ``"penalized"`` (the default) a diverged run counts with infinite
training loss and chance-level accuracy, so an optimizer that diverges on half its grid looks as sensitive as it is;
under ``"excluded"`` diverged runs contribute nothing (the numbers of ``sweep aggregate``). Failed and unfinished runs
never contribute a value under either convention; they are counted. Quantiles are numpy's default linear
interpolation, computed so that an infinite value is never multiplied by a zero weight.

This module draws nothing and writes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lsbench.report.summary import METRICS, canonical_hparams
from lsbench.runs import NO_RESULT

if TYPE_CHECKING:
    from lsbench.store import Store

__all__ = [
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "METRICS",
    "QUARTILES",
    "ReportData",
    "best_curves",
    "best_points",
    "box_stats",
    "chance_level",
    "cost",
    "load",
    "performance_profiles",
    "point_means",
    "quantile",
    "sensitivity",
]

CONVENTIONS = ("penalized", "excluded")
DEFAULT_CONVENTION = "penalized"
SUMMARY_VALUES = (*METRICS, "seconds")
QUARTILES = ("min", "p25", "median", "p75", "max")
# Classes of each dataset, for chance-level accuracy; a problem is named <dataset>_<model>.
_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "mnist": 10, "fmnist": 10, "digits": 10, "imagenet": 1000}


@dataclass(frozen=True)
class ReportData:
    """The two tables every figure is computed from."""

    runs: pd.DataFrame
    metrics: pd.DataFrame


def load(store: Store, sweep: str) -> ReportData:
    """A sweep's runs and all their metric rows (two queries)."""
    rows = store.sweep_runs(sweep)
    runs = pd.DataFrame(
        {
            "run_id": [r.run_id for r in rows],
            "problem": [r.problem for r in rows],
            "optimizer": [r.optimizer for r in rows],
            "point": [canonical_hparams(r.hparams) for r in rows],
            "hparams": [r.hparams for r in rows],
            "seed": [r.seed for r in rows],
            "status": [r.status for r in rows],
            "step": [r.step for r in rows],
            **{name: [r.summary.get(name, math.nan) for r in rows] for name in SUMMARY_VALUES},
        }
    )
    metrics = pd.DataFrame(store.sweep_metrics(sweep), columns=["run_id", "step", "name", "value"])
    return ReportData(runs, metrics)


def chance_level(problem: str, chance: Mapping[str, float] | None = None) -> float:
    """Accuracy of guessing: ``chance[problem]`` if given, else 1 / classes of the problem's dataset (0 if unknown)."""
    if chance and problem in chance:
        return float(chance[problem])
    classes = _CLASSES.get(problem.split("_", 1)[0])
    return 1.0 / classes if classes else 0.0


def quantile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) quantile of finite or infinite ``values``; NaN for none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    fraction = position - low
    if fraction == 0.0:
        return float(ordered[low])
    a, b = ordered[low], ordered[low + 1]
    if math.isinf(a) or math.isinf(b):
        return float(b if math.isinf(b) else a)
    return float(a + (b - a) * fraction)


def _check(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r} (valid: {', '.join(CONVENTIONS)})")


def _valued(runs: pd.DataFrame, convention: str, chance: Mapping[str, float] | None) -> pd.DataFrame:
    """The runs that contribute values under ``convention``, with the diverged ones' values replaced if penalized."""
    _check(convention)
    keep = runs["status"].eq("completed")
    if convention == "penalized":
        keep |= runs["status"].eq("diverged")
    out = runs.loc[keep].copy()
    diverged = out["status"].eq("diverged")
    if diverged.any():
        out.loc[diverged, "train_loss"] = math.inf
        chances = out.loc[diverged, "problem"].map(lambda p: chance_level(p, chance))
        out.loc[diverged, "val_acc"] = chances
        out.loc[diverged, "test_acc"] = chances
    # A completed run's non-finite value is missing, as in the Table A.1 aggregation.
    for name in METRICS:
        bad = ~diverged & ~np.isfinite(out[name].astype(float))
        out.loc[bad, name] = math.nan
    return out


def point_means(
    runs: pd.DataFrame, convention: str = DEFAULT_CONVENTION, chance: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """One row per (problem, optimizer, point): the metrics averaged over the point's contributing seeds.

    Columns: ``problem, optimizer, point, seeds`` (contributing runs), ``diverged`` (diverged runs of the point,
    counted under both conventions) and the three metrics. A point none of whose runs contributes is absent.
    """
    valued = _valued(runs, convention, chance)
    keys = ["problem", "optimizer", "point"]
    diverged = runs.loc[runs["status"].eq("diverged")].groupby(keys).size().rename("diverged")
    if valued.empty:
        return pd.DataFrame(columns=[*keys, "seeds", "diverged", *METRICS])
    grouped = valued.groupby(keys, sort=True)
    means = grouped[list(METRICS)].mean()
    means.insert(0, "seeds", grouped.size())
    means = means.join(diverged).fillna({"diverged": 0})
    means["diverged"] = means["diverged"].astype(int)
    return means.reset_index()[[*keys, "seeds", "diverged", *METRICS]]


def box_stats(
    runs: pd.DataFrame, convention: str = DEFAULT_CONVENTION, chance: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Box-plot statistics per (problem, optimizer, metric) over the grid points (each averaged over its seeds).

    Columns: ``problem, optimizer, metric, convention, points`` (with a value), ``diverged_points`` (points with at
    least one diverged run), ``runs, diverged_runs, failed_runs, unfinished_runs`` (of the pair) and ``min, p25,
    median, p75, max``.
    """
    points = point_means(runs, convention, chance)
    out = []
    for (problem, optimizer), pair in runs.groupby(["problem", "optimizer"], sort=True):
        status = pair["status"]
        counts = {
            "runs": len(pair),
            "diverged_runs": int(status.eq("diverged").sum()),
            "failed_runs": int(status.isin(NO_RESULT).sum()),
            "unfinished_runs": int((~status.isin({"completed", "diverged", *NO_RESULT})).sum()),
            "diverged_points": int(pair.loc[status.eq("diverged"), "point"].nunique()),
        }
        mine = points[(points["problem"] == problem) & (points["optimizer"] == optimizer)]
        for metric in METRICS:
            values = [v for v in mine[metric].astype(float) if not math.isnan(v)]
            out.append(
                {
                    "problem": problem,
                    "optimizer": optimizer,
                    "metric": metric,
                    "convention": convention,
                    "points": len(values),
                    **counts,
                    "min": min(values) if values else math.nan,
                    "p25": quantile(values, 0.25),
                    "median": quantile(values, 0.5),
                    "p75": quantile(values, 0.75),
                    "max": max(values) if values else math.nan,
                }
            )
    return pd.DataFrame(out)


def best_points(
    runs: pd.DataFrame, convention: str = DEFAULT_CONVENTION, chance: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Per (problem, optimizer) the point with the highest mean validation accuracy (ties: smallest canonical JSON,
    as in the Table A.1 aggregation); on a problem without accuracies (regression, e.g. matrix factorization) the
    point with the lowest mean training loss. Columns: ``problem, optimizer, point, seeds, diverged`` and the
    metrics."""
    points = point_means(runs, convention, chance)
    regression = ~points.groupby("problem")["val_acc"].transform(lambda values: values.notna().any()).astype(bool)
    points = points[points["val_acc"].notna() | (regression & points["train_loss"].notna())]
    if points.empty:
        return points
    score = points["val_acc"].where(~regression[points.index], -points["train_loss"])
    ordered = points.assign(_score=score).sort_values(
        ["problem", "optimizer", "_score", "point"], ascending=[True, True, False, True]
    )
    return ordered.groupby(["problem", "optimizer"], sort=True).head(1).drop(columns="_score").reset_index(drop=True)


def best_curves(
    data: ReportData,
    names: Sequence[str] = ("train_loss", "val_acc", "test_acc"),
    convention: str = DEFAULT_CONVENTION,
    chance: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Curves of the best configurations: per (problem, optimizer, metric, step) the ``median``, ``min`` and ``max``
    over the seeds of the best point that recorded the step, and their number (``seeds``). Every run of the best
    point with metric rows contributes (a diverged run's curve ends where it diverged)."""
    best = best_points(data.runs, convention, chance)
    columns = ["problem", "optimizer", "point", "metric", "step", "seeds", "median", "min", "max"]
    if best.empty or data.metrics.empty:
        return pd.DataFrame(columns=columns)
    chosen = data.runs.merge(best[["problem", "optimizer", "point"]], on=["problem", "optimizer", "point"])
    rows = data.metrics[data.metrics["name"].isin(names)].merge(
        chosen[["run_id", "problem", "optimizer", "point"]], on="run_id"
    )
    rows = rows[np.isfinite(rows["value"].astype(float))]
    grouped = rows.groupby(["problem", "optimizer", "point", "name", "step"], sort=True)["value"]
    out = pd.DataFrame(
        {"seeds": grouped.size(), "median": grouped.median(), "min": grouped.min(), "max": grouped.max()}
    )
    return out.reset_index().rename(columns={"name": "metric"})[columns]


def cost(runs: pd.DataFrame, baseline: str = "sgd") -> pd.DataFrame:
    """Per (problem, optimizer): runs with a recorded time, mean seconds per step (``seconds / step`` of each run,
    averaged), GPU-hours (sum of seconds / 3600), and both relative to ``baseline`` on the same problem
    (``relative``: seconds per step, ``gpu_hours_relative``; NaN without it). Runs without a finite positive time or
    step are left out."""
    timed = runs[np.isfinite(runs["seconds"].astype(float)) & (runs["step"].fillna(0) > 0)].copy()
    timed["per_step"] = timed["seconds"].astype(float) / timed["step"].astype(float)
    grouped = timed.groupby(["problem", "optimizer"], sort=True)
    out = pd.DataFrame(
        {
            "runs": grouped.size(),
            "seconds_per_step": grouped["per_step"].mean(),
            "gpu_hours": grouped["seconds"].sum() / 3600.0,
        }
    ).reset_index()
    base = out[out["optimizer"] == baseline].set_index("problem")
    out["relative"] = out["seconds_per_step"] / out["problem"].map(base["seconds_per_step"])
    out["gpu_hours_relative"] = out["gpu_hours"] / out["problem"].map(base["gpu_hours"])
    return out


def _same(a: object, b: object) -> bool:
    """Equal hyperparameter values as their canonical JSON says (``1`` and ``1.0`` alike, lists by value)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        isinstance(a, int | float) and isinstance(b, int | float) and float(a) == float(b)
    )


def sensitivity(
    runs: pd.DataFrame,
    axes: Mapping[str, tuple[Mapping[str, object], Sequence[str]]],
    convention: str = DEFAULT_CONVENTION,
    chance: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One-at-a-time sensitivity of the sweeps built with ``vary:``.

    ``axes`` maps an optimizer to its base point (its hyperparameters) and the hyperparameters varied one at a time
    around it. Per (problem, optimizer, varied hyperparameter) each point equal to the base but for that
    hyperparameter gives one row at its value, and the base point one row at the base value (``base`` true) in every
    varied hyperparameter's panel; points that differ from the base elsewhere are left out. Values are the point's
    metrics averaged over its contributing seeds under ``convention`` (:func:`point_means`).

    Columns: ``problem, optimizer, hparam, value, base, point`` (canonical JSON), ``convention, seeds, diverged``
    and the metrics, sorted by value within each panel.
    """
    columns = ["problem", "optimizer", "hparam", "value", "base", "point", "convention", "seeds", "diverged", *METRICS]
    points = point_means(runs, convention, chance)
    hparams = dict(zip(runs["point"], runs["hparams"], strict=True))
    rows = []
    for row in points.itertuples(index=False):
        if row.optimizer not in axes:
            continue
        base, varied = axes[row.optimizer]
        point = hparams[row.point]
        differing = [k for k in {*base, *point} if k not in base or k not in point or not _same(base[k], point[k])]
        if len(differing) > 1 or (differing and differing[0] not in varied):
            continue
        values = {name: getattr(row, name) for name in METRICS}
        common = {"problem": row.problem, "optimizer": row.optimizer, "point": row.point, "convention": convention}
        counts = {"seeds": int(row.seeds), "diverged": int(row.diverged)}
        for name in differing or varied:
            rows.append({**common, "hparam": name, "value": point[name], "base": not differing, **counts, **values})
    out = pd.DataFrame(rows, columns=columns)
    if out.empty:
        return out
    out["_order"] = [float(v) if isinstance(v, int | float) else math.nan for v in out["value"]]
    out = out.sort_values(["problem", "optimizer", "hparam", "_order"], kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)


def performance_profiles(
    curves: pd.DataFrame, metric: str = "val_acc", fraction: float = 0.95, taus: Sequence[float] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dolan–Moré performance profiles over problems, from :func:`best_curves` output.

    On each problem the target is ``fraction`` × the best final median ``metric`` over the optimizers; an optimizer's
    cost is the first step at which its best configuration's median curve reaches the target (infinite if never).
    ``rho(tau)`` is the fraction of problems on which the cost is at most ``tau`` × the smallest cost on that problem.
    Returns ``(steps, profile)``: the per (problem, optimizer) target, steps and ratio; and per (optimizer, tau) rho.
    """
    part = curves[curves["metric"] == metric].sort_values(["problem", "optimizer", "step"])
    rows = []
    for problem, on_problem in part.groupby("problem", sort=True):
        finals = on_problem.groupby("optimizer")["median"].last()
        target = fraction * float(finals.max())
        reached = {}
        for optimizer, curve in on_problem.groupby("optimizer", sort=True):
            hit = curve.loc[curve["median"] >= target, "step"]
            reached[optimizer] = float(hit.iloc[0]) if len(hit) else math.inf
        fastest = min(reached.values())
        for optimizer, steps in reached.items():
            rows.append(
                {
                    "problem": problem,
                    "optimizer": optimizer,
                    "target": target,
                    "steps": steps,
                    "ratio": steps / fastest if math.isfinite(steps) else math.inf,
                }
            )
    steps = pd.DataFrame(rows, columns=["problem", "optimizer", "target", "steps", "ratio"])
    problems = steps["problem"].nunique()
    if taus is None:
        ratios = steps["ratio"].astype(float)  # float even when empty (no problem has the metric, e.g. regressions)
        finite = ratios[np.isfinite(ratios)]
        top = max(2.0, float(finite.max()) * 1.1) if len(finite) else 2.0
        taus = np.linspace(1.0, top, 50)
    profile = [
        {"optimizer": optimizer, "tau": float(tau), "rho": float((mine["ratio"] <= tau).sum()) / problems}
        for optimizer, mine in steps.groupby("optimizer", sort=True)
        for tau in taus
    ]
    return steps, pd.DataFrame(profile, columns=["optimizer", "tau", "rho"])


def hparams_label(point: str) -> str:
    """A short label of a canonical hyperparameter JSON."""
    return ", ".join(f"{k}={v}" for k, v in json.loads(point).items())
