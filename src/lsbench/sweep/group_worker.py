"""The worker of a fused group: train several runs of a sweep as one fused model and record each on its own.

``python -m lsbench worker --sweep-dir DIR --index 3+4+5+6`` hands the group here (:mod:`lsbench.sweep.worker`).
Every run goes through what the worker does for one run -- skipped if already finished, locked and claimed (a run
another worker holds is left to it), an attempt recorded, heartbeats, evaluation points streamed, its result and
status recorded, its checkpoint removed once the result is stored -- while the training itself is one fused group
(:func:`lsbench.fused.trainer.train_group`).

Which runs actually train together is decided by their checkpoints: runs resume together only from the same step,
so the claimed runs are split by the step of their checkpoint (none counts as step 0), and a run whose checkpoint was
written by a single run's trainer continues alone as it began. A diverged run is recorded at once while the others
go on. A stop signal (time limit, preemption, cancel) checkpoints every unfinished run and leaves it ``preempted``.

The process's own output goes to the log of the group's first run (where the backend points it); every run's log
gets that run's own lines -- its attempt, its outcome, a traceback if the group fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import torch

from lsbench.runs import FINISHED
from lsbench.runs.spec import RunSpec
from lsbench.store import Store
from lsbench.store.spool import SpoolWriter
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.protocol import (
    EXIT_BUSY,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    claim_stale_seconds,
    exclusive,
    lock_file,
)
from lsbench.sweep.worker import (
    METRIC_NAMES,
    gpu_name,
    heartbeats,
    open_results,
    record_result,
    run_status,
    versions,
)
from lsbench.train import TrainConfig, TrainResult, train
from lsbench.train.checkpoint import CHECKPOINT, PREVIOUS_CHECKPOINT, load_checkpoint
from lsbench.train.device import DeviceUnavailableError, resolve_device
from lsbench.train.precision import check_precision_supported
from lsbench.train.trainer import FUSED_CHECKPOINT


def run_group(
    sweep_dir: Path,
    indices: Sequence[int],
    *,
    backend: str = "local",
    job_id: str | None = None,
    device: str = "auto",
    stop_requested: Callable[[], bool] = lambda: False,
) -> dict[int, int]:
    """Train the runs ``indices`` of the sweep in ``sweep_dir`` as a fused group; return each run's exit code."""
    sweep = SweepDir(Path(sweep_dir))
    specs = {index: sweep.run_spec(index) for index in indices}
    codes: dict[int, int] = {}
    store = open_results(sweep)
    try:
        pending = []
        for index, spec in specs.items():
            status = run_status(store, spec.run_id)
            if status in FINISHED:
                _say(sweep, spec.run_id, f"run {spec.run_id} is already {status}; nothing to do")
                codes[index] = EXIT_OK
            else:
                pending.append(index)
        if not pending:
            return codes
        try:  # before any claim, as for a single run: never hold runs on a GPU that cannot train them
            device = str(resolve_device(device))
            check_precision_supported(specs[pending[0]].precision, torch.device(device))
        except (DeviceUnavailableError, ValueError) as error:
            print(f"lsbench worker: error: {error}", file=sys.stderr, flush=True)
            return {**codes, **dict.fromkeys(pending, EXIT_FAILURE)}
        with contextlib.ExitStack() as locks:
            claimed = []
            for index in pending:
                run_id = specs[index].run_id
                run_dir = sweep.run_dir(run_id)
                run_dir.mkdir(parents=True, exist_ok=True)
                if not locks.enter_context(exclusive(lock_file(run_dir, run_id))):
                    _say(sweep, run_id, f"run {run_id} is being trained by another worker")
                    codes[index] = EXIT_BUSY
                else:
                    claimed.append(index)
            for part in _partition(sweep, [specs[index] for index in claimed]):
                part_indices = [index for index in claimed if specs[index] in part]
                codes.update(_train_part(store, sweep, part_indices, specs, backend, job_id, device, stop_requested))
                if stop_requested():
                    break
            for index in claimed:  # parts a stop signal kept from starting: still queued, for the next worker
                codes.setdefault(index, EXIT_INTERRUPTED)
    finally:
        store.close()
    return codes


