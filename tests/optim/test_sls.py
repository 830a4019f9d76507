"""SLS accepts only Armijo steps, and each reset option sets the first trial as documented."""

import pytest
import torch

from lsbench.optim import SLS


def logistic_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(256, 8, generator=generator, dtype=torch.float64)
    labels = (features @ torch.randn(8, generator=generator, dtype=torch.float64) > 0).double()
    weights = torch.zeros(8, dtype=torch.float64, requires_grad=True)

    def closure_for(batch: int):
        rows = slice(32 * (batch % 8), 32 * (batch % 8) + 32)
        return lambda: torch.nn.functional.binary_cross_entropy_with_logits(features[rows] @ weights, labels[rows])

    return weights, closure_for


def test_every_accepted_step_satisfies_the_armijo_condition_on_its_batch():
    weights, closure_for = logistic_problem()
    opt = SLS([weights], initial_step_size=10.0, armijo_constant=0.1, step_size_decay=0.5)
    for batch in range(40):
        closure = closure_for(batch)
        weights.grad = None
        with torch.enable_grad():
            loss = closure()
            (gradient,) = torch.autograd.grad(loss, weights)
        opt.step(closure)
        step_size = opt.effective_lr.item()
        with torch.no_grad():
            new_loss = closure()
        assert new_loss.item() <= loss.item() - 0.1 * step_size * gradient.square().sum().item() + 1e-12


def test_closure_is_called_once_plus_once_per_trial():
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    calls = []

    def closure():
        calls.append(1)
        return (x[0] ** 2) * 1.0

    opt = SLS([x], initial_step_size=4.0, step_size_decay=0.5, reset_option="keep")
    opt.step(closure)  # θ = 1 - 2η: η = 4, 2, 1 fail the Armijo condition, η = 0.5 lands on the minimum
    assert len(calls) == 1 + 4
    assert opt.effective_lr.item() == 0.5
    assert opt.forward_passes == 5 and opt.backward_passes == 1


def linear_problem():
    """On a linear loss every first trial satisfies Armijo, so the accepted η is exactly the reset value."""
    x = torch.tensor([0.0, 0.0], dtype=torch.float64, requires_grad=True)
    return x, (lambda: 3.0 * x[0] - 4.0 * x[1])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"reset_option": "keep"}, [0.5, 0.5, 0.5]),
        (
            {"reset_option": "grow", "step_size_reset": 2.0, "batches_per_epoch": 4},
            [0.5 * 2 ** (n / 4) for n in (1, 2, 3)],
        ),
        ({"reset_option": "initial"}, [0.5, 0.5, 0.5]),
        (
            {"reset_option": "grow", "step_size_reset": 4.0, "batches_per_epoch": 1, "max_step_size": 3.0},
            [2.0, 3.0, 3.0],
        ),
    ],
)
def test_reset_options(options, expected):
    x, closure = linear_problem()
    opt = SLS([x], initial_step_size=0.5, **options)
    accepted = []
    for _ in range(3):
        opt.step(closure)
        accepted.append(opt.effective_lr.item())
    assert accepted == pytest.approx(expected)


def test_initial_reset_returns_to_the_initial_step_after_backtracking():
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = SLS([x], initial_step_size=4.0, step_size_decay=0.5, reset_option="initial")
    opt.step(lambda: x[0] ** 2)
    assert opt.shared["step_size"] == 0.5
    calls = []
    opt.step(lambda: calls.append(1) or (x[0] - 1.0) ** 2)
    assert len(calls) == 5  # the search started again from η0 = 4 (from the accepted 0.5 it would take 2 calls)


def test_no_update_for_a_vanishing_gradient():
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = SLS([x])
    opt.step(lambda: (x[0] - 2.0) ** 2)
    assert x.item() == 2.0 and not opt.updated.item()
