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

**Persistent workers.** Starting a worker (Python, torch, the dataset) costs seconds, more than a small run trains.
So a slot keeps one long-lived worker, ``python -m lsbench worker --serve`` (:mod:`lsbench.sweep.worker` has the
protocol), started when the slot first has work and pinned like a one-run worker. The pool hands it one *unit* at a
time on its standard input and reads the unit's answer -- each run's exit code -- from its standard output; the
worker's own output goes to each run's log (``logs/RUN_ID.log``, appended) while it trains that run, and to the
pool's log in between. Units come from the queued runs by :func:`lsbench.fused.groups.group_runs` with the sweep's
``runs_per_worker`` (``sweep.json``; 1, every run alone, when absent); a unit is busy -- none of its runs is handed out
again -- from when it is sent until it is answered. A worker that dies (killed, out of memory) has the runs of its
unanswered unit marked failed unless they recorded an outcome themselves, as a one-run worker's runs are, and a line
in their logs says so; the slot starts a fresh worker for its next unit. A run another worker holds (exit code
:data:`EXIT_BUSY`) stays queued and is handed out again only after a heartbeat period, when the holder has either
recorded it or gone silent. When nothing is queued or in flight the pool closes its workers' input (they exit) and
ends.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from lsbench.cpus import available_cpus
from lsbench.fused.groups import group_runs
from lsbench.store import RunRow, Store
from lsbench.sweep.backends import SubmitOptions
from lsbench.sweep.layout import SweepDir
from lsbench.sweep.protocol import EXIT_BUSY, EXIT_DIVERGED, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, heartbeat_seconds

POOL_LOCK = "pool.lock"
POOL_INFO = "pool.json"
POOL_LOG = "pool.log"
POLL_SECONDS = 0.2
WORKER_EXIT_SECONDS = 60.0
"""How long the pool waits for a worker whose input it closed (or that it stopped) before it kills it."""
RECORDED_THEMSELVES = (EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_BUSY)
"""Exit codes after which a run's state is the worker's own record (or untouched); any other leaves it to the pool."""
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


