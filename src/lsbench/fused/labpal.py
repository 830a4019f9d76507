"""LABPAL for K fused runs: every copy follows its own :class:`~lsbench.optim.labpal.LABPAL` trajectory.

The ordinary LABPAL (:mod:`lsbench.optim.labpal`) alternates measurements of ``n_a·k`` batches with training
updates every ``k`` batches. In a fused group every copy consumes one batch per ``step`` exactly as its ordinary
optimizer would, and as long as no copy rejects a measuring direction the copies' phases coincide: the schedule, the
batch-size multiplier and all counters depend only on hyperparameters the group shares
(:data:`lsbench.fused.groups.SHARED_HPARAMS`). A rejected direction (outside ``direction_norm_bounds``, which may
differ per copy, or not a descent direction -- e.g. a diverging copy's NaN gradient) sends only that copy back to a
new measurement or to training, and from then on the copies' phases differ. So the phase of each copy -- measuring or
not, its batch count, its update counters -- is kept per copy on the host, and every step does the fused work the
union of the copies needs: a backward pass if any copy needs a gradient (the copies that only need a forward value
take the loss and ignore their gradient), then per-copy updates under masks (``torch.where``) or per-copy
coefficients. The batch-size multiplier ``k`` itself is shared: the schedule fires at the same step for every copy
and restarts every copy's measurement.

**Stored batches.** A measurement's copies re-evaluate all its batches at two probe points. Since ``k`` and ``n_a``
are shared and a measurement spans consecutive steps, the copies that finish at one step measured the same last
``n_a·k`` fused batches, so one list of fused closures serves all copies: a copy in measurement owns the last
``count`` of them, and the list is trimmed to the longest running measurement. The probes move only the finishing
copies; the others are evaluated at their unchanged parameters and their losses ignored (the price of fusion).

**Host synchronisation.** Per-copy phases are Python values and every mask is built on the device from constant
0-d flags (and cached), so training steps and the forward-only steps of a measurement never wait for the device. As
in the ordinary LABPAL, the host reads the device twice per measurement: when the direction is decided (valid or
rejected) and when the parabola is judged (a step or none). With copies out of phase these reads happen at the
steps where any copy reaches one of those points: at most two per step.

**Checkpoints** are per copy (:meth:`FusedLABPAL.copy_state_dict`): besides its rows of the optimizer state a copy
saves its phase and the batches of its running measurement, taken from the fused closures under this assumption:
the fused closures are :class:`lsbench.optim.closure.BatchClosure` objects (of a ClosureFactory subclass whose
``loss`` returns the ``(K,)`` vector) whose ``inputs`` and ``targets`` are ``(K, B, ...)`` tensors with copy k's
batch at index k. A copy loaded at another position of another group (:meth:`FusedLABPAL.load_copy_state_dict`)
gets its batches back at that position: at its next step the stored fused closures are rebuilt with
``closure.replay`` from the copies' slices, so it continues bit-identically.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lsbench.fused.copies import (
    FusedClosure,
    FusedOptimizer,
    copy_dot,
    copy_norm,
    move_along,
    per_copy,
    select,
    set_along,
)
from lsbench.optim._linesearch import snapshot, to_device
from lsbench.optim.labpal import LABPAL, MODES, parabola

Value = float | Tensor
"""A hyperparameter: a Python float when every copy has the same value, else a ``(K,)`` tensor."""

PHASE = ("measuring", "count", "updates", "updates_since_measurement", "has_step", "history_len")
"""The per-copy control state, kept on the host (lists of K Python values), as the ordinary LABPAL keeps it."""

_CONTROL = ("approximation_batches", "sgd_steps", "estimator", "untrustworthy_updates", "averaging_window")
"""Hyperparameters (as the ordinary LABPAL derives them) that shape the shared loop and must agree in a group."""


def _reference(hparams: Mapping[str, Any], dtype: torch.dtype) -> LABPAL:
    """The ordinary LABPAL of one copy, on a dummy parameter.

    Building it applies every check of the ordinary constructor and yields its derived values (defaults, the number
    of approximation batches, the noise-adapted budget and schedule) from their one definition instead of a copy."""
    return LABPAL([torch.zeros(1, dtype=dtype, requires_grad=True)], **hparams)


class FusedLABPAL(FusedOptimizer):
    """LABPAL (SGD or NSGD variant) for K fused copies; see the module docstring.

    Args:
        params: the fused parameters, each of shape ``(K, ...)``.
        hparams: per copy, exactly the keyword arguments its ordinary :class:`~lsbench.optim.labpal.LABPAL` gets
            (the registry's ``fixed`` ``mode``, the resolved hyperparameters and ``total_steps``, ``batch_size``,
            ``training_set_size`` from the training context). ``mode`` must be the same for every copy.

    The class' :attr:`NAME` is ``"labpal"``; an instance's is the registry name of its mode (``"labpal_sgd"`` or
    ``"labpal_nsgd"``), so the base class checks the group's shared hyperparameters of that entry.

    Per copy (``(K,)`` vectors where they differ): ``update_step_adaptation``, ``momentum``, ``max_step_size``,
    ``measuring_step_size``, ``near_measuring_step_size``, ``direction_norm_bounds`` and ``epsilon``. A value
    all copies share stays a Python float, so the arithmetic is literally the ordinary optimizer's (a division by a
    Python float is a multiplication by its reciprocal on CUDA, a division by a tensor is not).
    """

    NAME = "labpal"

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        if not hparams:
            raise ValueError("a fused optimizer needs at least one copy")
        modes = {h.get("mode", "nsgd") for h in hparams}
        if len(modes) != 1 or not modes <= set(MODES):
            raise ValueError(f"labpal: mode must be one of {MODES} and the same for every fused copy, got {modes}")
        self.mode = modes.pop()
        self.NAME = f"labpal_{self.mode}"
        super().__init__(params, hparams)
        references = [_reference(h, self.dtype) for h in self.hparams]
        groups = [reference.param_groups[0] for reference in references]
        for name in _CONTROL:
            self._require_same(name, [group[name] for group in groups])
        self._require_same("the budget (total_steps, noise_factor)", [r.training_steps for r in references])
        self._require_same("the batch-size schedule", [r.schedule for r in references])
        first = groups[0]
        self.approximation_batches: int = first["approximation_batches"]
        self.sgd_steps: int = first["sgd_steps"]
        self.estimator: str = first["estimator"]
        self.untrustworthy_updates: int = first["untrustworthy_updates"]
        self.averaging_window: int = first["averaging_window"]
        self.schedule: list[tuple[int, int]] = references[0].schedule
        self.noise_factor: float = references[0].noise_factor
        self._training_steps: int = references[0].training_steps

        def value(values: Sequence[float], dtype: torch.dtype) -> Value:
            if all(v == values[0] for v in values):
                return float(values[0])
            return torch.tensor([float(v) for v in values], dtype=dtype).to(self.device)

        def hparam(name: str, dtype: torch.dtype | None = None) -> Value:
            return value([group[name] for group in groups], dtype or self.dtype)

        wide = torch.float64  # the parabola is fitted in float64 (see LABPAL._finish_measurement)
        self.update_step_adaptation = hparam("update_step_adaptation", wide)
        self.max_step_size = hparam("max_step_size", wide)
        self.momentum = hparam("momentum")
        self.epsilon = hparam("epsilon")
        self.epsilon_wide = hparam("epsilon", wide)
        self.near = hparam("near_measuring_step_size")
        self.far = hparam("measuring_step_size")
        self.near_wide = hparam("near_measuring_step_size", wide)
        self.far_wide = hparam("measuring_step_size", wide)
        self.norm_low = value([group["direction_norm_bounds"][0] for group in groups], self.dtype)
        self.norm_high = value([group["direction_norm_bounds"][1] for group in groups], self.dtype)
        self.has_momentum = [group["momentum"] != 0 for group in groups]

        self._flags = {flag: torch.full((), flag, dtype=torch.bool, device=self.device) for flag in (False, True)}
        self._masks: dict[tuple[bool, ...], Tensor] = {}
        copies, window = self.copies, self.averaging_window
        self.state = {
            "steps": 0,
            "k": 1,
            "schedule_index": 0,
            "loss_sum": self.zeros(),
            "loss_count": self.zeros(),
            "step_size": self.zeros(),
            "lr": self.zeros(),
            "direction_norm": torch.ones(copies, dtype=self.dtype, device=self.device),
            "history_steps": torch.zeros(copies, window, dtype=self.dtype, device=self.device),
            "history_lrs": torch.zeros(copies, window, dtype=self.dtype, device=self.device),
            # Allocated for every copy from the start, so that any copy's checkpoint carries every entry and loading
            # copies one after the other never drops one (FusedOptimizer.load_copy_state_dict keeps the saved keys).
            "line": [torch.zeros_like(p) for p in self.params],
            "direction": [torch.zeros_like(p) for p in self.params],
            "grad_sum": [torch.zeros_like(p) for p in self.params],
        }
        self.phase: dict[str, list[Any]] = {
            "measuring": [True] * copies,
            "count": [0] * copies,
            "updates": [0] * copies,
            "updates_since_measurement": [0] * copies,
            "has_step": [False] * copies,
            "history_len": [0] * copies,
        }
        self._closures: list[FusedClosure] = []
        self._pending: list[list[dict[str, Any]]] | None = None

    def _require_same(self, what: str, values: Sequence[Any]) -> None:
        if any(v != values[0] for v in values):
            raise ValueError(f"{self.NAME}: {what} must be the same for every fused copy, got {values}")

    def training_steps(self, steps: int) -> int:
        """The ordinary LABPAL's budget ``max(1, round(ε · total_steps))`` from the copies' ``total_steps``, as
        :func:`lsbench.optim.training_steps` reads it from the ordinary optimizer (``steps`` is not used)."""
        return self._training_steps

    # -- masks ------------------------------------------------------------------------------------------------

    def _mask(self, flags: Sequence[bool]) -> Tensor:
        """``flags`` as a ``(K,)`` boolean tensor, stacked from constant 0-d flags: no host-to-device copy (which
        would wait for the device), and cached since a group sees few distinct patterns."""
        key = tuple(flags)
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= 256:
                self._masks.clear()
            mask = self._masks[key] = torch.stack([self._flags[flag] for flag in key])
        return mask

    def _select(self, flags: Sequence[bool], when_true: Sequence[Tensor], when_false: Sequence[Tensor]) -> list[Tensor]:
        """Per copy, ``when_true`` where ``flags`` else ``when_false``; no selection when all flags agree."""
        if all(flags):
            return list(when_true)
        if not any(flags):
            return list(when_false)
        return select(self._mask(flags), when_true, when_false)

    def _where(self, flags: Sequence[bool], when_true: Tensor, when_false: Tensor) -> Tensor:
        """:meth:`_select` for one ``(K, ...)`` tensor."""
        return self._select(flags, [when_true], [when_false])[0]

    def _move(self, flags: Sequence[bool], direction: Sequence[Tensor], coefficients: Tensor) -> None:
        """``p += coefficients · direction`` for the flagged copies; the others keep their parameters bit for bit
        (also where their direction is not finite, which a zero coefficient would not guarantee)."""
        if all(flags):
            move_along(self.params, direction, coefficients)
            return
        moved = torch._foreach_add(self.params, [d * per_copy(coefficients, d) for d in direction])
        torch._foreach_copy_(self.params, select(self._mask(flags), moved, self.params))

    def _place(
        self, flags: Sequence[bool], origin: Sequence[Tensor], line: Sequence[Tensor], coefficients: Tensor
    ) -> None:
        """``p = origin + coefficients · line`` for the flagged copies, ``p = origin`` (exactly) for the others."""
        if all(flags):
            set_along(self.params, origin, line, coefficients)
            return
        if not any(flags):
            torch._foreach_copy_(self.params, list(origin))
            return
        moved = torch._foreach_add(list(origin), [d * per_copy(coefficients, d) for d in line])
        torch._foreach_copy_(self.params, select(self._mask(flags), moved, origin))

    # -- phases -----------------------------------------------------------------------------------------------

    def _start_measurement(self, c: int) -> None:
        self.phase["measuring"][c] = True
        self.phase["count"][c] = 0
        self.state["loss_sum"][c] = 0.0
        self.state["loss_count"][c] = 0.0

    def _start_training(self, c: int) -> None:
        self.phase["measuring"][c] = False
        self.phase["count"][c] = 0

    def _apply_schedule(self) -> None:
        """The shared batch-size schedule; when it fires every copy starts a new measurement (LABPAL's rule)."""
        state = self.state
        fired = False
        while (
            state["schedule_index"] < len(self.schedule) and state["steps"] >= self.schedule[state["schedule_index"]][0]
        ):
            state["k"] = self.schedule[state["schedule_index"]][1]
            state["schedule_index"] += 1
            fired = True
        if fired:
            self.phase["measuring"] = [True] * self.copies
            self.phase["count"] = [0] * self.copies
            state["loss_sum"].zero_()
            state["loss_count"].zero_()
            self._closures = []

    def _trusted_from(self) -> int:
        """See :meth:`lsbench.optim.labpal.LABPAL._trusted_from`."""
        return self.untrustworthy_updates + 2 if self.untrustworthy_updates > 0 else 0

    def _measurement_due(self, c: int) -> bool:
        trusted_from = self._trusted_from()
        if trusted_from > 0 and self.phase["updates"][c] == trusted_from:
            return True
        return self.phase["updates_since_measurement"][c] >= self.sgd_steps

    # -- step -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: FusedClosure) -> Tensor:
        """One LABPAL step of every copy on its own batch of the fused closure; returns the copies' losses ``(K,)``
        at the step's origin (see the module docstring for how copies in different phases share the step)."""
        self._resume(closure)
        self._apply_schedule()
        measuring, count = self.phase["measuring"], self.phase["count"]
        k = self.state["k"]
        for c in range(self.copies):
            if not measuring[c] and count[c] == 0 and self._measurement_due(c):
                self._start_measurement(c)
        for c in range(self.copies):
            count[c] += 1
        if any(measuring):
            self._closures.append(closure)
        # A copy needs a gradient in training and in the first k batches of a measurement; the rest of a measurement
        # only needs the loss. One fused backward pass serves every copy that needs one.
        needs_grad = [not m or n <= k for m, n in zip(measuring, count, strict=True)]
        updated = [False] * self.copies
        if any(needs_grad):
            losses = self.loss_and_grad(closure)
            grads = self.grads()
            if k > 1:
                self._accumulate(grads, needs_grad)
            turning = [g and n == k for g, n in zip(needs_grad, count, strict=True)]
            if any(turning):
                self._turn(grads, turning, updated)
        else:
            losses = self.loss(closure)
        # Copies still in this step's measurement (a rejection above reset the count) sum their finite losses.
        summing = [m and n > 0 for m, n in zip(measuring, count, strict=True)]
        if any(summing):
            finite = torch.isfinite(losses)
            use = finite if all(summing) else finite & self._mask(summing)
            self.state["loss_sum"] += torch.where(use, losses, torch.zeros_like(losses))
            self.state["loss_count"] += use
        finishing = [s and n == self.approximation_batches * k for s, n in zip(summing, count, strict=True)]
        if any(finishing):
            self._finish(finishing, updated)
        self._trim_closures()
        self.report(self.effective_lr, self._mask(updated))
        self.state["steps"] += 1
        return losses

    def _accumulate(self, grads: Sequence[Tensor], needs_grad: Sequence[bool]) -> None:
        """With k > 1, add this batch's gradient to the sums of the copies that take one; a copy's first batch of a
        group starts its sum (as :meth:`lsbench.optim._batches.BatchGroup.add_gradients`)."""
        count = self.phase["count"]
        first = [g and n == 1 for g, n in zip(needs_grad, count, strict=True)]
        adding = [g and n > 1 for g, n in zip(needs_grad, count, strict=True)]
        sums = self.state["grad_sum"]
        if all(first):
            self.state["grad_sum"] = [g.clone() for g in grads]
        elif all(adding):
            torch._foreach_add_(sums, list(grads))
        else:
            added = torch._foreach_add(sums, list(grads))
            self.state["grad_sum"] = self._select(first, grads, self._select(adding, added, sums))

    def _direction(self, grads: Sequence[Tensor], turning: Sequence[bool]) -> tuple[list[Tensor], Tensor, Tensor]:
        """The direction, its norm and the directional derivative of the turning copies (LABPAL._direction): the
        mean gradient of the batch group, plus momentum times the previous direction for copies with momentum."""
        k = self.state["k"]
        mean = torch._foreach_div(self.state["grad_sum"], float(k)) if k > 1 else list(grads)
        with_momentum = [t and m for t, m in zip(turning, self.has_momentum, strict=True)]
        if not any(with_momentum):
            norm = copy_norm(mean).clamp(min=self.epsilon)
            return mean, norm, -norm
        buffers = self.state["direction"]
        if isinstance(self.momentum, float):
            moved = torch._foreach_mul(buffers, self.momentum)
        else:
            moved = [b * per_copy(self.momentum, b) for b in buffers]
        torch._foreach_add_(moved, mean)
        self.state["direction"] = self._select(with_momentum, moved, buffers)
        direction = self._select(with_momentum, moved, mean)
        norm = copy_norm(direction).clamp(min=self.epsilon)
        slope = self._where(with_momentum, -copy_dot(mean, direction) / norm, -norm)
        return direction, norm, slope

    def _turn(self, grads: Sequence[Tensor], turning: Sequence[bool], updated: list[bool]) -> None:
        """The copies at the end of a batch group: a training update, or a measurement's direction decision."""
        phase, state = self.phase, self.state
        training = [t and not m for t, m in zip(turning, phase["measuring"], strict=True)]
        deciding = [t and m for t, m in zip(turning, phase["measuring"], strict=True)]
        direction, norm, slope = self._direction(grads, turning)
        if any(training):
            if self.mode == "nsgd":
                coefficients, effective_lr = -state["step_size"] / norm, state["step_size"] / norm
            else:
                coefficients, effective_lr = -state["lr"], state["lr"].clone()  # reported: no alias of the state
            self._move(training, direction, coefficients)
            self.effective_lr = self._where(training, effective_lr, self.effective_lr)
            for c in (c for c, flag in enumerate(training) if flag):
                phase["updates"][c] += 1
                phase["updates_since_measurement"][c] += 1
                phase["count"][c] = 0
                updated[c] = True
        if not any(deciding):
            return
        valid = (slope < 0) & torch.isfinite(norm) & (norm >= self.norm_low) & (norm <= self.norm_high)
        accepted = [d and v for d, v in zip(deciding, valid.tolist(), strict=True)]  # host sync: the decision
        if any(accepted):
            # The momentum buffer keeps changing in later updates; the line must stay fixed until the end.
            state["line"] = self._select(accepted, [d.clone() for d in direction], state["line"])
            state["direction_norm"] = self._where(accepted, norm, state["direction_norm"])
        for c in range(self.copies):
            if deciding[c] and not accepted[c]:  # rejected: LABPAL._reject_measurement
                if phase["has_step"][c]:
                    self._start_training(c)
                else:
                    self._start_measurement(c)

    def _finish(self, finishing: Sequence[bool], updated: list[bool]) -> None:
        """LABPAL._finish_measurement for the finishing copies, which all measured the last ``n_a·k`` batches."""
        phase, state = self.phase, self.state
        line, norm = state["line"], state["direction_norm"]
        origin = snapshot(self.params)
        loss_0 = state["loss_sum"] / state["loss_count"]
        closures = self._closures[-self.approximation_batches * state["k"] :]
        # ``-near / norm`` is what the ordinary optimizer writes; for a tensor norm Python evaluates it as
        # ``norm.reciprocal() * -near``, written out here so that a per-copy ``near`` rounds the same way.
        self._place(finishing, origin, line, norm.reciprocal() * -self.near)
        loss_near = torch.stack([self.loss(c) for c in closures]).nanmean(dim=0)
        self._place(finishing, origin, line, norm.reciprocal() * -self.far)
        loss_far = torch.stack([self.loss(c) for c in closures]).nanmean(dim=0)

        wide = (loss.double() for loss in (loss_0, loss_near, loss_far))
        a, b = parabola(self.estimator, *wide, self.near_wide, self.far_wide)  # type: ignore[arg-type]
        step = (-b / (2 * a)).clamp(max=self.max_step_size) * self.update_step_adaptation
        step = step.clamp(min=self.epsilon_wide).to(loss_0.dtype)
        found = ((a > 0) & (b < 0) & torch.isfinite(step)).tolist()  # host sync: did the parabola give a step
        recorded = [f and ok for f, ok in zip(finishing, found, strict=True)]
        if any(recorded):
            self._record(recorded, step, (step / norm).clamp(min=self.epsilon))
        stepping = [f and has for f, has in zip(finishing, phase["has_step"], strict=True)]
        # Copies without any step size yet go back to their origin (exactly) and measure again.
        self._place(stepping, origin, line, -state["step_size"] / norm)
        if any(stepping):
            effective_lr = state["lr"].clone() if self.mode == "sgd" else state["step_size"] / norm
            self.effective_lr = self._where(stepping, effective_lr, self.effective_lr)
        for c in (c for c, flag in enumerate(finishing) if flag):
            if stepping[c]:
                phase["updates"][c] += 1
                phase["updates_since_measurement"][c] = 1
                self._start_training(c)
                updated[c] = True
            else:
                self._start_measurement(c)

    def _record(self, recorded: Sequence[bool], step: Tensor, lr: Tensor) -> None:
        """LABPAL._record per copy: a measurement before the trusted period is used alone, later ones are averaged
        over the copy's last ``averaging_window`` measurements.

        The history is a ``(K, window)`` tensor per quantity, right-aligned: a copy's last ``history_len`` entries
        are its measurements, oldest first, so their mean reduces the same values in the same order as the
        ordinary optimizer's ``torch.stack(history).mean()``."""
        phase, state = self.phase, self.state
        trusted_from = self._trusted_from()
        alone = [r and u < trusted_from for r, u in zip(recorded, phase["updates"], strict=True)]
        averaged = [r and not a for r, a in zip(recorded, alone, strict=True)]
        for c in (c for c, flag in enumerate(recorded) if flag):
            phase["has_step"][c] = True
        if any(alone):
            state["step_size"] = self._where(alone, step, state["step_size"])
            state["lr"] = self._where(alone, lr, state["lr"])
        if not any(averaged):
            return
        window = self.averaging_window
        for key, new in (("history_steps", step), ("history_lrs", lr)):
            history = state[key]
            state[key] = self._where(averaged, torch.cat([history[:, 1:], new[:, None]], dim=1), history)
        lengths = phase["history_len"]
        for c in (c for c, flag in enumerate(averaged) if flag):
            lengths[c] = min(lengths[c] + 1, window)
        for key, history_key in (("step_size", "history_steps"), ("lr", "history_lrs")):
            history, current = state[history_key], state[key]
            state[key] = torch.stack(
                [history[c, window - lengths[c] :].mean() if averaged[c] else current[c] for c in range(self.copies)]
            )

    # -- stored batches ---------------------------------------------------------------------------------------

    def _trim_closures(self) -> None:
        """Keep the fused closures of the longest running measurement (every copy owns the last ``count``)."""
        needed = max((n for m, n in zip(self.phase["measuring"], self.phase["count"], strict=True) if m), default=0)
        self._closures = self._closures[len(self._closures) - needed :] if needed else []

    def _copy_snapshots(self, c: int) -> list[dict[str, Any]]:
        """The batches of copy c's running measurement as ``BatchClosure.snapshot()`` dictionaries of its slice
        (``inputs[c]``, ``targets[c]``; see the module docstring for the layout this assumes)."""
        if self._pending is not None:
            return copy.deepcopy(self._pending[c])
        owned = self.phase["count"][c] if self.phase["measuring"][c] else 0
        snapshots = []
        for closure in self._closures[len(self._closures) - owned :] if owned else []:
            if not hasattr(closure, "snapshot"):
                raise TypeError(
                    "a running fused LABPAL measurement can only be saved if its closures provide snapshot()/replay(); "
                    "build them with a lsbench.optim.ClosureFactory subclass"
                )
            saved = closure.snapshot()
            for key in ("inputs", "targets"):
                if saved[key].shape[0] != self.copies:
                    raise ValueError(
                        f"fused closures must hold {self.copies} copies' batches as (K, B, ...) {key}, "
                        f"got shape {tuple(saved[key].shape)}"
                    )
            snapshots.append(
                {
                    # A clone, not a view: saving a view would write the whole fused batch into every checkpoint.
                    "inputs": saved["inputs"][c].detach().clone(),
                    "targets": saved["targets"][c].detach().clone(),
                    "seed": saved["seed"],
                    "calls": saved["calls"],
                }
            )
        return snapshots

    def _resume(self, closure: FusedClosure) -> None:
        """After a load: rebuild the stored fused closures from the copies' saved slices with ``closure.replay``.

        Copy c's batches are the last ``len(saved)`` fused closures. A position before a copy's measurement began
        is filled with another copy's batch there (evaluated and ignored, as in the uninterrupted run). A fused
        closure has one seed: that of the first copy holding the position (all copies of one group saved the same;
        a model with random forward passes, e.g. dropout, only replays exactly when resumed as saved)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        length = max((len(saved) for saved in pending), default=0)
        if length == 0:
            self._closures = []
            return
        if not hasattr(closure, "replay"):
            raise TypeError("resuming a fused LABPAL measurement needs closures with replay(); use a ClosureFactory")
        closures = []
        for position in range(length):
            held = [
                saved[position - (length - len(saved))] if position >= length - len(saved) else None
                for saved in pending
            ]
            donor = next(entry for entry in held if entry is not None)
            entries = [entry if entry is not None else donor for entry in held]
            fused = {
                "inputs": torch.stack([entry["inputs"] for entry in entries]),
                "targets": torch.stack([entry["targets"] for entry in entries]),
                "seed": donor["seed"],
                "calls": max(entry["calls"] for entry in held if entry is not None),
            }
            closures.append(closure.replay(fused))  # type: ignore[attr-defined]
        self._closures = closures

    # -- checkpoints ------------------------------------------------------------------------------------------

    def copy_state_dict(self, k: int) -> dict[str, Any]:
        """Copy ``k``'s state: its rows of :attr:`state`, its phase and the batches of its running measurement."""
        saved = super().copy_state_dict(k)
        saved["phase"] = {name: self.phase[name][k] for name in PHASE}
        saved["closures"] = self._copy_snapshots(k)
        return saved

    def load_copy_state_dict(self, k: int, saved: Mapping[str, Any]) -> None:
        """Put a copy's saved state at position ``k``; its measurement's batches are rebuilt at the next step."""
        phase = saved["phase"]
        snapshots = to_device(list(saved["closures"]), self.device)
        expected = phase["count"] if phase["measuring"] else 0
        if len(snapshots) != expected:
            raise ValueError(f"a saved LABPAL copy measuring {expected} batches holds {len(snapshots)}")
        if self._pending is None:  # the other copies' running measurements, as slices to rebuild with this one
            self._pending = [self._copy_snapshots(c) for c in range(self.copies)]
        # The base class writes row k of the reports in place; the reported ``updated`` is a cached mask.
        self.effective_lr, self.updated = self.effective_lr.clone(), self.updated.clone()
        super().load_copy_state_dict(k, saved)
        for name in PHASE:
            self.phase[name][k] = phase[name]
        self._pending[k] = snapshots
        self._closures = []
