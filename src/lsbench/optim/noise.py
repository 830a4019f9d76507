r"""Noise adaptation for every line search: measure on the mean of k batches (thesis Eq. 6.8, Section 6.4.3).

Line searches that work on the mini-batch loss change their behaviour with the gradient noise, which grows as
the batch shrinks or the training set grows. LABPAL keeps the noise scale of its grid search by sampling each
"batch" over several inferences; the thesis names carrying this over to the other line searches as future work
(Section 6.4.3). This module does it once, for any :class:`~lsbench.optim._linesearch.LineSearchOptimizer`:

* **noise factor.** :math:`\epsilon = \frac{128}{|B|}\frac{|D|}{40{,}000}` (Eq. 6.8) relates the noise of a
  run to that of the CIFAR-10 grid search (batch 128, 40,000 images). ``noise_factor=None`` derives it from
  the run's batch and training-set size; a number sets it; the default 1.0 turns the adaptation off.
* **batches per update.** Each update of the wrapped line search uses :math:`k = \max(\lfloor\epsilon\rfloor, 1)`
  sampled batches, i.e. :math:`k` consecutive ``step`` calls. Every call evaluates its own batch once with a
  backward pass (that call's training forward: its loss is the step's loss, BatchNorm statistics update as in
  SGD) and adds the gradient to a per-parameter sum. The :math:`k`-th call runs the wrapped optimizer's own
  ``step`` on a :class:`MeanClosure`: a closure whose value is the mean loss of the :math:`k` stored closures.
  Every probe of the line search -- PAL's second point, each SLS trial, each GOLS-I trial -- therefore measures
  the loss (and, with a backward pass, the gradient) of the :math:`k`-batch mean at that point.
* **no recomputation at the origin.** The first call of a mean closure, made before the line search has moved
  any parameter, returns the accumulated mean loss with the accumulated mean gradient attached (a surrogate
  ``ℓ̄ + Σ⟨θ − θ̂, Ḡ⟩`` whose value is ``ℓ̄`` and whose gradient is ``Ḡ``), so an update costs exactly the
  :math:`k` forward+backward passes of its batches plus the line search's probes over :math:`k` batches. Whether
  the parameters are unchanged is checked with their in-place version counters; if they were moved, the mean
  is recomputed (then all :math:`k` graphs are alive at once during the backward pass, and a backward pass
  through train-mode BatchNorm fails, because the closures' probe calls restore the running statistics in
  place). PAL, SLS and GOLS-I always make their first evaluation before moving, so they never recompute with
  a backward pass; line searches that move first (PLS) use pooled mode.
* **budget.** The trainer runs :attr:`training_steps` ``= round(ε · total_steps)`` steps (the thesis sets the
  training steps to 150,000 ε), read through :func:`lsbench.optim.training_steps` as for LABPAL.
* **reporting.** Steps still count batches: the :math:`k - 1` accumulating calls report ``updated=False`` and
  the learning rate in force; the :math:`k`-th reports what the line search reports. Pass counters count every
  batch forward and backward pass (the surrogate counts none, a recomputed mean counts :math:`k`).
* **checkpoints.** A ``state_dict`` taken in the middle of a group stores the gradient sums (per-parameter
  state), the loss sum and the stored batches (``closure.snapshot()``); the restored optimizer rebuilds them
  with ``closure.replay(snapshot)`` at its next step, so the continuation is bit-identical. The closures and
  gradient sums of a group are kept by :class:`lsbench.optim._batches.BatchGroup`, the helper LABPAL uses too.

Optimizer-specific adjustment: an inner ``batches_per_epoch`` setting (SLS's step-size reset) is divided by
:math:`k`, because the wrapped optimizer sees one step per :math:`k` batches.

**Pooled mode** (``noise_adapted(cls, pooled=True)``), for line searches that need a real
:class:`~lsbench.optim.closure.BatchClosure` because they read its model and batch themselves (PLS computes
per-sample statistics). Then the :math:`k` calls only run a forward pass of their batch (to return its loss),
and the :math:`k`-th hands the line search one closure over the *concatenated* :math:`k` batches
(:func:`pool_batches`). For a mean-reduced loss over equal-sized batches its value is the mean of the :math:`k`
batch losses, exactly as in the default mode, except that BatchNorm normalizes with the statistics of the pooled
batch and dropout draws one mask for it. The per-batch forward passes are made as probes (they leave BatchNorm's
running statistics alone); the pooled closure's first evaluation is the training forward pass, so the running
statistics are updated once per update, by the pooled batch. (Its first evaluation must be that one: a probe
restores the running statistics in place, which a later backward pass through BatchNorm does not allow.)

:func:`noise_adapted` makes the adapted subclass of any line search; the registry builds PAL, SLS, GOLS-I and
(in pooled mode) PLS through it and gives them the ``noise_factor`` hyperparameter; LABPAL has its own. With
:math:`\epsilon < 2` (k = 1) the wrapper passes every step straight through; only the budget is rescaled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from lsbench.optim._batches import BatchGroup, stack_losses
from lsbench.optim._hparams import COUNT, Range, check_ranges, nullable
from lsbench.optim._linesearch import Closure, LineSearchOptimizer, flat_dot
from lsbench.optim.closure import BatchClosure
from lsbench.optim.labpal import NOISE_FACTOR, noise_adaptation_factor

__all__ = [
    "MeanClosure",
    "NoiseAdaptation",
    "batches_per_update",
    "noise_adapted",
    "noise_factor_for",
    "pool_batches",
]


def noise_factor_for(noise_factor: float | None, batch_size: int | None, training_set_size: int | None) -> float:
    """ε: the given factor, or Eq. 6.8's value for the run when ``noise_factor`` is None."""
    if noise_factor is None:
        if batch_size is None or training_set_size is None:
            raise ValueError("noise_factor=None derives ε from batch_size and training_set_size, which were not given")
        noise_factor = noise_adaptation_factor(batch_size, training_set_size)
    NOISE_FACTOR.check("noise_factor", noise_factor)
    return float(noise_factor)


