"""SGD-HD: SGD whose learning rate follows its hypergradient (Baydin et al. 2018; thesis Eq. 2.48-2.49)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import BELOW_ONE, NON_NEGATIVE, POSITIVE, Range, check_ranges
from lsbench.optim._linesearch import Closure, LineSearchOptimizer, flat_dot


class SGDHD(LineSearchOptimizer):
    r"""SGD with hypergradient descent on the learning rate.

    With :math:`u_{t-1}` the previous update direction (:math:`\theta_t = \theta_{t-1} - \alpha_{t-1} u_{t-1}`),
    the derivative of the new batch's loss with respect to the learning rate is :math:`-g_t\cdot u_{t-1}`, so one
    gradient step on the learning rate is

    .. math::
        \alpha_t = \alpha_{t-1} + \beta\, g_t\cdot u_{t-1}, \qquad \theta_{t+1} = \theta_t - \alpha_t u_t,

    with :math:`u_t = g_t` (no momentum), the heavy-ball buffer :math:`b_t = \mu b_{t-1} + g_t` (first step:
    :math:`b_1 = g_1`), or :math:`g_t + \mu b_t` (Nesterov). :math:`u_0 = 0`, so the first step uses
    :math:`\alpha_0`. As in the published code the learning rate is not clipped: it may become negative or
    explode. One forward+backward pass per step; :math:`\alpha` is a 0-d tensor, so there is no host
    synchronization.

    Args:
        params: the parameters to optimize (one group).
        lr: :math:`\alpha_0`, the initial learning rate (thesis λ).
        hypergradient_lr: :math:`\beta`, the learning rate of the learning rate (published default 1e-6; the
            thesis grid uses 1e-4 to 0.1).
        momentum: :math:`\mu \in [0, 1)` (default 0, as in the thesis' comparison).
        nesterov: Nesterov momentum.

    Reported effective learning rate: :math:`\alpha_t`.
    """

    RANGES: ClassVar[dict[str, Range]] = {"lr": POSITIVE, "hypergradient_lr": NON_NEGATIVE, "momentum": BELOW_ONE}

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        hypergradient_lr: float = 1e-6,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        check_ranges(SGDHD.RANGES, locals())
        if nesterov and momentum == 0:
            raise ValueError("Invalid nesterov: Nesterov momentum needs momentum > 0")
        defaults = {"lr": lr, "hypergradient_lr": hypergradient_lr, "momentum": momentum, "nesterov": nesterov}
        super().__init__(params, defaults)
        self.shared["lr"] = self._scalar(lr)

    @property
    def lr(self) -> Tensor:
        """The current learning rate :math:`\\alpha_t` (0-d tensor)."""
        return self.shared["lr"]

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        loss = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        previous = [self.state[p].get("previous_direction") for p in params]
        if all(u is not None for u in previous):
            lr = self.shared["lr"] + group["hypergradient_lr"] * flat_dot(grads, previous)
        else:  # u_0 = 0 (or a parameter that has not moved yet): the hypergradient is zero
            known = [(g, u) for g, u in zip(grads, previous, strict=True) if u is not None]
            lr = self.shared["lr"].clone()
            if known:
                lr = lr + group["hypergradient_lr"] * flat_dot(*zip(*known, strict=True))
        self.shared["lr"] = lr

        mu = group["momentum"]
        if mu == 0:
            direction = grads
        else:
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                if buffers[i] is None:
                    buffers[i] = self.state[p]["momentum_buffer"] = g.clone()
                else:
                    buffers[i].mul_(mu).add_(g)
            direction = torch._foreach_add(grads, torch._foreach_mul(buffers, mu)) if group["nesterov"] else buffers
        for p, u in zip(params, direction, strict=True):
            state = self.state[p]
            if "previous_direction" in state:
                state["previous_direction"].copy_(u)
            else:
                state["previous_direction"] = u.clone()
        torch._foreach_sub_(params, torch._foreach_mul(direction, lr))
        self._report(lr, self._flags[True])
        return loss
