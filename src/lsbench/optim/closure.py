"""Closures that re-evaluate one fixed batch deterministically.

A line search evaluates the loss of one batch several times at different parameters. For the measurements to
lie on one function, every evaluation of a step must see the same batch and the same random numbers (dropout
masks), and the extra "probe" forward passes must not leave traces in the model: in ``train()`` mode a
BatchNorm layer updates its running statistics on every forward pass, so probes at shifted parameters would
corrupt the statistics used later for evaluation. The published implementations let that happen.

:class:`ClosureFactory` builds :class:`BatchClosure` objects that guarantee both:

* each closure forks the global RNG and seeds it with its own seed, so dropout masks repeat across calls and
  the training process' RNG stream is not advanced by probes;
* the *first* call of a closure is an ordinary training forward pass (running statistics update exactly as in
  SGD); every later call -- a probe -- saves the normalization buffers before the forward pass and copies them
  back afterwards, so probes leave them bit-for-bit unchanged. Saving and restoring is two ``_foreach_copy_``
  launches over a few small buffers, cheaper than switching layers in and out of eval mode (which would also
  change the function being measured).

A closure can be serialized with :meth:`BatchClosure.snapshot` and rebuilt with :meth:`BatchClosure.replay`; LABPAL
uses this to keep the batches of a running measurement in its ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase


class ClosureFactory:
    """Makes per-batch closures for one model and loss.

    ``weight_decay`` adds the L2 term ``weight_decay / 2 * Σ‖θ‖²`` over all trainable parameters to the loss
    (the PAL chapter's regularization), so that line searches measure the same objective that is minimized.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, weight_decay: float = 0.0) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.weight_decay = weight_decay
        self._decayed = [p for p in model.parameters() if p.requires_grad]
        self._norm_buffers = [b for m in model.modules() if isinstance(m, _NormBase) for b in m.buffers(recurse=False)]
        self._saved_buffers = [b.detach().clone() for b in self._norm_buffers]

    def __call__(self, inputs: Tensor, targets: Tensor, seed: int | None = None) -> BatchClosure:
        return BatchClosure(self, inputs, targets, seed)

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """The objective on one batch: mean loss plus the optional L2 term."""
        loss = self.loss_fn(self.model(inputs), targets)
        if self.weight_decay:
            squared_norm = torch.stack(torch._foreach_norm(self._decayed)).square().sum()
            loss = loss + 0.5 * self.weight_decay * squared_norm
        return loss

    def save_norm_statistics(self) -> None:
        if self._norm_buffers:
            torch._foreach_copy_(self._saved_buffers, self._norm_buffers)

    def restore_norm_statistics(self) -> None:
        if self._norm_buffers:
            # Through ``.data``: a graph built before the probe (e.g. a mean over several batches whose backward
            # comes later) saved these buffers, and a visible in-place copy would fail its version check.
            torch._foreach_copy_([buffer.data for buffer in self._norm_buffers], self._saved_buffers)


class BatchClosure:
    """``closure()`` evaluates the factory's objective on one fixed batch; see the module docstring."""

    def __init__(self, factory: ClosureFactory, inputs: Tensor, targets: Tensor, seed: int | None) -> None:
        self.factory = factory
        self.inputs = inputs
        self.targets = targets
        self.seed = seed
        self.calls = 0

    def __call__(self) -> Tensor:
        probe = self.calls > 0
        self.calls += 1
        if probe:
            self.factory.save_norm_statistics()
        if self.seed is None:
            loss = self.factory.loss(self.inputs, self.targets)
        else:
            device = self.inputs.device
            on_cuda = device.type == "cuda"
            with torch.random.fork_rng(devices=[device] if on_cuda else []):
                # Seed only the generators this batch uses: torch.manual_seed would also walk every CUDA device
                # (and, without CUDA, record a stack trace for lazy seeding) on every call.
                torch.default_generator.manual_seed(self.seed)
                if on_cuda:
                    torch.cuda.default_generators[device.index or 0].manual_seed(self.seed)
                loss = self.factory.loss(self.inputs, self.targets)
        if probe:
            self.factory.restore_norm_statistics()
        return loss

    def snapshot(self) -> dict[str, Any]:
        """What is needed to rebuild this closure after a restart (the batch, its seed, its call count)."""
        return {"inputs": self.inputs, "targets": self.targets, "seed": self.seed, "calls": self.calls}

    def replay(self, snapshot: dict[str, Any]) -> BatchClosure:
        """A closure of the same factory over a saved batch (see :meth:`snapshot`)."""
        closure = BatchClosure(
            self.factory,
            snapshot["inputs"].to(self.inputs.device),
            snapshot["targets"].to(self.targets.device),
            snapshot["seed"],
        )
        closure.calls = snapshot["calls"]
        return closure
