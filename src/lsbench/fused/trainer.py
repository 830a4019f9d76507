"""Training a fused group: K runs of one problem as one model, each run with its own checkpoint and results.

:func:`train_group` is :func:`lsbench.train.train` for K runs at once. The runs must be compatible
(:func:`lsbench.fused.groups.group_key`); each is built as it would be alone -- its own model initialisation and its
own sampler from its own seed -- and the K models are fused into one (:mod:`lsbench.fused.model`), trained by one
vectorised optimizer (:mod:`lsbench.fused.optim`) on a batch that stacks every run's own batch. Every copy's loss
is kept separate, so every copy's gradient and update are exactly those of the run trained alone (up to the
rounding of fused kernels).

What each run keeps for itself, as a run trained alone does:

* **evaluation points**, from the step sums kept per copy on the device (one host synchronisation per evaluation
  point for the whole group) and a fused evaluation that feeds every copy the same validation and test batches;
* **divergence**: a copy whose step loss was not finite is noticed at the next evaluation point, recorded as
  diverged with its first bad step, and frozen -- its outputs are written then and nothing of it is read again.
  It stays in the fused tensors (taking it out would rebuild the model); its numbers cannot reach the other
  copies, whose losses, gradients and updates never involve it;
* **checkpoints**: every run's directory gets its own checkpoint (its model, its slice of the optimizer state, its
  sampler, its sums and history), marked as written by a fused group. A group resumes every run from its own
  checkpoint, and a run can continue in another group (at another position) or alone as a group of one;
* **outputs**: ``result.json``, ``metrics.jsonl`` and ``final_model.pt`` exactly as :func:`lsbench.train.train`
  writes them. A run's ``elapsed`` is the group's wall time: the runs shared the device for all of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lsbench.fused.copies import rows
from lsbench.fused.groups import group_key
from lsbench.fused.model import FusedModel, copy_losses, fuse_models
from lsbench.fused.optim import build_fused_optimizer
from lsbench.optim import ClosureFactory, StepReport, TrainingContext
from lsbench.problems import build_problem
from lsbench.problems.evaluation import split_sums
from lsbench.problems.sampling import EvalSplit
from lsbench.train.checkpoint import load_checkpoint, save_checkpoint
from lsbench.train.precision import autocast, check_precision_supported, numerics
from lsbench.train.trainer import (
    FUSED_CHECKPOINT,
    EvalPoint,
    Status,
    StepSums,
    TrainConfig,
    TrainResult,
    check_checkpoint,
    deterministic_algorithms,
    eval_point,
    write_outputs,
)

__all__ = ["FusedClosures", "FusedGroup", "evaluate_copies", "train_group"]

OnEval = Callable[[EvalPoint], None] | None
OnResult = Callable[[TrainResult], None] | None


class FusedClosures(ClosureFactory):
    """Closures over fused batches: ``inputs`` ``(K, B, ...)`` and ``targets`` ``(K, B)``; a closure returns the K
    copies' objectives ``(K,)``, each its own mean loss plus its own L2 term, as a run's closure alone would.

    Probes save and restore the fused BatchNorm buffers like :class:`~lsbench.optim.ClosureFactory` does."""

    def __init__(
        self, model: FusedModel, loss_fn: nn.Module, weight_decay: float, precision: str, device: torch.device
    ) -> None:
        super().__init__(model, loss_fn, weight_decay)
        self._norm_buffers = model.norm_buffers()
        self._saved_buffers = [buffer.detach().clone() for buffer in self._norm_buffers]
        self.precision = precision
        self.device = device

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        with autocast(self.precision, self.device):
            losses = copy_losses(self.loss_fn, self.model(inputs), targets)
            if self.weight_decay:
                # As the single closure sums the squared norms of the parameter tensors, per copy.
                squared_norm = torch.stack([rows(p).norm(dim=1) for p in self._decayed]).square().sum(dim=0)
                losses = losses + 0.5 * self.weight_decay * squared_norm
        return losses.float() if self.precision == "bf16" else losses


@torch.no_grad()
def evaluate_copies(model: FusedModel, loss_fn: nn.Module, data: EvalSplit) -> list[tuple[float, float]]:
    """``(mean loss, accuracy)`` of every copy on all of ``data`` in eval mode, as
    :func:`lsbench.problems.evaluate` computes it for one model: every copy sees the same chunks, the sums stay on
    the device and are read once."""
    copies = model.copies

    def score(inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        shared_inputs = inputs.unsqueeze(0).expand(copies, *inputs.shape)
        shared_targets = targets.unsqueeze(0).expand(copies, *targets.shape)
        outputs = model(shared_inputs)
        loss = copy_losses(loss_fn, outputs, shared_targets).double() * targets.numel()
        return loss, (outputs.argmax(dim=-1) == shared_targets).reshape(copies, -1).sum(dim=1)

    loss_sum, correct, count = split_sums(model, data, score, data.eval_batch_size)
    assert correct is not None
    values = torch.stack([loss_sum, correct.double()], dim=1).tolist()
    return [(loss / count, hits / count) for loss, hits in values]


class _Copy:
    """What one run of the group keeps for itself."""

    def __init__(self, config: TrainConfig, out_dir: Path | None, on_eval: OnEval, on_result: OnResult) -> None:
        self.config = config
        self.out_dir = out_dir
        self.on_eval = on_eval
        self.on_result = on_result
        self.history: list[EvalPoint] = []
        self.elapsed_before = 0.0
        self.resumed_from_step: int | None = None
        self.result: TrainResult | None = None

    @property
    def active(self) -> bool:
        return self.result is None


class FusedGroup:
    """The state of a fused group between steps: what the runs' checkpoints hold."""

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        out_dirs: Sequence[Path | None],
        on_eval: Sequence[OnEval],
        on_result: Sequence[OnResult] | None = None,
    ) -> None:
        first = configs[0]
        keys = {group_key(config.run) for config in configs}
        if None in keys:
            [alone] = [c.run for c in configs if group_key(c.run) is None][:1]
            raise ValueError(f"run {alone.run_id} ({alone.problem}, {alone.optimizer}, {alone.kind}) cannot be fused")
        if len(keys) > 1:
            raise ValueError("the runs of a fused group must share problem, budget, batch size and optimizer settings")
        for config in configs:
            if (config.device, config.checkpoint_every, config.data_dir) != (
                first.device,
                first.checkpoint_every,
                first.data_dir,
            ):
                raise ValueError("the runs of a fused group must share device, checkpoint interval and data")
        run = first.run
        self.device = torch.device(first.device)
        self.checkpoint_every = first.checkpoint_every
        results = on_result if on_result is not None else [None] * len(configs)
        self.copies = [_Copy(*each) for each in zip(configs, out_dirs, on_eval, results, strict=True)]
        self.problems = [
            build_problem(
                c.run.problem,
                seed=c.run.seed,
                device=self.device,
                batch_size=c.run.batch_size,
                data_dir=c.data_dir,
                split=c.run.split,
            )
            for c in configs
        ]
        problem = self.problems[0]
        self.model = fuse_models([p.model for p in self.problems])
        self.loss_fn = problem.loss_fn
        context = TrainingContext(run.steps, problem.train.batch_size, problem.train_size)
        hparams = [c.run.hparams for c in configs]
        self.optimizer = build_fused_optimizer(run.optimizer, list(self.model.parameters()), hparams, context)
        self.total_steps = self.optimizer.training_steps(run.steps)
        self.closures = FusedClosures(self.model, self.loss_fn, run.weight_decay, run.precision, self.device)
        self.sums = StepSums(self.device, len(configs))
        self.eval_every = run.eval_every
        self.step = 0
        self.session_start = time.perf_counter()

    def elapsed(self, copy: _Copy) -> float:
        return copy.elapsed_before + time.perf_counter() - self.session_start

    # -- checkpoints ---------------------------------------------------------------------------------------

    def copy_state_dict(self, k: int) -> dict[str, Any]:
        copy = self.copies[k]
        return {
            FUSED_CHECKPOINT: True,
            "config": copy.config.to_dict(),
            "step": self.step,
            "model": self.model.copy_state_dict(k),
            "optimizer": self.optimizer.copy_state_dict(k),
            "sampler": self.problems[k].train.state_dict(),
            "sums": self.sums.copy_state_dict(k),
            "history": list(copy.history),
            "elapsed": self.elapsed(copy),
        }

    def resume(self) -> None:
        """Continue every run from its newest readable checkpoint; all or none of them must have one, at one step."""
        loaded = [None if c.out_dir is None else load_checkpoint(c.out_dir) for c in self.copies]
        if all(item is None for item in loaded):
            return
        for copy, item in zip(self.copies, loaded, strict=True):
            if item is not None:
                check_checkpoint(copy.config.run, item[0], item[1], fused=True)
        steps = {None if item is None else item[0]["step"] for item in loaded}
        if len(steps) > 1:
            raise ValueError(f"the runs of a fused group resume from different steps ({sorted(map(str, steps))})")
        for k, (copy, item) in enumerate(zip(self.copies, loaded, strict=True)):
            assert item is not None
            state, _ = item
            self.model.load_copy_state_dict(k, state["model"])
            self.optimizer.load_copy_state_dict(k, state["optimizer"])
            self.problems[k].train.load_state_dict(state["sampler"])
            self.sums.load_copy_state_dict(k, state["sums"])
            copy.history = list(state["history"])
            copy.elapsed_before = state["elapsed"]
            copy.resumed_from_step = state["step"]
            self.step = state["step"]

    def save(self) -> None:
        for k, copy in enumerate(self.copies):
            if copy.active and copy.out_dir is not None:
                save_checkpoint(copy.out_dir, self.copy_state_dict(k))

    # -- training ------------------------------------------------------------------------------------------

    def train(self, should_stop: Callable[[], bool] | None) -> None:
        self.model.train()
        self.session_start = time.perf_counter()
        while self.step < self.total_steps:
            report = self.advance()
            if self.step % self.eval_every == 0 or self.step == self.total_steps:
                self._evaluate(report)
                if not any(copy.active for copy in self.copies):
                    return
            if self.step == self.total_steps:
                break
            stop = should_stop is not None and should_stop()
            if self.checkpoint_every is not None and (stop or self.step % self.checkpoint_every == 0):
                self.save()
            if stop:
                self._finish_active("interrupted")
                return
        self._finish_active("completed")

    def advance(self) -> StepReport:
        """One training step of every copy, each on the next batch of its own sampler; no host synchronisation."""
        self.step += 1
        batches = [problem.train.next_batch() for problem in self.problems]
        inputs = torch.stack([inputs for inputs, _ in batches])
        targets = torch.stack([targets for _, targets in batches])
        optimizer = self.optimizer
        losses = optimizer.step(self.closures(inputs, targets))
        report = StepReport(
            optimizer.effective_lr, optimizer.updated, optimizer.forward_passes, optimizer.backward_passes
        )
        self.sums.add(self.step, losses, report)
        return report

    def _evaluate(self, report: StepReport) -> None:
        windows = self.sums.read_windows()
        with numerics("fp32"):  # accuracies compare across precisions
            validation = evaluate_copies(self.model, self.loss_fn, self.problems[0].validation)
            test = evaluate_copies(self.model, self.loss_fn, self.problems[0].test)
        for k, copy in enumerate(self.copies):
            if not copy.active:
                continue
            window = windows[k]
            window_steps = self.step - (int(copy.history[-1]["step"]) if copy.history else 0)
            scores = (*validation[k], *test[k])  # fused models are classifiers (lsbench.fused.groups.FUSED_MODELS)
            point = eval_point(self.step, window, window_steps, scores, report, self.elapsed(copy))
            copy.history.append(point)
            if copy.on_eval is not None:
                copy.on_eval(dict(point))
            if window.first_bad_step is not None:
                self._finish(k, "diverged", window.first_bad_step)

    def _finish_active(self, status: Status) -> None:
        for k, copy in enumerate(self.copies):
            if copy.active:
                self._finish(k, status)

    def _finish(self, k: int, status: Status, diverged_at_step: int | None = None) -> None:
        copy = self.copies[k]
        run_lr_sum = self.sums.sums["run_lr_sum"][k].item()
        copy.result = TrainResult(
            config=copy.config.to_dict(),
            status=status,
            steps_done=self.step,
            total_steps=self.total_steps,
            diverged_at_step=diverged_at_step,
            history=list(copy.history),
            elapsed=self.elapsed(copy),
            mean_effective_lr=run_lr_sum / self.step if self.step else math.nan,
            resumed_from_step=copy.resumed_from_step,
        )
        if copy.out_dir is not None and status != "interrupted":
            write_outputs(copy.out_dir, copy.result, self.model.copy_state_dict(k))
        if copy.on_result is not None:
            copy.on_result(copy.result)


