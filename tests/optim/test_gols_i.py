"""GOLS-I (Kafka & Wilke's original description, thesis Algorithm 4) with one sampled batch per step."""

import pytest
import torch

from lsbench.optim.gols_i import GOLSI


class Quadratic1D:
    """Batch i has loss ½(θ - m_i)²; its derivative along d at θ is (θ - m_i)·d."""

    def __init__(self, minima, theta0: float = 0.0) -> None:
        self.minima = [float(m) for m in minima]
        self.theta = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
        self.evaluated_at: list[float] = []

    def closure(self, i: int):
        def evaluate():
            self.evaluated_at.append(self.theta.item())
            return 0.5 * ((self.theta - self.minima[i]) ** 2).sum()

        return evaluate


def run(problem, opt, calls):
    """Step ``calls`` times, recording what the search looked like before each call and whether it accepted."""
    log = []
    for i in range(calls):
        state = opt.state[problem.theta]
        before = {
            "phase": opt.phase,
            "step_size": opt.step_size,
            "direction": state["direction"].item() if "direction" in state else None,
            "origin": state["origin"].item() if "origin" in state else None,
            "tolerance": opt.shared["accept_tolerance"],
            "bounds": (opt.shared["min_step"], opt.shared["max_step"]),
        }
        opt.step(problem.closure(i))
        at = problem.evaluated_at[-1]
        before.update(
            at=at,
            slope=None if before["direction"] is None else (at - problem.minima[i]) * before["direction"],
            updated=bool(opt.updated),
            lr=opt.effective_lr.item(),
            theta=problem.theta.item(),
            origin_after=opt.state[problem.theta]["origin"].item() if "origin" in state else None,
        )
        log.append(before)
    return log


