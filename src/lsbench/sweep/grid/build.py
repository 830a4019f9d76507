"""The trial build: every point of a grid is constructed once as an optimizer on a dummy parameter, so that
constraints between hyperparameters (e.g. Nesterov needs momentum > 0) fail when the grid is loaded, not in a job.

The only module of the grid package that uses torch itself. No data is loaded: the optimizer gets the run's step
budget and batch size and a dummy training-set size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from lsbench.optim import OptimizerEntry, TrainingContext
from lsbench.sweep.schema import exception_text

__all__ = ["TRIAL_TRAIN_SIZE", "build_problem"]

TRIAL_TRAIN_SIZE = 50_000
"""The training-set size the trial build assumes (no data is loaded at plan time)."""


def build_problem(entry: OptimizerEntry, point: Mapping[str, Any], contexts: Iterable[tuple[int, int]]) -> str:
    """Why ``entry`` cannot be built with the resolved ``point`` for some ``(steps, batch_size)`` of ``contexts``,
    as one line; '' when it can be built for all of them."""
    for steps, batch_size in contexts:
        try:
            parameter = torch.zeros(1, requires_grad=True)
            entry.build([parameter], point, TrainingContext(steps, batch_size, TRIAL_TRAIN_SIZE))
        except Exception as exc:
            return exception_text(exc)
    return ""
