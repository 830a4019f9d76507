"""Rough GPU-time estimates for the dry run of a sweep.

The estimate of one run is::

    seconds = step_seconds(problem, batch) * optimizer_factor(optimizer, hparams) * training_steps
            + evaluations * eval_seconds(problem, batch)

**Reference GPU:** the thesis' NVIDIA GeForce GTX 1080 Ti (all its experiments ran on them, TensorFlow 1.15 /
PyTorch). :data:`STEP_SECONDS` is the time of one plain training step (forward + backward + SGD update of one
sampled batch) at the problem's registry batch size on that card. These are rough, order-of-magnitude numbers,
not measurements of this code base:

* CIFAR ResNet-32 at batch 128: about 0.05 s per step (≈ 20 s per 391-step epoch, the usual figure for this
  small, memory-bound network on a 1080 Ti with an input pipeline); 150,000 steps ≈ 2.1 h.
* CIFAR ResNet-20: about 0.035 s per step (20 vs 32 layers, with fixed per-step overhead).
* CIFAR-100 costs the same as CIFAR-10 (only the last layer is wider); the 8 % subset and the synthetic
  CIFAR-shaped problem cost the same per step as full CIFAR-10 on ResNet-20.
* digits (8x8 images, MLP or small CNN, batch 32): about 0.002 s per step, dominated by kernel launches.
* synthetic MLP: about 0.001 s per step.
* matrix factorization (``matfac_rank*``: 6 → k → 10 linear maps, batch 100): about 0.001 s per step, kernel
  launches only.

Other batch sizes scale the step time linearly (a fair approximation for the CIFAR networks, pessimistic for the
tiny problems). A problem missing from the table falls back to its model's entry in :data:`MODEL_STEP_SECONDS`,
then to :data:`DEFAULT_STEP_SECONDS`.

**Optimizer factors** (:data:`OPTIMIZER_FACTORS`) are the cost of one step relative to plain SGD, counted in
forward-pass equivalents with a backward pass ≈ 2 forward passes, so a plain step (1 forward + 1 backward) is 3:

* SGD, Adam, RMSprop: 1.0.
* PAL: 2 forwards + 1 backward = 4 / 3 ≈ 1.33 (the extra forward at the measuring point μ).
* SLS: 1 forward + 1 backward plus its Armijo trials, one forward each; assuming 1.5 trials per step on average
  (one when the reset step is accepted at once, more while backtracking): (3 + 1.5) / 3 = 1.5.
* LABPAL (both variants): 1.0 per sampled batch. Training steps are plain forward + backward steps; a
  measurement over n_a·k batches costs k forward + backward passes, (n_a - 1)·k forwards and 2·n_a·k probe forwards,
  i.e. n_a·k + 2k/3 step-equivalents, which is < 0.1 % above 1.0 at n_SGD = 1000. LABPAL's noise factor scales
  the number of steps it trains (thesis Eq. 6.8): a numeric ``noise_factor`` hyperparameter is applied; null (derived
  from the training-set size, unknown at plan time) counts as 1.
* GOLS-I: one forward + backward per sampled batch (each evaluation of its line search is one step): 1.0.
* ALI-G, SGD-HD, COCOB: a plain step with cheap extra arithmetic: 1.0.
* PLS: one forward + backward per step plus a per-sample gradient pass (vmap) of about the same cost: 2.0.
* Exact line search (``exact_ls``): 1 forward + 1 backward plus up to ``max_evaluations`` probe forwards; it spends
  the whole default budget of 20 unless it stops early (at its step cap, or when the bracket cannot be split),
  so (3 + 20) / 3 ≈ 7.67 (a grid that lowers ``max_evaluations`` is overestimated).
* Unknown optimizers count 1.0.

**Evaluation:** every ``eval_every`` steps and at the end, the validation and test splits are evaluated
(forward only, 1/3 of a step per batch): :data:`EVAL_SAMPLES` images per evaluation.

**Line measurements** (``linescan`` runs): every measured line evaluates the measured data set at every step size,
forward only: ``lines · step sizes · samples / batch · FORWARD_FRACTION · step`` seconds on top of the training.
The samples are the setting's subset, else :data:`DATASET_TRAIN_SAMPLES` of the problem's dataset (the validation
set is taken to be as large). The thesis' measurement (10,000 lines of 167 x 4,000 ResNet-20 inferences) comes
out at about 7 days on the 1080 Ti by this model; the thesis took "almost three weeks" with its data loaders.

GPU-hours of a run are its seconds / 3600 times the GPUs it reserves (``resources.gpus_per_run``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from lsbench.problems import PROBLEMS

__all__ = [
    "DATASET_EVAL_SAMPLES",
    "DATASET_TRAIN_SAMPLES",
    "DEFAULT_STEP_SECONDS",
    "EVAL_SAMPLES",
    "FORWARD_FRACTION",
    "MODEL_STEP_SECONDS",
    "OPTIMIZER_FACTORS",
    "REFERENCE_GPU",
    "STEP_SECONDS",
    "optimizer_factor",
    "run_seconds",
    "scan_seconds",
    "step_seconds",
    "training_steps",
]

REFERENCE_GPU = "NVIDIA GeForce GTX 1080 Ti"

FORWARD_FRACTION = 1 / 3
"""Cost of a forward pass relative to forward + backward (backward ≈ 2 forwards)."""

STEP_SECONDS: dict[str, float] = {
    "cifar10_resnet20": 0.035,
    "cifar10_resnet32": 0.05,
    "cifar100_resnet20": 0.035,
    "cifar100_resnet32": 0.05,
    "cifar10small_resnet20": 0.035,
    "cifar10shaped_resnet20": 0.035,
    "cifar10shaped_resnet32": 0.05,
    "digits_mlp": 0.002,
    "digits_cnn": 0.002,
    "synthetic_mlp": 0.001,
}
"""Seconds per plain training step on :data:`REFERENCE_GPU` at the problem's registry batch size."""