def test_increase_phase_accepts_where_the_derivative_turns_non_negative():
    # θ0 = 0, one minimum at 1: d = 1, D(λ) = λ - 1. From λ = 1/32 the search doubles until D(1) = 0 ≥ 0.
    problem = Quadratic1D([1.0] * 8)
    opt = GOLSI([problem.theta], initial_step_size=1 / 32)
    log = run(problem, opt, 8)
    assert len(problem.evaluated_at) == 8  # one evaluation (one batch) per step
    assert opt.shared["steps"] == 8
    assert [entry["at"] for entry in log[:7]] == [0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    assert [entry["phase"] for entry in log[:7]] == ["start", "initial"] + ["increase"] * 5
    assert [entry["updated"] for entry in log[:7]] == [False] * 6 + [True]
    assert log[6]["lr"] == 1.0 and log[6]["at"] == 1.0  # accepted at the sign change, no interpolation
    # next search: zero gradient, D = 0 lies in the immediate-accept band [0, c2·|D0|] = [0, 0]
    assert log[7]["phase"] == "initial" and log[7]["updated"]
    assert opt.searches == 2


def test_decrease_phase_accepts_where_the_derivative_turns_negative():
    # m = 0.1: d = 0.1, λ_max = 1/|d| = 10, D(λ) = 0.01(λ - 1), tolerance 0.9·0.01. λ0 = 8 is too far.
    problem = Quadratic1D([0.1] * 6)
    opt = GOLSI([problem.theta], initial_step_size=8.0)
    log = run(problem, opt, 6)
    assert [entry["step_size"] for entry in log[1:]] == [8.0, 4.0, 2.0, 1.0, 0.5]
    assert [entry["phase"] for entry in log[1:]] == ["initial"] + ["decrease"] * 4
    assert [entry["updated"] for entry in log] == [False] * 5 + [True]
    assert log[5]["slope"] < 0 <= log[4]["slope"]
    assert log[5]["lr"] == 0.5 and log[5]["at"] == pytest.approx(0.05)
    # the next search starts there and parks the parameters at its first trial point
    assert opt.state[problem.theta]["origin"].item() == pytest.approx(0.05)
    assert problem.theta.item() == pytest.approx(0.05 + 0.5 * 0.05)


def test_first_trial_is_clipped_to_the_inverse_direction_norm():
    problem = Quadratic1D([0.5] * 2)  # |d| = 0.5, so λ_max = 2
    opt = GOLSI([problem.theta], initial_step_size=100.0)
    run(problem, opt, 1)
    assert opt.step_size == 2.0 and opt.shared["max_step"] == 2.0
    assert problem.theta.item() == pytest.approx(1.0)  # parked at the first trial point θ0 + λ d


@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_noisy_searches_accept_only_at_sign_changes_or_in_the_band(momentum):
    generator = torch.Generator().manual_seed(0)
    minima = (1.0 + 0.3 * torch.randn(300, generator=generator, dtype=torch.float64)).tolist()
    problem = Quadratic1D(minima, theta0=-2.0)
    opt = GOLSI([problem.theta], initial_step_size=1e-3, momentum=momentum)
    log = run(problem, opt, len(minima))
    assert opt.shared["steps"] == len(problem.evaluated_at) == len(minima)
    kinds = {"band": 0, "sign change": 0, "cap": 0}
    previous = None
    for entry in log[1:]:
        # every call evaluates the trial point θ0 + λ d of the running search on its own batch
        assert entry["at"] == pytest.approx(entry["origin"] + entry["step_size"] * entry["direction"], abs=1e-12)
        if entry["updated"]:
            assert entry["lr"] == entry["step_size"]
            assert entry["origin_after"] == entry["at"]  # the accepted point originates the next search
            low, high = entry["bounds"]
            if entry["phase"] == "initial":
                if 0 <= entry["slope"] <= entry["tolerance"]:
                    kinds["band"] += 1
                else:  # no room to move: increasing at λ_max or decreasing at λ_min
                    assert entry["step_size"] >= high if entry["slope"] < 0 else entry["step_size"] <= low
                    kinds["cap"] += 1
            elif entry["phase"] == "increase":
                assert previous["slope"] < 0 and entry["step_size"] == pytest.approx(2 * previous["step_size"])
                if entry["slope"] >= 0:  # - to + between λ/η and λ
                    kinds["sign change"] += 1
                else:  # or the step reached the cap λ_max / η
                    assert entry["step_size"] > high / 2
                    kinds["cap"] += 1
            else:
                assert previous["slope"] >= 0 and entry["step_size"] == pytest.approx(previous["step_size"] / 2)
                if entry["slope"] < 0:
                    kinds["sign change"] += 1
                else:
                    assert entry["step_size"] < 2 * low
                    kinds["cap"] += 1
        previous = entry
    assert kinds["band"] > 0 and kinds["sign change"] > 0
    assert kinds["cap"] < kinds["band"] + kinds["sign change"]  # boundary acceptances are the exception
    assert abs(problem.theta.item() - 1.0) < 0.3  # it found the valley of the mean loss


def test_momentum_direction_is_beta_times_previous_minus_gradient():
    torch.manual_seed(0)
    scales = torch.tensor([1.0, 10.0], dtype=torch.float64)
    theta = torch.tensor([3.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = GOLSI([theta], initial_step_size=0.01, momentum=0.5)

    def closure():
        return 0.5 * (scales * theta**2).sum()

    checked = 0
    for _ in range(40):
        previous = opt.state[theta].get("direction")
        previous = None if previous is None else previous.clone()
        opt.step(closure)
        if bool(opt.updated):
            gradient = scales * opt.state[theta]["origin"]  # at the accepted point, where the new search starts
            expected = 0.5 * previous - gradient
            if (gradient @ expected) >= 0:  # not a descent direction: restart along -g
                expected = -gradient
            torch.testing.assert_close(opt.state[theta]["direction"], expected)
            checked += 1
    assert checked >= 3


def test_non_finite_evaluation_returns_to_the_origin_and_restarts():
    problem = Quadratic1D([1.0] * 4)
    opt = GOLSI([problem.theta], initial_step_size=0.25)
    opt.step(problem.closure(0))
    assert problem.theta.item() == 0.25
    opt.step(lambda: problem.theta.sum() * float("nan"))
    assert problem.theta.item() == 0.0 and opt.phase == "start" and not bool(opt.updated)
    assert opt.step_size == 0.125


@pytest.mark.parametrize(
    ("name", "value"), [("step_size_scaling", 1.0), ("step_size_scaling", 0.2), ("momentum", 1.0), ("wolfe_c2", -1)]
)
def test_invalid_hyperparameters_raise(name, value):
    with pytest.raises(ValueError, match=name):
        GOLSI([torch.zeros(1, requires_grad=True)], **{name: value})
