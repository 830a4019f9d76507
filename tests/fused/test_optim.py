"""The fused optimizers train K copies exactly like K separate runs of the ordinary optimizers.

The toy is a 2-layer tanh MLP whose fused weights are ``(K, out, in)`` tensors applied with ``torch.bmm``; copy k
sees its own stream of batches and the fused closure returns the K mean cross-entropies. Each reference run is an
ordinary ``nn.Sequential`` with copy k's initial weights, the ordinary optimizer with copy k's hyperparameters and
the same batches.

The toy is built so that its forward and backward passes are bitwise those of the reference models on the CPU
(aligned sizes, each copy's loss reduced by ``F.cross_entropy`` itself): then what the comparison measures is the
optimizers alone, and even a line search whose parabola amplifies last-bit differences by 1/μ² stays comparable
over 50 steps. The assertions use the 1e-6 tolerance the fused trainer promises.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsbench.fused.copies import FusedOptimizer
from lsbench.fused.groups import SHARED_HPARAMS
from lsbench.fused.optim import (
    FUSED_OPTIMIZERS,
    LABPAL_NAMES,
    FusedPAL,
    FusedSLS,
    build_fused_optimizer,
)
from lsbench.optim import TrainingContext, get_optimizer, step_report, training_steps

K, IN, HIDDEN, CLASSES, BATCH, STEPS = 4, 8, 8, 4, 16, 50
"""Sizes that make every copy's slice of every bmm operand a multiple of 64 bytes: CPU BLAS picks its kernels by
the operands' alignment, so with odd sizes a copy's gradient depends (in the last bit) on its position in the group,
which the bitwise resume test at permuted positions would see."""
CONTEXT = TrainingContext(total_steps=STEPS, batch_size=BATCH, train_size=10 * BATCH)
TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


# -- the toy ------------------------------------------------------------------------------------------------------


def initial_weights(seed: int) -> list[Tensor]:
    """One copy's [W1, b1, W2, b2] in nn.Linear's layout."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(HIDDEN, IN), (HIDDEN,), (CLASSES, HIDDEN), (CLASSES,)]
    return [torch.randn(shape, generator=generator, dtype=torch.float64) * 0.5 for shape in shapes]


def data_stream(seed: int, steps: int, poisoned: Sequence[int] = ()) -> list[tuple[Tensor, Tensor]]:
    """A copy's batches, a new one every step; the inputs of the ``poisoned`` steps contain an infinity."""
    generator = torch.Generator().manual_seed(1000 + seed)
    batches = []
    for step in range(steps):
        x = torch.randn(BATCH, IN, generator=generator, dtype=torch.float64)
        y = torch.randint(0, CLASSES, (BATCH,), generator=generator)
        if step in poisoned:
            x[0, 0] = math.inf
        batches.append((x, y))
    return batches


def fused_losses(params: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """The K copies' mean cross-entropies on their own batches, ``x`` (K, B, IN), ``y`` (K, B); each reduced by
    F.cross_entropy as the reference's loss is (a row mean of unreduced losses sums in another order)."""
    w1, b1, w2, b2 = params
    hidden = torch.tanh(torch.bmm(x, w1.transpose(1, 2)) + b1[:, None, :])
    logits = torch.bmm(hidden, w2.transpose(1, 2)) + b2[:, None, :]
    return torch.stack([F.cross_entropy(copy_logits, copy_y) for copy_logits, copy_y in zip(logits, y, strict=True)])


def reference_model(weights: Sequence[Tensor]) -> nn.Module:
    model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES)).double()
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(w)
    return model


