"""Crash-safe file writes shared by the trainer, the sweep toolkit and the reports.

Any process of a sweep can be killed at any instant, also while it writes a file. Every file is therefore
written to a temporary sibling, flushed and fsynced, and then renamed over its final name with :func:`os.replace`,
which is atomic on POSIX file systems: a reader sees the old file or the new one, never a mix. The directory is
fsynced afterwards so that the rename itself survives a power loss. The temporary name carries the writer's pid,
so two processes replacing the same file never write into each other's temporary file.

This module must stay free of torch: the sweep commands that only read the store import it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_synced(path: Path, write: Callable[[IO[bytes]], Any], mode: int = 0o666) -> Path:
    """Write the temporary sibling of ``path`` with ``write(file)`` and force it to disk; return its path.

    ``mode`` (before the umask) is applied when the file is created, so a file meant for its owner only (one that
    holds credentials) is never readable by others, not even for an instant.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a killed writer of the same pid: it could have other permissions
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], mode: int = 0o666) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes; readers never see a partial file."""
    os.replace(write_synced(path, write, mode), path)
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o666) -> None:
    """:func:`atomic_write` for text (UTF-8, newlines as given)."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")), mode)
