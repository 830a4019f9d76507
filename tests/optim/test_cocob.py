"""COCOB-Backprop: the coin-betting update of Orabona & Tommasi (2017), Algorithm 2, by hand."""

import copy

import torch

from lsbench.optim.cocob import COCOB

EPS = 1e-8


def coin_betting(w1, gradients, alpha):
    """The paper's per-coordinate formulas in plain Python floats: the weights after each gradient."""
    L, G, theta, reward, bet = EPS, 0.0, 0.0, 0.0, 0.0
    weights = []
    for g in gradients:
        L = max(L, abs(g))
        G += abs(g)
        theta -= g
        reward = max(reward - g * bet, 0.0)
        bet = theta / (L * max(G + L, alpha * L)) * (L + reward)
        weights.append(w1 + bet)
    return weights


def test_first_step_moves_every_coordinate_by_minus_sign_over_alpha():
    w = torch.tensor([0.5, -0.25], dtype=torch.float64, requires_grad=True)
    opt = COCOB([w], alpha=100.0)
    opt.step(lambda: (torch.tensor([3.0, -0.2], dtype=torch.float64) * w).sum())  # g = (3, -0.2)
    torch.testing.assert_close(w.detach(), torch.tensor([0.5 - 0.01, -0.25 + 0.01], dtype=torch.float64))


def test_three_steps_match_the_coin_betting_formulas():
    # Loss ½ Σ s_i (w_i - c_i)²: the gradients s_i (w_i - c_i) change with the bets, and the first coordinate's
    # gradient changes sign, so rewards both grow and get clipped at zero.
    alpha = 4.0
    scales = torch.tensor([2.0, 0.5], dtype=torch.float64)
    centers = torch.tensor([0.3, -1.0], dtype=torch.float64)
    w = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    w1 = w.detach().clone()
    opt = COCOB([w], alpha=alpha)

    gradients = [[], []]
    for _ in range(3):
        current = w.detach().clone()
        g = scales * (current - centers)
        for i in range(2):
            gradients[i].append(g[i].item())
        opt.step(lambda: 0.5 * (scales * (w - centers) ** 2).sum())
        for i in range(2):
            expected = coin_betting(w1[i].item(), gradients[i], alpha)[-1]
            assert abs(w[i].item() - expected) < 1e-15
    assert gradients[0][0] > 0 > gradients[0][1]  # the sign change the example was built for
    # Hand-checked first step: bet = -g/(|g| max(2|g|, α|g|)) |g| = -sign(g)/α.
    assert coin_betting(0.5, gradients[0][:1], alpha)[0] == 0.5 - 1 / alpha
    # The initial weights are a copy (the reference port aliased them): they do not move with the parameters.
    assert torch.equal(opt.state[w]["initial_weight"], w1)


def test_coordinate_without_gradient_stays_put_and_state_round_trips():
    w = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    opt = COCOB([w], alpha=100.0)
    for _ in range(3):
        opt.step(lambda: (w[0] - 2.0) ** 2)
    assert w[1].item() == 1.0
    twin = torch.tensor(w.detach().tolist(), dtype=torch.float64, requires_grad=True)
    restored = COCOB([twin], alpha=100.0)
    restored.load_state_dict(copy.deepcopy(opt.state_dict()))  # state_dict() holds the live tensors
    opt.step(lambda: (w[0] - 2.0) ** 2)
    restored.step(lambda: (twin[0] - 2.0) ** 2)
    assert torch.equal(w.detach(), twin.detach())
    assert opt.effective_lr.item() > 0
