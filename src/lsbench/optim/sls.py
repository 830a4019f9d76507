"""SLS: stochastic Armijo backtracking line search (Vaswani et al. 2019; thesis Algorithm 3)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import COUNT, POSITIVE, Range, check_ranges, nullable, one_of
from lsbench.optim._linesearch import (
    Closure,
    LineSearchOptimizer,
    flat_norm,
    set_along,
    snapshot,
)

RESET_OPTIONS = ("keep", "grow", "initial")


class SLS(LineSearchOptimizer):
    r"""SGD with a stochastic Armijo backtracking line search on each batch.

    Before each search the step size from the previous step is reset (``reset_option``):

    * ``"grow"`` (default, the published option 1): :math:`\eta \leftarrow \eta\,\gamma^{1/n_b}` with
      :math:`\gamma` = ``step_size_reset`` and :math:`n_b` = ``batches_per_epoch``, so :math:`\eta` can grow by
      at most a factor :math:`\gamma` per epoch;
    * ``"keep"`` (option 0): :math:`\eta` is kept;
    * ``"initial"`` (option 2): :math:`\eta \leftarrow \eta_0` = ``initial_step_size``;

    then capped at ``max_step_size`` if one is given (the thesis grids use 10, as the PAL-paper port did; the
    current official code has no cap, which is ``max_step_size=None``). Trials
    :math:`\theta_0 - \eta g` on the same batch multiply :math:`\eta` by ``step_size_decay`` until the Armijo
    condition :math:`\ell(\theta_0 - \eta g) \le \ell(\theta_0) - c\,\eta\lVert g\rVert^2` holds. After
    ``max_backtracks`` failed trials the step :math:`\theta_0 - 10^{-6} g` is taken and the decreased
    :math:`\eta` is kept, as in the reference. If :math:`\lVert g\rVert < 10^{-8}` or the batch loss is not
    finite, no update is made.

    Closure calls per step: 1 (with backward) + the number of trials (forward only, 1 to ``max_backtracks``).
    Backtracking must know on the host whether a trial was accepted, so SLS synchronizes once per trial; this is
    inherent to the algorithm. The reported effective learning rate is the accepted :math:`\eta`.

    Args:
        params: the parameters to optimize (one group).
        initial_step_size: :math:`\eta_0` (default 1).
        armijo_constant: :math:`c \in (0, 1]` of the sufficient-decrease condition (default 0.1).
        step_size_decay: backtracking factor :math:`\beta \in (0, 1)` (default 0.9).
        step_size_reset: growth factor :math:`\gamma \ge 1` of the ``"grow"`` reset (default 2).
        batches_per_epoch: :math:`n_b` of the ``"grow"`` reset (default 500; the trainer passes the real value).
        max_step_size: optional cap on the reset step size (default None: no cap).
        reset_option: ``"grow"``, ``"keep"`` or ``"initial"``.
        max_backtracks: trials before falling back to a tiny step (default 100).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "initial_step_size": POSITIVE,
        "armijo_constant": Range(low=0.0, high=1.0, low_exclusive=True),
        "step_size_decay": Range(low=0.0, high=1.0, low_exclusive=True, high_exclusive=True),
        "step_size_reset": Range(low=1.0),
        "batches_per_epoch": COUNT,
        "max_step_size": nullable(POSITIVE),
        "reset_option": one_of(RESET_OPTIONS),
        "max_backtracks": COUNT,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        initial_step_size: float = 1.0,
        armijo_constant: float = 0.1,
        step_size_decay: float = 0.9,
        step_size_reset: float = 2.0,
        batches_per_epoch: int = 500,
        max_step_size: float | None = None,
        reset_option: str = "grow",
        max_backtracks: int = 100,
        fallback_step_size: float = 1e-6,
        min_gradient_norm: float = 1e-8,
    ) -> None:
        check_ranges(SLS.RANGES, locals())
        defaults = {
            "initial_step_size": initial_step_size,
            "armijo_constant": armijo_constant,
            "step_size_decay": step_size_decay,
            "step_size_reset": step_size_reset,
            "batches_per_epoch": batches_per_epoch,
            "max_step_size": max_step_size,
            "reset_option": reset_option,
            "max_backtracks": max_backtracks,
            "fallback_step_size": fallback_step_size,
            "min_gradient_norm": min_gradient_norm,
        }
        super().__init__(params, defaults)
        self.shared["step_size"] = initial_step_size

    def _reset_step_size(self) -> float:
        group = self.param_groups[0]
        previous = self.shared["step_size"]
        option = group["reset_option"]
        if option == "keep":
            step_size = previous
        elif option == "grow":
            step_size = previous * group["step_size_reset"] ** (1.0 / group["batches_per_epoch"])
        else:
            step_size = group["initial_step_size"]
        if group["max_step_size"] is not None:
            step_size = min(step_size, group["max_step_size"])
        return step_size

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        loss_0 = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        grad_norm = flat_norm(grads)
        loss_value, grad_norm_value = torch.stack([loss_0.float(), grad_norm.float()]).tolist()
        step_size = self._reset_step_size()
        if not math.isfinite(loss_value) or not grad_norm_value >= group["min_gradient_norm"]:
            self.shared["step_size"] = step_size
            self._report(torch.zeros_like(grad_norm), self._flags[False])
            return loss_0

        origin = snapshot(params)
        decrease = group["armijo_constant"] * grad_norm_value**2
        for _ in range(group["max_backtracks"]):
            set_along(params, origin, grads, -step_size)
            if self._loss(closure).item() <= loss_value - step_size * decrease:
                taken = step_size
                break
            step_size *= group["step_size_decay"]
        else:
            taken = group["fallback_step_size"]
            set_along(params, origin, grads, -taken)

        self.shared["step_size"] = step_size
        self._report(torch.full_like(grad_norm, taken), self._flags[True])
        return loss_0
