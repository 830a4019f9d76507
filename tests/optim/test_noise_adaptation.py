"""Noise adaptation for the line searches (thesis Eq. 6.8 carried over from LABPAL; lsbench.optim.noise)."""

import io

import pytest
import torch
from torch import nn

from lsbench.optim import ClosureFactory, TrainingContext, build_optimizer, training_steps
from lsbench.optim.gols_i import GOLSI
from lsbench.optim.noise import MeanClosure, noise_adapted
from lsbench.optim.pal import PAL

DIM = 4
CURVATURE = 2.0
CONTEXT = TrainingContext(total_steps=100, batch_size=32, train_size=1_000)


class BatchParabolas:
    """Batch i has loss CURVATURE/2 · ‖θ - m_i‖²; the mean over batches is a parabola around their mean minimum."""

    def __init__(self, batches: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.minima = torch.randn(batches, DIM, generator=generator, dtype=torch.float64)
        self.theta = torch.full((DIM,), 2.0, dtype=torch.float64, requires_grad=True)
        self.calls = [0] * batches

    def loss(self, point, i):
        return 0.5 * CURVATURE * ((point - self.minima[i]) ** 2).sum()

    def closure(self, i: int):
        def evaluate():
            self.calls[i] += 1
            return self.loss(self.theta, i)

        return evaluate


def pal(params, **hparams):
    settings = {"measuring_step_size": 0.1, "update_step_adaptation": 1.0, "direction_adaptation": 0.0}
    settings.update(hparams)
    return build_optimizer("pal", params, {"noise_factor": 3.0, **settings}, CONTEXT)


@pytest.mark.parametrize("name", ["pal", "sls", "gols_i"])
def test_epsilon_three_updates_every_third_step_and_triples_the_budget(name):
    problem = BatchParabolas(12)
    opt = build_optimizer(name, [problem.theta], {"noise_factor": 3.0}, CONTEXT)
    assert opt.batches_per_update == 3
    assert opt.training_steps == 300 and training_steps(opt, 100) == 300
    moved = []
    for i in range(12):
        before = problem.theta.detach().clone()
        opt.step(problem.closure(i))
        moved.append(not torch.equal(before, problem.theta.detach()))
        assert opt.collected_batches == (i + 1) % 3
    assert moved[:2] == [False, False] and not any(moved[i] for i in range(12) if i % 3 != 2)
    assert opt.shared["steps"] == 12  # steps count batches
    if name != "gols_i":  # every PAL/SLS search updates; GOLS-I updates when its search accepts
        assert moved == [False, False, True] * 4


def test_pal_measures_the_mean_of_the_three_batches():
    problem = BatchParabolas(3)
    opt = pal([problem.theta], max_step_size=10.0)
    probes = []
    loss_without_spy = opt._loss
    opt._loss = lambda closure: probes.append(loss_without_spy(closure)) or probes[-1]
    theta0 = problem.theta.detach().clone()
    losses = [opt.step(problem.closure(i)) for i in range(3)]
    assert [bool(opt.updated)] == [True]

    # by hand: the batch-averaged parabola along the normalized mean gradient
    mu = 0.1
    gradient = CURVATURE * (theta0 - problem.minima.mean(dim=0))
    unit = gradient / gradient.norm()
    mean_loss = lambda point: sum(problem.loss(point, i) for i in range(3)) / 3  # noqa: E731
    loss_0, loss_mu = mean_loss(theta0), mean_loss(theta0 - mu * unit)
    slope = -gradient.norm()
    curvature = (loss_mu - loss_0 - slope * mu) / mu**2
    step = min((-slope / (2 * curvature)).item(), 10.0)
    expected = theta0 - step * unit

    assert len(probes) == 1 and probes[0].item() == pytest.approx(loss_mu.item(), rel=1e-14)
    torch.testing.assert_close(problem.theta.detach(), expected, rtol=0, atol=1e-12)
    # on an exact parabola (α = 1) that is the minimum of the mean loss along the line -- not batch 2's
    line_minimum = theta0 - ((theta0 - problem.minima.mean(dim=0)) @ unit) * unit
    torch.testing.assert_close(problem.theta.detach(), line_minimum, rtol=0, atol=1e-9)
    single = PAL([theta0.clone().requires_grad_()], 0.1, update_step_adaptation=1.0, max_step_size=10.0)
    single.step(lambda: problem.loss(single.param_groups[0]["params"][0], 2))
    assert not torch.allclose(single.param_groups[0]["params"][0].detach(), expected)

    # every step returns its own batch's loss; each batch ran one forward+backward and one probe forward
    for i, loss in enumerate(losses):
        assert loss.item() == pytest.approx(problem.loss(theta0, i).item())
    assert problem.calls == [2, 2, 2]
    assert (opt.forward_passes, opt.backward_passes) == (6, 3)
    assert opt.effective_lr.item() == pytest.approx(step / gradient.norm().item())


def test_gols_i_searches_on_the_mean_derivative():
    # Batch minima 0.5, 1.0, 1.5 (mean 1.0): with θ0 = 0 the mean derivative along d = 1 is λ - 1, so the search
    # from λ = 1/32 doubles to λ = 1 -- 7 evaluations of 3 batches each -- as on the noiseless problem.
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    minima = [0.5, 1.0, 1.5]
    opt = noise_adapted(GOLSI)([theta], noise_factor=3.0, initial_step_size=1 / 32)
    updates = []
    for step in range(21):
        opt.step(lambda m=minima[step % 3]: 0.5 * ((theta - m) ** 2).sum())
        updates.append(bool(opt.updated))
    assert updates == [False] * 20 + [True]
    assert opt.effective_lr.item() == 1.0 and opt.state[theta]["origin"].item() == 1.0


def test_null_noise_factor_derives_epsilon_from_batch_and_training_set_size():
    context = TrainingContext(total_steps=100, batch_size=32, train_size=40_000)  # ε = 128/32 · 40,000/40,000
    theta = torch.zeros(2, requires_grad=True)
    opt = build_optimizer("sls", [theta], {"noise_factor": None}, context)
    assert opt.noise_factor == 4.0 and opt.batches_per_update == 4 and opt.training_steps == 400
    assert opt.param_groups[0]["batches_per_epoch"] == 1250 // 4  # SLS's reset counts its own steps
    small = TrainingContext(total_steps=600, batch_size=32, train_size=1_197)  # digits: ε ≈ 0.12
    opt = build_optimizer("gols_i", [theta], {"noise_factor": None}, small)
    assert opt.batches_per_update == 1 and opt.training_steps == round(600 * 128 / 32 * 1_197 / 40_000)


def test_default_noise_factor_is_off():
    problem = BatchParabolas(2)
    opt = pal([problem.theta], noise_factor=1.0)
    assert opt.batches_per_update == 1 and opt.training_steps == 100
    opt.step(problem.closure(0))
    assert bool(opt.updated) and problem.calls[0] == 2


def test_mean_closure_reuses_the_accumulated_gradient_until_parameters_move():
    problem = BatchParabolas(2)
    theta = problem.theta
    losses, grads = [], []
    for i in range(2):
        theta.grad = None
        with torch.enable_grad():
            loss = problem.closure(i)()
            loss.backward()
        losses.append(loss.detach())
        grads.append(theta.grad.clone())
    mean = MeanClosure([problem.closure(0), problem.closure(1)], ((losses[0] + losses[1]) / 2, [theta], [sum(grads)]))
    theta.grad = None
    with torch.enable_grad():
        surrogate = mean()
        surrogate.backward()
    assert surrogate.item() == ((losses[0] + losses[1]) / 2).item() and mean.forwards == 0
    torch.testing.assert_close(theta.grad, sum(grads) / 2, rtol=0, atol=1e-15)
    with torch.no_grad():
        theta.add_(1.0)
    again = MeanClosure([problem.closure(0), problem.closure(1)], (torch.tensor(0.0), [theta], [sum(grads)]))
    with torch.no_grad():
        theta.sub_(1.0)  # moved after the closure was built: the surrogate is stale and must not be used
        value = again()
    assert again.forwards == 2 and value.item() == pytest.approx(((losses[0] + losses[1]) / 2).item())


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3))

    def forward(self, x):
        return self.body(x)


