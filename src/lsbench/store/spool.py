"""The cluster path for a SQLite store: per-run spool files on the shared file system, ingested on the login node.

SQLite's locking is unreliable on network file systems, so workers on compute nodes must never write the SQLite
file. Instead each worker appends what it would have written to the store to a file of its own run,
``<sweep>/spool/<run_id>.jsonl``, and ``sweep status`` / ``sweep aggregate`` on the login node replay those files
into SQLite (:func:`ingest`).

Each line is ``<crc32 as 8 hex digits> <json>\\n``, written with one ``write`` on a file opened with ``O_APPEND`` and
fsynced, so a line is either complete or -- if its writer was killed mid-write -- detectably broken: a line whose
checksum does not match, or the unterminated tail of a file, is skipped. Before appending, a writer terminates an
unterminated tail, so a broken line never swallows the next good one. One run is trained by one worker at a time
(the run lock), so a file has one writer at a time.

Ingestion is idempotent: every operation maps onto an idempotent store write (metrics keyed (run, step, name),
attempts keyed (run, attempt id), statuses overwritten in file order), so replaying a file twice -- after a crash of
the ingesting process, or by two login shells at once -- changes nothing. The byte offset up to which each file has
been replayed is kept in ``spool/.offsets.json`` only to make repeated ingestion cheap. Heartbeats carry the time
they were sent, so a run's liveness read on the login node is that of the worker, not of the ingestion.

**Claims.** Workers of a spooled sweep cannot reach the store, so they claim their run with files (:class:`FileClaims`):
``spool/claims/<run_id>.<n>`` is created with ``O_EXCL``, which is atomic on NFS, Lustre and BeeGFS across nodes
(unlike ``flock``). Generation ``n + 1`` may only be created while generation ``n`` is stale, and only one creator
of a generation succeeds, so exactly one worker holds a run at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lsbench.files import atomic_write_text

SPOOL_DIR = "spool"
OFFSETS_FILE = ".offsets.json"
CLAIMS_DIR = "claims"


def encode_line(record: Mapping[str, Any]) -> bytes:
    payload = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return f"{zlib.crc32(payload.encode()):08x} {payload}\n".encode()


def decode_lines(data: bytes) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(end offset, record or None if broken)`` for every complete line of ``data``."""
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        line = data[start:end]
        start = end + 1
        record = None
        checksum, _, payload = line.partition(b" ")
        try:
            if int(checksum, 16) == zlib.crc32(payload):
                record = json.loads(payload)
        except ValueError:
            pass
        yield start, record


class SpoolWriter:
    """The worker's side: the store operations a worker performs, appended to its run's spool file.

    Offers the subset of :class:`lsbench.store.Store` that a worker calls, so the worker does not care which one it
    has.
    """

    def __init__(self, sweep_dir: Path, redacted_url: str) -> None:
        self.directory = Path(sweep_dir) / SPOOL_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redacted_url = f"spool of {redacted_url}"
        self.claims = FileClaims(sweep_dir)
        self._lock = threading.Lock()  # the heartbeat thread appends too

    def close(self) -> None:
        """Nothing is held open between writes."""

    def _append(self, run_id: str, op: str, **fields: Any) -> None:
        path = self.directory / f"{run_id}.jsonl"
        with self._lock:
            self._append_line(path, encode_line({"op": op, "run_id": run_id, **fields}))

    @staticmethod
    def _append_line(path: Path, line: bytes) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and _last_byte(path, size) != b"\n":
                os.write(descriptor, b"\n")  # close the line a killed writer left unterminated
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def records(self, run_id: str) -> list[dict[str, Any]]:
        path = self.directory / f"{run_id}.jsonl"
        data = path.read_bytes() if path.exists() else b""
        return [record for _, record in decode_lines(data) if record is not None]

    # -- the worker's store operations ----------------------------------------------------------------------

    def finished_status(self, run_id: str) -> str | None:
        """The run's last status in its own spool file (the SQLite file is not read on compute nodes)."""
        statuses = [r["status"] for r in self.records(run_id) if r["op"] == "status"]
        return statuses[-1] if statuses else None

    def start_attempt(
        self, run_id: str, attempt_id: str, *, claim_stale_after: float | None = None, **fields: Any
    ) -> bool:
        """As :meth:`lsbench.store.Store.start_attempt`, the claim taken with :class:`FileClaims`."""
        if claim_stale_after is not None and not self.claims.claim(run_id, attempt_id, claim_stale_after):
            return False
        self._append(run_id, "start_attempt", attempt_id=attempt_id, **fields)
        return True

    def heartbeat(self, run_id: str, attempt_id: str, step: int | None) -> bool:
        """As :meth:`lsbench.store.Store.heartbeat`: recorded with the time it was sent; refreshes the claim."""
        self._append(run_id, "heartbeat", attempt_id=attempt_id, step=step, at=time.time())
        return self.claims.refresh(run_id, attempt_id)

    def end_attempt(self, run_id: str, attempt_id: str, status: str, exit_code: int) -> None:
        self._append(run_id, "end_attempt", attempt_id=attempt_id, status=status, exit_code=exit_code)
        self.claims.release(run_id, attempt_id)

    def set_run_status(self, run_id: str, status: str, **fields: Any) -> None:
        self._append(run_id, "status", status=status, **fields)
        if fields.get("end_attempt") is not None:
            self.claims.release(run_id, fields["end_attempt"][0])

    def add_metrics(self, run_id: str, step: int, values: Mapping[str, float]) -> None:
        self._append(run_id, "metrics", step=step, values=dict(values))


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(size - 1)
        return file.read(1)


