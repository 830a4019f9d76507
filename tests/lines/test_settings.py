"""What a linescan run measures, as a grid says it and as the run's identity holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.paths import GRIDS

from lsbench.lines.settings import ScanSettings, resolve_scan, step_size_grid
from lsbench.runs import RunSpec
from lsbench.sweep.grid import GridError, load_grid, parse_grid
from lsbench.sweep.plan import expand

BASE = """
name: lines_test
problems: digits_mlp
budget: {steps: 20, eval_every: 10}
seeds: 1
optimizers:
  sgd: {grid: {momentum: [0.0, 0.9]}, fixed: {lr: 0.1}}
"""


def test_the_thesis_grid_of_step_sizes() -> None:
    """[-0.5, 0.5] at 0.006: the 167 step sizes of Sec. 5.3, symmetric, with s = 0 exactly."""
    steps = ScanSettings().step_sizes
    assert len(steps) == 167 and steps[83] == 0.0
    assert steps[0] == pytest.approx(-0.498) and steps[-1] == pytest.approx(0.498)
    assert step_size_grid(-0.5, 0.5, 0.1) == pytest.approx([k / 10 for k in range(-5, 6)])


def test_settings_are_part_of_the_identity_with_defaults_filled_in() -> None:
    plain = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1})
    scan = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, kind="linescan")
    explicit = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, kind="linescan", linescan={"resolution": 0.006})
    finer = RunSpec.create("digits_mlp", "sgd", {"lr": 0.1}, kind="linescan", linescan={"resolution": 0.003})
    assert "linescan" not in plain.identity() and plain.linescan == {}
    assert scan.linescan == resolve_scan({}) and scan.run_id == explicit.run_id
    assert len({plain.run_id, scan.run_id, finer.run_id}) == 3
    assert RunSpec.from_dict(scan.to_dict()) == scan


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"every": 0}, "every: expected a positive integer"),
        ({"s_min": 0.1}, "s_min: expected a number <= 0"),
        ({"resolution": 1e-6}, "at most"),
        ({"data": "test"}, "not one of train, validation"),
        ({"bogus": 1}, "unknown linescan settings: bogus"),
    ],
)
def test_invalid_settings_say_what_is_wrong(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunSpec.create("digits_mlp", "sgd", kind="linescan", linescan=settings)


def test_settings_for_a_training_run_are_refused() -> None:
    with pytest.raises(ValueError, match="only linescan runs take them"):
        RunSpec.create("digits_mlp", "sgd", linescan={"every": 2})


def test_a_linescan_grid_plans_linescan_runs() -> None:
    grid = parse_grid(BASE + "kind: linescan\nlinescan: {every: 2, per_sample: true}\n")
    runs = expand(grid)
    assert [run.kind for run in runs] == ["linescan", "linescan"]
    assert all(run.linescan == resolve_scan({"every": 2, "per_sample": True}) for run in runs)
    assert all(RunSpec.from_dict(run.to_dict()).run_id == run.run_id for run in runs)
    plain = parse_grid(BASE)
    assert plain.to_dict().keys() == grid.to_dict().keys() - {"kind", "linescan"}  # old grid hashes unchanged
    assert {r.run_id for r in expand(plain)}.isdisjoint({r.run_id for r in runs})


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("kind: linescan\nlinescan: {every: 0}\n", "linescan.every", "expected a positive integer"),
        ("kind: linescan\nlinescan: {s_max: -0.1}\n", "linescan.s_max", "expected a number >= 0"),
        ("kind: linescan\nlinescan: {per_sample: 1}\n", "linescan.per_sample", "true or false"),
        ("kind: linescan\nlinescan: {steps: 3}\n", "linescan.steps", "unknown key"),
        ("linescan: {every: 2}\n", "linescan", "apply to kind: linescan"),
        ("kind: scan\n", "kind", "unknown kind"),
    ],
)
def test_bad_linescan_grids_are_one_line_errors(extra: str, key: str, problem: str) -> None:
    with pytest.raises(GridError) as error:
        parse_grid(BASE + extra)
    assert error.value.key == key and problem in str(error.value) and "\n" not in str(error.value)


def test_shipped_line_grids(tmp_path: Path) -> None:
    digits = load_grid(GRIDS / "lines_digits.yaml")
    assert digits.kind == "linescan" and digits.linescan["per_sample"] is True
    thesis = load_grid(GRIDS / "lines_cifar10small.yaml")
    run = expand(thesis)[0]
    assert (run.problem, run.steps, run.batch_size, run.hparams["lr"]) == ("cifar10small_resnet20", 10_000, 128, 0.1)
    assert len(ScanSettings(**run.linescan).step_sizes) == 167 and run.linescan["every"] == 1
    assert sorted(r.hparams["momentum"] for r in expand(thesis)) == [0.0, 0.9]
