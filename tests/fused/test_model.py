"""K models fused into one module: copy k computes exactly what model k computes on its own -- outputs, gradients,
BatchNorm statistics, in float64 to 1e-10 -- copies never mix (not even a NaN), one copy's state reads and writes in
the original model's format, and modules that fusion cannot keep apart are refused."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsbench.fused.groups import FUSED_MODELS
from lsbench.fused.model import FusedBatchNorm, FusedModel, copy_losses, fuse_models
from lsbench.problems.models import build_model

TOL = {"rtol": 1e-10, "atol": 1e-10}
SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "resnet20": (3, 32, 32), "resnet32": (3, 32, 32)}
BATCHES = {"mlp": 16, "cnn": 8, "resnet20": 4}  # small, so that the ResNet tests take about a second
CLASSES = 10


def build(name: str, copies: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> list[nn.Module]:
    """``copies`` models ``name``, model k initialised from seed ``seed + k``."""
    models = []
    for k in range(copies):
        torch.manual_seed(seed + k)
        models.append(build_model(name, SHAPES[name], CLASSES).to(dtype))
    return models


def batch(
    shape: tuple[int, ...], copies: int, size: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """One batch per copy: inputs ``(K, B, *shape)`` and class targets ``(K, B)``."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(copies, size, *shape, generator=generator, dtype=dtype)
    return inputs, torch.randint(0, CLASSES, (copies, size), generator=generator)


