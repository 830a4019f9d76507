"""The worker: train run ``index`` of a sweep and record it in the store.

``python -m lsbench worker --sweep-dir DIR --index I`` is the one entry every backend starts -- the local pool
directly, Slurm inside the container -- so it needs nothing but the sweep directory and the index. For one run it

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

**Units.** Starting Python, importing torch and loading a dataset cost seconds, more than a small run trains, so one
process may train several *units* one after another. A unit is a list of plan indices: ``I`` is one run (exactly
the path above, :func:`run_worker`), ``I+J+K`` a fused group trained as one model
(:func:`lsbench.sweep.group_worker.run_group`). ``--index`` is repeatable: ``--index 3 --index 7+8+9`` trains [3],
then [7, 8, 9]. With more than one run the stop signals are caught for the whole process, so a signal between two
units cannot kill it halfway through recording; the remaining units are not started, and the exit code is
:data:`EXIT_INTERRUPTED` if a stop signal came, else :data:`EXIT_FAILURE` if any run failed, else :data:`EXIT_OK`
(a diverged run or one another worker holds is not a failure). A single run keeps its own exit code.

Before every unit the process is put back into the state a fresh worker starts in -- the global random number
generators, the intra-op thread count, the deterministic-algorithms flags, the warnings already shown -- so a run
trained after others in one process gives bitwise the numbers it gives alone (:class:`_ProcessState`).

**Serve mode** (``--serve``, the local pool's long-lived workers, :mod:`lsbench.sweep.backends.local`): the worker
reads units from standard input, one per line in the ``--index`` syntax (``3`` or ``7+8+9``), trains each, and
answers each with one JSON line ``{"unit": [7, 8, 9], "codes": {"7": 0, "8": 0, "9": 3}}`` (each run's exit code;
``{"unit": null, "error": "..."}`` for a line it cannot read) on its *original* standard output. At start it moves
that channel to a descriptor of its own and points descriptor 1 at descriptor 2 (the pool's log), and for the
duration of a unit it points descriptors 1 and 2 at the unit's run log (``SweepDir.log_file`` of its first run,
appended), so nothing any library prints can get into the protocol and every run's output lands in its own log, as
with one process per run. End of input ends the worker with :data:`EXIT_OK`; a stop signal -- during a unit (the run
checkpoints and is left ``preempted``, the answer is still sent) or while waiting for one -- ends it with
:data:`EXIT_INTERRUPTED` without starting another unit. A unit the worker cannot even begin (an index not in the
plan, the store unreachable) is answered with :data:`EXIT_BAD_INPUT` or :data:`EXIT_FAILURE` and a traceback in the
log; the worker serves on.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import select
import signal
import socket
import sys
import threading
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
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
    sweep_dir: Path,
    index: int,
    *,
    backend: str = "local",
    job_id: str | None = None,
    device: str = "auto",
    stop_requested: Callable[[], bool] | None = None,
) -> int:
    """Train run ``index`` of the sweep in ``sweep_dir``; return the worker's exit code (see module docstring).

    ``stop_requested``: given by a caller that catches the stop signals itself (a worker that trains several units);
    without it the signals are caught here, from the claim until the result is recorded.
    """
    sweep = SweepDir(Path(sweep_dir))
    spec = sweep.run_spec(index)
    store = open_results(sweep)
    try:
        status = run_status(store, spec.run_id)
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
            if stop_requested is not None:
                return _train_and_record(store, sweep, spec.run_id, index, backend, job_id, device, stop_requested)
            # Stop signals stay caught until the result is recorded: one arriving in between (a scheduler's early
            # warning) must not kill the worker and make the scheduler requeue a finished run.
            with _stop_requests() as stop:
                return _train_and_record(store, sweep, spec.run_id, index, backend, job_id, device, stop)
    finally:
        store.close()


def open_results(sweep: SweepDir) -> Store | SpoolWriter:
    """Where this worker records: the store itself, or -- for a SQLite store read on another machine -- the run's
    spool file on the shared file system (see :mod:`lsbench.store.spool`)."""
    meta = sweep.read_meta()
    if meta.get("spool"):
        return SpoolWriter(sweep.path, meta["store"])
    return Store(sweep.store_url())


def run_status(store: Store | SpoolWriter, run_id: str) -> str | None:
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
        gpu=gpu_name(config.device),
        versions=versions(config.device, spec.precision),
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

    with heartbeats(store, run_id, attempt_id, lambda: last_step[0]) as claim_lost:
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
    code = record_result(store, run_id, attempt_id, result)
    if code in (EXIT_OK, EXIT_DIVERGED):
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):  # the result is stored; the run will never resume
            (sweep.run_dir(run_id) / name).unlink(missing_ok=True)
    print(f"attempt {attempt_id}: {result.status} at step {result.steps_done}", flush=True)
    return code


def record_result(store: Store | SpoolWriter, run_id: str, attempt_id: str, result: TrainResult) -> int:
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
def heartbeats(
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


def gpu_name(device: str) -> str | None:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return None


def versions(device: str, precision: str) -> dict[str, str]:
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


# -- several units in one process ------------------------------------------------------------------------------

NOT_FAILED = (EXIT_OK, EXIT_DIVERGED, EXIT_BUSY, EXIT_INTERRUPTED)
"""Run exit codes that are not a failure of the run: a result, a run left to another worker, a checkpointed stop."""

REQUEST_POLL_SECONDS = 0.2
"""How often a serving worker that waits for a unit looks at the stop flag."""


def parse_unit(text: str) -> list[int]:
    """A unit as ``--index`` and the serve protocol write it: ``"7"`` is [7], ``"7+8+9"`` is [7, 8, 9]."""
    try:
        unit = [int(part) for part in text.strip().split("+")]
    except ValueError:
        raise ValueError(f"not a unit of plan indices: {text.strip()!r} (expected I or I+J+K)") from None
    if min(unit) < 0 or len(set(unit)) != len(unit):
        raise ValueError(f"not a unit of plan indices: {text.strip()!r} (indices are distinct and non-negative)")
    return unit


def run_unit(
    sweep_dir: Path,
    unit: Sequence[int],
    *,
    backend: str,
    job_id: str | None,
    device: str,
    stop_requested: Callable[[], bool],
) -> dict[int, int]:
    """Train one unit -- one run, or several as a fused group -- and return each run's exit code."""
    if len(unit) == 1:
        code = run_worker(
            sweep_dir, unit[0], backend=backend, job_id=job_id, device=device, stop_requested=stop_requested
        )
        return {unit[0]: code}
    from lsbench.sweep.group_worker import run_group  # the fused trainer: only a worker of groups loads it

    return run_group(
        Path(sweep_dir), list(unit), backend=backend, job_id=job_id, device=device, stop_requested=stop_requested
    )


