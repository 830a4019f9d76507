"""FusedLABPAL: K fused copies follow their K ordinary LABPAL runs step for step, also out of phase and resumed."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsbench.fused.labpal import FusedLABPAL
from lsbench.optim import ClosureFactory, TrainingContext, build_optimizer, get_optimizer

DIM, HIDDEN, CLASSES, BATCH = 6, 8, 3, 8
STEPS = 50
CONTEXT = TrainingContext(total_steps=STEPS, batch_size=BATCH, train_size=40 * BATCH)
SHARED = {
    "approximation_batch_size": 3 * BATCH,  # n_a = 3 batches per measurement at k = 1, 6 at k = 2
    "sgd_steps": 3,
    "batch_size_schedule": [[0.0, 1], [0.5, 2]],  # k = 2 from step 25 on
    "untrustworthy_updates": 2,  # measurements are averaged from the 4th update on
    "averaging_window": 2,
}
VARIED = [
    {"update_step_adaptation": 1.8, "momentum": 0.0, "max_step_size": 1.0},
    {"update_step_adaptation": 1.2, "momentum": 0.5, "max_step_size": 0.3, "measuring_step_size": 0.05},
    {"update_step_adaptation": 1.5, "momentum": 0.9, "max_step_size": 2.0, "near_measuring_step_size": 1e-3},
    {"update_step_adaptation": 1.0, "momentum": 0.2, "max_step_size": 0.05},
]


class MLP(nn.Module):
    """One run's model: tanh MLP."""

    def __init__(self, weights: Sequence[Tensor]) -> None:
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(w.clone()) for w in weights)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.w1.T + self.b1) @ self.w2.T + self.b2


class FusedMLP(nn.Module):
    """K MLPs as one module: every parameter has the copy as its leading dimension, inputs are (K, B, DIM)."""

    def __init__(self, weights: Sequence[Sequence[Tensor]]) -> None:
        super().__init__()
        self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(torch.stack(ws)) for ws in zip(*weights, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.tanh(torch.bmm(x, self.w1.transpose(1, 2)) + self.b1[:, None])
        return torch.bmm(hidden, self.w2.transpose(1, 2)) + self.b2[:, None]


class FusedFactory(ClosureFactory):
    """Closures over (K, B, ...) batches whose loss is the (K,) vector of per-copy mean cross-entropies."""

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        logits = self.model(inputs)
        copies, batch = targets.shape
        return (
            F.cross_entropy(logits.reshape(copies * batch, -1), targets.reshape(-1), reduction="none")
            .reshape(copies, batch)
            .mean(dim=1)
        )


def initial_weights(seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(HIDDEN, DIM), (HIDDEN,), (CLASSES, HIDDEN), (CLASSES,)]
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) * 0.5 for shape in shapes]