@dataclass(eq=False)
class _Worker:
    """One long-lived worker process, its slot and the unit it trains (None while idle)."""

    process: subprocess.Popen[bytes]
    slot: Slot
    unit: list[RunRow] | None = None
    answers: bytes = b""  # what was read of its output that is not yet a whole line
    closed: bool = False  # its output reached its end: it exited or is exiting

    @property
    def output(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def send(self, unit: list[RunRow]) -> bool:
        """Hand the worker ``unit``; False if it is gone (its input is closed)."""
        line = ("+".join(str(row.index) for row in unit) + "\n").encode()
        assert self.process.stdin is not None
        try:
            while line:
                line = line[self.process.stdin.write(line) or 0 :]
        except (BrokenPipeError, ValueError):
            self.closed = True
            return False
        self.unit = unit
        return True


class Pool:
    """The pool process: hands the queued runs to its slots' workers until none are left (see module docstring)."""

    def __init__(self, sweep: SweepDir, slots: Sequence[Slot]) -> None:
        self.sweep = sweep
        self.free = list(slots)  # slots without a worker
        self.workers: list[_Worker] = []
        self.retry_at: dict[str, float] = {}  # run id -> when a run another worker held may be handed out again
        self.stopping = False
        self.job_id = f"local-{os.getpid()}"

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        store = Store(self.sweep.store_url())
        try:
            while True:
                queued = self._queued(store)
                if not self.stopping:
                    self._launch(queued)
                if not self._in_flight() and (self.stopping or not queued):
                    self._close_workers()
                    if self.stopping or not self._queued(store):  # once more: a submit may have queued runs meanwhile
                        break
                    continue
                self._wait(store)
        finally:
            self._close_workers()
            store.close()

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)

    def _queued(self, store: Store) -> list[RunRow]:
        return [row for row in store.sweep_runs(self.sweep.name) if row.status == "queued"]

    def _in_flight(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker.unit is not None]

    def _launch(self, queued: list[RunRow]) -> None:
        """Hand units of the queued runs that are not in flight to idle workers, starting workers in free slots."""
        idle = [worker for worker in self.workers if worker.unit is None and not worker.closed]
        if not idle and not self.free:
            return
        busy = {row.run_id for worker in self._in_flight() for row in worker.unit or ()}
        now = time.monotonic()
        rows = [row for row in queued if row.run_id not in busy and self.retry_at.get(row.run_id, 0.0) <= now]
        if not rows:
            return
        for positions in group_runs([row.spec for row in rows], self._runs_per_worker()):
            worker = idle.pop(0) if idle else self._start_worker() if self.free else None
            if worker is None or self.stopping:  # a stop that came while a worker was being started
                return
            worker.send([rows[position] for position in positions])  # a worker gone meanwhile is reaped by _wait

    def _runs_per_worker(self) -> int:
        """The sweep's ``runs_per_worker``, read each time: a later submit may change it."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            return max(1, int(self.sweep.read_meta().get("runs_per_worker", 1)))
        return 1

    def _start_worker(self) -> _Worker:
        slot = self.free.pop(0)
        command = [sys.executable, "-m", "lsbench", "worker", "--sweep-dir", str(self.sweep.path), "--serve"]
        command += ["--backend", "local", "--job-id", self.job_id]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # the answers; the worker moves its own output to its stderr, the pool's log
            bufsize=0,
            env=slot.environment(),
            preexec_fn=_die_with_parent,
        )
        worker = _Worker(process, slot)
        self.workers.append(worker)
        return worker

    def _wait(self, store: Store) -> None:
        """Wait up to :data:`POLL_SECONDS` for answers, settle those that came, and reap workers that exited."""
        listening = {worker.output: worker for worker in self.workers if not worker.closed}
        if listening:
            ready, _, _ = select.select(list(listening), [], [], POLL_SECONDS)
        else:
            time.sleep(POLL_SECONDS)
            ready = []
        for fd in ready:
            self._read(store, listening[fd])
        for worker in list(self.workers):
            if worker.process.poll() is not None:
                self._reap(store, worker)

    def _read(self, store: Store, worker: _Worker) -> None:
        chunk = os.read(worker.output, 65536)
        if not chunk:
            worker.closed = True
            return
        worker.answers += chunk
        while b"\n" in worker.answers:
            line, worker.answers = worker.answers.split(b"\n", 1)
            self._settle(store, worker, line)

    def _settle(self, store: Store, worker: _Worker, line: bytes) -> None:
        """Record what a worker answered for its unit; the worker is idle again."""
        unit, worker.unit = worker.unit, None
        try:
            codes = json.loads(line).get("codes") or {}
        except (ValueError, AttributeError):
            print(f"pool: worker {worker.process.pid} answered {line[:200]!r}", flush=True)
            codes = {}
        for row in unit or ():
            code = codes.get(str(row.index), EXIT_FAILURE)
            if code == EXIT_BUSY:  # another worker holds it: not again before it has recorded it or gone silent
                self.retry_at[row.run_id] = time.monotonic() + heartbeat_seconds()
            elif code not in RECORDED_THEMSELVES:
                self._fail(store, row.run_id)

    def _reap(self, store: Store, worker: _Worker) -> None:
        """A worker exited: read its last answers, give its slot back, and fail the runs it left unanswered."""
        while not worker.closed and select.select([worker.output], [], [], 0)[0]:
            self._read(store, worker)
        self.workers.remove(worker)
        self.free.append(worker.slot)
        assert worker.process.stdin is not None and worker.process.stdout is not None
        with contextlib.suppress(OSError):
            worker.process.stdin.close()
        worker.process.stdout.close()
        code = worker.process.returncode
        if worker.unit is None:
            if code not in (EXIT_OK, EXIT_INTERRUPTED):
                print(f"pool: worker {worker.process.pid} exited with code {code} while idle", flush=True)
            return
        if code in RECORDED_THEMSELVES:
            return  # it stopped before it began the unit: its runs are still queued
        death = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        print(f"pool: worker {worker.process.pid} {death} while training {[r.index for r in worker.unit]}", flush=True)
        note = f"lsbench pool: the worker (pid {worker.process.pid}) {death} (its output outside runs: {POOL_LOG})"
        for row in worker.unit:
            if self._fail(store, row.run_id, queued_too=not self.stopping):
                _note(self.sweep.log_file(row.run_id), note)

    def _fail(self, store: Store, run_id: str, queued_too: bool = True) -> bool:
        """Mark the run failed if no worker recorded an outcome for it; return whether it was marked.

        A queued run is a run whose worker crashed before it could record its own failure; when the pool is being
        stopped, it is a run that the stop kept from starting, and it stays queued.
        """
        run = store.get_run(run_id)
        if run is None or run.status not in (("running", "queued") if queued_too else ("running",)):
            return False
        store.set_run_status(run_id, "failed")
        return True

    def _close_workers(self) -> None:
        """End every worker: close its input (an idle one exits at once), stop one that still trains, wait."""
        for worker in self.workers:
            assert worker.process.stdin is not None
            with contextlib.suppress(OSError):
                worker.process.stdin.close()
            if worker.unit is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=WORKER_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            assert worker.process.stdout is not None
            worker.process.stdout.close()
            self.free.append(worker.slot)
        self.workers.clear()


def _note(log_file: Path, text: str) -> None:
    """Append a line to a run's log, where ``sweep status`` shows the tail of a failed run."""
    with contextlib.suppress(OSError):
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as log:
            log.write(text + "\n")


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