def units_exit_code(codes: Iterable[int], stopped: bool) -> int:
    """The exit code of a process that trained several runs (see the module docstring)."""
    if stopped:
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if any(code not in NOT_FAILED for code in codes) else EXIT_OK


def run_units(
    sweep_dir: Path,
    units: Sequence[Sequence[int]],
    *,
    backend: str = "local",
    job_id: str | None = None,
    device: str = "auto",
) -> int:
    """Train ``units`` one after another in this process; return the process' exit code (see module docstring).

    One unit of one run is exactly :func:`run_worker`, so a backend that starts one process per run sees no change.
    """
    if len(units) == 1 and len(units[0]) == 1:
        return run_worker(sweep_dir, units[0][0], backend=backend, job_id=job_id, device=device)
    fresh = _ProcessState.capture()
    codes: dict[int, int] = {}
    with _stop_requests() as stop_requested:
        for unit in units:
            if stop_requested():
                break  # the remaining units stay queued for the next worker
            with fresh.restored():
                codes.update(
                    run_unit(
                        sweep_dir, unit, backend=backend, job_id=job_id, device=device, stop_requested=stop_requested
                    )
                )
        return units_exit_code(codes.values(), stop_requested())


def serve(
    sweep_dir: Path,
    *,
    backend: str = "local",
    job_id: str | None = None,
    device: str = "auto",
    requests: int = 0,
    answers: int | None = None,
) -> int:
    """Train the units read from descriptor ``requests`` one after another, answering each on ``answers``.

    The protocol is in the module docstring. ``answers`` None: standard output, moved to a descriptor of its own
    first, with descriptor 1 then pointing where descriptor 2 points -- output between units (a warning at import,
    a stray print) goes to the worker's log instead of into the answers. Returns the exit code.
    """
    sweep = SweepDir(Path(sweep_dir))
    if answers is None:
        sys.stdout.flush()
        answers = os.dup(1)
        os.dup2(2, 1)
    fresh = _ProcessState.capture()
    reader = _Requests(requests)
    with _stop_requests() as stop_requested:
        while (line := reader.next_line(stop_requested)) is not None:
            if not line.strip():
                continue
            answer = _serve_unit(sweep, line, fresh, backend, job_id, device, stop_requested)
            try:
                _write_all(answers, (json.dumps(answer) + "\n").encode())
            except BrokenPipeError:
                break  # whoever sent the units is gone; nobody will send another
        return EXIT_INTERRUPTED if stop_requested() else EXIT_OK


def _serve_unit(
    sweep: SweepDir,
    line: str,
    fresh: _ProcessState,
    backend: str,
    job_id: str | None,
    device: str,
    stop_requested: Callable[[], bool],
) -> dict[str, object]:
    """Train the unit of one request line in its first run's log; return the answer."""
    try:
        unit = parse_unit(line)
    except ValueError as error:
        print(f"lsbench worker: {error}", file=sys.stderr, flush=True)
        return {"unit": None, "error": str(error)}
    plan = sweep.read_plan()
    if max(unit) >= len(plan):
        error = f"{sweep.plan_file}: no run with index {max(unit)} (the plan has {len(plan)})"
        print(f"lsbench worker: {error}", file=sys.stderr, flush=True)
        return {"unit": unit, "codes": {str(index): EXIT_BAD_INPUT for index in unit}}
    with _output_to(sweep.log_file(plan[unit[0]].run_id)), fresh.restored():
        try:
            codes = run_unit(
                sweep.path, unit, backend=backend, job_id=job_id, device=device, stop_requested=stop_requested
            )
        except Exception:  # one unit's failure (the store unreachable, a bug) must not end the worker
            traceback.print_exc()
            codes = dict.fromkeys(unit, EXIT_FAILURE)
    return {"unit": unit, "codes": {str(index): code for index, code in codes.items()}}


