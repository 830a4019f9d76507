"""LABPAL: Large-Batch Parabolic Approximation Line Search (thesis Chapter 6, Algorithm 9)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from lsbench.optim._batches import BatchGroup
from lsbench.optim._hparams import COUNT, POSITIVE, UNIT_INTERVAL, Range, check_ranges, nullable, one_of
from lsbench.optim._linesearch import (
    Closure,
    LineSearchOptimizer,
    flat_dot,
    flat_norm,
    move_along,
    restore,
    set_along,
    snapshot,
)

MODES = ("nsgd", "sgd")
ESTIMATORS = ("published", "exact")
THESIS_SCHEDULE = ((0.0, 1), (0.5, 2), (0.75, 4))
GRID_SEARCH_BATCH_SIZE = 128
"""|B_ori| of Eq. 6.8: the batch size of the CIFAR-10 grid search that the noise adaptation refers to."""
NOISE_FACTOR = nullable(POSITIVE)
"""ε of Eq. 6.8 (None: derived from the batch and training-set size); the noise adaptation takes the same."""


def noise_adaptation_factor(batch_size: int, training_set_size: int) -> float:
    """Thesis Eq. 6.8: ε = (128 / |B|) · (|D| / 40,000), the noise scale relative to the grid-search setting."""
    return (GRID_SEARCH_BATCH_SIZE / batch_size) * (training_set_size / 40_000)


def parabola(
    estimator: str, loss_0: Tensor, loss_near: Tensor, loss_far: Tensor, near: float, far: float
) -> tuple[Tensor, Tensor]:
    """Coefficients ``(a, b)`` of ``a s² + b s + loss_0`` from losses at ``s = 0, near, far``.

    ``"exact"`` is the three-point fit. ``"published"`` reproduces the reference code's construction from two
    rounds of non-uniform finite differences: b is the forward difference ``(ℓ_near - ℓ_0) / near`` and a is half
    the difference of the central derivative at ``near`` and b, divided by ``near``. On an exact parabola
    ``A s² + B s + C`` it returns ``a = A/2`` and ``b = B + A·near``, so its vertex ``-b / 2a`` lies at about
    twice the true one -- the behaviour the thesis' LABPAL results were obtained with.
    """
    if estimator == "exact":
        slope_near = (loss_near - loss_0) / near
        slope_far = (loss_far - loss_near) / (far - near)
        a = (slope_far - slope_near) / far
        return a, slope_near - a * near
    forward = (loss_near - loss_0) / near
    left, right = near, far - near
    central = (
        -right / (left * (left + right)) * loss_0
        + (right - left) / (left * right) * loss_near
        + left / (right * (left + right)) * loss_far
    )
    return (central - forward) / (2 * near), forward


class LABPAL(LineSearchOptimizer):
    r"""Large-Batch Parabolic Approximation Line Search, in its SGD and NSGD variants.

    LABPAL alternates two phases, and every ``step`` call consumes exactly one sampled batch (the thesis' step):

    **Measurement.** Over :math:`n_a k` batches (:math:`k` the current batch-size multiplier, :math:`n_a` the
    number of batch groups that make up ``approximation_batch_size`` :math:`|B_a|`, see the noise adaptation
    below) it estimates the full-batch loss along one line. The first
    :math:`k` batches are forward+backward passes whose mean gradient :math:`G` (plus ``momentum`` times the
    previous direction) defines the direction :math:`d`; the remaining ones are forward passes. :math:`\ell_0` is
    the mean loss of all :math:`n_a k` batches at the origin. At the last batch all stored batches are evaluated
    again at distances ``near_measuring_step_size`` and ``measuring_step_size`` along :math:`-d/\lVert d\rVert`, a
    parabola is fitted (``estimator``), and the vertex distance, clipped at ``max_step_size`` and multiplied by
    :math:`\alpha` = ``update_step_adaptation``, becomes the step :math:`s` (NSGD) or the learning rate
    :math:`\lambda = s/\lVert d\rVert` (SGD). The measurement ends with an update to the (averaged) step.

    **Training.** Every :math:`k` batches their mean gradient :math:`G` (plus momentum) makes one update:
    :math:`\theta \leftarrow \theta - s\,G/\lVert G\rVert` (``mode="nsgd"``) or
    :math:`\theta \leftarrow \theta - \lambda G` (``mode="sgd"``). After ``sgd_steps`` updates since the last
    measurement (the measurement's own update included, as in the published code) a new measurement starts.

    **Batch-size schedule.** ``batch_size_schedule`` lists ``(fraction, k)`` pairs; at the first step at or past
    ``floor(fraction · T)`` (T the scaled budget, below) the multiplier becomes k and a new measurement starts,
    also when a measurement is running (it is discarded and restarted with the new k).

    **Noise adaptation** (thesis Eq. 6.8): with noise factor ε, the training budget becomes ``round(ε ·
    total_steps)`` (read it from :attr:`training_steps`) and each k becomes ``max(int(ε k), 1)``.
    ``noise_factor=None`` derives ε from ``batch_size`` and ``training_set_size``; the default 1.0 is the
    grid-search setting (CIFAR-10, 40,000 training images, batch 128) and turns the adaptation off.

    **Measurement size.** With the adaptation off (``noise_factor=1.0``) :math:`n_a` =
    ``round(approximation_batch_size / batch_size)``: at k = 1 a measurement covers :math:`|B_a|` samples of
    this run's batches. With it on (``noise_factor=None`` or any other value) ε is read as Eq. 6.8's factor,
    which holds :math:`128/|B|`, and the multipliers k already carry it; :math:`|B_a|` is then counted in
    batches of the grid search's 128 samples, :math:`n_a` = ``round(approximation_batch_size / 128)``, as in the
    reference (10 groups of k batches). At 40,000 training images and k = 1 a measurement therefore covers
    :math:`|B_a|` = 1,280 samples at every batch size: 10, 40 and 160 batches at batch size 128, 32 and 8.

    Hyperparameters keep the meaning they had in the thesis experiments, which ran the published code:

    * ``estimator="published"`` (default) fits the parabola as that code does (curvature half of an exact fit,
      see :func:`parabola`); ``"exact"`` is the three-point fit the thesis text describes;
    * the near probe is at 1.77e-4 (the code's value; the text says 1e-4);
    * the measurement uses :math:`n_a k` batches, so the approximation batch grows with k, as in the code;
    * the published extras are options, counted as the code counts them: it numbers its updates from -1,
      forces one re-measurement when that number equals U + 1 (U = ``untrustworthy_updates``) and averages the
      measurements made while it exceeds U. So the measurements made before U + 2 updates are done are used
      alone; right after the (U + 2)-th update (the 402nd with the default 400) one re-measurement is forced
      (again at the next step if its direction is rejected), and from then on the step and the learning rate are
      means over the last ``averaging_window`` successful measurements. ``untrustworthy_updates=0`` switches the
      period off (every measurement is averaged, nothing is forced); the code, given 0, would still use the
      first measurement alone and force a re-measurement after 2 updates. A measuring direction whose norm lies
      outside ``direction_norm_bounds`` (or that is not a descent direction) is rejected.

    Bugs of the published code that are fixed here, not reproduced:

    * the schedule fires at the first step at or past its threshold; the code tested for equality and skipped an
      entry (and all later ones) whose step fell inside a measurement or a partial batch group;
    * a measurement that fails before any step size exists starts a new measurement instead of crashing;
    * momentum is applied to updates also when k = 1 (the code updated the buffer but stepped along the bare
      gradient);
    * a rejected direction keeps the previous step and returns to training, or re-measures if there is none.

    Two further behaviours of the published code are not reproduced:

    * **growing cap.** The code binds its step cap tensor to the step and then multiplies the step by α in
      place, so every measurement whose vertex is clipped at ``max_step_size`` multiplies the cap itself by α
      (1, 1.8, 3.24, ... after successive clips). Here the cap stays ``max_step_size``.
    * **re-measurement start with k > 1.** The code tests ``(step - last measurement's step) // k >= sgd_steps``
      at every batch, so after ``sgd_steps - 1`` training updates it accumulates k - 1 more batches, discards
      them and starts the measurement k - 1 batches later than here (one batch later at k = 2). Here the
      measurement starts at the next batch-group boundary.

    Host synchronization happens only at the two decisions of each measurement (is the direction valid, did the
    parabola give a step), never in training steps.

    Closure calls: once per step, plus two more calls of each stored closure at the end of a measurement (the
    probes), i.e. :math:`2 n_a k` extra forward passes per measurement. Closures are kept until the measurement
    ends; :meth:`state_dict` stores their batches through ``closure.snapshot()`` and a restored optimizer rebuilds
    them with ``closure.replay(snapshot)`` (:class:`lsbench.optim.closure.BatchClosure` provides both). The
    closures and the gradient sums of a batch group are kept by :class:`lsbench.optim._batches.BatchGroup`, as in
    the noise adaptation; a parameter that gets no gradient from some batch of a group counts as a zero gradient
    there.

    The reported effective learning rate is λ (SGD) or :math:`s/\lVert G_t\rVert` of the latest update (NSGD),
    zero before the first measurement.
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "mode": one_of(MODES),
        "estimator": one_of(ESTIMATORS),
        "update_step_adaptation": POSITIVE,
        "momentum": UNIT_INTERVAL,
        "sgd_steps": COUNT,
        "approximation_batch_size": COUNT,
        "batch_size": COUNT,
        "total_steps": COUNT,
        "max_step_size": POSITIVE,
        "measuring_step_size": POSITIVE,
        "near_measuring_step_size": POSITIVE,
        "untrustworthy_updates": Range(low=0),
        "averaging_window": COUNT,
        "epsilon": POSITIVE,
        "noise_factor": NOISE_FACTOR,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        mode: str = "nsgd",
        update_step_adaptation: float = 1.8,
        momentum: float = 0.0,
        sgd_steps: int = 1000,
        approximation_batch_size: int = 1280,
        batch_size: int = 128,
        batch_size_schedule: Sequence[Sequence[float]] = THESIS_SCHEDULE,
        total_steps: int = 150_000,
        noise_factor: float | None = 1.0,
        training_set_size: int | None = None,
        max_step_size: float = 1.0,
        measuring_step_size: float = 0.01,
        near_measuring_step_size: float = 1.77e-4,
        estimator: str = "published",
        untrustworthy_updates: int = 400,
        averaging_window: int = 25,
        direction_norm_bounds: Sequence[float] = (1e-3, 100.0),
        epsilon: float = 1e-6,
    ) -> None:
        check_ranges(LABPAL.RANGES, locals())
        # With the noise adaptation on, ε holds Eq. 6.8's factor 128/|B| and the multipliers k' carry it, so |B_a|
        # is counted in grid-search batches (the reference's 10 batches); counting it in this run's batches as well
        # applied 128/|B| twice (160 instead of 40 batches at |B| = 32).
        noise_adapted = noise_factor is None or noise_factor != 1.0
        approximation_unit = GRID_SEARCH_BATCH_SIZE if noise_adapted else batch_size
        if near_measuring_step_size >= measuring_step_size:
            raise ValueError("Invalid near_measuring_step_size: must be smaller than measuring_step_size")
        low, high = direction_norm_bounds
        if not 0 <= low < high:
            raise ValueError(f"Invalid direction_norm_bounds: {tuple(direction_norm_bounds)} (need 0 <= low < high)")
        if noise_factor is None:
            if training_set_size is None:
                raise ValueError("noise_factor=None derives ε from training_set_size, which was not given")
            noise_factor = noise_adaptation_factor(batch_size, training_set_size)
            NOISE_FACTOR.check("noise_factor", noise_factor)
        fractions = [float(fraction) for fraction, _ in batch_size_schedule]
        if fractions != sorted(fractions) or any(not 0 <= f <= 1 for f in fractions):
            raise ValueError(f"Invalid batch_size_schedule: {batch_size_schedule} (fractions must rise within [0, 1])")
        if any(int(k) < 1 or int(k) != k for _, k in batch_size_schedule):
            raise ValueError(f"Invalid batch_size_schedule: {batch_size_schedule} (multipliers must be integers >= 1)")

        defaults = {
            "mode": mode,
            "update_step_adaptation": update_step_adaptation,
            "momentum": momentum,
            "sgd_steps": sgd_steps,
            "approximation_batches": max(1, round(approximation_batch_size / approximation_unit)),
            "max_step_size": max_step_size,
            "measuring_step_size": measuring_step_size,
            "near_measuring_step_size": near_measuring_step_size,
            "estimator": estimator,
            "untrustworthy_updates": untrustworthy_updates,
            "averaging_window": averaging_window,
            "direction_norm_bounds": (float(low), float(high)),
            "epsilon": epsilon,
        }
        super().__init__(params, defaults)
        self.noise_factor = float(noise_factor)
        self.training_steps = max(1, round(total_steps * self.noise_factor))
        self.schedule = [
            (math.floor(fraction * self.training_steps), max(int(k * self.noise_factor), 1))
            for fraction, k in batch_size_schedule
        ]
        self.shared.update(
            k=1,
            schedule_index=0,
            measuring=True,
            count=0,
            loss_sum=self._scalar(0.0),
            loss_count=self._scalar(0.0),
            updates=0,
            updates_since_measurement=0,
            step_size=None,
            lr=None,
            direction_norm=None,
            history_steps=[],
            history_lrs=[],
        )
        self._batches = BatchGroup("grad_sum", "a running LABPAL measurement")

    # -- phases -----------------------------------------------------------------------------------------------

    def _start_measurement(self) -> None:
        shared = self.shared
        shared.update(measuring=True, count=0)
        for p in self._params:
            self.state[p].pop("line", None)
        shared["loss_sum"].zero_()
        shared["loss_count"].zero_()
        self._batches.clear()

    def _start_training(self) -> None:
        self.shared.update(measuring=False, count=0)
        self._batches.clear()

    def _apply_schedule(self) -> None:
        shared = self.shared
        fired = False
        while (
            shared["schedule_index"] < len(self.schedule)
            and shared["steps"] >= self.schedule[shared["schedule_index"]][0]
        ):
            shared["k"] = self.schedule[shared["schedule_index"]][1]
            shared["schedule_index"] += 1
            fired = True
        if fired:
            self._start_measurement()

    def _trusted_from(self) -> int:
        """Updates after which measurements are averaged and the forced re-measurement comes (0: no such period).

        The reference counts its updates from -1, forces the re-measurement when its counter equals U + 1 and
        averages the measurements made while it exceeds U: both from U + 2 updates on.
        """
        untrustworthy = self.param_groups[0]["untrustworthy_updates"]
        return untrustworthy + 2 if untrustworthy > 0 else 0

    def _measurement_due(self) -> bool:
        shared, group = self.shared, self.param_groups[0]
        trusted_from = self._trusted_from()
        if trusted_from > 0 and shared["updates"] == trusted_from:
            return True  # an equality, as in the reference: a rejected direction re-measures at the next step
        return shared["updates_since_measurement"] >= group["sgd_steps"]

    # -- gradients --------------------------------------------------------------------------------------------

    def _accumulate(self, closure: Closure) -> Tensor:
        """Forward+backward on this batch; with k > 1 the gradient is added to a per-parameter sum.

        The sum lives in optimizer state rather than in ``p.grad`` so that a checkpoint taken in the middle of a
        batch group carries it.
        """
        loss = self._loss_and_grad(closure)
        if self.shared["k"] > 1:
            self._batches.add_gradients(self.state, *self._params_with_grad(), first=self.shared["count"] == 1)
        return loss

    def _direction(self) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """Parameters, direction, its norm and the directional derivative, from the current batch group."""
        group = self.param_groups[0]
        k = self.shared["k"]
        if k > 1:
            params, sums = self._batches.pop_gradients(self.state, self._params)
            grads = torch._foreach_div(sums, float(k))
        else:
            params, grads = self._params_with_grad()
        if group["momentum"] != 0:
            direction = [self.state[p].setdefault("direction", torch.zeros_like(p)) for p in params]
            torch._foreach_mul_(direction, group["momentum"])
            torch._foreach_add_(direction, grads)
            norm = flat_norm(direction).clamp(min=group["epsilon"])
            slope = -flat_dot(grads, direction) / norm
        else:
            direction = grads
            norm = flat_norm(direction).clamp(min=group["epsilon"])
            slope = -norm
        return params, direction, norm, slope

    # -- step -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        self._batches.resume(closure)
        self._apply_schedule()
        shared = self.shared
        if not shared["measuring"] and shared["count"] == 0 and self._measurement_due():
            self._start_measurement()
        if shared["measuring"]:
            loss, updated = self._measurement_step(closure)
        else:
            loss, updated = self._training_step(closure)
        self._report(shared["effective_lr"], self._flags[updated])
        return loss

    def _measurement_step(self, closure: Closure) -> tuple[Tensor, bool]:
        shared, group = self.shared, self.param_groups[0]
        shared["count"] += 1
        self._batches.add(closure)
        k = shared["k"]
        if shared["count"] <= k:
            loss = self._accumulate(closure)
            if shared["count"] == k:
                params, direction, norm, slope = self._direction()
                low, high = group["direction_norm_bounds"]
                valid = (slope < 0) & torch.isfinite(norm) & (norm >= low) & (norm <= high)
                if not bool(valid):
                    self._reject_measurement()
                    return loss, False
                # The momentum buffer keeps changing in later updates; the line must stay fixed until the end.
                for p, d in zip(params, direction, strict=True):
                    self.state[p]["line"] = d.clone()
                shared["direction_norm"] = norm
        else:
            loss = self._loss(closure)
        finite = torch.isfinite(loss)
        shared["loss_sum"] += torch.where(finite, loss, torch.zeros_like(loss))
        shared["loss_count"] += finite
        if shared["count"] == group["approximation_batches"] * k:
            return loss, self._finish_measurement()
        return loss, False

    def _reject_measurement(self) -> None:
        if self.shared["step_size"] is None:
            self._start_measurement()
        else:
            self._start_training()

    def _mean_probe_loss(self) -> Tensor:
        return self._batches.losses(self._loss).nanmean()

    def _finish_measurement(self) -> bool:
        shared, group = self.shared, self.param_groups[0]
        params = [p for p in self._params if "line" in self.state[p]]
        line = [self.state[p].pop("line") for p in params]
        norm = shared["direction_norm"]
        near, far = group["near_measuring_step_size"], group["measuring_step_size"]
        origin = snapshot(params)
        loss_0 = shared["loss_sum"] / shared["loss_count"]
        set_along(params, origin, line, -near / norm)
        loss_near = self._mean_probe_loss()
        set_along(params, origin, line, -far / norm)
        loss_far = self._mean_probe_loss()

        # The published fit weights the losses by coefficients of order 1/near (about 5,600 at the default near
        # probe) before they cancel; in float32 that cancellation alone put the curvature 172 % off at a ResNet-20
        # initialisation. Three scalars: the fit runs in float64 (and back in the losses' precision).
        wide = (loss.double() for loss in (loss_0, loss_near, loss_far))
        a, b = parabola(group["estimator"], *wide, near, far)
        step = (-b / (2 * a)).clamp(max=group["max_step_size"]) * group["update_step_adaptation"]
        step = step.clamp(min=group["epsilon"]).to(loss_0.dtype)
        if bool((a > 0) & (b < 0) & torch.isfinite(step)):
            self._record(step, (step / norm).clamp(min=group["epsilon"]))
        if shared["step_size"] is None:
            restore(params, origin)
            self._start_measurement()
            return False
        set_along(params, origin, line, -shared["step_size"] / norm)
        shared["effective_lr"] = shared["lr"] if group["mode"] == "sgd" else shared["step_size"] / norm
        shared["updates"] += 1
        shared["updates_since_measurement"] = 1
        self._start_training()
        return True

    def _record(self, step: Tensor, lr: Tensor) -> None:
        shared, group = self.shared, self.param_groups[0]
        if shared["updates"] < self._trusted_from():
            shared["step_size"], shared["lr"] = step, lr
            return
        window = group["averaging_window"]
        shared["history_steps"] = [*shared["history_steps"], step][-window:]
        shared["history_lrs"] = [*shared["history_lrs"], lr][-window:]
        shared["step_size"] = torch.stack(shared["history_steps"]).mean()
        shared["lr"] = torch.stack(shared["history_lrs"]).mean()

    def _training_step(self, closure: Closure) -> tuple[Tensor, bool]:
        shared, group = self.shared, self.param_groups[0]
        shared["count"] += 1
        loss = self._accumulate(closure)
        if shared["count"] < shared["k"]:
            return loss, False
        params, direction, norm, _ = self._direction()
        if group["mode"] == "nsgd":
            move_along(params, direction, -shared["step_size"] / norm)
            shared["effective_lr"] = shared["step_size"] / norm
        else:
            move_along(params, direction, -shared["lr"])
            shared["effective_lr"] = shared["lr"]
        shared["updates"] += 1
        shared["updates_since_measurement"] += 1
        shared["count"] = 0
        return loss, True

    # -- checkpointing ----------------------------------------------------------------------------------------

    def _shared_for_saving(self) -> dict[str, Any]:
        return {**self.shared, "closures": self._batches.snapshot()}

    def _after_load_shared(self) -> None:
        self._batches.load(self.shared.pop("closures", []))
