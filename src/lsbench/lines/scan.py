"""The measurement of a linescan run, as the trainer drives it: :class:`LineScan`.

At every measured step t (every ``every``-th step) the trainer hands over the parameters before the optimizer's step
and the batch that defined it; after the step :class:`LineScan` takes the update the optimizer actually made,
``u = θ_after − θ_before``, and measures along its unit direction ``d̂ = u/‖u‖`` from ``θ_before`` (s = 0):

* for SGD this is the thesis' line exactly: ``d̂ = −g_B/‖g_B‖`` (with momentum ``−m/‖m‖``) and the optimizer's own
  step ``‖u‖ = λ‖g_B‖`` (``λ‖m‖``) lies at positive s (Sec. 5.3); any other registered optimizer defines its line the
  same way, by the step it takes;
* a step that does not move the parameters (LABPAL while it measures, a line search that rejects) has no update
  direction: its line is measured along the negative mini-batch gradient instead, and ``step_taken`` is 0.

The angle between ``d̂`` and the direction-defining batch's gradient at ``θ_after`` tells how exact the step was as a
line search on that batch (thesis Figure 4.2): 90° at a minimum of the batch loss along the line, more for a step
that stopped short of it (the loss still falls along d̂), less for one beyond it.

The direction-defining batch's gradients at ``θ_before`` and ``θ_after`` are computed on the measurement's model copy
(two forward and backward passes per line, nothing against the line itself): an optimizer's ``.grad`` after its step
may belong to a probe point, and this keeps the trained model untouched. No number is read to the host per line: the
measured values stay device tensors until :class:`~lsbench.lines.arrays.LineWriter` appends a block of lines.

See :mod:`lsbench.lines.measure` for the function that is measured, BatchNorm included.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from lsbench.lines.arrays import ARRAYS_DIR, LineWriter
from lsbench.lines.measure import LineScanner
from lsbench.lines.settings import ScanSettings
from lsbench.optim._linesearch import flat_dot, flat_norm
from lsbench.problems import Problem
from lsbench.problems.sampling import BatchSampler, DataSplit, derive_seed
from lsbench.runs.spec import RunSpec
from lsbench.train.precision import numerics

__all__ = ["LineScan", "measured_data"]


def measured_data(problem: Problem, settings: ScanSettings, seed: int) -> DataSplit:
    """The data set whose loss a line measures: the training set (unaugmented) or the validation set, or a fixed
    random subset of ``settings.samples`` of it, drawn from the run's seed and kept in its original order.

    Raises ValueError for data that is not held on the device (streamed ImageNet) or a subset larger than the set."""
    if settings.data == "train":
        if not isinstance(problem.train, BatchSampler):
            raise ValueError(f"linescan: {problem.spec.name} streams its training data; lines need it on the device")
        data = problem.train.dataset()
    else:
        if not isinstance(problem.validation, DataSplit):
            raise ValueError(f"linescan: {problem.spec.name} streams its validation data; lines need it on the device")
        data = problem.validation
    if settings.samples is None:
        return data
    if settings.samples > len(data):
        raise ValueError(
            f"linescan: samples {settings.samples} is more than the {len(data)} of the {settings.data} set"
        )
    generator = torch.Generator().manual_seed(derive_seed(seed, "linescan"))
    chosen = torch.randperm(len(data), generator=generator)[: settings.samples].sort().values.to(data.targets.device)
    return DataSplit(data.inputs[chosen], data.targets[chosen])


class LineScan:
    """Measures the lines of one run into ``out_dir/lines.zarr`` (see the module docstring)."""

    def __init__(self, run: RunSpec, problem: Problem, out_dir: str | os.PathLike[str]) -> None:
        self.run = run
        self.settings = ScanSettings(**run.linescan)
        self.data = measured_data(problem, self.settings, run.seed)
        self.batch_size = run.batch_size
        self.params = [p for p in problem.model.parameters() if p.requires_grad]
        self.scanner = LineScanner(problem.model, problem.loss_fn, run.weight_decay, self.settings.step_sizes)
        self.writer = LineWriter(
            os.path.join(out_dir, ARRAYS_DIR),
            step_sizes=self.settings.step_sizes,
            samples=len(self.data),
            batch_size=run.batch_size,
            per_sample=self.settings.per_sample,
            attrs={"run": run.to_dict()},
        )

    def due(self, step: int) -> bool:
        """Whether step ``step`` (1-based) is measured."""
        return step % self.settings.every == 0

    def origin(self) -> list[Tensor]:
        """A copy of the parameters before the step (s = 0 of its line)."""
        return [p.detach().clone() for p in self.params]

    def measure(self, step: int, origin: list[Tensor], inputs: Tensor, targets: Tensor) -> None:
        """Measure the line of step ``step``, whose update went from ``origin`` to the current parameters and was
        defined by the batch ``inputs``/``targets``."""
        with torch.no_grad(), numerics("fp32"):
            update = torch._foreach_sub([p.detach() for p in self.params], origin)
            step_taken = flat_norm(update)
        with numerics("fp32"):
            gradient = self.scanner.gradient(origin, inputs, targets)
            after = self.scanner.gradient([p.detach() for p in self.params], inputs, targets)
        with torch.no_grad(), numerics("fp32"):
            grad_norm = flat_norm(gradient)
            moved = step_taken > 0
            # d̂ = u/‖u‖, or -g/‖g‖ for a step that did not move; selected on the device, no host read.
            update_scale = torch.where(moved, 1 / step_taken, 0.0)
            gradient_scale = torch.where(moved, 0.0, -1 / grad_norm)
            direction = [
                u * update_scale.to(u.dtype) + g * gradient_scale.to(g.dtype)
                for u, g in zip(update, gradient, strict=True)
            ]
            slope = flat_dot(gradient, direction)
            cosine = flat_dot(after, direction) / flat_norm(after)
            angle = torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))
            keep = self.settings.per_sample
            full = self.scanner.line(
                origin, direction, self.data.inputs, self.data.targets, self.batch_size, keep_per_sample=keep
            )
            batch = self.scanner.line(origin, direction, inputs, targets, len(targets), keep_per_sample=keep)
        line: dict[str, Any] = {
            "step": step,
            "full_loss": full.losses,
            "batch_loss": batch.losses,
            "grad_norm": grad_norm,
            "batch_slope": slope,
            "step_taken": step_taken,
            "angle": angle,
        }
        if keep:
            line.update(per_sample=full.per_sample.half(), batch_per_sample=batch.per_sample.half())
        self.writer.add(line)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records: the rows on disk, after appending every buffered line."""
        return {"rows": self.writer.flush()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: lines measured after it are dropped (they are measured again)."""
        self.writer.truncate(int(state["rows"]))

    def start(self) -> None:
        """A fresh start: lines of an attempt that died before its first checkpoint are dropped."""
        self.writer.truncate(0)

    def flush(self) -> int:
        return self.writer.flush()
