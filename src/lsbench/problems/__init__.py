"""Benchmark problems: datasets, models, device-resident batch sampling, and the registry of named problems.

    >>> from lsbench.problems import build_problem, evaluate
    >>> problem = build_problem("digits_mlp", seed=1)
    >>> inputs, targets = problem.train.next_batch()
    >>> loss, accuracy = evaluate(problem.model, problem.loss_fn, problem.validation)

Problems are named ``<dataset>_<model>``; :data:`PROBLEMS` lists them.
"""

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
