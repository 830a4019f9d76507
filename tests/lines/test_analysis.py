"""The Chapter 5 analyses on synthetic lines whose answers are known in closed form."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lsbench.lines.analysis import (
    Fit,
    batch_size_analysis,
    consecutive_shape_distances,
    fbpal_steps,
    labpal_steps,
    minibatch_estimate,
    optimal_steps,
    pal_steps,
    polynomial_fits,
    proportionality,
    proportionality_drift,
    sgd_steps,
    shape_distances,
    slope_ratios,
    strategy_metrics,
)

# Any RuntimeWarning (e.g. from NaN or inf arithmetic) is a failure: the analyses promise to stay quiet on bad lines.
pytestmark = pytest.mark.filterwarnings("error")

# The thesis' grid: 167 multiples of 0.006 on [-0.5, 0.5], containing 0 exactly.
GRID = np.arange(-83, 84) * 0.006
ZERO = 83
PROBE = GRID[ZERO + 16]  # a probe distance on the grid, so PAL's parabola through it is exact


def parabola(curvature: float, vertex: float, offset: float = 1.0) -> np.ndarray:
    """curvature·(s − vertex)² + offset on GRID: its slope at 0 is −2·curvature·vertex, its minimum at vertex."""
    return curvature * (GRID - vertex) ** 2 + offset


def test_polynomial_fits_of_exact_parabolas() -> None:
    coefficients = [(2.0, -0.3, 1.5), (0.7, -1.1, 2.0), (5.0, 0.2, 0.1)]
    lines = np.stack([a * GRID**2 + b * GRID + c for a, b, c in coefficients])
    frame = polynomial_fits(GRID, lines)

    assert list(frame.columns) == ["mae_deg1", "mae_deg2", "slope", "curvature"]
    assert (frame["mae_deg2"] < 1e-10).all()
    assert (frame["mae_deg1"] > 1e-3).all()
    np.testing.assert_allclose(frame["slope"], [b for _, b, _ in coefficients], atol=1e-9)
    np.testing.assert_allclose(frame["curvature"], [2 * a for a, _, _ in coefficients], atol=1e-9)
    # float32 storage only rounds the values; the fit still recovers the parabola closely.
    rounded = polynomial_fits(GRID, lines.astype(np.float32))
    np.testing.assert_allclose(rounded["curvature"], frame["curvature"], rtol=1e-4)


def test_polynomial_fits_only_see_the_window() -> None:
    cubic = GRID**3 - 0.5 * GRID
    line = np.where(np.abs(GRID) <= 0.2, cubic, 1e6)  # wild outside the window
    frame = polynomial_fits(GRID, line[None], degrees=(2, 3))

    assert list(frame.columns) == ["mae_deg2", "mae_deg3", "slope", "curvature"]
    assert frame.loc[0, "mae_deg3"] < 1e-12
    assert 1e-5 < frame.loc[0, "mae_deg2"] < 1e-2
    # A narrower window that is all parabola: degree 2 is exact there.
    quadratic_inside = np.where(np.abs(GRID) <= 0.1, GRID**2, -5.0)
    narrow = polynomial_fits(GRID, quadratic_inside[None], window=(-0.1, 0.1))
    assert narrow.loc[0, "mae_deg2"] < 1e-12
    assert narrow.loc[0, "curvature"] == pytest.approx(2.0)


@pytest.mark.parametrize("vertex", [0.0137, -0.2, GRID[ZERO + 40], 0.3333, -0.4971])
def test_optimal_steps_find_on_and_off_grid_vertices(vertex: float) -> None:
    lines = np.stack([parabola(3.0, vertex), parabola(0.2, vertex, offset=7.0)])
    np.testing.assert_allclose(optimal_steps(GRID, lines), [vertex, vertex], atol=1e-9)


def test_optimal_steps_fall_back_to_the_grid_argmin_at_the_edges() -> None:
    beyond = parabola(1.0, 0.7)  # minimum past the grid: the last grid point
    concave = -(GRID**2)  # maxima only: its minima are the two edges, the first one wins
    np.testing.assert_array_equal(optimal_steps(GRID, np.stack([beyond, concave])), [GRID[-1], GRID[0]])


def test_shape_distances_ignore_offsets_and_measure_curvature_differences() -> None:
    base = parabola(2.0, 0.05)
    lines = np.stack([base, base + 3.7, base - 1.0, 2.0 * GRID**2, 5.0 * GRID**2])
    distances = shape_distances(GRID, lines)

    assert distances.shape == (5, 5)
    np.testing.assert_allclose(distances[:3, :3], 0.0, atol=1e-12)
    np.testing.assert_array_equal(distances, distances.T)
    np.testing.assert_array_equal(np.diag(distances), 0.0)
    # Both have their minimum 0 at s = 0, so they differ by 3·s²; over the window's grid points k·h, |k| <= 33,
    # the mean of k² is 33·34/3 = 374.
    assert distances[3, 4] == pytest.approx(3.0 * 374 * 0.006**2, rel=1e-12)


def test_shape_distances_in_blocks_match_one_block_and_consecutive_distances() -> None:
    rng = np.random.default_rng(3)
    lines = np.stack([parabola(a, v) for a, v in zip(rng.uniform(0.5, 4, 9), rng.uniform(-0.3, 0.3, 9), strict=True)])
    whole = shape_distances(GRID, lines)
    for block_elements in (1, 67 * 9 * 2, 67 * 9 * 4):
        np.testing.assert_allclose(shape_distances(GRID, lines, block_elements=block_elements), whole, rtol=1e-14)
    np.testing.assert_allclose(consecutive_shape_distances(GRID, lines), np.diag(whole, k=1), rtol=1e-14)
    wide = shape_distances(GRID, lines, window=(-0.5, 0.5))
    assert not np.allclose(wide, whole)


def test_proportionality_recovers_the_constant() -> None:
    norms = np.linspace(0.5, 3.0, 200)
    exact = proportionality(0.05 * norms, norms)
    assert exact == Fit(constant=pytest.approx(0.05), r2=pytest.approx(1.0), count=200)

    noisy = 0.05 * norms + np.random.default_rng(0).normal(scale=1e-3, size=norms.size)
    noisy[[3, 7]] = np.nan
    fit = proportionality(noisy, norms)
    assert fit.constant == pytest.approx(0.05, abs=5e-4)
    assert 0.99 < fit.r2 < 1.0
    assert fit.count == 198


def test_proportionality_drift_separates_segments() -> None:
    norms = np.tile(np.linspace(0.5, 3.0, 100), 2)
    s_opt = np.concatenate([0.05 * norms[:100], 0.1 * norms[100:]])
    drift = proportionality_drift(np.arange(200) * 10, s_opt, norms, segments=2)

    assert list(drift.columns) == ["step", "constant", "r2", "count"]
    np.testing.assert_allclose(drift["constant"], [0.05, 0.1])
    np.testing.assert_allclose(drift["r2"], [1.0, 1.0])
    np.testing.assert_array_equal(drift["step"], [495.0, 1495.0])
    np.testing.assert_array_equal(drift["count"], [100, 100])
    # One fit over both halves explains less.
    assert proportionality(s_opt, norms).r2 < 0.99


def test_sgd_steps_are_lr_times_the_gradient_norm() -> None:
    norms = np.array([0.5, 2.0, 4.0])
    np.testing.assert_allclose(sgd_steps(-norms, lr=0.1), [0.05, 0.2, 0.4])


def test_fbpal_lands_at_the_vertex() -> None:
    vertices = np.array([0.05, 0.1234, 0.3, 0.8])  # the parabola's vertex, also beyond the grid
    lines = np.stack([parabola(a, v) for a, v in zip([2.0, 0.5, 9.0, 1.0], vertices, strict=True)])
    np.testing.assert_allclose(fbpal_steps(GRID, lines, mu=PROBE), vertices, rtol=1e-9)
    # With the probe between grid points, the interpolated l(mu) is off by at most a·h²/4: close, not exact.
    np.testing.assert_allclose(fbpal_steps(GRID, lines), vertices, rtol=1e-2)


def test_pal_cases_on_batch_parabolas() -> None:
    convex = parabola(2.0, 0.15)  # slope −0.6 at 0
    concave = -parabola(2.0, -0.15)  # slope −0.6 at 0, curving down
    rising = parabola(2.0, -0.15)  # slope +0.6 at 0
    lines = np.stack([convex, concave, rising, rising, convex])
    slopes = np.array([-0.6, -0.6, 0.6, 0.0, np.nan])
    np.testing.assert_allclose(pal_steps(GRID, lines, slopes, mu=PROBE), [0.15, PROBE, 0.0, 0.0, np.nan], rtol=1e-9)
    # PAL takes the slope it is given: with a steeper slope than the line's, its parabola and vertex change.
    a = (convex[ZERO + 16] - convex[ZERO] + 1.0 * PROBE) / PROBE**2
    assert pal_steps(GRID, convex[None], np.array([-1.0]), mu=PROBE)[0] == pytest.approx(1.0 / (2 * a))


def labpal_lines(count: int = 250) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parabolas whose vertex v_l and gradient norm g_l change from line to line."""
    vertices = 0.05 + 0.001 * np.arange(count)
    norms = 1.0 + 0.01 * np.arange(count)
    lines = np.stack([parabola(1.0 + 0.01 * line, v) for line, v in enumerate(vertices)])
    return lines, vertices, norms


