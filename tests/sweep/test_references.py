"""``best_of`` references: schema checks at load time, resolution from a source sweep's store at submit time, and the
per-optimizer ``budget``/``training`` overrides and ``vary`` axis of the grid schema."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from lsbench.store import Store
from lsbench.sweep.grid import GridError, parse_grid
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec, expand, summarize
from lsbench.sweep.references import resolve_references

SOURCE = """
name: src
problems: [digits_mlp]
seeds: [1, 2]
optimizers:
  sgd:
    grid: {lr: [0.1, 0.01, 0.001]}
    fixed: {momentum: 0.9}
  pal:
    grid: {measuring_step_size: [1.0, 0.1]}
"""

REFERRING = """
name: transfer
problems: [digits_mlp, synthetic_mlp]
seeds: [1, 2, 3]
optimizers:
  sgd:
    best_of: {sweep: src, problem: digits_mlp}
  pal:
    best_of: {sweep: src, problem: digits_mlp}
    fixed: {noise_factor: null}
  adam:
    grid: {lr: [0.01, 0.001]}
"""


def make_source(
    root: Path,
    outcomes: Iterable[tuple[str, dict, int, str, float | None]],
    name: str = "src",
) -> None:
    """A sweep directory ``root/name`` with a SQLite store holding the given (optimizer, hparams, seed, status,
    val_acc) runs of digits_mlp."""
    sweep = SweepDir(root / name)
    sweep.path.mkdir(parents=True)
    url = sweep.default_store_url()
    sweep.write_meta({"name": name, "store": url, "backend": "local"})
    with Store(url) as store:
        store.upsert_sweep(name, "0" * 64, "name: src\n", str(sweep.path), "local")
        for optimizer, hparams, seed, status, val_acc in outcomes:
            spec = RunSpec.create("digits_mlp", optimizer, hparams, seed)
            store.add_runs(name, [spec])
            summary = None if val_acc is None else {"train_loss": 0.5, "val_acc": val_acc, "test_acc": val_acc - 0.01}
            store.set_run_status(spec.run_id, status, summary=summary)


def full_source(root: Path) -> None:
    # sgd: lr 0.01 has the best mean validation accuracy (0.9, 0.8 -> 0.85), lr 0.1 the best single run (0.95, 0.5).
    runs = [
        ("sgd", {"lr": 0.1, "momentum": 0.9}, 1, "completed", 0.95),
        ("sgd", {"lr": 0.1, "momentum": 0.9}, 2, "completed", 0.5),
        ("sgd", {"lr": 0.01, "momentum": 0.9}, 1, "completed", 0.9),
        ("sgd", {"lr": 0.01, "momentum": 0.9}, 2, "completed", 0.8),
        ("sgd", {"lr": 0.001, "momentum": 0.9}, 1, "diverged", None),
        ("sgd", {"lr": 0.001, "momentum": 0.9}, 2, "failed", None),
        ("pal", {"measuring_step_size": 0.1}, 1, "completed", 0.7),
        ("pal", {"measuring_step_size": 1.0}, 1, "completed", 0.6),
    ]
    make_source(root, runs)


def test_best_of_resolves_to_the_best_mean_validation_point(tmp_path: Path) -> None:
    full_source(tmp_path)
    grid = parse_grid(REFERRING, "transfer.yaml")
    resolved = resolve_references(grid, tmp_path)
    sgd, pal = resolved.optimizers["sgd"], resolved.optimizers["pal"]
    assert [(p["lr"], p["momentum"]) for p in sgd.points] == [(0.01, 0.9)]
    assert pal.points[0]["measuring_step_size"] == 0.1
    assert pal.points[0]["noise_factor"] is None  # the section's fixed value over the best point
    assert sgd.best_of is not None and sgd.best_of.resolved and "0.8500" in sgd.best_of.note
    assert resolved.unresolved_references() == ()

    runs = expand(resolved)
    assert len(runs) == (1 + 1 + 2) * 2 * 3
    # Resolved points are ordinary hyperparameters: the same run id as writing them under fixed.
    written = parse_grid(
        "name: t\nproblems: [digits_mlp]\nseeds: [1]\noptimizers:\n  sgd:\n    fixed: {lr: 0.01, momentum: 0.9}\n"
    )
    assert expand(written)[0].run_id == next(r.run_id for r in runs if r.optimizer == "sgd" and r.seed == 1)
    # Stable: resolving again gives the same hash and ids; the hash differs from the unresolved grid's.
    again = resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path)
    assert again.grid_hash == resolved.grid_hash != grid.grid_hash
    assert [r.run_id for r in expand(again)] == [r.run_id for r in runs]
    # The stored text records what was resolved, after the file's own text.
    assert resolved.source_text.startswith(REFERRING)
    assert "# optimizers.sgd.best_of: sweep src, problem digits_mlp, optimizer sgd" in resolved.source_text
    assert json.dumps(sgd.fixed, sort_keys=True, separators=(",", ":")) in resolved.source_text


def test_a_grid_without_references_is_returned_unchanged(tmp_path: Path) -> None:
    grid = parse_grid(SOURCE)
    assert resolve_references(grid, tmp_path / "nowhere") is grid


def test_expand_refuses_an_unresolved_reference() -> None:
    with pytest.raises(GridError, match=r"optimizers\.sgd\.best_of: refers to .* resolve it first"):
        expand(parse_grid(REFERRING, "transfer.yaml"))


def one_line(exc: pytest.ExceptionInfo[GridError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_source_sweep_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GridError) as exc:
        resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path)
    text = one_line(exc)
    assert text.startswith("transfer.yaml: optimizers.sgd.best_of.sweep: no sweep 'src' under")


def test_source_without_completed_runs_is_a_one_line_error(tmp_path: Path) -> None:
    make_source(tmp_path, [("sgd", {"lr": 0.1}, 1, "diverged", None), ("sgd", {"lr": 0.1}, 2, "failed", None)])
    with pytest.raises(GridError) as exc:
        resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path)
    assert "optimizers.sgd.best_of: sweep 'src' has no completed run of sgd on digits_mlp" in one_line(exc)


def test_source_without_that_optimizer_is_a_one_line_error(tmp_path: Path) -> None:
    make_source(tmp_path, [("sgd", {"lr": 0.1}, 1, "completed", 0.9)])
    with pytest.raises(GridError) as exc:
        resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path)
    assert "optimizers.pal.best_of: sweep 'src' has no runs of pal on digits_mlp (it has: sgd on digits_mlp)" in (
        one_line(exc)
    )


def test_source_with_unfinished_runs_is_not_resolved(tmp_path: Path) -> None:
    make_source(tmp_path, [("sgd", {"lr": 0.1}, 1, "completed", 0.9), ("sgd", {"lr": 0.2}, 1, "queued", None)])
    with pytest.raises(GridError) as exc:
        resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path)
    assert "still has 1 unfinished runs of sgd on digits_mlp" in one_line(exc)


def test_dry_run_counts_one_placeholder_point_per_reference(tmp_path: Path) -> None:
    grid = resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path, dry_run=True)
    assert len(grid.unresolved_references()) == 2
    runs = expand(grid)
    assert len(runs) == (1 + 1 + 2) * 2 * 3
    summary = summarize(runs, grid)
    assert sum("optimizers.sgd.best_of" in w and "counted as 1 point" in w for w in summary.warnings) == 1
    # A dry run resolves what it can under the same rules.
    make_source(tmp_path, [("sgd", {"lr": 0.3}, 1, "completed", 0.9)])
    partly = resolve_references(parse_grid(REFERRING, "transfer.yaml"), tmp_path, dry_run=True)
    assert partly.optimizers["sgd"].points[0]["lr"] == 0.3
    assert [line.split(" ", 1)[0] for line in partly.unresolved_references()] == ["optimizers.pal.best_of"]


def test_best_point_that_does_not_fit_is_a_one_line_error(tmp_path: Path) -> None:
    make_source(tmp_path, [("sgd", {"lr": 0.1, "momentum": 0.0}, 1, "completed", 0.9)])
    text = """
