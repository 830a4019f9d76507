"""The Chapter 5 figures of a sweep's linescan runs (and Figure 6.2 of Section 6.4.1), each as PNG, PDF and CSV.

For every linescan run with measured lines on disk (:mod:`lsbench.lines.arrays`), in the spirit of the thesis:

=============== ==============================================================================================
``_losses``     Figure 5.2: the full-batch and the direction-defining batch's loss along a few lines
``_shapes``     Figure 5.3: shape distances between lines (window [-0.2, 0.2]) and between consecutive lines
``_fits``       Figure 5.5: MAE of degree-1 and degree-2 fits, slope and curvature over training
``_strategies`` Figure 5.7: s_upd, s_opt − s_upd and the improvement of update-step strategies; s_opt ∝ ‖g_B‖
``_angle``      Figure 4.2: the angle between the line and the batch gradient after the step (90°: exact)
``_batches``    Figure 5.9 (runs that stored per-sample losses): SGD and PAL across batch sizes
``_labpal``     Figure 6.2: LABPAL's reused step against s_opt, next to FBPAL
=============== ==============================================================================================

Every figure is named ``lines_<run_id><suffix>`` and carries a caption naming the run (problem, optimizer,
hyperparameters, seed). :func:`line_findings` gives the headline numbers (how parabolic, how proportional, how much
each strategy improves); :func:`line_section` builds the report page's "Line analysis (Chapter 5)" section.

All numbers come from :mod:`lsbench.lines.analysis`; this module only picks lines, smooths and draws. It stays fast
on long runs: shape matrices use at most :data:`MAX_MATRIX_LINES` evenly spaced lines, the batch-size analysis at
most :data:`MAX_BATCH_LINES` (fewer when a line's per-sample losses are large); everything else uses every line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lsbench.lines import analysis as la
from lsbench.lines.arrays import ARRAYS_DIR, LineData, read_lines
from lsbench.report.figures import COLUMN_WIDTH_IN, PAGE_WIDTH_IN, Figure, save_figure, slug

if TYPE_CHECKING:
    from lsbench.runs import RunSpec

__all__ = [
    "MAX_BATCH_LINES",
    "MAX_MATRIX_LINES",
    "LineAnalysis",
    "LineRunReport",
    "LineSection",
    "analyse_lines",
    "draw_line_figures",
    "line_findings",
    "line_section",
    "report_lines",
    "run_label",
]

WINDOW = (-0.2, 0.2)
"""The window of the shape distances and the polynomial fits (the thesis' window for SGD)."""
MAX_MATRIX_LINES = 300
"""At most this many evenly spaced lines in a shape-distance matrix."""
MAX_BATCH_LINES = 100
"""At most this many evenly spaced lines in the batch-size analysis."""
_BATCH_VALUES = 250_000_000  # and at most about this many per-sample losses read for it
SMOOTHING = 25
"""The thesis' moving-average kernel (Figure 5.7); shorter runs get a kernel of a tenth of their lines."""
PAL_MU = 0.1
LABPAL_PERIOD_STEPS = 100
"""LABPAL reuses its estimate for 100 training steps (Section 6.4.1); in lines that is 100 / every."""
EARLY_LINES = 10
"""The thesis' first lines whose shapes differ strongly (Figure 5.3, left); the middle panel starts after them."""
_BATCH_FACTORS = (0.25, 0.5, 1, 2, 4, 8)

_COLOURS = {
    "optimal": "black",
    "own_step": "C0",
    "sgd_lr": "C1",
    "sgd_half_lr": "C2",
    "fitted_c": "C4",
    "pal": "C3",
    "fbpal": "C5",
    "labpal_sgd": "C6",
    "labpal_nsgd": "C9",
}


# -- the analysis of one run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineAnalysis:
    """Every number the figures of one run draw, computed once from its :class:`LineData`.

    ``strategies`` maps a strategy key (``optimal``, ``own_step``, ``sgd_lr``, ``sgd_half_lr``, ``fitted_c``,
    ``pal``, ``fbpal``, ``labpal_sgd``, ``labpal_nsgd``) to its :func:`lsbench.lines.analysis.strategy_metrics`;
    ``labels`` gives each key's legend label. ``sgd_lr`` and ``sgd_half_lr`` exist only for runs with an ``lr``.
    """

    data: LineData
    run: dict[str, Any]
    every: int
    lr: float | None
    mu: float
    period: int
    fits: pd.DataFrame
    s_opt: np.ndarray
    fit: la.Fit
    drift: pd.DataFrame
    strategies: dict[str, pd.DataFrame]
    labels: dict[str, str]

    @property
    def label(self) -> str:
        return run_label(self.data)


def _run_of(data: LineData) -> dict[str, Any]:
    run = data.attrs.get("run")
    return dict(run) if isinstance(run, Mapping) else {}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def run_label(data: LineData) -> str:
    """The run a line group belongs to, in words: problem, optimizer (hyperparameters), seed and run id."""
    run = _run_of(data)
    hparams = run.get("hparams") or {}
    settings = ", ".join(f"{key}={_number(value)}" for key, value in sorted(hparams.items()))
    parts = [str(run.get("problem", "?")), f"{run.get('optimizer', '?')}" + (f" ({settings})" if settings else "")]
    if "seed" in run:
        parts.append(f"seed {run['seed']}")
    parts.append(f"run {run.get('run_id', data.path.parent.name)}")
    return ", ".join(parts)


def _every(data: LineData, run: Mapping[str, Any]) -> int:
    """Training steps between measured lines: the run's setting, else read off the steps."""
    every = (run.get("linescan") or {}).get("every")
    if isinstance(every, int) and every >= 1:
        return every
    gaps = np.diff(data.step)
    return max(1, int(np.median(gaps))) if gaps.size else 1


def analyse_lines(data: LineData) -> LineAnalysis:
    """The analyses of :mod:`lsbench.lines.analysis` on one run's lines (every line; see the module docstring).

    Raises ValueError for lines the analyses cannot take (no line, a step-size grid without 0 or with no point on
    one side of it)."""
    if len(data) == 0:
        raise ValueError("no measured line")
    grid = data.step_sizes
    run = _run_of(data)
    every = _every(data, run)
    lr = (run.get("hparams") or {}).get("lr")
    lr = float(lr) if isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0 else None
    mu = min(PAL_MU, float(grid[-1]))
    period = max(1, round(LABPAL_PERIOD_STEPS / every))

    fits = la.polynomial_fits(grid, data.full_loss, _window(grid))
    fits.insert(0, "step", data.step)
    s_opt = la.optimal_steps(grid, data.full_loss)
    fit = la.proportionality(s_opt, data.grad_norm)
    drift = la.proportionality_drift(data.step, s_opt, data.grad_norm)

    optimizer = run.get("optimizer", "optimizer")
    steps: dict[str, tuple[str, np.ndarray]] = {
        "optimal": ("s_opt (optimal)", s_opt),
        "own_step": (f"{optimizer}: its own step", data.step_taken),
    }
    if lr is not None:
        steps["sgd_lr"] = (f"SGD λ={lr:g}", la.sgd_steps(data.batch_slope, lr))
        steps["sgd_half_lr"] = (f"SGD λ={lr / 2:g}", la.sgd_steps(data.batch_slope, lr / 2))
    if math.isfinite(fit.constant):
        steps["fitted_c"] = (f"c·‖g_B‖, c={fit.constant:.3g} (fitted)", fit.constant * data.grad_norm)
    steps["pal"] = (f"PAL μ={mu:g}", la.pal_steps(grid, data.batch_loss, data.batch_slope, mu))
    steps["fbpal"] = (f"FBPAL μ={mu:g}", la.fbpal_steps(grid, data.full_loss, mu))
    for mode in ("sgd", "nsgd"):
        chosen = la.labpal_steps(grid, data.full_loss, data.grad_norm, period=period, mode=mode, mu=mu)
        steps[f"labpal_{mode}"] = (f"LABPAL&{mode.upper()} (every {period} lines)", chosen)
    strategies = {key: la.strategy_metrics(grid, data.full_loss, s_upd) for key, (_, s_upd) in steps.items()}
    return LineAnalysis(
        data=data,
        run=run,
        every=every,
        lr=lr,
        mu=mu,
        period=period,
        fits=fits,
        s_opt=s_opt,
        fit=fit,
        drift=drift,
        strategies=strategies,
        labels={key: label for key, (label, _) in steps.items()},
    )


def _window(grid: np.ndarray) -> tuple[float, float]:
    """:data:`WINDOW`, widened to the grid's nearest points when it holds fewer than three (a coarse grid)."""
    inside = (grid >= WINDOW[0]) & (grid <= WINDOW[1])
    if inside.sum() >= 3:
        return WINDOW
    zero = int(np.flatnonzero(grid == 0.0)[0]) if (grid == 0.0).any() else len(grid) // 2
    low, high = max(0, zero - 1), min(len(grid) - 1, zero + 1)
    return (min(WINDOW[0], float(grid[low])), max(WINDOW[1], float(grid[high])))


def _median(values: Any) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else math.nan


def line_findings(data: LineData | LineAnalysis) -> dict[str, float]:
    """The headline numbers of one run's lines.

    Keys: ``lines``, ``first_step``, ``last_step``, ``every``; ``mae_deg2_median`` and ``mae_deg1_median`` (median
    over the lines of the fits' mean absolute error in the window) and ``mae_ratio`` (degree-2 ÷ degree-1: near 0
    when the lines are parabolic); ``proportionality_constant``, ``proportionality_r2`` (s_opt ≈ c·‖g_B‖);
    ``angle_median`` (degrees between the line and the batch gradient after the step, Figure 4.2); and
    ``improvement_<strategy>``, each strategy's median l(0) − l(s_upd) (see :class:`LineAnalysis`)."""
    analysis = data if isinstance(data, LineAnalysis) else analyse_lines(data)
    lines = analysis.data
    deg2, deg1 = _median(analysis.fits["mae_deg2"]), _median(analysis.fits["mae_deg1"])
    findings: dict[str, float] = {
        "lines": len(lines),
        "first_step": int(lines.step[0]),
        "last_step": int(lines.step[-1]),
        "every": analysis.every,
        "mae_deg2_median": deg2,
        "mae_deg1_median": deg1,
        "mae_ratio": deg2 / deg1 if deg1 > 0 else math.nan,
        "proportionality_constant": analysis.fit.constant,
        "proportionality_r2": analysis.fit.r2,
        "angle_median": _median(lines.angle),
    }
    for key, metrics in analysis.strategies.items():
        findings[f"improvement_{key}"] = _median(metrics["improvement"])
    return findings


_FINDING_LABELS = {
    "lines": "measured lines",
    "every": "a line every … training steps",
    "mae_deg2_median": "median MAE of the degree-2 fit (window [-0.2, 0.2])",
    "mae_deg1_median": "median MAE of the degree-1 fit",
    "mae_ratio": "degree-2 MAE ÷ degree-1 MAE",
    "proportionality_constant": "c of s_opt ≈ c·‖g_B‖",
    "proportionality_r2": "R² of s_opt ≈ c·‖g_B‖",
    "angle_median": "median angle between the line and the batch gradient after the step (degrees)",
}


def _findings_rows(findings: Mapping[str, float], labels: Mapping[str, str]) -> pd.DataFrame:
    rows = [("training steps", f"{findings['first_step']}–{findings['last_step']}")]
    for key, value in findings.items():
        if key in ("first_step", "last_step"):
            continue
        if key.startswith("improvement_"):
            label = f"median improvement l(0) − l(s_upd): {labels.get(key.removeprefix('improvement_'), key)}"
        else:
            label = _FINDING_LABELS.get(key, key)
        shown = str(int(value)) if key in ("lines", "every") else f"{value:.4g}"
        rows.append((label, shown))
    return pd.DataFrame(rows, columns=["quantity", "value"])


# -- drawing ----------------------------------------------------------------------------------------------------


def _spread(count: int, most: int) -> np.ndarray:
    """At most ``most`` evenly spaced indices of ``count`` lines, first and last included."""
    if count <= most:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, most).round().astype(int))