def separate(models: list[nn.Module], inputs: Tensor, targets: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
    """Every model on its own batch: its outputs and the gradients of its mean cross-entropy."""
    outputs, grads = [], []
    for model, x, y in zip(models, inputs, targets, strict=True):
        model.zero_grad(set_to_none=True)
        output = model(x)
        F.cross_entropy(output, y).backward()
        outputs.append(output.detach())
        grads.append([p.grad for p in model.parameters()])
    return outputs, grads


def fused_step(fused: FusedModel, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The fused model's outputs and per-copy losses, after a backward pass of the losses' sum."""
    fused.zero_grad(set_to_none=True)
    outputs = fused(inputs)
    losses = copy_losses(nn.CrossEntropyLoss(), outputs, targets)
    losses.sum().backward()
    return outputs.detach(), losses.detach()


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20"])
def test_every_copy_computes_its_own_model_outputs_and_gradients(name):
    models = build(name)
    fused = fuse_models(models)
    inputs, targets = batch(SHAPES[name], 3, BATCHES[name])
    outputs, losses = fused_step(fused, inputs, targets)
    expected_outputs, expected_grads = separate(models, inputs, targets)

    names = [n for n, _ in models[0].named_parameters()]
    assert [n.removeprefix("network.") for n, _ in fused.named_parameters()] == names
    for p, q in zip(fused.parameters(), models[0].parameters(), strict=True):
        assert p.shape == (3, *q.shape) and p.dtype == torch.float64
    assert outputs.shape == (3, BATCHES[name], CLASSES)
    for k in range(3):
        torch.testing.assert_close(outputs[k], expected_outputs[k], **TOL)
        torch.testing.assert_close(losses[k], F.cross_entropy(expected_outputs[k], targets[k]), **TOL)
        for p, expected in zip(fused.parameters(), expected_grads[k], strict=True):
            assert p.grad is not None
            torch.testing.assert_close(p.grad[k], expected, **TOL)


@pytest.mark.parametrize("name", ["cnn", "resnet20"])
def test_batchnorm_keeps_running_statistics_per_copy_and_uses_them_in_eval_mode(name):
    models = build(name)
    fused = fuse_models(models)
    with torch.no_grad():
        for step in range(3):
            inputs, _ = batch(SHAPES[name], 3, BATCHES[name], seed=step)
            fused(inputs)
            for model, x in zip(models, inputs, strict=True):
                model(x)
    for k, model in enumerate(models):
        state = fused.copy_state_dict(k)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(state[key], value, **TOL)
    assert all(int(b.min()) == 3 == int(b.max()) for b in fused.norm_buffers() if b.dtype == torch.long)

    fused.eval()
    for model in models:
        model.eval()
    assert not any(module.training for module in fused.modules())
    inputs, _ = batch(SHAPES[name], 3, BATCHES[name], seed=9)
    before = [b.clone() for b in fused.norm_buffers()]
    with torch.no_grad():
        outputs = fused(inputs)
        for k, model in enumerate(models):
            torch.testing.assert_close(outputs[k], model(inputs[k]), **TOL)
    for old, new in zip(before, fused.norm_buffers(), strict=True):
        assert torch.equal(old, new)  # eval mode reads the running statistics and leaves them alone


def test_batchnorm1d_on_flat_samples():
    def mlp_with_norm(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32, momentum=0.3), nn.ReLU(), nn.Linear(32, 10))

    models = [mlp_with_norm(k).double() for k in range(3)]
    fused = fuse_models(models)
    for step in range(2):
        inputs, targets = batch((64,), 3, 8, seed=step)
        outputs, _ = fused_step(fused, inputs, targets)
        expected_outputs, expected_grads = separate(models, inputs, targets)
        for k in range(3):
            torch.testing.assert_close(outputs[k], expected_outputs[k], **TOL)
            for p, expected in zip(fused.parameters(), expected_grads[k], strict=True):
                torch.testing.assert_close(p.grad[k], expected, **TOL)
    for k, model in enumerate(models):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(fused.copy_state_dict(k)[key], value, **TOL)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20"])
def test_a_nan_in_one_copy_stays_in_that_copy(name):
    models = build(name)
    with torch.no_grad():
        first = next(models[1].parameters())
        first[0] = float("nan")
    fused = fuse_models(models)
    inputs, targets = batch(SHAPES[name], 3, BATCHES[name])
    outputs, losses = fused_step(fused, inputs, targets)
    expected_outputs, expected_grads = separate([models[0], models[2]], inputs[[0, 2]], targets[[0, 2]])

    assert torch.isnan(outputs[1]).any() and torch.isnan(losses[1])
    for k, expected_output, expected_grad in zip((0, 2), expected_outputs, expected_grads, strict=True):
        assert torch.isfinite(outputs[k]).all() and torch.isfinite(losses[k])
        torch.testing.assert_close(outputs[k], expected_output, **TOL)
        for p, expected in zip(fused.parameters(), expected_grad, strict=True):
            assert torch.isfinite(p.grad[k]).all()
            torch.testing.assert_close(p.grad[k], expected, **TOL)
    for buffer in fused.norm_buffers():
        assert torch.isfinite(buffer[[0, 2]].double()).all()


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_copy_state_dicts_are_the_original_models_state_dicts_and_round_trip(name):
    models = build(name)
    fused = fuse_models(models)
    inputs, _ = batch(SHAPES[name], 3, BATCHES[name])
    with torch.no_grad():
        fused(inputs)  # moves the running statistics away from their initial values
        for model, x in zip(models, inputs, strict=True):
            model(x)

    for k, model in enumerate(models):
        state, expected = fused.copy_state_dict(k), model.state_dict()
        assert list(state) == list(expected)
        for key, value in expected.items():
            assert state[key].shape == value.shape and state[key].dtype == value.dtype
            assert torch.equal(state[key], value)
        fresh = build_model(name, SHAPES[name], CLASSES).double()
        fresh.load_state_dict(state)  # strict: a copy's state is an ordinary checkpoint of the model

    state = fused.copy_state_dict(0)
    next(iter(state.values())).add_(1.0)  # a clone: changing it leaves the fused model alone
    assert torch.equal(fused.copy_state_dict(0)[next(iter(state))], models[0].state_dict()[next(iter(state))])

    (other,) = build(name, copies=1, seed=10)
    before = [fused.copy_state_dict(k) for k in (0, 2)]
    fused.load_copy_state_dict(1, {key: value.cpu() for key, value in other.state_dict().items()})
    for key, value in other.state_dict().items():
        assert torch.equal(fused.copy_state_dict(1)[key], value)
    for k, saved in zip((0, 2), before, strict=True):
        for key, value in saved.items():
            assert torch.equal(fused.copy_state_dict(k)[key], value)
    fused.eval()
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(inputs)[1], other(inputs[1]), **TOL)

    with pytest.raises(KeyError, match="missing"):
        fused.load_copy_state_dict(0, dict(list(other.state_dict().items())[1:]))
    with pytest.raises(IndexError):
        fused.copy_state_dict(3)


def test_norm_buffers_are_the_stored_statistics_a_closure_can_restore():
    fused = fuse_models(build("cnn"))
    buffers = fused.norm_buffers()
    norms = [module for module in fused.modules() if isinstance(module, FusedBatchNorm)]
    assert len(norms) == 2 and len(buffers) == 6
    stored = [buffer for m in norms for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)]
    assert all(any(buffer is s for s in stored) for buffer in buffers)
    saved = [buffer.clone() for buffer in buffers]
    before = fused.copy_state_dict(1)
    with torch.no_grad():
        fused(batch(SHAPES["cnn"], 3, 8)[0])  # a probe pass in train mode moves the statistics ...
        assert not torch.equal(fused.copy_state_dict(1)["features.1.running_mean"], before["features.1.running_mean"])
        torch._foreach_copy_(buffers, saved)  # ... and copying the saved buffers back undoes it
    for key, value in fused.copy_state_dict(1).items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_float32_single_copy_and_determinism(name):
    models = build(name, copies=1, dtype=torch.float32)
    fused = fuse_models(models)
    assert fused.copies == 1
    inputs, targets = batch(SHAPES[name], 1, 8, dtype=torch.float32)
    outputs, _ = fused_step(fused, inputs, targets)
    grads = [p.grad.clone() for p in fused.parameters()]
    expected_outputs, expected_grads = separate(models, inputs, targets)
    assert outputs.dtype == torch.float32
    torch.testing.assert_close(outputs[0], expected_outputs[0], rtol=1e-5, atol=1e-6)
    for grad, expected in zip(grads, expected_grads[0], strict=True):
        torch.testing.assert_close(grad[0], expected, rtol=1e-5, atol=1e-6)

    again, _ = fused_step(fused, inputs, targets)
    assert torch.equal(again, outputs)
    assert all(torch.equal(p.grad, grad) for p, grad in zip(fused.parameters(), grads, strict=True))


def test_fused_model_names_and_mode():
    assert set(FUSED_MODELS) <= set(SHAPES)
    models = build("resnet32", copies=2)  # every name fusion promises builds and fuses
    for model in models:
        model.eval()
    fused = fuse_models(models)
    assert not fused.training and not any(module.training for module in fused.modules())
    fused.train()
    assert all(module.training for module in fused.modules())
    with pytest.raises(ValueError, match=r"\(2, B"):
        fused(torch.zeros(3, 1, 3, 32, 32, dtype=torch.float64))


def _sequential(*modules: nn.Module) -> list[nn.Module]:
    return [nn.Sequential(*modules)]


class CustomLinear(nn.Linear):
    """A subclass may change what forward does, so it is not fused as a Linear."""


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (lambda: [build_model("rank4", (64,), 10)], "LinearFactorization"),
        (lambda: _sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1)), "Softmax"),
        (lambda: _sequential(nn.Flatten(), CustomLinear(64, 10)), "CustomLinear"),
        (lambda: _sequential(nn.Flatten(2), nn.Linear(64, 10)), "Flatten"),
        (lambda: _sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=None)), "momentum=None"),
        (lambda: _sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")), "padding_mode"),
        (lambda: [build_model("mlp", (64,), 10), build_model("mlp", (32,), 10)], "architecture"),
        (lambda: [], "at least one"),
    ],
)
def test_what_cannot_be_fused_is_refused(models, message):
    with pytest.raises(ValueError, match=message):
        fuse_models(models())


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(reduction="sum"),
        nn.CrossEntropyLoss(ignore_index=3, label_smoothing=0.1),
    ],
)
@pytest.mark.parametrize("contiguous", [True, False])
def test_copy_losses_are_each_copys_loss(loss_fn, contiguous):
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 6, CLASSES, generator=generator, dtype=torch.float64)
    if not contiguous:  # the layout a fused model returns
        outputs = outputs.transpose(1, 2).contiguous().transpose(1, 2)
    targets = torch.randint(0, CLASSES, (3, 6), generator=generator)
    targets[0, :2] = 3
    probabilities = torch.softmax(torch.randn(3, 6, CLASSES, generator=generator, dtype=torch.float64), dim=-1)
    # torch refuses an ignore_index with class probabilities
    for target in (targets, probabilities) if loss_fn.ignore_index == -100 else (targets,):
        losses = copy_losses(loss_fn, outputs, target)
        assert losses.shape == (3,)
        for k in range(3):
            torch.testing.assert_close(losses[k], loss_fn(outputs[k], target[k]), **TOL)


def test_copy_losses_refuses_other_losses():
    outputs, targets = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    for loss_fn in (nn.MSELoss(), nn.CrossEntropyLoss(reduction="none"), nn.CrossEntropyLoss(weight=torch.ones(4))):
        with pytest.raises(ValueError):
            copy_losses(loss_fn, outputs, targets)
    with pytest.raises(ValueError, match="do not match"):
        copy_losses(nn.CrossEntropyLoss(), outputs, targets[:, :2])
