"""Every shipped grid in sweeps/grids/: ``sweep submit --dry-run`` succeeds and its run counts are the thesis' grid
tables x seeds per optimizer and network; the settings each grid's comments promise; and the ``best_of`` grids
resolved from source sweeps the tests fill directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests import paths

from lsbench.store import Store
from lsbench.sweep.cli import main
from lsbench.sweep.grid import Grid, load_grid
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.plan import RunSpec, expand
from lsbench.sweep.references import resolve_references

GRIDS = paths.GRIDS

# Appendix A.2.3: points per network.
PAL_CHAPTER = {"sgd": 12, "adam": 10, "rmsprop": 8, "pal": 16, "sls": 16, "alig": 12, "sgd_hd": 12, "cocob": 8}
# Appendix C.4.1: points on CIFAR-10 ResNet-20 (GOLS-I 4 x 3 x 2 x 2, PLS 2 x 2 x 4 x 3).
LABPAL_CHAPTER = {"sgd": 12, "pal": 18, "labpal_sgd": 36, "labpal_nsgd": 36, "sls": 16, "gols_i": 48, "pls": 48}
LABPAL_COMPARED = ("sgd", "pal", "labpal_sgd", "labpal_nsgd", "sls", "gols_i", "pls")
PAL_COMPARED = tuple(PAL_CHAPTER)
LABPAL_TRANSFER = [
    f"{d}_{n}" for d in ("cifar10", "cifar100", "svhn") for n in ("resnet20", "densenet40", "mobilenetv2")
]
NOISE_PROBLEMS = ["cifar10_resnet20", "cifar10_mobilenetv2", "cifar10_densenet121"]
# Sensitivity (one at a time): the default point + one per varied value.
LABPAL_SENSITIVITY = 1 + 5 + 5 + 7 + 3 + 5 + 5 + 3  # |B_a|, n_SGD, alpha, k(t), momentum, s_max, eps
PAL_SENSITIVITY = 1 + 6 + 5 + 5 + 4  # mu, beta, alpha, s_max

# grid -> (problems, points per optimizer on every problem, seeds). best_of sections count 1 point.
EXPECTED: dict[str, tuple[list[str], dict[str, int], int]] = {
    "demo_digits": (
        ["digits_mlp"],
        {"sgd": 3, "adam": 2, "pal": 2, "labpal_nsgd": 1, "labpal_sgd": 1, "sls": 1},
        2,
    ),
    "pal_cifar10": (
        ["cifar10_resnet32", "cifar10_densenet40", "cifar10_mobilenetv2", "cifar10_efficientnet_b0"],
        PAL_CHAPTER,
        3,
    ),
    "pal_cifar100": (
        ["cifar100_resnet32", "cifar100_densenet40", "cifar100_mobilenetv2", "cifar100_efficientnet_b0"],
        PAL_CHAPTER,
        3,
    ),
    "pal_tolstoi": (["tolstoi_charrnn"], PAL_CHAPTER, 3),
    "pal_imagenet_resnet50": (["imagenet_resnet50_imagenet"], dict.fromkeys(PAL_COMPARED, 1), 1),
    "pal_imagenet_densenet121": (["imagenet_densenet121_imagenet"], dict.fromkeys(PAL_COMPARED, 1), 1),
    "pal_sensitivity": (["cifar10_resnet32"], {"pal": PAL_SENSITIVITY}, 3),
    "pal_pls": (["cifar10_resnet32"], {"pal": 1, "pls": 1}, 3),
    "labpal_cifar10": (["cifar10_resnet20"], LABPAL_CHAPTER, 3),
    "labpal_transfer": (LABPAL_TRANSFER, dict.fromkeys(LABPAL_COMPARED, 1), 3),
    "labpal_batch32": (NOISE_PROBLEMS, dict.fromkeys(LABPAL_COMPARED, 1), 3),
    "labpal_batch8": (NOISE_PROBLEMS, dict.fromkeys(LABPAL_COMPARED, 1), 3),
    "labpal_sensitivity_sgd": (NOISE_PROBLEMS, {"labpal_sgd": LABPAL_SENSITIVITY}, 3),
    "labpal_sensitivity_nsgd": (NOISE_PROBLEMS, {"labpal_nsgd": LABPAL_SENSITIVITY}, 3),
    # Chapter 5 line analysis: SGD with momentum 0 and 0.9.
    "lines_digits": (["digits_mlp"], {"sgd": 2}, 1),
    "lines_cifar10small": (["cifar10small_resnet20"], {"sgd": 2}, 1),
}
TOTALS = {  # the runs each grid's header comment states
    "pal_cifar10": 1128,
    "pal_cifar100": 1128,
    "pal_tolstoi": 282,
    "pal_imagenet_resnet50": 8,
    "pal_imagenet_densenet121": 8,
    "pal_sensitivity": 63,
    "pal_pls": 6,
    "labpal_cifar10": 642,
    "labpal_transfer": 189,
    "labpal_batch32": 63,
    "labpal_batch8": 63,
    "labpal_sensitivity_sgd": 306,
    "labpal_sensitivity_nsgd": 306,
}
REFERRING = {
    "pal_imagenet_resnet50": "pal_cifar100",
    "pal_imagenet_densenet121": "pal_cifar100",
    "labpal_transfer": "labpal_cifar10",
    "labpal_batch32": "labpal_cifar10",
    "labpal_batch8": "labpal_cifar10",
}


def test_every_shipped_grid_has_expected_counts() -> None:
    assert sorted(p.stem for p in GRIDS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_counts(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sweep submit --dry-run`` succeeds with no source sweep under the root; best_of sections count 1 point."""
    assert main(["submit", str(GRIDS / f"{name}.yaml"), "--dry-run", "--json", "--root", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    problems, points, seeds = EXPECTED[name]
    assert data["sweep"] == name
    assert sorted(data["problems"]) == sorted(problems)  # the CLI prints JSON with sorted keys
    for problem in problems:
        table = data["problems"][problem]
        assert {opt: row["points"] for opt, row in table.items()} == points, problem
        assert {row["seeds"] for row in table.values()} == {seeds}
        assert {opt: row["runs"] for opt, row in table.items()} == {opt: n * seeds for opt, n in points.items()}
    assert data["total"]["runs"] == len(problems) * sum(points.values()) * seeds
    if name in TOTALS:
        assert data["total"]["runs"] == TOTALS[name]
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


# --------------------------------------------------------------------------------------------- grid settings


def settings(grid: Grid) -> set[tuple[str, str, int, int, int, float, str]]:
    return {
        (r.problem, r.optimizer, r.steps, r.eval_every, r.batch_size, r.weight_decay, r.split) for r in expand(grid)
    }


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_pal_chapter_densenets_train_alig_sgd_hd_cocob_with_batch_100(dataset: str) -> None:
    grid = load_grid(GRIDS / f"pal_{dataset}.yaml")
    for problem, optimizer, steps, eval_every, batch, decay, split in settings(grid):
        expected = 100 if problem.endswith("densenet40") and optimizer in ("alig", "sgd_hd", "cocob") else 128
        assert (steps, eval_every, batch, decay, split) == (150_000, 1_000, expected, 1e-4, "default"), (
            problem,
            optimizer,
        )
    points = {opt: og.points for opt, og in grid.optimizers.items()}
    assert {(p["max_lr"], p["momentum"]) for p in points["alig"]} == {
        (lr, m) for lr in (10.0, 1.0, 0.1, 0.01) for m in (0.85, 0.9, 0.95)
    }
    assert {(p["lr"], p["hypergradient_lr"]) for p in points["sgd_hd"]} == {
        (lr, b) for lr in (0.1, 0.01, 0.001) for b in (0.1, 0.01, 0.001, 0.0001)
    }
    assert [p["alpha"] for p in points["cocob"]] == [25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 175.0, 200.0]


def test_labpal_cifar10_gols_i_and_pls_grids() -> None:
    grid = load_grid(GRIDS / "labpal_cifar10.yaml")
    gols = grid.optimizers["gols_i"].points
    assert {p["initial_step_size"] for p in gols} == {0.001, 0.01, 0.1, 1.0}
    assert {p["momentum"] for p in gols} == {0.0, 0.4, 0.9}
    assert {p["step_size_scaling"] for p in gols} == {5.0, 2.0}  # 5 = 1/0.2, see the grid's comment
    assert {p["wolfe_c2"] for p in gols} == {0.9, 0.99}
    pls = grid.optimizers["pls"].points
    assert {p["armijo_constant"] for p in pls} == {0.3, 0.4}
    assert {p["acceptance_threshold"] for p in pls} == {0.1, 0.2}
    assert {p["initial_step_size"] for p in pls} == {0.001, 0.01, 0.1, 1.0}
    assert {p["momentum"] for p in pls} == {0.0, 0.4, 0.9}


def one_at_a_time(points: tuple[dict, ...]) -> dict[str, list]:
    """The hyperparameters each point changes from the first (the base); every point changes at most one."""
    base, changed = points[0], {}
    for point in points[1:]:
        diff = [k for k in point if point[k] != base[k]]
        assert len(diff) == 1, point
        changed.setdefault(diff[0], []).append(point[diff[0]])
    return changed


@pytest.mark.parametrize("variant", ["sgd", "nsgd"])
def test_labpal_sensitivity_is_one_at_a_time_around_the_defaults(variant: str) -> None:
    grid = load_grid(GRIDS / f"labpal_sensitivity_{variant}.yaml")
    og = grid.optimizers[f"labpal_{variant}"]
    base = og.points[0]
    assert (base["approximation_batch_size"], base["sgd_steps"], base["update_step_adaptation"]) == (1280, 1000, 1.8)
    assert (base["momentum"], base["max_step_size"], base["noise_factor"]) == (0.0, 1.0, 1.0)
    assert base["batch_size_schedule"] == [[0.0, 1.0], [0.5, 2.0], [0.75, 4.0]]
    changed = one_at_a_time(og.points)
    assert set(changed) == {
        "approximation_batch_size",
        "sgd_steps",
        "update_step_adaptation",
        "batch_size_schedule",
        "momentum",
        "max_step_size",
        "noise_factor",
    }
    assert changed["approximation_batch_size"] == [128, 256, 640, 2560, 5120]
    steps = {(r.problem, r.steps, r.batch_size, r.split) for r in expand(grid)}
    assert steps == {
        ("cifar10_resnet20", 150_000, 128, "labpal"),
        ("cifar10_mobilenetv2", 150_000, 128, "labpal"),
        ("cifar10_densenet121", 100_000, 128, "labpal"),
    }


def test_pal_sensitivity_is_one_at_a_time_around_the_figure_a6_baseline() -> None:
    grid = load_grid(GRIDS / "pal_sensitivity.yaml")
    points = grid.optimizers["pal"].points
    base = points[0]
    assert (base["measuring_step_size"], base["direction_adaptation"]) == (0.1, 0.2)
    assert (base["update_step_adaptation"], base["max_step_size"]) == (1.0, 10.0)
    changed = one_at_a_time(points)
    assert set(changed) == {"measuring_step_size", "direction_adaptation", "update_step_adaptation", "max_step_size"}
    assert changed["measuring_step_size"] == pytest.approx([10**e for e in (-3, -2.5, -2, -1.5, -0.5, 0)], rel=1e-15)


# ------------------------------------------------------------------------------------ resolved references


def fill_source(root: Path, grid_name: str, problems: list[str]) -> dict[tuple[str, str], dict]:
    """A source sweep holding, per optimizer and problem, the grid's first two points (seed 1) completed, the
    second with the higher validation accuracy; returns the expected best hparams per (problem, optimizer)."""
    grid = load_grid(GRIDS / f"{grid_name}.yaml")
    sweep = SweepDir(root / grid_name)
    sweep.path.mkdir(parents=True)
    url = sweep.default_store_url()
    sweep.write_meta({"name": grid_name, "store": url, "backend": "local"})
    best = {}
    with Store(url) as store:
        store.upsert_sweep(grid_name, grid.grid_hash, grid.source_text, str(sweep.path), "local")
        for problem in problems:
            for optimizer, og in grid.optimizers.items():
                budget, training = grid.settings(optimizer, problem)
                for val_acc, point in zip((0.5, 0.6), og.points[:2], strict=True):
                    spec = RunSpec.create(
                        problem,
                        optimizer,
                        point,
                        1,
                        steps=budget.steps,
                        eval_every=budget.eval_every,
                        batch_size=training.batch_size,
                        weight_decay=training.weight_decay,
                        split=training.split,
                    )
                    store.add_runs(grid_name, [spec])
                    summary = {"train_loss": 1.0 - val_acc, "val_acc": val_acc, "test_acc": val_acc - 0.02}
                    store.set_run_status(spec.run_id, "completed", summary=summary)
                best[problem, optimizer] = dict(og.points[1])
    return best


@pytest.mark.parametrize("batch", [32, 8])
def test_labpal_batch_grids_resolve_to_the_c41_best_points(batch: int, tmp_path: Path) -> None:
    best = fill_source(tmp_path, "labpal_cifar10", ["cifar10_resnet20"])
    grid = resolve_references(load_grid(GRIDS / f"labpal_batch{batch}.yaml"), tmp_path)
    assert grid.unresolved_references() == ()
    factor = 128 // batch
    runs = expand(grid)
    assert len(runs) == TOTALS[f"labpal_batch{batch}"]
    for run in runs:
        expected = dict(best["cifar10_resnet20", run.optimizer])
        nominal = 100_000 if run.problem == "cifar10_densenet121" else 150_000
        if run.optimizer.startswith("labpal"):
            expected["noise_factor"] = None  # Eq. 6.8 from batch and training-set size; the trainer scales steps
            assert run.steps == nominal
        else:
            assert run.steps == nominal * factor
        assert run.hparams == expected
        assert (run.batch_size, run.eval_every, run.split) == (batch, 1000 * factor, "labpal")


def test_labpal_transfer_resolves_and_dry_run_uses_the_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    best = fill_source(tmp_path, "labpal_cifar10", ["cifar10_resnet20"])
    grid = resolve_references(load_grid(GRIDS / "labpal_transfer.yaml"), tmp_path)
    runs = expand(grid)
    assert len(runs) == TOTALS["labpal_transfer"]
    assert all(run.hparams == best["cifar10_resnet20", run.optimizer] for run in runs)
    assert {(r.problem, r.steps) for r in runs if "densenet" in r.problem} == {
        (f"{d}_densenet40", 100_000) for d in ("cifar10", "cifar100", "svhn")
    }
    assert {r.split for r in runs} == {"labpal"}
    # The C.4.1 best points on CIFAR-10 ResNet-20 are the very runs of the grid search (same ids).
    source_ids = {r.run_id for r in expand(load_grid(GRIDS / "labpal_cifar10.yaml"))}
    assert {r.run_id for r in runs if r.problem == "cifar10_resnet20"} <= source_ids
    # The CLI's dry run resolves from the source under --root as well.
    path = str(GRIDS / "labpal_transfer.yaml")
    assert main(["submit", path, "--dry-run", "--json", "--root", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["runs"] == TOTALS["labpal_transfer"]


@pytest.mark.parametrize(("network", "source"), [("resnet50", "resnet32"), ("densenet121", "densenet40")])
def test_pal_imagenet_grids_resolve_to_the_cifar100_best_points(network: str, source: str, tmp_path: Path) -> None:
    best = fill_source(tmp_path, "pal_cifar100", [f"cifar100_{source}"])
    grid = resolve_references(load_grid(GRIDS / f"pal_imagenet_{network}.yaml"), tmp_path)
    runs = expand(grid)
    assert len(runs) == 8
    for run in runs:
        assert run.hparams == best[f"cifar100_{source}", run.optimizer]
        dense = network == "densenet121" and run.optimizer in ("alig", "sgd_hd", "cocob")
        assert (run.steps, run.batch_size, run.seed) == (500_000, 100 if dense else 128, 1)


def test_missing_source_fails_a_real_submit_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = str(GRIDS / "labpal_batch32.yaml")
    assert main(["submit", path, "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "optimizers.labpal_sgd.best_of.sweep: no sweep 'labpal_cifar10' under" in err
    assert not (tmp_path / "labpal_batch32").exists()
