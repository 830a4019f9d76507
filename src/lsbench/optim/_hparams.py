"""Valid ranges of optimizer hyperparameters, declared once next to each constructor.

Every optimizer class lists the single-value constraints of its constructor arguments in a class attribute
``RANGES`` (argument name -> :class:`Range`) and checks them at the top of ``__init__`` with
:func:`check_ranges`. The registry (:mod:`lsbench.optim.registry`) reads the same ``RANGES`` for its grid
validation, so a bound is written in exactly one place and the registry cannot accept a value the constructor
rejects. Constraints between several arguments (LABPAL's near probe below its far probe, GOLS-I's step bounds)
stay as code in the constructors; the grid validator catches them by building each point once.

This module imports nothing heavy (no torch), so schema tools can read ranges cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values one hyperparameter accepts: bounds (inclusive unless marked exclusive), choices, and None."""

    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    high_exclusive: bool = False
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def describe(self) -> str:
        """The constraint in words, e.g. ``> 0``, ``in [0, 1)``, ``one of grow, keep, initial``."""
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_exclusive else "[", ")" if self.high_exclusive else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_exclusive else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_exclusive else '<='} {self.high:g}"
        return "any value"

    def problem(self, value: Any) -> str:
        """Why ``value`` is out of range ('' if it is not), phrased for a grid key."""
        if value is None:
            return "" if self.nullable else "must not be null"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(map(str, self.choices))}"
        low, high = self.low, self.high
        if low is not None and (value <= low if self.low_exclusive else value < low):
            return f"{value!r} is {'at or below the exclusive' if self.low_exclusive else 'below the'} minimum {low}"
        if high is not None and (value >= high if self.high_exclusive else value > high):
            return f"{value!r} is {'at or above the exclusive' if self.high_exclusive else 'above the'} maximum {high}"
        return ""

    def check(self, name: str, value: Any) -> None:
        """Raise the precise ValueError torch's optimizers raise for an invalid hyperparameter."""
        if self.problem(value):
            shown = repr(value) if isinstance(value, str) else value
            what = "not be None" if value is None else f"be {self.describe()}"
            raise ValueError(f"Invalid {name}: {shown} (must {what})")


UNBOUNDED = Range()
POSITIVE = Range(low=0.0, low_exclusive=True)
NON_NEGATIVE = Range(low=0.0)
UNIT_INTERVAL = Range(low=0.0, high=1.0)
BELOW_ONE = Range(low=0.0, high=1.0, high_exclusive=True)
"""[0, 1), e.g. a momentum or moment-decay factor (1 would never forget)."""
COUNT = Range(low=1)
"""An integer count of at least one."""


def one_of(choices: tuple[Any, ...]) -> Range:
    return Range(choices=tuple(choices))


def nullable(bounds: Range) -> Range:
    """``bounds``, or None."""
    return Range(bounds.low, bounds.high, bounds.low_exclusive, bounds.high_exclusive, bounds.choices, True)


def check_ranges(ranges: Mapping[str, Range], arguments: Mapping[str, Any]) -> None:
    """Check every argument that ``ranges`` declares; ``arguments`` is the constructor's ``locals()``.

    A declared name that is not an argument is a bug of the declaration, reported as such.
    """
    missing = [name for name in ranges if name not in arguments]
    if missing:
        raise TypeError(f"RANGES declares {', '.join(missing)}, which the constructor does not take")
    for name, bounds in ranges.items():
        bounds.check(name, arguments[name])
