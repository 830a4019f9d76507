"""The matrix factorization problems of Vaswani et al. (2019, §7.2): fixed data, linear models of rank 1, 4 and 10,
squared loss without accuracy; rank 10 interpolates, ranks 1 and 4 stall at a floor."""

import json
import math

import pytest
import torch
from torch import nn

from lsbench.problems import build_problem, evaluate, get_problem
from lsbench.problems.datasets import load_dataset, make_matrix_factorization, matrix_factorization_target
from lsbench.problems.models import LinearFactorization
from lsbench.train import TrainConfig, train

RANKS = (1, 4, 10)


def test_the_data_is_generated_once_and_for_all_with_the_documented_shapes():
    data, again = make_matrix_factorization(), load_dataset("matfac")
    for name in ("train", "validation", "test"):
        for part in ("inputs", "targets"):
            assert torch.equal(getattr(data, f"{name}_{part}"), getattr(again, f"{name}_{part}"))
    assert data.train_inputs.shape == (1000, 6) and data.train_targets.shape == (1000, 10)
    assert data.validation_inputs.shape == data.test_inputs.shape == (250, 6)
    assert data.validation_targets.shape == data.test_targets.shape == (250, 10)
    assert data.train_inputs.dtype == data.train_targets.dtype == torch.float32
    assert (data.task, data.num_classes, data.mean, data.std, data.augmentation) == ("regression", 10, (), (), None)
    assert not torch.equal(data.validation_inputs, data.test_inputs)


def test_targets_are_a_fixed_badly_scaled_matrix_times_gaussian_inputs():
    target = matrix_factorization_target()
    assert target.shape == (10, 6) and target.dtype == torch.float64
    assert torch.equal(target, matrix_factorization_target())
    row_scales = target.abs().max(dim=1).values
    assert row_scales[-1] < 1e-10 and row_scales[:-1].min() > 1e-2  # rows scaled linearly from 1 to 1e-10
    singular = torch.linalg.svdvals(target)
    expected = torch.tensor([2.52, 0.634, 0.321, 0.278, 0.190, 0.119], dtype=torch.float64)
    assert torch.allclose(singular, expected, rtol=1e-2)  # as the docstring says

    data = make_matrix_factorization()
    assert torch.allclose(data.train_targets.double(), data.train_inputs.double() @ target.T, atol=1e-6)
    inputs = data.train_inputs
    assert inputs.mean().abs() < 0.05 and (inputs.std() - 1).abs() < 0.05


def test_the_run_seed_draws_the_model_and_the_batch_order_but_not_the_data():
    first, second = build_problem("matfac_rank4", seed=1), build_problem("matfac_rank4", seed=2)
    pairs = [(first.train.dataset(), second.train.dataset()), (first.validation, second.validation)]
    for one, two in [*pairs, (first.test, second.test)]:
        assert torch.equal(one.inputs, two.inputs) and torch.equal(one.targets, two.targets)
    assert not torch.equal(first.model.first.weight, second.model.first.weight)
    assert not torch.equal(first.train.next_batch()[0], second.train.next_batch()[0])


@pytest.mark.parametrize("rank", RANKS)
def test_the_model_is_a_bias_free_product_of_two_matrices_of_the_given_rank(rank):
    problem = build_problem(f"matfac_rank{rank}", seed=1)
    model = problem.model
    assert isinstance(model, LinearFactorization)
    assert [tuple(p.shape) for p in model.parameters()] == [(rank, 6), (10, rank)]
    inputs, targets = problem.train.next_batch()
    assert inputs.shape == (100, 6) and targets.shape == (100, 10)
    product = model.second.weight @ model.first.weight
    assert torch.allclose(model(inputs), inputs @ product.T, atol=1e-6)
    assert isinstance(problem.loss_fn, nn.MSELoss)
    assert (problem.train_size, problem.num_classes) == (1000, 10)
    loss, accuracy = evaluate(model, problem.loss_fn, problem.validation, batch_size=64)
    assert loss == pytest.approx(((model(problem.validation.inputs) - problem.validation.targets) ** 2).mean().item())
    assert math.isnan(accuracy)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LinearFactorization(6, 10, rank=0)


def test_registry_defaults_make_runs_of_seconds():
    for rank in RANKS:
        spec = get_problem(f"matfac_rank{rank}")
        assert (spec.dataset, spec.model) == ("matfac", f"rank{rank}")
        assert (spec.defaults.batch_size, spec.defaults.steps, spec.defaults.weight_decay) == (100, 3000, 0.0)


def test_rank_ten_interpolates_while_ranks_one_and_four_stall_at_their_floors(tmp_path):
    final = {}
    for rank in RANKS:
        out = tmp_path / f"rank{rank}"
        result = train(TrainConfig.create(f"matfac_rank{rank}", "sls", seed=1, steps=300, eval_every=100), out)
        assert result.status == "completed" and result.steps_done == 300
        for point in result.history:
            for key in ("train_loss", "val_loss", "test_loss", "mean_effective_lr"):
                assert math.isfinite(point[key]), (rank, key)
            assert math.isnan(point["val_acc"]) and math.isnan(point["test_acc"])  # a regression has no accuracy
        stored = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert stored[-1]["val_acc"] is None and stored[-1]["train_loss"] == result.final["train_loss"]
        final[rank] = result.final
    # population floors: (σ2² + … + σ6²)/10 ≈ 0.063 for rank 1, (σ5² + σ6²)/10 ≈ 0.005 for rank 4
    assert 0.04 < final[1]["train_loss"] < 0.09 and 0.04 < final[1]["test_loss"] < 0.09
    assert 0.003 < final[4]["train_loss"] < 0.008 and 0.003 < final[4]["test_loss"] < 0.008
    assert final[10]["train_loss"] < 1e-8 and final[10]["test_loss"] < 1e-8
