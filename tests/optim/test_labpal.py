"""LABPAL's measurement, step accounting, schedule and noise adaptation (thesis Algorithm 9, Eq. 6.8)."""

import pytest
import torch

from lsbench.optim import LABPAL, TrainingContext, build_optimizer
from lsbench.optim.labpal import noise_adaptation_factor, parabola

DIM = 5
CURVATURE = 3.0


class NoisyQuadratic:
    """Batch i has loss CURVATURE/2 · |θ - m_i|²: parabolas with a common curvature and shifted minima."""

    def __init__(self, batches: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.minima = torch.randn(batches, DIM, generator=generator, dtype=torch.float64)
        self.theta = torch.full((DIM,), 2.0, dtype=torch.float64, requires_grad=True)
        self.calls = 0

    def closure(self, i: int):
        def evaluate():
            self.calls += 1
            return 0.5 * CURVATURE * ((self.theta - self.minima[i % len(self.minima)]) ** 2).sum()

        return evaluate

    def mean_loss_along(self, origin, unit, s, batches):
        point = origin - s * unit
        return 0.5 * CURVATURE * ((point - self.minima[:batches]) ** 2).sum(dim=1).mean()


def labpal(params, **overrides):
    settings = dict(
        batch_size=1,
        approximation_batch_size=10,
        total_steps=10_000,
        batch_size_schedule=((0.0, 1),),
        untrustworthy_updates=0,
        max_step_size=100.0,
        update_step_adaptation=1.8,
        direction_norm_bounds=(1e-6, 1e6),
    )
    settings.update(overrides)
    return LABPAL(params, **settings)


def measure(problem, opt, batches=10):
    origin = problem.theta.detach().clone()
    unit = problem.theta.detach() - problem.minima[0]  # batch 0's gradient direction
    unit = unit / unit.norm()
    for i in range(batches):
        opt.step(problem.closure(i))
    return origin, unit


def test_exact_estimator_steps_alpha_times_the_vertex_of_the_mean_loss():
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], estimator="exact")
    origin, unit = measure(problem, opt)
    vertex = ((origin - problem.minima.mean(dim=0)) @ unit).item()  # minimum of the mean loss along the line
    moved = origin - problem.theta.detach()
    assert moved.norm().item() == pytest.approx(1.8 * vertex, abs=1e-6)
    torch.testing.assert_close(moved / moved.norm(), unit)
    assert opt.updated.item()


def test_published_estimator_gives_its_documented_vertex():
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], estimator="published")
    origin, unit = measure(problem, opt)
    near = 1.77e-4
    # along the line the mean loss is A s² + B s + C; the published fit returns a = A/2 and b = B + A·near
    values = [problem.mean_loss_along(origin, unit, s, 10) for s in (0.0, 1.0, -1.0)]
    quadratic = ((values[1] + values[2]) / 2 - values[0]).item()
    linear = ((values[1] - values[2]) / 2).item()
    expected = -(linear + quadratic * near) / (2 * quadratic / 2)
    assert (origin - problem.theta.detach()).norm().item() == pytest.approx(1.8 * expected, abs=1e-6)


def test_parabola_estimators_on_an_exact_parabola():
    def f(s):
        return torch.tensor(2.0 * s**2 - 3.0 * s + 1.0, dtype=torch.float64)

    a, b = parabola("exact", f(0.0), f(0.01), f(0.1), 0.01, 0.1)
    assert (a.item(), b.item()) == (pytest.approx(2.0), pytest.approx(-3.0))
    a, b = parabola("published", f(0.0), f(0.01), f(0.1), 0.01, 0.1)
    assert (a.item(), b.item()) == (pytest.approx(1.0), pytest.approx(-3.0 + 2.0 * 0.01))


def test_every_batch_is_one_step_and_the_closure_count_is_as_documented():
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], sgd_steps=3)
    for i in range(9):
        opt.step(problem.closure(i))
        assert problem.calls == i + 1  # one call per step while measuring
        assert not opt.updated.item()
    opt.step(problem.closure(9))
    assert problem.calls == 10 + 2 * 10  # the last batch, then every stored batch at both probes
    assert opt.updated.item()
    for i in range(2):  # sgd_steps counts the measurement's own update
        calls = problem.calls
        opt.step(problem.closure(i))
        assert problem.calls == calls + 1
        assert opt.updated.item()
    opt.step(problem.closure(0))
    assert opt.shared["measuring"] and not opt.updated.item()
    assert opt.shared["steps"] == 13
    assert opt.forward_passes == problem.calls


