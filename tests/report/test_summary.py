"""Statistics of the Table A.1 summary: hand-computed example, best point, quartiles, counts and speed."""

import dataclasses
import itertools
import random
import time

import numpy as np
import pytest

from lsbench.report import RunOutcome, SummaryRow, aggregate, canonical_hparams

approx = pytest.approx


def outcome(hparams, seed, status="completed", loss=1.0, val=0.5, test=0.5, problem="p", optimizer="o"):
    return RunOutcome(problem, optimizer, hparams, seed, status, loss, val, test)


def test_statistics_equal_a_hand_computation(example):
    (row,) = aggregate(example)
    assert (row.problem, row.optimizer) == ("cifar10_resnet32", "sgd_mom")
    # Points A, B and D completed; C only diverged and E never finished.
    assert (row.points, row.runs, row.completed, row.diverged, row.failed, row.unfinished) == (3, 14, 7, 4, 2, 1)
    assert row.seeds_per_point == 2
    # Per-point means: loss A 2.0, B 1.0, D 5.0; val 0.6, 0.85, 0.4; test 0.5, 0.75, 0.3.
    assert row.train_loss_min == approx(1.0)
    assert (row.train_loss_median, row.train_loss_p25, row.train_loss_p75) == approx((2.0, 1.5, 3.5))
    assert row.val_acc_max == approx(0.85)
    assert (row.val_acc_median, row.val_acc_p25, row.val_acc_p75) == approx((0.6, 0.5, 0.725))
    assert row.test_acc_max == approx(0.75)
    assert (row.test_acc_median, row.test_acc_p25, row.test_acc_p75) == approx((0.5, 0.4, 0.625))
    assert row.best_hparams == {"lr": 0.01}
    assert (row.best_val_acc, row.best_test_acc) == approx((0.85, 0.75))


def test_counts_partition_the_runs(example):
    (row,) = aggregate(example)
    assert row.runs == row.completed + row.diverged + row.failed + row.unfinished
    states = ["failed", "timeout", "preempted", "cancelled", "planned", "queued", "running", "mystery", "diverged"]
    (row,) = aggregate([outcome({"lr": 0.1}, seed, status) for seed, status in enumerate(states)])
    assert (row.runs, row.completed, row.diverged, row.failed, row.unfinished) == (9, 0, 1, 4, 4)


def test_best_point_is_chosen_on_validation_not_test():
    outcomes = [
        outcome({"lr": 0.1}, 1, val=0.9, test=0.5),
        outcome({"lr": 0.1}, 2, val=0.8, test=0.5),
        outcome({"lr": 0.01}, 1, val=0.84, test=0.99),
        outcome({"lr": 0.01}, 2, val=0.84, test=0.99),
    ]
    (row,) = aggregate(outcomes)
    # Mean val 0.85 beats 0.84 although the other point has the far better test accuracy.
    assert row.best_hparams == {"lr": 0.1}
    assert (row.best_val_acc, row.best_test_acc) == approx((0.85, 0.5))
    assert row.test_acc_max == approx(0.99)


def test_best_point_ties_are_broken_by_canonical_json_whatever_the_order():
    points = [{"lr": 0.1, "mu": 0.9}, {"mu": 0.5, "lr": 0.1}, {"lr": 0.01, "mu": 0.9}]
    expected = min(points, key=canonical_hparams)  # {"lr":0.01,"mu":0.9}
    for order in itertools.permutations(points):
        (row,) = aggregate([outcome(hparams, 1, val=0.75, test=0.1 * i) for i, hparams in enumerate(order)])
        assert row.best_hparams == expected


def test_points_are_identified_by_canonical_json():
    outcomes = [outcome({"a": 1, "b": 2.5}, 1, val=0.2), outcome({"b": 2.5, "a": 1}, 2, val=0.4)]
    (row,) = aggregate(outcomes)
    assert row.points == 1
    assert row.seeds_per_point == 2
    assert row.val_acc_max == approx(0.3)