def _kernel(count: int) -> int:
    return max(1, min(SMOOTHING, count // 10))


def _smooth(values: np.ndarray, kernel: int) -> np.ndarray:
    """Centred moving average over ``kernel`` lines, skipping NaN (a window of only NaN stays NaN)."""
    return pd.Series(np.asarray(values, dtype=np.float64)).rolling(kernel, min_periods=1, center=True).mean().to_numpy()


def _robust_ylim(ax: plt.Axes, arrays: Iterable[np.ndarray]) -> None:
    """Limit the y axis to the 1st–99th percentile of the drawn values: one wild strategy does not flatten the rest."""
    values = np.concatenate([np.ravel(a) for a in arrays] or [np.empty(0)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = np.percentile(values, [1, 99])
    if high > low:
        pad = 0.08 * (high - low)
        ax.set_ylim(low - pad, high + pad)


def _logy(ax: plt.Axes, *arrays: np.ndarray) -> None:
    if any(np.any(np.asarray(a) > 0) for a in arrays):
        ax.set_yscale("log")


def _style(ax: plt.Axes, title: str, xlabel: str = "training step") -> None:
    """Title, x label and small ticks; call after the axis' scale is set (log scales have minor labels)."""
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(which="both", labelsize=6)
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)  # a nearly constant curve reads as its values


def _name(analysis: LineAnalysis, suffix: str) -> str:
    run_id = analysis.run.get("run_id") or analysis.data.path.parent.name
    return f"lines_{slug(str(run_id))}_{suffix}"


def _losses(analysis: LineAnalysis, out: Path) -> Figure:
    data = analysis.data
    count = len(data)
    chosen = list(dict.fromkeys(round(f * (count - 1)) for f in (0.0, 0.25, 0.5, 1.0)))
    fig, axes = plt.subplots(1, len(chosen), figsize=(PAGE_WIDTH_IN, 2.3), squeeze=False)
    rows = []
    for ax, line in zip(axes[0], chosen, strict=True):
        ax.plot(data.step_sizes, data.full_loss[line], color="firebrick", lw=1.0, label="full batch")
        ax.plot(data.step_sizes, data.batch_loss[line], color="forestgreen", lw=1.0, label="direction batch")
        ax.axvline(data.step_taken[line], color="black", lw=0.8, ls="--", label="step taken")
        if math.isfinite(analysis.s_opt[line]):
            ax.axvline(analysis.s_opt[line], color="firebrick", lw=0.8, ls=":", label="s_opt")
        _style(ax, f"line {line + 1} of {count} (step {int(data.step[line])})", "s (step size along d̂)")
        rows.append(
            pd.DataFrame(
                {
                    "line": line,
                    "step": int(data.step[line]),
                    "s": data.step_sizes,
                    "full_loss": data.full_loss[line],
                    "batch_loss": data.batch_loss[line],
                    "step_taken": data.step_taken[line],
                    "s_opt": analysis.s_opt[line],
                }
            )
        )
    axes[0][0].set_ylabel("loss", fontsize=7)
    axes[0][0].legend(fontsize=5, frameon=False)
    caption = (
        f"Figure 5.2 — losses along lines of {analysis.label}: the full-batch loss (red) and the direction-defining "
        f"batch's loss (green) along the first, 25 %, 50 % and last of {count} measured lines, against the step size "
        "s along the unit update direction; dashed: the optimizer's step, dotted: s_opt, the full-batch minimum."
    )
    return save_figure(
        fig, out, _name(analysis, "losses"), f"Losses along lines: {analysis.label}", caption, pd.concat(rows)
    )


def _upper(distances: np.ndarray, index: np.ndarray, steps: np.ndarray, kind: str) -> pd.DataFrame:
    a, b = np.triu_indices(len(index))
    return pd.DataFrame(
        {
            "kind": kind,
            "line_a": index[a],
            "step_a": steps[index[a]],
            "line_b": index[b],
            "step_b": steps[index[b]],
            "distance": distances[a, b],
        }
    )


def _shapes(analysis: LineAnalysis, out: Path) -> Figure:
    data = analysis.data
    grid, count, window = data.step_sizes, len(data), _window(data.step_sizes)
    panels = [("matrix", np.arange(count), "all lines")]
    if count > EARLY_LINES + 1:
        panels.append(("matrix_after_first_10", np.arange(EARLY_LINES, count), f"after the first {EARLY_LINES} lines"))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(PAGE_WIDTH_IN, 2.5), squeeze=False)
    tables = []
    shown = 0
    for ax, (kind, lines, what) in zip(axes[0], panels, strict=False):
        index = lines[_spread(len(lines), MAX_MATRIX_LINES)]
        shown = max(shown, len(index))
        distances = la.shape_distances(grid, data.full_loss[index], window)
        first, last = float(data.step[index[0]]), float(data.step[index[-1]])
        image = ax.imshow(distances, cmap="viridis", extent=(first, last, last, first), aspect="auto",
                          interpolation="nearest")  # fmt: skip
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        _style(ax, f"shape distance (MAE), {what}")
        ax.set_ylabel("training step", fontsize=7)
        tables.append(_upper(distances, index, data.step, kind))
    consecutive = la.consecutive_shape_distances(grid, data.full_loss, window)
    ax = axes[0][-1]
    ax.plot(data.step[1:], consecutive, lw=0.8, color="steelblue")
    _logy(ax, consecutive)
    _style(ax, "consecutive lines")
    tables.append(
        pd.DataFrame(
            {
                "kind": "consecutive",
                "line_a": np.arange(count - 1),
                "step_a": data.step[:-1],
                "line_b": np.arange(1, count),
                "step_b": data.step[1:],
                "distance": consecutive,
            }
        )
    )
    caption = (
        f"Figure 5.3 — shape distances of {analysis.label}: mean absolute difference of the full-batch loss between "
        f"pairs of lines in the window [{window[0]:g}, {window[1]:g}], each line shifted so its minimum there is 0; "
        f"matrices over {f'{shown} evenly spaced of {count}' if shown < count else f'all {count}'} lines (left: "
        f"from the first, middle: after the first {EARLY_LINES}), "
        "right: each line against the next. The thesis widens the window to [-0.5, 0.5] with momentum."
    )
    return save_figure(fig, out, _name(analysis, "shapes"), f"Shape of the lines: {analysis.label}", caption,
                 pd.concat(tables, ignore_index=True))  # fmt: skip


def _angle(analysis: LineAnalysis, out: Path) -> Figure:
    data = analysis.data
    fig, axis = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.3))
    axis.plot(data.step, data.angle, lw=0.5, color="C0", alpha=0.4, label="per line")
    axis.plot(data.step, _smooth(data.angle, _kernel(len(data))), lw=1.0, color="C0", label="moving average")
    axis.axhline(90, color="black", lw=0.6, ls="--")
    axis.legend(fontsize=6, frameon=False)
    _style(axis, "angle (degrees)")
    caption = (
        f"Figure 4.2 — how exact the steps of {analysis.label} are as line searches on their batch: the angle between "
        "the line direction and the direction-defining batch's gradient after the step; 90° is the minimum of the "
        "batch loss along the line, more a step short of it, less one beyond it."
    )
    numbers = pd.DataFrame({"step": data.step, "angle": data.angle})
    return save_figure(fig, out, _name(analysis, "angle"), f"Angles after the step: {analysis.label}", caption, numbers)