name: t
problems: [digits_mlp]
optimizers:
  sgd:
    best_of: {sweep: src, problem: digits_mlp}
    fixed: {nesterov: true}
"""
    with pytest.raises(GridError) as exc:
        resolve_references(parse_grid(text, "t.yaml"), tmp_path)
    assert one_line(exc).startswith("t.yaml: optimizers.sgd: invalid combination")


def test_best_of_from_another_optimizer(tmp_path: Path) -> None:
    make_source(tmp_path, [("labpal_sgd", {"momentum": 0.4}, 1, "completed", 0.9)])
    text = """
name: t
problems: [digits_mlp]
optimizers:
  labpal_nsgd:
    best_of: {sweep: src, problem: digits_mlp, optimizer: labpal_sgd}
"""
    grid = resolve_references(parse_grid(text), tmp_path)
    assert grid.optimizers["labpal_nsgd"].points[0]["momentum"] == 0.4


@pytest.mark.parametrize(
    ("best_of", "message"),
    [
        ("{sweep: src}", "optimizers.sgd.best_of.problem: missing (required)"),
        ("{problem: digits_mlp}", "optimizers.sgd.best_of.sweep: missing (required)"),
        ("{sweep: ../x, problem: digits_mlp}", "optimizers.sgd.best_of.sweep: expected a sweep name"),
        ("{sweep: t, problem: digits_mlp}", "optimizers.sgd.best_of.sweep: a grid cannot refer to its own sweep"),
        ("{sweep: src, problem: nope}", "optimizers.sgd.best_of.problem: unknown problem 'nope'"),
        ("{sweep: src, problem: digits_mlp, optimizer: nope}", "optimizers.sgd.best_of.optimizer: unknown optimizer"),
        ("{sweep: src, problem: digits_mlp, optimizer: pal}", "hyperparameters measuring_step_size"),
        ("{sweep: src, problem: digits_mlp, run: 1}", "optimizers.sgd.best_of.run: unknown key 'run'"),
        ("[src, digits_mlp]", "optimizers.sgd.best_of: expected a mapping"),
    ],
)
def test_best_of_form_is_checked_at_load_time(best_of: str, message: str) -> None:
    text = f"name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    best_of: {best_of}\n"
    with pytest.raises(GridError, match=r"^t\.yaml: ") as exc:
        parse_grid(text, "t.yaml")
    assert message in one_line(exc)


def test_best_of_takes_only_fixed_besides() -> None:
    text = "name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    best_of: {sweep: s, problem: digits_mlp}\n"
    for extra in ("grid: {lr: [0.1]}", "zip: {lr: [0.1]}", "vary: {lr: [0.1]}"):
        with pytest.raises(GridError, match="best_of stands for one point"):
            parse_grid(text + f"    {extra}\n")
    with pytest.raises(GridError, match=r"optimizers\.sgd\.fixed\.lr"):
        parse_grid(text + "    fixed: {lr: -1.0}\n")


# ------------------------------------------------------------------------------------ per-optimizer overrides


OVERRIDES = """
name: t
problems: [digits_mlp, synthetic_mlp]
seeds: [1]
budget: {steps: 100, eval_every: 10}
training: {batch_size: 16}
optimizers:
  sgd: {}
  adam:
    budget: {steps: {digits_mlp: 400}}
    training: {batch_size: {synthetic_mlp: 8}, weight_decay: 0.001}
