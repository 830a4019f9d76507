"""Fused multi-run training: K runs of one problem trained as one model by one vectorised optimizer.

See :mod:`lsbench.fused.groups` (which runs may be fused), :mod:`lsbench.fused.model` (K models as one module),
:mod:`lsbench.fused.copies` and :mod:`lsbench.fused.optim` (the vectorised optimizers) and
:mod:`lsbench.fused.trainer` (training a group, every run with its own checkpoint and results).
"""
