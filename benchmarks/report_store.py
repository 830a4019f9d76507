"""Time `sweep report` on a sweep the size of pal_cifar10: 1,128 runs × 150 evaluation points, in SQLite.

The store is filled first (not timed): 1,128 runs over 1 problem × 4 optimizers × 94 hyperparameter points × 3 seeds,
each with 150 evaluation points of train loss, validation and test accuracy and effective learning rate (676,800
metric rows), a final summary with timings, and about 5 % diverged runs. Then `api.report` is timed -- both queries,
every statistic under both conventions, every figure as PNG, PDF and CSV, and index.html -- against the baseline of
only reading the sweep's metric rows (the part no report can avoid), measured in the same run. Goal: < 60 s on 2
cores.

Usage: ``python benchmarks/report_store.py [--runs 1128] [--points 150] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path

import matplotlib
import pandas
import sqlalchemy

from aggregate_store import timed  # a script beside this one (benchmarks/ is on the path)
from lsbench.runs import RunSpec
from lsbench.store import Store
from lsbench.sweep import api
from lsbench.sweep.layout import SweepDir

OPTIMIZERS = ("sgd", "adam", "pal", "sls")
SEEDS = (1, 2, 3)
PROBLEM = "cifar10_resnet32"


def fill(root: Path, runs: int, points: int) -> None:
    rng = random.Random(0)
    sweep = SweepDir(root / "bench")
    sweep.path.mkdir(parents=True)
    url = sweep.default_store_url()
    sweep.path.joinpath("sweep.json").write_text(json.dumps({"name": "bench", "store": url, "backend": "local"}))
    store = Store(url)
    store.upsert_sweep("bench", "0" * 64, "", str(sweep.path), "local")
    per_optimizer = runs // (len(OPTIMIZERS) * len(SEEDS))
    specs = [
        RunSpec(f"{o}{k}s{seed}", PROBLEM, optimizer, {"lr": 10 ** (-k / 20)}, seed, 150_000, 1000, 128, 1e-4)
        for o, optimizer in enumerate(OPTIMIZERS)
        for k in range(per_optimizer)
        for seed in SEEDS
    ]
    store.add_runs("bench", specs)
    for spec in specs:
        final = {
            "train_loss": rng.random(),
            "val_acc": rng.random(),
            "test_acc": rng.random(),
            "mean_effective_lr": 0.1,
        }
        store.add_metrics_many(
            (spec.run_id, 1000 * (i + 1), name, value * (i + 1) / points)
            for i in range(points)
            for name, value in final.items()
        )
        status = "completed" if rng.random() > 0.05 else "diverged"
        store.set_run_status(spec.run_id, status, summary={**final, "seconds": 3600 * rng.random()}, step=150_000)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1128)
    parser.add_argument("--points", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        build = timed(lambda: fill(root, args.runs, args.points))
        store = Store(SweepDir(root / "bench").default_store_url())
        rows = len(store.sweep_metrics("bench"))
        baseline, totals = [], []
        for _ in range(args.repeats):
            baseline.append(timed(lambda: store.sweep_metrics("bench")))
            totals.append(timed(lambda: api.report("bench", root=root)))
        store.close()
        figures = len(list((root / "bench" / "reports").glob("*.png")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"report_store: {args.runs} runs x {args.points} evaluation points ({rows:,} metric rows), SQLite")
    print(
        f"hardware: {platform.machine()} {platform.processor() or ''}, {cores} usable cores; Python "
        f"{sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__}, pandas {pandas.__version__}, matplotlib "
        f"{matplotlib.__version__}; store filled in {build:.1f} s (not timed); {args.repeats} repeats"
    )
    print(f"read metric rows (baseline): median {statistics.median(baseline):.2f} s")
    print(
        f"sweep report ({figures} figures): median {statistics.median(totals):.2f} s (min {min(totals):.2f}, max "
        f"{max(totals):.2f}; {statistics.median(totals) / statistics.median(baseline):.1f} x baseline; goal < 60 s)"
    )


if __name__ == "__main__":
    main()