def batches_per_update(noise_factor: float) -> int:
    """k = max(int(ε), 1): sampled batches per line-search update."""
    return max(int(noise_factor), 1)


class MeanClosure:
    """The mean loss of several closures, evaluated at the current parameters.

    ``surrogate`` (optional) is ``(mean_loss, params, mean_grad_sums, k)`` measured at the current parameters:
    the first call returns ``mean_loss`` with gradient ``sum / k`` attached instead of re-evaluating, provided
    no parameter was modified in place since this closure was built.
    """

    def __init__(
        self,
        closures: Sequence[Closure],
        surrogate: tuple[Tensor, list[Tensor], list[Tensor]] | None = None,
    ) -> None:
        self.closures = list(closures)
        self.calls = 0
        self.forwards = 0  # batch forward passes this closure ran
        self.graphs = 0  # batch graphs behind the last returned loss (backward passes it costs)
        self._surrogate = surrogate
        self._versions = [p._version for p in surrogate[1]] if surrogate is not None else None

    def __len__(self) -> int:
        return len(self.closures)

    def __call__(self) -> Tensor:
        self.calls += 1
        surrogate, self._surrogate = self._surrogate, None
        if surrogate is not None:
            loss, params, grad_sums = surrogate
            if all(p._version == v for p, v in zip(params, self._versions, strict=True)):
                self.graphs = 0
                if not torch.is_grad_enabled() or not params:
                    return loss
                inner = flat_dot(params, grad_sums) / len(self.closures)
                return loss + (inner - inner.detach())  # value: exactly ``loss``; gradient: the mean gradient
        losses = stack_losses(self.closures)
        self.forwards += len(losses)
        self.graphs = len(losses) if torch.is_grad_enabled() else 0
        return losses.sum() / len(losses)


def pool_batches(closures: Sequence[Closure]) -> BatchClosure:
    """One :class:`BatchClosure` over the concatenated batches of ``closures`` (same factory; first one's seed).

    Its first call is a training forward pass (see the module docstring). ``pooled_batches`` records how many
    batches it holds.
    """
    first = closures[0]
    if not all(isinstance(c, BatchClosure) and c.factory is first.factory for c in closures):
        raise TypeError("pooled noise adaptation needs BatchClosures of one ClosureFactory (lsbench.optim)")
    pooled = BatchClosure(
        first.factory,
        torch.cat([c.inputs for c in closures]),  # type: ignore[attr-defined]
        torch.cat([c.targets for c in closures]),  # type: ignore[attr-defined]
        first.seed,
    )
    pooled.pooled_batches = len(closures)  # type: ignore[attr-defined]
    return pooled


def _batches_behind(closure: Closure) -> int:
    return getattr(closure, "pooled_batches", 1)