def test_nsgd_keeps_the_step_length_and_sgd_keeps_the_learning_rate():
    for mode in ("nsgd", "sgd"):
        problem = NoisyQuadratic(10)
        opt = labpal([problem.theta], mode=mode, sgd_steps=100)
        measure(problem, opt)
        step, lr = opt.shared["step_size"].item(), opt.shared["lr"].item()
        before = problem.theta.detach().clone()
        gradient = CURVATURE * (before - problem.minima[3])
        opt.step(problem.closure(3))
        moved = before - problem.theta.detach()
        if mode == "nsgd":
            torch.testing.assert_close(moved, step * gradient / gradient.norm())
        else:
            torch.testing.assert_close(moved, lr * gradient)


def test_momentum_is_applied_to_updates_when_k_is_one():
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], mode="sgd", momentum=0.5, sgd_steps=100)
    measure(problem, opt)
    buffer = opt.state[problem.theta]["direction"].clone()
    before = problem.theta.detach().clone()
    opt.step(problem.closure(4))
    expected = 0.5 * buffer + CURVATURE * (before - problem.minima[4])
    torch.testing.assert_close(before - problem.theta.detach(), opt.shared["lr"].item() * expected)


def test_gradients_of_k_batches_are_averaged():
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], mode="sgd", sgd_steps=100, batch_size_schedule=((0.0, 2),))
    for i in range(20):  # a measurement over 10·k batches
        opt.step(problem.closure(i))
    lr = opt.shared["lr"].item()
    before = problem.theta.detach().clone()
    opt.step(problem.closure(1))
    assert torch.equal(problem.theta.detach(), before)  # first of a pair: no update yet
    opt.step(problem.closure(2))
    mean_gradient = CURVATURE * (before - (problem.minima[1] + problem.minima[2]) / 2)
    torch.testing.assert_close(before - problem.theta.detach(), lr * mean_gradient)


def test_schedule_fires_at_its_fraction_even_during_a_measurement():
    # 10-batch measurements and sgd_steps=5: measurements run at steps 0-9, 14-23, 28-37, 42-51.
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], sgd_steps=5, total_steps=100, batch_size_schedule=((0.0, 1), (0.5, 2)))
    for step in range(50):
        opt.step(problem.closure(step))
    assert opt.shared["measuring"] and opt.shared["count"] == 8 and opt.shared["k"] == 1
    opt.step(problem.closure(50))
    assert opt.shared["k"] == 2
    assert opt.shared["measuring"] and opt.shared["count"] == 1  # the running measurement restarted with k = 2


def test_noise_factor_rescales_budget_and_batch_multipliers():
    x = torch.zeros(2, requires_grad=True)
    opt = LABPAL([x], total_steps=1000, noise_factor=2.5, batch_size_schedule=((0.0, 1), (0.5, 2), (0.75, 4)))
    assert opt.training_steps == 2500
    assert opt.schedule == [(0, 2), (1250, 5), (1875, 10)]
    derived = LABPAL([x], total_steps=1000, noise_factor=None, batch_size=32, training_set_size=40_000)
    assert derived.noise_factor == noise_adaptation_factor(32, 40_000) == 4.0
    assert derived.training_steps == 4000


def test_a_failed_first_measurement_measures_again_instead_of_crashing():
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = labpal([x], approximation_batch_size=3)
    for _ in range(3):
        opt.step(lambda: 1.0 - (x**2).sum())  # concave along the line: no step size yet
    assert torch.equal(x.detach(), torch.ones(2, dtype=torch.float64))
    assert opt.shared["measuring"] and opt.shared["count"] == 0 and opt.shared["step_size"] is None
    for _ in range(3):
        opt.step(lambda: ((x - 0.5) ** 2).sum())
    assert opt.updated.item()


def test_untrustworthy_period_then_averaging_window():
    problem = NoisyQuadratic(10)
    opt = labpal([problem.theta], sgd_steps=2, untrustworthy_updates=3, averaging_window=2)
    steps_seen = []
    for i in range(60):
        opt.step(problem.closure(i))
        if opt.shared["history_steps"] and (not steps_seen or steps_seen[-1] != len(opt.shared["history_steps"])):
            steps_seen.append(len(opt.shared["history_steps"]))
            window = opt.shared["history_steps"]
            assert opt.shared["step_size"].item() == pytest.approx(torch.stack(window).mean().item())
    assert steps_seen[:2] == [1, 2] and max(steps_seen) == 2


