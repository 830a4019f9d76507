"""Benchmark: `sweep submit` of a thesis grid into a store, the scheduler's part excluded.

    python benchmarks/submit_store.py --store postgresql+psycopg://user:password@127.0.0.1:5432/db \\
        [--grid sweeps/grids/pal_cifar10.yaml] [--repeats 3]

Each repeat submits the grid into a fresh sweep root and an emptied store, through :func:`lsbench.sweep.api.submit`
with the backend's own submission replaced by a no-op (so Slurm is not needed and nothing trains): planning (load,
validate, expand, check that the data is there -- stand-in files here), recording the sweep and its runs, writing
``plan.json`` and queueing every run. It prints the
median seconds of the whole submission and of planning alone -- in a process that has imported lsbench (library
use) and in a fresh interpreter (what one ``sweep submit`` command costs, interpreter start and imports included)
-- and, as the baseline measured in the same run on the same store, the time the queueing took when it wrote one
transaction per run (what submit did before batching). Goal (issue 9): the whole submission of ``pal_cifar10``
(1,128 runs) into a local Postgres with password authentication in at most 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy

from lsbench.store import Store
from lsbench.store.schema import metadata
from lsbench.sweep import api


def empty_store(url: str) -> None:
    """Delete every row, keeping the migrated schema (a fresh database per repeat would time migrations)."""
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


def submit_once(grid: Path, url: str) -> tuple[float, int]:
    """Seconds of one submission of ``grid`` (with its store replaced by ``url``) and the number of runs queued."""
    with tempfile.TemporaryDirectory() as root:
        copy = Path(root) / grid.name
        copy.write_text(grid.read_text().replace("store: null", "") + f"\nstore: {url}\n")
        start = time.perf_counter()
        result = api.submit(copy, root=root)
        return time.perf_counter() - start, len(result.queued)


def queue_one_by_one(url: str, run_ids: list[str]) -> float:
    """The baseline: queue every run in a transaction of its own, as submit did before batching."""
    with Store(url) as store:
        start = time.perf_counter()
        for run_id in run_ids:
            store.set_run_status(run_id, "queued")
        return time.perf_counter() - start


def stand_in_data(grid: Path, directory: Path) -> None:
    """Empty files where the grid's datasets must be, so that the data check (part of a submission) passes here."""
    from lsbench.problems.sources import dataset_of, source_of

    for problem in api.plan(grid).grid.problems:
        for forms in source_of(dataset_of(problem)).needs:
            path = directory / forms[0]
            if forms[0].endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()


def fresh_process(grid: Path, url: str) -> float:
    """Seconds of one submission in a new interpreter, from its start to the end of the submission."""
    empty_store(url)
    start = time.perf_counter()
    command = [sys.executable, __file__, "--store", url, "--grid", str(grid), "--once"]
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="SQLAlchemy URL of an existing (empty or scratch) database")
    parser.add_argument("--grid", type=Path, default=Path("sweeps/grids/pal_cifar10.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one submission, for fresh_process
    args = parser.parse_args()

    api._backend_submit = lambda *_args, **_kwargs: "not submitted (benchmark)"  # the scheduler's part excluded
    start = time.perf_counter()
    api.plan(args.grid)  # the first plan of this process: imports and the registries' first use
    first_plan = time.perf_counter() - start
    if "LSBENCH_DATA" not in os.environ:
        os.environ["LSBENCH_DATA"] = tempfile.mkdtemp(prefix="lsbench-bench-data-")
        stand_in_data(args.grid, Path(os.environ["LSBENCH_DATA"]))
    if args.once:
        submit_once(args.grid, args.store)
        return
    Store(args.store).close()  # migrate once, outside the timings
    fresh = [fresh_process(args.grid, args.store) for _ in range(args.repeats)]
    totals, plans, baselines, queued = [], [], [], 0
    for _ in range(args.repeats):
        empty_store(args.store)
        start = time.perf_counter()
        planned = api.plan(args.grid)
        plans.append(time.perf_counter() - start)
        seconds, queued = submit_once(args.grid, args.store)
        totals.append(seconds)
        with Store(args.store) as store:
            store.set_status_many([spec.run_id for spec in planned.runs], "planned")
        baselines.append(queue_one_by_one(args.store, [spec.run_id for spec in planned.runs]))

    total, plan, baseline = (statistics.median(values) for values in (totals, plans, baselines))
    with Store(args.store) as store:
        shown = store.redacted_url
    print(f"submit_store: {args.grid} into {shown}, {queued:,} runs queued, {args.repeats} repeats (median)")
    print(
        f"hardware: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"SQLAlchemy {sqlalchemy.__version__}"
    )
    print(f"library, lsbench imported: whole submission (plan, record, plan.json, queue): {total:.3f} s   goal <= 2 s")
    print(f"  of which planning (load, validate, expand):                             {plan:.3f} s")
    print(f"  the process' first planning (imports torch, pydantic; first trial build): {first_plan:.3f} s")
    print(f"fresh interpreter, start to end of one submission (as one CLI command): {statistics.median(fresh):.3f} s")
    print(f"baseline: queueing alone with one transaction per run:                  {baseline:.3f} s")
    print(f"ratio whole submission (library) / per-run queueing baseline:           {total / baseline:.3f}")


if __name__ == "__main__":
    main()