class NoiseAdaptation(LineSearchOptimizer):
    """Mixin that puts noise adaptation in front of a line search's ``step``; see the module docstring.

    Use :func:`noise_adapted` to combine it with a line search class. Extra constructor arguments (all keyword):
    ``noise_factor`` (ε; None derives it), ``total_steps`` (the nominal budget; sets :attr:`training_steps`),
    ``batch_size`` and ``training_set_size`` (for ``noise_factor=None``).
    """

    pooled: bool = False
    """Pooled mode (see the module docstring); set by ``noise_adapted(cls, pooled=True)``."""

    RANGES: ClassVar[dict[str, Range]] = {"noise_factor": NOISE_FACTOR, "total_steps": nullable(COUNT)}

    def __init__(
        self,
        params: Any,
        *args: Any,
        noise_factor: float | None = 1.0,
        total_steps: int | None = None,
        batch_size: int | None = None,
        training_set_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        check_ranges(NoiseAdaptation.RANGES, locals())
        factor = noise_factor_for(noise_factor, batch_size, training_set_size)
        k = batches_per_update(factor)
        super().__init__(params, *args, **kwargs)
        self.noise_factor = factor
        self.batches_per_update = k
        if total_steps is not None:
            self.training_steps = max(1, round(factor * total_steps))
        group = self.param_groups[0]
        if k > 1 and "batches_per_epoch" in group:
            group["batches_per_epoch"] = max(1, group["batches_per_epoch"] // k)
        self.shared.update(noise_count=0, noise_loss_sum=self._scalar(0.0))
        self._noise_batches = BatchGroup("noise_grad_sum", "a partial batch group of a noise-adapted optimizer")

    @property
    def collected_batches(self) -> int:
        """Batches collected towards the next update (0 to k - 1)."""
        return self.shared["noise_count"]

    # -- step -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        k = self.batches_per_update
        if k == 1:
            return super().step(closure)
        batches = self._noise_batches
        batches.resume(closure)
        shared = self.shared
        shared["noise_count"] += 1
        first = shared["noise_count"] == 1
        batches.add(closure)
        if self.pooled:
            return self._pooled_step(closure)
        loss = LineSearchOptimizer._loss_and_grad(self, closure)
        batches.add_gradients(self.state, *self._params_with_grad(), first=first)
        if first:
            shared["noise_loss_sum"] = loss.to(shared["noise_loss_sum"].dtype)
        else:
            shared["noise_loss_sum"] = shared["noise_loss_sum"] + loss
        if shared["noise_count"] < k:
            self._report(shared["effective_lr"], self._flags[False])
            return loss

        summed, sums = batches.pop_gradients(self.state, self._params)
        mean = MeanClosure(batches.take(), (shared["noise_loss_sum"] / k, summed, sums))
        shared["noise_count"] = 0
        super().step(mean)
        return loss

    def _pooled_step(self, closure: Closure) -> Tensor:
        shared = self.shared
        if not isinstance(closure, BatchClosure):
            raise TypeError(f"pooled noise adaptation needs a lsbench.optim.BatchClosure, got {type(closure).__name__}")
        closure.calls = max(closure.calls, 1)  # a probe: the pooled batch makes the training forward pass
        loss = LineSearchOptimizer._loss(self, closure)  # the step's loss
        if shared["noise_count"] < self.batches_per_update:
            self._report(shared["effective_lr"], self._flags[False])
            return loss
        pooled = pool_batches(self._noise_batches.take())
        shared["noise_count"] = 0
        super().step(pooled)
        return loss

    # -- pass counting: a mean closure runs k batches per evaluation (or none for the surrogate) ---------------

    def _loss_and_grad(self, closure: Closure, accumulate: bool = False) -> Tensor:
        if not isinstance(closure, MeanClosure):
            loss = super()._loss_and_grad(closure, accumulate)
            self.shared["forwards"] += _batches_behind(closure) - 1
            self.shared["backwards"] += _batches_behind(closure) - 1
            return loss
        forwards = closure.forwards
        loss = super()._loss_and_grad(closure, accumulate)
        self.shared["forwards"] += closure.forwards - forwards - 1
        self.shared["backwards"] += closure.graphs - 1
        return loss

    def _loss(self, closure: Closure) -> Tensor:
        if not isinstance(closure, MeanClosure):
            loss = super()._loss(closure)
            self.shared["forwards"] += _batches_behind(closure) - 1
            return loss
        forwards = closure.forwards
        loss = super()._loss(closure)
        self.shared["forwards"] += closure.forwards - forwards - 1
        return loss

    # -- checkpointing ----------------------------------------------------------------------------------------

    def _shared_for_saving(self) -> dict[str, Any]:
        return {**super()._shared_for_saving(), "noise_closures": self._noise_batches.snapshot()}

    def _after_load_shared(self) -> None:
        super()._after_load_shared()
        self._noise_batches.load(self.shared.pop("noise_closures", []))


_ADAPTED: dict[tuple[type, bool], type] = {}


def noise_adapted(cls: type[LineSearchOptimizer], pooled: bool = False) -> type[LineSearchOptimizer]:
    """The subclass of line search ``cls`` with :class:`NoiseAdaptation` in front (cached per ``cls`` and mode).

    ``noise_adapted(PAL)(params, noise_factor=3.0, total_steps=600, measuring_step_size=0.1)`` is PAL measuring
    on the mean of 3 batches, with ``training_steps == 1800``. ``pooled=True`` selects pooled mode (for line
    searches that need a :class:`BatchClosure`, e.g. ``noise_adapted(PLS, pooled=True)``).
    """
    if issubclass(cls, NoiseAdaptation):
        return cls
    key = (cls, pooled)
    if key not in _ADAPTED:
        name = f"NoiseAdapted{'Pooled' if pooled else ''}{cls.__name__}"
        adapted = type(
            name,
            (NoiseAdaptation, cls),
            {
                "__module__": __name__,
                "__doc__": f"{cls.__name__} with noise adaptation (see lsbench.optim.noise).",
                "pooled": pooled,
            },
        )
        _ADAPTED[key] = adapted
        globals()[name] = adapted  # importable by name, e.g. for pickling
    return _ADAPTED[key]
