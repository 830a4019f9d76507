"""Per-copy tensor algebra and the base class of the fused (vectorised) optimizers.

A fused group trains K runs as one model (:mod:`lsbench.fused.model`): every parameter is one tensor whose leading
dimension is the copy, ``p[k]`` being run k's parameter in its ordinary shape. A line search needs the same few
operations as :mod:`lsbench.optim._linesearch` -- dot products, norms, moving along a direction -- but *per copy*:
every reduction runs over all dimensions but the first and returns a vector of K values, and every coefficient is a
vector of K values that scales its own copy. Nothing here synchronises with the host.

:class:`FusedOptimizer` is the fused counterpart of :class:`~lsbench.optim._linesearch.LineSearchOptimizer`. The
closure of a fused step returns the K copies' losses as a vector; the optimizer backpropagates their sum, which
gives every copy exactly its own gradient because no copy's loss depends on another copy's parameters. Each
hyperparameter is a vector of K values (one per run); the ones that change the *control flow* of an optimizer
(a schedule, a reset rule, a measurement period) cannot differ inside a group and are listed in
:data:`lsbench.fused.groups.SHARED_HPARAMS`, which the planner uses to group runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lsbench.fused.groups import SHARED_HPARAMS
from lsbench.optim._linesearch import to_device

FusedClosure = Callable[[], Tensor]
"""Runs the forward pass of one fused batch and returns the K copies' objectives, a vector of shape ``(K,)``."""


def rows(tensor: Tensor) -> Tensor:
    """``tensor`` as a ``(K, n)`` view: copy k's entries in row k."""
    return tensor.reshape(tensor.shape[0], -1)


def per_copy(values: Tensor, like: Tensor) -> Tensor:
    """A ``(K,)`` vector shaped to broadcast against ``like`` (``(K, ...)``): one value per copy."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def copy_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Per-copy dot product of two tensor lists of matching shapes, as if each copy's tensors were one vector.

    Like :func:`lsbench.optim._linesearch.flat_dot`: one ``_foreach_mul``, one ``cat`` of the ``(K, n)`` views
    and one row sum, whatever the number of tensors."""
    products = torch._foreach_mul(list(xs), list(ys))
    return torch.cat([rows(product) for product in products], dim=1).sum(dim=1)


def copy_norm(tensors: Sequence[Tensor]) -> Tensor:
    """Per-copy L2 norm over all tensors (``(K,)``)."""
    return torch.linalg.vector_norm(torch.cat([rows(t) for t in tensors], dim=1), dim=1)


def scale_along(tensors: Sequence[Tensor], coefficients: Tensor) -> list[Tensor]:
    """``coefficients[k] * t[k]`` for every tensor ``t`` (new tensors)."""
    return [t * per_copy(coefficients, t) for t in tensors]


def move_along(params: Sequence[Tensor], direction: Sequence[Tensor], coefficients: Tensor) -> None:
    """``params[k] += coefficients[k] * direction[k]`` for every tensor and copy."""
    torch._foreach_add_(list(params), scale_along(direction, coefficients))


def set_along(
    params: Sequence[Tensor], origin: Sequence[Tensor], direction: Sequence[Tensor], coefficients: Tensor
) -> None:
    """``params = origin + coefficients * direction`` per copy; a zero coefficient returns that copy exactly to
    its origin (see :func:`lsbench.optim._linesearch.set_along`)."""
    torch._foreach_copy_(list(params), list(origin))
    move_along(params, direction, coefficients)


def select(mask: Tensor, when_true: Sequence[Tensor], when_false: Sequence[Tensor]) -> list[Tensor]:
    """Per copy, the tensors of ``when_true`` where ``mask[k]`` else those of ``when_false`` (new tensors)."""
    return [torch.where(per_copy(mask, a), a, b) for a, b in zip(when_true, when_false, strict=True)]