class ShiftedQuadratic:
    """Every batch is a quadratic whose minimum lies at a fixed offset from where θ is when its closure is made.

    Its gradient never vanishes and every measurement finds a parabola with a > 0 > b, so long runs at the default
    settings neither converge nor reject a direction.
    """

    def __init__(self) -> None:
        self.theta = torch.full((DIM,), 2.0, dtype=torch.float64, requires_grad=True)
        self.offset = torch.linspace(0.5, 1.0, DIM, dtype=torch.float64)

    def closure(self):
        target = self.theta.detach() - self.offset
        return lambda: 0.5 * CURVATURE * ((self.theta - target) ** 2).sum()


def steps_to_first_update(opt, problem) -> int:
    for step in range(1, 1_000):
        opt.step(problem.closure())
        if opt.updated.item():
            return step
    raise AssertionError("no update")


@pytest.mark.parametrize(("batch_size", "batches"), [(128, 10), (32, 40), (8, 160)])
def test_noise_adapted_measurement_covers_the_approximation_batch(batch_size, batches):
    # Eq. 6.8 on 40,000 images: ε = 128 / |B|, k' = ε, and the first measurement is |B_a| = 1,280 samples
    context = TrainingContext(total_steps=150_000, batch_size=batch_size, train_size=40_000)
    for name in ("labpal_sgd", "labpal_nsgd"):
        problem = ShiftedQuadratic()
        opt = build_optimizer(name, [problem.theta], {"noise_factor": None}, context)
        assert opt.schedule[0][1] == 128 // batch_size
        assert steps_to_first_update(opt, problem) == batches
    # an explicit ε is read the same way; the measurement still grows with the schedule's multiplier
    problem = ShiftedQuadratic()
    opt = LABPAL([problem.theta], batch_size=batch_size, noise_factor=128 / batch_size)
    assert steps_to_first_update(opt, problem) == batches
    problem = ShiftedQuadratic()
    opt = LABPAL(
        [problem.theta],
        batch_size=batch_size,
        noise_factor=None,
        training_set_size=40_000,
        batch_size_schedule=((0.0, 2),),
    )
    assert steps_to_first_update(opt, problem) == 2 * batches


def test_without_noise_adaptation_the_approximation_batch_counts_this_runs_batches():
    problem = ShiftedQuadratic()
    opt = LABPAL([problem.theta], batch_size=32, noise_factor=1.0)
    assert steps_to_first_update(opt, problem) == 40  # 1,280 samples of batch 32, k = 1


def test_untrustworthy_count_matches_the_reference():
    # The reference counts updates from -1: it forces the re-measurement when its counter is U + 1 and averages
    # while the counter exceeds U, i.e. after the (U + 2)-th update -- the 402nd at the default U = 400.
    problem = ShiftedQuadratic()
    opt = LABPAL([problem.theta], untrustworthy_updates=400, sgd_steps=1000)
    updates = 0
    while updates < 402:
        opt.step(problem.closure())
        assert not opt.shared["measuring"] or updates == 0
        updates += int(opt.updated.item())
        assert opt.shared["history_steps"] == []  # 402 updates, every measurement used alone
    assert opt.shared["updates"] == 402
    for _ in range(9):  # the forced re-measurement starts right after the 402nd update
        opt.step(problem.closure())
        assert opt.shared["measuring"] and not opt.updated.item()
    opt.step(problem.closure())
    assert opt.updated.item() and opt.shared["updates"] == 403
    assert len(opt.shared["history_steps"]) == 1  # the first averaged measurement
    torch.testing.assert_close(opt.shared["step_size"], opt.shared["history_steps"][0])
    opt.step(problem.closure())
    assert not opt.shared["measuring"] and opt.updated.item()  # no further forced measurement


def test_a_rejected_forced_re_measurement_is_repeated_at_the_next_step():
    problem = ShiftedQuadratic()
    opt = labpal([problem.theta], untrustworthy_updates=1, sgd_steps=100, direction_norm_bounds=(1e-3, 100.0))
    for _ in range(12):  # measurement (10 batches), then 2 training updates: 3 = U + 2 updates
        opt.step(problem.closure())
    assert opt.shared["updates"] == 3 and not opt.shared["measuring"]
    opt.step(lambda: (problem.theta * 0).sum() + 1.0)  # zero gradient: the direction is rejected
    assert not opt.shared["measuring"] and not opt.updated.item()
    opt.step(problem.closure())
    assert opt.shared["measuring"] and opt.shared["count"] == 1  # forced again
