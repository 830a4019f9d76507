"""Inferences per second of the batched line measurement against a plain loop, on the same line, in one run.

A line measurement evaluates every sample of the measured set at every step size (Sec. 5.3). The plain loop runs one
forward pass per step size and batch (:meth:`LineScanner.losses_looped`); the batched scan evaluates chunks of step
sizes (and groups of batches) per ``vmap``-ed forward pass, in the layout the trainer uses on that device
(:func:`lsbench.lines.measure.default_layout`), plus the alternative layouts for comparison. An inference is one
sample at one step size. Both paths are timed on the same line, interleaved, median over repeats; the figure is the
ratio batched / loop. The digits problems use the whole digits training set (1,197 images, batch 32); ResNet-20
uses CIFAR-shaped synthetic images at batch 128 (the cost does not depend on the pixels).

With a GPU (``--device cuda``), the thesis' measurement is also timed: one line of 167 step sizes x 4,000 images of
ResNet-20 (the 8 % CIFAR-10 subset's size), and the projected time of its 10,000 lines against the thesis' "almost
three weeks" on a GTX 1080 Ti.

Usage: ``python benchmarks/line_scan.py [--device cpu|cuda] [--repeats 3] [--steps 48]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lsbench.lines.measure import LineScanner, default_layout
from lsbench.lines.settings import ScanSettings
from lsbench.problems import build_problem
from optim_overhead import hardware, timed

THESIS_WEEKS = 3  # "almost three weeks" per training of 10,000 lines on one GTX 1080 Ti (Sec. 5.3)


def line_of(name: str, batch_size: int, samples: int, device: torch.device) -> tuple:
    """A problem, a random unit direction through its initial parameters, and ``samples`` measured samples."""
    problem = build_problem(name, seed=0, device=device, batch_size=batch_size)
    origin = [p.detach().clone() for p in problem.model.parameters()]
    generator = torch.Generator(device=device).manual_seed(0)
    direction = [torch.randn(p.shape, generator=generator, device=device) for p in origin]
    norm = torch.stack([d.square().sum() for d in direction]).sum().sqrt()
    direction = [d / norm for d in direction]
    if name.startswith("digits"):
        data = problem.train.dataset()
        inputs, targets = data.inputs[:samples], data.targets[:samples]
    else:
        batches = [problem.train.next_batch() for _ in range(-(-samples // batch_size))]
        inputs = torch.cat([b[0] for b in batches])[:samples]
        targets = torch.cat([b[1] for b in batches])[:samples]
    return problem, origin, direction, inputs, targets


def compare(name: str, batch_size: int, samples: int, steps: list[float], device: torch.device, repeats: int) -> None:
    problem, origin, direction, inputs, targets = line_of(name, batch_size, samples, device)
    default = default_layout(problem.model, device)
    layouts = list(dict.fromkeys([default, (1, 4), (16, 1), (16, 4)]))
    scanners = {
        layout: LineScanner(problem.model, problem.loss_fn, 0.0, steps, chunk=layout[0], group=layout[1])
        for layout in layouts
    }
    loop = scanners[default]
    warm = inputs[:batch_size], targets[:batch_size]
    for scanner in scanners.values():  # first calls build vmap's and the kernels' caches
        scanner.losses(origin, direction, *warm, batch_size)
    loop.losses_looped(origin, direction, *warm, batch_size)
    times: dict[object, list[float]] = {"loop": [], **{layout: [] for layout in layouts}}
    for _ in range(repeats):
        times["loop"].append(timed(device, lambda: loop.losses_looped(origin, direction, inputs, targets, batch_size)))
        for layout, scanner in scanners.items():
            times[layout].append(
                timed(device, lambda s=scanner: s.losses(origin, direction, inputs, targets, batch_size))
            )
    inferences = len(steps) * samples
    base = statistics.median(times["loop"])
    print(f"{name}: {len(steps)} step sizes x {samples} samples, batch {batch_size}")
    print(f"  {'plain loop':<28} {inferences / base:>12,.0f} inferences/s   1.00x")
    for layout in layouts:
        seconds = statistics.median(times[layout])
        mark = "  (trainer's layout)" if layout == default else ""
        label = f"batched chunk {layout[0]} group {layout[1]}"
        print(f"  {label:<28} {inferences / seconds:>12,.0f} inferences/s {base / seconds:>6.2f}x{mark}")


def thesis_line(device: torch.device, repeats: int) -> None:
    """One line of the thesis' measurement on this device and the projected time of 10,000 lines."""
    steps = ScanSettings().step_sizes
    problem, origin, direction, inputs, targets = line_of("cifar10shaped_resnet20", 128, 4_000, device)
    scanner = LineScanner(problem.model, problem.loss_fn, 0.0, steps)
    scanner.losses(origin, direction, inputs[:128], targets[:128], 128)
    seconds = statistics.median(
        timed(device, lambda: scanner.losses(origin, direction, inputs, targets, 128)) for _ in range(repeats)
    )
    days = seconds * 10_000 / 86_400
    print(
        f"thesis line (ResNet-20, {len(steps)} step sizes x 4,000 images, chunk {scanner.chunk} group "
        f"{scanner.group}): {seconds:.2f} s per line, {len(steps) * 4_000 / seconds:,.0f} inferences/s"
    )
    print(
        f"  10,000 lines: {days:.2f} days on this device against the thesis' almost {THESIS_WEEKS} weeks "
        f"({THESIS_WEEKS * 7 / days:.0f}x faster)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=48, help="step sizes per line (of the thesis' 167)")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(hardware(device))
    steps = ScanSettings().step_sizes[: args.steps]
    compare("digits_mlp", 32, 1_197, steps, device, args.repeats)
    compare("digits_cnn", 32, 1_197, steps, device, args.repeats)
    compare("cifar10shaped_resnet20", 128, 256 if device.type == "cpu" else 4_000, steps, device, args.repeats)
    if device.type == "cuda":
        thesis_line(device, args.repeats)


if __name__ == "__main__":
    main()
