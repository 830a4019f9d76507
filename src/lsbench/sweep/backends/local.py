"""The local backend: a bounded process pool that outlives the shell that submitted the sweep.

``start_pool`` launches ``python -m lsbench.sweep.backends.local SWEEP_DIR`` in a new session (so closing the
terminal does not stop it) and returns at once. The pool trains the sweep's ``queued`` runs, at most one worker
per slot: one slot per GPU that CUDA can use (a MIG instance counts as a GPU), each worker pinned to its GPU
through ``CUDA_VISIBLE_DEVICES`` and given an equal share of this process' CPUs as ``OMP_NUM_THREADS`` -- or,
without GPUs, one single-threaded worker per CPU (a second intra-op thread per worker only makes workers compete
for cores). A worker whose GPU turns out unusable exits with one line and its run is marked failed; it never
trains on the CPU instead (:mod:`lsbench.sweep.worker`). When its queue is empty it looks at the store once more,
so runs queued by a later ``sweep submit`` or ``sweep resubmit`` join the running pool instead of starting a second
one.

One pool per sweep: the pool holds an exclusive ``flock`` on ``pool.lock`` for its whole life. The submitter
takes the lock first and hands the open file to the child, so there is no window in which two submitters could
both decide that no pool is running.

Workers get SIGTERM when the pool dies, however it dies (Linux ``PR_SET_PDEATHSIG``): they checkpoint and leave
their runs ``preempted``, and ``sweep resubmit --missing`` continues them. ``cancel`` sends SIGTERM to the pool's
process group, which reaches the pool and all its workers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from lsbench.cpus import available_cpus
from lsbench.store import RunRow, Store
from lsbench.sweep.backends import SubmitOptions
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.protocol import EXIT_BUSY, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK

POOL_LOCK = "pool.lock"
POOL_INFO = "pool.json"
POOL_LOG = "pool.log"
POLL_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a GPU (an index or a ``GPU-``/``MIG-`` UUID) with ``threads`` CPU threads, or a
    single-threaded CPU slot (``gpu`` None)."""

    gpu: str | None
    threads: int = 1

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        threads = "1" if self.gpu is None else str(self.threads)
        env.update(CUDA_VISIBLE_DEVICES=self.gpu or "", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        return env


def visible_gpus() -> list[str]:
    """The GPUs a worker may be pinned to: what CUDA can use here, not what the machine has.

    ``CUDA_VISIBLE_DEVICES`` wins when set (an allocation or the user restricted the devices). Otherwise, where
    ``nvidia-smi -L`` lists MIG instances, every instance by its ``MIG-`` UUID (the only way to pin a process to one)
    and every GPU without MIG by its ``GPU-`` UUID; else the number of devices CUDA enumerates, asked from a
    short-lived child process so that the pool itself never imports torch nor starts CUDA (a container or cgroup
    shows fewer GPUs than ``/proc/driver/nvidia/gpus`` lists).
    A machine without the NVIDIA driver has none, without asking.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device.strip() for device in visible.split(",") if device.strip() and device.strip() != "-1"]
    if not _nvidia_driver_present():
        return []
    pinned = mig_slots(_run_quietly(["nvidia-smi", "-L"]))
    if pinned:
        return pinned
    count = _run_quietly([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"]).strip()
    return [str(i) for i in range(int(count.splitlines()[-1]))] if count[-1:].isdigit() else []


def _nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def mig_slots(listing: str) -> list[str]:
    """From the output of ``nvidia-smi -L``: if it lists MIG instances (``  MIG 1g.18gb Device 0: (UUID: MIG-…)``
    under their GPU), the UUID of every instance and of every GPU without MIG, in order; else an empty list."""
    gpus: list[tuple[str, list[str]]] = []
    for line in listing.splitlines():
        match = re.search(r"\(UUID: ((GPU|MIG)-[^)\s]+)\)", line)
        if match is None:
            continue
        if match.group(2) == "GPU":
            gpus.append((match.group(1), []))
        elif gpus:
            gpus[-1][1].append(match.group(1))
    if not any(instances for _, instances in gpus):
        return []
    return [uuid for gpu, instances in gpus for uuid in (instances or [gpu])]


def _run_quietly(command: list[str]) -> str:
    """A command's standard output, or "" if it cannot be run, fails or takes longer than two minutes."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def default_slots(workers: int | None = None) -> list[Slot]:
    """One slot per visible GPU, sharing this process' CPUs; without GPUs one CPU slot per CPU. ``workers`` caps
    the number of slots (and the CPUs are shared among the slots that are kept)."""
    gpus = visible_gpus()[:workers] if workers else visible_gpus()
    if gpus:
        threads = max(1, available_cpus() // len(gpus))
        return [Slot(gpu, threads) for gpu in gpus]
    slots = [Slot(None) for _ in range(available_cpus())]
    return slots[:workers] if workers else slots


def pool_pid(sweep: SweepDir) -> int | None:
    """The pid of the sweep's running pool, or None if no pool holds the lock."""
    lock = sweep.path / POOL_LOCK
    if not lock.exists():
        return None
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = sweep.path / POOL_INFO
            with contextlib.suppress(OSError, ValueError, KeyError):
                return int(json.loads(info.read_text())["pid"])
            return -1  # locked but not described yet: a pool is starting
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def start_pool(sweep: SweepDir, workers: int | None = None) -> bool:
    """Start the sweep's pool unless one is running; return whether a new pool was started."""
    sweep.path.mkdir(parents=True, exist_ok=True)
    handle = open(sweep.path / POOL_LOCK, "a")  # noqa: SIM115 - handed to the child, closed below
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # the running pool will pick up the newly queued runs
        command = [sys.executable, "-m", "lsbench.sweep.backends.local", str(sweep.path)]
        if workers:
            command += ["--workers", str(workers)]
        with open(sweep.path / POOL_LOG, "ab") as log:
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(handle.fileno(),),  # the pool holds the lock for as long as it lives
            )
        return True
    finally:
        handle.close()  # the child holds the lock through its copy of the descriptor


def cancel_pool(sweep: SweepDir, timeout: float = 60.0) -> bool:
    """SIGTERM the pool and its workers and wait until the pool has exited; return whether one was running."""
    pid = pool_pid(sweep)
    if pid is None or pid < 0:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pool_pid(sweep) is not None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    return True


class LocalBackend:
    """The :class:`lsbench.sweep.backends.Backend` of this machine: the sweep's detached pool."""

    name = "local"

    def submit(self, sweep: SweepDir, store: Store, runs: Sequence[RunRow], options: SubmitOptions) -> str:
        if not runs:
            return "nothing to run"
        return "started a local pool" if start_pool(sweep, options.workers) else "the running pool takes them"

    def active(self, sweep: SweepDir) -> bool:
        return pool_pid(sweep) is not None

    def refresh(self, sweep: SweepDir, store: Store) -> None:
        """Nothing to reconcile: the pool records workers that die without a word (see ``Pool._reap``)."""

    def vouched(self, sweep: SweepDir) -> set[str]:
        """None: the pool's workers run on this host, where status sees whether their processes are alive."""
        return set()

    def cancel(self, sweep: SweepDir, store: Store) -> str:
        return "stopped the pool" if cancel_pool(sweep) else "no pool was running"


def _die_with_parent() -> None:
    """In the worker, before exec: ask the kernel for SIGTERM when the pool dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Pool:
    """The pool process: runs queued runs in its slots until none are left."""

    def __init__(self, sweep: SweepDir, slots: Sequence[Slot]) -> None:
        self.sweep = sweep
        self.free = list(slots)
        self.running: dict[int, tuple[subprocess.Popen[bytes], Slot, str]] = {}
        self.stopping = False

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        store = Store(self.sweep.store_url())
        try:
            while True:
                if not self.stopping:
                    self._launch(store)
                if not self.running and (self.stopping or not self._queued(store)):
                    break
                self._reap(store)
                time.sleep(POLL_SECONDS)
        finally:
            store.close()

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for process, _, _ in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    def _queued(self, store: Store) -> list[tuple[int, str]]:
        return [(row.index, row.run_id) for row in store.sweep_runs(self.sweep.name) if row.status == "queued"]

    def _launch(self, store: Store) -> None:
        busy = {run_id for _, _, run_id in self.running.values()}
        for index, run_id in self._queued(store):
            if not self.free:
                return
            if run_id in busy:
                continue
            slot = self.free.pop(0)
            log_file = self.sweep.log_file(run_id)
            log_file.parent.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "lsbench", "worker", "--sweep-dir", str(self.sweep.path)]
            command += ["--index", str(index), "--backend", "local", "--job-id", f"local-{os.getpid()}"]
            with open(log_file, "ab") as log:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=slot.environment(),
                    preexec_fn=_die_with_parent,
                )
            self.running[process.pid] = (process, slot, run_id)

    def _reap(self, store: Store) -> None:
        for pid, (process, slot, run_id) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            del self.running[pid]
            self.free.append(slot)
            if code not in (EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_BUSY):
                run = store.get_run(run_id)
                if run is not None and run.status in ("running", "queued"):
                    # killed (OOM, SIGKILL) or crashed before it could record its own failure
                    store.set_run_status(run_id, "failed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the local pool of one sweep (started by `sweep submit`)")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    sweep = SweepDir(args.sweep_dir)
    slots = default_slots(args.workers)
    info = {"pid": os.getpid(), "slots": [slot.gpu or "cpu" for slot in slots], "started": time.time()}
    (sweep.path / POOL_INFO).write_text(json.dumps(info) + "\n")
    try:
        Pool(sweep, slots).run()
    finally:
        (sweep.path / POOL_INFO).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
