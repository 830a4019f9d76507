"""Which runs the planner puts into one fused group."""

from __future__ import annotations

from lsbench.fused.groups import group_key, group_runs
from lsbench.runs.spec import RunSpec


def spec(optimizer: str = "sgd", seed: int = 1, problem: str = "digits_mlp", **hparams) -> RunSpec:
    return RunSpec.create(problem, optimizer, hparams, seed, steps=100)


def test_runs_that_differ_only_in_seed_and_vector_hyperparameters_share_a_group() -> None:
    assert group_key(spec(lr=0.1, seed=1)) == group_key(spec(lr=0.3, momentum=0.9, seed=2)) is not None
    assert group_key(spec(nesterov=True, momentum=0.9)) != group_key(spec(momentum=0.9))  # control flow: shared
    assert group_key(spec(problem="digits_cnn")) != group_key(spec())
    assert group_key(spec("pal")) != group_key(spec())


def test_runs_fusion_cannot_train_are_groups_of_one() -> None:
    assert group_key(spec("alig")) is None  # no fused optimizer
    assert group_key(spec("pal", noise_factor=4.0)) is None  # averages batches: trains alone
    assert group_key(spec(problem="matfac_rank4")) is None  # no fused model
    assert group_key(RunSpec.create("digits_mlp", "sgd", {}, 1, steps=100, kind="linescan")) is None


def test_group_runs_fills_groups_in_order_and_keeps_the_unfusable_alone() -> None:
    specs = [spec(lr=0.1 * k, seed=k) for k in range(1, 6)] + [spec("alig")] + [spec("pal"), spec(lr=0.01, seed=9)]
    assert group_runs(specs, 4) == [[0, 1, 2, 3], [4, 7], [5], [6]]
    assert group_runs(specs, 1) == [[k] for k in range(8)]
