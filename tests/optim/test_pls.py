"""PLS: the line GP, the Wolfe probability, per-sample noise estimates and the one-evaluation-per-step procedure."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from lsbench.optim import ClosureFactory
from lsbench.optim._gp import LineGP, bivariate_normal_cdf, kernel_blocks
from lsbench.optim.pls import PLS, batch_mean_variances

# -- GP --------------------------------------------------------------------------------------------------------------


def test_kernel_derivative_blocks_match_finite_differences():
    a, b, h = np.array([0.0, 0.4, 1.7, 3.0]), np.array([0.2, 1.0, 2.5]), 1e-5
    base = kernel_blocks(a, b, higher=True)

    def diff(key, first):
        plus = kernel_blocks(a + h, b) if first else kernel_blocks(a, b + h)
        minus = kernel_blocks(a - h, b) if first else kernel_blocks(a, b - h)
        return (plus[key] - minus[key]) / (2 * h)

    np.testing.assert_allclose(diff("k", first=False), base["kd"], atol=1e-5)
    np.testing.assert_allclose(diff("k", first=True), base["dk"], atol=1e-5)
    np.testing.assert_allclose(diff("dk", first=False), base["dkd"], atol=1e-5)
    np.testing.assert_allclose(diff("dk", first=True), base["ddk"], atol=1e-5)
    # no a equals a b, so the piecewise-constant third derivatives are smooth here
    plus, minus = kernel_blocks(a + h, b, higher=True), kernel_blocks(a - h, b, higher=True)
    np.testing.assert_allclose((plus["ddk"] - minus["ddk"]) / (2 * h), base["dddk"], atol=1e-5)
    np.testing.assert_allclose(
        (kernel_blocks(a, b + h, higher=True)["ddk"] - kernel_blocks(a, b - h, higher=True)["ddk"]) / (2 * h),
        base["ddkd"],
        atol=1e-5,
    )


def cubic(t):
    return 0.5 * (t - 1.3) ** 2 - 0.02 * (t - 1.3) ** 3, (t - 1.3) - 0.06 * (t - 1.3) ** 2


def test_posterior_mean_interpolates_noise_free_observations_of_a_cubic():
    ts = np.array([0.0, 1.0, 2.5])
    f, df = cubic(ts)
    gp = LineGP([(t, fi, dfi, 0.0, 0.0) for t, fi, dfi in zip(ts, f, df, strict=True)])
    np.testing.assert_allclose(gp.mean(ts), f, atol=1e-8)
    np.testing.assert_allclose(gp.d1(ts), df, atol=1e-8)
    # between observations the mean is the cubic Hermite interpolant, exact for a cubic
    inside = np.linspace(0.05, 2.45, 9)
    mean, d1, d2, d3 = gp.derivatives(inside)
    f_in, df_in = cubic(inside)
    np.testing.assert_allclose(mean, f_in, atol=1e-7)
    np.testing.assert_allclose(d1, df_in, atol=1e-7)
    np.testing.assert_allclose(d2, 1 - 0.12 * (inside - 1.3), atol=1e-6)
    np.testing.assert_allclose(d3, -0.12, atol=1e-6)
    _, cov = gp.joint(ts)
    np.testing.assert_allclose(np.diag(cov), 0.0, atol=1e-6)  # no uncertainty left where it was observed


def test_cell_candidate_is_where_the_mean_slope_reaches_the_target():
    ts = np.array([0.0, 1.0, 2.5])
    f, df = cubic(ts)
    gp = LineGP([(t, fi, dfi, 0.0, 0.0) for t, fi, dfi in zip(ts, f, df, strict=True)])
    (candidate,) = gp.cell_candidates(0.5)
    assert 1.0 < candidate < 2.5
    assert cubic(candidate)[1] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(("h", "k", "rho"), [(0.3, -0.2, 0.5), (-1.0, 0.7, -0.8), (0.0, 0.0, 0.99), (1.5, 0.2, 0.0)])
def test_bivariate_normal_cdf_matches_scipy(h, k, rho):
    expected = multivariate_normal.cdf([h, k], mean=[0, 0], cov=[[1, rho], [rho, 1]])
    assert bivariate_normal_cdf(h, k, rho) == pytest.approx(expected, abs=1e-7)


def test_wolfe_probability_agrees_with_monte_carlo_over_the_posterior():
    c1, low, high = 0.05, -0.1, 1.1
    observations = [(0.0, 0.0, -1.0, 0.02, 0.05), (1.0, -0.35, 0.15, 0.03, 0.08), (2.0, -0.1, 0.9, 0.03, 0.1)]
    gp = LineGP(observations)
    rng = np.random.default_rng(0)
    samples = 200_000  # standard error below 1.2e-3
    for t in (0.3, 0.8, 1.0, 1.5, 3.0):
        mean, cov = gp.joint([0.0, t])  # f(0), f(t), f′(0), f′(t)
        z = rng.multivariate_normal(mean, cov, size=samples, method="eigh")
        armijo = z[:, 1] <= z[:, 0] + c1 * t * z[:, 2]
        curvature = (z[:, 3] >= low) & (z[:, 3] <= high)
        expected = np.mean(armijo & curvature)
        assert gp.wolfe_probability(t, c1, low, high) == pytest.approx(expected, abs=1e-2), t


# -- per-sample statistics -------------------------------------------------------------------------------------------


def brute_force(model, loss_fn, x, y):
    """Each sample's loss and gradient from its own forward and backward pass."""
    losses, grads = [], []
    for i in range(len(x)):
        model.zero_grad()
        loss = loss_fn(model(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    return torch.stack(losses), [torch.stack(g) for g in zip(*grads, strict=True)]


def test_per_sample_variances_match_a_loop_over_samples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    factory = ClosureFactory(model, nn.CrossEntropyLoss(), weight_decay=0.1)  # L2 adds no variance
    params = list(model.parameters())
    loss_var, grad_vars = batch_mean_variances(factory(x, y, seed=3), params)

    losses, grads = brute_force(model, nn.CrossEntropyLoss(), x, y)
    n = len(x)
    expected_loss_var = ((losses**2).mean() - losses.mean() ** 2) / (n - 1)
    torch.testing.assert_close(loss_var, expected_loss_var, rtol=1e-6, atol=0)
    direction = [torch.randn_like(p) for p in params]
    expected_dfvar = sum(
        (((g**2).mean(0) - g.mean(0) ** 2) / (n - 1) * d**2).sum() for g, d in zip(grads, direction, strict=True)
    )
    dfvar = sum((v * d**2).sum() for v, d in zip(grad_vars, direction, strict=True))
    torch.testing.assert_close(dfvar, expected_dfvar, rtol=1e-6, atol=0)
    for v, g in zip(grad_vars, grads, strict=True):
        torch.testing.assert_close(v, g.var(0) / n, rtol=1e-6, atol=1e-15)


def test_per_sample_gradients_under_batchnorm_hold_the_batch_statistics_constant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 2, (8,))
    bn = model[1]
    running = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    loss_var, grad_vars = batch_mean_variances(ClosureFactory(model, nn.CrossEntropyLoss())(x, y), model.parameters())
    assert torch.equal(bn.running_mean, running[0]) and torch.equal(bn.running_var, running[1])
    assert bn.num_batches_tracked == running[2]

    # reference: each sample alone, normalized by the batch's statistics as constants (eval mode, swapped buffers)
    with torch.no_grad():
        hidden = model[0](x)
    bn.eval()
    bn.running_mean.copy_(hidden.mean(0))
    bn.running_var.copy_(hidden.var(0, unbiased=False))
    losses, grads = brute_force(model, nn.CrossEntropyLoss(), x, y)
    with torch.no_grad():
        batch_loss = nn.CrossEntropyLoss()(model(x), y)
    torch.testing.assert_close(losses.mean(), batch_loss)  # the per-sample terms are the batch loss's terms
    torch.testing.assert_close(loss_var, losses.var() / len(x), rtol=1e-6, atol=0)
    for v, g in zip(grad_vars, grads, strict=True):
        torch.testing.assert_close(v, g.var(0) / len(x), rtol=1e-6, atol=1e-15)


# -- the optimizer ---------------------------------------------------------------------------------------------------


class NoisyQuadratic:
    """Least squares on noisy linear data: every batch loss is a quadratic in θ, the batches disagree."""

    def __init__(self, dim: int = 6, samples: int = 512, batch: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(samples, dim, generator=generator, dtype=torch.float64)
        w = torch.randn(dim, 1, generator=generator, dtype=torch.float64)
        self.y = self.x @ w + 0.3 * torch.randn(samples, 1, generator=generator, dtype=torch.float64)
        self.model = nn.Linear(dim, 1, bias=False).double()
        with torch.no_grad():
            self.model.weight.fill_(2.0)
        self.factory = ClosureFactory(self.model, nn.MSELoss())
        self.batch = batch
        self.calls = []

    def closure(self, step: int):
        start = (step * self.batch) % len(self.x)
        closure = self.factory(self.x[start : start + self.batch], self.y[start : start + self.batch], seed=step)
        self.calls.append(closure)
        return closure

    def full_loss(self) -> float:
        with torch.no_grad():
            return nn.MSELoss()(self.model(self.x), self.y).item()


def test_one_closure_call_and_two_passes_per_step():
    problem = NoisyQuadratic()
    opt = PLS(problem.model.parameters(), initial_step_size=0.1)
    for step in range(12):
        opt.step(problem.closure(step))
        assert [c.calls for c in problem.calls] == [1] * (step + 1)
        assert opt.forward_passes == opt.backward_passes == 2 * (step + 1)  # closure + the per-sample pass


def test_accepts_on_a_noisy_quadratic_and_reports_the_accepted_step():
    problem = NoisyQuadratic()
    opt = PLS(problem.model.parameters(), initial_step_size=0.1)  # the reference defaults c1 = 0.05, cW = 0.3
    start = problem.full_loss()
    accepted = []
    for step in range(40):
        opt.step(problem.closure(step))
        if opt.updated.item():
            accepted.append(opt.effective_lr.item())
            assert opt.shared["t"] == 0.0  # a new line starts at the accepted point
    assert not math.isnan(problem.full_loss())
    assert len(accepted) >= 10  # most lines end after one or two evaluations on a quadratic
    assert all(a > 0 for a in accepted)
    assert problem.full_loss() < 0.05 * start


def test_abort_takes_a_tiny_step_and_resets_the_initial_step():
    problem = NoisyQuadratic()
    # cW = 1 is never reached with noisy observations, and one evaluation per line is the budget
    opt = PLS(problem.model.parameters(), initial_step_size=0.1, acceptance_threshold=1.0, max_steps=1)
    opt.step(problem.closure(0))  # origin
    opt.step(problem.closure(1))  # t = 1, not accepted
    assert not opt.updated.item() and opt.shared["t"] == 1.0
    weight = problem.model.weight.detach().clone()
    direction = opt.state[problem.model.weight]["direction"].clone()
    opt.step(problem.closure(2))  # abort: t = 0.01, accepted unconditionally
    assert opt.updated.item()
    assert opt.effective_lr.item() == pytest.approx(0.01 * 0.1)
    torch.testing.assert_close(problem.model.weight.detach(), weight + (0.01 - 1.0) * 0.1 * direction)
    assert opt.step_size == pytest.approx(0.1)  # α₀ falls back to the running average (still the initial one)


def test_state_dict_round_trip_in_the_middle_of_a_line():
    def run(opt, problem, steps):
        for step in steps:
            opt.step(problem.closure(step))

    problem = NoisyQuadratic()
    opt = PLS(problem.model.parameters(), initial_step_size=1.0, momentum=0.4)
    run(opt, problem, range(7))
    saved_model, saved_opt = copy.deepcopy(problem.model.state_dict()), copy.deepcopy(opt.state_dict())
    run(opt, problem, range(7, 20))

    copy_ = NoisyQuadratic()
    copy_.model.load_state_dict(saved_model)
    restored = PLS(copy_.model.parameters(), initial_step_size=1.0, momentum=0.4)
    restored.load_state_dict(saved_opt)
    run(restored, copy_, range(7, 20))
    assert torch.equal(problem.model.weight, copy_.model.weight)
    assert restored.shared["observations"] == opt.shared["observations"]


def test_needs_a_batch_closure():
    problem = NoisyQuadratic()
    opt = PLS(problem.model.parameters())
    with pytest.raises(TypeError, match="BatchClosure"):
        opt.step(lambda: problem.full_loss())


def test_invalid_hyperparameters_raise():
    params = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="expl_policy"):
        PLS(params, expl_policy="cubic")
    with pytest.raises(ValueError, match="acceptance_threshold"):
        PLS(params, acceptance_threshold=1.5)


def test_trains_digits_mlp():
    from lsbench.train import TrainConfig, train

    # a thesis-grid point (C.4.1: c1 ∈ {0.3, 0.4}, cW ∈ {0.1, 0.2}, α0 ∈ {0.001, …, 1}, β ∈ {0, 0.4, 0.9})
    hparams = {"armijo_constant": 0.3, "acceptance_threshold": 0.2, "initial_step_size": 0.1, "momentum": 0.4}
    result = train(TrainConfig.create("digits_mlp", "pls", hparams, seed=1))
    assert result.status == "completed"
    assert result.final["test_acc"] >= 0.85


def exact_posterior_mean(observations, s):
    """The GP posterior mean from a plain solve of the un-jittered Gram matrix."""
    t, f, df, fvar, dfvar = np.asarray(observations, dtype=np.float64).T
    b = kernel_blocks(t, t)
    gram = np.block([[b["k"] + np.diag(fvar), b["kd"]], [b["dk"], b["dkd"] + np.diag(dfvar)]])
    weights = np.linalg.solve(gram, np.concatenate([f, df]))
    q = kernel_blocks(np.asarray(s, dtype=np.float64), t)
    return np.concatenate([q["k"], q["kd"]], axis=1) @ weights


@pytest.mark.parametrize("noise", [0.0, 1e-10, 1e-4])
def test_well_conditioned_posterior_is_exact_without_jitter(noise):
    ts = np.array([0.0, 1.0, 2.5])
    f, df = cubic(ts)
    observations = [(t, fi, dfi, noise, noise) for t, fi, dfi in zip(ts, f, df, strict=True)]
    gp = LineGP(observations)
    assert not gp.jittered
    s = np.linspace(0.0, 3.0, 13)
    np.testing.assert_allclose(gp.mean(s), exact_posterior_mean(observations, s), rtol=0, atol=1e-12)


def test_duplicate_observations():
    f, df = cubic(np.array([0.0, 1.0]))
    # noise-free and repeated: the Gram matrix is singular, the jitter makes it usable
    gp = LineGP([(0.0, f[0], df[0], 0.0, 0.0), (1.0, f[1], df[1], 0.0, 0.0), (1.0, f[1], df[1], 0.0, 0.0)])
    assert gp.jittered
    np.testing.assert_allclose(gp.mean([0.0, 1.0]), f, atol=1e-6)
    np.testing.assert_allclose(gp.d1([0.0, 1.0]), df, atol=1e-6)
    assert 0.0 <= gp.wolfe_probability(1.0, 0.05, -0.1, 1.1) <= 1.0
    # noisy and repeated: two observations of variance v are one of their mean with variance v / 2, exactly
    v = 1e-3
    twice = LineGP([(0.0, f[0], df[0], v, v), (1.0, 0.2, 0.1, v, v), (1.0, 0.4, 0.3, v, v)])
    once = LineGP([(0.0, f[0], df[0], v, v), (1.0, 0.3, 0.2, v / 2, v / 2)])
    assert not twice.jittered
    s = np.linspace(0.0, 2.0, 9)
    np.testing.assert_allclose(twice.mean(s), once.mean(s), rtol=0, atol=1e-9)
    np.testing.assert_allclose(twice.joint(s)[1], once.joint(s)[1], rtol=0, atol=1e-7)  # prior entries ~1e3