class FusedOptimizer:
    """Base class of the fused optimizers: K runs' parameters, one hyperparameter vector per hyperparameter.

    Args:
        params: the fused parameters, each of shape ``(K, ...)``.
        hparams: one resolved hyperparameter mapping per copy (:meth:`lsbench.optim.OptimizerEntry.resolve`), with
            the training context's values (``total_steps`` …) added as the ordinary optimizer gets them.

    Subclasses set :attr:`NAME` (the registry name) and implement :meth:`step`. After every step they report, like
    the ordinary optimizers and without synchronising: :attr:`effective_lr` (``(K,)``), :attr:`updated`
    (``(K,)`` booleans) and the pass counters, which count fused passes (one per copy).

    Checkpoints are per copy (:meth:`copy_state_dict`, :meth:`load_copy_state_dict`): a run's optimizer state
    lives in its own checkpoint, so a run can resume in another group, at another position.
    """

    NAME = ""

    def __init__(self, params: Sequence[Tensor], hparams: Sequence[Mapping[str, Any]]) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("a fused optimizer needs parameters")
        self.copies = len(hparams)
        for p in self.params:
            if p.shape[0] != self.copies:
                raise ValueError(f"parameter of shape {tuple(p.shape)} does not hold {self.copies} copies")
        self.hparams = [dict(h) for h in hparams]
        for name in SHARED_HPARAMS.get(self.NAME, ()):
            values = {repr(h.get(name)) for h in self.hparams}
            if len(values) > 1:
                raise ValueError(f"{self.NAME}: {name} must be the same for every fused copy, got {sorted(values)}")
        reference = self.params[0]
        self.device, self.dtype = reference.device, reference.dtype
        self.forward_passes = 0
        self.backward_passes = 0
        self.effective_lr = self.zeros()
        self.updated = torch.zeros(self.copies, dtype=torch.bool, device=self.device)
        self.state: dict[str, Any] = {}
        """Optimizer state; every tensor in it has the copy as its leading dimension (see :meth:`copy_state_dict`)."""

    # -- hyperparameters -------------------------------------------------------------------------------------

    def vector(self, name: str) -> Tensor:
        """Hyperparameter ``name`` of every copy as a ``(K,)`` tensor in the parameters' dtype and device."""
        values = [float(h[name]) for h in self.hparams]
        return torch.tensor(values, dtype=self.dtype).to(self.device, non_blocking=True)

    def shared(self, name: str) -> Any:
        """A hyperparameter every copy has with the same value (listed in SHARED_HPARAMS, or checked here)."""
        values = [h[name] for h in self.hparams]
        if any(v != values[0] for v in values):
            raise ValueError(f"{self.NAME}: {name} differs between fused copies: {values}")
        return values[0]

    def zeros(self, dtype: torch.dtype | None = None) -> Tensor:
        return torch.zeros(self.copies, dtype=dtype or self.dtype, device=self.device)

    # -- closure evaluation ----------------------------------------------------------------------------------

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def loss_and_grad(self, closure: FusedClosure, accumulate: bool = False) -> Tensor:
        """The copies' losses ``(K,)`` with a backward pass of their sum (each copy gets its own gradient)."""
        if not accumulate:
            self.zero_grad()
        with torch.enable_grad():
            losses = closure()
            losses.sum().backward()
        self.forward_passes += 1
        self.backward_passes += 1
        return losses.detach()

    def loss(self, closure: FusedClosure) -> Tensor:
        """The copies' losses ``(K,)`` without gradients (a probe)."""
        with torch.no_grad():
            losses = closure()
        self.forward_passes += 1
        return losses.detach()

    def grads(self) -> list[Tensor]:
        """The parameters' gradients; a parameter without one gets zeros (it is then not moved by any update)."""
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def report(self, effective_lr: Tensor, updated: Tensor) -> None:
        self.effective_lr = effective_lr.detach()
        self.updated = updated.detach()

    def step(self, closure: FusedClosure) -> Tensor:
        """One step of every copy on its own batch; returns the copies' losses at the step's origin ``(K,)``."""
        raise NotImplementedError

    def training_steps(self, steps: int) -> int:
        """The budget the trainer runs (the same for every copy of a group); LABPAL's noise adaptation rescales
        it, as :func:`lsbench.optim.training_steps` does for the ordinary optimizer."""
        return steps

    # -- checkpoints -----------------------------------------------------------------------------------------

    def copy_state_dict(self, k: int) -> dict[str, Any]:
        """Copy ``k``'s state: every tensor of :attr:`state` at index k, and the pass counters."""
        return {
            "state": _index(self.state, k),
            "effective_lr": self.effective_lr[k].clone(),
            "updated": self.updated[k].clone(),
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
        }

    def load_copy_state_dict(self, k: int, saved: Mapping[str, Any]) -> None:
        """Put a copy's saved state (:meth:`copy_state_dict`) at position ``k``. All copies of a group resume
        at the same step, so the pass counters agree; the last loaded wins."""
        self.state = _put(self.state, to_device(saved["state"], self.device), k, self.copies)
        self.effective_lr[k] = saved["effective_lr"].to(self.device)
        self.updated[k] = saved["updated"].to(self.device)
        self.forward_passes = saved["forward_passes"]
        self.backward_passes = saved["backward_passes"]


def _index(value: Any, k: int) -> Any:
    """``value`` with every tensor replaced by a clone of its row k (dicts and lists walked, the rest copied)."""
    if isinstance(value, Tensor):
        return value[k].detach().clone()
    if isinstance(value, dict):
        return {key: _index(item, k) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_index(item, k) for item in value)
    return copy.deepcopy(value)


def _put(current: Any, saved: Any, k: int, copies: int) -> Any:
    """``current`` with row k of every tensor set from ``saved``; a tensor missing from ``current`` is created
    (zeros for the other copies), so a fresh optimizer can load its copies one after the other."""
    if isinstance(saved, Tensor):
        if not isinstance(current, Tensor):
            current = saved.new_zeros((copies, *saved.shape))
        current[k] = saved
        return current
    if isinstance(saved, dict):
        current = current if isinstance(current, dict) else {}
        return {key: _put(current.get(key), item, k, copies) for key, item in saved.items()}
    if isinstance(saved, list | tuple):
        items = list(current) if isinstance(current, list | tuple) else [None] * len(saved)
        return type(saved)(_put(c, s, k, copies) for c, s in zip(items, saved, strict=True))
    return copy.deepcopy(saved)
