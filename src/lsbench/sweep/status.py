"""What `sweep status` shows: per-state counts, progress per problem × optimizer, and failures with log tails.

Run states come from the store, which the workers keep current. One case the workers cannot report themselves is
their own sudden death (SIGKILL, a lost node): a run left ``running`` whose last attempt was on this host and whose
process is gone, or whose last attempt has sent no heartbeat (workers send one every minute, on a timer) for
``stale_after`` seconds, is reported -- and recorded -- as ``failed``, its attempt with exit code -1 (lost), so the
state never lies about work that stopped. A run the scheduler vouches for (pending or running in Slurm) is never
declared lost, whatever its silence: silence only counts where no scheduler can say. Backends that know more
correct states before this runs. The default ``stale_after`` is the claim's staleness
(:func:`lsbench.sweep.protocol.claim_stale_seconds`): a run is lost exactly when another worker may take it over.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsbench.runs import FAILED, FINISHED, RUN_STATES
from lsbench.store import RunRow, Store
from lsbench.sweep.protocol import claim_stale_seconds

if TYPE_CHECKING:
    from rich.console import RenderableType

LOG_TAIL_LINES = 12
LOST_EXIT_CODE = -1  # the attempt of a worker that vanished without recording its end
DEFAULT_STALE_SECONDS = claim_stale_seconds()


@dataclass
class SweepStatus:
    """A snapshot of one sweep."""

    name: str
    counts: dict[str, int]
    progress: dict[str, dict[str, dict[str, int]]]  # problem -> optimizer -> {done, total}
    failures: list[dict[str, Any]] = field(default_factory=list)
    scheduler: dict[str, str] = field(default_factory=dict)  # run id -> the scheduler's word on unfinished runs

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return sum(count for state, count in self.counts.items() if state in FINISHED)

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.name,
            "total": self.total,
            "counts": self.counts,
            "progress": self.progress,
            "failures": self.failures,
            "scheduler": self.scheduler,
        }

    def renderables(self) -> list[RenderableType]:
        """What ``sweep status`` prints, as rich blocks: a summary line, progress per problem and optimizer, and each
        failure with the tail of its log."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        states = ", ".join(f"{state} {self.counts[state]}" for state in RUN_STATES if self.counts.get(state))
        blocks: list[RenderableType] = [Text(f"sweep {self.name}: {self.total} runs ({states or 'none'})")]
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("problem", overflow="fold")
        table.add_column("optimizer", overflow="fold")
        table.add_column("done", justify="right")
        table.add_column("total", justify="right")
        for problem, optimizers in self.progress.items():
            for optimizer, numbers in optimizers.items():
                table.add_row(problem, optimizer, str(numbers["done"]), str(numbers["total"]))
        blocks.append(table)
        for failure in self.failures:
            lines = [f"{failure['status']}: run {failure['run_id']} (index {failure['index']}) {failure['label']}"]
            if failure.get("scheduler"):
                lines.append(f"    {failure['scheduler']}")
            lines += [f"    {line}" for line in failure["log_tail"]] or ["    (no log)"]
            blocks.append(Text("\n".join(lines)))
        return blocks

    def format_text(self, width: int = 120) -> str:
        """:meth:`renderables` as plain text of at most ``width`` columns (a log line may wrap)."""
        from lsbench.report.formats import plain_text

        return plain_text(self.renderables(), width)


def sweep_status(
    store: Store, sweep: str, stale_after: float = DEFAULT_STALE_SECONDS, vouched: Collection[str] = frozenset()
) -> SweepStatus:
    """Read the sweep's runs, correct runs whose worker is gone, and summarize."""
    runs = [
        run if run.run_id in vouched else _settle_lost_run(store, run, stale_after) for run in store.sweep_runs(sweep)
    ]
    counts = Counter(run.status for run in runs)
    notes = _scheduler_notes(store, sweep)
    progress: dict[str, dict[str, dict[str, int]]] = {}
    for run in runs:
        numbers = progress.setdefault(run.problem, {}).setdefault(run.optimizer, {"done": 0, "total": 0})
        numbers["total"] += 1
        numbers["done"] += run.status in FINISHED
    failures = [
        {
            "run_id": run.run_id,
            "index": run.index,
            "status": run.status,
            "label": f"{run.problem} {run.optimizer} seed {run.seed}",
            "log_tail": _log_tail(store, run.run_id),
            "scheduler": notes.get(run.run_id),
        }
        for run in runs
        if run.status in FAILED
    ]
    unfinished = {run.run_id: notes.get(run.run_id) for run in runs if run.status not in FINISHED}
    by_state = {state: counts[state] for state in RUN_STATES if counts[state]}
    return SweepStatus(sweep, by_state, progress, failures, {key: note for key, note in unfinished.items() if note})


def _scheduler_notes(store: Store, sweep: str) -> dict[str, str]:
    """What the scheduler said about each run at the backend's last refresh (Slurm sweeps only; else empty)."""
    row = store.get_sweep(sweep)
    if row is None or row.backend != "slurm":
        return {}
    from lsbench.sweep.backends.slurm import scheduler_notes

    return scheduler_notes(row.sweep_dir)


def _settle_lost_run(store: Store, run: RunRow, stale_after: float) -> RunRow:
    if run.status != "running":
        return run
    attempts = store.attempts(run.run_id)
    if not attempts:
        return run
    last = max(attempts, key=lambda attempt: attempt.started_at)
    if last.status != "running":
        return run
    silent = (datetime.now(UTC) - (last.heartbeat_at or last.started_at)).total_seconds()
    dead_here = last.host == socket.gethostname() and not _alive(last.pid)
    if not dead_here and silent <= stale_after:
        return run
    store.end_attempt(run.run_id, last.attempt_id, "failed", LOST_EXIT_CODE)
    store.set_run_status(run.run_id, "failed")
    return store.get_run(run.run_id) or run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A killed child that nobody has reaped yet is a zombie: gone for our purposes.
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _log_tail(store: Store, run_id: str) -> list[str]:
    attempts = store.attempts(run_id)
    if not attempts:
        return []
    path = Path(max(attempts, key=lambda attempt: attempt.started_at).log_path)
    try:
        return path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return []