def _fits(analysis: LineAnalysis, out: Path) -> Figure:
    fits, window = analysis.fits, _window(analysis.data.step_sizes)
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH_IN, 2.3))
    axes[0].plot(fits["step"], fits["mae_deg1"], lw=0.8, color="C1", label="degree 1")
    axes[0].plot(fits["step"], fits["mae_deg2"], lw=0.8, color="C0", label="degree 2")
    _logy(axes[0], fits["mae_deg1"], fits["mae_deg2"])
    axes[0].legend(fontsize=6, frameon=False)
    _style(axes[0], "MAE of the polynomial fit")
    axes[1].plot(fits["step"], fits["slope"], lw=0.8, color="C2")
    _style(axes[1], "slope b of the parabola at 0")
    axes[2].plot(fits["step"], fits["curvature"], lw=0.8, color="C3")
    _style(axes[2], "curvature 2a of the parabola")
    caption = (
        f"Figure 5.5 — how parabolic the lines of {analysis.label} are: mean absolute error of least-squares "
        f"polynomials of degree 1 and 2 fitted to the full-batch loss in [{window[0]:g}, {window[1]:g}] (log scale), "
        f"and the fitted parabola's slope and curvature at s = 0, over {len(fits)} lines."
    )
    return save_figure(fig, out, _name(analysis, "fits"), f"Polynomial fits: {analysis.label}", caption, fits)


