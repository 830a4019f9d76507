"""The Chapter 5 figures of linescan runs (lsbench.report.lines) on synthetic lines whose answers are known.

Every full-batch line is the parabola 2·(s − v)² + 1 with its vertex v = c·‖g_B‖ (times a little noise where a
test wants R² < 1), the direction batch's line is steeper (its vertex at ‖g_B‖/4, so its slope at 0 is −‖g_B‖),
and the per-sample losses are parabolas around those vertices. No training: the arrays are written with the
LineWriter the trainer uses.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lsbench.lines.arrays import ARRAYS_DIR, LineWriter, read_lines
from lsbench.lines.settings import step_size_grid
from lsbench.report import lines as lr
from lsbench.runs import RunSpec
from lsbench.store import Store
from lsbench.sweep import api
from lsbench.sweep.layout import SweepDir

GRID = step_size_grid(-0.5, 0.5, 0.02)  # 51 step sizes, 0 included
CURVATURE = 2.0  # a of a·(s − v)²: the second derivative is 4
C = 0.125  # s_opt = C·‖g_B‖
LR = 0.1
SAMPLES, BATCH = 48, 16
SUFFIXES = ("losses", "shapes", "fits", "strategies", "angle", "batches", "labpal")


def spec(seed: int = 1, *, per_sample: bool = True, every: int = 2, momentum: float = 0.0) -> RunSpec:
    return RunSpec.from_dict(
        {
            "problem": "cifar10small_resnet20",
            "optimizer": "sgd",
            "hparams": {"lr": LR, "momentum": momentum},
            "seed": seed,
            "steps": 200,
            "eval_every": 100,
            "batch_size": BATCH,
            "weight_decay": 0.0,
            "kind": "linescan",
            "linescan": {"every": every, "resolution": 0.02, "per_sample": per_sample, "samples": SAMPLES},
        }
    )


def write_lines(path: Path, run: RunSpec, *, count: int = 60, noise: float = 0.0) -> dict[str, np.ndarray]:
    """``count`` parabolic lines into ``path``; returns the built gradient norms and vertices."""
    rng = np.random.default_rng(run.seed)
    grid = np.asarray(GRID)
    norms = np.linspace(1.6, 0.4, count)  # the gradient shrinks over training
    vertex = C * norms * (1 + noise * rng.standard_normal(count))
    per_sample = run.linescan["per_sample"]
    writer = LineWriter(path, step_sizes=GRID, samples=SAMPLES, batch_size=BATCH, per_sample=per_sample,
                        attrs={"run": run.to_dict()})  # fmt: skip
    for line in range(count):
        batch_vertex = norms[line] / (2 * CURVATURE)  # slope at 0: −2·a·vertex = −‖g_B‖
        values = {
            "step": line * run.linescan["every"],
            "full_loss": CURVATURE * (grid - vertex[line]) ** 2 + 1.0,
            "batch_loss": CURVATURE * (grid - batch_vertex) ** 2 + 0.8,
            "grad_norm": norms[line],
            "batch_slope": -norms[line],
            "step_taken": LR * norms[line],
            "angle": 90.0 + line % 3,
        }
        if per_sample:
            spread = rng.normal(0.0, 0.05, SAMPLES)
            values["per_sample"] = CURVATURE * (grid[:, None] - vertex[line] - (spread - spread.mean())) ** 2 + 1.0
            spread = rng.normal(0.0, 0.05, BATCH)
            values["batch_per_sample"] = CURVATURE * (grid[:, None] - batch_vertex - (spread - spread.mean())) ** 2
        writer.add(values)
    writer.flush()
    return {"norms": norms, "vertex": vertex}


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    """60 exact parabolas with s_opt = C·‖g_B‖ and per-sample losses, drawn once for the module."""
    root = tmp_path_factory.mktemp("exact")
    built = write_lines(root / "run" / ARRAYS_DIR, spec())
    data = read_lines(root / "run" / ARRAYS_DIR)
    out = root / "figures"
    return data, built, lr.draw_line_figures(data, out), out


def test_findings_of_exact_parabolas(exact):
    data, _, _, _ = exact
    found = lr.line_findings(data)
    assert found["lines"] == 60 and (found["first_step"], found["last_step"], found["every"]) == (0, 118, 2)
    # Exact parabolas: the degree-2 fit is exact, the straight line is not.
    assert found["mae_deg2_median"] < 1e-10 < 1e-3 < found["mae_deg1_median"]
    assert found["mae_ratio"] < 1e-8
    assert found["proportionality_constant"] == pytest.approx(C, rel=1e-9)
    assert found["proportionality_r2"] == pytest.approx(1.0, abs=1e-9)
    # On exact parabolas FBPAL, the fitted c·‖g_B‖ and LABPAL&SGD (a learning rate reused) land on the minimum...
    optimal = found["improvement_optimal"]
    for key in ("fbpal", "fitted_c", "labpal_sgd"):
        assert found[f"improvement_{key}"] == pytest.approx(optimal, rel=1e-6), key
    # ... the run's own step (λ = 0.1 < c) and SGD with λ/2 fall short, λ/2 more so; a step reused as a
    # size (LABPAL&NSGD) is too long on later, flatter-gradient lines.
    assert 0 < found["improvement_sgd_half_lr"] < found["improvement_sgd_lr"] < optimal
    assert found["improvement_own_step"] == pytest.approx(found["improvement_sgd_lr"])
    assert found["improvement_labpal_nsgd"] < optimal
    # PAL on the steeper direction batch's line steps to that line's vertex ‖g_B‖/4, twice s_opt: no improvement.
    assert found["improvement_pal"] == pytest.approx(0.0, abs=2 * CURVATURE * 0.01**2)  # interpolated


def test_proportionality_as_built_with_noise(tmp_path):
    built = write_lines(tmp_path / ARRAYS_DIR, spec(seed=7, per_sample=False), count=80, noise=0.2)
    found = lr.line_findings(read_lines(tmp_path / ARRAYS_DIR))
    norms, vertex = built["norms"], built["vertex"]
    constant = np.dot(norms, vertex) / np.dot(norms, norms)
    r2 = 1 - np.sum((vertex - constant * norms) ** 2) / np.sum((vertex - vertex.mean()) ** 2)
    assert found["proportionality_constant"] == pytest.approx(constant, rel=1e-9)
    assert found["proportionality_r2"] == pytest.approx(r2, rel=1e-9)
    assert 0.3 < r2 < 0.99
    # Without per-sample losses there is no batch-size analysis (Figure 5.9).
    assert lr._batches(lr.analyse_lines(read_lines(tmp_path / ARRAYS_DIR)), tmp_path) is None


def test_every_figure_is_written_with_its_numbers(exact):
    data, built, figures, out = exact
    run_id = data.attrs["run"]["run_id"]
    assert [figure.name for figure in figures] == [f"lines_{run_id}_{suffix}" for suffix in SUFFIXES]
    for figure in figures:
        for path in (figure.png, figure.pdf, figure.csv):
            assert path.parent == out and path.stat().st_size > 0
        assert figure.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.pdf.read_bytes()[:4] == b"%PDF"
        # Each caption names the run: problem, optimizer with its hyperparameters, seed.
        assert "cifar10small_resnet20, sgd (lr=0.1, momentum=0), seed 1" in figure.caption, figure.name

    csv = {suffix: pd.read_csv(out / f"lines_{run_id}_{suffix}.csv") for suffix in SUFFIXES}
    losses = csv["losses"]
    assert list(losses.columns) == ["line", "step", "s", "full_loss", "batch_loss", "step_taken", "s_opt"]
    assert sorted(losses["line"].unique()) == [0, 15, 30, 59]  # first, 25 %, 50 %, last
    first = losses[losses["line"] == 0]
    np.testing.assert_allclose(first["full_loss"], CURVATURE * (first["s"] - C * 1.6) ** 2 + 1.0)
    assert first["s_opt"].iloc[0] == pytest.approx(C * 1.6) and first["step_taken"].iloc[0] == pytest.approx(0.16)

    shapes = csv["shapes"]
    assert set(shapes["kind"]) == {"matrix", "matrix_after_first_10", "consecutive"}
    matrix = shapes[shapes["kind"] == "matrix"]
    assert len(matrix) == 60 * 61 // 2 and (matrix.loc[matrix["line_a"] == matrix["line_b"], "distance"] == 0).all()
    assert len(shapes[shapes["kind"] == "matrix_after_first_10"]) == 50 * 51 // 2
    assert len(shapes[shapes["kind"] == "consecutive"]) == 59

    fits = csv["fits"]
    assert list(fits.columns) == ["step", "mae_deg1", "mae_deg2", "slope", "curvature"]
    np.testing.assert_allclose(fits["curvature"], 2 * CURVATURE, rtol=1e-9)
    np.testing.assert_allclose(fits["slope"], -2 * CURVATURE * built["vertex"], rtol=1e-9)

    strategies = csv["strategies"]
    assert set(strategies["strategy"]) == {
        "optimal", "own_step", "sgd_lr", "sgd_half_lr", "fitted_c", "pal", "fbpal", "labpal_sgd", "labpal_nsgd",
    }  # fmt: skip
    assert {"step", "grad_norm", "s_opt", "s_upd", "distance", "improvement", "improvement_smoothed"} <= set(
        strategies.columns
    )
    own = strategies[strategies["strategy"] == "own_step"]
    np.testing.assert_allclose(own["s_upd"], LR * built["norms"])
    np.testing.assert_allclose(own["distance"], (C - LR) * built["norms"], atol=1e-12)
    assert set(csv["labpal"]["strategy"]) == {"optimal", "fbpal", "labpal_sgd", "labpal_nsgd"}

    batches = csv["batches"]
    # B/4 … 8B, at most B + N = 64 (the measured samples).
    assert sorted(batches["batch_size"].unique()) == [4, 8, 16, 32, 64]
    assert {"line", "step", "slope", "sgd_improvement", "pal_improvement", "ratio", "expected"} <= set(batches)
    original = batches[batches["batch_size"] == BATCH]
    np.testing.assert_allclose(original["slope"], -built["norms"][original["line"]], rtol=2e-3)  # float16 losses
    assert set(batches["expected"].dropna()) == {2.0}


def test_long_runs_are_subsampled(tmp_path, monkeypatch):
    write_lines(tmp_path / ARRAYS_DIR, spec(seed=3, every=5), count=60)
    monkeypatch.setattr(lr, "MAX_MATRIX_LINES", 20)
    monkeypatch.setattr(lr, "MAX_BATCH_LINES", 7)
    analysis = lr.analyse_lines(read_lines(tmp_path / ARRAYS_DIR))
    shapes_figure, batches_figure = lr._shapes(analysis, tmp_path), lr._batches(analysis, tmp_path)
    shapes = pd.read_csv(shapes_figure.csv)
    matrix = shapes[shapes["kind"] == "matrix"]
    assert len(matrix) == 20 * 21 // 2 and {0, 59} <= set(matrix["line_a"])  # evenly spaced, ends included
    assert len(shapes[shapes["kind"] == "consecutive"]) == 59  # every line
    assert pd.read_csv(batches_figure.csv)["line"].nunique() == 7
    assert "20 evenly spaced of 60 lines" in shapes_figure.caption
    assert "7 evenly spaced of 60 lines" in batches_figure.caption
    # LABPAL reuses its estimate for 100 training steps: 20 lines measured every 5 steps.
    assert analysis.period == 20 and "reused for 20 lines = 100 steps" in lr._strategies(analysis, tmp_path).caption


def _linescan_sweep(root: Path) -> tuple[SweepDir, list[RunSpec]]:
    """A sweep of one train run and three linescan runs: two with lines on disk, one whose lines never came."""
    sweep = SweepDir(root / "lines")
    sweep.path.mkdir(parents=True)
    url = sweep.default_store_url()
    sweep.write_meta({"name": "lines", "grid_hash": "0" * 64, "store": url, "backend": "local"})
    store = Store(url)
    store.upsert_sweep("lines", "0" * 64, "", str(sweep.path), "local")
    train = RunSpec.from_dict({**spec().to_dict(), "kind": "train", "linescan": {}, "run_id": None})
    scans = [spec(seed=1), spec(seed=2, per_sample=False, momentum=0.9), spec(seed=3)]
    store.add_runs("lines", [train, *scans])
    for run in [train, *scans]:
        summary = {"train_loss": 0.5, "val_acc": 0.8, "test_acc": 0.79, "seconds": 10.0}
        store.set_run_status(run.run_id, "completed", summary=summary, step=200)
    # The first run's row points at its lines; the second's does not (written before the worker set it).
    write_lines(sweep.run_dir(scans[0].run_id) / ARRAYS_DIR, scans[0], count=40)
    store.set_run_status(scans[0].run_id, "completed", arrays=str(sweep.run_dir(scans[0].run_id) / ARRAYS_DIR))
    write_lines(sweep.run_dir(scans[1].run_id) / ARRAYS_DIR, scans[1], count=40)
    store.close()
    return sweep, scans


def test_report_page_has_the_line_analysis_section(tmp_path):
    sweep, scans = _linescan_sweep(tmp_path)
    result = api.report("lines", root=tmp_path)
    page = result.index.read_text()
    assert page.count("Line analysis (Chapter 5)") == 1
    assert "3 linescan runs; 2 with measured lines analysed below" in page
    assert f"run {scans[2].run_id} (completed): no measured lines on disk" in page
    ours = [f for f in result.figures if f.name.startswith("lines_")]
    # In run order; the second run stored no per-sample losses: no Figure 5.9.
    assert [f.name for f in ours] == [
        *(f"lines_{scans[0].run_id}_{suffix}" for suffix in SUFFIXES),
        *(f"lines_{scans[1].run_id}_{suffix}" for suffix in SUFFIXES if suffix != "batches"),
    ]
    for figure in ours:
        assert f'<figure id="{figure.name}">' in page
    assert page.count("data:image/png;base64,") == len(result.figures)
    assert "<script" not in page and "http://" not in page
    assert "cifar10small_resnet20, sgd (lr=0.1, momentum=0.9), seed 2" in page
    assert "c of s_opt ≈ c·‖g_B‖" in page and "Drift of s_opt ≈ c·‖g_B‖" in page
    findings = pd.read_csv(result.tables["lines"]).set_index("run_id")
    assert set(findings.index) == {scans[0].run_id, scans[1].run_id}
    assert findings["proportionality_constant"].to_numpy() == pytest.approx([C, C])
    assert (findings["lines"] == 40).all()
    for run in scans[:2]:
        drift = pd.read_csv(sweep.reports / f"lines_{run.run_id}_drift.csv")
        assert list(drift.columns) == ["step", "constant", "r2", "count"] and drift["count"].sum() == 40


def test_sweeps_without_linescan_runs_get_no_section(tmp_path):
    train = RunSpec.from_dict({**spec().to_dict(), "kind": "train", "linescan": {}, "run_id": None})
    assert lr.line_section([(train, tmp_path)], tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_unreadable_or_short_lines_are_skipped_with_the_reason(tmp_path):
    run = spec(per_sample=False)
    write_lines(tmp_path / "one" / ARRAYS_DIR, run, count=1)
    section = lr.line_section([(run, tmp_path / "one"), (spec(seed=9), tmp_path / "none")], tmp_path / "out")
    assert section is not None and not section.runs and section.findings_csv is None
    reasons = [why for _, why in section.skipped]
    assert reasons == ["1 measured line, too few to analyse", "no measured lines on disk"]
    assert "Skipped 2 linescan runs" in section.html()