def _partition(sweep: SweepDir, specs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs that can resume together: one part per checkpoint step; a single run's checkpoint trains alone."""
    parts: dict[object, list[RunSpec]] = defaultdict(list)
    for spec in specs:
        loaded = load_checkpoint(sweep.run_dir(spec.run_id))
        if loaded is None:
            parts[0].append(spec)
        elif loaded[0].get(FUSED_CHECKPOINT):
            parts[loaded[0]["step"]].append(spec)
        else:
            parts[("alone", spec.run_id)].append(spec)
    return list(parts.values())


def _train_part(
    store: Store | SpoolWriter,
    sweep: SweepDir,
    indices: list[int],
    specs: dict[int, RunSpec],
    backend: str,
    job_id: str | None,
    device: str,
    stop_requested: Callable[[], bool],
) -> dict[int, int]:
    """Claim, train and record one part of the group; the runs another worker holds are left out (EXIT_BUSY)."""
    codes: dict[int, int] = {}
    attempts: dict[int, str] = {}
    for index in indices:
        spec = specs[index]
        attempt_id = f"{job_id or backend}/{uuid.uuid4().hex[:8]}"
        claimed = store.start_attempt(
            spec.run_id,
            attempt_id,
            backend=backend,
            job_id=job_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            log_path=str(sweep.log_file(spec.run_id)),
            gpu=gpu_name(device),
            versions=versions(device, spec.precision),
            claim_stale_after=claim_stale_seconds(),
        )
        if not claimed:
            _say(sweep, spec.run_id, f"run {spec.run_id} is claimed by a live worker elsewhere")
            codes[index] = EXIT_BUSY
            continue
        store.set_run_status(spec.run_id, "running")
        attempts[index] = attempt_id
        what = f"{spec.problem} {spec.optimizer} seed {spec.seed} {spec.hparams}"
        _say(sweep, spec.run_id, f"attempt {attempt_id}: {what} (fused group of {len(indices)})")
    training = list(attempts)
    if not training:
        return codes
    configs = [specs[i].train_config(device=device, checkpoint_every=specs[i].eval_every) for i in training]
    last_steps: dict[int, int | None] = dict.fromkeys(training)

    def recorder(index: int) -> Callable[[dict[str, float]], None]:
        run_id = specs[index].run_id

        def record(point: dict[str, float]) -> None:
            step = last_steps[index] = int(point["step"])
            store.add_metrics(run_id, step, {name: point[name] for name in METRIC_NAMES})

        return record

    recorded: dict[int, int] = {}

    def finisher(index: int) -> Callable[[TrainResult], None]:
        def finish(result: TrainResult) -> None:
            """Record a run's result when it ends -- a diverged run while its group trains on."""
            if result.status == "interrupted" or index in recorded:
                return
            run_id, attempt_id = specs[index].run_id, attempts[index]
            recorded[index] = record_result(store, run_id, attempt_id, result)
            for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):  # the result is stored; the run will never resume
                (sweep.run_dir(run_id) / name).unlink(missing_ok=True)
            _say(sweep, run_id, f"attempt {attempt_id}: {result.status} at step {result.steps_done}")

        return finish

    with contextlib.ExitStack() as beating:
        lost = [
            beating.enter_context(heartbeats(store, specs[i].run_id, attempts[i], lambda i=i: last_steps[i]))
            for i in training
        ]
        try:
            out_dirs = [sweep.run_dir(specs[i].run_id) for i in training]
            callbacks = [recorder(i) for i in training]
            finishers = [finisher(i) for i in training]
            stopping = [stop_requested, *lost]
            results = _train(configs, out_dirs, callbacks, finishers, lambda: any(stop() for stop in stopping))
        except Exception:
            text = traceback.format_exc()
            print(text, file=sys.stderr, flush=True)
            for index in training:
                if index in recorded:
                    continue
                _say(sweep, specs[index].run_id, text.rstrip())
                store.set_run_status(specs[index].run_id, "failed", end_attempt=(attempts[index], EXIT_FAILURE))
                codes[index] = EXIT_FAILURE
            return {**codes, **recorded}
    for index, result, claim_lost in zip(training, results, lost, strict=True):
        if index in recorded:
            codes[index] = recorded[index]
            continue
        run_id, attempt_id = specs[index].run_id, attempts[index]
        if claim_lost():
            _say(sweep, run_id, f"attempt {attempt_id}: another worker took the run over; stopped")
            store.end_attempt(run_id, attempt_id, "preempted", EXIT_BUSY)
            codes[index] = EXIT_BUSY
            continue
        codes[index] = record_result(store, run_id, attempt_id, result)
        _say(sweep, run_id, f"attempt {attempt_id}: {result.status} at step {result.steps_done}")
    return codes


def _train(
    configs: list[TrainConfig],
    out_dirs: list[Path],
    on_eval: list[Callable[[dict[str, float]], None]],
    on_result: list[Callable[[TrainResult], None]],
    should_stop: Callable[[], bool],
) -> list[TrainResult]:
    """A fused group; a part of one run trains alone (:func:`lsbench.train.train` continues a fused checkpoint as a
    group of one)."""
    if len(configs) == 1:
        result = train(configs[0], out_dirs[0], on_eval=on_eval[0], should_stop=should_stop)
        on_result[0](result)
        return [result]
    from lsbench.fused.trainer import train_group

    return train_group(configs, out_dirs, on_eval=on_eval, should_stop=should_stop, on_result=on_result)


def _say(sweep: SweepDir, run_id: str, text: str) -> None:
    """One line (or a traceback) in the run's own log, timestamped, and on standard output."""
    print(text, flush=True)
    log = sweep.log_file(run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    with open(log, "a") as handle:
        handle.write(f"{stamp} {text}\n")
