"""Expanding one optimizer's sub-grid into hyperparameter points: ``grid`` axes, ``zip`` groups, the ``vary`` axis and
``fixed`` values, with every registry default filled in.

Expansion order is part of a grid's meaning (run order and, through the grid hash, its identity): the product of
the ``grid`` axes in file order, then one axis per ``zip`` group, then the ``vary`` axis, the last axis varying
fastest. A point that resolves to the values of an earlier one is kept once, at the first place.

Points are plain JSON data in canonical form (:func:`resolve_point`), so writing a default explicitly and leaving it
out give the same point, the same JSON and the same run id.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lsbench.sweep.grid.hashing import point_key
from lsbench.sweep.grid.types import OptimizerGrid

if TYPE_CHECKING:
    from lsbench.optim import HParam, OptimizerEntry

__all__ = ["axes", "canonical", "expand", "resolve_point", "size"]


def canonical(hp: HParam, value: Any) -> Any:
    """A validated value in canonical form: an integer given for a float is a float, and numbers inside list values
    are floats (``[0, 1]`` and ``[0.0, 1.0]`` are the same value)."""
    if hp.type is float and _is_int(value):
        return float(value)
    if isinstance(value, list):
        return _floats(value)
    return value


def resolve_point(entry: OptimizerEntry, values: Mapping[str, Any]) -> dict[str, Any]:
    """All hyperparameters of ``entry``: registry defaults overridden by ``values`` (registry ``resolve``), each in
    canonical form (floats as floats, numbers inside list values as floats), so a default written explicitly and
    one left out give equal dicts and equal run ids."""
    resolved = entry.resolve(values)
    return {hp.name: canonical(hp, resolved[hp.name]) for hp in entry.hparams}


def axes(og: OptimizerGrid) -> list[list[dict[str, Any]]]:
    """The axes of ``og``, each a list of partial points: one per ``grid`` key, one per ``zip`` group, and the
    ``vary`` axis (the base point ``{}`` first, then one point per varied value)."""
    out = [[{name: value} for value in values] for name, values in og.grid.items()]
    for group in og.zip:
        length = len(next(iter(group.values())))
        out.append([{name: values[i] for name, values in group.items()} for i in range(length)])
    if og.vary:
        out.append([{}, *({name: value} for name, values in og.vary.items() for value in values)])
    return out


def size(og: OptimizerGrid) -> int:
    """Points of ``og`` before repeated points are merged (a ``best_of`` section stands for one)."""
    return 1 if og.best_of is not None else math.prod(len(axis) for axis in axes(og))


def expand(entry: OptimizerEntry, og: OptimizerGrid) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """``(point, point_key, values)`` of every distinct point in expansion order; ``values`` are the hyperparameters
    the file sets for it (``fixed`` overridden by the axes), for error messages."""
    seen: set[str] = set()
    for combination in itertools.product(*axes(og)):
        values = dict(og.fixed)
        for partial in combination:
            values.update(partial)
        point = resolve_point(entry, values)
        key = point_key(point)
        if key not in seen:
            seen.add(key)
            yield point, key, values


def _floats(value: Any) -> Any:
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if _is_int(value):
        return float(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