_METRIC_TITLES = {
    "s_upd": "update step s_upd",
    "distance": "s_opt − s_upd",
    "improvement": "improvement l(0) − l(s_upd)",
}


def _strategy_panels(analysis: LineAnalysis, axes: Iterable[plt.Axes], keys: list[str]) -> pd.DataFrame:
    """The three metrics of ``keys`` over training, smoothed; returns the long table drawn (raw and smoothed)."""
    data = analysis.data
    kernel = _kernel(len(data))
    smoothed = {key: {m: _smooth(analysis.strategies[key][m], kernel) for m in _METRIC_TITLES} for key in keys}
    for ax, metric in zip(axes, _METRIC_TITLES, strict=True):
        for key in keys:
            optimal = key == "optimal"
            ax.plot(data.step, smoothed[key][metric], lw=1.2 if optimal else 0.9, color=_COLOURS[key],
                    ls="--" if optimal else "-", label=analysis.labels[key])  # fmt: skip
        _robust_ylim(ax, (smoothed[key][metric] for key in keys))
        _style(ax, _METRIC_TITLES[metric])
    tables = []
    for key in keys:
        table = analysis.strategies[key].copy()
        for metric in _METRIC_TITLES:
            table[f"{metric}_smoothed"] = smoothed[key][metric]
        table.insert(0, "strategy", key)
        table.insert(1, "label", analysis.labels[key])
        table.insert(2, "line", np.arange(len(data)))
        table.insert(3, "step", data.step)
        table.insert(4, "grad_norm", data.grad_norm)
        table.insert(5, "s_opt", analysis.s_opt)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _strategies(analysis: LineAnalysis, out: Path) -> Figure:
    data, fit = analysis.data, analysis.fit
    keys = list(analysis.strategies)
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH_IN, 5.0))
    numbers = _strategy_panels(analysis, [axes[0][0], axes[0][1], axes[1][0]], keys)
    axes[0][0].legend(fontsize=5, frameon=False)
    ax = axes[1][1]
    points = ax.scatter(data.grad_norm, analysis.s_opt, c=data.step, s=3, cmap="viridis", rasterized=True)
    fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    norms = data.grad_norm[np.isfinite(data.grad_norm)]
    if norms.size and math.isfinite(fit.constant):
        x = np.array([0.0, float(norms.max())])
        ax.plot(x, fit.constant * x, color="firebrick", lw=1.0, label=f"c={fit.constant:.3g}, R²={fit.r2:.3f}")
        ax.legend(fontsize=6, frameon=False)
    _style(ax, "s_opt against ‖g_B‖ (colour: step)", "‖g_B‖")
    lr = f"λ = {analysis.lr:g} and {analysis.lr / 2:g}" if analysis.lr is not None else "no λ (the run has no lr)"
    caption = (
        f"Figure 5.7 — update-step strategies on the measured full-batch lines of {analysis.label}: the step s_upd, "
        f"its distance to the line's minimum s_opt and the improvement l(0) − l(s_upd), moving average over "
        f"{_kernel(len(data))} lines, for the run's own step, SGD with {lr}, the fitted c·‖g_B‖, PAL (μ = "
        f"{analysis.mu:g}) on the direction batch, FBPAL on the full batch and LABPAL (estimate on the full batch "
        f"reused for {analysis.period} lines = {analysis.period * analysis.every} steps). Lower right: s_opt against "
        f"the direction batch's gradient norm with the least-squares line through 0, c = {fit.constant:.4g}, "
        f"R² = {fit.r2:.3f} over {fit.count} lines; its drift over training is tabulated below."
    )
    return save_figure(
        fig, out, _name(analysis, "strategies"), f"Update-step strategies: {analysis.label}", caption, numbers
    )