def _setup(name):
    torch.manual_seed(0)
    model = Net()
    factory = ClosureFactory(model, nn.CrossEntropyLoss(), 1e-3)
    hparams = {"noise_factor": 3.0, **({"initial_step_size": 0.01} if name == "gols_i" else {})}
    return model, factory, build_optimizer(name, model.parameters(), hparams, CONTEXT)


def _saved(obj):
    buffer = io.BytesIO()
    torch.save(obj.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", ["pal", "sls", "gols_i"])
@pytest.mark.parametrize("split", [1, 2, 4])
def test_state_dict_mid_accumulation_round_trips(name, split):
    generator = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)) for _ in range(12)
    ]
    model, factory, opt = _setup(name)
    for step, (x, y) in enumerate(data[:split]):
        opt.step(factory(x, y, seed=step))
    assert opt.collected_batches == split % 3
    model_state, opt_state = _saved(model), _saved(opt)
    for step, (x, y) in enumerate(data[split:], start=split):
        opt.step(factory(x, y, seed=step))

    restored, restored_factory, restored_opt = _setup(name)
    restored.load_state_dict(model_state)
    restored_opt.load_state_dict(opt_state)
    for step, (x, y) in enumerate(data[split:], start=split):
        restored_opt.step(restored_factory(x, y, seed=step))
    for original, copy_ in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(original, copy_)
    assert restored_opt.forward_passes == opt.forward_passes
    assert restored_opt.backward_passes == opt.backward_passes