def test_missing_metrics_are_skipped_per_metric():
    outcomes = [
        outcome({"lr": 1}, 1, loss=1.0, val=0.2, test=None),
        outcome({"lr": 1}, 2, loss=None, val=0.4, test=0.6),
        outcome({"lr": 1}, 3, loss=3.0, val=float("nan"), test=0.8),
        outcome({"lr": 2}, 1, loss=5.0, val=None, test=None),
    ]
    (row,) = aggregate(outcomes)
    assert row.points == 2
    assert row.train_loss_min == approx(2.0)
    assert row.train_loss_median == approx(3.5)
    # Point lr=2 has no accuracy at all: it contributes to the loss only and cannot be the best point.
    assert (row.val_acc_max, row.val_acc_median) == approx((0.3, 0.3))
    assert (row.test_acc_max, row.test_acc_median) == approx((0.7, 0.7))
    assert row.best_hparams == {"lr": 1}
    assert row.best_test_acc == approx(0.7)


def test_rows_without_completed_runs_have_no_statistics():
    outcomes = [outcome({"lr": 1}, 1, "diverged"), outcome({"lr": 2}, 1, "planned")]
    (row,) = aggregate(outcomes)
    assert (row.points, row.runs, row.diverged, row.unfinished, row.seeds_per_point) == (0, 2, 1, 1, None)
    statistics = {f.name: getattr(row, f.name) for f in dataclasses.fields(SummaryRow)}
    for name in ("problem", "optimizer", "points", "runs", "completed", "diverged", "failed", "unfinished"):
        statistics.pop(name)
    assert statistics.pop("varied") == ()
    assert set(statistics.values()) == {None}


def test_quartiles_are_exactly_numpy_linear_percentiles():
    rng = np.random.default_rng(0)
    values = rng.random((17, 3))  # 17 points × (loss, val, test), one seed each
    outcomes = [outcome({"lr": i}, 1, loss=loss, val=v, test=t) for i, (loss, v, t) in enumerate(values.tolist())]
    (row,) = aggregate(outcomes)
    for column, prefix in enumerate(("train_loss", "val_acc", "test_acc")):
        p25, median, p75 = np.percentile(values[:, column], [25, 50, 75])
        assert getattr(row, f"{prefix}_p25") == p25
        assert getattr(row, f"{prefix}_median") == median
        assert getattr(row, f"{prefix}_p75") == p75
    assert row.train_loss_min == values[:, 0].min()
    assert row.val_acc_max == values[:, 1].max()
    assert row.test_acc_max == values[:, 2].max()


def test_rows_are_sorted_by_problem_then_optimizer():
    keys = [("b", "sgd"), ("a", "sgd"), ("b", "adam"), ("a", "pal"), ("a", "adam")]
    rows = aggregate([outcome({}, 1, problem=p, optimizer=o) for p, o in keys])
    assert [(r.problem, r.optimizer) for r in rows] == sorted(keys)
    assert aggregate([]) == []


def test_outcomes_are_not_mutated_and_rows_own_their_hparams():
    hparams = {"lr": 0.1}
    (row,) = aggregate([outcome(hparams, 1)])
    row.best_hparams["lr"] = 5
    assert hparams == {"lr": 0.1}


def test_aggregating_5000_runs_is_fast():
    rng = random.Random(0)
    statuses = ["completed"] * 8 + ["diverged", "failed"]
    outcomes = [
        outcome(
            {"lr": lr, "momentum": mu, "nesterov": True},
            seed,
            rng.choice(statuses),
            loss=rng.random(),
            val=rng.random(),
            test=rng.random(),
            problem=f"problem{problem}",
            optimizer=f"opt{optimizer}",
        )
        for problem, optimizer, lr, mu, seed in itertools.product(range(5), range(4), range(28), range(3), range(3))
    ][:5000]
    start = time.perf_counter()
    rows = aggregate(outcomes)
    elapsed = time.perf_counter() - start
    assert len(rows) == 20
    assert sum(row.runs for row in rows) == 5000
    assert elapsed < 1.0, f"aggregating 5000 runs took {elapsed:.3f} s"