@dataclass(frozen=True)
class _ProcessState:
    """What a run could leave changed in its process, as the process had it before the first run.

    The trainer restores the deterministic-algorithms flags and the precision settings itself, and draws random
    numbers only from generators it seeds (:mod:`lsbench.train.trainer`). Putting the process back before every unit
    anyway keeps a run's numbers independent of what was trained before it in the same process -- a library that
    draws from the global generator, a thread count changed on the way (on the CPU the thread count changes how a
    product is split, and so its rounding).
    """

    cpu_rng: torch.Tensor
    initial_seed: int
    threads: int
    deterministic: tuple[bool, bool]  # deterministic algorithms on, and only warning where there is none

    @classmethod
    def capture(cls) -> _ProcessState:
        return cls(
            cpu_rng=torch.get_rng_state(),
            initial_seed=torch.initial_seed(),
            threads=torch.get_num_threads(),
            deterministic=_deterministic_flags(),
        )

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        """Put the process back, then run the block with a fresh record of the warnings shown (Python shows most
        warnings once per process; a run's log should show the warnings of that run, as a fresh process would).

        The CUDA generators are reseeded with the initial seed, which is what a fresh process's generators start
        from; reading their state instead would start CUDA in a worker that trains on the CPU.
        """
        gc.collect()  # the previous unit's model and data go now, not during the next run's steps
        # What is left is the process' own (modules, caches); frozen, it is not walked by every later collection
        # again (with torch imported a full collection takes a good fraction of a second).
        gc.freeze()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            torch.cuda.manual_seed_all(self.initial_seed)
        torch.set_rng_state(self.cpu_rng)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if _deterministic_flags() != self.deterministic:  # setting them costs a second the first time
            torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        with warnings.catch_warnings():
            yield


def _deterministic_flags() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point descriptors 1 and 2 at ``path`` (appended) for the block, so that everything printed -- by Python, torch
    or a C library, by any thread -- goes to that file; restore them afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)


class _Requests:
    """Lines read from a descriptor without blocking past a stop signal.

    Python retries a read that a caught signal interrupts, so a worker blocked in ``readline`` would wait on after
    SIGTERM; here ``select`` waits at most :data:`REQUEST_POLL_SECONDS` between looks at the stop flag.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def next_line(self, stop_requested: Callable[[], bool]) -> str | None:
        """The next line without its newline; None at the end of the input or once a stop was requested."""
        while b"\n" not in self.buffer:
            if stop_requested():
                return None
            ready, _, _ = select.select([self.fd], [], [], REQUEST_POLL_SECONDS)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:  # end of input: a last line without a newline still counts
                line, self.buffer = self.buffer, b""
                return line.decode() if line.strip() and not stop_requested() else None
            self.buffer += chunk
        if stop_requested():
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


# -- the command ------------------------------------------------------------------------------------------------


def add_worker_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="train runs of a sweep (started by the backends)")
    parser.add_argument("--sweep-dir", required=True, type=Path, help="the sweep directory")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--index",
        action="append",
        type=_unit_argument,
        metavar="I[+J...]",
        help="a unit: a run's index in the sweep's plan, or I+J+K for runs trained together as one fused model; "
        "repeat it to train several units one after another in this process",
    )
    what.add_argument(
        "--serve",
        action="store_true",
        help="read units from standard input, one per line (I or I+J+K), and answer each on standard output with a "
        "JSON line of the runs' exit codes (the local pool's long-lived workers)",
    )
    parser.add_argument("--backend", default="local", help="who started this worker (recorded with the attempt)")
    parser.add_argument("--job-id", default=None, help="the scheduler's job id, if any")
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device (default auto: CUDA if available; required when CUDA_VISIBLE_DEVICES names a GPU)",
    )
    parser.set_defaults(handler=_run_worker_command)


def _unit_argument(text: str) -> list[int]:
    try:
        return parse_unit(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_worker_command(args: argparse.Namespace) -> int:
    sweep = SweepDir(args.sweep_dir)
    if not sweep.exists():
        print(f"lsbench worker: {args.sweep_dir} is not a sweep directory (no sweep.json)", file=sys.stderr)
        return EXIT_BAD_INPUT
    options = {"backend": args.backend, "job_id": args.job_id, "device": args.device}
    if args.serve:
        return serve(args.sweep_dir, **options)
    if len(args.index) > 1 or len(args.index[0]) > 1:  # every index first: a bad one must stop it before any training
        size = len(sweep.read_plan())
        missing = [index for unit in args.index for index in unit if index >= size]
        if missing:
            print(
                f"lsbench worker: {sweep.plan_file}: no run with index {missing[0]} (the plan has {size})",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
    try:
        return run_units(args.sweep_dir, args.index, **options)
    except IndexError as error:
        print(f"lsbench worker: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
