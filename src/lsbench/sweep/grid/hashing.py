"""Canonical JSON of hyperparameter points and of whole grids: what run ids and grid hashes are computed from.

Run ids are the identity of every stored result, so these encodings must never change: a point is JSON with sorted
keys and no spaces, a grid hash is the sha256 of :meth:`~lsbench.sweep.grid.Grid.to_dict` as compact JSON in file
order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from lsbench.sweep.grid.types import Grid

__all__ = ["point_key", "with_hash"]

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # = json.dumps(..., sort_keys=True, separators=...)


def point_key(point: Mapping[str, Any]) -> str:
    """Canonical JSON of one resolved point (what run ids hash, and how repeated points are recognized)."""
    return _ENCODER.encode(point)


def with_hash(grid: Grid) -> Grid:
    """``grid`` with ``grid_hash`` set to the sha256 (hex) of its canonical content."""
    digest = hashlib.sha256(json.dumps(grid.to_dict(), separators=(",", ":")).encode()).hexdigest()
    object.__setattr__(grid, "grid_hash", digest)
    return grid
