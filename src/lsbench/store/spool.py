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
been replayed is kept in ``spool/.offsets.json`` only to make repeated ingestion cheap.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lsbench.files import atomic_write_text

SPOOL_DIR = "spool"
OFFSETS_FILE = ".offsets.json"


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

    def close(self) -> None:
        """Nothing is held open between writes."""

    def _append(self, run_id: str, op: str, **fields: Any) -> None:
        path = self.directory / f"{run_id}.jsonl"
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and _last_byte(path, size) != b"\n":
                os.write(descriptor, b"\n")  # close the line a killed writer left unterminated
            os.write(descriptor, encode_line({"op": op, "run_id": run_id, **fields}))
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

    def start_attempt(self, run_id: str, attempt_id: str, **fields: Any) -> None:
        self._append(run_id, "start_attempt", attempt_id=attempt_id, **fields)

    def heartbeat(self, run_id: str, attempt_id: str, step: int) -> None:
        self._append(run_id, "heartbeat", attempt_id=attempt_id, step=step)

    def end_attempt(self, run_id: str, attempt_id: str, status: str, exit_code: int) -> None:
        self._append(run_id, "end_attempt", attempt_id=attempt_id, status=status, exit_code=exit_code)

    def set_run_status(self, run_id: str, status: str, **fields: Any) -> None:
        self._append(run_id, "status", status=status, **fields)

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
        store.heartbeat(run_id, record["attempt_id"], record["step"])
    elif op == "end_attempt":
        store.end_attempt(run_id, **record)
    elif op == "status":
        store.set_run_status(run_id, **record)
