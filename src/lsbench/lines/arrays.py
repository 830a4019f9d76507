"""A linescan run's measurements on disk: a zarr group of arrays indexed by line, appended in chunks.

Lines are arrays, not SQL rows: 10,000 lines of 167 step sizes are 1.7 million losses, and the per-sample losses of
the batch-size analysis 6.7 billion. Each run writes its own group ``lines.zarr`` in its run directory on the shared
file system; the store keeps the run's row, its status and the group's path (``runs.arrays``).

Layout (row ``i`` of every array is the i-th measured line; ``S`` step sizes, ``N`` measured samples, ``B`` batch):

================== ============ ============================================================================
``step``           [L] int64    the training step whose update defined the line (θ before that step is s = 0)
``full_loss``      [L, S] f64   the objective over the measured data set along the line (Eq. 5.1)
``batch_loss``     [L, S] f64   the objective of the direction-defining batch along the line
``grad_norm``      [L] f64      ‖g_B‖, the direction-defining batch's gradient norm at s = 0
``batch_slope``    [L] f64      g_B·d̂, that batch loss' slope at s = 0 along the unit direction d̂
``step_taken``     [L] f64      the step the optimizer took along d̂ (‖θ_after − θ_before‖)
``angle``          [L] f64      degrees between d̂ and the batch's gradient at θ_after (90: exact line search)
``per_sample``     [L, S, N] f2 per-sample losses of the data set (only with ``per_sample: true``)
``batch_per_sample`` [L, S, B] f2 per-sample losses of the direction-defining batch (idem)
================== ============ ============================================================================

The group's attributes hold the step sizes and the run's identity, so the arrays can be read without the store.

**Resumable without gaps or duplicates.** Lines are buffered (on the device) and appended when the buffer is large
and at every checkpoint, *before* the checkpoint is written; the checkpoint records how many rows were on disk. A
resumed run first cuts the arrays back to that count (lines measured after the checkpoint are dropped), then
measures those lines again: every step's line is on disk exactly once. zarr writes every chunk to a temporary file
and renames it, so a worker killed mid-write leaves each chunk old or new, never torn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["ARRAYS_DIR", "ArraysMismatchError", "LineArrays", "LineData", "LineWriter", "read_lines"]

ARRAYS_DIR = "lines.zarr"
"""The group's name in a run directory."""
FORMAT = 1
_CHUNK_BYTES = 8 << 20  # a chunk of the widest array: large enough for few files, small enough to rewrite
_MAX_CHUNK_LINES = 512
_BUFFER_BYTES = 64 << 20  # at most about this much of lines held on the device before they are appended


class ArraysMismatchError(ValueError):
    """The directory holds the lines of another run or layout; appending would mix two runs."""


@dataclass(frozen=True)
class _Field:
    name: str
    dtype: str
    width: str  # "", "S", "SN" or "SB": the per-line shape
    optional: bool = False


FIELDS = (
    _Field("step", "int64", ""),
    _Field("full_loss", "float64", "S"),
    _Field("batch_loss", "float64", "S"),
    _Field("grad_norm", "float64", ""),
    _Field("batch_slope", "float64", ""),
    _Field("step_taken", "float64", ""),
    _Field("angle", "float64", ""),
    _Field("per_sample", "float16", "SN", optional=True),
    _Field("batch_per_sample", "float16", "SB", optional=True),
)
"""Every array of the group, in one place (the writer creates, the reader reads, the docstring explains them)."""


