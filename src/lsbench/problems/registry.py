"""The registry of benchmark problems and :func:`build_problem`, which turns a name and a seed into a model,
a loss and device-resident data ready to train.

A problem is named ``<dataset>_<model>``; :data:`PROBLEMS` is the single source of truth of valid names. Each
entry carries the training budget and evaluation schedule shared by all optimizers on it: for the CIFAR
problems those of the thesis experiments, for the small problems values that make CPU runs finish quickly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from lsbench.problems.datasets import load_dataset
from lsbench.problems.models import build_model
from lsbench.problems.sampling import BatchSampler, DataSplit
from lsbench.problems.transforms import Normalize

__all__ = ["PROBLEMS", "Problem", "ProblemDefaults", "ProblemSpec", "build_problem", "get_problem"]


@dataclass(frozen=True)
class ProblemDefaults:
    """Training settings of a problem that every optimizer shares, so results stay comparable.

    Attributes:
        batch_size: samples per training batch.
        steps: training budget in steps; one step is one sampled batch (thesis Chapter 6 accounting).
        weight_decay: L2 coefficient the trainer adds to the loss (1e-4 in the PAL chapter).
        eval_every: evaluation interval in steps.
    """

    batch_size: int
    steps: int
    weight_decay: float
    eval_every: int


@dataclass(frozen=True)
class ProblemSpec:
    """A named problem: which dataset, which model, and its default training settings."""

    name: str
    dataset: str
    model: str
    defaults: ProblemDefaults
    description: str


def _spec(dataset: str, model: str, defaults: ProblemDefaults, description: str) -> ProblemSpec:
    return ProblemSpec(f"{dataset}_{model}", dataset, model, defaults, description)


# Thesis setting for the CIFAR problems (PAL chapter, App. A.2.3): batch 128, 150k steps, weight decay 1e-4.
_CIFAR_DEFAULTS = ProblemDefaults(batch_size=128, steps=150_000, weight_decay=1e-4, eval_every=1_000)
# Sized so plain SGD (lr 0.1) reaches > 90 % test accuracy (about 96 % MLP, 99 % CNN) within a few CPU
# seconds: 600 steps of 32 are 16 epochs of the 1,197 training images.
_DIGITS_DEFAULTS = ProblemDefaults(batch_size=32, steps=600, weight_decay=0.0, eval_every=100)

PROBLEMS: dict[str, ProblemSpec] = {
    spec.name: spec
    for spec in (
        *(
            _spec(dataset, model, _CIFAR_DEFAULTS, f"{title} (45k/5k split), {net} with option-A shortcuts")
            for dataset, title in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"))
            for model, net in (("resnet20", "ResNet-20"), ("resnet32", "ResNet-32"))
        ),
        _spec(
            "cifar10small",
            "resnet20",
            ProblemDefaults(batch_size=128, steps=10_000, weight_decay=1e-4, eval_every=500),
            "8 % of CIFAR-10 (4,000 training images), ResNet-20: the line-analysis problem of Chapter 5",
        ),
        _spec("digits", "mlp", _DIGITS_DEFAULTS, "scikit-learn 8x8 digits, MLP 64-128-10: CPU demo"),
        _spec("digits", "cnn", _DIGITS_DEFAULTS, "scikit-learn 8x8 digits, 2-layer CNN with BatchNorm: CPU demo"),
        _spec(
            "synthetic",
            "mlp",
            ProblemDefaults(batch_size=64, steps=500, weight_decay=0.0, eval_every=100),
            "Synthetic 1x8x8 inputs labelled by a random linear teacher, MLP: fast tests",
        ),
        _spec(
            "cifar10shaped",
            "resnet20",
            ProblemDefaults(batch_size=128, steps=1_000, weight_decay=1e-4, eval_every=250),
            "Synthetic CIFAR-10-shaped images with CIFAR augmentation, ResNet-20: step-cost benchmarks",
        ),
    )
}


def get_problem(name: str) -> ProblemSpec:
    """Look up a problem by name; an unknown name raises ``ValueError`` listing the valid names."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; valid problems: {', '.join(sorted(PROBLEMS))}") from None


@dataclass
class Problem:
    """A built problem, ready to train.

    Attributes:
        spec: what was built.
        model: on the requested device, initialised from the seed.
        loss_fn: mean cross-entropy (weight decay is the trainer's business, see ``spec.defaults``).
        train: infinite sampler of augmented, normalized training batches.
        validation, test: normalized evaluation splits on the device.
        num_classes: number of classes.
        train_size: number of training samples (e.g. for LABPAL's noise factor and SLS).
    """

    spec: ProblemSpec
    model: nn.Module
    loss_fn: nn.Module
    train: BatchSampler
    validation: DataSplit
    test: DataSplit
    num_classes: int
    train_size: int


def build_problem(
    name_or_spec: str | ProblemSpec,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "default",
    download: bool = False,
) -> Problem:
    """Load the data, build the model and the training sampler of a problem on ``device``.

    The model is initialised as ``torch.manual_seed(seed)`` followed by its constructor would, but under a
    forked RNG, so the caller's global RNG state is left untouched; it is built on the CPU and then moved,
    so its initial parameters do not depend on the device. The sampler derives its own shuffling and
    augmentation streams from ``seed``.

    Args:
        name_or_spec: a key of :data:`PROBLEMS` or a custom :class:`ProblemSpec`.
        seed: run seed (model initialisation, shuffling, augmentation).
        device: where the model and all data live.
        batch_size: overrides ``spec.defaults.batch_size``.
        data_dir: dataset root (CIFAR only); default ``$LSBENCH_DATA`` or ``~/.lsbench/data``.
        split: ``"default"`` or ``"labpal"`` (CIFAR-10/100 only), see :mod:`lsbench.problems.datasets`.
        download: fetch a missing CIFAR folder with torchvision's downloader.
    """
    spec = name_or_spec if isinstance(name_or_spec, ProblemSpec) else get_problem(name_or_spec)
    device = torch.device(device)
    data = load_dataset(spec.dataset, data_dir=data_dir, split=split, download=download)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec.model, tuple(data.train_inputs.shape[1:]), data.num_classes)
    normalize = Normalize(data.mean, data.std, device=device)
    train = BatchSampler(
        data.train_inputs.to(device),
        data.train_targets.to(device),
        batch_size=spec.defaults.batch_size if batch_size is None else batch_size,
        seed=seed,
        normalize=normalize,
        augmentation=data.augmentation,
    )
    return Problem(
        spec=spec,
        model=model.to(device),
        loss_fn=nn.CrossEntropyLoss(),
        train=train,
        validation=DataSplit(normalize(data.validation_inputs.to(device)), data.validation_targets.to(device)),
        test=DataSplit(normalize(data.test_inputs.to(device)), data.test_targets.to(device)),
        num_classes=data.num_classes,
        train_size=train.num_samples,
    )
