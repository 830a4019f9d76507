"""The analyses of Chapter 5 (and Section 6.4.1) of the thesis over measured lines: plain numpy, no torch.

A measurement stores, for each measured training step t, the full-batch loss l_t(s) = L(θ_t + s·d̂) on a grid of step
sizes s, where d̂ is the unit direction of the update the optimizer took (−g_B/‖g_B‖ for SGD, −m/‖m‖ with momentum).
The functions here turn those arrays into the quantities the thesis plots: how parabolic the lines are (Figure 5.5),
how alike their shapes are (Figure 5.3), where their minima lie and how that relates to the gradient norm
(Figure 5.7), where update-step strategies land on them (Figures 5.7 and 6.2), and how the batch size changes the
steps (Figure 5.9).

Conventions shared by every function:

- ``step_sizes`` is the grid: 1-D, strictly ascending, containing 0.0 exactly with a grid point on either side.
  Positive s points along the optimizer's own update, so a descent step is s > 0.
- ``lines`` arrays (``full``, ``batch``, ``estimate``) are [L, S]: one row per measured line, in measurement order,
  one column per grid point. Inputs of any float dtype (float32, float16) are computed on in float64.
- A line is judged only on the values a function reads (the window, the whole line, or the few points around 0 and
  the probe). If any of them is NaN or ±inf, that line's outputs are NaN; the other lines are unaffected and no
  warning is raised. Per-line scalars that are not finite (a slope, a gradient norm, a step) likewise give NaN.
- Windows are inclusive, with 1e-9 of slack so grid points that are multiples of the resolution are not lost to
  rounding at the window's edges.
- A loss between grid points is linearly interpolated; outside the grid it is NaN (nothing is extrapolated).
- The derivative of a line at 0 is the three-point derivative over 0 and its two grid neighbours: the central
  difference (l(h) − l(−h))/(2h) on a symmetric grid, and exact for a parabola on any grid.
- Outputs keep the input order of lines; where a table has a ``line`` column, it is the row index into the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "Fit",
    "batch_size_analysis",
    "consecutive_shape_distances",
    "fbpal_steps",
    "labpal_steps",
    "minibatch_estimate",
    "optimal_steps",
    "pal_steps",
    "polynomial_fits",
    "proportionality",
    "proportionality_drift",
    "sgd_steps",
    "shape_distances",
    "slope_ratios",
    "strategy_metrics",
]

_WINDOW_SLACK = 1e-9


def _grid(step_sizes: np.ndarray) -> np.ndarray:
    """The step sizes as float64, checked: every derivative at 0 and every interpolation relies on these properties."""
    grid = np.asarray(step_sizes, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 3:
        raise ValueError(f"step_sizes must be 1-D with at least 3 points, got shape {grid.shape}")
    if not (np.all(np.isfinite(grid)) and np.all(np.diff(grid) > 0)):
        raise ValueError("step_sizes must be finite and strictly ascending")
    zero = _zero_index(grid)
    if zero == 0 or zero == grid.size - 1:
        raise ValueError("step_sizes must have a grid point on both sides of 0.0")
    return grid


def _zero_index(grid: np.ndarray) -> int:
    """The column of s = 0, the point every line starts from (the parameters θ_t themselves)."""
    matches = np.flatnonzero(grid == 0.0)
    if matches.size != 1:
        raise ValueError("step_sizes must contain 0.0 exactly once")
    return int(matches[0])


def _lines(grid: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The lines as a float64 [L, S] array matching the grid."""
    values = np.asarray(lines, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != grid.size:
        raise ValueError(f"lines must have shape [L, {grid.size}], got {values.shape}")
    return values


def _per_line(values: np.ndarray, count: int, name: str) -> np.ndarray:
    """A per-line scalar array as float64 [L]."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (count,):
        raise ValueError(f"{name} must have shape [{count}], got {array.shape}")
    return array


def _window_mask(grid: np.ndarray, window: tuple[float, float], minimum_points: int = 1) -> np.ndarray:
    """Which grid points lie in the inclusive window."""
    low, high = window
    inside = (grid >= low - _WINDOW_SLACK) & (grid <= high + _WINDOW_SLACK)
    if inside.sum() < minimum_points:
        raise ValueError(f"window {window} holds {inside.sum()} grid points, needs at least {minimum_points}")
    return inside


def _slope_at_zero(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The three-point derivative at s = 0 along the last axis of ``values`` (see the module's conventions)."""
    zero = _zero_index(grid)
    left, right = -grid[zero - 1], grid[zero + 1]
    before, at, after = values[..., zero - 1], values[..., zero], values[..., zero + 1]
    with np.errstate(invalid="ignore", over="ignore"):
        return (left**2 * after - right**2 * before + (right**2 - left**2) * at) / (left * right * (left + right))


def _interpolate(grid: np.ndarray, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Each line's loss at its own position(s): ``positions`` is [L] or [L, K]; NaN off the grid or not finite.

    Only the two bracketing grid values are read, and a position on a grid point returns that point's value exactly.
    """
    positions = np.asarray(positions, dtype=np.float64)
    flat = positions if positions.ndim == 2 else positions[:, None]
    on_grid = np.isfinite(flat) & (flat >= grid[0]) & (flat <= grid[-1])
    left = np.clip(np.searchsorted(grid, np.where(on_grid, flat, grid[0]), side="right") - 1, 0, grid.size - 2)
    fraction = (np.where(on_grid, flat, grid[0]) - grid[left]) / (grid[left + 1] - grid[left])
    below = np.take_along_axis(values, left, axis=1)
    above = np.take_along_axis(values, left + 1, axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        mixed = below + fraction * (above - below)
    result = np.where(fraction == 0, below, np.where(fraction == 1, above, mixed))
    return np.where(on_grid, result, np.nan).reshape(positions.shape)


def _improvement(grid: np.ndarray, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """l(0) − l(s) per line (and per column of ``positions`` when it is [L, K]): how much a step lowers the loss."""
    at_zero = values[:, _zero_index(grid)].reshape((-1,) + (1,) * (np.ndim(positions) - 1))
    with np.errstate(invalid="ignore"):
        return at_zero - _interpolate(grid, values, positions)


def _probe_curvature(grid: np.ndarray, values: np.ndarray, slope: np.ndarray, mu: float) -> np.ndarray:
    """PAL's a in l(s) ≈ a·s² + b·s + l(0), from l(0), the probe l(mu) and the slope b (Eq. 5.2)."""
    if not (0 < mu <= grid[-1]):
        raise ValueError(f"mu must be positive and on the grid (at most {grid[-1]}), got {mu}")
    at_zero = values[:, _zero_index(grid)]
    at_probe = _interpolate(grid, values, np.full(len(values), mu))
    with np.errstate(invalid="ignore", over="ignore"):
        return (at_probe - at_zero - slope * mu) / mu**2


def _pal_case_steps(curvature: np.ndarray, slope: np.ndarray, mu: float) -> np.ndarray:
    """PAL's case analysis with update-step adaptation 1 and no cap.

    a > 0, b < 0: the parabola's vertex −b/(2a); a <= 0, b < 0: stay at the probe mu; b >= 0: no step (0). Any
    non-finite a or b gives NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -slope / (2 * curvature)
    steps = np.where(slope >= 0, 0.0, np.where(curvature > 0, vertex, mu))
    return np.where(np.isfinite(curvature) & np.isfinite(slope), steps, np.nan)


@dataclass(frozen=True)
class Fit:
    """A least-squares fit s_opt ≈ constant·‖g_B‖ through the origin (Eq. 5.4, Figure 5.7 lower right)."""

    constant: float
    """The proportionality constant c: the learning rate with which SGD would step to the minima."""
    r2: float
    """1 − SS_res/SS_tot with SS_tot about the mean of s_opt: how much of s_opt's variation c·‖g_B‖ explains."""
    count: int
    """How many lines had a finite s_opt and a finite ‖g_B‖."""


def polynomial_fits(
    step_sizes: np.ndarray,
    lines: np.ndarray,
    window: tuple[float, float] = (-0.2, 0.2),
    degrees: Sequence[int] = (1, 2),
) -> pd.DataFrame:
    """How well polynomials fit each line near 0, and the slope and curvature of the fitted parabola (Figure 5.5).

    The thesis' claim that full-batch losses along lines are locally parabolic rests on the degree-2 fit's mean
    absolute error being small (and much smaller than the degree-1 fit's), and its observation that the valley widens
    on the curvature of that parabola decreasing over training.

    Returns one row per line with ``mae_deg{d}`` for each degree (the mean absolute error of the least-squares fit on
    the window's points) and ``slope`` (b) and ``curvature`` (2a, the second derivative) of the degree-2 fit
    a·s² + b·s + c at s = 0. Lines with a non-finite value in the window get NaN throughout. All lines of one degree
    are fitted by a single least-squares solve with one right-hand side per line.
    """
    grid = _grid(step_sizes)
    values = _lines(grid, lines)
    fitted_degrees = sorted({*degrees, 2})
    if fitted_degrees[0] < 0:
        raise ValueError(f"degrees must be non-negative, got {degrees}")
    inside = _window_mask(grid, window, minimum_points=fitted_degrees[-1] + 1)
    positions = grid[inside]
    windowed = values[:, inside]
    usable = np.all(np.isfinite(windowed), axis=1)
    targets = windowed[usable].T

    errors: dict[int, np.ndarray] = {}
    quadratic = np.full((len(values), 3), np.nan)
    for degree in fitted_degrees:
        errors[degree] = np.full(len(values), np.nan)
        if not usable.any():
            continue
        design = np.vander(positions, degree + 1, increasing=True)
        coefficients = np.linalg.lstsq(design, targets, rcond=None)[0]
        errors[degree][usable] = np.mean(np.abs(design @ coefficients - targets), axis=0)
        if degree == 2:
            quadratic[usable] = coefficients.T

    table = {f"mae_deg{degree}": errors[degree] for degree in degrees}
    table["slope"] = quadratic[:, 1]
    table["curvature"] = 2 * quadratic[:, 2]
    return pd.DataFrame(table)


def _shifted_window(grid: np.ndarray, lines: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Each line on the window, shifted down so its minimum there is 0; NaN rows for lines not finite there."""
    windowed = _lines(grid, lines)[:, _window_mask(grid, window)]
    windowed = np.where(np.all(np.isfinite(windowed), axis=1, keepdims=True), windowed, np.nan)
    return windowed - windowed.min(axis=1, keepdims=True)


def shape_distances(
    step_sizes: np.ndarray,
    lines: np.ndarray,
    window: tuple[float, float] = (-0.2, 0.2),
    block_elements: int = 1 << 22,
) -> np.ndarray:
    """The [L, L] matrix of shape distances between all pairs of lines (Figure 5.3).

    The thesis shows that, after the first few steps, the full-batch loss keeps almost the same shape along all lines,
    which favours fixed step sizes. Only the shape matters, not the offset, so each line is shifted down until its
    minimum within the window is 0; the distance is then the mean absolute difference over the window's points.
    (The thesis uses the window [-0.2, 0.2] for SGD and [-0.5, 0.5] with momentum, to contain the minimum.)

    The matrix is symmetric with a zero diagonal; rows and columns of lines not finite in the window are NaN. It is
    computed in row blocks of at most about ``block_elements`` differences, so thousands of lines fit in memory.
    """
    grid = _grid(step_sizes)
    shifted = _shifted_window(grid, lines, window)
    count, width = shifted.shape
    distances = np.empty((count, count))
    rows_per_block = max(1, block_elements // max(1, count * width))
    for start in range(0, count, rows_per_block):
        stop = min(start + rows_per_block, count)
        block = np.mean(np.abs(shifted[start:stop, None, :] - shifted[None, start:, :]), axis=2)
        distances[start:stop, start:] = block
        distances[start:, start:stop] = block.T
    return distances


def consecutive_shape_distances(
    step_sizes: np.ndarray, lines: np.ndarray, window: tuple[float, float] = (-0.2, 0.2)
) -> np.ndarray:
    """The shape distance of each line to the next one, [L − 1] (Figure 5.3, right column).

    Consecutive lines are what an optimizer that reuses a step size relies on being alike. Same distance as
    :func:`shape_distances`, without building the matrix.
    """
    shifted = _shifted_window(_grid(step_sizes), lines, window)
    return np.mean(np.abs(shifted[1:] - shifted[:-1]), axis=1)


def optimal_steps(step_sizes: np.ndarray, full: np.ndarray) -> np.ndarray:
    """s_opt per line: the position of the minimum of the measured full-batch line (Section 5.5, Figure 5.7).

    s_opt is the locally optimal update step that every strategy is measured against. The grid argmin (first
    occurrence) is refined by the vertex of the parabola through the argmin and its two neighbours (at the grid's
    edge: its two inward neighbours) when that parabola is convex and its vertex lies on the grid, so s_opt is not
    quantised to the grid and an exact parabola gives its vertex; otherwise it is the grid argmin (a minimum at the
    edge may lie beyond the grid, and nothing is extrapolated). Lines with any non-finite value are NaN.
    """
    grid = _grid(step_sizes)
    values = _lines(grid, full)
    finite = np.all(np.isfinite(values), axis=1)
    argmin = np.argmin(np.where(finite[:, None], values, np.inf), axis=1)
    centre = np.clip(argmin, 1, grid.size - 2)[:, None]
    before, at, after = (np.take_along_axis(values, centre + offset, axis=1)[:, 0] for offset in (-1, 0, 1))
    x_before, x_at, x_after = grid[centre[:, 0] - 1], grid[centre[:, 0]], grid[centre[:, 0] + 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rise_before = (at - before) / (x_at - x_before)
        curvature = ((after - at) / (x_after - x_at) - rise_before) / (x_after - x_before)
        vertex = (x_before + x_at) / 2 - rise_before / (2 * curvature)
    refine = finite & (curvature > 0) & (vertex >= grid[0]) & (vertex <= grid[-1])
    return np.where(refine, vertex, np.where(finite, grid[argmin], np.nan))


def proportionality(s_opt: np.ndarray, grad_norm: np.ndarray) -> Fit:
    """How well s_opt ≈ c·‖g_B‖ holds (Eq. 5.4, Figure 5.7 lower right).

    The thesis explains why SGD with one constant learning rate performs almost exact line searches: the step to the
    full-batch minimum is nearly proportional to the norm of the direction-defining mini-batch gradient, so
    c is the learning rate that lands at the minima. Pairs where either value is not finite are skipped; with none
    left, constant and r2 are NaN. r2 is NaN when s_opt does not vary.
    """
    s_opt = np.asarray(s_opt, dtype=np.float64)
    grad_norm = _per_line(grad_norm, len(s_opt), "grad_norm")
    finite = np.isfinite(s_opt) & np.isfinite(grad_norm)
    target, norm = s_opt[finite], grad_norm[finite]
    count = int(finite.sum())
    if count == 0 or not np.any(norm):
        return Fit(constant=np.nan, r2=np.nan, count=count)
    constant = float(np.dot(norm, target) / np.dot(norm, norm))
    residual = np.sum((target - constant * norm) ** 2)
    total = np.sum((target - target.mean()) ** 2)
    r2 = float(1 - residual / total) if total > 0 else np.nan
    return Fit(constant=constant, r2=r2, count=count)


def proportionality_drift(
    steps: np.ndarray, s_opt: np.ndarray, grad_norm: np.ndarray, segments: int = 10
) -> pd.DataFrame:
    """:func:`proportionality` on consecutive segments of lines: how c and r2 drift over training (Figure 5.7).

    The thesis notes that the proportionality holds less towards the end of training; one fit per segment shows
    that, and how the locally optimal learning rate c changes. Lines are split in input order into ``segments``
    nearly equal parts (fewer when there are fewer lines). Columns: ``step`` (the median training step of the
    segment), ``constant``, ``r2``, ``count``.
    """
    if segments < 1:
        raise ValueError(f"segments must be positive, got {segments}")
    s_opt = np.asarray(s_opt, dtype=np.float64)
    steps = _per_line(steps, len(s_opt), "steps")
    grad_norm = _per_line(grad_norm, len(s_opt), "grad_norm")
    rows = []
    for part in np.array_split(np.arange(len(s_opt)), min(segments, len(s_opt))):
        fit = proportionality(s_opt[part], grad_norm[part])
        rows.append({"step": float(np.median(steps[part])), "constant": fit.constant, "r2": fit.r2, "count": fit.count})
    return pd.DataFrame(rows, columns=["step", "constant", "r2", "count"])


def sgd_steps(batch_slope: np.ndarray, lr: float) -> np.ndarray:
    """SGD's step along d̂: −lr·l'_B(0), which is lr·‖g_B‖ without momentum (Eq. 5.3, Figure 5.7).

    Eq. 5.3 reads SGD as a parabolic line search whose curvature is fixed at 1/lr.
    """
    return -lr * np.asarray(batch_slope, dtype=np.float64)


def pal_steps(step_sizes: np.ndarray, batch: np.ndarray, batch_slope: np.ndarray, mu: float = 0.1) -> np.ndarray:
    """PAL's step on the direction-defining batch line (Eq. 5.2, Figure 5.7 "PAL").

    Shows how an exact parabolic line search on the mini-batch loss fares on the full-batch loss. The parabola is
    l_B(0), the probe l_B(mu) and the measured slope b = ``batch_slope``; the step follows PAL's cases (vertex, mu
    when concave, 0 when b >= 0) with update-step adaptation 1 and no step-size cap.
    """
    grid = _grid(step_sizes)
    values = _lines(grid, batch)
    slope = _per_line(batch_slope, len(values), "batch_slope")
    return _pal_case_steps(_probe_curvature(grid, values, slope, mu), slope, mu)


def fbpal_steps(step_sizes: np.ndarray, full: np.ndarray, mu: float = 0.1) -> np.ndarray:
    """FBPAL: PAL's parabola on the full-batch line itself (Section 5.5, Figure 5.7).

    The thesis' check that a parabolic approximation of the full-batch loss lands almost at s_opt. The slope b is the
    three-point derivative of the full line at 0; the rest is as :func:`pal_steps`.
    """
    grid = _grid(step_sizes)
    values = _lines(grid, full)
    slope = _slope_at_zero(grid, values)
    return _pal_case_steps(_probe_curvature(grid, values, slope, mu), slope, mu)


def labpal_steps(
    step_sizes: np.ndarray,
    estimate: np.ndarray,
    grad_norm: np.ndarray,
    period: int = 100,
    mode: Literal["sgd", "nsgd"] = "sgd",
    mu: float = 0.1,
) -> np.ndarray:
    """LABPAL's idea on ground-truth lines: estimate a step once per ``period`` lines and reuse it (Section 6.4.1).

    Figure 6.2 shows that a step size estimated on the full-batch loss (or on the mean of a few mini-batches, see
    :func:`minibatch_estimate`) and reused for 100 steps lands near s_opt. At lines 0, period, 2·period, … the FBPAL
    parabola of ``estimate`` at that line gives s* = −b/(2a); when that fails (a <= 0, b >= 0 or not finite) the
    previous estimate is kept. Mode "sgd" turns s* into a learning rate lr = s*/‖g_B‖ of the measuring line and steps
    lr·grad_norm on every line until the next measurement; mode "nsgd" steps s* itself. No update-step adaptation is
    applied. Lines before the first successful estimate are NaN. ``period`` counts lines, not training steps.
    """
    if period < 1:
        raise ValueError(f"period must be positive, got {period}")
    if mode not in ("sgd", "nsgd"):
        raise ValueError(f"mode must be 'sgd' or 'nsgd', got {mode!r}")
    grid = _grid(step_sizes)
    values = _lines(grid, estimate)
    norms = _per_line(grad_norm, len(values), "grad_norm")
    measured = values[::period]
    slope = _slope_at_zero(grid, measured)
    curvature = _probe_curvature(grid, measured, slope, mu)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        estimated = -slope / (2 * curvature)
        if mode == "sgd":
            estimated = estimated / norms[::period]
    succeeded = (curvature > 0) & (slope < 0) & np.isfinite(estimated)
    latest = np.maximum.accumulate(np.where(succeeded, np.arange(len(measured)), -1))
    held = np.where(latest >= 0, estimated[np.maximum(latest, 0)], np.nan)
    per_line = held[np.arange(len(values)) // period]
    return per_line * norms if mode == "sgd" else per_line


def minibatch_estimate(per_sample: np.ndarray, n_samples: int, rng_seed: int) -> np.ndarray:
    """Each line's mean loss over a random subset of n_samples measured samples, [L, S] (Section 6.4.1).

    LABPAL estimates its step on the mean of n mini-batches of size B instead of the full batch; on ground truth that
    is the mean over n·B of the measured per-sample losses. Each line draws its own subset without replacement from
    one generator seeded with ``rng_seed``, line after line, so the result is reproducible. Works line by line, so
    ``per_sample`` may be a memory-mapped float16 array larger than memory.
    """
    if per_sample.ndim != 3:
        raise ValueError(f"per_sample must have shape [L, S, N], got {per_sample.shape}")
    available = per_sample.shape[2]
    if not 1 <= n_samples <= available:
        raise ValueError(f"n_samples must be in [1, {available}], got {n_samples}")
    generator = np.random.default_rng(rng_seed)
    estimate = np.empty(per_sample.shape[:2])
    for line in range(len(per_sample)):
        chosen = np.sort(generator.choice(available, size=n_samples, replace=False))
        estimate[line] = np.asarray(per_sample[line][:, chosen], dtype=np.float64).mean(axis=1)
    return estimate


def strategy_metrics(step_sizes: np.ndarray, full: np.ndarray, s_upd: np.ndarray) -> pd.DataFrame:
    """The three metrics of Figure 5.7 (and 6.2) for one strategy's steps.

    Columns: ``s_upd`` (the step), ``distance`` = s_opt − s_upd (how far from the locally optimal step, s_opt from
    :func:`optimal_steps`) and ``improvement`` = l(0) − l(s_upd) on the full line (linearly interpolated; NaN when
    s_upd is not finite or off the grid). Like the thesis, improvement is local: each line starts from the
    trajectory actually trained, not from where the strategy would have gone.
    """
    grid = _grid(step_sizes)
    values = _lines(grid, full)
    steps = _per_line(s_upd, len(values), "s_upd")
    return pd.DataFrame(
        {
            "s_upd": steps,
            "distance": optimal_steps(grid, values) - steps,
            "improvement": _improvement(grid, values, steps),
        }
    )


def _batch_lines(
    per_sample: np.ndarray, batch_per_sample: np.ndarray, slopes: np.ndarray, sizes: np.ndarray, extra: np.ndarray
) -> np.ndarray:
    """The mean-loss lines [K, S] of one line's constructed batches (see :func:`batch_size_analysis`)."""
    original = batch_per_sample.shape[1]
    steepest_first = np.argsort(slopes, kind="stable")
    pooled = np.cumsum(per_sample[:, extra], axis=1)
    batch_sum = batch_per_sample.sum(axis=1)
    result = np.empty((len(sizes), len(per_sample)))
    for index, size in enumerate(sizes):
        if size <= original:
            result[index] = batch_per_sample[:, steepest_first[:size]].mean(axis=1)
        else:
            result[index] = (batch_sum + pooled[:, size - original - 1]) / size
    return result


def batch_size_analysis(
    step_sizes: np.ndarray,
    per_sample: np.ndarray,
    batch_per_sample: np.ndarray,
    batch_sizes: Sequence[int],
    lr: float = 0.1,
    mu: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """How SGD's and PAL's steps change with the batch size on the same lines (Section 5.6, Figure 5.9).

    As in the thesis, the trajectory is assumed not to change with the batch size, so other batch sizes are built on
    the measured lines. Size B (the direction-defining batch's) is that batch. A larger size b adds b − B samples
    drawn without replacement from ``per_sample``; a smaller one keeps the b samples of the direction batch with the
    most negative per-sample slope at 0, assuming smaller batches find steeper directions. Batches are nested: each
    line draws one random order of its extra samples (one generator seeded with ``seed``, line after line), and
    every larger size takes a longer prefix of it.

    Returns one row per (line, batch size), in input order: ``line``, ``batch_size``, ``slope`` (the three-point
    derivative of the batch's mean loss at 0), ``sgd_step`` = −lr·slope, ``pal_step`` (PAL on the batch's line with
    that slope, as :func:`pal_steps`), and ``sgd_improvement`` and ``pal_improvement``: l(0) − l(step) on the full
    line, which here is the mean over all columns of ``per_sample`` and ``batch_per_sample``.
    """
    grid = _grid(step_sizes)
    if per_sample.ndim != 3 or batch_per_sample.ndim != 3:
        raise ValueError("per_sample and batch_per_sample must have shape [L, S, N] and [L, S, B]")
    if per_sample.shape[:2] != (batch_per_sample.shape[0], grid.size) or batch_per_sample.shape[1] != grid.size:
        raise ValueError(f"per_sample {per_sample.shape} and batch_per_sample {batch_per_sample.shape} do not match")
    count, _, pool = per_sample.shape
    original = batch_per_sample.shape[2]
    sizes = np.asarray(batch_sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or sizes.min() < 1 or sizes.max() > original + pool:
        raise ValueError(f"batch_sizes must lie in [1, {original + pool}], got {list(batch_sizes)}")
    extra_count = max(0, int(sizes.max()) - original)

    generator = np.random.default_rng(seed)
    full = np.empty((count, grid.size))
    batches = np.empty((count, sizes.size, grid.size))
    for line in range(count):
        samples = np.asarray(per_sample[line], dtype=np.float64)
        batch = np.asarray(batch_per_sample[line], dtype=np.float64)
        full[line] = (samples.sum(axis=1) + batch.sum(axis=1)) / (pool + original)
        extra = generator.choice(pool, size=extra_count, replace=False)
        batches[line] = _batch_lines(samples, batch, _slope_at_zero(grid, batch.T), sizes, extra)

    flat = batches.reshape(-1, grid.size)
    slope = _slope_at_zero(grid, flat)
    pal = _pal_case_steps(_probe_curvature(grid, flat, slope, mu), slope, mu)
    sgd = -lr * slope
    return pd.DataFrame(
        {
            "line": np.repeat(np.arange(count), sizes.size),
            "batch_size": np.tile(sizes, count),
            "slope": slope,
            "sgd_step": sgd,
            "pal_step": pal,
            "sgd_improvement": _improvement(grid, full, sgd.reshape(count, -1)).ravel(),
            "pal_improvement": _improvement(grid, full, pal.reshape(count, -1)).ravel(),
        }
    )


def slope_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """By which factor |slope| shrinks from each batch size to the next larger one, per line (Figure 5.9, row 2).

    The thesis explains why raising the batch size acts like lowering the learning rate: SGD's step is lr·|slope|,
    and multiplying the batch size by b2/b1 divides |slope| by about that factor (the "expected ratio", e.r.).
    Takes a :func:`batch_size_analysis` table; for each line and each consecutive pair b1 < b2 of its batch sizes,
    returns ``line``, ``from`` (b1), ``to`` (b2), ``ratio`` = |slope(b1)|/|slope(b2)| and ``expected`` = b2/b1.
    """
    ordered = frame.sort_values(["line", "batch_size"], kind="stable")
    following = ordered.groupby("line")[["batch_size", "slope"]].shift(-1)
    paired = following["batch_size"].notna().to_numpy()
    smaller = ordered[paired]
    larger = following[paired]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(smaller["slope"].to_numpy()) / np.abs(larger["slope"].to_numpy())
    to_size = larger["batch_size"].to_numpy().astype(np.int64)
    from_size = smaller["batch_size"].to_numpy()
    return pd.DataFrame(
        {
            "line": smaller["line"].to_numpy(),
            "from": from_size,
            "to": to_size,
            "ratio": ratio,
            "expected": to_size / from_size,
        }
    )
