"""Streamed data: loader workers start once per run and per split, never forked from a CUDA process, and as many as
the CPUs this process was granted."""

import os

import pytest
import torch
from torch.utils.data import Dataset

from lsbench.cpus import available_cpus
from lsbench.problems import sampling
from lsbench.problems.imagefolder import default_num_workers
from lsbench.problems.sampling import StreamedSplit, StreamingSampler


class _Indices(Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return torch.tensor(index), index


@pytest.fixture
def loaders(monkeypatch):
    """Every DataLoader the sampling module makes, with its arguments."""
    made = []
    original = sampling.DataLoader

    def recording(*args, **kwargs):
        made.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(sampling, "DataLoader", recording)
    return made


def _finish(batch):
    return batch[0], batch[1]


def test_one_loader_serves_every_epoch_of_a_run(loaders):
    stream = StreamingSampler(_Indices(10), batch_size=3, seed=1, finish=_finish)
    seen = [stream.next_batch()[1] for _ in range(10)]  # more than three epochs of 3 batches
    assert len(loaders) == 1
    assert stream.epoch == 4
    for epoch in (1, 2, 3):
        visited = torch.cat(seen[(epoch - 1) * 3 : epoch * 3]).tolist()
        assert visited == stream.permutation(epoch)[:9].tolist()
    state = stream.state_dict()
    stream.load_state_dict(state)  # a restored sampler opens one new loader at its position
    stream.next_batch()
    assert len(loaders) == 2


def test_an_evaluation_split_keeps_its_loader_and_workers_between_evaluations(loaders):
    split = StreamedSplit(_Indices(7), finish=_finish, num_workers=2)
    for _ in range(3):
        assert torch.cat([targets for _, targets in split.batches(4)]).tolist() == list(range(7))
    assert len(loaders) == 1 and loaders[0]["persistent_workers"] is True


def test_workers_for_a_gpu_are_spawned_not_forked(monkeypatch):
    made = []
    monkeypatch.setattr(sampling, "DataLoader", lambda *args, **kwargs: made.append(kwargs) or [])
    list(StreamedSplit(_Indices(4), finish=_finish, num_workers=2, device="cuda").batches(4))
    StreamingSampler(_Indices(4), batch_size=2, seed=1, finish=_finish, device="cuda", num_workers=2)._open()
    StreamingSampler(_Indices(4), batch_size=2, seed=1, finish=_finish, device="cpu", num_workers=2)._open()
    assert [kwargs["multiprocessing_context"] for kwargs in made] == ["spawn", "spawn", None]
    assert sampling._loader_context(torch.device("cuda"), 0) is None  # no workers: nothing is started


def test_loader_workers_follow_the_cpus_slurm_granted(monkeypatch):
    monkeypatch.delenv("LSBENCH_NUM_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(48)))
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert available_cpus() == 48
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert available_cpus() == 6 and default_num_workers() == 6
    monkeypatch.setenv("LSBENCH_NUM_WORKERS", "3")
    assert default_num_workers() == 3
