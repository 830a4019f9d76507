"""Crash-safe files of a training run: atomic writes and a two-generation checkpoint.

A worker can be killed at any instant (SIGKILL by the scheduler, node failure, preemption), including in the
middle of writing a file, so every file of a run is written with :mod:`lsbench.files` (temporary sibling,
fsync, atomic rename).

Checkpoints keep two generations, ``checkpoint.pt`` (newest) and ``checkpoint.prev.pt`` (the one before). A
newest checkpoint that still cannot be read -- truncated by a file system that lied about fsync, or corrupted
on a shared file system -- costs only the steps since the previous one, not the whole run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from lsbench.files import fsync_directory, write_synced

__all__ = ["CHECKPOINT", "PREVIOUS_CHECKPOINT", "load_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"

_log = logging.getLogger(__name__)


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as the newest checkpoint in ``directory``; the newest so far becomes the previous one.

    The new file is complete on disk before the old newest one is renamed, so at every instant at least one
    complete checkpoint exists under one of the two names.
    """
    newest = directory / CHECKPOINT
    temporary = write_synced(newest, lambda file: torch.save(state, file))
    if newest.exists():
        os.replace(newest, directory / PREVIOUS_CHECKPOINT)
    os.replace(temporary, newest)
    fsync_directory(directory)


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
