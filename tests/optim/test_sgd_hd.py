"""SGD-HD: the learning rate moves by β g_t·u_{t-1} before each SGD step (thesis Eq. 2.48-2.49)."""

import pytest
import torch

from lsbench.optim.sgd_hd import SGDHD

SCALES = torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)


def closure(theta):
    return lambda: 0.5 * (SCALES * theta**2).sum()


def test_learning_rate_moves_by_beta_times_gradient_dot_previous_update():
    lr0, beta = 0.1, 0.01
    theta = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = SGDHD([theta], lr=lr0, hypergradient_lr=beta)
    theta0 = theta.detach().clone()

    g1 = SCALES * theta0
    opt.step(closure(theta))  # u_0 = 0: the first step uses α_0
    assert opt.effective_lr.item() == lr0
    theta1 = theta0 - lr0 * g1
    torch.testing.assert_close(theta.detach(), theta1, rtol=0, atol=1e-15)

    g2 = SCALES * theta1
    opt.step(closure(theta))
    lr2 = lr0 + beta * (g2 @ g1).item()  # u_1 = g_1
    assert opt.effective_lr.item() == pytest.approx(lr2, rel=1e-14)
    assert opt.lr.item() == pytest.approx(lr2, rel=1e-14)
    torch.testing.assert_close(theta.detach(), theta1 - lr2 * g2, rtol=0, atol=1e-15)
    assert lr2 > lr0  # consecutive gradients agree (g_2·g_1 > 0): the learning rate grows


def test_with_momentum_the_previous_update_is_the_buffer():
    lr0, beta, mu = 0.05, 0.02, 0.9
    theta = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = SGDHD([theta], lr=lr0, hypergradient_lr=beta, momentum=mu)
    g1 = SCALES * theta.detach()
    opt.step(closure(theta))
    u1 = g1.clone()  # first buffer = g_1
    g2 = SCALES * theta.detach()
    opt.step(closure(theta))
    assert opt.effective_lr.item() == pytest.approx(lr0 + beta * (g2 @ u1).item(), rel=1e-14)
    torch.testing.assert_close(opt.state[theta]["previous_direction"], mu * u1 + g2)


def test_learning_rate_round_trips_through_state_dict():
    theta = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = SGDHD([theta], lr=0.1, hypergradient_lr=0.01)
    for _ in range(3):
        opt.step(closure(theta))
    restored = SGDHD([theta], lr=0.1, hypergradient_lr=0.01)
    restored.load_state_dict(opt.state_dict())
    assert restored.lr.item() == opt.lr.item() != 0.1
