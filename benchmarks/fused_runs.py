"""Runs per hour of fused multi-run training against runs trained one at a time, counting training steps alone.

A run of the thesis' grids is a small model trained for many steps; alone it leaves a device mostly idle (kernel
launches, Python dispatch). :mod:`lsbench.fused` trains K runs of one problem as one fused model. This benchmark
times, in one process and on one device:

* the **baseline**: one run as the ordinary trainer steps it (its optimizer, its closure, one batch per step);
* **fused K** for K = 1, 2, 4, 8, 16: a :class:`lsbench.fused.trainer.FusedGroup` of K runs (different seeds and
  learning rates) advancing one step of every copy at a time.

Each figure is the median over ``--repeats`` of ``--steps`` timed steps after warm-up; runs per hour = K runs per
(step time x steps per run). Evaluation, checkpoints and start-up are excluded: they cost the same per run either
way (start-up is what persistent workers remove, see ``make demo``). Ratios are to the baseline measured in the same
run. On a CPU both sides run single-threaded by default (``--threads``), as the local pool runs one worker per core:
the figures are per core, and a machine's pool multiplies both alike. Problems: the digits MLP (batch 32, its
registry setting) and a CIFAR-shaped ResNet-20 (batch 128; synthetic images, the cost does not depend on the
pixels) -- ResNet-20 only with ``--resnet`` on a CPU, where one step takes about 0.7 s per run.

Usage: ``python benchmarks/fused_runs.py [--device cpu|cuda] [--optimizer sgd] [--resnet] [--ks 1,2,4,8,16]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lsbench.fused.trainer import FusedGroup
from lsbench.optim import TrainingContext, build_optimizer, step_report
from lsbench.problems import build_problem
from lsbench.train import TrainConfig
from lsbench.train.precision import closure_factory
from lsbench.train.trainer import StepSums
from optim_overhead import hardware, timed

STEPS_PER_RUN = 150_000  # a pal_cifar10 run: runs per hour = K * 3600 / (seconds per step * this)
HPARAMS = {
    "sgd": lambda k: {"lr": 0.05 * (1 + k % 4), "momentum": 0.9},
    "pal": lambda k: {"measuring_step_size": 0.1 * (1 + k % 4)},
    "adam": lambda k: {"lr": 1e-3 * (1 + k % 4)},
}


def configs(problem: str, optimizer: str, copies: int, device: str, batch_size: int) -> list[TrainConfig]:
    return [
        TrainConfig.create(
            problem, optimizer, HPARAMS[optimizer](k), seed=k + 1, device=device, batch_size=batch_size, steps=10**6
        )
        for k in range(copies)
    ]


def baseline_step_seconds(config: TrainConfig, steps: int, repeats: int) -> float:
    """Seconds per step of one run as the ordinary trainer steps it (lsbench.train.trainer._Run.train's loop)."""
    run = config.run
    device = torch.device(config.device)
    problem = build_problem(run.problem, seed=run.seed, device=device, batch_size=run.batch_size)
    context = TrainingContext(run.steps, problem.train.batch_size, problem.train_size)
    optimizer = build_optimizer(run.optimizer, problem.model.parameters(), run.hparams, context)
    closures = closure_factory(problem.model, problem.loss_fn, run.weight_decay, run.precision, device)
    sums = StepSums(device)
    step = [0]

    def advance() -> None:
        for _ in range(steps):
            step[0] += 1
            inputs, targets = problem.train.next_batch()
            loss = optimizer.step(closures(inputs, targets, seed=run.seed * 1_000_003 + step[0]))
            sums.add(step[0], loss, step_report(optimizer))

    advance()  # warm-up
    return statistics.median(timed(device, advance) for _ in range(repeats)) / steps


def fused_step_seconds(group_configs: list[TrainConfig], steps: int, repeats: int) -> float:
    group = FusedGroup(group_configs, [None] * len(group_configs), [None] * len(group_configs))
    group.model.train()
    device = torch.device(group_configs[0].device)

    def advance() -> None:
        for _ in range(steps):
            group.advance()

    advance()  # warm-up
    return statistics.median(timed(device, advance) for _ in range(repeats)) / steps


def compare(problem: str, optimizer: str, batch_size: int, ks: list[int], args: argparse.Namespace) -> None:
    device = args.device
    base = baseline_step_seconds(configs(problem, optimizer, 1, device, batch_size)[0], args.steps, args.repeats)
    base_rate = 3600 / (base * STEPS_PER_RUN)
    print(f"\n{problem} (batch {batch_size}), {optimizer}: runs per hour at {STEPS_PER_RUN:,} steps per run")
    print(f"{'':<14}{'ms per step':>12}{'runs/hour':>12}{'vs alone':>10}")
    print(f"{'alone':<14}{base * 1e3:>12.3f}{base_rate:>12.3f}{1.0:>9.2f}x")
    for k in ks:
        seconds = fused_step_seconds(configs(problem, optimizer, k, device, batch_size), args.steps, args.repeats)
        rate = k * 3600 / (seconds * STEPS_PER_RUN)
        print(f"{f'fused K={k}':<14}{seconds * 1e3:>12.3f}{rate:>12.3f}{rate / base_rate:>9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--optimizer", default="sgd", choices=sorted(HPARAMS))
    parser.add_argument("--ks", default="1,2,4,8,16", help="comma-separated group sizes")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet", action="store_true", help="also ResNet-20 on a CPU (slow); always on CUDA")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (default 1: the local pool runs one worker per core)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    print(f"hardware: {hardware(torch.device(args.device))}")
    compare("digits_mlp", args.optimizer, 32, ks, args)
    if args.resnet or args.device.startswith("cuda"):
        compare("cifar10shaped_resnet20", args.optimizer, 128, ks, args)


if __name__ == "__main__":
    main()
