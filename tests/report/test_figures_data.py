"""The numbers behind the report's figures, checked against a store filled with hand-computable values."""

import math

import pandas as pd
import pytest

from lsbench.report import figures_data as fd
from lsbench.runs import RunSpec
from lsbench.store import Store

P1, P2 = "cifar10_resnet32", "cifar100_resnet32"


def _spec(problem, optimizer, lr, seed):
    return RunSpec(f"{problem[:8]}{optimizer}{lr}s{seed}", problem, optimizer, {"lr": lr}, seed, 300, 100, 128, 1e-4)


# (problem, optimizer, lr, seed, status, final train loss, val acc, test acc, seconds)
RUNS = [
    (P1, "sgd", 0.1, 1, "completed", 1.0, 0.6, 0.5, 30.0),
    (P1, "sgd", 0.1, 2, "completed", 3.0, 0.8, 0.7, 30.0),
    (P1, "sgd", 0.01, 1, "completed", 2.0, 0.5, 0.4, 30.0),
    (P1, "sgd", 0.01, 2, "failed", None, None, None, None),
    (P1, "pal", 1.0, 1, "completed", 0.5, 0.9, 0.8, 60.0),
    (P1, "pal", 1.0, 2, "completed", 0.5, 0.9, 0.8, 60.0),
    (P1, "pal", 10.0, 1, "diverged", math.nan, 0.1, 0.1, 3.0),
    (P1, "pal", 10.0, 2, "diverged", math.nan, 0.1, 0.1, 3.0),
    (P1, "pal", 0.1, 1, "completed", 1.0, 0.7, 0.6, 60.0),
    (P1, "pal", 0.1, 2, "diverged", math.nan, 0.1, 0.1, 3.0),
    (P2, "sgd", 0.1, 1, "completed", 2.0, 0.4, 0.4, 30.0),
    (P2, "pal", 1.0, 1, "completed", 2.0, 0.5, 0.5, 60.0),
    (P2, "pal", 1.0, 2, "running", None, None, None, None),
]


