"""Concurrent writers against a result store: throughput, and proof that nothing is lost or written twice.

    python benchmarks/store_throughput.py --store URL --writers N --rows R [--kill K]

N writer processes each play a worker of its own run: start an attempt, write R metric rows as R/10 evaluation
points of 10 metrics each (one transaction per point, as a worker does), then mark the attempt and the run
completed. Meanwhile one more process reads the sweep's status in a loop. ``--kill K`` SIGKILLs K writers at random
moments and restarts them: a restarted writer starts a new attempt and writes its run again from the beginning,
as a requeued worker that reports its evaluation points again does.

``URL`` is an SQLAlchemy URL (``sqlite:///file`` writes SQLite directly, as workers on one machine do;
``postgresql+psycopg://...``), or ``spool+sqlite:///file``: workers append to spool files that the reader process
ingests into the SQLite file, the cluster path for SQLite (``lsbench.store.spool``).

Afterwards the store is verified: every (run, step, metric) present exactly once with its value, one completed
attempt per run. The last line is ``writers=N rows=… lost=… duplicated=… errors=… rows_per_s=…``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

from lsbench.runs import RunSpec
from lsbench.store import Store
from lsbench.store.spool import SpoolWriter, ingest

SWEEP = "throughput"
NAMES = tuple(f"metric_{i}" for i in range(10))
SPOOL_PREFIX = "spool+"


@dataclass(frozen=True)
class Outcome:
    writers: int
    rows: int
    lost: int
    duplicated: int
    errors: int
    seconds: float
    completed_attempts_per_run: tuple[int, ...]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def line(self) -> str:
        return (
            f"writers={self.writers} rows={self.rows} lost={self.lost} duplicated={self.duplicated} "
            f"errors={self.errors} rows_per_s={self.rows_per_s:.0f}"
        )


def run_id(writer: int) -> str:
    return f"w{writer:05d}".ljust(16, "0")


def value(writer: int, step: int, name: str) -> float:
    return writer + step / 1000 + NAMES.index(name) / 1e6


def _writer(url: str, sweep_dir: str, writer: int, rows: int, attempt: int) -> None:
    """One worker's writes (runs in its own process)."""
    store = SpoolWriter(Path(sweep_dir), "bench") if url.startswith(SPOOL_PREFIX) else Store(url)
    run, attempt_id = run_id(writer), f"bench/{writer}/{attempt}"
    finished = store.finished_status(run) if isinstance(store, SpoolWriter) else store.get_run(run).status
    if finished == "completed":  # a restarted worker whose run is done leaves at once, as lsbench's worker does
        store.close()
        return
    store.start_attempt(
        run,
        attempt_id,
        backend="bench",
        job_id=None,
        host=platform.node(),
        pid=os.getpid(),
        log_path="-",
        gpu=None,
        versions={},
    )
    store.set_run_status(run, "running")
    for point in range(rows // len(NAMES)):
        step = 10 * (point + 1)
        store.add_metrics(run, step, {name: value(writer, step, name) for name in NAMES})
    store.set_run_status(run, "completed", step=10 * (rows // len(NAMES)), end_attempt=(attempt_id, 0))
    store.close()


def _reader(url: str, sweep_dir: str, stop: multiprocessing.synchronize.Event) -> None:
    """`sweep status` in a loop: read every run row (and ingest spool files first on the spool path)."""
    store = Store(url.removeprefix(SPOOL_PREFIX))
    while not stop.is_set():
        if url.startswith(SPOOL_PREFIX):
            ingest(store, Path(sweep_dir))
        store.sweep_runs(SWEEP)
        time.sleep(0.05)
    store.close()


def run(url: str, writers: int, rows: int, kill: int = 0, sweep_dir: str | None = None, seed: int = 0) -> Outcome:
    """Run the benchmark against a prepared, empty store at ``url``; verify and return the outcome."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as scratch:
        sweep_dir = sweep_dir or scratch
        store = Store(url.removeprefix(SPOOL_PREFIX))
        store.upsert_sweep(SWEEP, "0" * 64, "", sweep_dir, "bench")
        store.add_runs(
            SWEEP, [RunSpec(run_id(w), "digits_mlp", "sgd", {}, 1, 1000, 10, 32, 0.0) for w in range(writers)]
        )
        context = multiprocessing.get_context("fork")
        stop = context.Event()
        reader = context.Process(target=_reader, args=(url, sweep_dir, stop))
        reader.start()
        start = time.perf_counter()
        processes = {w: context.Process(target=_writer, args=(url, sweep_dir, w, rows, 0)) for w in range(writers)}
        for process in processes.values():
            process.start()
        errors = 0
        for w in rng.sample(range(writers), kill):  # SIGKILL at a random moment, then restart the run
            time.sleep(rng.uniform(0.0, 0.3))
            with contextlib.suppress(ProcessLookupError):  # it may have finished already
                os.kill(processes[w].pid, signal.SIGKILL)
            processes[w].join()
            processes[w] = context.Process(target=_writer, args=(url, sweep_dir, w, rows, 1))
            processes[w].start()
        for process in processes.values():
            process.join()
            errors += process.exitcode not in (0, -signal.SIGKILL)
        stop.set()
        reader.join()
        errors += reader.exitcode != 0
        if url.startswith(SPOOL_PREFIX):
            ingest(store, Path(sweep_dir))
        seconds = time.perf_counter() - start
        lost, duplicated, completed = _verify(store, writers, rows)
        store.close()
    return Outcome(writers, writers * rows, lost, duplicated, errors, seconds, completed)


def _verify(store: Store, writers: int, rows: int) -> tuple[int, int, tuple[int, ...]]:
    lost = duplicated = 0
    completed = []
    for writer in range(writers):
        metrics = store.metrics(run_id(writer))
        keys = [(m.step, m.name) for m in metrics]
        expected = {(10 * (p + 1), name) for p in range(rows // len(NAMES)) for name in NAMES}
        duplicated += len(keys) - len(set(keys))
        good = {(m.step, m.name) for m in metrics if m.value == value(writer, m.step, m.name)}
        lost += len(expected - good)
        completed.append(sum(a.status == "completed" for a in store.attempts(run_id(writer))))
    return lost, duplicated, tuple(completed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="SQLAlchemy URL, or spool+sqlite:///file")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=500, help="metric rows per writer (multiple of 10)")
    parser.add_argument("--kill", type=int, default=0, help="writers to SIGKILL and restart")
    args = parser.parse_args()
    outcome = run(args.store, args.writers, args.rows, args.kill)
    store = Store(args.store.removeprefix(SPOOL_PREFIX))
    path = "spool files + ingest" if args.store.startswith(SPOOL_PREFIX) else "direct"
    print(f"store_throughput: {store.redacted_url} ({path})")
    store.close()
    print(
        f"hardware: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"SQLAlchemy {sqlalchemy.__version__}; {outcome.seconds:.2f} s"
    )
    print(outcome.line())


if __name__ == "__main__":
    main()
