"""lsbench: stochastic line-search optimizers for deep learning and a toolkit to benchmark them.

The optimizers live in :mod:`lsbench.optim`, the thesis problems in :mod:`lsbench.problems` and the step-based
trainer in :mod:`lsbench.train`.
"""

__version__ = "0.1.0"