MODEL_STEP_SECONDS: dict[str, float] = {
    "resnet20": 0.035,
    "resnet32": 0.05,
    "mlp": 0.002,
    "cnn": 0.002,
    # rough assumptions scaled from the ResNets by multiply-adds per image, not measurements
    "densenet40": 0.12,
    "densenet121": 0.25,
    "mobilenetv2": 0.09,
    "efficientnet_b0": 0.12,
    "resnet18": 0.08,
    "resnet34": 0.14,
    "resnet50": 0.25,
    "resnet50_imagenet": 0.8,  # 224 x 224 images
    "densenet121_imagenet": 0.9,
    "charrnn": 0.02,  # 50 sequences of 50 characters
    "rank1": 0.001,  # matrix factorization: two tiny linear maps
    "rank4": 0.001,
    "rank10": 0.001,
}
"""Seconds per plain training step by model, at the problem's registry batch size (used when a problem has no
entry of its own in :data:`STEP_SECONDS`)."""

DEFAULT_STEP_SECONDS = 0.05

EVAL_SAMPLES: dict[str, int] = {
    "cifar10_resnet20": 15_000,
    "cifar10_resnet32": 15_000,
    "cifar100_resnet20": 15_000,
    "cifar100_resnet32": 15_000,
    "cifar10small_resnet20": 15_000,
    "cifar10shaped_resnet20": 2_000,
    "cifar10shaped_resnet32": 2_000,
    "digits_mlp": 600,
    "digits_cnn": 600,
    "synthetic_mlp": 1_000,
}
"""Validation + test images evaluated at every evaluation point (default split; the LABPAL split has 20,000)."""

DATASET_TRAIN_SAMPLES: dict[str, int] = {"digits": 1_197, "cifar10small": 4_000, "cifar10": 45_000, "cifar100": 45_000}
"""Training-set sizes of the datasets line measurements are usually run on (others count 10,000)."""

