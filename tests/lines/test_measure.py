"""The batched line measurement equals one forward pass per step size and batch (BatchNorm included)."""

from __future__ import annotations

import pytest
import torch

from lsbench.lines.measure import LineScanner, default_layout
from lsbench.lines.settings import step_size_grid
from lsbench.problems import build_problem

# (problem, batch size, measured samples): digits with a last, smaller batch; ResNet-20 with BatchNorm on
# CIFAR-shaped images (kept small: a CPU forward of ResNet-20 costs milliseconds per image).
CASES = [("digits_mlp", 32, 150), ("digits_cnn", 32, 150), ("cifar10shaped_resnet20", 16, 40)]


def _line(name: str, batch_size: int, samples: int) -> tuple:
    torch.manual_seed(0)
    problem = build_problem(name, seed=1, batch_size=batch_size)
    origin = [p.detach().clone() for p in problem.model.parameters()]
    direction = [torch.randn_like(p) for p in origin]
    norm = torch.stack([d.square().sum() for d in direction]).sum().sqrt()
    direction = [d / norm for d in direction]
    data = problem.train.dataset()
    return problem, origin, direction, data.inputs[:samples], data.targets[:samples]


@pytest.mark.parametrize(("name", "batch_size", "samples"), CASES)
@pytest.mark.parametrize(("chunk", "group"), [(None, None), (4, 3), (1, 2)])
def test_batched_scan_equals_the_plain_loop(name: str, batch_size: int, samples: int, chunk, group) -> None:
    problem, origin, direction, inputs, targets = _line(name, batch_size, samples)
    steps = step_size_grid(-0.5, 0.5, 0.1)
    scanner = LineScanner(problem.model, problem.loss_fn, 1e-4, steps, chunk=chunk, group=group)
    batched = scanner.losses(origin, direction, inputs, targets, batch_size)
    looped = scanner.losses_looped(origin, direction, inputs, targets, batch_size)
    assert batched.shape == (len(steps), samples)
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-5)


def test_the_measured_function_is_the_training_objective_with_batch_statistics() -> None:
    """At s = 0 the line of a batch is the trainer's batch objective in train mode (batch statistics, L2 term), and
    measuring leaves the model's running statistics and parameters untouched."""
    problem, origin, direction, inputs, targets = _line("digits_cnn", 32, 32)
    model = problem.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scanner = LineScanner(model, problem.loss_fn, 1e-2, [-0.1, 0.0, 0.1])
    line = scanner.line(origin, direction, inputs, targets, 32, keep_per_sample=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed"
    with torch.no_grad():
        expected = problem.loss_fn(model(inputs), targets).double()
        expected += 0.5 * 1e-2 * sum(p.double().square().sum() for p in model.parameters())
    torch.testing.assert_close(line.losses[1], expected, rtol=0, atol=1e-6)
    # The L2 term along the line is exact: the objective at s = 0.1 of a model moved there.
    with torch.no_grad():
        for p, d in zip(model.parameters(), direction, strict=True):
            p.add_(0.1 * d)
        moved = problem.loss_fn(model(inputs), targets).double()
        moved += 0.5 * 1e-2 * sum(p.double().square().sum() for p in model.parameters())
    torch.testing.assert_close(line.losses[2], moved, rtol=0, atol=1e-5)


def test_gradient_matches_autograd_on_the_model() -> None:
    problem, origin, _, inputs, targets = _line("digits_cnn", 32, 32)
    scanner = LineScanner(problem.model, problem.loss_fn, 0.0, [0.0, 0.1])
    gradient = scanner.gradient(origin, inputs, targets)
    problem.loss_fn(problem.model(inputs), targets).backward()
    for g, p in zip(gradient, problem.model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=1e-6)


def test_large_convolutional_models_loop_step_sizes_on_a_cpu() -> None:
    cpu = torch.device("cpu")
    assert default_layout(build_problem("cifar10shaped_resnet20", seed=1).model, cpu) == (1, 1)
    assert default_layout(build_problem("digits_cnn", seed=1).model, cpu)[0] > 1
    chunk, group = default_layout(build_problem("digits_mlp", seed=1).model, cpu)
    assert chunk > 1 and group > 1


def test_unsupported_loss_is_refused() -> None:
    problem = build_problem("digits_mlp", seed=1)
    with pytest.raises(ValueError, match="cross-entropy"):
        LineScanner(problem.model, torch.nn.MSELoss(), 0.0, [0.0])
