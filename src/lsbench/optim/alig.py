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
    loss) is replaced by 0. With :math:`\gamma = 0` the gradient term takes no step, but with momentum the
    correction still moves the parameters, by :math:`\mu^2 b_{prev}`; without momentum, or before the buffer
    holds anything, the parameters stay where they are. A non-finite gradient cannot be stepped along at all, the
    trainer's divergence policy handles it. The optional projection and "adjusted momentum" variants are not
    implemented.

    Args:
        params: the parameters to optimize (one group).
        max_lr: :math:`\lambda_{max}`, the maximal learning rate (the thesis grid's λ; the paper's CIFAR runs used
            0.1 and 1). ``None`` disables the clipping, as in the published default.
        momentum: :math:`\mu \in [0, 1)` (default 0.9, the paper's CIFAR setting; the published default is 0).
        epsilon: :math:`\delta`, the denominator guard (default 1e-5).

    Reported: ``updated`` is whether the parameters moved. The effective learning rate is :math:`\gamma`
    whenever :math:`\gamma > 0` (what the published code logs; the momentum term is not folded in). A step with
    :math:`\gamma = 0` that moves the parameters by the momentum term alone reports ``updated=True`` and the
    learning rate an SGD step of the same length would have used, :math:`\lVert\Delta\theta\rVert /
    \lVert g\rVert` (0 when :math:`g = 0`); a step that does not move reports 0.
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
        grad_norm = flat_norm(grads)
        step = loss / (grad_norm.square() + group["epsilon"])
        finite = torch.isfinite(step)  # before clipping, which would turn an infinite loss into λ_max
        step = torch.where(finite, step.clamp(min=0.0, max=group["max_lr"]), torch.zeros_like(step))
        step = step.to(self._params[0].dtype)

        scaled = torch._foreach_mul(grads, step)
        torch._foreach_sub_(params, scaled)
        mu = group["momentum"]
        if mu == 0:
            self._report(step, (step > 0) & (grad_norm > 0))
            return loss
        buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
        torch._foreach_mul_(buffers, mu)
        torch._foreach_sub_(buffers, scaled)
        pushed = torch._foreach_mul(buffers, mu)
        torch._foreach_add_(params, pushed)
        # the net movement μ b - γ g; with γ = 0 it is the momentum term alone
        moved = flat_norm(torch._foreach_sub(pushed, scaled)).to(step.dtype)
        momentum_lr = moved / grad_norm.to(step.dtype)
        momentum_lr = torch.where(torch.isfinite(momentum_lr), momentum_lr, torch.zeros_like(momentum_lr))
        self._report(torch.where(step > 0, step, momentum_lr), moved > 0)
        return loss
