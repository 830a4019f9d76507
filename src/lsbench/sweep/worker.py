"""The worker: train run ``index`` of a sweep and record it in the store.

``python -m lsbench worker --sweep-dir DIR --index I`` is the one entry every backend starts -- the local pool
directly, Slurm inside the container -- so it needs nothing but the sweep directory and the index. It

* finds its run in ``plan.json`` and the store URL in ``sweep.json``;
* exits at once (code 0) if the run is already completed or diverged: a requeued or duplicated task costs nothing;
* claims the run: in the store, with a conditional write only one attempt can win (spooled sweeps: with a file
  created exclusively on the shared file system), so two workers never train the same run at the same time,
  whichever nodes they run on; a file lock on the run (in ``$LSBENCH_LOCK_DIR`` if set, else the run directory)
  is a second line of defence. The loser exits with :data:`EXIT_BUSY` and changes nothing;
* refuses to start when it is pinned to a GPU that CUDA cannot use (``CUDA_VISIBLE_DEVICES`` names one, or
  ``--device cuda:N``): one line on stderr, exit code :data:`EXIT_FAILURE`, nothing claimed or trained -- instead of
  training a GPU-sized run on the CPU (:func:`lsbench.train.device.resolve_device`);
* records an attempt (host, pid, backend job id, log path, GPU name; in ``versions`` the code and library versions,
  the run's precision, the GPU's UUID and the CUDA, cuDNN and driver versions) and streams every evaluation point to
  the store as metrics keyed (run, step, name), so a resumed run that reports a point again writes nothing new;
* sends a heartbeat on a timer (:func:`lsbench.sweep.protocol.heartbeat_seconds`), independent of the evaluation
  schedule, so a healthy run that evaluates once a day is never taken for dead; a worker whose claim was taken
  over (it was cut off for longer than the claim's staleness) stops at the next step;
* resumes from the run's checkpoint if one exists (lsbench.train);
* on SIGTERM, SIGINT or SIGUSR2 (scheduler time limit, preemption, a cancelled or killed pool) finishes the
  current step, checkpoints and exits with :data:`EXIT_INTERRUPTED`, leaving the run ``preempted`` so that a
  resubmission continues it.

Exit codes: see :mod:`lsbench.sweep.protocol`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import torch

import lsbench
from lsbench.lines.arrays import ARRAYS_DIR
from lsbench.runs import FINISHED
from lsbench.store import Store
from lsbench.store.spool import SpoolWriter
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.protocol import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_DIVERGED,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    claim_stale_seconds,
    exclusive,
    heartbeat_seconds,
    lock_file,
)
from lsbench.train import TrainResult, train
from lsbench.train.checkpoint import CHECKPOINT, PREVIOUS_CHECKPOINT
from lsbench.train.device import DeviceUnavailableError, device_metadata, resolve_device
from lsbench.train.precision import check_precision_supported

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
METRIC_NAMES = (
    "train_loss",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "mean_effective_lr",
    "updates",
    "forward_passes",
    "backward_passes",
    "elapsed",
)


def run_worker(
    sweep_dir: Path, index: int, *, backend: str = "local", job_id: str | None = None, device: str = "auto"
) -> int:
    """Train run ``index`` of the sweep in ``sweep_dir``; return the worker's exit code (see module docstring)."""
    sweep = SweepDir(Path(sweep_dir))
    spec = sweep.run_spec(index)
    store = open_results(sweep)
    try:
        status = _run_status(store, spec.run_id)
        if status in FINISHED:
            print(f"run {spec.run_id} is already {status}; nothing to do", flush=True)
            return EXIT_OK
        try:  # before the claim: a worker on an unusable GPU must neither hold the run nor train it on the CPU
            device = str(resolve_device(device))
            check_precision_supported(spec.precision, torch.device(device))
        except (DeviceUnavailableError, ValueError) as error:
            print(f"lsbench worker: error: {error}", file=sys.stderr, flush=True)
            return EXIT_FAILURE
        run_dir = sweep.run_dir(spec.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        with exclusive(lock_file(run_dir, spec.run_id)) as acquired:
            if not acquired:
                print(f"run {spec.run_id} is being trained by another worker", flush=True)
                return EXIT_BUSY
            # Stop signals stay caught until the result is recorded: one arriving in between (a scheduler's early
            # warning) must not kill the worker and make the scheduler requeue a finished run.
            with _stop_requests() as stop_requested:
                return _train_and_record(store, sweep, spec.run_id, index, backend, job_id, device, stop_requested)
    finally:
        store.close()


def open_results(sweep: SweepDir) -> Store | SpoolWriter:
    """Where this worker records: the store itself, or -- for a SQLite store read on another machine -- the run's
    spool file on the shared file system (see :mod:`lsbench.store.spool`)."""
    meta = sweep.read_meta()
    if meta.get("spool"):
        return SpoolWriter(sweep.path, meta["store"])
    return Store(sweep.store_url())


def _run_status(store: Store | SpoolWriter, run_id: str) -> str | None:
    if isinstance(store, SpoolWriter):
        return store.finished_status(run_id)
    row = store.get_run(run_id)
    return None if row is None else row.status


def _train_and_record(
    store: Store | SpoolWriter,
    sweep: SweepDir,
    run_id: str,
    index: int,
    backend: str,
    job_id: str | None,
    device: str,
    stop_requested: Callable[[], bool],
) -> int:
    spec = sweep.run_spec(index)
    config = spec.train_config(device=device, checkpoint_every=spec.eval_every)
    attempt_id = f"{job_id or backend}/{uuid.uuid4().hex[:8]}"
    claimed = store.start_attempt(
        run_id,
        attempt_id,
        backend=backend,
        job_id=job_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        log_path=str(sweep.log_file(run_id)),
        gpu=_gpu_name(config.device),
        versions=_versions(config.device, spec.precision),
        claim_stale_after=claim_stale_seconds(),
    )
    if not claimed:
        print(f"run {run_id} is claimed by a live worker elsewhere", flush=True)
        return EXIT_BUSY
    # A linescan run's arrays lie in its run directory; the store points there (lsbench.lines.arrays).
    arrays = str(sweep.run_dir(run_id).resolve() / ARRAYS_DIR) if spec.kind == "linescan" else None
    store.set_run_status(run_id, "running", arrays=arrays)
    print(f"attempt {attempt_id}: {spec.problem} {spec.optimizer} seed {spec.seed} {spec.hparams}", flush=True)
    last_step: list[int | None] = [None]

    def record(point: dict[str, float]) -> None:
        step = last_step[0] = int(point["step"])
        store.add_metrics(run_id, step, {name: point[name] for name in METRIC_NAMES})

    with _heartbeats(store, run_id, attempt_id, lambda: last_step[0]) as claim_lost:
        try:
            result = train(
                config, sweep.run_dir(run_id), on_eval=record, should_stop=lambda: stop_requested() or claim_lost()
            )
        except Exception:
            traceback.print_exc()
            store.set_run_status(run_id, "failed", end_attempt=(attempt_id, EXIT_FAILURE))
            return EXIT_FAILURE
    if claim_lost():
        print(f"attempt {attempt_id}: another worker took the run over; stopped at step {result.steps_done}")
        store.end_attempt(run_id, attempt_id, "preempted", EXIT_BUSY)
        return EXIT_BUSY
    code = _record_result(store, run_id, attempt_id, result)
    if code in (EXIT_OK, EXIT_DIVERGED):
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):  # the result is stored; the run will never resume
            (sweep.run_dir(run_id) / name).unlink(missing_ok=True)
    print(f"attempt {attempt_id}: {result.status} at step {result.steps_done}", flush=True)
    return code


