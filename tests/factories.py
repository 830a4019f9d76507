"""Objects tests build over and over, defined once."""

from __future__ import annotations

import dataclasses
from typing import Any

from lsbench.runs import RunSpec

_RUN_DEFAULTS: dict[str, Any] = {
    "problem": "digits_mlp",
    "optimizer": "pal",
    "hparams": {"mu": 0.1, "s_max": 10.0},
    "seed": 1,
    "steps": 100,
    "eval_every": 10,
    "batch_size": 32,
    "weight_decay": 1e-4,
}


def run_spec(run_id: str, **changes: Any) -> RunSpec:
    """A run with a chosen id (not derived from its content), for store tests that name their runs."""
    return dataclasses.replace(RunSpec(run_id=run_id, **_RUN_DEFAULTS), **changes)