DATASET_EVAL_SAMPLES: dict[str, int] = {
    "cifar10": 15_000,
    "cifar100": 15_000,
    "cifar10small": 15_000,
    "svhn": 46_032,  # 20,000 validation + 26,032 test
    "mnist": 20_000,
    "imagenet": 60_000,  # 10 per class held out + the 50,000 official validation images
    "tolstoi": 1_300,  # sequences of 50 characters in the validation and test parts
    "matfac": 500,  # 250 validation + 250 test samples
}
"""Fallback by dataset for problems without an entry of their own in :data:`EVAL_SAMPLES`."""

OPTIMIZER_FACTORS: dict[str, float] = {
    "sgd": 1.0,
    "adam": 1.0,
    "rmsprop": 1.0,
    "pal": 4 / 3,
    "sls": 1.5,
    "labpal_sgd": 1.0,
    "labpal_nsgd": 1.0,
    "gols_i": 1.0,
    "alig": 1.0,
    "sgd_hd": 1.0,
    "cocob": 1.0,
    "pls": 2.0,
    "exact_ls": 23 / 3,
}
"""Cost of one step relative to a plain SGD step (see the module docstring)."""


def step_seconds(problem: str, batch_size: int) -> float:
    """Seconds of one plain training step of ``problem`` at ``batch_size`` on :data:`REFERENCE_GPU`."""
    spec = PROBLEMS.get(problem)
    reference_batch = spec.defaults.batch_size if spec is not None else 128
    if problem in STEP_SECONDS:
        seconds = STEP_SECONDS[problem]
    elif spec is not None and spec.model in MODEL_STEP_SECONDS:
        seconds = MODEL_STEP_SECONDS[spec.model]
    else:
        seconds = DEFAULT_STEP_SECONDS
    return seconds * batch_size / reference_batch


def optimizer_factor(optimizer: str) -> float:
    """Cost of one step of ``optimizer`` relative to plain SGD (1.0 if unknown)."""
    return OPTIMIZER_FACTORS.get(optimizer, 1.0)


def training_steps(optimizer: str, hparams: Mapping[str, Any], steps: int) -> int:
    """Steps the run will train: LABPAL's numeric noise factor rescales the budget as the optimizer does."""
    if optimizer.startswith("labpal"):
        factor = hparams.get("noise_factor")
        if isinstance(factor, int | float) and not isinstance(factor, bool) and math.isfinite(factor) and factor > 0:
            return max(1, round(steps * factor))
    return steps


def run_seconds(
    problem: str,
    optimizer: str,
    hparams: Mapping[str, Any],
    steps: int,
    eval_every: int,
    batch_size: int,
    split: str = "default",
) -> float:
    """Estimated seconds of one run on :data:`REFERENCE_GPU`."""
    return _run_seconds(problem, optimizer, training_steps(optimizer, hparams, steps), eval_every, batch_size, split)


@functools.lru_cache(maxsize=4096)
def _run_seconds(problem: str, optimizer: str, trained: int, eval_every: int, batch_size: int, split: str) -> float:
    step = step_seconds(problem, batch_size)
    evaluations = math.ceil(trained / eval_every) if eval_every > 0 else 1
    spec = PROBLEMS.get(problem)
    samples = EVAL_SAMPLES.get(problem) or DATASET_EVAL_SAMPLES.get(spec.dataset if spec else "", 10_000)
    if split == "labpal" and problem.startswith("cifar"):
        samples = 20_000
    eval_seconds = samples / batch_size * FORWARD_FRACTION * step
    return step * optimizer_factor(optimizer) * trained + evaluations * eval_seconds


def scan_seconds(problem: str, steps: int, batch_size: int, linescan: Mapping[str, Any]) -> float:
    """Estimated seconds of the line measurements of a linescan run (``linescan``: its resolved settings; empty for
    other runs, which measure nothing) on :data:`REFERENCE_GPU`."""
    if not linescan:
        return 0.0
    from lsbench.lines.settings import ScanSettings

    settings = ScanSettings(**linescan)
    spec = PROBLEMS.get(problem)
    samples = settings.samples or DATASET_TRAIN_SAMPLES.get(spec.dataset if spec else "", 10_000)
    inferences = steps // settings.every * len(settings.step_sizes) * samples
    return inferences / batch_size * FORWARD_FRACTION * step_seconds(problem, batch_size)
