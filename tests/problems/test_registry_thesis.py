"""The thesis problems in the registry: their defaults (with the source of each), and one training step
through the trainer for every dataset kind, on tiny data folders in the real formats."""

import math

import pytest
import torch
from tests.problems.test_datasets import write_cifar
from tests.problems.test_datasets_thesis import write_image_folder, write_mnist, write_svhn, write_tolstoi

from lsbench.problems import PROBLEMS, ProblemDefaults, ProblemSpec, build_problem, get_problem
from lsbench.problems.evaluation import SequenceCrossEntropy
from lsbench.problems.sampling import BatchSampler, DataSplit, StreamedSplit, StreamingSampler
from lsbench.train import TrainConfig, train

PAL_CIFAR = ProblemDefaults(batch_size=128, steps=150_000, weight_decay=1e-4, eval_every=1_000)  # App. A.2.3
LABPAL_DENSENET = ProblemDefaults(batch_size=128, steps=100_000, weight_decay=1e-4, eval_every=1_000)  # App. C.4
IMAGENET = ProblemDefaults(batch_size=128, steps=500_000, weight_decay=1e-4, eval_every=10_000)  # App. A.2.3

THESIS_PROBLEMS = {
    **{
        f"{dataset}_{model}": PAL_CIFAR
        for dataset in ("cifar10", "cifar100")
        for model in ("resnet32", "densenet40", "mobilenetv2", "efficientnet_b0")
    },
    **{f"{dataset}_{model}": PAL_CIFAR for dataset in ("cifar10", "cifar100", "svhn") for model in ("resnet20",)},
    **{f"{dataset}_mobilenetv2": PAL_CIFAR for dataset in ("cifar10", "cifar100", "svhn")},
    **{f"{dataset}_densenet121": LABPAL_DENSENET for dataset in ("cifar10", "cifar100", "svhn")},
    "svhn_densenet40": LABPAL_DENSENET,
    **{f"cifar10_resnet{depth}": PAL_CIFAR for depth in (18, 34, 50)},
    **{
        f"cifar10small_{model}": ProblemDefaults(128, 10_000, 1e-4, 500)
        for model in ("resnet20", "resnet18", "mobilenetv2")
    },
    "imagenet_resnet50_imagenet": IMAGENET,
    "imagenet_densenet121_imagenet": IMAGENET,
    # DeepOBS tolstoi_char_rnn: batch 50, 200 epochs of 914 batches; DeepOBS mnist_mlp: 128, 100 epochs of 390.
    "tolstoi_charrnn": ProblemDefaults(batch_size=50, steps=182_800, weight_decay=0.0, eval_every=914),
    "mnist_mlp": ProblemDefaults(batch_size=128, steps=39_000, weight_decay=0.0, eval_every=390),
}


@pytest.mark.parametrize("name", sorted(THESIS_PROBLEMS))
def test_thesis_problems_carry_the_thesis_defaults(name):
    spec = get_problem(name)
    assert spec.defaults == THESIS_PROBLEMS[name]
    assert spec.description


def test_tolstoi_epoch_arithmetic_behind_its_budget():
    # 70 % of DeepOBS' War and Peace (test set 653,237 characters = 20 %) in sequences of 50, batches of 50.
    characters = 653_237 * 5
    train_characters = (characters - characters // 5) - (characters - characters // 5) // 8
    assert (train_characters - 1) // 50 // 50 == 914


def _config(name, data_dir, **changes):
    return TrainConfig.create(name, "sgd", {}, steps=1, eval_every=1, batch_size=2, data_dir=str(data_dir), **changes)


def _finite_step(result):
    assert result.status == "completed" and result.steps_done == 1
    point = result.final
    assert all(math.isfinite(point[key]) for key in ("train_loss", "val_loss", "test_loss"))
    assert 0.0 <= point["val_acc"] <= 1.0 and 0.0 <= point["test_acc"] <= 1.0


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("svhn_resnet20", write_svhn),
        ("mnist_mlp", write_mnist),
        ("tolstoi_charrnn", write_tolstoi),
        ("cifar100_mobilenetv2", lambda root: write_cifar(root, "cifar100")),
    ],
)
def test_problem_takes_a_training_step_through_the_trainer(tmp_path, name, write):
    write(tmp_path)
    _finite_step(train(_config(name, tmp_path)))


def test_tolstoi_problem_trains_on_token_sequences_with_the_sequence_loss(tmp_path):
    write_tolstoi(tmp_path)
    problem = build_problem("tolstoi_charrnn", seed=1, data_dir=tmp_path, batch_size=4)
    assert isinstance(problem.loss_fn, SequenceCrossEntropy) and isinstance(problem.train, BatchSampler)
    inputs, targets = problem.train.next_batch()
    assert inputs.dtype == targets.dtype == torch.int64 and inputs.shape == targets.shape == (4, 50)
    assert problem.model(inputs).shape == (4, 50, problem.num_classes)
    assert isinstance(problem.validation, DataSplit) and problem.validation.inputs.dtype == torch.int64


@pytest.fixture
def imagenet_cnn(monkeypatch):
    """A registered ImageNet problem with the small CNN, so the streamed pipeline trains in milliseconds."""
    spec = ProblemSpec("imagenet_cnn", "imagenet", "cnn", ProblemDefaults(2, 3, 1e-4, 3), "test: streamed data")
    monkeypatch.setitem(PROBLEMS, spec.name, spec)
    monkeypatch.setenv("LSBENCH_NUM_WORKERS", "0")
    return spec.name


def test_streamed_imagenet_problem_trains_and_evaluates_through_the_trainer(tmp_path, imagenet_cnn):
    write_image_folder(tmp_path)
    problem = build_problem(imagenet_cnn, seed=1, data_dir=tmp_path)
    assert isinstance(problem.train, StreamingSampler) and isinstance(problem.test, StreamedSplit)
    assert (problem.train_size, len(problem.validation), len(problem.test), problem.num_classes) == (6, 6, 3, 3)
    inputs, targets = problem.train.next_batch()
    assert inputs.shape == (2, 3, 224, 224) and targets.dtype == torch.int64
    result = train(TrainConfig.create(imagenet_cnn, "sgd", {"lr": 0.01}, data_dir=str(tmp_path)))
    assert result.status == "completed" and len(result.history) == 1
    assert all(math.isfinite(result.final[key]) for key in ("train_loss", "val_loss", "test_loss"))


def test_streamed_problem_resumes_from_a_checkpoint_with_the_same_batches(tmp_path, imagenet_cnn):
    write_image_folder(tmp_path / "data")
    config = TrainConfig.create(imagenet_cnn, "sgd", {"lr": 0.01}, data_dir=str(tmp_path / "data"), checkpoint_every=1)
    whole = train(config, tmp_path / "whole")
    calls = iter(range(100))
    stopped = train(config, tmp_path / "resumed", should_stop=lambda: next(calls) == 1)  # after step 2
    assert stopped.status == "interrupted" and stopped.steps_done == 2
    resumed = train(config, tmp_path / "resumed")
    assert resumed.resumed_from_step == 2
    keys = ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc")
    assert [[point[key] for key in keys] for point in resumed.history] == [
        [point[key] for key in keys] for point in whole.history
    ]


def test_registered_imagenet_problems_build_on_the_streamed_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LSBENCH_NUM_WORKERS", "0")
    write_image_folder(tmp_path)
    problem = build_problem("imagenet_densenet121_imagenet", seed=1, data_dir=tmp_path, batch_size=1)
    assert isinstance(problem.train, StreamingSampler) and problem.num_classes == 3
    assert problem.model.classifier.out_features == 3