def fused_params(weights: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """The fused parameters from each copy's weights (copy k's in row k)."""
    return [torch.stack(list(ws)).requires_grad_() for ws in zip(*weights, strict=True)]


def copy_kwargs(name: str, grid: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What OptimizerEntry.build passes the ordinary optimizer, plus non-grid constructor arguments."""
    entry = get_optimizer(name)
    return {**entry.fixed, **entry.resolve(grid), **entry.context(CONTEXT), **(extra or {})}


def fused_step(opt: FusedOptimizer, params: Sequence[Tensor], streams: Sequence[list], step: int) -> Tensor:
    x = torch.stack([stream[step][0] for stream in streams])
    y = torch.stack([stream[step][1] for stream in streams])
    return opt.step(lambda: fused_losses(params, x, y))


# -- fused against separate runs -------------------------------------------------------------------------------


def compare_with_separate_runs(
    name: str,
    grids: Sequence[dict[str, Any]],
    extras: Sequence[dict[str, Any]] | None = None,
    poisoned: dict[int, Sequence[int]] | None = None,
    steps: int = STEPS,
) -> dict[str, Any]:
    """Train K copies fused and K separate runs; after every step the parameters, losses, effective_lr and updated
    agree per copy (NaN where a copy diverged, on both sides). Returns what the runs did."""
    extras = list(extras or [{}] * len(grids))
    poisoned = poisoned or {}
    weights = [initial_weights(seed) for seed in range(len(grids))]
    streams = [data_stream(seed, steps, poisoned.get(seed, ())) for seed in range(len(grids))]
    kwargs = [copy_kwargs(name, grid, extra) for grid, extra in zip(grids, extras, strict=True)]
    entry = get_optimizer(name)

    params = fused_params(weights)
    if any(extras):
        fused = FUSED_OPTIMIZERS[name](params, kwargs)
    else:
        fused = build_fused_optimizer(name, params, grids, CONTEXT)
        assert fused.hparams == FUSED_OPTIMIZERS[name](params, kwargs).hparams
    models = [reference_model(w) for w in weights]
    separate = [entry.factory(model.parameters(), **kw) for model, kw in zip(models, kwargs, strict=True)]

    forwards = [[] for _ in grids]
    for step in range(steps):
        losses = fused_step(fused, params, streams, step)
        for k, (model, opt) in enumerate(zip(models, separate, strict=True)):
            x, y = streams[k][step]
            before = opt.forward_passes
            loss = opt.step(lambda model=model, x=x, y=y: F.cross_entropy(model(x), y))
            forwards[k].append(opt.forward_passes - before)
            report = step_report(opt)
            where = f"{name} copy {k} step {step}"
            torch.testing.assert_close(losses[k], loss, **TOLERANCE, equal_nan=True, msg=where)
            for fused_p, p in zip(params, model.parameters(), strict=True):
                torch.testing.assert_close(fused_p[k], p, **TOLERANCE, equal_nan=True, msg=where)
            expected_lr = torch.as_tensor(report.effective_lr, dtype=torch.float64)
            torch.testing.assert_close(fused.effective_lr[k], expected_lr, **TOLERANCE, equal_nan=True, msg=where)
            assert bool(fused.updated[k]) == bool(report.updated), where
    finite = [all(bool(torch.isfinite(p[k]).all()) for p in params) for k in range(len(grids))]
    return {"forwards": forwards, "finite": finite}


SGD_GRIDS = [
    {"lr": 0.5, "momentum": 0.0, "lr_schedule": "piecewise"},
    {"lr": 0.1, "momentum": 0.9, "lr_schedule": "piecewise"},
    {"lr": 1.0, "momentum": 0.5, "lr_schedule": "piecewise"},
    {"lr": 0.05, "momentum": 0.0, "lr_schedule": "piecewise"},
]
NESTEROV_GRIDS = [
    {"lr": 0.5, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "momentum": 0.5, "nesterov": True},
    {"lr": 0.3, "momentum": 0.99, "nesterov": True},
    {"lr": 0.05, "momentum": 0.2, "nesterov": True},
]
ADAM_GRIDS = [
    {"lr": 1e-2, "lr_schedule": "piecewise"},
    {"lr": 5e-2, "beta1": 0.5, "beta2": 0.9, "epsilon": 1e-6, "lr_schedule": "piecewise"},
    {"lr": 1e-3, "beta1": 0.0, "beta2": 0.99, "lr_schedule": "piecewise"},
    {"lr": 2e-2, "beta1": 0.8, "beta2": 0.95, "epsilon": 1e-3, "lr_schedule": "piecewise"},
]
RMSPROP_GRIDS = [
    {"lr": 1e-2, "momentum": 0.0},
    {"lr": 3e-3, "alpha": 0.99, "momentum": 0.9},
    {"lr": 2e-2, "alpha": 0.5, "epsilon": 1e-4, "momentum": 0.5},
    {"lr": 1e-3, "alpha": 0.9, "momentum": 0.0},
]
PAL_GRIDS = [
    {"measuring_step_size": 1.0},
    {"measuring_step_size": 0.1, "update_step_adaptation": 1.0, "max_step_size": 1.0},
    {"measuring_step_size": 0.5, "update_step_adaptation": 1.25, "max_step_size": 1.0},
    {"measuring_step_size": 2.0, "update_step_adaptation": 1.0, "max_step_size": 0.5},
]
SLS_GRIDS = [
    {"initial_step_size": 1.0},
    {"initial_step_size": 10.0, "armijo_constant": 0.5, "step_size_decay": 0.5},
    {"initial_step_size": 0.1, "step_size_reset": 4.0, "reset_option": "grow"},
    {"initial_step_size": 1e4, "armijo_constant": 0.2, "max_step_size": None},
]


def with_betas(betas: Sequence[float]) -> list[dict[str, Any]]:
    return [{**grid, "direction_adaptation": beta} for grid, beta in zip(PAL_GRIDS, betas, strict=True)]


@pytest.mark.parametrize(
    ("name", "grids"),
    [
        ("sgd", SGD_GRIDS),
        ("sgd", NESTEROV_GRIDS),
        ("adam", ADAM_GRIDS),
        ("rmsprop", RMSPROP_GRIDS),
        ("pal", with_betas([0.0, 0.0, 0.0, 0.0])),
        ("pal", with_betas([0.4, 0.0, 0.9, 0.2])),
    ],
    ids=["sgd-momentum-piecewise", "sgd-nesterov", "adam-piecewise", "rmsprop-momentum", "pal-beta0", "pal-beta"],
)
def test_fused_copies_equal_separate_runs(name: str, grids: list[dict[str, Any]]) -> None:
    result = compare_with_separate_runs(name, grids)
    assert all(result["finite"])


def test_fused_sls_copies_backtrack_independently() -> None:
    """Copies need different numbers of trials in one step (the fused group runs the most of them), copy 3's huge
    first steps fail every trial and fall back, and copy 1 skips the steps where its gradient is small."""
    extras = [{"max_backtracks": 30} for _ in range(K)]
    extras[1]["min_gradient_norm"] = 0.4
    result = compare_with_separate_runs("sls", SLS_GRIDS, extras)
    trials = [[f - 1 for f in copy_forwards] for copy_forwards in result["forwards"]]
    assert all(result["finite"])
    assert any(len({trials[k][step] for k in range(K)}) > 2 for step in range(STEPS))  # differing trial counts
    assert any(n > 1 for n in trials[0])  # backtracking happened
    assert trials[3][0] == 30  # fallback after max_backtracks
    assert 0 in trials[1] and any(n > 0 for n in trials[1])  # skipped and searched


@pytest.mark.parametrize(
    ("name", "grids"),
    [
        ("sgd", [*SGD_GRIDS[:2], {"lr": 1e308, "momentum": 0.5}, SGD_GRIDS[3]]),
        ("adam", [*ADAM_GRIDS[:2], {"lr": 1e308}, ADAM_GRIDS[3]]),
        ("rmsprop", [*RMSPROP_GRIDS[:2], {"lr": 1e308, "momentum": 0.5}, RMSPROP_GRIDS[3]]),
    ],
)
def test_a_diverging_copy_leaves_the_others_alone(name: str, grids: list[dict[str, Any]]) -> None:
    result = compare_with_separate_runs(name, [{**grid, "lr_schedule": "constant"} for grid in grids], steps=20)
    assert result["finite"] == [True, True, False, True]


@pytest.mark.parametrize(("name", "grids"), [("pal", with_betas([0.4, 0.0, 0.9, 0.2])), ("sls", SLS_GRIDS)])
def test_a_non_finite_batch_of_one_copy_leaves_the_others_alone(name: str, grids: list[dict[str, Any]]) -> None:
    """A batch with an infinity makes copy 2's loss and gradient NaN: PAL steps into NaN as the ordinary PAL does,
    SLS skips those steps as the ordinary SLS does; the other copies do not notice."""
    result = compare_with_separate_runs(name, grids, poisoned={2: (3, 7)}, steps=20)
    assert result["finite"] == [True, True, name == "sls", True]


# -- checkpoints ----------------------------------------------------------------------------------------------------

CHECKPOINT_CASES = [
    ("sgd", SGD_GRIDS),
    ("sgd", NESTEROV_GRIDS),
    ("adam", ADAM_GRIDS),
    ("rmsprop", RMSPROP_GRIDS),
    ("pal", with_betas([0.4, 0.0, 0.9, 0.2])),
    ("sls", SLS_GRIDS),
]


def round_trip(value: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize(("name", "grids"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_per_copy_checkpoints_resume_bitwise_in_other_positions(name: str, grids: list[dict[str, Any]]) -> None:
    first, more = 20, 10
    context = TrainingContext(total_steps=first + more, batch_size=BATCH, train_size=10 * BATCH)
    weights = [initial_weights(seed) for seed in range(K)]
    streams = [data_stream(seed, first + more) for seed in range(K)]

    def build(order: Sequence[int]) -> tuple[list[Tensor], FusedOptimizer]:
        params = fused_params([weights[k] for k in order])
        return params, build_fused_optimizer(name, params, [grids[k] for k in order], context)

    params, opt = build(range(K))
    for step in range(first):
        fused_step(opt, params, streams, step)
    saved = round_trip(
        [{"params": [p[k].detach().clone() for p in params], "optimizer": opt.copy_state_dict(k)} for k in range(K)]
    )
    reports = []
    for step in range(first, first + more):
        losses = fused_step(opt, params, streams, step)
        reports.append((losses, opt.effective_lr.clone(), opt.updated.clone()))

    order = [2, 0, 3, 1]  # position j resumes copy order[j]
    fresh_weights = [initial_weights(100 + seed) for seed in range(K)]
    resumed_params = fused_params(fresh_weights)
    resumed = build_fused_optimizer(name, resumed_params, [grids[k] for k in order], context)
    with torch.no_grad():
        for j, k in enumerate(order):
            for p, value in zip(resumed_params, saved[k]["params"], strict=True):
                p[j] = value
    for j in (3, 1, 0, 2):  # load in yet another order
        resumed.load_copy_state_dict(j, saved[order[j]]["optimizer"])
    resumed_streams = [streams[k] for k in order]
    for step in range(first, first + more):
        losses = fused_step(resumed, resumed_params, resumed_streams, step)
        expected_losses, expected_lr, expected_updated = reports[step - first]
        assert torch.equal(losses, expected_losses[order])
        assert torch.equal(resumed.effective_lr, expected_lr[order])
        assert torch.equal(resumed.updated, expected_updated[order])
    for p, q in zip(resumed_params, params, strict=True):
        assert torch.equal(p, q[order])


# -- host synchronisation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "grids"),
    [("sgd", SGD_GRIDS), ("sgd", NESTEROV_GRIDS), ("adam", ADAM_GRIDS), ("rmsprop", RMSPROP_GRIDS)]
    + [("pal", with_betas(betas)) for betas in ([0.0] * 4, [0.4, 0.0, 0.9, 0.2], [0.4] * 4)],
)
def test_steps_read_no_values_back_to_the_host(
    name: str, grids: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = [initial_weights(seed) for seed in range(K)]
    streams = [data_stream(seed, 3) for seed in range(K)]
    params = fused_params(weights)
    opt = build_fused_optimizer(name, params, grids, CONTEXT)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("host synchronisation inside a fused step")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, forbidden)
    for step in range(3):
        fused_step(opt, params, streams, step)
    monkeypatch.undo()
    assert all(bool(torch.isfinite(p).all()) for p in params)


# -- building ---------------------------------------------------------------------------------------------------


def test_the_fused_optimizers_are_those_the_planner_groups() -> None:
    assert set(FUSED_OPTIMIZERS) | set(LABPAL_NAMES) == set(SHARED_HPARAMS)
    assert all(name == cls.NAME for name, cls in FUSED_OPTIMIZERS.items())


def one_line_error(build: Callable[[], Any]) -> str:
    with pytest.raises(ValueError) as raised:
        build()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_build_rejects_an_optimizer_without_a_fused_version() -> None:
    params = fused_params([initial_weights(seed) for seed in range(2)])
    message = one_line_error(lambda: build_fused_optimizer("alig", params, [{}, {}], CONTEXT))
    assert "'alig'" in message and "no fused version" in message


def test_build_rejects_a_group_whose_shared_hyperparameter_differs() -> None:
    params = fused_params([initial_weights(seed) for seed in range(2)])
    grids = [{"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "nesterov": False}]
    assert "nesterov" in one_line_error(lambda: build_fused_optimizer("sgd", params, grids, CONTEXT))
    grids = [{"reset_option": "grow"}, {"reset_option": "keep"}]
    assert "reset_option" in one_line_error(lambda: build_fused_optimizer("sls", params, grids, CONTEXT))


def test_build_validates_every_copy_like_the_ordinary_optimizer() -> None:
    params = fused_params([initial_weights(seed) for seed in range(2)])
    assert "lr" in one_line_error(lambda: build_fused_optimizer("sgd", params, [{}, {"lr": -1.0}], CONTEXT))
    assert "unknown" in one_line_error(lambda: build_fused_optimizer("adam", params, [{}, {"beta3": 0.1}], CONTEXT))
    grids = [{"momentum": 0.9, "nesterov": True}, {"momentum": 0.0, "nesterov": True}]
    assert "Nesterov" in one_line_error(lambda: build_fused_optimizer("sgd", params, grids, CONTEXT))


@pytest.mark.parametrize("cls", [FusedPAL, FusedSLS])
def test_noise_adaptation_budget_is_the_ordinary_one_and_several_batches_are_refused(cls: type) -> None:
    params = fused_params([initial_weights(seed) for seed in range(2)])
    name = cls.NAME
    kwargs = [copy_kwargs(name, {"noise_factor": 1.5}), copy_kwargs(name, {"noise_factor": 1.5})]
    ordinary = get_optimizer(name).factory(reference_model(initial_weights(0)).parameters(), **kwargs[0])
    assert cls(params, kwargs).training_steps(STEPS) == training_steps(ordinary, STEPS) == round(1.5 * STEPS)
    assert cls(params, [copy_kwargs(name, {})] * 2).training_steps(STEPS) == STEPS
    message = one_line_error(lambda: cls(params, [copy_kwargs(name, {}), copy_kwargs(name, {"noise_factor": 3.0})]))
    assert name in message and "unfused" in message
    message = one_line_error(lambda: cls(params, [copy_kwargs(name, {}), copy_kwargs(name, {"noise_factor": 1.5})]))
    assert "budgets" in message


def test_labpal_is_built_from_its_own_module() -> None:
    labpal = pytest.importorskip("lsbench.fused.labpal")
    params = fused_params([initial_weights(seed) for seed in range(2)])
    opt = build_fused_optimizer("labpal_sgd", params, [{}, {}], CONTEXT)
    assert isinstance(opt, labpal.FusedLABPAL)
    assert opt.copies == 2
