"""Benchmark: load + validate + expand + summarize a grid of about 100,000 runs (all in memory).

    python benchmarks/plan_expansion.py [--repeats 5] [--profile]

Prints the number of runs, the median seconds of the whole pipeline and of each stage, runs per second, and the
hardware and versions. Target: under 2 s on 2 CPU cores. The baseline, measured in the same run, is the least any
content-addressed planner must do: serialize each run's identity to canonical JSON and hash it.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import platform
import pstats
import statistics
import sys
import time

import torch
import yaml

from lsbench.sweep.grid import parse_grid
from lsbench.sweep.plan import expand, summarize


def grid_text() -> str:
    """4 problems x 5,000 hyperparameter points x 5 seeds = 100,000 runs, over six optimizers."""
    lrs = [round(10 ** (-4 + 4 * i / 39), 10) for i in range(40)]  # 40 log-spaced learning rates in [1e-4, 1]
    momenta = [round(0.5 + 0.03 * i, 4) for i in range(15)]  # 15 momenta in [0.5, 0.92]
    grid = {
        "name": "bench_100k",
        "problems": ["cifar10_resnet20", "cifar10_resnet32", "cifar100_resnet20", "cifar100_resnet32"],
        "seeds": [1, 2, 3, 4, 5],
        "budget": {"steps": 150_000, "eval_every": 1_000},
        "optimizers": {
            # points x 4 problems x 5 seeds = runs
            # 40 x 15 x 2 = 1,200 points -> 24,000 runs
            "sgd": {"grid": {"lr": lrs, "momentum": momenta, "lr_schedule": ["constant", "piecewise"]}},
            # 40 x 10 x 2 = 800 points -> 16,000 runs
            "adam": {"grid": {"lr": lrs, "beta1": momenta[:10], "beta2": [0.99, 0.999]}},
            # 40 x 15 x 2 = 1,200 points -> 24,000 runs
            "rmsprop": {"grid": {"lr": lrs, "alpha": momenta, "lr_schedule": ["constant", "piecewise"]}},
            # 10 x 15 x 2 x 3 = 900 points -> 18,000 runs
            "pal": {
                "grid": {
                    "measuring_step_size": lrs[::4],
                    "direction_adaptation": [round(0.06 * i, 2) for i in range(15)],
                    "update_step_adaptation": [1.0, 1.25],
                    "max_step_size": [1.0, 3.16, 10.0],
                }
            },
            # 5 x 2 x 5 x 2 (zip axis) = 100 points -> 2,000 runs; list-valued hyperparameter in fixed
            "labpal_nsgd": {
                "grid": {
                    "update_step_adaptation": [1.0, 1.25, 1.66, 1.8, 1.9],
                    "momentum": [0.0, 0.9],
                    "measuring_step_size": [0.01, 0.02, 0.05, 0.1, 0.2],
                },
                "zip": [{"sgd_steps": [1000, 5000], "approximation_batch_size": [640, 1280]}],
                "fixed": {"batch_size_schedule": [[0, 1], [0.5, 2], [0.75, 4]]},
            },
            # 4 x 5 x 4 x 5 x 2 = 800 points -> 16,000 runs
            "sls": {
                "grid": {
                    "initial_step_size": [0.001, 0.01, 0.1, 1.0],
                    "step_size_decay": [0.5, 0.7, 0.9, 0.95, 0.99],
                    "step_size_reset": [1.5, 2.0, 2.5, 3.0],
                    "armijo_constant": [0.5, 0.2, 0.1, 0.05, 0.01],
                    "max_step_size": [10.0, 100.0],
                }
            },
        },
    }
    return yaml.safe_dump(grid, sort_keys=False)


def id_baseline(runs: list) -> float:
    """Seconds to hash the canonical JSON of every run's identity: the irreducible work of content ids."""
    start = time.perf_counter()
    for run in runs:
        hashlib.sha256(json.dumps(run.identity(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return time.perf_counter() - start


def pipeline(text: str) -> tuple[list, dict[str, float]]:
    times = {}
    start = time.perf_counter()
    grid = parse_grid(text, source="<bench_100k>")
    times["load+validate"] = time.perf_counter() - start
    mark = time.perf_counter()
    runs = expand(grid)
    times["expand"] = time.perf_counter() - mark
    mark = time.perf_counter()
    summary = summarize(runs, grid)
    times["summarize"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    assert summary.total_runs == len(runs)
    return runs, times


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the top functions of one run (cProfile)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = grid_text()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(pipeline, text)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return
    start = time.perf_counter()
    pipeline(text)  # warm-up: the first optimizer construction imports torch._dynamo (seconds, once per process)
    cold = time.perf_counter() - start
    results = [pipeline(text) for _ in range(args.repeats)]
    runs = len(results[0][0])
    median = {stage: statistics.median(t[stage] for _, t in results) for stage in results[0][1]}
    baseline = statistics.median(id_baseline(results[0][0]) for _ in range(args.repeats))
    print(f"runs:            {runs:,}")
    for stage, seconds in median.items():
        print(f"{stage + ':':<17}{seconds:.3f} s (median of {args.repeats})")
    print(f"runs/s:          {runs / median['total']:,.0f}")
    ratio = median["total"] / baseline
    print(f"baseline:        {baseline:.3f} s (hash every identity naively); total = {ratio:.2f} x baseline")
    print(f"first call:      {cold:.3f} s (cold process: includes torch's lazy imports on the first optimizer built)")
    print(f"hardware:        {cpu_model()}, {os.cpu_count()} logical CPUs ({platform.machine()})")
    print(f"platform:        {platform.platform()}")
    print(f"python:          {sys.version.split()[0]}   torch: {torch.__version__}   pyyaml: {yaml.__version__}")


if __name__ == "__main__":
    main()
