import pytest
import torch
import torch.nn.functional as F

from lsbench.problems import (
    PROBLEMS,
    DataSplit,
    ProblemDefaults,
    ProblemSpec,
    build_problem,
    evaluate,
    get_problem,
)
from lsbench.problems.datasets import DATASETS
from lsbench.problems.models import MODELS


def test_problem_names_are_dataset_underscore_model():
    for name, spec in PROBLEMS.items():
        assert name == spec.name == f"{spec.dataset}_{spec.model}"
        assert spec.dataset in DATASETS
        assert spec.model in MODELS
        assert spec.description


@pytest.mark.parametrize("name", ["cifar10_resnet20", "cifar10_resnet32", "cifar100_resnet20", "cifar100_resnet32"])
def test_cifar_problems_use_the_thesis_budget(name):
    assert get_problem(name).defaults == ProblemDefaults(
        batch_size=128, steps=150_000, weight_decay=1e-4, eval_every=1_000
    )


def test_registry_holds_the_small_and_benchmark_problems():
    assert get_problem("cifar10small_resnet20").defaults.steps == 10_000
    for name in ("digits_mlp", "digits_cnn", "synthetic_mlp", "cifar10shaped_resnet20"):
        assert name in PROBLEMS


def test_unknown_problem_lists_the_valid_names():
    with pytest.raises(ValueError, match="cifar10_resnet56") as excinfo:
        get_problem("cifar10_resnet56")
    for name in PROBLEMS:
        assert name in str(excinfo.value)


def test_build_problem_is_reproducible_from_the_seed():
    first, again = build_problem("synthetic_mlp", seed=4), build_problem("synthetic_mlp", seed=4)
    other = build_problem("synthetic_mlp", seed=5)
    for p, q in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(next(first.model.parameters()), next(other.model.parameters()))
    assert torch.equal(first.train.next_batch()[1], again.train.next_batch()[1])


def test_build_problem_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_problem("synthetic_mlp", seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_built_problem_exposes_data_model_and_sizes():
    problem = build_problem("synthetic_mlp", seed=1, batch_size=16)
    assert problem.spec is get_problem("synthetic_mlp")
    assert (problem.train_size, problem.num_classes) == (1024, 10)
    assert (len(problem.validation), len(problem.test)) == (256, 256)
    assert problem.train.batch_size == 16
    assert problem.train.batches_per_epoch == 64
    inputs, targets = problem.train.next_batch()
    assert problem.model(inputs).shape == (16, 10)
    assert targets.dtype == torch.int64


def test_custom_specs_are_built_and_unknown_parts_rejected():
    defaults = ProblemDefaults(batch_size=8, steps=10, weight_decay=0.0, eval_every=5)
    problem = build_problem(ProblemSpec("synthetic_cnn", "synthetic", "cnn", defaults, "custom"), seed=0)
    assert problem.train.batch_size == 8
    with pytest.raises(ValueError, match="unknown dataset 'emnist'"):
        build_problem(ProblemSpec("emnist_mlp", "emnist", "mlp", defaults, "custom"), seed=0)


def test_cifar_shaped_problem_takes_a_resnet20_step():
    problem = build_problem("cifar10shaped_resnet20", seed=0, batch_size=8)
    inputs, targets = problem.train.next_batch()
    assert inputs.shape == (8, 3, 32, 32)
    loss = problem.loss_fn(problem.model(inputs), targets)
    loss.backward()
    assert torch.isfinite(loss)


def test_evaluate_matches_a_full_pass_in_eval_mode_and_restores_the_mode():
    defaults = ProblemDefaults(batch_size=32, steps=10, weight_decay=0.0, eval_every=5)
    problem = build_problem(ProblemSpec("synthetic_cnn", "synthetic", "cnn", defaults, "BatchNorm model"), seed=2)
    model = problem.model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):  # a few steps so that BatchNorm's running statistics differ from batch statistics
        inputs, targets = problem.train.next_batch()
        optimizer.zero_grad()
        problem.loss_fn(model(inputs), targets).backward()
        optimizer.step()

    model.train()
    loss, accuracy = evaluate(model, problem.loss_fn, problem.validation, batch_size=100)  # 256 = 100+100+56
    assert model.training
    assert all(module.training for module in model.modules())
    model.eval()
    with torch.no_grad():
        logits = model(problem.validation.inputs)
    assert loss == pytest.approx(F.cross_entropy(logits, problem.validation.targets).item(), rel=1e-5)
    assert accuracy == (logits.argmax(1) == problem.validation.targets).float().mean().item()
    evaluate(model, problem.loss_fn, problem.validation)
    assert not model.training


def test_evaluate_rejects_an_empty_split():
    empty = DataSplit(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        evaluate(torch.nn.Linear(4, 2), torch.nn.CrossEntropyLoss(), empty)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_problems_train_with_plain_sgd_within_their_default_budget(name):
    problem = build_problem(name, seed=1)
    optimizer = torch.optim.SGD(problem.model.parameters(), lr=0.1)
    problem.model.train()
    for _ in range(problem.spec.defaults.steps):
        inputs, targets = problem.train.next_batch()
        optimizer.zero_grad()
        problem.loss_fn(problem.model(inputs), targets).backward()
        optimizer.step()
    _, accuracy = evaluate(problem.model, problem.loss_fn, problem.test)
    assert accuracy >= 0.90
