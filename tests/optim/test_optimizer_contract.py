"""Properties every lsbench optimizer shares: checkpoint round-trips, closure calls, untouched parameters and
BatchNorm statistics that probes leave alone."""

import copy
import io

import pytest
import torch
from torch import nn

from lsbench.optim import OPTIMIZERS, ClosureFactory, TrainingContext, build_optimizer

BATCH = 16
CONTEXT = TrainingContext(total_steps=200, batch_size=BATCH, train_size=10 * BATCH)
SMALL_LABPAL = {"approximation_batch_size": 3 * BATCH, "sgd_steps": 3, "untrustworthy_updates": 0}


def hparams(name: str) -> dict:
    return dict(SMALL_LABPAL) if name.startswith("labpal") else {}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3))
        self.unused = nn.Parameter(torch.ones(4))  # never in the forward pass: it never gets a gradient
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)

    def forward(self, x):
        return self.body(x) + 0 * self.frozen.sum()


def batches(count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(BATCH, 6, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator))
        for _ in range(count)
    ]


def setup(name: str, weight_decay: float = 0.0):
    torch.manual_seed(0)
    model = Net()
    factory = ClosureFactory(model, nn.CrossEntropyLoss(), weight_decay)
    return model, factory, build_optimizer(name, model.parameters(), hparams(name), CONTEXT)


def run(opt, factory, data, first_step: int = 0):
    for step, (x, y) in enumerate(data, start=first_step):
        opt.step(factory(x, y, seed=step))


def saved(obj) -> dict:
    buffer = io.BytesIO()
    torch.save(obj.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("split", [1, 4, 5])
def test_state_dict_round_trips_to_identical_next_steps(name, split):
    data = batches(split + 5)
    model, factory, opt = setup(name, weight_decay=1e-3)
    run(opt, factory, data[:split])
    model_state, opt_state = saved(model), saved(opt)
    run(opt, factory, data[split:], split)

    restored, restored_factory, restored_opt = setup(name, weight_decay=1e-3)
    restored.load_state_dict(model_state)
    restored_opt.load_state_dict(opt_state)
    run(restored_opt, restored_factory, data[split:], split)
    for original, copy_ in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(original, copy_)
    assert restored_opt.forward_passes == opt.forward_passes


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_parameters_without_gradients_are_untouched(name):
    model, factory, opt = setup(name)
    run(opt, factory, batches(8))
    assert torch.equal(model.unused.detach(), torch.ones(4))
    assert torch.equal(model.frozen.detach(), torch.ones(2))
    assert not torch.equal(model.body[0].weight.detach(), setup(name)[0].body[0].weight.detach())


@pytest.mark.parametrize("name", ["pal", "sls", "labpal_sgd", "labpal_nsgd", "exact_ls"])
def test_probes_leave_batchnorm_statistics_as_one_training_forward_would(name):
    data = batches(3)  # one LABPAL measurement (3 batches), or one PAL/SLS step
    model, factory, opt = setup(name)
    reference = copy.deepcopy(model)
    steps = 3 if name.startswith("labpal") else 1
    with torch.no_grad():
        for step, (x, y) in enumerate(data[:steps]):
            factory_ref = ClosureFactory(reference, nn.CrossEntropyLoss())
            factory_ref(x, y, seed=step)()
    run(opt, factory, data[:steps])
    assert opt.forward_passes > steps  # probes did happen
    bn, bn_ref = model.body[1], reference.body[1]
    assert torch.equal(bn.running_mean, bn_ref.running_mean)
    assert torch.equal(bn.running_var, bn_ref.running_var)
    assert bn.num_batches_tracked == bn_ref.num_batches_tracked == steps


@pytest.mark.parametrize(("name", "calls"), [("pal", 2), ("sgd", 1), ("adam", 1), ("rmsprop", 1)])
def test_closure_calls_per_step(name, calls):
    _, factory, opt = setup(name)
    ((x, y),) = batches(1)
    closure = factory(x, y, seed=0)
    opt.step(closure)
    assert closure.calls == calls
    assert (opt.forward_passes, opt.backward_passes) == (calls, 1)


def test_closure_sees_the_same_dropout_mask_on_every_call():
    _, factory, _ = setup("sgd")
    ((x, y),) = batches(1)
    closure = factory(x, y, seed=7)
    with torch.no_grad():
        assert torch.equal(closure(), closure())
        assert not torch.equal(closure(), factory(x, y, seed=8)())


def test_piecewise_schedule_divides_by_ten_at_half_and_three_quarters():
    model, factory, _ = setup("sgd")
    opt = build_optimizer("sgd", model.parameters(), {"lr": 1.0, "lr_schedule": "piecewise"}, CONTEXT)
    seen = []
    for step, (x, y) in enumerate(batches(1) * 200):
        opt.step(factory(x, y, seed=step))
        seen.append(opt.effective_lr)
    assert seen[99] == 1.0 and seen[100] == pytest.approx(0.1)
    assert seen[149] == pytest.approx(0.1) and seen[150] == pytest.approx(0.01)


def test_a_probe_between_a_forward_and_its_backward_leaves_the_graph_usable():
    model, factory, _ = setup("sgd")
    (x, y), (x2, y2) = batches(2)
    first, probe = factory(x, y, seed=0), factory(x2, y2, seed=1)
    probe()  # its first call: an ordinary training forward
    loss = first()
    with torch.no_grad():
        probe()  # a probe restores the normalization statistics ...
    loss.backward()  # ... without breaking the pending graph
    assert model.body[0].weight.grad is not None
