"""PAL does what thesis Algorithm 8 and Section 4.4.2 say on functions whose lines are exact parabolas."""

import itertools
import math

import pytest
import torch

from lsbench.optim import PAL


def vec(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def quadratic(n: int = 10, condition: float = 10.0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, math.log10(condition), n, dtype=torch.float64)
    hessian = basis @ torch.diag(eigenvalues) @ basis.T
    linear = torch.randn(n, generator=generator, dtype=torch.float64)
    return hessian, linear


def quadratic_loss(x, hessian, linear):
    return 0.5 * x @ hessian @ x - linear @ x


def test_first_step_lands_on_the_vertex_of_a_1d_parabola():
    x = vec(3.0)
    opt = PAL([x], measuring_step_size=0.1, update_step_adaptation=1.0, direction_adaptation=0.0, max_step_size=100)
    opt.step(lambda: 2.5 * (x[0] - 0.7) ** 2 + 1.0)
    assert abs(x.item() - 0.7) < 1e-8


def test_first_step_lands_on_the_line_vertex_of_a_quadratic():
    hessian, linear = quadratic()
    x = torch.ones(10, dtype=torch.float64, requires_grad=True)
    gradient = (hessian @ x - linear).detach()
    expected = x.detach() - (gradient @ gradient) / (gradient @ hessian @ gradient) * gradient
    opt = PAL([x], measuring_step_size=0.5, update_step_adaptation=1.0, direction_adaptation=0.0, max_step_size=1e3)
    opt.step(lambda: quadratic_loss(x, hessian, linear))
    torch.testing.assert_close(x.detach(), expected, atol=1e-8, rtol=0)


def test_loss_decreases_monotonically_to_the_optimum_of_a_quadratic():
    """Thesis Proposition 1: with α = 1 and β = 0, PAL is steepest descent with exact line search."""
    hessian, linear = quadratic()
    optimum = torch.linalg.solve(hessian, linear)
    best = quadratic_loss(optimum, hessian, linear).item()
    x = torch.full((10,), 5.0, dtype=torch.float64, requires_grad=True)
    opt = PAL([x], measuring_step_size=0.5, update_step_adaptation=1.0, direction_adaptation=0.0, max_step_size=1e3)
    losses = [quadratic_loss(x, hessian, linear).item()]
    for _ in range(300):
        opt.step(lambda: quadratic_loss(x, hessian, linear))
        losses.append(quadratic_loss(x, hessian, linear).item())
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(losses))
    assert losses[-1] - best < 1e-8


def test_case_one_multiplies_the_vertex_step_by_alpha():
    x = vec(3.0)
    opt = PAL([x], measuring_step_size=0.1, update_step_adaptation=1.5, direction_adaptation=0.0, max_step_size=100)
    opt.step(lambda: (x[0] - 1.0) ** 2)
    assert x.item() == pytest.approx(3.0 - 1.5 * 2.0, abs=1e-10)
    assert opt.effective_lr.item() == pytest.approx(3.0 / 4.0, abs=1e-10)  # s_upd / |g| = 3 / 4


def test_case_two_steps_to_the_measuring_point_on_a_concave_line():
    x = vec(1.0)
    opt = PAL([x], measuring_step_size=0.3, update_step_adaptation=1.7, direction_adaptation=0.0, max_step_size=100)
    opt.step(lambda: -(x[0] ** 2) - x[0])
    assert x.item() == pytest.approx(1.0 + 0.3, abs=1e-12)  # α is not applied in case 2


def test_linear_loss_is_case_two():
    x = vec(1.0, 2.0)
    opt = PAL([x], measuring_step_size=0.25, update_step_adaptation=1.0, direction_adaptation=0.0, max_step_size=10)
    opt.step(lambda: 3.0 * x[0] + 4.0 * x[1])
    torch.testing.assert_close(x.detach(), torch.tensor([1.0 - 0.15, 2.0 - 0.2], dtype=torch.float64))


def test_case_three_makes_no_update_at_a_stationary_point():
    x = vec(2.0)
    opt = PAL([x], measuring_step_size=0.1, direction_adaptation=0.0)
    opt.step(lambda: (x[0] - 2.0) ** 2)
    assert x.item() == 2.0
    assert not opt.updated.item()


def test_case_three_with_an_uphill_direction_updates_the_buffer_but_not_the_parameters():
    x = vec(0.0)
    opt = PAL([x], measuring_step_size=0.1, direction_adaptation=0.9, max_step_size=100)
    opt.state[x]["direction"] = torch.tensor([10.0], dtype=torch.float64)  # an old direction pointing uphill
    opt.step(lambda: (x[0] - 1.0) ** 2)  # g = -2, d = 0.9 * 10 - 2 = 7, b = -(g·d)/|d| = 2 > 0
    assert x.item() == 0.0
    assert not opt.updated.item()
    torch.testing.assert_close(opt.state[x]["direction"], torch.tensor([7.0], dtype=torch.float64))


def test_max_step_size_caps_the_step():
    x = vec(100.0)
    opt = PAL([x], measuring_step_size=0.1, update_step_adaptation=1.0, direction_adaptation=0.0, max_step_size=2.0)
    opt.step(lambda: (x[0] - 0.0) ** 2)
    assert x.item() == pytest.approx(98.0, abs=1e-10)


def test_nan_probe_restores_the_line_origin_exactly():
    x = vec(0.3, -1.2)
    origin = x.detach().clone()
    calls = []

    def closure():
        calls.append(1)
        loss = (x**2).sum()
        return loss if len(calls) == 1 else loss * float("nan")

    opt = PAL([x], measuring_step_size=0.1)
    opt.step(closure)
    assert torch.equal(x.detach(), origin)
    assert not opt.updated.item()
    assert len(calls) == 2
