"""Per-step cost of the line searches relative to SGD on CIFAR ResNet-20 (batch 128, CIFAR-shaped synthetic data).

What is timed is one optimizer step as the trainer runs it (closure construction, forward/backward passes,
probes, parameter updates), on pre-drawn batches so that data sampling is excluded. The optimizers are
interleaved within every repeat, each on its own copy of the same initial model, so that drifts of the machine
(thermal, other load) hit all of them alike. Each figure is a ratio to SGD's median step time measured in the same
repeat; min/median/max are over repeats.

LABPAL alternates a measurement (n_a·k batches, mostly forward passes, then 2·n_a·k probe forwards) with training
steps. Both phases are timed every repeat, and its cost per sampled batch is that of a whole cycle of one
measurement plus the n_SGD − 1 further updates of the cycle:
(T_measurement + (n_SGD − 1)·t_train) / (n_a·k + n_SGD − 1). Running 1,000 real training steps per repeat would
take minutes per cycle on a CPU without changing what is measured.

Usage: ``python benchmarks/optim_overhead.py [--repeats 5] [--steps 3] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from lsbench.optim import ClosureFactory, TrainingContext, build_optimizer
from lsbench.problems import build_problem

BATCH = 128
CONTENDERS = {
    "sgd": {"lr": 0.1, "momentum": 0.9},
    "pal": {"measuring_step_size": 0.1, "update_step_adaptation": 1.0, "direction_adaptation": 0.4},
    "sls": {},
    "labpal_nsgd": {},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], None]) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def hardware(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    line = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        line += f", {torch.cuda.get_device_name(device)}"
    return line + f", device {device}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per optimizer and repeat")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    problem = build_problem("cifar10shaped_resnet20", seed=0, device=device, batch_size=BATCH)
    pool = [problem.train.next_batch() for _ in range(16)]
    context = TrainingContext(total_steps=150_000, batch_size=BATCH, train_size=40_000)
    runners = {}
    for name, hparams in CONTENDERS.items():
        model = copy.deepcopy(problem.model)
        factory = ClosureFactory(model, problem.loss_fn, weight_decay=1e-4)
        optimizer = build_optimizer(name, model.parameters(), hparams, context)
        runners[name] = (factory, optimizer, [0])

    def run_steps(name: str, count: int) -> None:
        factory, optimizer, counter = runners[name]
        for _ in range(count):
            inputs, targets = pool[counter[0] % len(pool)]
            optimizer.step(factory(inputs, targets, seed=counter[0]))
            counter[0] += 1

    labpal = runners["labpal_nsgd"][1]
    measurement_batches = labpal.param_groups[0]["approximation_batches"] * labpal.shared["k"]
    sgd_steps = labpal.param_groups[0]["sgd_steps"]

    def labpal_cycle_cost() -> tuple[float, float]:
        """Time one whole measurement and ``args.steps`` training steps; return (cost per batch, train step)."""
        labpal.shared["updates_since_measurement"] = sgd_steps  # the next step starts a measurement
        measurement = timed(device, lambda: run_steps("labpal_nsgd", measurement_batches))
        assert not labpal.shared["measuring"], "the measurement did not finish in n_a·k steps"
        train_step = timed(device, lambda: run_steps("labpal_nsgd", args.steps)) / args.steps
        per_batch = (measurement + (sgd_steps - 1) * train_step) / (measurement_batches + sgd_steps - 1)
        return per_batch, train_step

    for name in CONTENDERS:  # warm-up: allocator, kernels, LABPAL's first measurement
        run_steps(name, measurement_batches + 2 if name == "labpal_nsgd" else 2)

    ratios: dict[str, list[float]] = {name: [] for name in ("pal", "sls", "labpal_nsgd", "labpal_train_step")}
    sgd_times = []
    for repeat in range(args.repeats):
        order = list(CONTENDERS)[repeat % len(CONTENDERS) :] + list(CONTENDERS)[: repeat % len(CONTENDERS)]
        seconds: dict[str, float] = {}
        for name in order:
            if name == "labpal_nsgd":
                seconds["labpal_nsgd"], seconds["labpal_train_step"] = labpal_cycle_cost()
            else:
                seconds[name] = timed(device, lambda name=name: run_steps(name, args.steps)) / args.steps
        sgd_times.append(seconds["sgd"])
        for name in ratios:
            ratios[name].append(seconds[name] / seconds["sgd"])

    print(f"optim_overhead: CIFAR ResNet-20, batch {BATCH}, {args.repeats} repeats x {args.steps} steps")
    print(f"hardware: {hardware(device)}")
    print(f"SGD step: median {statistics.median(sgd_times) * 1e3:.1f} ms")
    print(f"LABPAL cycle: {measurement_batches} measurement batches + {sgd_steps - 1} training updates")
    print(f"{'optimizer':<28}{'min':>8}{'median':>8}{'max':>8}   (x SGD per sampled batch)")
    labels = {
        "pal": "PAL (goal <= 1.45)",
        "sls": "SLS",
        "labpal_nsgd": "LABPAL cycle (goal <= 1.10)",
        "labpal_train_step": "LABPAL training step only",
    }
    for name, values in ratios.items():
        print(f"{labels[name]:<28}{min(values):>8.3f}{statistics.median(values):>8.3f}{max(values):>8.3f}")


if __name__ == "__main__":
    main()