def _linear_setup(pooled: bool):
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    factory = ClosureFactory(model, nn.CrossEntropyLoss())
    opt = noise_adapted(PAL, pooled=pooled)(model.parameters(), noise_factor=3.0, measuring_step_size=0.1)
    return model, factory, opt


def test_pooled_mode_measures_the_same_mean_on_the_concatenated_batch():
    generator = torch.Generator().manual_seed(2)
    data = [
        (torch.randn(8, 6, generator=generator).double(), torch.randint(0, 3, (8,), generator=generator))
        for _ in range(6)
    ]
    results = []
    for pooled in (False, True):
        model, factory, opt = _linear_setup(pooled)
        for step, (x, y) in enumerate(data):
            opt.step(factory(x, y, seed=step))
        results.append((model.weight.detach().clone(), opt.forward_passes, opt.backward_passes))
    (mean_weight, *_), (pooled_weight, forwards, backwards) = results
    torch.testing.assert_close(pooled_weight, mean_weight, rtol=0, atol=1e-12)
    # pooled: 6 training forwards, then per update one pooled forward+backward and one pooled probe (3 batches each)
    assert (forwards, backwards) == (6 + 2 * (3 + 3), 2 * 3)


def test_pls_gets_a_pooled_batch_and_resumes_mid_group():
    from lsbench.optim.pls import PLS

    seen = []

    class SpyPLS(PLS):
        def step(self, closure):
            seen.append(closure.inputs.shape[0])
            return super().step(closure)

    def setup():
        torch.manual_seed(0)
        model = Net()
        factory = ClosureFactory(model, nn.CrossEntropyLoss())
        opt = noise_adapted(SpyPLS, pooled=True)(model.parameters(), noise_factor=3.0, total_steps=10)
        return model, factory, opt

    generator = torch.Generator().manual_seed(3)
    data = [
        (torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)) for _ in range(10)
    ]
    model, factory, opt = setup()
    assert opt.training_steps == 30
    for step, (x, y) in enumerate(data[:4]):
        opt.step(factory(x, y, seed=step))
    assert seen == [48] and opt.collected_batches == 1
    model_state, opt_state = _saved(model), _saved(opt)
    for step, (x, y) in enumerate(data[4:], start=4):
        opt.step(factory(x, y, seed=step))
    assert seen == [48, 48, 48]
    restored, restored_factory, restored_opt = setup()
    restored.load_state_dict(model_state)
    restored_opt.load_state_dict(opt_state)
    for step, (x, y) in enumerate(data[4:], start=4):
        restored_opt.step(restored_factory(x, y, seed=step))
    for original, copy_ in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(original, copy_)
