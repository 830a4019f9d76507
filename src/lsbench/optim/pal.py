"""PAL: Parabolic Approximation Line Search (thesis Chapter 4, Algorithm 8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import POSITIVE, UNIT_INTERVAL, Range, check_ranges
from lsbench.optim._linesearch import (
    Closure,
    LineSearchOptimizer,
    flat_dot,
    flat_norm,
    set_along,
    snapshot,
)


class PAL(LineSearchOptimizer):
    r"""Parabolic Approximation Line Search.

    Each step fits a parabola to the mini-batch loss along the normalized line direction
    :math:`\hat d = d/\lVert d\rVert` from three facts: the loss :math:`\ell_0` at the origin, the directional
    derivative :math:`b` there and the loss :math:`\ell_\mu` at distance :math:`\mu`,

    .. math::
        d_t = g_t + \beta d_{t-1}, \quad b = -\frac{g_t\cdot d_t}{\lVert d_t\rVert}, \quad
        a = \frac{\ell_\mu - \ell_0 - b\mu}{\mu^2},

    and moves to :math:`\theta_{t+1} = \theta_t - s_{upd}\,\hat d_t` where (Section 4.4.2)

    * case 1, :math:`a > 0, b < 0` (a minimum ahead): :math:`s_{upd} = \alpha\cdot(-b / 2a)`;
    * case 2, :math:`a \le 0, b < 0` (concave or linear, descending): :math:`s_{upd} = \mu`;
    * case 3, :math:`b \ge 0` (no descent along :math:`\hat d`, possible only with :math:`\beta > 0` or a zero
      gradient): :math:`s_{upd} = 0`, no update (the direction buffer is still updated);

    and finally :math:`s_{upd} \leftarrow \min(s_{upd}, s_{max})`. One step costs one forward+backward pass and one
    forward pass; the closure is called exactly twice.

    Args:
        params: the parameters to optimize (one group).
        measuring_step_size: :math:`\mu`, the distance of the second loss measurement (default 1.0).
        update_step_adaptation: :math:`\alpha`, multiplies the parabola's vertex distance (default 1/0.6, the
            published default; the thesis grids use 1 and 1/0.8). The TensorFlow code of the thesis experiments
            took :math:`\gamma = 1/\alpha` instead; here the value always *multiplies* the step.
        direction_adaptation: :math:`\beta \in [0, 1]`, decay of the conjugate-like direction buffer (default 0.4).
        max_step_size: :math:`s_{max}`, cap on the step along the line (default 3.16 ≈ 10^0.5).
        epsilon: replaces a zero direction norm (default 1e-10).

    Reported effective learning rate: :math:`s_{upd}/\lVert d\rVert`, the learning rate of an SGD step of the
    same length.

    Departures from the published code, each a bug fix:

    * if the parabola is not finite (e.g. the probe loss is NaN or infinite), the parameters return exactly to
      the line origin and no update is made; the reference left them at the probe point. (A non-finite gradient
      cannot be stepped along at all; the trainer's divergence policy handles it.)
    * all parameters with a gradient are handled; the reference silently processed only the first group.

    Example::

        opt = PAL(model.parameters(), measuring_step_size=0.1, update_step_adaptation=1.0)
        for inputs, targets in batches:
            loss = opt.step(lambda: loss_fn(model(inputs), targets))
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "measuring_step_size": POSITIVE,
        "update_step_adaptation": POSITIVE,
        "direction_adaptation": UNIT_INTERVAL,
        "max_step_size": POSITIVE,
        "epsilon": POSITIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        measuring_step_size: float = 1.0,
        update_step_adaptation: float = 1 / 0.6,
        direction_adaptation: float = 0.4,
        max_step_size: float = 3.16,
        epsilon: float = 1e-10,
    ) -> None:
        check_ranges(PAL.RANGES, locals())
        defaults = {
            "measuring_step_size": measuring_step_size,
            "update_step_adaptation": update_step_adaptation,
            "direction_adaptation": direction_adaptation,
            "max_step_size": max_step_size,
            "epsilon": epsilon,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        mu = group["measuring_step_size"]
        beta = group["direction_adaptation"]

        loss_0 = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        if beta != 0:
            direction = [self.state[p].setdefault("direction", torch.zeros_like(p)) for p in params]
            torch._foreach_mul_(direction, beta)
            torch._foreach_add_(direction, grads)
            norm = flat_norm(direction)
            grad_dot_direction = flat_dot(grads, direction)
        else:
            direction = grads
            norm = flat_norm(grads)
            grad_dot_direction = norm.square()
        norm = torch.where(norm == 0, torch.full_like(norm, group["epsilon"]), norm)
        slope = -grad_dot_direction / norm

        origin = snapshot(params)
        set_along(params, origin, direction, -mu / norm)
        loss_mu = self._loss(closure)

        curvature = (loss_mu - loss_0 - slope * mu) / mu**2
        descending = slope < 0
        vertex = group["update_step_adaptation"] * (-slope / (2 * curvature))
        step = torch.where(
            descending,
            torch.where(curvature > 0, vertex, torch.full_like(vertex, mu)),
            torch.zeros_like(vertex),
        )
        step = step.clamp(max=group["max_step_size"])
        finite = torch.isfinite(curvature) & torch.isfinite(slope) & torch.isfinite(norm)
        step = torch.where(finite, step, torch.zeros_like(step))

        set_along(params, origin, direction, -step / norm)
        self._report(step / norm, step > 0)
        return loss_0
