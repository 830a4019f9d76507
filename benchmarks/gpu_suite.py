"""GPU suite: speed and fidelity of SGD, PAL, LABPAL and SLS on CIFAR ResNet-32 in each precision setting.

For every optimizer and precision (``fp32``, ``tf32``, ``bf16``; :mod:`lsbench.train.precision`) it prints

* **ms per sampled batch** (median and range over repeats) and the ratio to SGD in ``fp32`` measured in the same run.
  LABPAL's figure is the cost per batch of a whole cycle, one measurement plus ``sgd_steps - 1`` training updates,
  from one timed measurement and timed training steps (as in ``benchmarks/optim_overhead.py``);
* the **share of the step spent in the optimizer**: ``1 - (B·t_fb + (F - B)·t_f) / t_step``, with F and B the
  forward and backward passes per batch from the optimizer's own counters, and ``t_fb`` / ``t_f`` the time of a
  plain forward+backward / forward pass in the same precision, measured in the same run;
* **host synchronisations per batch**: on CUDA counted with ``torch.cuda.set_sync_debug_mode("warn")`` (one warning
  per synchronising call); on every device also the *scalar reads* (``aten::_local_scalar_dense``: ``.item()``,
  ``bool(t)``, ``float(t)``), which are what synchronises when the tensor lives on a GPU;

and the **error of LABPAL's near-probe curvature** against float64: the direction is the float64 mean gradient of
a few batches, the probes are the losses at 0, 1.77e-4 and 0.01 along it (LABPAL's defaults; weight decay 1e-4),
each evaluated in the precision under test, and ``a`` is the published estimator's curvature
(:func:`lsbench.optim.labpal.parabola`). Two columns: the probes fitted in float64 (what the precision does to the
probes) and LABPAL's own float32 arithmetic on them. The float32 resolution line is the error one rounding of each
probe loss to float32 can cause, the floor of any float32 evaluation.

A CPU has no TF32: there the ``tf32`` timings equal ``fp32`` and the ``tf32`` curvature is imitated
(:func:`lsbench.train.precision.imitate_tf32`: convolution and matrix-product operands rounded to 10 mantissa bits).
The data is synthetic CIFAR-10-shaped (``cifar10shaped``), with CIFAR augmentation, so no dataset is needed.

Last, **fused multi-run training**: runs per GPU-hour of ResNet-32 with PAL trained alone and as fused groups of
K = 4, 8, 16 (:mod:`lsbench.fused`), and the projected GPU-hours of the ``pal_cifar10`` grid at the best K.

Usage: ``python benchmarks/gpu_suite.py [--device cuda|cpu] [--quick] [--repeats 5] [--steps 20]``. On one GPU the
full suite takes a few minutes; ``--device cpu --quick`` (batch 8, fewer steps, a two-batch LABPAL measurement)
finishes in under a minute and checks that every part runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from fused_runs import STEPS_PER_RUN, baseline_step_seconds, configs, fused_step_seconds
from lsbench.optim import ClosureFactory, TrainingContext, build_optimizer
from lsbench.optim.labpal import parabola
from lsbench.problems import build_problem
from lsbench.problems.models import build_model
from lsbench.train.device import device_metadata
from lsbench.train.precision import PRECISIONS, closure_factory, imitate_tf32, numerics
from optim_overhead import timed  # a script beside this one (benchmarks/ is on the path)

WEIGHT_DECAY = 1e-4
FUSED_KS = (4, 8, 16)
PAL_CIFAR10_RUNS = 1_128  # src/lsbench/sweep/grids/pal_cifar10.yaml, each STEPS_PER_RUN steps
NEAR, FAR = 1.77e-4, 0.01
CONTENDERS = {
    "sgd": {"lr": 0.1, "momentum": 0.9},
    "pal": {"measuring_step_size": 0.1, "update_step_adaptation": 1.0, "direction_adaptation": 0.4},
    "labpal_nsgd": {},
    "sls": {},
}


@dataclass
class Settings:
    batch: int
    repeats: int
    steps: int
    sync_steps: int
    curvature_batches: int
    labpal_batches: int  # LABPAL's measurement batches (approximation_batch_size / batch)


class ScalarReads(TorchDispatchMode):
    """Counts the operations that read a tensor's value to the host: scalar reads and copies to the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[0] if func is torch.ops.aten._to_copy.default else args[1]
            if isinstance(source, Tensor) and source.device.type != "cpu":
                target = kwargs.get("device") if func is torch.ops.aten._to_copy.default else args[0].device
                self.count += torch.device(target or source.device).type == "cpu"  # no device: a dtype cast
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_sync_warnings(device: torch.device) -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (one per synchronising call)."""
    if device.type != "cuda":
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield caught
        finally:
            torch.cuda.set_sync_debug_mode("default")


class Runner:
    """One optimizer on its own copy of the model, in one precision."""

    def __init__(self, name: str, precision: str, model: nn.Module, loss_fn: nn.Module, pool, settings, device):
        self.name, self.precision, self.pool, self.device = name, precision, pool, device
        self.model = copy.deepcopy(model)
        self.factory = closure_factory(self.model, loss_fn, WEIGHT_DECAY, precision, device)
        hparams = dict(CONTENDERS[name])
        if name.startswith("labpal"):
            hparams["approximation_batch_size"] = settings.labpal_batches * settings.batch
        context = TrainingContext(total_steps=150_000, batch_size=settings.batch, train_size=40_000)
        self.optimizer = build_optimizer(name, self.model.parameters(), hparams, context)
        self.counter = 0
        self.measurement_failed = False

    def run(self, count: int) -> None:
        with numerics(self.precision):
            for _ in range(count):
                inputs, targets = self.pool[self.counter % len(self.pool)]
                self.optimizer.step(self.factory(inputs, targets, seed=self.counter))
                self.counter += 1

    def passes(self) -> tuple[int, int]:
        return self.optimizer.forward_passes, self.optimizer.backward_passes

    # LABPAL: a measurement, then training steps; cost per batch of a whole cycle.
    def labpal_cycle(self, steps: int) -> tuple[float, float, float, float]:
        """Seconds per batch, forward and backward passes per batch, and batches of one cycle (measurement
        plus ``sgd_steps - 1`` training updates)."""
        optimizer = self.optimizer
        measurement_batches = optimizer.param_groups[0]["approximation_batches"] * optimizer.shared["k"]
        cycle_updates = optimizer.param_groups[0]["sgd_steps"] - 1
        optimizer.shared["updates_since_measurement"] = optimizer.param_groups[0]["sgd_steps"]
        before = self.passes()
        measurement = timed(self.device, lambda: self.run(measurement_batches))
        self.measurement_failed |= bool(optimizer.shared["measuring"])  # still measuring: no step came out
        middle = self.passes()
        train = timed(self.device, lambda: self.run(steps)) / steps
        after = self.passes()
        batches = measurement_batches + cycle_updates
        seconds = (measurement + cycle_updates * train) / batches
        forwards = (middle[0] - before[0] + cycle_updates * (after[0] - middle[0]) / steps) / batches
        backwards = (middle[1] - before[1] + cycle_updates * (after[1] - middle[1]) / steps) / batches
        return seconds, forwards, backwards, batches


def model_pass_times(model, loss_fn, pool, precision, device, count: int) -> tuple[float, float]:
    """Seconds of one forward+backward and of one forward pass of the plain model in ``precision``."""
    model = copy.deepcopy(model)
    factory = closure_factory(model, loss_fn, WEIGHT_DECAY, precision, device)

    def forward_backward() -> None:
        for i in range(count):
            model.zero_grad(set_to_none=True)
            factory(*pool[i % len(pool)], seed=i)().backward()

    def forward() -> None:
        with torch.no_grad():
            for i in range(count):
                factory(*pool[i % len(pool)], seed=i)()

    with numerics(precision):
        forward_backward()
        forward()  # warm-up
        return timed(device, forward_backward) / count, timed(device, forward) / count


def near_probe_curvatures(model, loss_fn, pool, device, batches: int) -> dict[str, tuple[float, float]]:
    """Per precision (and float64): the published curvature from the probe losses fitted in float64 (what LABPAL
    does) and fitted in float32 (what it did before, which the second column shows is not enough; float64's second
    entry repeats its first)."""
    batches_used = pool[:batches]
    reference = copy.deepcopy(model).double()
    factory = ClosureFactory(reference, loss_fn, WEIGHT_DECAY)
    for i, (inputs, targets) in enumerate(batches_used):
        (factory(inputs.double(), targets, seed=i)() / batches).backward()
    direction = [p.grad.detach().clone() for p in reference.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([d.norm() for d in direction]))
    origin = [p.detach().clone() for p in reference.parameters()]

    def probe_losses(subject: nn.Module, precision: str, dtype: torch.dtype) -> list[Tensor]:
        closures = closure_factory(subject, loss_fn, WEIGHT_DECAY, precision, device)
        imitation = imitate_tf32() if device.type == "cpu" and precision == "tf32" else contextlib.nullcontext()
        means = []
        with torch.no_grad(), numerics(precision), imitation:
            for distance in (0.0, NEAR, FAR):
                for p, o, d in zip(subject.parameters(), origin, direction, strict=True):
                    p.copy_(o - distance / norm * d)
                losses = [closures(x.to(dtype), y, seed=i)() for i, (x, y) in enumerate(batches_used)]
                means.append(torch.stack(losses))
        return means

    results = {}
    losses64 = probe_losses(reference, "fp32", torch.float64)
    a64 = parabola("published", *(loss.mean() for loss in losses64), NEAR, FAR)[0].item()
    results["float64"] = (a64, a64)
    for precision in PRECISIONS:
        losses = probe_losses(copy.deepcopy(model), precision, torch.float32)
        fit64 = parabola("published", *(loss.double().mean() for loss in losses), NEAR, FAR)[0].item()
        fit32 = parabola("published", *(loss.float().mean() for loss in losses), NEAR, FAR)[0].item()
        results[precision] = (fit64, fit32)
    # One rounding of each probe loss to float32: a is linear in the three losses.
    unit = [torch.zeros(3, dtype=torch.float64) for _ in range(3)]
    for i, u in enumerate(unit):
        u[i] = 1.0
    sensitivity = sum(abs(parabola("published", *u, NEAR, FAR)[0].item()) for u in unit)
    loss0 = losses64[0].mean().float().cpu()
    ulp = (torch.nextafter(loss0, torch.tensor(float("inf"))) - loss0).item()
    results["resolution"] = (sensitivity * ulp / 2, 0.0)
    return results


def fused_rows(device: torch.device, settings: Settings, quick: bool) -> list[str]:
    """Runs per GPU-hour of ResNet-32 trained with PAL alone and as fused groups of K (lsbench.fused), fp32, and the
    projected GPU-hours of the pal_cifar10 grid at the best K (``benchmarks/fused_runs.py`` does the timing)."""
    problem, ks = "cifar10shaped_resnet32", ((2,) if quick else FUSED_KS)
    alone_config = configs(problem, "pal", 1, str(device), settings.batch)[0]
    alone = baseline_step_seconds(alone_config, settings.steps, settings.repeats)
    rows = [(1, alone)]
    for k in ks:
        group = configs(problem, "pal", k, str(device), settings.batch)
        rows.append((k, fused_step_seconds(group, settings.steps, settings.repeats)))
    lines = [f"{'ResNet-32, PAL, fp32':<22}{'ms/step':>9}{'runs/GPU-hour':>15}{'x alone':>9}"]
    for k, seconds in rows:
        rate = k * 3600 / (seconds * STEPS_PER_RUN)
        label = "alone" if k == 1 else f"fused K={k}"
        lines.append(f"{label:<22}{seconds * 1e3:>9.2f}{rate:>15.3f}{alone * k / seconds:>9.2f}")
    best_k, best_seconds = min(rows, key=lambda row: row[1] / row[0])
    hours = PAL_CIFAR10_RUNS * STEPS_PER_RUN * best_seconds / best_k / 3600
    alone_hours = PAL_CIFAR10_RUNS * STEPS_PER_RUN * alone / 3600
    lines.append(
        f"pal_cifar10 grid ({PAL_CIFAR10_RUNS:,} runs x {STEPS_PER_RUN:,} steps, all priced as ResNet-32 PAL): "
        f"{alone_hours:,.0f} GPU-hours alone, {hours:,.0f} GPU-hours fused at K={best_k} ({hours / 24:,.1f} GPU-days)"
    )
    return lines


def hardware(device: torch.device) -> list[str]:
    meta = device_metadata(device)
    cpu = platform.processor() or platform.machine()
    lines = [f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"]
    if device.type == "cuda":
        lines.insert(0, f"GPU: {meta['gpu']} ({meta['gpu_uuid']}), driver {meta['driver']}")
    lines.append(
        f"torch {torch.__version__}, CUDA {meta['cuda']}, cuDNN {meta['cudnn']}, Python {platform.python_version()}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small batch and few steps: a smoke run (CPU, CI)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per optimizer, precision and repeat")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.quick:
        settings = Settings(batch=8, repeats=1, steps=2, sync_steps=2, curvature_batches=1, labpal_batches=2)
    else:
        settings = Settings(batch=128, repeats=5, steps=20, sync_steps=20, curvature_batches=10, labpal_batches=10)
    settings.repeats = args.repeats or settings.repeats
    settings.steps = args.steps or settings.steps
    started = time.perf_counter()

    problem = build_problem("cifar10shaped_resnet20", seed=0, device=device, batch_size=settings.batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("resnet32", (3, 32, 32), 10).to(device)
    loss_fn = problem.loss_fn
    pool = [problem.train.next_batch() for _ in range(max(8, settings.curvature_batches))]
    parameters = sum(p.numel() for p in model.parameters())

    runners = {
        (name, p): Runner(name, p, model, loss_fn, pool, settings, device) for p in PRECISIONS for name in CONTENDERS
    }
    for (name, _), runner in runners.items():  # warm-up: kernels, allocator, LABPAL's first measurement
        runner.run(settings.labpal_batches + 1 if name.startswith("labpal") else 2)

    pass_times = {p: model_pass_times(model, loss_fn, pool, p, device, settings.steps) for p in PRECISIONS}
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    passes: dict[tuple[str, str], tuple[float, float]] = {}
    for repeat in range(settings.repeats):
        keys = list(runners)
        keys = keys[repeat % len(keys) :] + keys[: repeat % len(keys)]  # rotate: drifts hit every runner alike
        for key in keys:
            runner = runners[key]
            if key[0].startswith("labpal"):
                per_batch, forwards, backwards, _ = runner.labpal_cycle(settings.steps)
            else:
                before = runner.passes()
                per_batch = timed(device, lambda runner=runner: runner.run(settings.steps)) / settings.steps
                after = runner.passes()
                forwards = (after[0] - before[0]) / settings.steps
                backwards = (after[1] - before[1]) / settings.steps
            seconds[key].append(per_batch)
            passes[key] = (forwards, backwards)

    syncs: dict[tuple[str, str], tuple[float | None, float]] = {}
    for key, runner in runners.items():
        count = settings.labpal_batches + settings.sync_steps if key[0].startswith("labpal") else settings.sync_steps
        if key[0].startswith("labpal"):
            runner.optimizer.shared["updates_since_measurement"] = runner.optimizer.param_groups[0]["sgd_steps"]
        reads = ScalarReads()
        with cuda_sync_warnings(device) as caught, reads:
            runner.run(count)
        cuda_syncs = sum("synchroniz" in str(w.message) for w in caught) / count if device.type == "cuda" else None
        syncs[key] = (cuda_syncs, reads.count / count)

    sampler_reads = ScalarReads()
    with cuda_sync_warnings(device) as caught, sampler_reads:
        for _ in range(settings.sync_steps):  # augmented batches; the full suite crosses an epoch boundary
            problem.train.next_batch()
    sampler_syncs = sum("synchroniz" in str(w.message) for w in caught) if device.type == "cuda" else None

    curvatures = near_probe_curvatures(model, loss_fn, pool, device, settings.curvature_batches)
    fused = fused_rows(device, settings, args.quick)

    sgd_fp32 = statistics.median(seconds[("sgd", "fp32")])
    print(
        f"gpu_suite: CIFAR ResNet-32 ({parameters:,} parameters), batch {settings.batch}, synthetic CIFAR-10-shaped "
        f"data, device {device}{', quick' if args.quick else ''}"
    )
    for line in hardware(device):
        print(f"  {line}")
    print(
        f"trials: {settings.repeats} repeats x {settings.steps} timed steps per optimizer and precision (LABPAL: one "
        f"{settings.labpal_batches}-batch measurement + {settings.steps} training steps per repeat, cost per batch of "
        f"a cycle); syncs over {settings.sync_steps} steps"
    )
    if device.type == "cpu":
        print("note: a CPU has no TF32, so tf32 times equal fp32 here; the tf32 curvature below is imitated")
    print()
    header = f"{'optimizer':<13}{'precision':<10}{'ms/batch':>9}{'min':>9}{'max':>9}{'x SGD fp32':>11}"
    header += f"{'optimizer share':>16}{'F/B per batch':>15}{'CUDA syncs':>11}{'scalar reads':>13}"
    print(header)
    for (name, precision), values in seconds.items():
        median = statistics.median(values)
        forwards, backwards = passes[(name, precision)]
        t_fb, t_f = pass_times[precision]
        model_time = backwards * t_fb + (forwards - backwards) * t_f
        share = max(0.0, 1.0 - model_time / median)
        cuda_syncs, reads = syncs[(name, precision)]
        cuda_text = "n/a" if cuda_syncs is None else f"{cuda_syncs:.2f}"
        print(
            f"{name:<13}{precision:<10}{median * 1e3:>9.2f}{min(values) * 1e3:>9.2f}{max(values) * 1e3:>9.2f}"
            f"{median / sgd_fp32:>11.2f}{share:>15.0%} {forwards:>7.2f}/{backwards:<6.2f}{cuda_text:>11}{reads:>13.2f}"
        )
    failed = sorted({f"{name} {precision}" for (name, precision), r in runners.items() if r.measurement_failed})
    if failed:
        print(f"note: a timed LABPAL measurement gave no step ({', '.join(failed)}); its cycle cost is approximate")
    sampler_text = "n/a" if sampler_syncs is None else str(sampler_syncs)
    print(
        f"training sampler (gather, crop/flip, normalize): {sampler_text} CUDA syncs and {sampler_reads.count} scalar "
        f"reads in {settings.sync_steps} batches"
    )
    plain = ", ".join(f"{p} fwd+bwd {t[0] * 1e3:.2f} / fwd {t[1] * 1e3:.2f}" for p, t in pass_times.items())
    print(f"plain model passes, ms: {plain}")
    print()
    a64 = curvatures["float64"][0]
    print(
        f"LABPAL near-probe curvature a (published estimator; probes at 0, {NEAR:g}, {FAR:g} along the float64 mean "
        f"gradient of {settings.curvature_batches} batch(es)), relative error against float64:"
    )
    columns = ("a, fit in float64 (LABPAL)", "rel. error", "a, fit in float32", "rel. error")
    print(f"{'precision':<16}{columns[0]:>26}{columns[1]:>12}{columns[2]:>24}{columns[3]:>12}")
    for key in ("float64", *PRECISIONS):
        fit64, fit32 = curvatures[key]
        label = f"{key} (imitated)" if key == "tf32" and device.type == "cpu" else key
        error64, error32 = abs(fit64 - a64) / abs(a64), abs(fit32 - a64) / abs(a64)
        print(f"{label:<16}{fit64:>26.4f}{error64:>12.2e}{fit32:>24.4f}{error32:>12.2e}")
    resolution = curvatures["resolution"][0]
    relative = resolution / abs(a64)
    print(f"float32 resolution of a (one rounding of each probe loss): +-{resolution:.3g} ({relative:.1e} relative)")
    print()
    print(f"fused multi-run training (lsbench.fused; {settings.repeats} repeats x {settings.steps} timed steps):")
    for line in fused:
        print(line)
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
