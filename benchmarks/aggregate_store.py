"""Time `sweep aggregate` on a large stored sweep: 5,000 runs with 300 evaluation points each, in SQLite.

The store is filled first (not timed): 5,000 runs over 2 problems × 5 optimizers × 100 hyperparameter points ×
5 seeds, each with 300 evaluation points of train loss, validation and test accuracy (4.5 million metric rows) and
its final summary. Then the aggregation path of `sweep aggregate` is timed -- read the sweep's runs, compute the
Table A.1 statistics, render the table and write the three report files -- as median and spread over repeats, and
set against the baseline of only reading the sweep's run rows (the part no aggregation can avoid).

Usage: ``python benchmarks/aggregate_store.py [--runs 5000] [--points 300] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy

from lsbench.report import aggregate, format_table, write_reports
from lsbench.runs import RunSpec
from lsbench.store import Store
from lsbench.sweep.api import sweep_outcomes

PROBLEMS = ("cifar10_resnet32", "cifar100_resnet32")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "pal", "sls")
SEEDS = (1, 2, 3, 4, 5)


def fill(store: Store, runs: int, points: int) -> None:
    rng = random.Random(0)
    per_cell = runs // (len(PROBLEMS) * len(OPTIMIZERS) * len(SEEDS))
    specs = [
        RunSpec(f"{p}{o}{k}s{s}", problem, optimizer, {"lr": 10 ** (-k / 20)}, seed, 150_000, 500, 128, 1e-4)
        for p, problem in enumerate(PROBLEMS)
        for o, optimizer in enumerate(OPTIMIZERS)
        for k in range(per_cell)
        for s, seed in enumerate(SEEDS)
    ]
    store.upsert_sweep("bench", "0" * 64, "", "/tmp", "local")
    store.add_runs("bench", specs)
    for spec in specs:
        final = {"train_loss": rng.random(), "val_acc": rng.random(), "test_acc": rng.random()}
        store.add_metrics_many(
            (spec.run_id, 500 * (i + 1), name, value * (i + 1) / points)
            for i in range(points)
            for name, value in final.items()
        )
        store.set_run_status(spec.run_id, "completed" if rng.random() > 0.05 else "diverged", summary=final)


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = Store(f"sqlite:///{directory}/bench.sqlite")
        build = timed(lambda: fill(store, args.runs, args.points))
        metric_rows = sum(len(store.metrics(run.run_id)) for run in store.sweep_runs("bench")[:10]) * args.runs // 10
        reports = Path(directory) / "reports"

        def full() -> None:
            rows = aggregate(sweep_outcomes(store, "bench"))
            format_table(rows, "text")
            write_reports(rows, reports)

        baseline, totals = [], []
        for _ in range(args.repeats):
            baseline.append(timed(lambda: store.sweep_runs("bench")))
            totals.append(timed(full))
        store.close()
    print(f"aggregate_store: {args.runs} runs x {args.points} evaluation points ({metric_rows:,} metric rows), SQLite")
    print(
        f"hardware: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"SQLAlchemy {sqlalchemy.__version__}; store filled in {build:.1f} s (not timed below)"
    )
    print(f"read run rows (baseline): median {statistics.median(baseline):.3f} s")
    print(
        f"sweep aggregate path:     median {statistics.median(totals):.3f} s  (min {min(totals):.3f}, "
        f"max {max(totals):.3f}; {statistics.median(totals) / statistics.median(baseline):.2f} x baseline; goal < 5 s)"
    )


if __name__ == "__main__":
    main()