class LineArrays:
    """The shapes of one run's arrays: ``S`` step sizes, ``N`` measured samples, ``B`` batch size."""

    def __init__(self, step_count: int, samples: int, batch_size: int, per_sample: bool) -> None:
        self.sizes = {"S": step_count, "N": samples, "B": batch_size}
        self.fields = tuple(f for f in FIELDS if per_sample or not f.optional)

    def line_shape(self, f: _Field) -> tuple[int, ...]:
        return tuple(self.sizes[letter] for letter in f.width)

    def chunk_lines(self) -> int:
        """Lines per chunk: the widest array's chunk about :data:`_CHUNK_BYTES`."""
        widest = max(math.prod(self.line_shape(f)) * np.dtype(f.dtype).itemsize for f in self.fields)
        return max(1, min(_MAX_CHUNK_LINES, _CHUNK_BYTES // widest))


class LineWriter:
    """Appends a run's lines to its group (see the module docstring); created by the trainer of a linescan run.

    Args:
        path: the group's directory (created if missing).
        step_sizes: the step sizes of every line.
        samples: N, the number of measured samples.
        batch_size: B, the direction-defining batch's size.
        per_sample: whether the per-sample arrays are written.
        attrs: the run's identity and settings, stored with the group; an existing group must have the same.

    Raises :class:`ArraysMismatchError` when ``path`` holds the arrays of another run or layout.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        step_sizes: list[float],
        samples: int,
        batch_size: int,
        per_sample: bool,
        attrs: Mapping[str, Any],
    ) -> None:
        self.path = Path(path)
        self.layout = LineArrays(len(step_sizes), samples, batch_size, per_sample)
        expected = {
            "format": FORMAT,
            "step_sizes": list(step_sizes),
            "samples": samples,
            "batch_size": batch_size,
            "per_sample": per_sample,
            **attrs,
        }
        self.group = zarr.open_group(self.path, mode="a")
        found = dict(self.group.attrs)
        if found and found != expected:
            differences = sorted(key for key in expected.keys() | found.keys() if found.get(key) != expected.get(key))
            raise ArraysMismatchError(
                f"{self.path} holds the lines of another run or layout (differs in {', '.join(differences)})"
            )
        if not found:
            self.group.attrs.update(expected)
        chunk = self.layout.chunk_lines()
        self.arrays = {}
        for f in self.layout.fields:
            shape = self.layout.line_shape(f)
            if f.name in self.group:
                self.arrays[f.name] = self.group[f.name]
            else:
                self.arrays[f.name] = self.group.create_array(
                    f.name, shape=(0, *shape), chunks=(chunk, *shape), dtype=f.dtype, fill_value=0
                )
        self._buffer: list[dict[str, Any]] = []
        line_bytes = sum(math.prod(self.layout.line_shape(f)) * np.dtype(f.dtype).itemsize for f in self.layout.fields)
        self._buffer_lines = max(1, _BUFFER_BYTES // line_bytes)  # lines held on the device before they are appended

    @property
    def rows(self) -> int:
        """Lines on disk (the buffer not included)."""
        return int(self.arrays["step"].shape[0])

    def truncate(self, rows: int) -> None:
        """Cut every array back to ``rows`` lines and drop the buffer (a resumed run, before it measures again)."""
        self._buffer.clear()
        for array in self.arrays.values():
            if array.shape[0] != rows:
                array.resize((rows, *array.shape[1:]))

    def add(self, values: Mapping[str, Any]) -> None:
        """Buffer one line: a value (a device tensor or a number) for every array of the layout."""
        missing = [f.name for f in self.layout.fields if f.name not in values]
        if missing:
            raise ValueError(f"line is missing {', '.join(missing)}")
        self._buffer.append({f.name: values[f.name] for f in self.layout.fields})
        if len(self._buffer) >= self._buffer_lines:
            self.flush()

    def flush(self) -> int:
        """Append the buffered lines (one host copy per array); return the rows on disk."""
        if self._buffer:
            start = self.rows
            stop = start + len(self._buffer)
            for f in self.layout.fields:
                block = _host([line[f.name] for line in self._buffer], f.dtype)
                array = self.arrays[f.name]
                array.resize((stop, *array.shape[1:]))
                array[start:stop] = block
            self._buffer.clear()
        return self.rows


def _host(values: list[Any], dtype: str) -> np.ndarray:
    """Buffered values of one array as a host block of the stored dtype: device tensors are stacked on their device
    and copied off it at once (one transfer per array and flush, not one per line). Numbers are taken as they are.
    torch is imported here, not at the top: readers of the arrays (a login node drawing a report) need no torch."""
    if all(hasattr(value, "detach") for value in values):
        import torch

        return torch.stack([value.detach() for value in values]).cpu().numpy().astype(dtype, copy=False)
    return np.stack([np.asarray(value) for value in values]).astype(dtype, copy=False)


@dataclass(frozen=True)
class LineData:
    """A run's measured lines as read back (see the module docstring for each array).

    The per-sample arrays stay zarr arrays (read line by line: ``per_sample[i]``), the others are numpy arrays.
    """

    path: Path
    attrs: dict[str, Any]
    step_sizes: np.ndarray
    step: np.ndarray
    full_loss: np.ndarray
    batch_loss: np.ndarray
    grad_norm: np.ndarray
    batch_slope: np.ndarray
    step_taken: np.ndarray
    angle: np.ndarray
    per_sample: Any | None
    batch_per_sample: Any | None

    def __len__(self) -> int:
        return len(self.step)


def read_lines(path: str | os.PathLike[str]) -> LineData:
    """Read a run's lines (the group written by :class:`LineWriter`); lines still buffered by a running worker are
    not there yet. Raises FileNotFoundError when ``path`` holds no lines."""
    path = Path(path)
    try:
        group = zarr.open_group(path, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise FileNotFoundError(f"no measured lines at {path}") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != FORMAT:
        raise FileNotFoundError(f"{path} is not a group of measured lines (format {attrs.get('format')!r})")
    # A running worker resizes the arrays one after another: read every one up to the shortest length.
    rows = min(int(group[f.name].shape[0]) for f in FIELDS if f.name in group)
    values: dict[str, Any] = {}
    for f in FIELDS:
        if f.name not in group:
            values[f.name] = None
            continue
        array = group[f.name]
        values[f.name] = array if f.optional else np.asarray(array[:rows])
    return LineData(path=path, attrs=attrs, step_sizes=np.asarray(attrs["step_sizes"], dtype=np.float64), **values)