def train_group(
    configs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path | None] | None = None,
    *,
    on_eval: Sequence[OnEval] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_result: Sequence[OnResult] | None = None,
) -> list[TrainResult]:
    """Train K compatible runs as one fused group, resuming them from their checkpoints; one result per run.

    Args:
        configs: the runs (:func:`lsbench.fused.groups.group_key` equal; same device, checkpoint interval, data).
        out_dirs: one output directory per run (or None for all): checkpoints and outputs as
            :func:`lsbench.train.train` writes them.
        on_eval: one callback per run, called with each of its new evaluation points.
        should_stop: polled after every step but the last; True checkpoints every unfinished run and returns them
            ``"interrupted"``.
        on_result: one callback per run, called with its result as soon as the run ends -- a diverged run while the
            others still train -- so that a worker can record it at once.

    Raises:
        ValueError: the runs cannot be fused together, or their checkpoints are at different steps.
        CheckpointMismatchError: a run directory holds a checkpoint of another run, or one of a single run.
    """
    if not configs:
        raise ValueError("a fused group needs at least one run")
    configs = [config.resolved() for config in configs]
    directories = [None if d is None else Path(d) for d in (out_dirs or [None] * len(configs))]
    callbacks = list(on_eval) if on_eval is not None else [None] * len(configs)
    if not len(directories) == len(callbacks) == len(configs):
        raise ValueError("one output directory and one callback per run")
    device = torch.device(configs[0].device)
    check_precision_supported(configs[0].run.precision, device)
    for directory in directories:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    with deterministic_algorithms(device), numerics(configs[0].run.precision):
        group = FusedGroup(configs, directories, callbacks, on_result)
        group.resume()
        group.train(should_stop)
    return [copy.result for copy in group.copies if copy.result is not None]