def _labpal(analysis: LineAnalysis, out: Path) -> Figure:
    keys = [key for key in ("optimal", "fbpal", "labpal_sgd", "labpal_nsgd") if key in analysis.strategies]
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH_IN, 2.5))
    numbers = _strategy_panels(analysis, axes, keys)
    axes[0].legend(fontsize=5, frameon=False)
    caption = (
        f"Figure 6.2 — LABPAL on the ground-truth lines of {analysis.label}: its step, estimated with a parabola on "
        f"the full-batch loss once every {analysis.period} lines ({analysis.period * analysis.every} steps) and "
        "reused in between as a learning rate (LABPAL&SGD) or a step size (LABPAL&NSGD), against s_opt and FBPAL; "
        f"no update-step adaptation; moving average over {_kernel(len(analysis.data))} lines."
    )
    return save_figure(
        fig, out, _name(analysis, "labpal"), f"LABPAL on ground truth: {analysis.label}", caption, numbers
    )


class _Rows:
    """Lines ``index`` of a zarr array [L, …], read one at a time (as the batch-size analysis reads them)."""

    def __init__(self, array: Any, index: np.ndarray) -> None:
        self.array, self.index = array, index

    @property
    def ndim(self) -> int:
        return len(self.array.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.array.shape[1:])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, line: int) -> np.ndarray:
        return np.asarray(self.array[int(self.index[line])])