"""


def test_optimizer_sections_override_budget_and_training() -> None:
    grid = parse_grid(OVERRIDES)
    runs = {(r.problem, r.optimizer): r for r in expand(grid)}
    assert (runs["digits_mlp", "sgd"].steps, runs["digits_mlp", "sgd"].batch_size) == (100, 16)
    adam_digits, adam_synthetic = runs["digits_mlp", "adam"], runs["synthetic_mlp", "adam"]
    assert (adam_digits.steps, adam_digits.eval_every, adam_digits.batch_size) == (400, 10, 16)
    assert (adam_synthetic.steps, adam_synthetic.batch_size, adam_synthetic.weight_decay) == (100, 8, 0.001)
    assert runs["synthetic_mlp", "sgd"].weight_decay == 0.0
    # The overrides are part of the run identity and of the grid hash.
    for run in runs.values():
        assert run.run_id == RunSpec.from_dict({k: v for k, v in run.to_dict().items() if k != "run_id"}).run_id
    plain = parse_grid(OVERRIDES.replace("    training: {batch_size: {synthetic_mlp: 8}, weight_decay: 0.001}\n", ""))
    assert plain.grid_hash != grid.grid_hash
    assert {r.run_id for r in expand(plain)} != set(r.run_id for r in runs.values())


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("budget: {steps: 0}", "optimizers.adam.budget.steps: 0 is outside"),
        ("training: {batch_size: {mnist_mlp: 8}}", "optimizers.adam.training.batch_size.mnist_mlp: 'mnist_mlp' is not"),
        ("training: {split: odd}", "optimizers.adam.training.split: unknown split 'odd'"),
        ("training: {lr: 1.0}", "optimizers.adam.training.lr: unknown key 'lr'"),
    ],
)
def test_override_errors(section: str, message: str) -> None:
    text = f"name: t\nproblems: [digits_mlp]\noptimizers:\n  adam:\n    {section}\n"
    with pytest.raises(GridError) as exc:
        parse_grid(text)
    assert message in one_line(exc)


def test_grid_without_new_keys_keeps_its_hash_form() -> None:
    # Sections that use none of vary/best_of/budget/training hash exactly as before those keys existed.
    grid = parse_grid(SOURCE)
    assert set(grid.to_dict()["optimizers"]["sgd"]) == {"grid", "zip", "fixed"}


# -------------------------------------------------------------------------------------------------------- vary


def test_vary_is_one_at_a_time_around_the_base() -> None:
    text = """
