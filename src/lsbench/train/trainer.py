"""The step-based trainer: one training job from a :class:`TrainConfig` to a :class:`TrainResult`.

Accounting follows thesis Chapter 6: the budget is counted in *steps*, and one step is the sampling of one
training batch. Every optimizer's ``step(closure)`` is called exactly once per batch, so optimizers that spend
several batches on one update (LABPAL's measurements) are charged for every batch they see.

What happens in a run:

* **Seeding.** The problem (model initialisation, shuffling, augmentation) is built from the run's seed; the
  closure of step ``t`` gets the seed ``seed * 1_000_003 + t``, which fixes its dropout masks. Nothing else
  draws random numbers, so a run is a function of its configuration. Deterministic kernels are switched on
  for the duration of the run (``torch.use_deterministic_algorithms(True, warn_only=True)``); cuBLAS also needs
  ``CUBLAS_WORKSPACE_CONFIG``, which it reads once, when its first handle is created, so importing this module
  sets it (unless the user chose one) before the worker or ``lsbench train`` touches CUDA. The previous setting
  is restored afterwards. Two runs of one configuration -- or one run and its resumed continuation -- are then
  bitwise identical on the same kind of device; on the CPU also the number of threads must match
  (``torch.set_num_threads``), because it changes how a matrix product is split and therefore its rounding.
* **Devices.** ``device="auto"`` takes CUDA when it is available, but a run pinned to a GPU by
  ``CUDA_VISIBLE_DEVICES`` fails at once with a one-line :class:`~lsbench.train.device.DeviceUnavailableError`
  when CUDA cannot use that GPU, instead of training on the CPU (:mod:`lsbench.train.device`). A checkpoint
  resumes on any device: its tensors are loaded to the CPU and moved, and the sampler's state holds nothing that
  depends on the device kind (:mod:`lsbench.problems.sampling`). Kernels and dropout masks follow the device, so a
  continuation on another kind of device is the same run, not bitwise the same numbers.
* **Precision.** The run's ``precision`` (``fp32`` by default, ``tf32``, ``bf16``) sets the numerics of every
  closure evaluation of the training steps, probes included; evaluation always runs in ``fp32``
  (:mod:`lsbench.train.precision`).
* **No host synchronisation per step.** Reading a GPU scalar (``.item()``, ``float(t)``, ``bool(t)``) blocks
  the host until the device has finished all queued work; once per step that would leave the GPU idle while
  Python prepares the next step. The trainer keeps its running sums on the device and reads them once per
  evaluation point.
* **Evaluation** every ``eval_every`` steps and at the end: the window's mean training objective, validation
  and test loss and accuracy, the window's mean effective learning rate and number of updates, cumulative
  forward/backward passes and elapsed seconds (:data:`EvalPoint`).
* **Divergence.** A non-finite step loss is noticed at the next evaluation point (that is where the sums are
  read); the run stops there with status ``"diverged"`` and the exact first bad step.
* **Line measurements.** A run of kind ``linescan`` also measures the full-batch loss along the update of every
  (k-th) step into ``out_dir/lines.zarr`` (:mod:`lsbench.lines.scan`), on a copy of the model, so its training is
  exactly that of the same ``train`` run; its lines are appended before every checkpoint and cut back to it on
  resume.
* **Checkpoints** (``checkpoint_every`` steps, into ``out_dir``) hold everything needed to continue bitwise
  identically; ``train`` resumes from the newest readable one it finds. See :mod:`lsbench.train.checkpoint`.
  They are kept when the run ends (``result.json`` marks a finished run): training the same configuration into
  the same directory again repeats only the steps after the last checkpoint and ends with the same result.
  ``final_model.pt`` holds CPU tensors, so a plain ``torch.load`` reads it on a machine without CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from lsbench.files import atomic_write
from lsbench.lines.scan import LineScan
from lsbench.optim import (
    StepReport,
    TrainingContext,
    build_optimizer,
    step_report,
    training_steps,
)
from lsbench.problems import build_problem, evaluate
from lsbench.runs.spec import RunSpec
from lsbench.train.checkpoint import load_checkpoint, save_checkpoint
from lsbench.train.device import resolve_device
from lsbench.train.precision import check_precision_supported, closure_factory, numerics

__all__ = [
    "FINAL_MODEL_FILE",
    "METRICS_FILE",
    "RESULT_FILE",
    "CheckpointMismatchError",
    "EvalPoint",
    "Status",
    "TrainConfig",
    "TrainResult",
    "train",
]

Status = Literal["completed", "diverged", "interrupted"]
EvalPoint = dict[str, float]
"""One evaluation point: ``step``, ``train_loss`` (mean objective, L2 term included, over the window's finite
step losses), ``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``, ``mean_effective_lr`` (window mean over
steps), ``updates`` (in the window), ``forward_passes`` and ``backward_passes`` (cumulative) and ``elapsed``
(training seconds so far, summed over resumed sessions)."""

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.jsonl"
FINAL_MODEL_FILE = "final_model.pt"

# The fields of a TrainConfig that say where and how often a run is executed, not what it computes.
_EXECUTION_FIELDS = ("checkpoint_every", "device", "data_dir")

_log = logging.getLogger(__name__)

# cuBLAS reads its workspace configuration when its first handle is created; set here, at import, it is in place
# before the worker or ``lsbench train`` runs anything on CUDA. A process that used cuBLAS before importing lsbench
# has its configuration already (see deterministic_algorithms).
_CUBLAS_CONFIG = ":4096:8"
_CUBLAS_SET_LATE = "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized()
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_CONFIG)


class CheckpointMismatchError(ValueError):
    """The output directory holds a checkpoint of a different run; resuming it would mix two runs."""


@dataclass(frozen=True)
class TrainConfig:
    """One training job: a run (what is computed) and how it is executed (which never changes the result).

    Build one with :meth:`create` from partial settings (the problem's defaults fill the rest), or from a sweep's
    :meth:`lsbench.runs.RunSpec.train_config`. A run may resume with other execution settings, e.g. on another node
    whose data was staged to a different scratch path.

    Attributes:
        run: the run's identity (problem, optimizer, resolved hyperparameters, seed, budget, ...).
        checkpoint_every: checkpoint interval in steps; None writes no checkpoints.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, … or ``"auto"`` (CUDA if available; required when
            ``CUDA_VISIBLE_DEVICES`` names a GPU, see :func:`lsbench.train.device.resolve_device`).
        data_dir: dataset root (CIFAR problems).
    """

    run: RunSpec
    checkpoint_every: int | None = None
    device: str = "cpu"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        value = self.checkpoint_every
        if not (value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)):
            raise ValueError(f"checkpoint_every: expected a positive integer or null, got {value!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"device: {self.device!r} is not a torch device or 'auto'") from None

    @classmethod
    def create(
        cls,
        problem: str,
        optimizer: str,
        hparams: Mapping[str, Any] | None = None,
        seed: int = 1,
        *,
        checkpoint_every: int | None = None,
        device: str = "cpu",
        data_dir: str | None = None,
        **settings: Any,
    ) -> TrainConfig:
        """A job from partial settings; ``settings`` are :meth:`RunSpec.create`'s (steps, eval_every, batch_size,
        weight_decay, split, kind, precision), None meaning the problem's default. Raises ValueError for invalid
        ones."""
        run = RunSpec.create(problem, optimizer, hparams, seed, **settings)
        return cls(run, checkpoint_every=checkpoint_every, device=device, data_dir=data_dir)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy: the run's fields and the execution settings in one flat mapping."""
        return {**self.run.to_dict(), **{name: getattr(self, name) for name in _EXECUTION_FIELDS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from :meth:`to_dict` output; unknown, missing or invalid keys raise ValueError."""
        execution = {name: data[name] for name in _EXECUTION_FIELDS if name in data}
        return cls(RunSpec.from_dict({k: v for k, v in data.items() if k not in _EXECUTION_FIELDS}), **execution)

    def resolved(self) -> TrainConfig:
        """This config with a concrete, usable device (``auto``: CUDA if available).

        Raises:
            DeviceUnavailableError: the config or ``CUDA_VISIBLE_DEVICES`` asks for a GPU that CUDA cannot use.
        """
        device = str(resolve_device(self.device))
        return self if device == self.device else dataclasses.replace(self, device=device)


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        config: the resolved configuration (every default filled in), as a dict.
        status: ``"completed"``; ``"diverged"`` (a step loss was NaN or infinite); ``"interrupted"``
            (``should_stop`` asked to stop; the run can be resumed from its checkpoint).
        steps_done: steps trained.
        total_steps: the step budget actually trained for (LABPAL's noise factor rescales the nominal one).
        diverged_at_step: the first step whose loss was not finite, or None.
        history: the evaluation points (:data:`EvalPoint`) in step order.
        elapsed: training seconds, summed over all sessions of a resumed run.
        mean_effective_lr: effective learning rate averaged over all steps of the run.
        resumed_from_step: step of the checkpoint this session continued from; None for a fresh start.
    """

    config: dict[str, Any]
    status: Status
    steps_done: int
    total_steps: int
    diverged_at_step: int | None
    history: list[EvalPoint]
    elapsed: float
    mean_effective_lr: float
    resumed_from_step: int | None = None

    @property
    def final(self) -> EvalPoint:
        """The last evaluation point (empty if the run was interrupted before its first one)."""
        return self.history[-1] if self.history else {}

    def summary(self) -> dict[str, Any]:
        """The few numbers a results table shows for a run."""
        final = self.final
        return {
            "status": self.status,
            "steps": self.steps_done,
            "train_loss": final.get("train_loss", math.nan),
            "val_acc": final.get("val_acc", math.nan),
            "test_acc": final.get("test_acc", math.nan),
            "mean_effective_lr": self.mean_effective_lr,
            "seconds": self.elapsed,
        }

    def to_dict(self) -> dict[str, Any]:
        """All fields plus ``final`` and ``summary``, JSON-ready: NaN and infinities become None."""
        return _json_ready({**dataclasses.asdict(self), "final": self.final, "summary": self.summary()})


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    on_eval: Callable[[EvalPoint], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Run one training job, resuming from a checkpoint in ``out_dir`` if one is there.

    Args:
        config: what to train.
        out_dir: where checkpoints (if ``config.checkpoint_every``) and, at the end, ``result.json``,
            ``metrics.jsonl`` and ``final_model.pt`` go. Created if missing.
        on_eval: called with every new evaluation point, e.g. to stream metrics to a store. After a resume,
            points computed after the last checkpoint are computed -- and reported -- again, with the same
            values.
        should_stop: polled after every step but the last (a Python call, no device work); when it returns
            True the run checkpoints (if checkpointing is on) and returns with status ``"interrupted"``. A
            worker sets it from a signal handler to leave cleanly before a scheduler's time limit.

    Raises:
        CheckpointMismatchError: ``out_dir`` holds a checkpoint of a different run.
        DeviceUnavailableError: the run asks for a GPU that CUDA cannot use (nothing is trained).
        ValueError: the device cannot run the run's precision (bf16 on a GPU older than Ampere).
    """
    config = config.resolved()
    if config.run.kind == "linescan" and out_dir is None:
        raise ValueError("a linescan run writes its lines into out_dir: give one")
    device = torch.device(config.device)
    check_precision_supported(config.run.precision, device)
    directory = None if out_dir is None else Path(out_dir)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    loaded = load_checkpoint(directory) if directory is not None else None
    if loaded is not None and loaded[0].get(FUSED_CHECKPOINT):  # a run that began in a fused group continues as one
        from lsbench.fused.trainer import train_group

        [result] = train_group([config], [directory], on_eval=[on_eval], should_stop=should_stop)
        return result
    with deterministic_algorithms(device), numerics(config.run.precision):
        run = _Run(config, directory)
        if directory is not None:
            run.resume(loaded)
        result = run.train(directory if config.checkpoint_every else None, on_eval, should_stop)
        if run.scan is not None:
            run.scan.flush()
    if directory is not None and result.status != "interrupted":
        write_outputs(directory, result, run.problem.model.state_dict())
    return result


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the caller's setting is restored afterwards.

    ``warn_only``: an operation without a deterministic implementation warns instead of failing the run.
    cuBLAS needs a fixed workspace configuration to be deterministic; it was set when this module was imported
    unless the user chose one. If CUDA was already in use then, cuBLAS may have started without it: say so.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cuda" and _CUBLAS_SET_LATE:
        _log.warning(
            "CUBLAS_WORKSPACE_CONFIG was set after CUDA had started in this process; cuBLAS products may not be "
            "deterministic. Set CUBLAS_WORKSPACE_CONFIG=%s before starting Python.",
            _CUBLAS_CONFIG,
        )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class Window(NamedTuple):
    """The step sums of one evaluation window, read to the host."""

    loss_sum: float
    finite_losses: int
    lr_sum: float
    updates: int
    first_bad_step: int | None


class StepSums:
    """Device-side running sums of what every step reports (see the module docstring for why on the device).

    The window sums restart at every evaluation point; ``run_lr_sum`` and ``first_bad_step`` cover the run. A fused
    group (:mod:`lsbench.fused`) keeps one sum per copy: ``copies`` K makes every sum a ``(K,)`` vector, and
    :meth:`copy_state_dict` is copy k's sums in the form a run of its own saves.
    """

    _WINDOW = ("loss_sum", "finite_losses", "lr_sum", "updates")

    def __init__(self, device: torch.device, copies: int | None = None) -> None:
        shape = () if copies is None else (copies,)

        def zero(dtype: torch.dtype) -> Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.sums: dict[str, Tensor] = {
            "loss_sum": zero(torch.float64),  # finite step losses only, so one NaN does not hide the rest
            "finite_losses": zero(torch.int64),
            "lr_sum": zero(torch.float64),
            "updates": zero(torch.int64),
            "run_lr_sum": zero(torch.float64),
            "first_bad_step": torch.full(shape, -1, dtype=torch.int64, device=device),
        }

    def add(self, step: int, loss: Tensor, report: StepReport) -> None:
        """Fold one step in with asynchronous device operations only (Python numbers are kernel arguments)."""
        sums = self.sums
        finite = torch.isfinite(loss)
        sums["loss_sum"] += torch.where(finite, loss, 0.0)
        sums["finite_losses"] += finite
        sums["lr_sum"] += report.effective_lr
        sums["run_lr_sum"] += report.effective_lr
        sums["updates"] += report.updated
        first_bad = sums["first_bad_step"]
        first_bad.masked_fill_(first_bad.lt(0) & ~finite, step)

    def read_window(self) -> Window:
        """The window's sums in one host synchronisation; the window restarts."""
        [window] = self.read_windows()
        return window

    def read_windows(self) -> list[Window]:
        """Every copy's window sums (one for a single run) in one host synchronisation; the windows restart."""
        sums = self.sums
        names = (*self._WINDOW, "first_bad_step")
        columns = torch.stack([sums[name].double().reshape(-1) for name in names], dim=1).tolist()
        for name in self._WINDOW:
            sums[name].zero_()
        windows = []
        for loss_sum, finite_losses, lr_sum, updates, first_bad in columns:
            first_bad_step = None if first_bad < 0 else int(first_bad)
            windows.append(Window(loss_sum, int(finite_losses), lr_sum, int(updates), first_bad_step))
        return windows

    def run_lr_sum(self) -> float:
        return self.sums["run_lr_sum"].item()

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.sums)

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for name, value in self.sums.items():
            value.copy_(state[name])

    def copy_state_dict(self, k: int) -> dict[str, Tensor]:
        """Copy k's sums as 0-d tensors: what the checkpoint of a run trained alone holds."""
        return {name: value[k].clone() for name, value in self.sums.items()}

    def load_copy_state_dict(self, k: int, state: Mapping[str, Tensor]) -> None:
        for name, value in self.sums.items():
            value[k] = state[name]


class _Run:
    """The state of one training job between steps: what a checkpoint holds."""

    def __init__(self, config: TrainConfig, out_dir: Path | None = None) -> None:
        self.config = config
        run = config.run
        self.device = torch.device(config.device)
        self.problem = build_problem(
            run.problem,
            seed=run.seed,
            device=self.device,
            batch_size=run.batch_size,
            data_dir=config.data_dir,
            split=run.split,
        )
        sampler = self.problem.train
        context = TrainingContext(run.steps, sampler.batch_size, self.problem.train_size)
        parameters = self.problem.model.parameters()
        self.optimizer = build_optimizer(run.optimizer, parameters, run.hparams, context)
        self.total_steps = training_steps(self.optimizer, run.steps)
        self.closures = closure_factory(
            self.problem.model, self.problem.loss_fn, run.weight_decay, run.precision, self.device
        )
        self.sums = StepSums(self.device)
        # A linescan run's measurement (lsbench.lines): it reads the model and writes arrays, never changes training.
        self.scan = LineScan(run, self.problem, out_dir) if run.kind == "linescan" and out_dir is not None else None
        self.step = 0
        self.history: list[EvalPoint] = []
        self.elapsed_before = 0.0
        self.session_start = time.perf_counter()
        self.resumed_from_step: int | None = None

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start

    # -- checkpoints ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.problem.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.problem.train.state_dict(),
            "sums": self.sums.state_dict(),
            "history": list(self.history),
            "elapsed": self.elapsed(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            # Last: appends the buffered lines, so the rows it records are on disk before the checkpoint is.
            "lines": self.scan.state_dict() if self.scan is not None else None,
        }

    def resume(self, loaded: tuple[dict[str, Any], Path] | None) -> None:
        """Continue from the checkpoint :func:`load_checkpoint` found in the output directory, if any."""
        if loaded is None:
            if self.scan is not None:
                self.scan.start()
            return
        state, path = loaded
        check_checkpoint(self.config.run, state, path, fused=False)
        self.problem.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.problem.train.load_state_dict(state["sampler"])
        self.sums.load_state_dict(state["sums"])
        self.history = list(state["history"])
        self.elapsed_before = state["elapsed"]
        self.step = self.resumed_from_step = state["step"]
        torch.set_rng_state(state["cpu_rng"])
        if self.device.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scan is not None:
            self.scan.load_state_dict(state["lines"])
        _log.info("resuming %s from %s at step %d", path.parent, path.name, self.step)

    # -- training ------------------------------------------------------------------------------------------

    def train(
        self,
        checkpoint_dir: Path | None,
        on_eval: Callable[[EvalPoint], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> TrainResult:
        config, problem, optimizer = self.config, self.problem, self.optimizer
        eval_every, checkpoint_every = config.run.eval_every, config.checkpoint_every
        assert eval_every is not None, "expects a resolved config"
        problem.model.train()
        self.session_start = time.perf_counter()
        while self.step < self.total_steps:
            self.step += 1
            step = self.step
            inputs, targets = problem.train.next_batch()
            origin = self.scan.origin() if self.scan is not None and self.scan.due(step) else None
            loss = optimizer.step(self.closures(inputs, targets, seed=config.run.seed * 1_000_003 + step))
            if origin is not None:
                self.scan.measure(step, origin, inputs, targets)  # type: ignore[union-attr]
            self.sums.add(step, loss, step_report(optimizer))
            if step % eval_every == 0 or step == self.total_steps:
                first_bad = self._evaluate(on_eval)
                if first_bad is not None:
                    return self._result("diverged", first_bad)
            if step == self.total_steps:
                break
            stop = should_stop is not None and should_stop()
            if checkpoint_dir is not None and (stop or step % checkpoint_every == 0):  # type: ignore[operator]
                save_checkpoint(checkpoint_dir, self.state_dict())
            if stop:
                return self._result("interrupted")
        return self._result("completed")

    def _evaluate(self, on_eval: Callable[[EvalPoint], None] | None) -> int | None:
        """Record an evaluation point; return the first non-finite step, if there was one."""
        window = self.sums.read_window()
        window_steps = self.step - (int(self.history[-1]["step"]) if self.history else 0)
        problem = self.problem
        with numerics("fp32"):  # accuracies compare across precisions
            val_loss, val_acc = evaluate(problem.model, problem.loss_fn, problem.validation)
            test_loss, test_acc = evaluate(problem.model, problem.loss_fn, problem.test)
        report = step_report(self.optimizer)
        point = eval_point(
            self.step, window, window_steps, (val_loss, val_acc, test_loss, test_acc), report, self.elapsed()
        )
        self.history.append(point)
        if on_eval is not None:
            on_eval(dict(point))
        return window.first_bad_step

    def _result(self, status: Status, diverged_at_step: int | None = None) -> TrainResult:
        return TrainResult(
            config=self.config.to_dict(),
            status=status,
            steps_done=self.step,
            total_steps=self.total_steps,
            diverged_at_step=diverged_at_step,
            history=list(self.history),
            elapsed=self.elapsed(),
            mean_effective_lr=self.sums.run_lr_sum() / self.step if self.step else math.nan,
            resumed_from_step=self.resumed_from_step,
        )


FUSED_CHECKPOINT = "fused"
"""Key of a checkpoint written by a fused group (:mod:`lsbench.fused.trainer`): its optimizer state is one copy of
a vectorised optimizer, which only a fused group can continue (a group of one, if need be)."""


def check_checkpoint(run: RunSpec, state: Mapping[str, Any], path: Path, *, fused: bool) -> None:
    """Raise :class:`CheckpointMismatchError` unless the checkpoint ``state`` (read from ``path``) is one of ``run``
    written by the same kind of trainer (a single run's or a fused group's)."""
    expected, found = run.identity(), run_identity(state["config"])
    if found != expected:
        differences = ", ".join(
            f"{key}={found.get(key)!r} (requested {expected.get(key)!r})"
            for key in sorted(expected.keys() | found.keys())
            if found.get(key) != expected.get(key)
        )
        raise CheckpointMismatchError(f"{path} belongs to a different run: {differences}")
    if bool(state.get(FUSED_CHECKPOINT)) != fused:
        written, wanted = ("a fused group", "a single run") if not fused else ("a single run", "a fused group")
        raise CheckpointMismatchError(f"{path} was written by {written}; {wanted} cannot continue it")


def eval_point(
    step: int,
    window: Window,
    window_steps: int,
    scores: tuple[float, float, float, float],
    report: StepReport,
    elapsed: float,
) -> EvalPoint:
    """The evaluation point of ``step`` from its window's sums, the ``(val_loss, val_acc, test_loss, test_acc)``
    scores and the optimizer's pass counters (one definition for single runs and fused groups)."""
    val_loss, val_acc, test_loss, test_acc = scores
    return {
        "step": step,
        "train_loss": window.loss_sum / window.finite_losses if window.finite_losses else math.nan,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "mean_effective_lr": window.lr_sum / window_steps,
        "updates": window.updates,
        "forward_passes": report.forward_passes,
        "backward_passes": report.backward_passes,
        "elapsed": elapsed,
    }


def run_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of the run a stored config (:meth:`TrainConfig.to_dict`) describes; empty if unreadable."""
    try:
        return TrainConfig.from_dict(config).run.identity()
    except ValueError:
        return {}


def write_outputs(out_dir: Path, result: TrainResult, model_state: dict[str, Tensor]) -> None:
    """Final model, metrics and result, each atomically; ``result.json`` last, so it marks a finished run.

    The model's tensors are saved from the CPU: a file of CUDA tensors needs ``map_location`` to load on a machine
    without CUDA (a login node), and ``torch.load`` without it fails there."""
    record = result.to_dict()
    cpu_state = {name: value.detach().cpu() for name, value in model_state.items()}
    atomic_write(out_dir / FINAL_MODEL_FILE, lambda file: torch.save(cpu_state, file))
    lines = "".join(json.dumps(point, allow_nan=False) + "\n" for point in record["history"])
    atomic_write(out_dir / METRICS_FILE, lambda file: file.write(lines.encode()))
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    atomic_write(out_dir / RESULT_FILE, lambda file: file.write(text.encode()))


def _json_ready(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value