def _batch_sizes(batch: int, pool: int) -> list[int]:
    """B/4 … 8B, those the measured samples allow (at most B + N)."""
    sizes = {max(1, round(factor * batch)) for factor in _BATCH_FACTORS}
    return sorted(size for size in sizes if size <= batch + pool)


def _batches(analysis: LineAnalysis, out: Path) -> Figure | None:
    data = analysis.data
    if data.per_sample is None or data.batch_per_sample is None:
        return None
    steps_count, pool = data.per_sample.shape[1], data.per_sample.shape[2]
    batch = data.batch_per_sample.shape[2]
    if pool == 0 or batch == 0:
        return None
    most = max(2, min(MAX_BATCH_LINES, _BATCH_VALUES // max(1, steps_count * (pool + batch))))
    index = _spread(len(data), most)
    sizes = _batch_sizes(batch, pool)
    lr = analysis.lr if analysis.lr is not None else (analysis.fit.constant if math.isfinite(analysis.fit.constant)
                                                      else 0.1)  # fmt: skip
    frame = la.batch_size_analysis(
        data.step_sizes, _Rows(data.per_sample, index), _Rows(data.batch_per_sample, index), sizes, lr=lr,
        mu=analysis.mu, seed=int(analysis.run.get("seed", 0)),
    )  # fmt: skip
    frame.insert(1, "step", data.step[index][frame["line"].to_numpy()])
    frame["line"] = index[frame["line"].to_numpy()]
    ratios = la.slope_ratios(frame).rename(columns={"from": "batch_size", "to": "next_batch_size"})
    frame = frame.merge(ratios, on=["line", "batch_size"], how="left")

    kernel = _kernel(len(index))
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH_IN, 4.6))
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(sizes)))
    for size, colour in zip(sizes, colours, strict=True):
        mine = frame[frame["batch_size"] == size]
        label = f"b={size}" + (" (B)" if size == batch else "")
        for ax, column in ((axes[0][0], "sgd_improvement"), (axes[0][1], "pal_improvement")):
            ax.plot(mine["step"], _smooth(mine[column], kernel), color=colour, lw=0.9, label=label)
        axes[1][0].plot(mine["step"], _smooth(np.abs(mine["slope"]), kernel), color=colour, lw=0.9, label=label)
        paired = mine[mine["next_batch_size"].notna()]
        if len(paired):
            expected = float(paired["expected"].iloc[0])
            axes[1][1].plot(paired["step"], _smooth(paired["ratio"], kernel), color=colour, lw=0.9,
                            label=f"{size}→{int(paired['next_batch_size'].iloc[0])} (e.r. {expected:g})")  # fmt: skip
            axes[1][1].axhline(expected, color=colour, lw=0.6, ls=":")
    _style(axes[0][0], f"SGD λ={lr:.3g}: improvement")
    _style(axes[0][1], f"PAL μ={analysis.mu:g}: improvement")
    _logy(axes[1][0], np.abs(frame["slope"]))
    _style(axes[1][0], "|slope| of the batch loss at 0")
    _style(axes[1][1], "|slope| ratio to the next batch size")
    axes[0][0].legend(fontsize=5, frameon=False)
    axes[1][1].legend(fontsize=5, frameon=False)
    caption = (
        f"Figure 5.9 — batch sizes on the lines of {analysis.label}, from the stored per-sample losses of "
        f"{len(index)} evenly spaced of {len(data)} lines (the trajectory held fixed): the improvement of SGD "
        f"(λ = {lr:.3g}) and PAL for batch sizes {', '.join(map(str, sizes))} (B = {batch}; larger batches add "
        "random measured samples, smaller ones keep the direction batch's steepest samples), the |slope| of each "
        "batch's loss at 0 and by which factor it shrinks to the next batch size (dotted: the expected ratio, e.r.); "
        f"moving average over {kernel} lines."
    )
    return save_figure(fig, out, _name(analysis, "batches"), f"Batch sizes: {analysis.label}", caption, frame)