def ingest(store: Any, sweep_dir: Path) -> int:
    """Replay new spool lines of ``sweep_dir`` into ``store``; return how many operations were applied."""
    directory = Path(sweep_dir) / SPOOL_DIR
    if not directory.is_dir():
        return 0
    offsets_file = directory / OFFSETS_FILE
    offsets: dict[str, int] = json.loads(offsets_file.read_text()) if offsets_file.exists() else {}
    applied = 0
    for path in sorted(directory.glob("*.jsonl")):
        start = offsets.get(path.name, 0)
        with open(path, "rb") as file:
            file.seek(start)
            data = file.read()
        for end, record in decode_lines(data):
            if record is not None:
                _apply(store, record)
                applied += 1
            offsets[path.name] = start + end
    if applied:
        atomic_write_text(offsets_file, json.dumps(offsets, sort_keys=True))
    return applied


def _apply(store: Any, record: dict[str, Any]) -> None:
    op, run_id = record.pop("op"), record.pop("run_id")
    if op == "metrics":
        store.add_metrics(run_id, record["step"], record["values"])
    elif op == "start_attempt":
        store.start_attempt(run_id, **record)
    elif op == "heartbeat":
        at = record.get("at")  # lines written before heartbeats carried their time have none
        when = None if at is None else datetime.fromtimestamp(at, UTC)
        store.heartbeat(run_id, record["attempt_id"], record["step"], at=when)
    elif op == "end_attempt":
        store.end_attempt(run_id, **record)
    elif op == "status":
        store.set_run_status(run_id, **record)


class FileClaims:
    """Claims of runs as files on the shared file system: ``spool/claims/<run_id>.<generation>``.

    A claim file holds ``{"attempt_id", "heartbeat"}`` (seconds since the epoch, refreshed by its holder). Taking a
    run creates the next generation with ``O_EXCL`` once the newest one is stale (or absent); a holder that finds a
    newer generation than its own has lost the run.
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.directory = Path(sweep_dir) / SPOOL_DIR / CLAIMS_DIR

    def _newest(self, run_id: str) -> tuple[int, dict[str, Any] | None]:
        """The newest generation of the run's claim (0: none) and its content (None while unreadable)."""
        generations = [int(path.suffix[1:]) for path in self.directory.glob(f"{run_id}.*") if path.suffix[1:].isdigit()]
        newest = max(generations, default=0)
        if not newest:
            return 0, None
        path = self.directory / f"{run_id}.{newest}"
        try:
            return newest, json.loads(path.read_text())
        except (OSError, ValueError):  # being written by its creator right now, or its creator died doing so
            with contextlib.suppress(OSError):
                return newest, {"attempt_id": None, "heartbeat": path.stat().st_mtime}
            return newest, None

    @staticmethod
    def _live(holder: Mapping[str, Any] | None, stale_after: float, now: float) -> bool:
        return holder is not None and now - float(holder["heartbeat"]) <= stale_after

    def claim(self, run_id: str, attempt_id: str, stale_after: float) -> bool:
        """Take the run for ``attempt_id`` unless another attempt holds a live claim; whether it was taken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        newest, holder = self._newest(run_id)
        if holder is not None and holder["attempt_id"] == attempt_id:
            return True
        if self._live(holder, stale_after, time.time()):
            return False
        path = self.directory / f"{run_id}.{newest + 1}"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another worker took this generation first
            return False
        try:
            os.write(descriptor, json.dumps({"attempt_id": attempt_id, "heartbeat": time.time()}).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return True

    def refresh(self, run_id: str, attempt_id: str) -> bool:
        """Renew the holder's claim; False (and nothing written) if a newer claim has taken the run over."""
        newest, holder = self._newest(run_id)
        if holder is None or holder["attempt_id"] != attempt_id:
            return newest == 0  # an attempt that never claimed holds nothing to lose
        if not holder["heartbeat"]:
            return True  # released by its own end: a late heartbeat must not revive it
        content = json.dumps({"attempt_id": attempt_id, "heartbeat": time.time()})
        atomic_write_text(self.directory / f"{run_id}.{newest}", content)
        return True

    def release(self, run_id: str, attempt_id: str) -> None:
        """End the holder's claim (its attempt ended): the run is free at once, not only after the claim goes stale."""
        newest, holder = self._newest(run_id)
        if holder is not None and holder["attempt_id"] == attempt_id:
            atomic_write_text(
                self.directory / f"{run_id}.{newest}", json.dumps({"attempt_id": attempt_id, "heartbeat": 0})
            )

    def live(self, run_ids: Iterable[str], stale_after: float) -> set[str]:
        """The runs among ``run_ids`` whose newest claim is live (read on the login node)."""
        now = time.time()
        return {run_id for run_id in run_ids if self._live(self._newest(run_id)[1], stale_after, now)}
