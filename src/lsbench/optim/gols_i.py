"""GOLS-I: Gradient-Only Line Search that is Inexact (Kafka & Wilke 2019; thesis Section 2.6.4, Algorithm 4)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor

from lsbench.optim._hparams import BELOW_ONE, COUNT, NON_NEGATIVE, POSITIVE, Range, check_ranges
from lsbench.optim._linesearch import (
    Closure,
    LineSearchOptimizer,
    flat_dot,
    flat_norm,
    move_along,
    set_along,
)


class GOLSI(LineSearchOptimizer):
    r"""Inexact gradient-only line search: accept where the sign of the directional derivative changes.

    Implemented from Kafka & Wilke's original description (not from the sign-inverted port LABPAL's experiments
    used). A search starts at :math:`\theta_0` with the direction :math:`d = -g_0` (with momentum
    :math:`\beta`: :math:`d \leftarrow \beta d_{prev} - g_0`), its derivative
    :math:`D_0 = g_0 \cdot d` and the bounds :math:`\lambda_{max} = \min(1/\lVert d\rVert, 10^7)` (:math:`10^7`
    if :math:`\lVert d\rVert \le 10^{-7}`) and :math:`\lambda_{min}`. Every trial step :math:`\lambda` is measured by
    the directional derivative :math:`D(\lambda) = g(\theta_0 + \lambda d)\cdot d` on a **new** batch:

    * the first trial (:math:`\lambda` = the previous search's accepted step, clipped to
      :math:`[\lambda_{min}, \lambda_{max}]`) is accepted at once if :math:`0 \le D \le c_2 |D_0|` (the
      immediate-accept band, Eq. 2.24); otherwise, if :math:`D < 0` and :math:`\lambda < \lambda_{max}`, the
      search **increases**; if :math:`D \ge 0` and :math:`\lambda > \lambda_{min}`, it **decreases**; else it
      accepts;
    * increasing: :math:`\lambda \leftarrow \eta\lambda`, evaluate, accept when :math:`D \ge 0` (the sign changed
      from - to +) or :math:`\lambda > \lambda_{max}/\eta`;
    * decreasing: :math:`\lambda \leftarrow \lambda/\eta`, evaluate, accept when :math:`D < 0` or
      :math:`\lambda < \eta\lambda_{min}`;
    * a search also accepts after ``max_evaluations`` trials.

    The accepted point is the last evaluated one; there is no interpolation. Its gradient (from the accepting
    trial's batch) starts the next search, so a search costs exactly its trials.

    **Step accounting.** The original runs a whole search inside one ``step``. Here every ``step`` call consumes
    one sampled batch -- one evaluation -- so that steps count batches as in the thesis' comparison. The very
    first call evaluates the initial point; every later call evaluates the current trial point. Between calls
    the parameters sit at the *next trial point* :math:`\theta_0 + \lambda d` (the search origin and the
    direction are kept in the per-parameter state), so each call's single closure evaluation happens where the
    parameters are. A call whose trial is accepted reports ``updated=True`` and the accepted :math:`\lambda` as
    effective learning rate (the learning rate along :math:`d`, which is :math:`-g` without momentum); all other
    calls report ``updated=False`` and the step size of the last accepted search (0 before the first).

    **Host synchronization.** The search's branching is decided on the host: one synchronization per call (the
    loss, :math:`D` and :math:`\lVert g\rVert^2` are fetched together). The bounds of the next search are
    computed on the host from these numbers, so no second synchronization is needed.

    Choices where the description is silent:

    * with momentum, a direction that is not a descent direction (:math:`g_0\cdot d \ge 0`) is reset to
      :math:`-g_0`;
    * a non-finite loss or derivative returns the parameters to the search origin, drops the momentum buffer and
      restarts with a fresh evaluation at the origin (initial step :math:`\lambda/\eta`).

    Args:
        params: the parameters to optimize (one group).
        initial_step_size: :math:`\lambda_{init}` of the first search (the thesis grids' μ; the original used
            1e-8). Later searches start from the previous accepted step.
        momentum: :math:`\beta \in [0, 1)`, heavy-ball factor of the direction (default 0: plain SGD direction).
        step_size_scaling: :math:`\eta > 1`, grow/shrink factor (default 2).
        wolfe_c2: :math:`c_2`, width of the immediate-accept band (default 0.9).
        min_step_size: :math:`\lambda_{min}` (default 1e-8).
        max_step_size: absolute cap of :math:`\lambda_{max}` (default 1e7).
        max_evaluations: trials per search before accepting (default 2000).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "initial_step_size": POSITIVE,
        "momentum": BELOW_ONE,
        "step_size_scaling": Range(low=1.0, low_exclusive=True),
        "wolfe_c2": NON_NEGATIVE,
        "min_step_size": POSITIVE,
        "max_evaluations": COUNT,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        initial_step_size: float = 1e-8,
        momentum: float = 0.0,
        step_size_scaling: float = 2.0,
        wolfe_c2: float = 0.9,
        min_step_size: float = 1e-8,
        max_step_size: float = 1e7,
        max_evaluations: int = 2000,
    ) -> None:
        check_ranges(GOLSI.RANGES, locals())
        if not max_step_size > min_step_size:
            raise ValueError(f"Invalid max_step_size: {max_step_size} (must exceed min_step_size {min_step_size})")
        defaults = {
            "initial_step_size": initial_step_size,
            "momentum": momentum,
            "step_size_scaling": step_size_scaling,
            "wolfe_c2": wolfe_c2,
            "min_step_size": min_step_size,
            "max_step_size": max_step_size,
            "max_evaluations": max_evaluations,
        }
        super().__init__(params, defaults)
        self.shared.update(
            phase="start",
            step_size=initial_step_size,  # the trial step λ of the running search (the next one's start at "start")
            min_step=min_step_size,
            max_step=max_step_size,  # λ_max of the running search
            accept_tolerance=0.0,  # c2 |D_0|
            direction_sq_norm=0.0,
            evaluations=0,  # trials of the running search
            searches=0,  # accepted searches
            lr=self._scalar(0.0),  # the step size of the last accepted search (reported between updates)
        )

    # -- reporting --------------------------------------------------------------------------------------------

    @property
    def step_size(self) -> float:
        """The trial step λ the next call evaluates."""
        return self.shared["step_size"]

    @property
    def phase(self) -> str:
        """``"start"`` (next call evaluates a search origin), ``"initial"``, ``"increase"`` or ``"decrease"``."""
        return self.shared["phase"]

    @property
    def searches(self) -> int:
        """Number of accepted searches (= parameter updates)."""
        return self.shared["searches"]

    # -- step -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        shared = self.shared
        loss = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        directions = [self.state[p].get("direction") for p in params]
        pairs = [(g, d) for g, d in zip(grads, directions, strict=True) if d is not None]
        slope = flat_dot(*zip(*pairs, strict=True)) if pairs else torch.zeros_like(loss)
        grad_sq = flat_norm(grads).square() if grads else torch.zeros_like(loss)
        loss_value, slope_value, grad_sq_value = torch.stack([loss.double(), slope.double(), grad_sq.double()]).tolist()

        if not (math.isfinite(loss_value) and math.isfinite(slope_value) and math.isfinite(grad_sq_value)):
            self._abandon()
            self._report(shared["lr"], self._flags[False])
            return loss
        if shared["phase"] == "start":
            self._start_search(params, grads, slope_value, grad_sq_value, shared["step_size"])
            self._report(shared["lr"], self._flags[False])
            return loss

        accepted, next_step = self._decide(slope_value)
        if accepted:
            step = shared["step_size"]
            shared["lr"] = torch.full_like(shared["lr"], step)
            shared["searches"] += 1
            self._start_search(params, grads, slope_value, grad_sq_value, step)
            self._report(shared["lr"], self._flags[True])
        else:
            shared["step_size"] = next_step
            self._move_to_trial()
            self._report(shared["lr"], self._flags[False])
        return loss

    def _decide(self, slope: float) -> tuple[bool, float]:
        """Algorithm 4's branching for the derivative ``slope`` at the current trial: (accept?, next trial step)."""
        shared, group = self.shared, self.param_groups[0]
        eta = group["step_size_scaling"]
        step, low, high = shared["step_size"], shared["min_step"], shared["max_step"]
        shared["evaluations"] += 1
        phase = shared["phase"]
        accepted = False
        if phase == "initial":
            if 0 <= slope <= shared["accept_tolerance"]:
                accepted = True
            elif slope < 0 and step < high:
                shared["phase"] = "increase"
            elif slope >= 0 and step > low:
                shared["phase"] = "decrease"
            else:
                accepted = True
        elif phase == "increase":
            accepted = slope >= 0 or step > high / eta
        else:
            accepted = slope < 0 or step < low * eta
        if shared["evaluations"] >= group["max_evaluations"]:
            accepted = True
        next_step = step * eta if shared["phase"] == "increase" else step / eta
        return accepted, next_step

    # -- searches ---------------------------------------------------------------------------------------------

    def _start_search(
        self, params: list[Tensor], grads: list[Tensor], slope: float, grad_sq: float, initial: float
    ) -> None:
        """Make the current point a search origin, set the direction and bounds, and move to the first trial."""
        shared, group = self.shared, self.param_groups[0]
        beta = group["momentum"]
        with_grad = set(params)
        for p in self._params:
            if p not in with_grad:
                self.state[p].pop("direction", None)
                self.state[p].pop("origin", None)
        directions = [self.state[p].get("direction") for p in params]
        restart = beta == 0 or any(d is None for d in directions)
        if not restart:
            # d_new = β d - g: its squared norm and g·d_new follow from the numbers already on the host.
            direction_sq = beta**2 * shared["direction_sq_norm"] - 2 * beta * slope + grad_sq
            initial_slope = beta * slope - grad_sq
            restart = not initial_slope < 0
        if restart:
            directions = torch._foreach_neg(grads)
            direction_sq, initial_slope = grad_sq, -grad_sq
        else:
            torch._foreach_mul_(directions, beta)
            torch._foreach_sub_(directions, grads)
        for p, d in zip(params, directions, strict=True):
            state = self.state[p]
            state["direction"] = d
            if "origin" in state:
                state["origin"].copy_(p)
            else:
                state["origin"] = p.detach().clone()
        norm = math.sqrt(max(direction_sq, 0.0))
        high = min(1 / norm, group["max_step_size"]) if norm > 1e-7 else group["max_step_size"]
        low = min(group["min_step_size"], high)
        shared.update(
            phase="initial",
            step_size=min(max(initial, low), high),
            min_step=low,
            max_step=high,
            accept_tolerance=group["wolfe_c2"] * abs(initial_slope),
            direction_sq_norm=max(direction_sq, 0.0),
            evaluations=0,
        )
        move_along(params, directions, shared["step_size"])

    def _line(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        params = [p for p in self._params if "direction" in self.state[p]]
        return (
            params,
            [self.state[p]["origin"] for p in params],
            [self.state[p]["direction"] for p in params],
        )

    def _move_to_trial(self) -> None:
        params, origin, direction = self._line()
        set_along(params, origin, direction, self.shared["step_size"])

    def _abandon(self) -> None:
        """After a non-finite evaluation: back to the origin, no momentum, restart with a smaller first step."""
        shared, group = self.shared, self.param_groups[0]
        params, origin, _ = self._line()
        if params:
            torch._foreach_copy_(params, origin)
        for p in params:
            self.state[p].pop("direction")
            self.state[p].pop("origin")
        if shared["phase"] != "start":
            shared["step_size"] = max(shared["step_size"] / group["step_size_scaling"], group["min_step_size"])
        shared.update(phase="start", evaluations=0, direction_sq_norm=0.0)