def test_labpal_reuses_its_estimate_for_a_period() -> None:
    lines, vertices, norms = labpal_lines()
    held = np.repeat([0, 100, 200], [100, 100, 50])  # the measuring line each line uses

    nsgd = labpal_steps(GRID, lines, norms, period=100, mode="nsgd", mu=PROBE)
    np.testing.assert_allclose(nsgd, vertices[held], rtol=1e-9)
    sgd = labpal_steps(GRID, lines, norms, period=100, mode="sgd", mu=PROBE)
    np.testing.assert_allclose(sgd, vertices[held] / norms[held] * norms, rtol=1e-9)


def test_labpal_keeps_the_previous_estimate_when_a_fit_fails() -> None:
    lines, vertices, norms = labpal_lines()
    lines[100] = -lines[100]  # concave: the fit at line 100 fails, line 0's estimate stays
    lines[0, ZERO + 1] = np.nan  # the very first fit fails: nothing to step with yet
    held = np.repeat([0, 0, 200], [100, 100, 50])
    expected_nsgd = np.where(np.arange(250) < 200, np.nan, vertices[held])
    nsgd = labpal_steps(GRID, lines, norms, period=100, mode="nsgd", mu=PROBE)
    np.testing.assert_allclose(nsgd, expected_nsgd, rtol=1e-9)

    lines, vertices, norms = labpal_lines()
    lines[100] = -lines[100]
    sgd = labpal_steps(GRID, lines, norms, period=100, mode="sgd", mu=PROBE)
    np.testing.assert_allclose(sgd, vertices[held] / norms[held] * norms, rtol=1e-9)