def batches(seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """One copy's stream of batches: labels of a fixed random linear teacher, so there is something to learn."""
    generator = torch.Generator().manual_seed(1000 + seed)
    teacher = torch.randn(DIM, CLASSES, generator=generator, dtype=torch.float64)
    while True:
        x = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        yield x, (x @ teacher).argmax(dim=1)


def kwargs(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """What the registry passes the ordinary LABPAL: the fixed mode, resolved hyperparameters and the context."""
    entry = get_optimizer(name)
    return {**entry.fixed, **entry.resolve(values), **entry.context(CONTEXT)}


class Separate:
    """K ordinary LABPAL runs, one model and optimizer each."""

    def __init__(self, name: str, values: Sequence[dict[str, Any]], seeds: Sequence[int]) -> None:
        self.models = [MLP(initial_weights(seed)) for seed in seeds]
        self.factories = [ClosureFactory(model, nn.CrossEntropyLoss()) for model in self.models]
        self.optimizers = [
            build_optimizer(name, model.parameters(), v, CONTEXT) for model, v in zip(self.models, values, strict=True)
        ]

    def step(self, data: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        return torch.stack(
            [
                opt.step(factory(x, y))
                for opt, factory, (x, y) in zip(self.optimizers, self.factories, data, strict=True)
            ]
        )


class Fused:
    """The same K runs as one fused model and one FusedLABPAL."""

    def __init__(self, name: str, values: Sequence[dict[str, Any]], seeds: Sequence[int]) -> None:
        self.model = FusedMLP([initial_weights(seed) for seed in seeds])
        self.factory = FusedFactory(self.model, nn.CrossEntropyLoss())
        self.optimizer = FusedLABPAL(list(self.model.parameters()), [kwargs(name, v) for v in values])

    def step(self, data: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        x = torch.stack([x for x, _ in data])
        y = torch.stack([y for _, y in data])
        return self.optimizer.step(self.factory(x, y))

    def copy_params(self, k: int) -> list[Tensor]:
        return [p.detach()[k] for p in self.model.parameters()]


def run_both(
    name: str,
    values: Sequence[dict[str, Any]],
    seeds: Sequence[int],
    corrupt: dict[int, range] | None = None,
) -> tuple[Separate, Fused, list[float], list[list[tuple[bool, int]]]]:
    """Train K separate runs and their fused group on the same batches for STEPS steps.

    Returns both, the largest difference per step between the copies not in ``corrupt`` and their separate runs
    (losses, parameters, effective learning rates, update flags) and the fused copies' phases after every step.
    ``corrupt`` maps a copy to the steps at which its inputs are multiplied by infinity."""
    separate, fused = Separate(name, values, seeds), Fused(name, values, seeds)
    streams = [batches(seed) for seed in seeds]
    exact = [c for c in range(len(seeds)) if c not in (corrupt or {})]
    differences, phases = [], []
    for step in range(STEPS):
        data = [next(stream) for stream in streams]
        for c, steps in (corrupt or {}).items():
            if step in steps:
                data[c] = (data[c][0] * torch.inf, data[c][1])
        expected, losses = separate.step(data), fused.step(data)
        worst = (expected[exact] - losses[exact]).abs().max().item()
        for c in exact:
            ordinary = separate.optimizers[c]
            assert bool(ordinary.updated) == bool(fused.optimizer.updated[c]), f"copy {c} step {step}"
            worst = max(worst, abs(ordinary.effective_lr.item() - fused.optimizer.effective_lr[c].item()))
            for p, q in zip(separate.models[c].parameters(), fused.copy_params(c), strict=True):
                worst = max(worst, (p.detach() - q).abs().max().item())
        differences.append(worst)
        phase = fused.optimizer.phase
        phases.append(list(zip(phase["measuring"], phase["count"], strict=True)))
    return separate, fused, differences, phases


@pytest.mark.parametrize("name", ["labpal_sgd", "labpal_nsgd"])
def test_copies_with_different_hyperparameters_follow_their_separate_runs(name):
    values = [{**SHARED, **v} for v in VARIED]
    separate, fused, differences, _ = run_both(name, values, seeds=[0, 1, 2, 3])
    assert max(differences) < 1e-6
    for c, ordinary in enumerate(separate.optimizers):
        # several measurement/training cycles at k = 1 and k = 2, and averaged measurements after the trusted point
        assert ordinary.shared["k"] == 2 and ordinary.shared["updates"] >= 15
        assert len(ordinary.shared["history_steps"]) == 2
        assert fused.optimizer.phase["updates"][c] == ordinary.shared["updates"]
    assert fused.optimizer.training_steps(STEPS) == separate.optimizers[0].training_steps == STEPS


@pytest.mark.parametrize("name", ["labpal_sgd", "labpal_nsgd"])
def test_rejected_directions_put_copies_out_of_phase_and_each_stays_exact(name):
    values = [{**SHARED, **v} for v in VARIED]
    values[0]["direction_norm_bounds"] = [0.5, 100.0]  # rejects the later, shorter gradients: back to training
    values[3]["direction_norm_bounds"] = [1e-3, 1.4]  # rejects the first direction: measures again, no step yet
    *_, differences, phases = run_both(name, values, seeds=[0, 1, 2, 3])
    assert max(differences) < 1e-6
    assert phases[0][3] == (True, 0) and phases[0][1] == (True, 1)  # copy 3 restarted its first measurement
    assert any(phase[0] != phase[1] for phase in phases[10:])  # copy 0 went back to training, then measured again
    assert sum(len(set(phase)) > 1 for phase in phases) > 10


def test_a_diverging_copy_leaves_the_others_exact():
    values = [{**SHARED, **v} for v in VARIED]
    values[1].update(update_step_adaptation=1e300, max_step_size=1e300)  # weights of order 1e300 after one update
    corrupt = {1: range(20, 24)}  # then infinite inputs (an overflow upstream) make its losses and gradients NaN
    separate, fused, differences, phases = run_both("labpal_sgd", values, seeds=[0, 1, 2, 3], corrupt=corrupt)
    assert max(differences) < 1e-6
    assert not all(torch.isfinite(p).all() for p in fused.copy_params(1))
    assert not all(torch.isfinite(p).all() for p in separate.models[1].parameters())
    assert any(len(set(phase)) > 1 for phase in phases[20:])  # its directions are rejected from then on
    for c in (0, 2, 3):
        assert all(torch.isfinite(p).all() for p in fused.copy_params(c))


def reloaded(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through torch.save and torch.load, as a checkpoint file carries it (plain data only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", ["labpal_sgd", "labpal_nsgd"])
def test_per_copy_checkpoints_resume_bitwise_in_other_positions(name):
    values = [{**SHARED, **v} for v in VARIED]
    values[0]["direction_norm_bounds"] = [0.5, 100.0]
    values[3]["direction_norm_bounds"] = [1e-3, 1.4]  # copies out of phase, so checkpoints hold uneven measurements
    seeds = [0, 1, 2, 3]
    streams = [batches(seed) for seed in seeds]
    data = [[next(stream) for stream in streams] for _ in range(STEPS)]

    reference = Fused(name, values, seeds)
    losses, params, phases = [], [], []
    for batch in data:
        losses.append(reference.step(batch))
        params.append([p.detach().clone() for p in reference.model.parameters()])
        phase = reference.optimizer.phase
        phases.append(list(zip(phase["measuring"], phase["count"], strict=True)))
    # mid-measurement with the copies at different batch counts (k = 1); in the middle of a training batch group at
    # k = 2 (a gradient sum); out of phase at k = 2
    uneven = next(s for s in range(5, STEPS // 2) if len({n for m, n in phases[s] if m and n > 0}) > 1)
    grouped = next(s for s in range(STEPS // 2, STEPS) if any(not m and n == 1 for m, n in phases[s]))
    drifted = next(s for s in range(STEPS // 2, STEPS - 2) if len(set(phases[s])) > 1)

    position = [2, 0, 3, 1]  # copy c resumes at position[c]
    held = sorted(range(4), key=lambda c: position[c])  # the copy at each new position
    for stop in (uneven, grouped, drifted):
        interrupted = Fused(name, values, seeds)
        for batch in data[: stop + 1]:
            interrupted.step(batch)
        saved = [reloaded(interrupted.optimizer.copy_state_dict(c)) for c in range(4)]
        assert stop == grouped or any(state["closures"] for state in saved)  # measurements' batches travel along
        resumed = Fused(name, [values[c] for c in held], [seeds[c] for c in held])
        with torch.no_grad():
            for p, q in zip(resumed.model.parameters(), interrupted.model.parameters(), strict=True):
                p.copy_(q[held])
        for c in range(4):
            resumed.optimizer.load_copy_state_dict(position[c], saved[c])
        for step in range(stop + 1, STEPS):
            step_losses = resumed.step([data[step][c] for c in held])
            assert torch.equal(step_losses, losses[step][held]), f"step {step}"
            for p, q in zip(resumed.model.parameters(), params[step], strict=True):
                assert torch.equal(p.detach(), q[held]), f"step {step}"


def test_in_step_copies_read_the_device_exactly_where_one_ordinary_labpal_does(monkeypatch):
    """Host reads (``bool``, ``item``, ``tolist``, ...) wait for the device. A fused group in step reads where the
    ordinary LABPAL does -- its two decisions per measurement -- and never in training steps."""
    reads = 0

    def counting(method):
        def read(*args, **kwargs):
            nonlocal reads
            reads += 1
            return method(*args, **kwargs)

        return read

    for method in ("tolist", "item", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, method, counting(getattr(torch.Tensor, method)))
    values = [{**SHARED, **v} for v in VARIED]
    seeds = [0, 1, 2, 3]
    separate, fused = Separate("labpal_sgd", values, seeds), Fused("labpal_sgd", values, seeds)
    streams = [batches(seed) for seed in seeds]
    ordinary_reads, fused_reads = [], []
    for _ in range(STEPS):
        data = [next(stream) for stream in streams]
        reads = 0
        separate.optimizers[0].step(separate.factories[0](*data[0]))
        ordinary_reads.append(reads)
        reads = 0
        fused.step(data)
        fused_reads.append(reads)
        phase = fused.optimizer.phase
        assert len(set(zip(phase["measuring"], phase["count"], strict=True))) == 1  # the copies stay in step
    assert fused_reads == ordinary_reads
    assert sum(fused_reads) > 0 and fused_reads.count(0) > STEPS // 2


def test_budget_schedule_and_group_checks_are_the_ordinary_labpals():
    weights = [initial_weights(seed) for seed in (0, 1)]
    params = list(FusedMLP(weights).parameters())
    values = {**SHARED, "noise_factor": None}  # Eq. 6.8 from batch and training-set size: ε = 16 · 0.008
    ordinary = build_optimizer("labpal_nsgd", MLP(weights[0]).parameters(), values, CONTEXT)
    fused = FusedLABPAL(params, [kwargs("labpal_nsgd", values)] * 2)
    assert fused.training_steps(STEPS) == ordinary.training_steps == round(STEPS * 0.128)
    assert fused.schedule == ordinary.schedule
    assert fused.NAME == "labpal_nsgd" and FusedLABPAL.NAME == "labpal"
    with pytest.raises(ValueError, match="sgd_steps"):
        FusedLABPAL(params, [kwargs("labpal_sgd", SHARED), kwargs("labpal_sgd", {**SHARED, "sgd_steps": 4})])
    with pytest.raises(ValueError, match="mode"):
        FusedLABPAL(params, [kwargs("labpal_sgd", SHARED), kwargs("labpal_nsgd", SHARED)])
    with pytest.raises(ValueError, match="near_measuring_step_size"):  # the ordinary constructor's own checks
        FusedLABPAL(params, [kwargs("labpal_sgd", {**SHARED, "near_measuring_step_size": 0.5})] * 2)
