"""torch's SGD, Adam and RMSprop behind lsbench's closure contract, with the thesis' step-decay schedule.

The trainer hands every optimizer a closure that only runs the forward pass; torch's optimizers expect the
closure to have called ``backward`` already. These thin subclasses do the backward pass themselves, count passes
and report their learning rate like the line searches do, so the trainer treats all optimizers alike.

``lr_schedule="piecewise"`` is the schedule of the thesis baselines: the learning rate is divided by 10 at 50 %
and by 100 at 75 % of ``total_steps``. It is kept inside the optimizer (a step counter in the group), so
``state_dict()`` alone restores it and no separate scheduler has to be checkpointed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import BELOW_ONE, COUNT, NON_NEGATIVE, UNIT_INTERVAL, Range, check_ranges, one_of
from lsbench.optim._linesearch import Closure

SCHEDULES = ("constant", "piecewise")
_CONTRACT_RANGES = {"lr_schedule": one_of(SCHEDULES), "total_steps": COUNT}


def piecewise_factor(step: int, total_steps: int) -> float:
    """Learning-rate factor of the thesis baselines at ``step`` (0-based) of a ``total_steps`` budget."""
    if step >= total_steps * 0.75:
        return 0.01
    if step >= total_steps * 0.5:
        return 0.1
    return 1.0


class _ClosureContract:
    """Mixin: backward pass, pass counters, schedule and reporting for a torch optimizer."""

    def _init_contract(self, lr_schedule: str, total_steps: int) -> None:
        for group in self.param_groups:  # type: ignore[attr-defined]
            group.setdefault("base_lr", group["lr"])
            group.setdefault("lr_schedule", lr_schedule)
            group.setdefault("total_steps", total_steps)
            group.setdefault("schedule_step", 0)
            group.setdefault("forwards", 0)

    @property
    def _group(self) -> dict[str, Any]:
        return self.param_groups[0]  # type: ignore[attr-defined]

    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        for group in self.param_groups:  # type: ignore[attr-defined]
            factor = 1.0
            if group["lr_schedule"] == "piecewise":
                factor = piecewise_factor(group["schedule_step"], group["total_steps"])
            group["lr"] = group["base_lr"] * factor
            group["schedule_step"] += 1
            group["forwards"] += 1
        self.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        with torch.enable_grad():
            loss = closure()
            loss.backward()
        super().step()  # type: ignore[misc]
        return loss.detach()

    @property
    def effective_lr(self) -> float:
        return self._group["lr"]

    @property
    def updated(self) -> bool:
        return True

    @property
    def forward_passes(self) -> int:
        return self._group["forwards"]

    @property
    def backward_passes(self) -> int:
        return self._group["forwards"]


class SGD(_ClosureContract, torch.optim.SGD):
    """torch.optim.SGD (momentum, Nesterov) with the closure contract and an optional step-decay schedule."""

    RANGES: ClassVar[dict[str, Range]] = {"lr": NON_NEGATIVE, "momentum": UNIT_INTERVAL, **_CONTRACT_RANGES}

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        momentum: float = 0.0,
        nesterov: bool = False,
        lr_schedule: str = "constant",
        total_steps: int = 1,
    ) -> None:
        check_ranges(SGD.RANGES, locals())
        torch.optim.SGD.__init__(self, params, lr=lr, momentum=momentum, nesterov=nesterov)
        self._init_contract(lr_schedule, total_steps)


class Adam(_ClosureContract, torch.optim.Adam):
    """torch.optim.Adam with the closure contract and an optional step-decay schedule."""

    RANGES: ClassVar[dict[str, Range]] = {
        "lr": NON_NEGATIVE,
        "beta1": BELOW_ONE,
        "beta2": BELOW_ONE,
        "epsilon": NON_NEGATIVE,
        **_CONTRACT_RANGES,
    }

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        lr_schedule: str = "constant",
        total_steps: int = 1,
    ) -> None:
        check_ranges(Adam.RANGES, locals())
        torch.optim.Adam.__init__(self, params, lr=lr, betas=(beta1, beta2), eps=epsilon)
        self._init_contract(lr_schedule, total_steps)


class RMSprop(_ClosureContract, torch.optim.RMSprop):
    """torch.optim.RMSprop with the closure contract and an optional step-decay schedule.

    ``alpha`` is torch's name for the discounting factor (the thesis' f).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "lr": NON_NEGATIVE,
        "alpha": UNIT_INTERVAL,
        "epsilon": NON_NEGATIVE,
        "momentum": UNIT_INTERVAL,
        **_CONTRACT_RANGES,
    }

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.9,
        epsilon: float = 1e-8,
        momentum: float = 0.0,
        lr_schedule: str = "constant",
        total_steps: int = 1,
    ) -> None:
        check_ranges(RMSprop.RANGES, locals())
        torch.optim.RMSprop.__init__(self, params, lr=lr, alpha=alpha, eps=epsilon, momentum=momentum)
        self._init_contract(lr_schedule, total_steps)