def test_minibatch_estimate_means_distinct_seeded_samples() -> None:
    samples = 12
    powers = 2.0 ** np.arange(samples)  # the sum of a subset tells which samples it holds
    per_sample = np.broadcast_to(powers, (20, GRID.size, samples)).astype(np.float16)
    estimate = minibatch_estimate(per_sample, n_samples=5, rng_seed=7)

    assert estimate.shape == (20, GRID.size)
    totals = estimate * 5
    np.testing.assert_array_equal(totals, totals[:, :1].repeat(GRID.size, axis=1))
    assert all(bin(int(total)).count("1") == 5 for total in totals[:, 0])  # five different samples
    assert len(set(totals[:, 0])) > 1  # each line draws its own subset
    np.testing.assert_array_equal(minibatch_estimate(per_sample, 5, rng_seed=7), estimate)
    assert not np.array_equal(minibatch_estimate(per_sample, 5, rng_seed=8), estimate)
    np.testing.assert_allclose(minibatch_estimate(per_sample, samples, rng_seed=0), powers.sum() / samples)
    with pytest.raises(ValueError, match="n_samples"):
        minibatch_estimate(per_sample, samples + 1, rng_seed=0)


def test_strategy_metrics_on_a_known_parabola() -> None:
    vertex, near = GRID[ZERO + 20], GRID[ZERO + 5]
    line = parabola(3.0, vertex)
    steps = np.array([vertex, 0.0, 0.7, np.nan, near])
    metrics = strategy_metrics(GRID, np.tile(line, (5, 1)), steps)

    assert list(metrics.columns) == ["s_upd", "distance", "improvement"]
    np.testing.assert_array_equal(metrics["s_upd"], steps)
    np.testing.assert_allclose(metrics["distance"], [0.0, vertex, vertex - 0.7, np.nan, vertex - near], atol=1e-12)
    expected_improvement = [3 * vertex**2, 0.0, np.nan, np.nan, 3 * vertex**2 - 3 * (near - vertex) ** 2]
    np.testing.assert_allclose(metrics["improvement"], expected_improvement, atol=1e-12)

    every_grid_point = strategy_metrics(GRID, np.tile(line, (GRID.size, 1)), GRID)
    assert every_grid_point["improvement"].idxmax() == ZERO + 20
    # Between grid points the line is interpolated linearly.
    halfway = strategy_metrics(GRID, line[None], np.array([(vertex + GRID[ZERO + 21]) / 2]))
    assert halfway.loc[0, "improvement"] == pytest.approx(line[ZERO] - (line[ZERO + 20] + line[ZERO + 21]) / 2)