def draw_line_figures(data: LineData | LineAnalysis, out: Path) -> list[Figure]:
    """Draw the figures of one run's lines into ``out`` (created): Figures 5.2, 5.3, 5.5, 5.7, 4.2, 5.9 (only with
    per-sample losses) and 6.2, in that order (see the module docstring)."""
    analysis = data if isinstance(data, LineAnalysis) else analyse_lines(data)
    out.mkdir(parents=True, exist_ok=True)
    figures = [_losses(analysis, out), _shapes(analysis, out), _fits(analysis, out), _strategies(analysis, out)]
    figures.append(_angle(analysis, out))
    batches = _batches(analysis, out)
    if batches is not None:
        figures.append(batches)
    figures.append(_labpal(analysis, out))
    return figures


# -- a sweep's runs and the page section ------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRunReport:
    """One analysed run: its figures, headline numbers and the proportionality drift table (also as CSV)."""

    run_id: str
    label: str
    status: str
    findings: dict[str, float]
    labels: dict[str, str]
    drift: pd.DataFrame
    drift_csv: Path
    figures: list[Figure]


def report_lines(data: LineData, out: Path, *, run_id: str | None = None, status: str = "") -> LineRunReport:
    """Analyse one run's lines once and write its figures and drift table into ``out``."""
    analysis = analyse_lines(data)
    figures = draw_line_figures(analysis, out)
    run_id = run_id or str(analysis.run.get("run_id") or data.path.parent.name)
    drift_csv = out / f"{_name(analysis, 'drift')}.csv"
    analysis.drift.to_csv(drift_csv, index=False)
    return LineRunReport(
        run_id=run_id,
        label=analysis.label,
        status=status,
        findings=line_findings(analysis),
        labels=analysis.labels,
        drift=analysis.drift,
        drift_csv=drift_csv,
        figures=figures,
    )


