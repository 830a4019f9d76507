"""COCOB-Backprop: continuous coin betting (Orabona & Tommasi 2017, Algorithm 2; thesis Section 2.8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import POSITIVE, Range, check_ranges
from lsbench.optim._linesearch import Closure, LineSearchOptimizer, flat_norm


class COCOB(LineSearchOptimizer):
    r"""COCOB-Backprop: a learning-rate-free optimizer that bets on the sign of the next gradient, per coordinate.

    For every coordinate with initial weight :math:`w_1` it keeps the largest observed gradient magnitude
    :math:`L` (initially :math:`\epsilon`), the sum of magnitudes :math:`G`, the sum of negative gradients
    :math:`\theta`, the reward :math:`R` and the current bet :math:`x = w - w_1` (all but :math:`L` start at 0).
    With the current gradient :math:`g` one step is

    .. math::
        L &\leftarrow \max(L, |g|), \quad G \leftarrow G + |g|, \quad \theta \leftarrow \theta - g, \quad
        R \leftarrow \max(R - g\,x, 0), \\
        x &\leftarrow \frac{\theta}{L\,\max(G + L, \alpha L)}\,(L + R), \qquad w \leftarrow w_1 + x.

    (:math:`R` is updated with the bet that produced :math:`g`; the first step bets nothing, so it moves every
    coordinate by :math:`-\mathrm{sign}(g)/\alpha` for :math:`\alpha \ge 2`.) One forward+backward pass per step,
    no host synchronization.

    **Fix of the reference port.** The PyTorch port the SLS repository ships stores ``initial_weight`` as a
    reference to the parameter's own data; it is only correct because that port re-assigns ``p.data``. This
    implementation updates parameters in place (as every lsbench optimizer does), so :math:`w_1` is a **copy**
    taken at the first step; an alias would move with the parameters and turn :math:`w_1 + x` into a running sum
    of bets.

    Args:
        params: the parameters to optimize (one group).
        alpha: :math:`\alpha`, the restriction factor that limits the bets early on (default 100).
        epsilon: initial :math:`L` (default 1e-8).

    There is no learning rate; the reported effective learning rate is the one an SGD step of the same length
    would have used, :math:`\lVert\Delta w\rVert / \lVert g\rVert` (0 for a zero gradient).
    """

    RANGES: ClassVar[dict[str, Range]] = {"alpha": POSITIVE, "epsilon": POSITIVE}

    def __init__(self, params: Iterable[Tensor], alpha: float = 100.0, epsilon: float = 1e-8) -> None:
        check_ranges(COCOB.RANGES, locals())
        super().__init__(params, {"alpha": alpha, "epsilon": epsilon})

    def _coordinate_state(self, params: list[Tensor]) -> dict[str, list[Tensor]]:
        eps = self.param_groups[0]["epsilon"]
        for p in params:
            state = self.state[p]
            if "initial_weight" not in state:
                state["initial_weight"] = p.detach().clone()  # a copy, not an alias (see the class docstring)
                state["max_gradient"] = torch.full_like(p, eps)
                state["gradient_sum"] = torch.zeros_like(p)
                state["negative_gradient_sum"] = torch.zeros_like(p)
                state["reward"] = torch.zeros_like(p)
                state["bet"] = torch.zeros_like(p)
        keys = ("initial_weight", "max_gradient", "gradient_sum", "negative_gradient_sum", "reward", "bet")
        return {key: [self.state[p][key] for p in params] for key in keys}

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        alpha = self.param_groups[0]["alpha"]
        loss = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        s = self._coordinate_state(params)
        magnitudes = torch._foreach_abs(grads)
        torch._foreach_maximum_(s["max_gradient"], magnitudes)
        torch._foreach_add_(s["gradient_sum"], magnitudes)
        torch._foreach_sub_(s["negative_gradient_sum"], grads)
        torch._foreach_addcmul_(s["reward"], grads, s["bet"], value=-1)
        torch._foreach_clamp_min_(s["reward"], 0.0)

        denominator = torch._foreach_add(s["gradient_sum"], s["max_gradient"])
        torch._foreach_maximum_(denominator, torch._foreach_mul(s["max_gradient"], alpha))
        torch._foreach_mul_(denominator, s["max_gradient"])
        bet = torch._foreach_div(s["negative_gradient_sum"], denominator)
        torch._foreach_mul_(bet, torch._foreach_add(s["max_gradient"], s["reward"]))

        change = flat_norm(torch._foreach_sub(bet, s["bet"]))
        grad_norm = flat_norm(grads)
        torch._foreach_copy_(s["bet"], bet)
        torch._foreach_add_(bet, s["initial_weight"])
        torch._foreach_copy_(params, bet)
        lr = torch.where(grad_norm > 0, change / grad_norm, torch.zeros_like(change))
        self._report(lr, change > 0)
        return loss