@pytest.fixture
def data(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.sqlite")
    store.upsert_sweep("s", "0" * 64, "", str(tmp_path), "local")
    specs = [_spec(p, o, lr, s) for p, o, lr, s, *_ in RUNS]
    store.add_runs("s", specs)
    for spec, (_problem, _optimizer, _lr, _seed, status, loss, val, test, seconds) in zip(specs, RUNS, strict=True):
        if status not in ("completed", "diverged"):
            if status != "running":
                store.set_run_status(spec.run_id, status)
            continue
        # Curves at steps 100, 200, 300 reach the final value at 300; val acc rises linearly.
        store.add_metrics_many(
            (spec.run_id, step, name, value * step / 300)
            for step in (100, 200, 300)
            for name, value in (("train_loss", loss), ("val_acc", val), ("test_acc", test))
        )
        summary = {"train_loss": loss, "val_acc": val, "test_acc": test, "seconds": seconds}
        store.set_run_status(spec.run_id, status, summary=summary, step=300 if status == "completed" else 30)
    yield fd.load(store, "s")
    store.close()


def _row(frame, **where):
    for key, value in where.items():
        frame = frame[frame[key] == value]
    assert len(frame) == 1, frame
    return frame.iloc[0]


def test_box_stats_count_diverged_points_at_chance_by_default(data):
    stats = fd.box_stats(data.runs)
    loss = _row(stats, problem=P1, optimizer="pal", metric="train_loss")
    # points: lr=1.0 -> 0.5; lr=0.1 -> mean(1.0, inf) = inf; lr=10 -> inf
    assert (loss.points, loss.diverged_points, loss.diverged_runs) == (3, 2, 3)
    assert loss["min"] == 0.5 and loss["median"] == math.inf and loss.p25 == math.inf and loss.p75 == math.inf
    val = _row(stats, problem=P1, optimizer="pal", metric="val_acc")
    # lr=1.0 -> 0.9; lr=0.1 -> (0.7 + 0.1) / 2 = 0.4; lr=10 -> 0.1 (chance on CIFAR-10)
    assert val["median"] == pytest.approx(0.4) and val.p25 == pytest.approx(0.25) and val.p75 == pytest.approx(0.65)
    assert val["max"] == pytest.approx(0.9) and val["min"] == pytest.approx(0.1)


def test_box_stats_excluded_convention_matches_today(data):
    stats = fd.box_stats(data.runs, "excluded")
    val = _row(stats, problem=P1, optimizer="pal", metric="val_acc")
    # points: lr=1.0 -> 0.9, lr=0.1 -> 0.7 (its diverged seed dropped), lr=10 absent
    assert val.points == 2 and val.diverged_points == 2
    assert val["median"] == pytest.approx(0.8) and val.p25 == pytest.approx(0.75) and val.p75 == pytest.approx(0.85)
    sgd = _row(stats, problem=P1, optimizer="sgd", metric="train_loss")
    # lr=0.1 -> 2.0, lr=0.01 -> 2.0 (its failed seed counted, never averaged)
    assert (sgd.points, sgd.failed_runs, sgd["median"]) == (2, 1, pytest.approx(2.0))
    running = _row(stats, problem=P2, optimizer="pal", metric="val_acc")
    assert (running.unfinished_runs, running.points) == (1, 1)


def test_unknown_convention_is_an_error(data):
    with pytest.raises(ValueError, match="penalized"):
        fd.box_stats(data.runs, "ignored")


def test_best_point_and_its_curves(data):
    best = fd.best_points(data.runs)
    assert _row(best, problem=P1, optimizer="sgd").point == '{"lr":0.1}'
    assert _row(best, problem=P1, optimizer="pal").point == '{"lr":1.0}'
    curves = fd.best_curves(data)
    final = _row(curves, problem=P1, optimizer="sgd", metric="val_acc", step=300)
    assert (final.seeds, final["median"], final["min"], final["max"]) == (2, pytest.approx(0.7), 0.6, 0.8)
    first = _row(curves, problem=P1, optimizer="sgd", metric="train_loss", step=100)
    assert first["median"] == pytest.approx(2.0 / 3)


def test_cost_relative_to_sgd(data):
    table = fd.cost(data.runs)
    pal = _row(table, problem=P1, optimizer="pal")
    # completed pal runs: 60 s / 300 steps; diverged ones: 3 s / 30 steps -> mean(0.2, 0.2, 0.2, 0.1, 0.1, 0.1)
    assert pal.seconds_per_step == pytest.approx(0.15)
    assert pal.relative == pytest.approx(0.15 / 0.1)
    assert pal.gpu_hours == pytest.approx((3 * 60 + 3 * 3) / 3600)
    # sgd on P1: three timed runs of 30 s (the failed one has no time)
    assert pal.gpu_hours_relative == pytest.approx((3 * 60 + 3 * 3) / (3 * 30))
    assert _row(table, problem=P1, optimizer="sgd").gpu_hours_relative == 1.0


def test_performance_profile_fractions(data):
    steps, profile = fd.performance_profiles(fd.best_curves(data), fraction=0.95, taus=[1.0, 2.0, 3.0])
    # P1: target 0.95 * 0.9; pal reaches 0.9 only at 300, sgd (median 0.7) never. P2: target 0.95 * 0.5: pal at 300,
    # sgd (0.4) never.
    assert _row(steps, problem=P1, optimizer="pal").steps == 300
    assert _row(steps, problem=P1, optimizer="sgd").steps == math.inf
    rho = profile.set_index(["optimizer", "tau"])["rho"]
    assert rho["pal", 1.0] == 1.0 and rho["sgd", 3.0] == 0.0


def test_performance_profiles_of_a_sweep_without_the_metric_are_empty():
    # a sweep of regression problems only (matfac_*) has no accuracy curve at all
    curves = pd.DataFrame(columns=["problem", "optimizer", "metric", "step", "median"])
    steps, profile = fd.performance_profiles(curves)
    assert steps.empty and profile.empty


def test_quantile_never_multiplies_infinity_by_zero():
    assert fd.quantile([1.0, math.inf], 0.0) == 1.0
    assert fd.quantile([1.0, 2.0, math.inf], 0.5) == 2.0
    assert fd.quantile([1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(1.75)
    assert math.isnan(fd.quantile([], 0.5))


# A one-at-a-time sweep around the base (mu 0.1, beta 0.2): (mu, beta, seed, status, loss, val)
BASE = {"mu": 0.1, "beta": 0.2}
VARY_RUNS = [
    (0.1, 0.2, 1, "completed", 1.0, 0.8),
    (0.1, 0.2, 2, "completed", 3.0, 0.6),
    (0.01, 0.2, 1, "completed", 2.0, 0.5),
    (0.01, 0.2, 2, "completed", 2.0, 0.7),
    (1.0, 0.2, 1, "completed", 4.0, 0.4),
    (1.0, 0.2, 2, "diverged", math.nan, 0.3),
    (0.1, 0.4, 1, "failed", None, None),
    (0.1, 0.4, 2, "completed", 0.5, 0.9),
    (0.1, 0.0, 1, "diverged", math.nan, 0.1),
    (0.1, 0.0, 2, "diverged", math.nan, 0.1),
    (1.0, 0.4, 1, "completed", 0.1, 0.99),  # off both axes (not a one-at-a-time point): left out
]


@pytest.fixture
def vary_runs(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/v.sqlite")
    store.upsert_sweep("v", "0" * 64, "", str(tmp_path), "local")
    specs = [
        RunSpec(f"v{i}", P1, "pal", {"mu": mu, "beta": beta}, seed, 300, 100, 128, 1e-4)
        for i, (mu, beta, seed, *_) in enumerate(VARY_RUNS)
    ]
    store.add_runs("v", specs)
    for spec, (*_, status, loss, val) in zip(specs, VARY_RUNS, strict=True):
        if status == "failed":
            store.set_run_status(spec.run_id, status)
            continue
        summary = {"train_loss": loss, "val_acc": val, "test_acc": val, "seconds": 1.0}
        store.set_run_status(spec.run_id, status, summary=summary, step=300)
    yield fd.load(store, "v").runs
    store.close()


def _panel(table, hparam):
    mine = table[table["hparam"] == hparam]
    return list(zip(mine["value"], mine["base"], mine["seeds"], mine["diverged"], strict=True)), mine


def test_sensitivity_one_panel_per_varied_hyperparameter_with_the_base_in_each(vary_runs):
    table = fd.sensitivity(vary_runs, {"pal": (BASE, ["mu", "beta"])})
    assert set(table["hparam"]) == {"mu", "beta"} and set(table["convention"]) == {"penalized"}
    mu, rows = _panel(table, "mu")
    assert mu == [(0.01, False, 2, 0), (0.1, True, 2, 0), (1.0, False, 2, 1)]
    # diverged seed of mu=1.0 at chance (0.1 on CIFAR-10) and infinite loss
    assert list(rows["val_acc"]) == pytest.approx([0.6, 0.7, 0.25])
    assert list(rows["train_loss"]) == [2.0, 2.0, math.inf]
    beta, rows = _panel(table, "beta")
    # beta=0.0: both seeds diverged -> chance; beta=0.4: the failed seed never averaged
    assert beta == [(0.0, False, 2, 2), (0.2, True, 2, 0), (0.4, False, 1, 0)]
    assert list(rows["val_acc"]) == pytest.approx([0.1, 0.7, 0.9])


def test_sensitivity_excluded_convention_drops_diverged_runs(vary_runs):
    table = fd.sensitivity(vary_runs, {"pal": (BASE, ["mu", "beta"])}, "excluded")
    mu, rows = _panel(table, "mu")
    assert mu == [(0.01, False, 2, 0), (0.1, True, 2, 0), (1.0, False, 1, 1)]
    assert list(rows["val_acc"]) == pytest.approx([0.6, 0.7, 0.4]) and list(rows["train_loss"]) == [2.0, 2.0, 4.0]
    beta, _ = _panel(table, "beta")
    assert [value for value, *_ in beta] == [0.2, 0.4]  # beta=0.0 diverged everywhere: no value
    assert fd.sensitivity(vary_runs, {"sgd": (BASE, ["mu"])}).empty


def test_best_point_of_a_problem_without_accuracies_has_the_lowest_training_loss(tmp_path):
    """Regression problems (matrix factorization) record no accuracy: the best point is the lowest final loss."""
    store = Store(f"sqlite:///{tmp_path}/r.sqlite")
    store.upsert_sweep("r", "0" * 64, "", str(tmp_path), "local")
    specs = [_spec("matfac_rank10", "sls", lr, 1) for lr in (0.1, 1.0)]
    store.add_runs("r", specs)
    for spec, loss in zip(specs, (1e-3, 1e-9), strict=True):
        store.add_metrics_many([(spec.run_id, 300, "train_loss", loss), (spec.run_id, 300, "val_acc", math.nan)])
        summary = {"train_loss": loss, "val_acc": math.nan, "test_acc": math.nan, "seconds": 1.0}
        store.set_run_status(spec.run_id, "completed", summary=summary, step=300)
    best = fd.best_points(fd.load(store, "r").runs)
    store.close()
    assert len(best) == 1 and best.iloc[0]["train_loss"] == 1e-9
