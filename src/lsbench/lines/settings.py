"""What a ``linescan`` run measures: :class:`ScanSettings`, declared once, torch-free.

The settings are part of a linescan run's identity (:attr:`lsbench.runs.RunSpec.linescan` holds them with every
default filled in), so two grids that measure the same lines share the run, and a finer step-size grid is another
run. The grid's ``linescan:`` section, its JSON Schema and the one-line errors are generated from the fields here.

The step sizes are the multiples of ``resolution`` in ``[s_min, s_max]``: the thesis' [-0.5, 0.5] at 0.006 gives the
167 points from -0.498 to 0.498 (Sec. 5.3: "167 sample step sizes"). Being multiples, they always contain s = 0
exactly, where every analysis needs the loss (l(0), the slope at the origin, the improvement l(0) - l(s_upd)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_STEP_SIZES", "SCAN_DATA", "SCAN_FIELDS", "ScanSettings", "resolve_scan", "step_size_grid"]

SCAN_DATA = ("train", "validation")
"""Which data set's loss is "the full-batch loss": the problem's training set (the thesis' choice, Eq. 5.1; for the
8 % CIFAR-10 subset of Chapter 5 use the ``cifar10small_*`` problems, whose training set is that subset) or its
validation set."""
MAX_STEP_SIZES = 4_096
"""At most this many step sizes per line: the arrays of one line stay bounded."""


def _setting(help: str) -> Any:
    return {"help": help}


@dataclass(frozen=True)
class ScanSettings:
    """The measurement of a linescan run (see the module docstring for the step-size grid).

    Attributes:
        every: measure the line of every k-th step (1: every step, as the thesis).
        s_min, s_max: the interval of step sizes along the unit update direction.
        resolution: spacing of the step sizes.
        data: the measured data set (:data:`SCAN_DATA`).
        samples: measure on a fixed random subset of this many samples (drawn once from the run's seed); None:
            the whole set.
        per_sample: also store every sample's loss at every step size (float16; needed by the batch-size
            analysis of Sec. 5.6). Off by default: it is N times the size of the other arrays.
    """

    every: int = field(default=1, metadata=_setting("measure the line of every k-th step"))
    s_min: float = field(default=-0.5, metadata=_setting("smallest step size along the unit update direction"))
    s_max: float = field(default=0.5, metadata=_setting("largest step size along the unit update direction"))
    resolution: float = field(default=0.006, metadata=_setting("spacing of the step sizes"))
    data: str = field(default="train", metadata=_setting("the measured data set: train or validation"))
    samples: int | None = field(
        default=None, metadata=_setting("a fixed random subset of this many samples; null: all")
    )
    per_sample: bool = field(default=False, metadata=_setting("store every sample's loss at every step size (float16)"))

    def __post_init__(self) -> None:
        _positive_int("every", self.every)
        for name in ("s_min", "s_max", "resolution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.resolution <= 0:
            raise ValueError(f"resolution: expected a number > 0, got {self.resolution!r}")
        # Every analysis needs the loss at s = 0, the line's origin: the interval must contain it.
        if self.s_min > 0:
            raise ValueError(f"s_min: expected a number <= 0 (the interval must contain s = 0), got {self.s_min}")
        if self.s_max < 0 or self.s_max == self.s_min:
            raise ValueError(f"s_max: expected a number >= 0 and > s_min {self.s_min}, got {self.s_max}")
        count = len(step_size_grid(self.s_min, self.s_max, self.resolution))
        if count > MAX_STEP_SIZES:
            raise ValueError(
                f"resolution: {count} step sizes in [{self.s_min}, {self.s_max}], at most {MAX_STEP_SIZES}"
            )
        if count < 3:
            raise ValueError(f"resolution: only {count} step sizes in [{self.s_min}, {self.s_max}]; need at least 3")
        if self.data not in SCAN_DATA:
            raise ValueError(f"data: {self.data!r} is not one of {', '.join(SCAN_DATA)}")
        if self.samples is not None:
            _positive_int("samples", self.samples)
        if not isinstance(self.per_sample, bool):
            raise ValueError(f"per_sample: expected true or false, got {self.per_sample!r}")

    @property
    def step_sizes(self) -> list[float]:
        """The step sizes of every line (ascending, containing 0)."""
        return step_size_grid(self.s_min, self.s_max, self.resolution)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


def step_size_grid(s_min: float, s_max: float, resolution: float) -> list[float]:
    """The multiples of ``resolution`` in ``[s_min, s_max]``, ascending (0 included when in the interval).

    Computed as ``k * resolution`` for integer k (not by accumulating ``resolution``), so the points do not drift
    and s = 0 is exactly 0. A tolerance of 1e-9 steps keeps an endpoint that is a multiple up to rounding."""
    first = math.ceil(s_min / resolution - 1e-9)
    last = math.floor(s_max / resolution + 1e-9)
    return [k * resolution for k in range(first, last + 1)]


SCAN_FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(ScanSettings)


def resolve_scan(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every setting of a measurement, defaults filled in, checked: the form a run's identity holds.

    Raises ValueError (one line) for an unknown key or an invalid value."""
    values = dict(values or {})
    known = {f.name for f in SCAN_FIELDS}
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise ValueError(f"unknown linescan settings: {', '.join(unknown)} (valid: {', '.join(sorted(known))})")
    return ScanSettings(**values).to_dict()
