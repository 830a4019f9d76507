"""Shared machinery of the line-search optimizers.

Every line search in lsbench needs the same few operations on a *list* of parameter tensors: global dot products
and norms, moving the parameters along a direction, snapshot/restore of the line origin, and calling the closure
with or without a backward pass while counting forward and backward passes. They live here once, built on the
``torch._foreach_*`` kernels so that one call touches all tensors, and all scalars stay 0-d tensors on the
parameters' device: nothing in here synchronizes with the host.

:class:`LineSearchOptimizer` is the common base class. It keeps the optimizer-wide state (step counter, pass
counters, the last effective learning rate) in one dictionary outside ``self.state``, because
``Optimizer.load_state_dict`` casts every tensor it finds in per-parameter state to the parameter's dtype, which
would turn a boolean "updated" flag or integer batch targets into floats.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

Closure = Callable[[], Tensor]


def flat_norm(tensors: Sequence[Tensor]) -> Tensor:
    """Global L2 norm over all tensors, as if they were concatenated into one vector (0-d tensor)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


def flat_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Global dot product of two tensor lists of matching shapes (0-d tensor).

    Three operations whatever the number of tensors: one ``_foreach_mul`` for the products, one ``cat`` of their
    flat views and one ``sum``. A ``vdot`` per tensor pair would launch one reduction per parameter tensor (59 for
    ResNet-20, 364 for DenseNet-121), each too small to fill a GPU. The price is two temporary vectors of the size
    of the parameters.
    """
    xs, ys = list(xs), list(ys)
    if len(xs) != len(ys):
        raise ValueError(f"flat_dot: {len(xs)} tensors against {len(ys)}")
    for x, y in zip(xs, ys, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"flat_dot: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
    products = torch._foreach_mul(xs, ys)
    return torch.cat([product.reshape(-1) for product in products]).sum()


def snapshot(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Detached copies of ``tensors``, e.g. the line origin θ₀."""
    return [t.detach().clone() for t in tensors]


def restore(tensors: Sequence[Tensor], saved: Sequence[Tensor]) -> None:
    """Copy ``saved`` back into ``tensors`` in place (exactly: no arithmetic, so the origin is bit-identical)."""
    torch._foreach_copy_(list(tensors), list(saved))


def move_along(params: Sequence[Tensor], direction: Sequence[Tensor], coefficient: Tensor | float) -> None:
    """``params += coefficient * direction`` for every tensor; ``coefficient`` may be a 0-d tensor."""
    torch._foreach_add_(list(params), torch._foreach_mul(list(direction), coefficient))


def set_along(
    params: Sequence[Tensor],
    origin: Sequence[Tensor],
    direction: Sequence[Tensor],
    coefficient: Tensor | float,
) -> None:
    """``params = origin + coefficient * direction``: a position on the line measured from its origin.

    Measuring every probe from the saved origin (instead of moving relative to the last probe) keeps rounding
    errors from accumulating along a line search and makes a zero coefficient return exactly to the origin.
    """
    restore(params, origin)
    move_along(params, direction, coefficient)


class LineSearchOptimizer(Optimizer):
    """Base class: one parameter group, closure evaluation with pass counters, and step reporting.

    Closure contract (the same for every optimizer in lsbench): ``loss = opt.step(closure)`` is called once per
    sampled batch. ``closure()`` runs the forward pass on that step's fixed batch and returns the mean loss as a
    0-d tensor. It neither zeroes gradients nor calls ``backward``: the optimizer does both when it needs a
    gradient. Every call of one closure must see the same function (same batch, same dropout masks); see
    :class:`lsbench.optim.closure.ClosureFactory`, which also keeps probe evaluations from changing BatchNorm
    running statistics.

    After every ``step`` the optimizer reports, without synchronizing with the host:

    * :attr:`effective_lr` -- a 0-d tensor, the learning rate an SGD step of the same length would have used;
    * :attr:`updated` -- a 0-d boolean tensor, whether the parameters moved in this step;
    * :attr:`forward_passes` and :attr:`backward_passes` -- Python counters since construction.

    Line searches move all parameters along one global direction, so only a single parameter group is
    supported.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} supports exactly one parameter group, got {len(self.param_groups)}"
            )
        self.shared: dict[str, Any] = {
            "steps": 0,
            "forwards": 0,
            "backwards": 0,
            "effective_lr": self._scalar(0.0),
        }
        self._make_flags()
        self.shared["updated"] = self._flags[False]

    def _make_flags(self) -> None:
        """Constant 0-d booleans on the parameters' device, so reporting an update never allocates or syncs."""
        device = self.shared["effective_lr"].device
        self._flags = {value: torch.full((), value, dtype=torch.bool, device=device) for value in (False, True)}

    # -- parameters and closure evaluation ---------------------------------------------------------------------

    @property
    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    def _scalar(self, value: float) -> Tensor:
        """A 0-d tensor on the parameters' device, in their floating dtype (float64 problems stay exact).

        Made by a fill kernel that takes ``value`` as its argument: ``torch.tensor(value, device=cuda)`` would copy
        from pageable host memory, which blocks the host until the device has caught up.
        """
        reference = self._params[0] if self._params else torch.zeros(())
        dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
        return torch.full((), value, dtype=dtype, device=reference.device)

    def _params_with_grad(self) -> tuple[list[Tensor], list[Tensor]]:
        """Parameters that received a gradient and those gradients; parameters without one are never moved."""
        params = [p for p in self._params if p.grad is not None]
        return params, [p.grad for p in params]

    def _zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    def _loss_and_grad(self, closure: Closure, accumulate: bool = False) -> Tensor:
        """Evaluate the closure with a backward pass; gradients are zeroed first unless ``accumulate``."""
        if not accumulate:
            self._zero_grad()
        with torch.enable_grad():
            loss = closure()
            loss.backward()
        self.shared["forwards"] += 1
        self.shared["backwards"] += 1
        return loss.detach()

    def _loss(self, closure: Closure) -> Tensor:
        """Evaluate the closure without gradients (a probe)."""
        with torch.no_grad():
            loss = closure()
        self.shared["forwards"] += 1
        return loss.detach()

    def _report(self, effective_lr: Tensor, updated: Tensor) -> None:
        self.shared["effective_lr"] = effective_lr.detach()
        self.shared["updated"] = updated.detach()
        self.shared["steps"] += 1

    # -- reporting --------------------------------------------------------------------------------------------

    @property
    def effective_lr(self) -> Tensor:
        return self.shared["effective_lr"]

    @property
    def updated(self) -> Tensor:
        return self.shared["updated"]

    @property
    def forward_passes(self) -> int:
        return self.shared["forwards"]

    @property
    def backward_passes(self) -> int:
        return self.shared["backwards"]

    # -- checkpointing ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["shared"] = copy.deepcopy(self._shared_for_saving())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        shared = state_dict.pop("shared")
        super().load_state_dict(state_dict)
        device = self._params[0].device if self._params else torch.device("cpu")
        self.shared = to_device(copy.deepcopy(shared), device)
        self._make_flags()
        self._after_load_shared()

    def _shared_for_saving(self) -> dict[str, Any]:
        """The optimizer-wide state to save; subclasses replace what cannot be deep-copied."""
        return self.shared

    def _after_load_shared(self) -> None:
        """Hook for subclasses that keep derived, unsaved state."""


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    return value