@dataclass(frozen=True)
class LineSection:
    """The line analysis of a sweep's linescan runs: the analysed runs and those skipped, with the reason."""

    runs: list[LineRunReport]
    skipped: list[tuple[str, str]]
    findings_csv: Path | None

    @property
    def figures(self) -> list[Figure]:
        return [figure for run in self.runs for figure in run.figures]

    def findings(self) -> pd.DataFrame:
        """One row per analysed run: ``run_id``, ``run`` (its label), ``status`` and :func:`line_findings`."""
        rows = [{"run_id": r.run_id, "run": r.label, "status": r.status, **r.findings} for r in self.runs]
        return pd.DataFrame(rows)

    def html(self) -> str:
        """The page's "Line analysis (Chapter 5)" section (everything escaped, no script)."""
        from lsbench.report.page import figure_html

        total = len(self.runs) + len(self.skipped)
        parts = [
            '<h2 id="line-analysis">Line analysis (Chapter 5)</h2>',
            f"<p>{total} linescan run{'s' if total != 1 else ''}; {len(self.runs)} with measured lines analysed "
            "below (full-batch loss along the update direction of every measured step, Sections 5.3–5.6 and "
            "6.4.1 of the thesis).</p>",
        ]
        if self.skipped:
            items = "".join(f"<li>{html.escape(label)}: {html.escape(why)}</li>" for label, why in self.skipped)
            runs = f"{len(self.skipped)} linescan run{'s' if len(self.skipped) != 1 else ''}"
            parts.append(f'<p class="partial">Skipped {runs}:</p><ul>{items}</ul>')
        if self.findings_csv is not None:
            name = html.escape(self.findings_csv.name)
            parts.append(f'<p>Headline numbers of every analysed run: <a href="{name}">{name}</a>.</p>')
        for run in self.runs:
            status = f" ({html.escape(run.status)})" if run.status and run.status != "completed" else ""
            parts.append(f"<h3>{html.escape(run.label)}{status}</h3>")
            parts.append(_findings_rows(run.findings, run.labels).to_html(index=False, border=0, escape=True))
            for figure in run.figures:
                parts.append(figure_html(figure))
                if figure.name.endswith("_strategies"):
                    drift = html.escape(run.drift_csv.name)
                    parts.append(
                        "<p>Drift of s_opt ≈ c·‖g_B‖ over training: one fit per tenth of the lines "
                        f'(<a href="{drift}">CSV</a>).</p>'
                    )
                    parts.append(run.drift.to_html(index=False, border=0, escape=True, float_format="{:.4g}".format))
        return "\n".join(parts)


def _lines_path(row: RunSpec, run_dir: Path) -> Path:
    """Where a run's lines lie: the store row's path when it holds them, else the run directory's group."""
    arrays = getattr(row, "arrays", None)
    if arrays and Path(arrays).exists():
        return Path(arrays)
    return run_dir / ARRAYS_DIR


def line_section(runs: Iterable[tuple[RunSpec, Path]], out: Path) -> LineSection | None:
    """Analyse every linescan run of ``runs`` (store rows, or plan entries, with their run directories) into
    ``out``: None when there is none; runs without lines on disk, with too few lines or with lines the analyses
    cannot take are skipped with the reason. Writes ``lines_findings.csv`` (one row per analysed run)."""
    reports: list[LineRunReport] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    linescans = [(row, run_dir) for row, run_dir in runs if row.kind == "linescan"]
    if not linescans:
        return None
    for row, run_dir in linescans:
        if row.run_id in seen:
            continue
        seen.add(row.run_id)
        status = str(getattr(row, "status", ""))
        name = f"{row.problem}, {row.optimizer}, seed {row.seed}, run {row.run_id}" + (f" ({status})" if status else "")
        path = _lines_path(row, run_dir)
        try:
            data = read_lines(path)
        except (FileNotFoundError, OSError, ValueError, KeyError):
            skipped.append((name, "no measured lines on disk"))
            continue
        if len(data) < 2:
            skipped.append((name, f"{len(data)} measured line{'s' if len(data) != 1 else ''}, too few to analyse"))
            continue
        try:
            reports.append(report_lines(data, out, run_id=row.run_id, status=status))
        except ValueError as error:
            skipped.append((name, f"lines not analysable: {error}"))
    if not reports:
        return LineSection(reports, skipped, None)
    findings_csv = out / "lines_findings.csv"
    LineSection(reports, skipped, None).findings().to_csv(findings_csv, index=False)
    return LineSection(reports, skipped, findings_csv)
