"""Measuring a model's loss along a line in parameter space, many step sizes per forward pass.

A line is ``θ(s) = θ₀ + s·d̂`` for a unit direction ``d̂`` and the step sizes ``s`` of a grid. The full-batch loss
along a line (Eq. 5.1) needs one forward pass of every sample at every step size: 167 step sizes x 4,000 images
per line in the thesis, 52 million inferences for a training of 10,000 steps. :class:`LineScanner` evaluates a chunk
of step sizes in one call: ``torch.func.functional_call`` under ``torch.func.vmap`` over the step-size axis turns the
chunk's parameter sets into batched matrix products and grouped convolutions over one shared input batch, instead
of one forward pass per step size and batch (:meth:`LineScanner.losses_looped`, kept as the reference the tests and
``benchmarks/line_scan.py`` compare against).

**What function is measured.** The objective the optimizer minimizes: per sample the cross-entropy of the model at
``θ(s)``, averaged over the data, plus the trainer's L2 term ``weight_decay / 2 · ‖θ(s)‖²`` (computed exactly from
``‖θ₀‖²``, ``θ₀·d̂`` and ``‖d̂‖ = 1``, so it adds no forward work). The measurement runs on a structural copy of the
model, so it never touches the trained model, its gradients or the global RNG: a linescan run trains exactly like
the same training without the measurement.

**BatchNorm.** The copy computes BatchNorm from the statistics of the batch being evaluated (training-mode
normalization) and has no running statistics (``torch.func.replace_all_batch_norm_modules_``). This measures the
function the optimizer sees -- every training step, line-search probes included, normalizes by batch statistics --
and it keeps the measurement from changing the running statistics used for evaluation, which the reference harness
updated with every one of its probe forwards (reference/algorithms.md §9). Batch statistics make a sample's loss
depend on its batch, so the data are evaluated in fixed batches of the run's batch size, in a fixed order (the same
at every step size and every line); the direction-defining batch is evaluated as the batch it was in training.
Dropout is off in the copy, so a line is a deterministic function of ``θ₀`` and ``d̂``.

**Numerics.** The measurement runs in float32 whatever the run's training precision, like evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lsbench.optim._linesearch import flat_dot
from lsbench.problems.evaluation import SequenceCrossEntropy

__all__ = ["DEFAULT_CHUNK", "DEFAULT_GROUP", "LineScanner", "MeasuredLine", "default_layout"]

DEFAULT_CHUNK = {"cpu": 16, "cuda": 32}
"""Step sizes per vmapped forward pass by device type (``benchmarks/line_scan.py`` measures the choice). Memory
grows linearly with the chunk. Convolutional networks of real size on a CPU get 1 instead (:func:`default_layout`)."""
DEFAULT_GROUP = 4
"""Batches per vmapped forward pass."""


def default_layout(model: nn.Module, device: torch.device) -> tuple[int, int]:
    """``(chunk, group)`` for ``model`` on ``device``.

    Under ``vmap`` a convolution with one weight per step size becomes a grouped convolution, which the CPU kernels
    run several times slower than the same work as separate convolutions once the network is of real size
    (ResNet-20 on 2 cores: 0.2x of the plain loop at chunk 16). Small networks (the digits CNN) are bound by the
    per-call overhead instead and gain from batching the step sizes (1.8x; stacking batches on top of that does not
    pay for convolutions on a CPU). So on a CPU a convolutional network of more than
    :data:`_LOOPED_CONV_PARAMETERS` parameters loops over the step sizes, a smaller one batches them one batch at a
    time; everything else, and every model on a GPU, batches both (``benchmarks/line_scan.py`` measures all
    layouts)."""
    chunk = DEFAULT_CHUNK.get(device.type, DEFAULT_CHUNK["cuda"])
    if device.type == "cpu" and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        large = sum(p.numel() for p in model.parameters()) > _LOOPED_CONV_PARAMETERS
        return (1 if large else chunk), 1
    return chunk, DEFAULT_GROUP


_LOOPED_CONV_PARAMETERS = 100_000


class MeasuredLine:
    """One measured line: device tensors, read to the host only when written (see :mod:`lsbench.lines.arrays`).

    Attributes:
        losses: [S] float64, the mean objective over the data at every step size.
        per_sample: [S, N] float32 per-sample losses (without the L2 term), or None when not kept.
    """

    __slots__ = ("losses", "per_sample")

    def __init__(self, losses: Tensor, per_sample: Tensor | None) -> None:
        self.losses = losses
        self.per_sample = per_sample


class LineScanner:
    """Evaluates the objective of ``model`` along lines, for the step sizes ``step_sizes``.

    Args:
        model: the trained model; only its structure is used (a copy is made once, see the module docstring).
        loss_fn: ``nn.CrossEntropyLoss()`` (mean) or :class:`~lsbench.problems.evaluation.SequenceCrossEntropy`.
        weight_decay: the trainer's L2 coefficient.
        step_sizes: the step sizes of every line.
        chunk: step sizes per vmapped forward pass; group: batches per vmapped forward pass (defaults:
            :func:`default_layout`). They change the speed and the float rounding (below 1e-5), never what is
            measured.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        weight_decay: float,
        step_sizes: Sequence[float],
        *,
        chunk: int | None = None,
        group: int | None = None,
    ) -> None:
        if not isinstance(loss_fn, nn.CrossEntropyLoss | SequenceCrossEntropy) or (
            isinstance(loss_fn, nn.CrossEntropyLoss)
            and (loss_fn.reduction != "mean" or loss_fn.weight is not None or loss_fn.label_smoothing)
        ):
            raise ValueError(f"line measurements support the problems' mean cross-entropy losses, not {loss_fn!r}")
        device = next(model.parameters()).device
        self.model = torch.func.replace_all_batch_norm_modules_(copy.deepcopy(model))
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.eval()
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.weight_decay = float(weight_decay)
        self.step_sizes = torch.tensor(list(step_sizes), dtype=torch.float32, device=device)
        default_chunk, default_group = default_layout(model, device)
        self.chunk = chunk or default_chunk
        if self.chunk < 1:
            raise ValueError(f"chunk: expected a positive integer, got {self.chunk}")
        self.group = group or default_group
        if self.group < 1:
            raise ValueError(f"group: expected a positive integer, got {self.group}")
        self._batched_forward = vmap(self._forward, in_dims=(0, None))
        self._forward_groups = vmap(self._forward, in_dims=(None, 0))
        self._grouped_forward = vmap(self._forward_groups, in_dims=(0, None))

    # -- the pieces --------------------------------------------------------------------------------------------

    def _forward(self, params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return functional_call(self.model, params, (inputs,))

    def _points(self, origin: Sequence[Tensor], direction: Sequence[Tensor], steps: Tensor) -> dict[str, Tensor]:
        """The parameters at every step size of ``steps`` [C], stacked: name -> [C, *shape]."""
        return {
            name: torch.addcmul(o.unsqueeze(0), steps.view(-1, *([1] * o.dim())), d.unsqueeze(0))
            for name, o, d in zip(self.names, origin, direction, strict=True)
        }

    @staticmethod
    def per_sample_losses(logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy per sample: ``logits`` [..., B, (T,) V] and ``targets`` [B, (T)] give [..., B] (the mean
        over positions for sequence targets, as :class:`SequenceCrossEntropy` averages)."""
        lead = logits.shape[: logits.dim() - targets.dim() - 1]
        expanded = targets.expand(*lead, *targets.shape)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), expanded.reshape(-1), reduction="none")
        losses = losses.view(*lead, *targets.shape)
        return losses.flatten(len(lead) + 1).mean(-1) if targets.dim() > 1 else losses

    def l2_terms(self, origin: Sequence[Tensor], direction: Sequence[Tensor]) -> Tensor:
        """``weight_decay / 2 · ‖θ₀ + s·d̂‖²`` at every step size, [S] float64 (zeros without weight decay)."""
        steps = self.step_sizes.double()
        if not self.weight_decay:
            return torch.zeros_like(steps)
        origin64, direction64 = [o.double() for o in origin], [d.double() for d in direction]
        norm2, cross = flat_dot(origin64, origin64), flat_dot(origin64, direction64)
        dir2 = flat_dot(direction64, direction64)
        return 0.5 * self.weight_decay * (norm2 + 2 * steps * cross + steps.square() * dir2)

    # -- measurements ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def losses(
        self, origin: Sequence[Tensor], direction: Sequence[Tensor], inputs: Tensor, targets: Tensor, batch_size: int
    ) -> Tensor:
        """Per-sample losses [S, N] (float32, no L2 term) of the samples ``inputs``/``targets`` at every step size,
        evaluated in consecutive batches of ``batch_size``.

        One call evaluates :attr:`chunk` step sizes on :attr:`group` batches: a second ``vmap`` over the batches
        keeps each batch's normalization statistics its own while the work per call grows, which is what pays for
        small models, whose single forward pass is all overhead. A last, smaller batch is evaluated on its own."""
        count = inputs.shape[0]
        if self.group == 1:  # plain batches: no vmap over a group of one
            blocks = [
                (inputs[start : start + batch_size], targets[start : start + batch_size], False)
                for start in range(0, count, batch_size)
            ]
        else:  # stacks of `group` batches [G, B, ...], then the smaller last batch on its own
            whole = count // batch_size * batch_size
            blocks = [
                (
                    inputs[start:stop].unflatten(0, (-1, batch_size)),
                    targets[start:stop].unflatten(0, (-1, batch_size)).flatten(0, 1),
                    True,
                )
                for start in range(0, whole, batch_size * self.group)
                for stop in [min(whole, start + batch_size * self.group)]
            ]
            if whole < count:
                blocks.append((inputs[whole:], targets[whole:], False))
        rows = []
        for first in range(0, len(self.step_sizes), self.chunk):
            params = self._points(origin, direction, self.step_sizes[first : first + self.chunk])
            if self.chunk == 1:  # one parameter set: plain forward passes (batched over the group only)
                params = {name: value[0] for name, value in params.items()}
            rows.append(torch.cat([self._block(params, x, y, grouped) for x, y, grouped in blocks], dim=1))
        return torch.cat(rows)

    def _block(self, params: dict[str, Tensor], x: Tensor, y: Tensor, grouped: bool) -> Tensor:
        """Per-sample losses [chunk, samples] of one block of samples at the chunk's parameter sets."""
        if self.chunk == 1:
            logits = (self._forward_groups if grouped else self._forward)(params, x).unsqueeze(0)
        else:
            logits = (self._grouped_forward if grouped else self._batched_forward)(params, x)
        return self.per_sample_losses(logits.flatten(1, 2) if grouped else logits, y)

    @torch.no_grad()
    def losses_looped(
        self, origin: Sequence[Tensor], direction: Sequence[Tensor], inputs: Tensor, targets: Tensor, batch_size: int
    ) -> Tensor:
        """The same as :meth:`losses`, one forward pass per step size and batch: the plain measurement the batched
        one is checked and benchmarked against."""
        out = torch.empty(len(self.step_sizes), inputs.shape[0], device=inputs.device)
        for i, step in enumerate(self.step_sizes):
            params = {name: o + step * d for name, o, d in zip(self.names, origin, direction, strict=True)}
            for start in range(0, inputs.shape[0], batch_size):
                x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
                out[i, start : start + batch_size] = self.per_sample_losses(self._forward(params, x), y)
        return out

    def line(
        self,
        origin: Sequence[Tensor],
        direction: Sequence[Tensor],
        inputs: Tensor,
        targets: Tensor,
        batch_size: int,
        *,
        keep_per_sample: bool,
    ) -> MeasuredLine:
        """The mean objective along the line over the samples (and, if asked, the per-sample losses)."""
        per_sample = self.losses(origin, direction, inputs, targets, batch_size)
        losses = per_sample.double().mean(dim=1) + self.l2_terms(origin, direction)
        return MeasuredLine(losses, per_sample if keep_per_sample else None)

    def gradient(self, origin: Sequence[Tensor], inputs: Tensor, targets: Tensor) -> list[Tensor]:
        """The gradient of the batch objective (mean loss plus L2 term) at ``origin``, as the trainer's closure
        computes it, but on the measurement's copy (no running statistics change, no ``.grad`` is written)."""

        def objective(params: dict[str, Tensor]) -> Tensor:
            loss = self.per_sample_losses(self._forward(params, inputs), targets).mean()
            if self.weight_decay:
                loss = loss + 0.5 * self.weight_decay * sum(p.square().sum() for p in params.values())
            return loss

        gradients = grad(objective)(dict(zip(self.names, (o.detach() for o in origin), strict=True)))
        return [gradients[name] for name in self.names]