name: t
problems: [digits_mlp]
seeds: [1]
optimizers:
  sgd:
    fixed: {lr: 0.1, momentum: 0.5}
    vary:
      lr: [0.3, 0.1, 0.03]
      momentum: [0.0, 0.9]
"""
    grid = parse_grid(text)
    points = [(p["lr"], p["momentum"]) for p in grid.optimizers["sgd"].points]
    # base first, then lr (0.1 is the base again: kept once), then momentum
    assert points == [(0.1, 0.5), (0.3, 0.5), (0.03, 0.5), (0.1, 0.0), (0.1, 0.9)]
    assert len(expand(grid)) == 5
    # With a grid axis: the vary axis around every grid point; without fixed the base is the registry default
    # (lr 0.1, momentum 0.0), so lr 0.1 and momentum 0.0 repeat it.
    grid_axis = "    grid: {lr_schedule: [constant, piecewise]}\n"
    combined = parse_grid(text.replace("    fixed: {lr: 0.1, momentum: 0.5}\n", grid_axis))
    assert len(combined.optimizers["sgd"].points) == 2 * (1 + 2 + 1)


def test_vary_errors() -> None:
    base = "name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n"
    with pytest.raises(GridError, match=r"optimizers\.sgd\.vary\.lr: lr is already set in optimizers\.sgd\.grid"):
        parse_grid(base + "    grid: {lr: [0.1]}\n    vary: {lr: [0.2]}\n")
    with pytest.raises(GridError, match=r"optimizers\.sgd\.vary\.mu: unknown hyperparameter 'mu'"):
        parse_grid(base + "    vary: {mu: [0.2]}\n")
    with pytest.raises(GridError, match=r"optimizers\.sgd\.vary: expected a non-empty mapping"):
        parse_grid(base + "    vary: {}\n")
    with pytest.raises(GridError, match=r"optimizers\.sgd\.vary\.lr\[0\]"):
        parse_grid(base + "    vary: {lr: [-1.0]}\n")
