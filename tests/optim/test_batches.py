"""The batch-group helper shared by LABPAL and the noise adaptation (lsbench.optim._batches)."""

import io
from collections import defaultdict

import pytest
import torch
from torch import nn

from lsbench.optim import LABPAL, ClosureFactory
from lsbench.optim._batches import BatchGroup


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))

    def forward(self, x):
        return self.body(x)


def setup():
    torch.manual_seed(0)
    model = Net()
    generator = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)) for _ in range(3)
    ]
    return model, ClosureFactory(model, nn.CrossEntropyLoss()), data


def loss_and_grads(closure, model):
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss = closure()
        loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def saved(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_stored_closures_evaluate_again_to_the_same_losses_and_gradients():
    model, factory, data = setup()
    group = BatchGroup("grad_sum", "a test group")
    first = []
    for step, (x, y) in enumerate(data):
        closure = factory(x, y, seed=step)
        group.add(closure)
        first.append(loss_and_grads(closure, model))
    statistics = [b.clone() for b in model.buffers()]
    assert len(group) == 3
    with torch.no_grad():
        assert torch.equal(group.losses(), torch.stack([loss for loss, _ in first]))
    for closure, (loss, grads) in zip(group.closures, first, strict=True):
        again, again_grads = loss_and_grads(closure, model)
        assert torch.equal(again, loss)
        assert all(torch.equal(a, b) for a, b in zip(again_grads, grads, strict=True))
    # evaluating again is a probe: BatchNorm's running statistics are those of the first (training) passes
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), statistics, strict=True))
    seen = []
    group.losses(lambda closure: seen.append(closure) or closure())
    assert seen == group.closures


def test_snapshots_replay_after_a_restart_to_the_same_losses_and_gradients():
    model, factory, data = setup()
    group = BatchGroup("grad_sum", "a test group")
    for step, (x, y) in enumerate(data[:2]):
        group.add(factory(x, y, seed=step))
        loss_and_grads(group.closures[-1], model)
    with torch.no_grad():
        expected = group.losses()
    expected_grads = [loss_and_grads(c, model)[1] for c in group.closures]
    snapshots = saved(group.snapshot())

    restored_model, restored_factory, _ = setup()
    restored_model.load_state_dict(model.state_dict())
    restored = BatchGroup("grad_sum", "a test group")
    restored.load(snapshots)
    assert len(restored) == 0  # rebuilt only when the next closure brings its factory
    x, y = data[2]
    restored.resume(restored_factory(x, y, seed=2))
    assert len(restored) == 2
    with torch.no_grad():
        assert torch.equal(restored.losses(), expected)
    for closure, grads in zip(restored.closures, expected_grads, strict=True):
        assert closure.factory is restored_factory
        replayed = loss_and_grads(closure, restored_model)[1]
        assert all(torch.equal(a, b) for a, b in zip(replayed, grads, strict=True))
    restored.resume(restored_factory(x, y, seed=2))  # nothing pending any more: the closures stay
    assert len(restored) == 2


def test_closures_without_snapshot_or_replay_are_refused_with_a_clear_error():
    group = BatchGroup("grad_sum", "a running test measurement")
    group.add(lambda: torch.zeros(()))
    with pytest.raises(TypeError, match=r"a running test measurement can only be saved.*ClosureFactory"):
        group.snapshot()
    _, factory, data = setup()
    group = BatchGroup("grad_sum", "a running test measurement")
    group.load([factory(*data[0], seed=0).snapshot()])
    with pytest.raises(TypeError, match="resuming a running test measurement needs closures with replay"):
        group.resume(lambda: torch.zeros(()))
    empty = BatchGroup("grad_sum", "a running test measurement")
    empty.load([])
    empty.resume(lambda: torch.zeros(()))  # nothing to rebuild: any closure will do
    assert empty.snapshot() == [] and len(empty) == 0


def test_gradient_sums_count_every_batch_and_restart_with_a_new_group():
    a, b = torch.zeros(2), torch.zeros(1)
    state = defaultdict(dict)
    group = BatchGroup("grad_sum", "a test group")
    group.add_gradients(state, [a, b], [torch.tensor([1.0, 2.0]), torch.tensor([3.0])], first=True)
    group.add_gradients(state, [a], [torch.tensor([10.0, 20.0])], first=False)  # b got no gradient: zero
    group.add_gradients(state, [a, b], [torch.tensor([100.0, 200.0]), torch.tensor([300.0])], first=False)
    params, sums = group.pop_gradients(state, [b, a])
    assert params == [b, a]
    assert torch.equal(sums[0], torch.tensor([303.0])) and torch.equal(sums[1], torch.tensor([111.0, 222.0]))
    assert group.pop_gradients(state, [a, b]) == ([], [])  # popped

    group.add_gradients(state, [a, b], [torch.ones(2), torch.ones(1)], first=True)  # a group abandoned midway
    group.add_gradients(state, [b], [torch.full((1,), 5.0)], first=True)  # the next one starts from scratch
    params, sums = group.pop_gradients(state, [a, b])
    assert params == [b] and torch.equal(sums[0], torch.tensor([5.0]))


def test_gradient_sums_are_copies_that_live_in_optimizer_state_and_round_trip():
    theta = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=0.1)
    group = BatchGroup("grad_sum", "a test group")
    gradient = torch.ones(3)
    group.add_gradients(opt.state, [theta], [gradient], first=True)
    gradient.add_(1.0)  # the caller's gradient buffer is reused: the sum must not change with it
    restored = torch.optim.SGD([theta], lr=0.1)
    restored.load_state_dict(saved(opt.state_dict()))
    group.add_gradients(restored.state, [theta], [torch.full((3,), 2.0)], first=False)
    _, sums = group.pop_gradients(restored.state, [theta])
    assert torch.equal(sums[0], torch.full((3,), 3.0))


def test_labpal_counts_a_missing_gradient_of_one_batch_as_zero():
    # Batch 0 depends on a and b, batch 1 on a only: with k = 2 the update moves b by lr · (∂b of batch 0) / 2.
    a = torch.tensor([2.0, -1.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    closures = [lambda: ((a - 1.0) ** 2).sum() + ((b - 1.0) ** 2).sum(), lambda: ((a + 1.0) ** 2).sum()]
    opt = LABPAL(
        [a, b],
        mode="sgd",
        batch_size=1,
        approximation_batch_size=1,
        batch_size_schedule=((0.0, 2),),
        untrustworthy_updates=0,
        max_step_size=100.0,
        direction_norm_bounds=(1e-6, 1e6),
    )
    for i in range(2):  # the measurement: 1 · k batches
        opt.step(closures[i])
    assert opt.updated.item()
    lr = opt.shared["lr"]
    a0, b0 = a.detach().clone(), b.detach().clone()
    for i in range(2):
        opt.step(closures[i])
    mean_a = (2 * (a0 - 1.0) + 2 * (a0 + 1.0)) / 2
    torch.testing.assert_close(a.detach(), a0 - lr * mean_a, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.detach(), b0 - lr * (2 * (b0 - 1.0)) / 2, rtol=0, atol=1e-12)
