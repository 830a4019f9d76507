"""Vectorised per-run optimizers: SGD, Adam, RMSprop, PAL and SLS for K runs trained as one fused model.

Every class here is the fused counterpart of one ordinary optimizer (:mod:`lsbench.optim.baselines`,
:mod:`lsbench.optim.pal`, :mod:`lsbench.optim.sls`) and reproduces its update *per copy*: copy k of a fused group
follows the trajectory the ordinary optimizer would follow with copy k's hyperparameters on copy k's batches. A
hyperparameter that may differ between copies is a ``(K,)`` vector that scales its own copy (through
:func:`~lsbench.fused.copies.per_copy`); one that changes the control flow is shared by the group
(:data:`lsbench.fused.groups.SHARED_HPARAMS`, plus the training context: ``total_steps``, ``batches_per_epoch``).

Why the arithmetic looks the way it does:

* **Scalars stay in float64 until they meet a tensor.** The ordinary optimizers compute their scalars (a scheduled
  learning rate, Adam's bias corrections, SLS's step size and Armijo bound) as Python floats, i.e. in double
  precision, and a float32 kernel then rounds the finished scalar once. The fused optimizers keep those per-copy
  scalars as float64 vectors and cast the finished vector to the parameters' dtype, so a float32 group rounds them
  exactly where the ordinary optimizer does (Adam's ``1 - 0.999**t`` computed in float32 would be off by 1e-4
  relative in its first steps).
* **The same roundings as torch's kernels.** ``p.add_(g, alpha=-lr)`` is one fused multiply-add in torch's
  kernels; its per-copy form is ``p.addcmul_(g, -lr_k)`` (also one), not ``p + g * -lr_k`` (two roundings), so on
  the CPU a copy's update is bitwise torch's wherever the formulas allow it.
* **No host synchronisation** in SGD, Adam, RMSprop and PAL: branches of the ordinary code on a copy's values
  become ``torch.where`` over ``(K,)`` vectors; the piecewise schedule is a Python function of the step counter,
  which all copies share. SLS must know on the host whether every copy has accepted a trial, like the ordinary
  SLS: one synchronisation before the trials and one per trial.
* **Copies never mix.** Every reduction is per copy (:func:`flat_norms`,
  :func:`~lsbench.fused.copies.copy_dot`), so a copy that diverges to NaN or infinity leaves the others exactly as
  they would be in their separate runs.

Checkpoints are per copy (:meth:`FusedOptimizer.copy_state_dict`): all state lives in :attr:`FusedOptimizer.state`
as tensors whose leading dimension is the copy, plus the shared schedule counter as a Python int, so a copy's
saved state resumes bit-identically at any position of a fresh group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from lsbench.fused.copies import FusedClosure, FusedOptimizer, copy_dot, per_copy, rows, set_along
from lsbench.fused.groups import SHARED_HPARAMS
from lsbench.optim._hparams import Range
from lsbench.optim.baselines import SGD, Adam, RMSprop, piecewise_factor
from lsbench.optim.noise import batches_per_update, noise_adapted, noise_factor_for
from lsbench.optim.pal import PAL
from lsbench.optim.registry import TrainingContext, constructor_facts, get_optimizer
from lsbench.optim.sls import SLS

__all__ = [
    "FUSED_OPTIMIZERS",
    "LABPAL_NAMES",
    "FusedAdam",
    "FusedPAL",
    "FusedRMSprop",
    "FusedSGD",
    "FusedSLS",
    "build_fused_optimizer",
    "fused_optimizer_class",
]


def flat_norms(tensors: Sequence[Tensor]) -> Tensor:
    """Per-copy L2 norm over all tensors (``(K,)``), reduced the way :func:`lsbench.optim._linesearch.flat_norm`
    reduces one copy: the norm of the per-tensor norms. :func:`~lsbench.fused.copies.copy_norm` (one norm of the
    concatenated rows) rounds differently, and a line search whose parabola divides by μ² turns a last-bit
    difference in its direction's norm into visible ones; this way a fused copy's norm is bitwise the ordinary one
    on the CPU (and it needs no concatenated copy of the parameters)."""
    per_tensor = torch.stack([torch.linalg.vector_norm(rows(t), dim=1) for t in tensors], dim=1)
    return torch.linalg.vector_norm(per_tensor, dim=1)


class _VectorOptimizer(FusedOptimizer):
    """Common machinery: complete and validate every copy's hyperparameters against the ordinary constructor,
    float64 hyperparameter vectors, the parameters that received a gradient, and a checkpoint loader that keeps
    lazily created state.

    :attr:`ORDINARY` is the ordinary optimizer class (as the registry builds it): its constructor's defaults
    complete each copy's hyperparameters and its ``RANGES`` validate them, so a fused copy accepts exactly the
    arguments the ordinary optimizer accepts, with the same defaults.
    """

    ORDINARY: ClassVar[type]

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        if not hparams:
            raise ValueError(f"{self.NAME}: a fused optimizer needs at least one copy")
        defaults, ranges = constructor_facts(self.ORDINARY)
        super().__init__(
            params, [_complete(f"{self.NAME} copy {k}", defaults, ranges, h) for k, h in enumerate(hparams)]
        )

    def vector64(self, name: str, none: float = math.inf) -> Tensor:
        """Hyperparameter ``name`` of every copy as a float64 ``(K,)`` vector (None becomes ``none``): per-copy
        scalars that the ordinary optimizer computes with as Python floats."""
        values = [none if h[name] is None else float(h[name]) for h in self.hparams]
        return torch.tensor(values, dtype=torch.float64).to(self.device, non_blocking=True)

    def with_grad(self) -> list[int]:
        """Positions of the parameters that received a gradient; like torch's optimizers and the line searches,
        a parameter without one is neither moved nor does its state change."""
        return [i for i, p in enumerate(self.params) if p.grad is not None]

    def buffers(self, name: str) -> list[Tensor]:
        """State ``name``: one zero-initialised ``(K, ...)`` buffer per parameter, created on first use."""
        if name not in self.state:
            self.state[name] = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        return self.state[name]

    def load_copy_state_dict(self, k: int, saved: Mapping[str, Any]) -> None:
        """Load copy ``k`` (see :meth:`FusedOptimizer.load_copy_state_dict`), keeping state entries the saved copy
        lacks (a buffer this group creates lazily, e.g. PAL's direction, which a copy saved in a group that never
        needed it does not carry) and never writing into report tensors shared with cached constants."""
        previous = self.state
        self.effective_lr = self.effective_lr.clone()
        self.updated = self.updated.clone()
        super().load_copy_state_dict(k, saved)
        for key, value in previous.items():
            self.state.setdefault(key, value)


def _complete(where: str, defaults: Mapping[str, Any], ranges: Mapping[str, Range], given: Mapping[str, Any]) -> dict:
    """One copy's keyword arguments completed with the ordinary constructor's defaults and range-checked (the
    ordinary constructor's error, prefixed with ``where``)."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown hyperparameter(s) {', '.join(unknown)}")
    completed = {**defaults, **given}
    for key, bounds in ranges.items():
        try:
            bounds.check(key, completed[key])
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    return completed


# -- SGD, Adam, RMSprop: torch's update formulas per copy, with the thesis' piecewise schedule ----------------------


class _Scheduled(_VectorOptimizer):
    """The schedule of :mod:`lsbench.optim.baselines`: ``lr = base_lr * factor(step)`` with one step counter for
    the group, kept in :attr:`state` (a Python int, saved with every copy) so a checkpoint restores it."""

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        self.lr_schedule: str = self.shared("lr_schedule")
        self.total_steps: int = self.shared("total_steps")
        self.base_lr = self.vector64("lr")
        self.state["schedule_step"] = 0
        self._lr_cache: dict[float, tuple[Tensor, Tensor]] = {}
        self._all_updated = torch.ones(self.copies, dtype=torch.bool, device=self.device)

    def scheduled_lr(self) -> tuple[Tensor, Tensor]:
        """This step's learning rates as float64 and in the parameters' dtype; advances the schedule.

        ``base_lr * factor`` is the ordinary optimizer's double-precision product; the piecewise schedule has
        three factors, so the vectors are made once per factor, not once per step."""
        step = self.state["schedule_step"]
        factor = piecewise_factor(step, self.total_steps) if self.lr_schedule == "piecewise" else 1.0
        self.state["schedule_step"] = step + 1
        if factor not in self._lr_cache:
            lr = self.base_lr * factor
            self._lr_cache[factor] = (lr, lr.to(self.dtype))
        return self._lr_cache[factor]

    def report_scheduled(self, lr: Tensor) -> None:
        """The ordinary baselines report the scheduled learning rate and always update."""
        self.report(lr, self._all_updated)


class FusedSGD(_Scheduled):
    """torch's SGD per copy (dampening 0, no weight decay): ``b ← m b + g``; ``θ ← θ − λ (g + m b)`` with
    Nesterov, ``θ ← θ − λ b`` without, ``θ ← θ − λ g`` for momentum 0.

    Momentum may differ between copies. torch keeps no buffer at momentum 0; here one buffer serves the group as
    soon as any copy has momentum, and a copy with momentum 0 gets ``0·b + g = g`` from it, exactly its gradient
    (its buffer holds its last gradient, which is finite unless the copy has already diverged for good), so it
    steps bitwise as torch steps it. The first step's ``0·0 + g`` is torch's ``b ← g`` bit for bit.
    """

    NAME = "sgd"
    ORDINARY = SGD

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        self.nesterov: bool = self.shared("nesterov")
        momenta = [float(h["momentum"]) for h in self.hparams]
        if self.nesterov and min(momenta) <= 0:
            raise ValueError("sgd: Nesterov momentum requires a momentum and zero dampening")
        self.uses_momentum = max(momenta) > 0
        self.momentum = self.vector("momentum")

    @torch.no_grad()
    def step(self, closure: FusedClosure) -> Tensor:
        _, lr_t = self.scheduled_lr()
        losses = self.loss_and_grad(closure)
        negative_lr = -lr_t
        buffers = self.buffers("momentum_buffer") if self.uses_momentum else []
        for i in self.with_grad():
            param = self.params[i]
            grad = param.grad
            update = grad
            if self.uses_momentum:
                momentum = per_copy(self.momentum, param)
                buffer = buffers[i]
                buffer.mul_(momentum).add_(grad)
                update = torch.addcmul(grad, buffer, momentum) if self.nesterov else buffer
            param.addcmul_(update, per_copy(negative_lr, param))
        self.report_scheduled(lr_t)
        return losses


class FusedAdam(_Scheduled):
    """torch's Adam per copy (no weight decay, no AMSGrad): moments ``m ← lerp(m, g, 1−β1)``,
    ``v ← β2 v + (1−β2) g²``, then ``θ ← θ − (λ / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)``.

    The step count ``t`` is a ``(K,)`` float64 vector in :attr:`state` (torch keeps one per parameter; all of a
    copy's parameters receive gradients together, so they are equal), and the bias corrections are computed from it
    in float64 as torch computes them in Python floats. They are the one place where a fused copy may differ from
    torch in the last bit on the CPU: ``torch.pow`` on a vector is accurate to an ulp, Python's ``**`` is rounded
    correctly, and computing them on the host would cost a transfer per step.
    """

    NAME = "adam"
    ORDINARY = Adam

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        self.beta1 = self.vector64("beta1")
        self.beta2 = self.vector64("beta2")
        self.one_minus_beta1 = (1 - self.beta1).to(self.dtype)
        self.one_minus_beta2 = (1 - self.beta2).to(self.dtype)
        self.beta2_t = self.beta2.to(self.dtype)
        self.epsilon = self.vector("epsilon")
        self.state["step"] = torch.zeros(self.copies, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def step(self, closure: FusedClosure) -> Tensor:
        lr, lr_t = self.scheduled_lr()
        losses = self.loss_and_grad(closure)
        steps = self.state["step"] + 1
        self.state["step"] = steps
        bias_correction1 = 1 - self.beta1**steps
        bias_correction2 = 1 - self.beta2**steps
        negative_step_size = (-(lr / bias_correction1)).to(self.dtype)
        bias_correction2_sqrt = (bias_correction2**0.5).to(self.dtype)
        exp_avgs, exp_avg_sqs = self.buffers("exp_avg"), self.buffers("exp_avg_sq")
        for i in self.with_grad():
            param = self.params[i]
            grad = param.grad
            exp_avg, exp_avg_sq = exp_avgs[i], exp_avg_sqs[i]
            exp_avg.lerp_(grad, per_copy(self.one_minus_beta1, param))
            exp_avg_sq.mul_(per_copy(self.beta2_t, param)).addcmul_(grad * per_copy(self.one_minus_beta2, param), grad)
            denominator = (exp_avg_sq.sqrt() / per_copy(bias_correction2_sqrt, param)).add_(
                per_copy(self.epsilon, param)
            )
            param.add_(exp_avg * per_copy(negative_step_size, param) / denominator)
        self.report_scheduled(lr_t)
        return losses


class FusedRMSprop(_Scheduled):
    """torch's RMSprop per copy (not centered, no weight decay): ``v ← α v + (1−α) g²``, ``a = √v + ε``, then
    ``b ← m b + g/a; θ ← θ − λ b`` with momentum, ``θ ← θ − λ g/a`` without.

    As in :class:`FusedSGD`, one momentum buffer serves the group once any copy has momentum. A copy with momentum
    0 in such a group is stepped with torch's own rounding (``torch.where`` between the two updates): the few extra
    kernels keep it bitwise where ``θ − λ (0·b + g/a)`` would differ in the last bit.
    """

    NAME = "rmsprop"
    ORDINARY = RMSprop

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        alpha = self.vector64("alpha")
        self.alpha = alpha.to(self.dtype)
        self.one_minus_alpha = (1 - alpha).to(self.dtype)
        self.epsilon = self.vector("epsilon")
        momenta = [float(h["momentum"]) for h in self.hparams]
        self.uses_momentum = max(momenta) > 0
        self.mixed_momentum = self.uses_momentum and min(momenta) == 0
        self.momentum = self.vector("momentum")
        self.no_momentum = self.momentum == 0

    @torch.no_grad()
    def step(self, closure: FusedClosure) -> Tensor:
        _, lr_t = self.scheduled_lr()
        losses = self.loss_and_grad(closure)
        negative_lr = -lr_t
        square_avgs = self.buffers("square_avg")
        buffers = self.buffers("momentum_buffer") if self.uses_momentum else []
        for i in self.with_grad():
            param = self.params[i]
            grad = param.grad
            square_avg = square_avgs[i]
            square_avg.mul_(per_copy(self.alpha, param)).addcmul_(grad * per_copy(self.one_minus_alpha, param), grad)
            avg = square_avg.sqrt().add_(per_copy(self.epsilon, param))
            if self.uses_momentum:
                buffer = buffers[i]
                buffer.mul_(per_copy(self.momentum, param)).add_(grad / avg)
                if self.mixed_momentum:
                    # torch steps a copy without momentum by θ + (−λ g)/a, not by θ − λ (0·b + g/a)
                    plain = param + grad * per_copy(negative_lr, param) / avg
                    with_momentum = torch.addcmul(param, buffer, per_copy(negative_lr, param))
                    torch.where(per_copy(self.no_momentum, param), plain, with_momentum, out=param)
                else:
                    param.addcmul_(buffer, per_copy(negative_lr, param))
            else:
                param.add_(grad * per_copy(negative_lr, param) / avg)
        self.report_scheduled(lr_t)
        return losses


# -- line searches ----------------------------------------------------------------------------------------------


class _SingleBatchLineSearch(_VectorOptimizer):
    """PAL and SLS are registered noise-adapted (:mod:`lsbench.optim.noise`). The fused versions measure on one
    batch per update: a copy whose ε asks for k > 1 batches is refused (it trains unfused), while ε < 2, which only
    rescales the budget, is supported as long as the whole group gets one budget."""

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        budgets = set()
        for h in self.hparams:
            factor = noise_factor_for(h["noise_factor"], h["batch_size"], h["training_set_size"])
            k = batches_per_update(factor)
            if k > 1:
                raise ValueError(
                    f"{self.NAME}: the fused version measures on one batch per update, but noise_factor "
                    f"{h['noise_factor']!r} asks for {k}; train such runs unfused"
                )
            total_steps = h["total_steps"]
            budgets.add(None if total_steps is None else max(1, round(factor * total_steps)))
        if len(budgets) > 1:
            raise ValueError(f"{self.NAME}: the fused copies' noise factors give different budgets {sorted(budgets)}")
        self._budget = budgets.pop()

    def training_steps(self, steps: int) -> int:
        """``round(ε · total_steps)`` as the ordinary noise-adapted optimizer reports it (``steps`` without a
        ``total_steps``)."""
        return steps if self._budget is None else self._budget


class FusedPAL(_SingleBatchLineSearch):
    """PAL (thesis Algorithm 8, :class:`lsbench.optim.PAL`) per copy: one fused forward+backward pass at the
    origin, one fused forward pass at every copy's own probe distance ``μ_k / ‖d_k‖``, and the three cases of the
    parabola's vertex as ``torch.where`` over the copies.

    The direction buffer ``d ← β d + g`` exists once any copy has β > 0; a copy with β = 0 takes its gradient as
    direction, as the ordinary PAL does, and its ``g·d`` as ``‖g‖²`` (``torch.where``: ``0·d + g`` would turn a
    non-finite old buffer into NaN). Norms are reduced as the ordinary PAL reduces them (:func:`flat_norms`).
    """

    NAME = "pal"
    ORDINARY = noise_adapted(PAL)

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        betas = [float(h["direction_adaptation"]) for h in self.hparams]
        self.uses_direction = max(betas) > 0
        self.mixed_direction = self.uses_direction and min(betas) == 0
        self.beta = self.vector("direction_adaptation")
        self.plain_gradient = self.beta == 0
        mu = self.vector64("measuring_step_size")
        self.mu = mu.to(self.dtype)
        self.mu_squared = (mu**2).to(self.dtype)
        self.alpha = self.vector("update_step_adaptation")
        self.max_step_size = self.vector("max_step_size")
        self.epsilon = self.vector("epsilon")

    @torch.no_grad()
    def step(self, closure: FusedClosure) -> Tensor:
        loss_0 = self.loss_and_grad(closure)
        positions = self.with_grad()
        params = [self.params[i] for i in positions]
        grads = [p.grad for p in params]
        if self.uses_direction:
            buffers = self.buffers("direction")
            direction = [buffers[i] for i in positions]
            for d, g in zip(direction, grads, strict=True):
                d.mul_(per_copy(self.beta, d)).add_(g)
                if self.mixed_direction:
                    torch.where(per_copy(self.plain_gradient, d), g, d, out=d)
            norm = flat_norms(direction)
            grad_dot_direction = copy_dot(grads, direction)
            if self.mixed_direction:
                grad_dot_direction = torch.where(self.plain_gradient, norm.square(), grad_dot_direction)
        else:
            direction = grads
            norm = flat_norms(grads)
            grad_dot_direction = norm.square()
        norm = torch.where(norm == 0, self.epsilon, norm)
        slope = -grad_dot_direction / norm

        origin = [p.detach().clone() for p in params]
        set_along(params, origin, direction, -self.mu / norm)
        loss_mu = self.loss(closure)

        curvature = (loss_mu - loss_0 - slope * self.mu) / self.mu_squared
        vertex = self.alpha * (-slope / (2 * curvature))
        zero = torch.zeros_like(vertex)
        step = torch.where(slope < 0, torch.where(curvature > 0, vertex, self.mu), zero)
        step = torch.minimum(step, self.max_step_size)
        finite = torch.isfinite(curvature) & torch.isfinite(slope) & torch.isfinite(norm)
        step = torch.where(finite, step, zero)

        set_along(params, origin, direction, -step / norm)
        self.report(step / norm, step > 0)
        return loss_0


class FusedSLS(_SingleBatchLineSearch):
    """SLS (stochastic Armijo backtracking, :class:`lsbench.optim.SLS`) per copy.

    Every trial evaluates all copies in one fused forward pass. A copy still searching sits at ``θ₀ − η_k g`` with
    its own trial step ``η_k``; a copy that has accepted stays at its accepted point (its coefficient stays at its
    accepted step, so re-setting it from the origin reproduces that point bit for bit); a skipped copy stays at its
    origin. The trials end when every copy has accepted or after ``max_backtracks`` (shared): then the copies
    still searching take the fallback step and keep their decreased ``η``, as the ordinary SLS does.

    Reproduced exactly per copy: the reset rule (``grow`` multiplies by ``γ^(1/n_b)``, the Python-float factor the
    ordinary SLS uses), the cap, the Armijo test in double precision against the origin loss and gradient norm
    rounded to float32 (the ordinary SLS reads them through one float32 transfer), the skip when that loss is not
    finite or ``‖g‖ < min_gradient_norm``, and the fallback. Step sizes are float64 vectors, as they are Python
    floats in the ordinary SLS.

    Host synchronisation: one before the trials (does any copy search, must a skipped copy's direction be
    zeroed) and one per trial (has every copy accepted?) -- the ordinary SLS synchronises as often per copy.
    """

    NAME = "sls"
    ORDINARY = noise_adapted(SLS)

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(params, hparams)
        self.reset_option: str = self.shared("reset_option")
        self.max_backtracks: int = self.shared("max_backtracks")
        self.initial_step_size = self.vector64("initial_step_size")
        self.armijo_constant = self.vector64("armijo_constant")
        self.step_size_decay = self.vector64("step_size_decay")
        self.max_step_size = self.vector64("max_step_size")
        self.fallback_step_size = self.vector64("fallback_step_size")
        self.min_gradient_norm = self.vector64("min_gradient_norm")
        growth = [float(h["step_size_reset"]) ** (1.0 / self.shared("batches_per_epoch")) for h in self.hparams]
        self.growth = torch.tensor(growth, dtype=torch.float64).to(self.device, non_blocking=True)
        self.state["step_size"] = self.initial_step_size.clone()

    def reset_step_size(self) -> Tensor:
        """Each copy's first trial step: the reset of its previous step size, then the cap."""
        previous = self.state["step_size"]
        if self.reset_option == "keep":
            step_size = previous
        elif self.reset_option == "grow":
            step_size = previous * self.growth
        else:
            step_size = self.initial_step_size
        return torch.minimum(step_size, self.max_step_size)

    @torch.no_grad()
    def step(self, closure: FusedClosure) -> Tensor:
        loss_0 = self.loss_and_grad(closure)
        params = [self.params[i] for i in self.with_grad()]
        grads = [p.grad for p in params]
        loss_value = loss_0.float().double()
        grad_norm_value = flat_norms(grads).float().double()
        step_size = self.reset_step_size()
        skipped = ~torch.isfinite(loss_value) | ~(grad_norm_value >= self.min_gradient_norm)
        searching = ~skipped
        taken = torch.where(skipped, 0.0, self.fallback_step_size)
        decrease = self.armijo_constant * grad_norm_value**2
        any_searching, any_skipped = torch.stack([searching.any(), skipped.any()]).tolist()

        if any_searching:
            # A skipped copy stays at its origin: coefficient 0 on a direction zeroed for it (its gradient may be
            # NaN, and 0 · NaN would move it).
            direction = [g.masked_fill(per_copy(skipped, g), 0) for g in grads] if any_skipped else grads
            origin = [p.detach().clone() for p in params]
            for _ in range(self.max_backtracks):
                set_along(params, origin, direction, (-torch.where(searching, step_size, taken)).to(self.dtype))
                trial = self.loss(closure).double()
                accepted = searching & (trial <= loss_value - step_size * decrease)
                taken = torch.where(accepted, step_size, taken)
                step_size = torch.where(searching & ~accepted, step_size * self.step_size_decay, step_size)
                searching = searching & ~accepted
                if not searching.any():
                    break
            else:
                set_along(params, origin, direction, (-taken).to(self.dtype))

        self.state["step_size"] = step_size
        self.report(taken.to(self.dtype), ~skipped)
        return loss_0


FUSED_OPTIMIZERS: dict[str, type[FusedOptimizer]] = {
    cls.NAME: cls for cls in (FusedSGD, FusedAdam, FusedRMSprop, FusedPAL, FusedSLS)
}
"""The fused optimizers defined here, by registry name; LABPAL's two variants live in :mod:`lsbench.fused.labpal`
(:func:`fused_optimizer_class`)."""

LABPAL_NAMES = ("labpal_sgd", "labpal_nsgd")
"""The registry names of the fused LABPAL (:class:`lsbench.fused.labpal.FusedLABPAL`, imported when needed);
with :data:`FUSED_OPTIMIZERS` exactly the optimizers of :data:`lsbench.fused.groups.SHARED_HPARAMS`."""


def fused_optimizer_class(name: str) -> type[FusedOptimizer]:
    """The fused class of optimizer ``name``; ValueError naming it when it has no fused version."""
    if name in LABPAL_NAMES:
        from lsbench.fused.labpal import FusedLABPAL  # written alongside; imported only when a group needs it

        return FusedLABPAL
    if name not in FUSED_OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} has no fused version (fused: {', '.join(SHARED_HPARAMS)})")
    return FUSED_OPTIMIZERS[name]


def build_fused_optimizer(
    name: str,
    params: Sequence[Tensor],
    hparams_per_copy: Sequence[Mapping[str, Any]],
    context: TrainingContext,
) -> FusedOptimizer:
    """The fused optimizer ``name`` over ``params``, copy k built with ``hparams_per_copy[k]``.

    Each copy's keyword arguments are what :meth:`lsbench.optim.OptimizerEntry.build` passes the ordinary
    optimizer: the entry's fixed arguments, the resolved (defaulted, validated) grid hyperparameters and the
    training context's values. Raises ValueError for an unknown optimizer, one without a fused version, an invalid
    hyperparameter, or a shared hyperparameter that differs between copies.
    """
    entry = get_optimizer(name)
    cls = fused_optimizer_class(name)
    kwargs = [{**entry.fixed, **entry.resolve(values), **entry.context(context)} for values in hparams_per_copy]
    return cls(params, kwargs)
