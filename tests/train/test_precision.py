"""Precision settings: what they switch, what they leave alone, and why fp32 is the default for line searches."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from lsbench.optim import ClosureFactory
from lsbench.optim.labpal import parabola
from lsbench.problems import build_problem
from lsbench.train import precision as precision_module
from lsbench.train.precision import closure_factory, imitate_tf32, numerics, round_to_tf32, tf32_allowed

NEAR, FAR = 1.77e-4, 0.01  # LABPAL's probe distances


@pytest.fixture
def tf32_settings_restored():
    """Whatever a test does to the TF32 settings, the next test starts from the same ones."""
    before = (tf32_allowed("conv"), tf32_allowed("matmul"))
    yield
    assert (tf32_allowed("conv"), tf32_allowed("matmul")) == before


def test_fp32_switches_tf32_off_for_the_block_and_restores_what_was_set(tf32_settings_restored):
    with numerics("tf32"):
        assert tf32_allowed("conv") and tf32_allowed("matmul")
        with numerics("fp32"):
            assert not tf32_allowed("conv") and not tf32_allowed("matmul")
        assert tf32_allowed("conv") and tf32_allowed("matmul")
    with numerics("bf16"):
        assert not tf32_allowed("conv") and not tf32_allowed("matmul")


def test_the_legacy_flags_are_switched_and_restored_too(monkeypatch, tf32_settings_restored):
    """PyTorch before 2.9 (the container's 2.5) has only allow_tf32 and the float32 matmul precision."""
    monkeypatch.setattr(precision_module, "_NEW_API", False)
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with numerics("fp32"):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
        assert not tf32_allowed("conv") and not tf32_allowed("matmul")
    with numerics("tf32"):
        assert tf32_allowed("conv") and tf32_allowed("matmul")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp32, tf32, bf16"), numerics("fp16"):
        pass


def test_round_to_tf32_keeps_ten_mantissa_bits():
    x = torch.tensor([1.0 + 2**-10, 1.0 + 2**-11 + 2**-12, 1.0 + 2**-12, -3.0])
    assert round_to_tf32(x).tolist() == [1.0 + 2**-10, 1.0 + 2**-10, 1.0, -3.0]
    assert torch.equal(round_to_tf32(x.double()), x.double())  # only float32 operands go through TF32


def test_the_imitation_rounds_convolutions_only_where_the_settings_allow_tf32(tf32_settings_restored):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    exact = conv(x)
    rounded = nn.functional.conv2d(round_to_tf32(x), round_to_tf32(conv.weight), conv.bias)
    with imitate_tf32():
        with numerics("fp32"):
            assert torch.equal(conv(x), exact)
        with numerics("tf32"):
            assert torch.equal(conv(x), rounded)
            assert not torch.equal(rounded, exact)


def test_bf16_runs_the_closure_forward_under_autocast_and_keeps_float32_loss_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    seen = []
    model[0].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    closures = closure_factory(model, nn.CrossEntropyLoss(), 1e-4, "bf16", torch.device("cpu"))
    loss = closures(torch.randn(4, 8), torch.tensor([0, 1, 2, 0]), seed=1)()
    loss.backward()
    assert seen == [torch.bfloat16]
    assert loss.dtype == torch.float32
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())
    assert type(closure_factory(model, nn.CrossEntropyLoss(), 0.0, "tf32", torch.device("cpu"))) is ClosureFactory


# -- why fp32 is the default -----------------------------------------------------------------------------------------


def _near_probe_curvature(model, loss_fn, batches, origin, direction, dtype, precision=None):
    """LABPAL's published curvature from probes at 0, NEAR and FAR along ``direction`` (unit length), each the mean
    of the closure losses over ``batches``; the probes are evaluated in ``dtype`` under ``numerics(precision)`` (or
    under whatever the process has set when None), and fitted in float64."""
    model = copy.deepcopy(model).to(dtype)
    closures = ClosureFactory(model, loss_fn, weight_decay=1e-4)
    means = []
    with torch.no_grad(), numerics(precision) if precision else contextlib.nullcontext():
        for distance in (0.0, NEAR, FAR):
            for p, o, d in zip(model.parameters(), origin, direction, strict=True):
                p.copy_(o - distance * d)
            losses = [closures(x.to(dtype), y, seed=i)() for i, (x, y) in enumerate(batches)]
            means.append(torch.stack(losses).double().mean())
    return parabola("published", *means, NEAR, FAR)[0].item(), means[0]


def test_imitated_tf32_corrupts_labpal_near_probe_curvature_and_the_fp32_setting_does_not(tf32_settings_restored):
    """CIFAR ResNet-20 at initialisation, as on an Ampere-or-newer GPU (imitated): the run's fp32 setting keeps the
    near-probe curvature as close to float64 as float32 can be; TF32 -- PyTorch's default for cuDNN convolutions, and
    the tf32 setting -- flips its sign.

    "As close as float32 can be" is measured in *roundings*: the error that rounding each probe loss once to float32
    causes (the estimator is linear in the three losses). At 1.77e-4 the curvature term of the loss is about 1e-7,
    one float32 rounding of a loss of 2.3, so no float32 evaluation gets within 1e-3 of float64 here (the issue's
    target): one rounding is 1.7 % of the curvature. Over seeds 1-4 fp32 stayed within 0.1-1.6 roundings (0.5-3 %),
    TF32 missed by 130-1,100 roundings (2-18 times the value).
    """
    problem = build_problem("cifar10shaped_resnet20", seed=1, batch_size=32)
    batches = [problem.train.next_batch() for _ in range(2)]
    loss_fn = problem.loss_fn
    reference = copy.deepcopy(problem.model).double()
    factory = ClosureFactory(reference, loss_fn, weight_decay=1e-4)
    for i, (x, y) in enumerate(batches):
        (factory(x.double(), y, seed=i)() / len(batches)).backward()
    gradient = [p.grad.detach().clone() for p in reference.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in gradient]))
    direction = [g / norm for g in gradient]
    origin = [p.detach().clone() for p in reference.parameters()]

    float64, loss_0 = _near_probe_curvature(problem.model, loss_fn, batches, origin, direction, torch.float64)
    assert float64 > 0  # a valley ahead: LABPAL takes a step
    with imitate_tf32():
        fp32, _ = _near_probe_curvature(problem.model, loss_fn, batches, origin, direction, torch.float32, "fp32")
        tf32, _ = _near_probe_curvature(problem.model, loss_fn, batches, origin, direction, torch.float32, "tf32")
        assert tf32_allowed("conv")  # PyTorch's default outside a run: what an unconfigured run would get
        default, _ = _near_probe_curvature(problem.model, loss_fn, batches, origin, direction, torch.float32)

    unit = torch.eye(3, dtype=torch.float64)
    sensitivity = sum(abs(parabola("published", *row, NEAR, FAR)[0].item()) for row in unit)
    loss_0 = loss_0.float()
    resolution = sensitivity * (torch.nextafter(loss_0, torch.tensor(9.0)) - loss_0).item() / 2
    assert resolution / float64 < 0.05
    assert abs(fp32 - float64) <= 3 * resolution
    for corrupted in (tf32, default):
        assert abs(corrupted - float64) > 30 * resolution
        assert abs(corrupted - float64) > abs(float64)
