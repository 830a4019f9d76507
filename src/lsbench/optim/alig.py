"""ALI-G: Adaptive Learning rates for Interpolation with Gradients (Berrada et al. 2020; thesis Section 2.8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import BELOW_ONE, NON_NEGATIVE, POSITIVE, Range, check_ranges, nullable
from lsbench.optim._linesearch import Closure, LineSearchOptimizer, flat_norm


class ALIG(LineSearchOptimizer):
    r"""SGD with the clipped Polyak step size (thesis Eq. 2.50) and optional Nesterov-style momentum.

    Each step evaluates the loss :math:`\ell` and gradient :math:`g` of its batch and takes

    .. math::
        \gamma = \min\left(\frac{\ell}{\lVert g\rVert^2 + \delta}, \lambda_{max}\right), \qquad
        \theta \leftarrow \theta - \gamma g,

    followed, if :math:`\mu > 0`, by the published momentum correction
    :math:`b \leftarrow \mu b - \gamma g,\ \theta \leftarrow \theta + \mu b` (net:
    :math:`\theta - \gamma g + \mu(\mu b_{prev} - \gamma g)`). One forward+backward pass per step, no host
    synchronization: :math:`\gamma` stays a 0-d tensor.

    Departures from the published PyTorch code: :math:`\gamma` is also clipped below at 0 (as the TensorFlow
    versions do), so a negative loss cannot reverse the step; a non-finite :math:`\gamma` (an infinite or NaN
    loss) makes no update -- a non-finite gradient cannot be stepped along at all, the trainer's divergence policy
    handles it. The optional projection and "adjusted momentum" variants are not implemented.

    Args:
        params: the parameters to optimize (one group).
        max_lr: :math:`\lambda_{max}`, the maximal learning rate (the thesis grid's λ; the paper's CIFAR runs used
            0.1 and 1). ``None`` disables the clipping, as in the published default.
        momentum: :math:`\mu \in [0, 1)` (default 0.9, the paper's CIFAR setting; the published default is 0).
        epsilon: :math:`\delta`, the denominator guard (default 1e-5).

    Reported effective learning rate: :math:`\gamma`.
    """

    RANGES: ClassVar[dict[str, Range]] = {"max_lr": nullable(POSITIVE), "momentum": BELOW_ONE, "epsilon": NON_NEGATIVE}

    def __init__(
        self,
        params: Iterable[Tensor],
        max_lr: float | None = 0.1,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
    ) -> None:
        check_ranges(ALIG.RANGES, locals())
        defaults = {"max_lr": max_lr, "momentum": momentum, "epsilon": epsilon}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        loss = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        step = loss / (flat_norm(grads).square() + group["epsilon"])
        finite = torch.isfinite(step)  # before clipping, which would turn an infinite loss into λ_max
        step = torch.where(finite, step.clamp(min=0.0, max=group["max_lr"]), torch.zeros_like(step))
        step = step.to(self._params[0].dtype)

        scaled = torch._foreach_mul(grads, step)
        torch._foreach_sub_(params, scaled)
        mu = group["momentum"]
        if mu != 0:
            buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
            torch._foreach_mul_(buffers, mu)
            torch._foreach_sub_(buffers, scaled)
            torch._foreach_add_(params, torch._foreach_mul(buffers, mu))
        self._report(step, step > 0)
        return loss
