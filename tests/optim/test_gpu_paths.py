"""The GPU-facing paths of the line-search helpers and PLS, checked on a CPU: a constant number of operations per
dot product whatever the number of parameter tensors, scalars made without host-to-device copies, and per-sample
chunks sized by the GPU's memory, halved when they do not fit."""

import types

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lsbench.optim import ClosureFactory
from lsbench.optim import pls as pls_module
from lsbench.optim._linesearch import LineSearchOptimizer, flat_dot
from lsbench.optim.pls import PLS, per_sample_chunk_size


class Operations(TorchDispatchMode):
    """The ATen operations dispatched in the block, views (reshape) left out: each is one kernel launch on a GPU
    (a ``_foreach_*`` operation launches one per chunk of tensors, not one per tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _tensors(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2 + i % 5, generator=generator) for i in range(count)]


@pytest.mark.parametrize("count", [1, 59, 364])  # ResNet-20 and DenseNet-121 have 59 and 364 parameter tensors
def test_flat_dot_issues_the_same_operations_whatever_the_number_of_tensors(count):
    xs, ys = _tensors(count, 0), _tensors(count, 1)
    with Operations() as operations:
        value = flat_dot(xs, ys)
    assert operations.names == ["_foreach_mul.List", "cat.default", "sum.default"]
    expected = sum((x.double() * y.double()).sum() for x, y in zip(xs, ys, strict=True))
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)


def test_flat_dot_refuses_mismatched_lists():
    with pytest.raises(ValueError, match="shapes"):
        flat_dot([torch.ones(2, 3)], [torch.ones(3, 2)])
    with pytest.raises(ValueError, match="1 tensors against 2"):
        flat_dot([torch.ones(2)], [torch.ones(2), torch.ones(2)])


def test_scalars_are_filled_on_the_device_not_copied_from_the_host():
    optimizer = LineSearchOptimizer(nn.Linear(2, 1).parameters(), {})
    with Operations() as operations:
        value = optimizer._scalar(0.25)
    assert operations.names == ["full.default"]  # torch.tensor(x, device=cuda) would copy from pageable memory
    assert value.item() == 0.25 and value.dtype == torch.float32


@pytest.mark.parametrize(
    ("parameters", "memory", "expected"),
    [
        (7_000_000, 141e9, 128),  # DenseNet-121 on an H200: the whole batch in one pass
        (7_000_000, 8.5e9, 25),  # ... on a GTX 1080 (a fixed budget of 2**24 entries gave 2)
        (464_154, 8.5e9, 128),  # ResNet-32 on a GTX 1080
    ],
)
def test_per_sample_chunks_follow_the_gpu_memory(monkeypatch, parameters, memory, expected):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(total_memory=memory))
    assert per_sample_chunk_size(parameters, 128, torch.device("cuda")) == expected
    assert per_sample_chunk_size(7_000_000, 128, torch.device("cpu")) == 2  # the CPU budget is unchanged


def test_a_chunk_that_does_not_fit_is_halved_and_the_size_in_use_is_saved(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    factory = ClosureFactory(model, nn.CrossEntropyLoss())
    chunks = []
    original = pls_module.batch_mean_variances

    def out_of_memory_above_5(closure, params, stats, chunk_size):
        chunks.append(chunk_size)
        if chunk_size > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (imitated)")
        return original(closure, params, stats, chunk_size)

    monkeypatch.setattr(pls_module, "batch_mean_variances", out_of_memory_above_5)
    optimizer = PLS(model.parameters(), initial_step_size=0.1)
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    for step in range(3):
        optimizer.step(factory(x, y, seed=step))
    assert chunks == [32, 16, 8, 4, 4, 4]
    assert optimizer.state_dict()["shared"]["per_sample_chunk"] == 4
