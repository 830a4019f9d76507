"""The exact line search lands on the minimum of the batch loss along −g within its budget of probes."""

import math

import pytest
import torch

from lsbench.optim import ClosureFactory, ExactLineSearch, TrainingContext, build_optimizer, get_optimizer
from lsbench.optim._linesearch import flat_dot, flat_norm
from lsbench.optim.exact import minimize_on_line
from lsbench.problems import build_problem


def search(loss, **settings):
    probes = []

    def loss_at(step):
        probes.append(step)
        return loss(step)

    options = {"initial_step": 0.1, "max_step": 10.0, "max_evaluations": 20} | settings
    found = minimize_on_line(loss_at, loss(0.0), **options)
    assert found.evaluations == len(probes) <= options["max_evaluations"]
    assert found.loss == min([loss(0.0), *map(loss, probes)])  # the lowest point measured
    return found, probes


@pytest.mark.parametrize("minimum", [1e-4, 0.03, 0.1, 0.37, 1.0, 2.5, 7.3, 9.99])
def test_a_parabola_is_minimized_to_rounding_error_within_twenty_probes(minimum):
    found, _ = search(lambda s: 3.0 * (s - minimum) ** 2 + 1.0)
    assert found.step == pytest.approx(minimum, rel=1e-6)


@pytest.mark.parametrize("minimum", [0.02, 0.5, 3.0])
def test_a_smooth_non_quadratic_line_is_minimized_to_the_brackets_resolution(minimum):
    found, _ = search(lambda s: math.exp(s - minimum) - s + 0.1 * math.sin(s - minimum) ** 4)
    assert found.step == pytest.approx(minimum, rel=1e-4, abs=1e-6)
    assert found.bracket < 1e-2 * max(minimum, 0.1)


def test_beyond_the_cap_the_step_is_the_cap():
    found, probes = search(lambda s: (s - 50.0) ** 2)
    assert found.step == 10.0 and max(probes) == 10.0


def test_probes_past_a_non_finite_loss_back_away_from_it():
    found, probes = search(lambda s: (s - 1.0) ** 2 if s < 1.5 else math.nan)
    assert found.step == pytest.approx(1.0, rel=1e-6)
    assert any(s >= 1.5 for s in probes)


def test_a_line_without_a_lower_point_gives_no_step():
    found, probes = search(lambda s: 1.0 + s)  # rises at once: only shrinking probes, none lower than l(0)
    assert found.step == 0.0 and found.loss == 1.0 and len(probes) == 20
    assert min(probes) < 1e-8


def test_a_budget_spent_while_still_descending_keeps_the_lowest_probe():
    found, probes = search(lambda s: -s, max_evaluations=3, max_step=1e6)
    assert probes == [0.1, 0.2, 0.4] and found.step == 0.4 and found.bracket == math.inf


def quadratic(dimension: int = 20, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
    hessian = factor @ factor.T + torch.eye(dimension, dtype=torch.float64)
    minimum = torch.randn(dimension, generator=generator, dtype=torch.float64)
    x = torch.zeros(dimension, dtype=torch.float64, requires_grad=True)
    calls = []

    def closure():
        calls.append(1)
        return 0.5 * (x - minimum) @ hessian @ (x - minimum)

    return x, hessian, closure, calls


def test_each_step_lands_on_the_minimum_of_the_quadratic_along_the_negative_gradient():
    x, hessian, closure, calls = quadratic()
    opt = ExactLineSearch([x])
    for step in range(1, 6):
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(closure(), x)
        direction = gradient / gradient.norm()
        distance = (gradient.norm() / (direction @ hessian @ direction)).item()  # argmin_s l(θ0 - s·ĝ)
        start = x.detach().clone()
        calls.clear()
        opt.step(closure)
        moved = x.detach() - start
        assert moved.norm().item() == pytest.approx(distance, rel=1e-9)
        assert torch.allclose(moved / moved.norm(), -direction, atol=1e-12)
        assert opt.effective_lr.item() == pytest.approx(distance / gradient.norm().item(), rel=1e-9)
        assert bool(opt.updated)
        assert len(calls) == 1 + opt.last_evaluations and opt.last_evaluations <= 20
        assert (opt.forward_passes, opt.backward_passes) == (step * 21, step)


def test_a_zero_gradient_or_a_non_finite_loss_makes_no_update():
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = ExactLineSearch([x])
    opt.step(lambda: (x * 0).sum())
    assert not bool(opt.updated) and opt.effective_lr.item() == 0.0 and opt.forward_passes == 1
    opt.step(lambda: x.sum() * math.inf)
    assert not bool(opt.updated) and torch.equal(x.detach(), torch.ones(3, dtype=torch.float64))


def test_the_registry_builds_it_with_the_constructors_defaults():
    entry = get_optimizer("exact_ls")
    assert {hp.name: hp.default for hp in entry.hparams} == {
        "initial_step_size": 0.1,
        "max_step_size": 10.0,
        "max_evaluations": 20,
    }
    with pytest.raises(ValueError, match="max_evaluations"):
        entry.resolve({"max_evaluations": 0})
    with pytest.raises(ValueError, match="Invalid initial_step_size"):
        ExactLineSearch([torch.zeros(1, requires_grad=True)], initial_step_size=0.0)


def test_on_the_digits_mlp_the_new_batch_gradient_is_orthogonal_to_the_step():
    """The defining property of an exact line search (thesis Figure 4.12: a 90° angle at the update point)."""
    problem = build_problem("digits_mlp", seed=1)
    params = list(problem.model.parameters())
    context = TrainingContext(total_steps=30, batch_size=32, train_size=problem.train_size)
    opt = build_optimizer("exact_ls", params, {}, context)
    closures = ClosureFactory(problem.model, problem.loss_fn)
    for step in range(30):
        inputs, targets = problem.train.next_batch()
        with torch.enable_grad():
            loss = closures.loss(inputs, targets)
            before = torch.autograd.grad(loss, params)
        opt.step(closures(inputs, targets, seed=step))
        with torch.enable_grad():
            new_loss = closures.loss(inputs, targets)
            after = torch.autograd.grad(new_loss, params)
        cosine = (flat_dot(before, after) / (flat_norm(before) * flat_norm(after))).item()
        assert abs(cosine) < 1e-2, (step, cosine)  # within 0.6° of orthogonal
        assert new_loss.item() < loss.item() and bool(opt.updated)
        assert opt.last_evaluations == 20
