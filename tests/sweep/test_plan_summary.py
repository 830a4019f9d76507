"""Dry-run summary: counts, GPU-hour estimates from costs.py, JSON shape and text table."""

from __future__ import annotations

import json
import textwrap

import pytest

from lsbench.problems import PROBLEMS
from lsbench.sweep import costs
from lsbench.sweep.grid import parse_grid
from lsbench.sweep.plan import RunSpec, expand, summarize

TEXT = """\
name: summary_test
problems: [cifar10_resnet32, digits_mlp]
budget: {steps: {cifar10_resnet32: 150000}, eval_every: {cifar10_resnet32: 1000}}
seeds: [1, 2, 3]
optimizers:
  sgd:
    grid: {lr: [0.1, 0.01], momentum: [0.9]}
  pal:
    grid: {measuring_step_size: [1.0, 0.1, 0.01]}
"""


def run_hours(problem: str, optimizer: str, steps: int, eval_every: int, batch: int, factor: float) -> float:
    """The documented formula, written out independently of costs.run_seconds."""
    step = costs.STEP_SECONDS[problem] * batch / PROBLEMS[problem].defaults.batch_size
    evaluations = -(-steps // eval_every)
    seconds = step * factor * steps + evaluations * costs.EVAL_SAMPLES[problem] / batch * step / 3
    return seconds / 3600


def test_counts_and_hours() -> None:
    grid = parse_grid(TEXT)
    summary = summarize(expand(grid), grid)
    assert summary.sweep == "summary_test"
    rows = {(r.problem, r.optimizer): r for r in summary.rows}
    assert list(rows) == [
        ("cifar10_resnet32", "sgd"),
        ("cifar10_resnet32", "pal"),
        ("digits_mlp", "sgd"),
        ("digits_mlp", "pal"),
    ]
    assert [(r.points, r.seeds, r.runs) for r in rows.values()] == [(2, 3, 6), (3, 3, 9), (2, 3, 6), (3, 3, 9)]
    sgd = run_hours("cifar10_resnet32", "sgd", 150_000, 1_000, 128, 1.0)
    pal = run_hours("cifar10_resnet32", "pal", 150_000, 1_000, 128, 4 / 3)
    assert sgd == pytest.approx(2.165, abs=0.01)  # 0.05 s x 150k steps + 150 evaluations of 15k images
    assert rows[("cifar10_resnet32", "sgd")].gpu_hours == pytest.approx(6 * sgd)
    assert rows[("cifar10_resnet32", "pal")].gpu_hours == pytest.approx(9 * pal)
    digits = run_hours("digits_mlp", "sgd", 600, 100, 32, 1.0)
    assert rows[("digits_mlp", "sgd")].gpu_hours == pytest.approx(6 * digits)
    assert summary.total_runs == 30
    assert summary.total_gpu_hours == pytest.approx(sum(r.gpu_hours for r in summary.rows))
    assert summary.warnings == ()


def test_json_shape() -> None:
    grid = parse_grid(TEXT)
    data = summarize(expand(grid), grid).to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"sweep", "problems", "total"}
    assert data["sweep"] == "summary_test"
    assert list(data["problems"]) == ["cifar10_resnet32", "digits_mlp"]
    assert list(data["problems"]["cifar10_resnet32"]) == ["sgd", "pal"]
    entry = data["problems"]["cifar10_resnet32"]["pal"]
    assert set(entry) == {"points", "seeds", "runs", "gpu_hours"}
    assert (entry["points"], entry["seeds"], entry["runs"]) == (3, 3, 9)
    assert entry["gpu_hours"] == pytest.approx(
        9 * run_hours("cifar10_resnet32", "pal", 150_000, 1_000, 128, 4 / 3), abs=1e-3
    )
    assert set(data["total"]) == {"runs", "gpu_hours"}
    assert data["total"]["runs"] == 30


def test_format_text() -> None:
    grid = parse_grid(TEXT)
    text = summarize(expand(grid), grid).format_text()
    lines = text.splitlines()
    assert lines[0].startswith("sweep summary_test: 30 runs, about ")
    assert "GTX 1080 Ti" in lines[0]
    assert lines[2].split() == ["problem", "optimizer", "points", "seeds", "runs", "GPU-hours"]
    assert lines[4].split()[:5] == ["cifar10_resnet32", "sgd", "2", "3", "6"]
    assert lines[-1].split()[:2] == ["total", "30"]


def test_gpus_per_run_and_time_limit_warning() -> None:
    text = TEXT + 'resources: {gpus_per_run: 2, time_limit: "01:00:00"}\n'
    one = summarize(expand(parse_grid(TEXT)), parse_grid(TEXT))
    grid = parse_grid(text)
    two = summarize(expand(grid), grid)
    assert two.total_gpu_hours == pytest.approx(2 * one.total_gpu_hours)
    assert len(two.warnings) == 2  # sgd and pal on ResNet-32 take > 1 h; digits does not
    assert all("cifar10_resnet32" in w and "01:00:00" in w for w in two.warnings)
    assert "warning: cifar10_resnet32/sgd" in two.format_text()


def test_without_grid_and_empty() -> None:
    runs = [RunSpec.create("digits_mlp", "sgd", {"lr": lr}, seed=s) for lr in (0.1, 0.2) for s in (1, 2)]
    runs.append(runs[0])  # the same run twice counts twice as a run but once as a point
    summary = summarize(runs)
    assert summary.sweep is None
    assert [(r.points, r.seeds, r.runs) for r in summary.rows] == [(2, 2, 5)]
    empty = summarize([])
    assert empty.to_json() == {"sweep": None, "problems": {}, "total": {"runs": 0, "gpu_hours": 0.0}}
    assert "0 runs" in empty.format_text()


def test_list_valued_points_are_counted() -> None:
    grid = parse_grid(
        textwrap.dedent(
            """\
            name: t
            problems: [digits_mlp]
            optimizers:
              labpal_nsgd:
                grid: {direction_norm_bounds: [[0.001, 100], [0.01, 10]], noise_factor: [1.0, 2.0]}
            """
        )
    )
    summary = summarize(expand(grid), grid)
    assert [(r.points, r.seeds, r.runs) for r in summary.rows] == [(4, 3, 12)]
    # a numeric noise factor scales the steps LABPAL trains (thesis Eq. 6.8)
    factor_one = costs.run_seconds("digits_mlp", "labpal_nsgd", {"noise_factor": 1.0}, 600, 100, 32)
    factor_two = costs.run_seconds("digits_mlp", "labpal_nsgd", {"noise_factor": 2.0}, 600, 100, 32)
    assert factor_two == pytest.approx(2 * factor_one)


def test_cost_table_covers_every_problem_and_optimizer() -> None:
    from lsbench.optim import OPTIMIZERS

    for name, spec in PROBLEMS.items():
        assert costs.step_seconds(name, spec.defaults.batch_size) > 0
        assert name in costs.STEP_SECONDS or spec.model in costs.MODEL_STEP_SECONDS, name
        assert name in costs.EVAL_SAMPLES or spec.dataset in costs.DATASET_EVAL_SAMPLES, name
    assert set(OPTIMIZERS) <= set(costs.OPTIMIZER_FACTORS)
    assert costs.optimizer_factor("pal") == pytest.approx(4 / 3)
    assert costs.optimizer_factor("sls") == 1.5
    assert costs.optimizer_factor("not_yet_registered") == 1.0
    assert costs.step_seconds("cifar10_resnet32", 256) == pytest.approx(0.1)
    assert costs.step_seconds("unknown_problem", 128) == costs.DEFAULT_STEP_SECONDS
