"""ALI-G: the clipped Polyak step min(ℓ / (‖g‖² + δ), λ_max) and its momentum correction (thesis Eq. 2.50)."""

import pytest
import torch

from lsbench.optim.alig import ALIG

A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)


def quadratic(theta):
    """ℓ = ½ θᵀAθ + 0.5: gradient Aθ."""
    return lambda: 0.5 * theta @ A @ theta + 0.5


@pytest.mark.parametrize("max_lr", [None, 10.0, 0.05])
def test_polyak_step_on_a_quadratic(max_lr):
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    start = theta.detach().clone()
    opt = ALIG([theta], max_lr=max_lr, momentum=0.0, epsilon=1e-5)
    opt.step(quadratic(theta))
    loss = 0.5 * start @ A @ start + 0.5
    gradient = A @ start
    gamma = loss / (gradient @ gradient + 1e-5)
    if max_lr is not None:
        gamma = min(gamma, max_lr)
    torch.testing.assert_close(theta.detach(), start - gamma * gradient, rtol=0, atol=1e-15)
    assert opt.effective_lr.item() == pytest.approx(float(gamma), rel=1e-15)
    assert bool(opt.updated)
    if max_lr == 0.05:
        assert opt.effective_lr.item() == 0.05  # the cap is active here


def test_momentum_follows_the_published_correction_over_two_steps():
    mu, max_lr = 0.9, 0.2
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = ALIG([theta], max_lr=max_lr, momentum=mu)
    expected = theta.detach().clone()
    buffer = torch.zeros(2, dtype=torch.float64)
    for _ in range(2):
        loss = 0.5 * expected @ A @ expected + 0.5
        gradient = A @ expected
        gamma = min(loss / (gradient @ gradient + 1e-5), max_lr)
        buffer = mu * buffer - gamma * gradient
        expected = expected - gamma * gradient + mu * buffer
        opt.step(quadratic(theta))
        torch.testing.assert_close(theta.detach(), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_loss_makes_no_update(bad):
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = ALIG([theta], max_lr=0.1, momentum=0.0)
    opt.step(lambda: (theta**2).sum() + bad)
    assert theta.detach().tolist() == [1.0, -2.0] and not bool(opt.updated)
    assert opt.effective_lr.item() == 0.0


@pytest.mark.parametrize("bad", [-5.0, float("inf")])
def test_a_momentum_only_step_reports_its_movement(bad):
    # γ = 0 (negative loss) or not finite: the gradient term takes no step, the momentum term still moves θ
    mu = 0.9
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = ALIG([theta], max_lr=0.2, momentum=mu)
    opt.step(quadratic(theta))
    buffer = opt.state[theta]["momentum_buffer"].clone()
    before = theta.detach().clone()
    gradient = A @ before
    opt.step(lambda: 0.5 * theta @ A @ theta + bad)
    moved = theta.detach() - before
    torch.testing.assert_close(moved, mu * mu * buffer, rtol=0, atol=1e-15)
    assert bool(opt.updated) and moved.norm().item() > 0
    assert opt.effective_lr.item() == pytest.approx((moved.norm() / gradient.norm()).item(), rel=1e-12)


def test_a_step_that_moves_nothing_reports_no_update():
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = ALIG([theta], max_lr=0.2, momentum=0.9)  # empty momentum buffer, negative loss
    opt.step(lambda: 0.5 * theta @ A @ theta - 5.0)
    assert theta.detach().tolist() == [1.0, -2.0] and not bool(opt.updated)
    assert opt.effective_lr.item() == 0.0
    opt = ALIG([theta], max_lr=0.2, momentum=0.0)  # zero gradient, positive loss: γ > 0 but no movement
    opt.step(lambda: (theta * 0).sum() + 1.0)
    assert theta.detach().tolist() == [1.0, -2.0] and not bool(opt.updated)