def _record_result(store: Store | SpoolWriter, run_id: str, attempt_id: str, result: TrainResult) -> int:
    """Record the run's outcome and end the attempt in one write; return the worker's exit code."""
    summary = result.summary()
    values = {key: summary[key] for key in ("train_loss", "val_acc", "test_acc", "mean_effective_lr", "seconds")}
    final = result.final
    values.update(val_loss=final.get("val_loss", float("nan")), test_loss=final.get("test_loss", float("nan")))
    if result.status == "completed":
        code, status, extra = EXIT_OK, "completed", {"summary": values}
    elif result.status == "diverged":
        extra = {"summary": values, "diverged_at_step": result.diverged_at_step}
        code, status = EXIT_DIVERGED, "diverged"
    else:
        code, status, extra = EXIT_INTERRUPTED, "preempted", {}
    store.set_run_status(run_id, status, step=result.steps_done, end_attempt=(attempt_id, code), **extra)
    return code


@contextlib.contextmanager
def _heartbeats(
    store: Store | SpoolWriter, run_id: str, attempt_id: str, step: Callable[[], int | None]
) -> Iterator[Callable[[], bool]]:
    """Send a heartbeat every :func:`heartbeat_seconds` from a thread while the block runs; yield a flag that turns
    true once the store says the attempt no longer holds the run. A heartbeat that fails (store briefly gone, after
    its retries) is logged and the next one tried: silence is what lets a dead worker's run be taken over."""
    stop, lost = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_seconds()):
            try:
                if not store.heartbeat(run_id, attempt_id, step()):
                    lost.set()
            except Exception as error:  # a worker must not die of a missed heartbeat
                print(f"heartbeat failed: {error}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield lost.is_set
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _stop_requests() -> Iterator[Callable[[], bool]]:
    """Turn the stop signals into a flag the trainer polls between steps; restore the handlers afterwards."""
    requested: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        requested.append(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _gpu_name(device: str) -> str | None:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return None


def _versions(device: str, precision: str) -> dict[str, str]:
    """The ``versions`` of an attempt: what produced its numbers besides the run's identity. ``precision`` is also
    part of the identity; it is repeated here so that an attempt row alone says how it computed."""
    metadata = device_metadata(device)
    return {
        "lsbench": lsbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": metadata["cuda"],
        "cudnn": metadata["cudnn"],
        "driver": metadata["driver"],
        "gpu_uuid": metadata["gpu_uuid"],
        "precision": precision,
        "image": os.environ.get("LSBENCH_IMAGE_DIGEST", "none"),
    }


def add_worker_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="train one run of a sweep (started by the backends)")
    parser.add_argument("--sweep-dir", required=True, type=Path, help="the sweep directory")
    parser.add_argument("--index", required=True, type=int, help="the run's index in the sweep's plan")
    parser.add_argument("--backend", default="local", help="who started this worker (recorded with the attempt)")
    parser.add_argument("--job-id", default=None, help="the scheduler's job id, if any")
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device (default auto: CUDA if available; required when CUDA_VISIBLE_DEVICES names a GPU)",
    )
    parser.set_defaults(handler=_run_worker_command)


def _run_worker_command(args: argparse.Namespace) -> int:
    if not SweepDir(args.sweep_dir).exists():
        print(f"lsbench worker: {args.sweep_dir} is not a sweep directory (no sweep.json)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return run_worker(args.sweep_dir, args.index, backend=args.backend, job_id=args.job_id, device=args.device)
    except IndexError as error:
        print(f"lsbench worker: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
