"""Crash-safe files of a training run: atomic writes and a two-generation checkpoint.

A worker can be killed at any instant (SIGKILL by the scheduler, node failure, preemption), including in the
middle of writing a file. Every file of a run is therefore written to a temporary file in the same directory,
flushed and fsynced, and then renamed over its final name with :func:`os.replace`, which is atomic on POSIX
file systems: a reader sees the old file or the new one, never a mix. The directory is fsynced afterwards so
the rename itself survives a power loss.

Checkpoints keep two generations, ``checkpoint.pt`` (newest) and ``checkpoint.prev.pt`` (the one before). A
newest checkpoint that still cannot be read -- truncated by a file system that lied about fsync, or corrupted
on a shared file system -- costs only the steps since the previous one, not the whole run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CHECKPOINT", "PREVIOUS_CHECKPOINT", "atomic_write", "load_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"

_log = logging.getLogger(__name__)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, so that readers never see a partial file.

    The temporary file has a fixed name next to ``path``; one left behind by a killed writer is simply
    overwritten by the next write.
    """
    temporary = _write_synced(path, write)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as the newest checkpoint in ``directory``; the newest so far becomes the previous one.

    The new file is complete on disk before the old newest one is renamed, so at every instant at least one
    complete checkpoint exists under one of the two names.
    """
    newest = directory / CHECKPOINT
    temporary = _write_synced(newest, lambda file: torch.save(state, file))
    if newest.exists():
        os.replace(newest, directory / PREVIOUS_CHECKPOINT)
    os.replace(temporary, newest)
    _fsync_directory(directory)


def _write_synced(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write the temporary sibling of ``path`` and force it to disk; return the temporary path."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    return temporary


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in ``directory`` and its path, or None if there is none.

    Tensors are loaded onto the CPU; the trainer moves them to the run's device, so a run may resume on
    another device than the one it was checkpointed on. The files hold the trainer's own pickled state
    (history dicts, the optimizer's Python counters), hence ``weights_only=False``: load checkpoints only
    from run directories you trust, as with any pickle.
    """
    for path in (directory / CHECKPOINT, directory / PREVIOUS_CHECKPOINT):
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=False), path
        except Exception as error:  # a damaged file raises whatever the unpickler or zip reader trips over
            _log.warning("cannot read checkpoint %s (%s: %s); trying an older one", path, type(error).__name__, error)
    return None
