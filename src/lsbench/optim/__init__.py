"""Stochastic line-search optimizers and the registry of every optimizer a grid may name.

All optimizers share one closure contract: ``loss = opt.step(closure)`` once per sampled batch, where
``closure()`` runs the forward pass on that batch and returns the mean loss; the optimizer zeroes gradients and
calls ``backward`` itself. See :class:`lsbench.optim._linesearch.LineSearchOptimizer`.
"""

from lsbench.optim.alig import ALIG
from lsbench.optim.baselines import SGD, Adam, RMSprop
from lsbench.optim.closure import BatchClosure, ClosureFactory
from lsbench.optim.cocob import COCOB
from lsbench.optim.exact import ExactLineSearch
from lsbench.optim.gols_i import GOLSI
from lsbench.optim.labpal import LABPAL
from lsbench.optim.noise import noise_adapted
from lsbench.optim.pal import PAL
from lsbench.optim.pls import PLS
from lsbench.optim.registry import (
    OPTIMIZERS,
    HParam,
    OptimizerEntry,
    StepReport,
    TrainingContext,
    build_optimizer,
    get_optimizer,
    step_report,
    training_steps,
)
from lsbench.optim.sgd_hd import SGDHD
from lsbench.optim.sls import SLS

__all__ = [
    "ALIG",
    "COCOB",
    "GOLSI",
    "LABPAL",
    "OPTIMIZERS",
    "PAL",
    "PLS",
    "SGD",
    "SGDHD",
    "SLS",
    "Adam",
    "BatchClosure",
    "ClosureFactory",
    "ExactLineSearch",
    "HParam",
    "OptimizerEntry",
    "RMSprop",
    "StepReport",
    "TrainingContext",
    "build_optimizer",
    "get_optimizer",
    "noise_adapted",
    "step_report",
    "training_steps",
]
