"""Benchmark problems: datasets, models, device-resident batch sampling, and the registry of named problems.

    >>> from lsbench.problems import build_problem, evaluate
    >>> problem = build_problem("digits_mlp", seed=1)
    >>> inputs, targets = problem.train.next_batch()
    >>> loss, accuracy = evaluate(problem.model, problem.loss_fn, problem.validation)

Problems are named ``<dataset>_<model>``; :data:`PROBLEMS` lists them.

The names below are imported on first use, so that the login-node commands can read
:mod:`lsbench.problems.sources` (what data each dataset needs) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsbench.problems.evaluation import SequenceCrossEntropy, evaluate
    from lsbench.problems.registry import (
        PROBLEMS,
        Problem,
        ProblemDefaults,
        ProblemSpec,
        build_problem,
        get_problem,
    )
    from lsbench.problems.sampling import BatchSampler, DataSplit, StreamedSplit, StreamingSampler

_EXPORTS = {
    "PROBLEMS": "registry",
    "BatchSampler": "sampling",
    "DataSplit": "sampling",
    "Problem": "registry",
    "ProblemDefaults": "registry",
    "ProblemSpec": "registry",
    "SequenceCrossEntropy": "evaluation",
    "StreamedSplit": "sampling",
    "StreamingSampler": "sampling",
    "build_problem": "registry",
    "evaluate": "evaluation",
    "get_problem": "registry",
}

__all__ = [
    "PROBLEMS",
    "BatchSampler",
    "DataSplit",
    "Problem",
    "ProblemDefaults",
    "ProblemSpec",
    "SequenceCrossEntropy",
    "StreamedSplit",
    "StreamingSampler",
    "build_problem",
    "evaluate",
    "get_problem",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