# Per-sample parabolas a·s² + b·s + 4 on a coarse grid where every value is exact in float16.
BATCH_GRID = np.arange(-4, 5) * 0.25
BATCH_CURVATURES = np.array([4.0, 4.0, 8.0, 4.0])
BATCH_SLOPES = np.array([-1.0, -4.0, -2.0, -3.0])  # the direction batch, B = 4; sorted: samples 1, 3, 2, 0
POOL_SLOPES = -np.arange(8) / 4  # the other measured samples, N = 8, all with curvature 1


def per_sample_lines(curvatures: np.ndarray, slopes: np.ndarray, lines: int = 3) -> np.ndarray:
    """[lines, S, samples] float16 losses; line l is (l + 1) times line 0."""
    single = curvatures * BATCH_GRID[:, None] ** 2 + slopes * BATCH_GRID[:, None] + 4.0
    values = np.stack([(line + 1) * single for line in range(lines)])
    assert np.array_equal(values.astype(np.float16).astype(np.float64), values)
    return values.astype(np.float16)


def batch_inputs() -> tuple[np.ndarray, np.ndarray]:
    return per_sample_lines(np.ones(8), POOL_SLOPES), per_sample_lines(BATCH_CURVATURES, BATCH_SLOPES)


def test_batch_size_analysis_builds_the_thesis_batches() -> None:
    pool, batch = batch_inputs()
    sizes = [1, 2, 4, 12]
    frame = batch_size_analysis(BATCH_GRID, pool, batch, sizes, lr=0.1, mu=0.5, seed=0)

    assert list(frame.columns) == [
        "line",
        "batch_size",
        "slope",
        "sgd_step",
        "pal_step",
        "sgd_improvement",
        "pal_improvement",
    ]
    np.testing.assert_array_equal(frame["line"], np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(frame["batch_size"], sizes * 3)
    # Smaller batches keep the steepest samples (−4, then −3); size 12 is every sample.
    slopes = np.array([-4.0, -3.5, -2.5, -17 / 12])
    curvatures = np.array([4.0, 4.0, 5.0, 28 / 12])
    scale = np.repeat([1.0, 2.0, 3.0], 4)
    np.testing.assert_allclose(frame["slope"], np.tile(slopes, 3) * scale, rtol=1e-12)
    np.testing.assert_allclose(frame["sgd_step"], -0.1 * frame["slope"], rtol=1e-12)
    np.testing.assert_allclose(frame["pal_step"], np.tile(-slopes / (2 * curvatures), 3), rtol=1e-12)

    # The full line is the mean of all 12 samples: 28/12·s² − 17/12·s + 4, times l + 1.
    full = 28 / 12 * BATCH_GRID**2 - 17 / 12 * BATCH_GRID + 4
    for column in ("sgd", "pal"):
        steps = frame[f"{column}_step"].to_numpy()
        expected = scale * (full[4] - np.interp(steps, BATCH_GRID, full))
        expected[steps > BATCH_GRID[-1]] = np.nan  # line 2's SGD steps of sizes 1 and 2 leave the grid
        np.testing.assert_allclose(frame[f"{column}_improvement"], expected, rtol=1e-12)

    ratios = slope_ratios(frame)
    assert list(ratios.columns) == ["line", "from", "to", "ratio", "expected"]
    np.testing.assert_array_equal(ratios["line"], np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(ratios["from"], [1, 2, 4] * 3)
    np.testing.assert_array_equal(ratios["to"], [2, 4, 12] * 3)
    np.testing.assert_allclose(ratios["ratio"], [4 / 3.5, 3.5 / 2.5, 2.5 / (17 / 12)] * 3, rtol=1e-12)
    np.testing.assert_allclose(ratios["expected"], [2.0, 2.0, 3.0] * 3)


def test_batch_size_analysis_draws_larger_batches_without_replacement() -> None:
    pool, batch = batch_inputs()
    frame = batch_size_analysis(BATCH_GRID, pool, batch, [8, 6], lr=0.1, mu=0.5, seed=5)

    # Size 8 adds four different pool samples, size 6 the first two of them (the batches are nested). The direction
    # batch's slopes sum to −10, so the drawn pool samples' slopes sum to size·slope + 10.
    scale = np.array([1.0, 2.0, 3.0])
    eights = 8 * frame.loc[frame["batch_size"] == 8, "slope"].to_numpy() / scale + 10
    sixes = 6 * frame.loc[frame["batch_size"] == 6, "slope"].to_numpy() / scale + 10
    for eight, six in zip(eights, sixes, strict=True):
        assert any(
            abs(sum(four) - eight) < 1e-12
            and any(abs(sum(two) - six) < 1e-12 for two in itertools.combinations(four, 2))
            for four in itertools.combinations(POOL_SLOPES, 4)
        )
    pd.testing.assert_frame_equal(frame, batch_size_analysis(BATCH_GRID, pool, batch, [8, 6], mu=0.5, seed=5))
    ratios = slope_ratios(frame)  # batch sizes are paired in ascending order, whatever order the table has
    np.testing.assert_array_equal(ratios[["from", "to"]], [[6, 8]] * 3)
    np.testing.assert_allclose(ratios["ratio"], np.abs(sixes - 10) / 6 / (np.abs(eights - 10) / 8), rtol=1e-12)
    with pytest.raises(ValueError, match="batch_sizes"):
        batch_size_analysis(BATCH_GRID, pool, batch, [13], mu=0.5)


def test_non_finite_lines_give_nan_for_that_line_only() -> None:
    lines = np.stack([parabola(2.0, v) for v in (0.1, 0.15, 0.2, 0.25, 0.3)])
    clean = lines.copy()
    lines[1, ZERO] = np.nan
    lines[4, ZERO + 1] = np.inf
    bad, good = [1, 4], [0, 2, 3]

    fits = polynomial_fits(GRID, lines)
    assert fits.loc[bad].isna().all().all()
    pd.testing.assert_frame_equal(fits.loc[good], polynomial_fits(GRID, clean).loc[good])

    distances = shape_distances(GRID, lines)
    assert np.isnan(distances[bad]).all() and np.isnan(distances[:, bad]).all()
    np.testing.assert_allclose(distances[np.ix_(good, good)], shape_distances(GRID, clean)[np.ix_(good, good)])
    consecutive = consecutive_shape_distances(GRID, lines)
    np.testing.assert_array_equal(np.isnan(consecutive), [True, True, False, True])

    for values in (optimal_steps(GRID, lines), fbpal_steps(GRID, lines, mu=PROBE)):
        np.testing.assert_array_equal(np.isnan(values), [False, True, False, False, True])
    pal = pal_steps(GRID, lines, np.full(5, -0.4), mu=PROBE)
    np.testing.assert_array_equal(np.isnan(pal), [False, True, False, False, False])  # reads l(0) and l(mu) only
    metrics = strategy_metrics(GRID, lines, np.full(5, 0.1))
    np.testing.assert_array_equal(metrics["improvement"].isna(), [False, True, False, False, False])
    np.testing.assert_array_equal(metrics["distance"].isna(), [False, True, False, False, True])

    pool, batch = batch_inputs()
    batch = batch.copy()
    batch[1] = np.nan
    frame = batch_size_analysis(BATCH_GRID, pool, batch, [2, 4, 12], lr=0.05, mu=0.5)
    numbers = frame.drop(columns=["line", "batch_size"])
    assert numbers[frame["line"] == 1].isna().all().all()
    assert numbers[frame["line"] != 1].notna().all().all()


def test_grids_without_zero_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"0\.0"):
        optimal_steps(GRID + 0.001, np.ones((1, GRID.size)))
    with pytest.raises(ValueError, match="shape"):
        optimal_steps(GRID, np.ones((1, 5)))
