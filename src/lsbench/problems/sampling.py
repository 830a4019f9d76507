"""Training batch samplers and evaluation splits: device-resident ones, and streamed ones for large datasets.

Device-resident (:class:`BatchSampler`, :class:`DataSplit`): the whole training set lives in one tensor on the
training device; a batch is an index gather on that tensor followed by batched augmentation and normalization.
This replaces a ``DataLoader``: no worker processes, no copies of images to the device, and the sampling
randomness comes only from the sampler's own seeds, so a run's batches do not depend on anything else the
process does with the global RNG -- nor on the kind of device: shuffling and augmentation are drawn on the host,
so a run resumed on another kind of device continues with the same batches.

Streamed (:class:`StreamingSampler`, :class:`StreamedSplit`): for datasets that do not fit on the device
(ImageNet), ``DataLoader`` workers decode and augment samples from disk. The sampler keeps the interface and
the guarantees of :class:`BatchSampler` -- a shuffled epoch without replacement, ``drop_last``, and a
``state_dict`` after which a restored sampler yields the same batches -- by deriving every random choice from
the run seed: each epoch's permutation from ``(seed, epoch)`` and each sample's augmentation from
``(seed, epoch, index)``, never from worker-process RNG state.

Loader workers are started once per run (training) and once per split (evaluation), not per epoch or per
evaluation: starting them means forking the training process, which holds the model, the CUDA context and
helper threads (the worker's heartbeat). For data on a GPU the workers are spawned instead of forked: a forked
child of a process with a CUDA context must never touch CUDA, and a fork taken while another thread holds a
lock leaves that lock held forever in the child.

What the trainer relies on is captured by the :class:`TrainSampler` and :class:`EvalSplit` protocols.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lsbench.problems.transforms import Augmentation, Normalize

__all__ = [
    "BatchSampler",
    "DataSplit",
    "EvalSplit",
    "StreamedSplit",
    "StreamingSampler",
    "TrainSampler",
    "derive_seed",
]


def derive_seed(seed: int, stream: str) -> int:
    """Map ``(seed, stream)`` to an independent 63-bit seed.

    Shuffling and augmentation get their own streams so that, e.g., changing the augmentation does not
    change the order in which samples are visited. A hash (not ``seed + k``) keeps the streams of
    neighbouring seeds unrelated and is stable across processes and Python versions.
    """
    digest = hashlib.sha256(f"lsbench:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class TrainSampler(Protocol):
    """What the trainer needs from a training sampler (:class:`BatchSampler`, :class:`StreamingSampler`)."""

    batch_size: int
    num_samples: int

    @property
    def batches_per_epoch(self) -> int: ...

    def next_batch(self) -> tuple[Tensor, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EvalSplit(Protocol):
    """What :func:`~lsbench.problems.evaluate` needs from an evaluation split: its size in samples and its
    ``(inputs, targets)`` batches, in a fixed order, ready for the model (on its device, normalized)."""

    eval_batch_size: int

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...


@dataclass
class DataSplit:
    """An evaluation split, already normalized and on the device, evaluated as is (never augmented)."""

    inputs: Tensor
    targets: Tensor

    eval_batch_size: ClassVar[int] = 1000
    """Samples per forward pass when :func:`~lsbench.problems.evaluate` is not told otherwise."""

    def __len__(self) -> int:
        return self.targets.shape[0]

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive slices (views, no copies) of at most ``batch_size`` samples."""
        for start in range(0, len(self), batch_size):
            yield self.inputs[start : start + batch_size], self.targets[start : start + batch_size]


class BatchSampler:
    """Infinite sampler of shuffled, augmented, normalized training batches held on the data's device.

    Each epoch is a fresh random permutation, cut into ``batches_per_epoch = num_samples // batch_size``
    batches; the remainder of the permutation is dropped (``drop_last``), so every batch has exactly
    ``batch_size`` samples. Shuffling uses a CPU generator (``randperm`` once per epoch, then one asynchronous copy
    of the permutation from pinned memory to the device). The augmentation of a batch is drawn from its key
    ``(augmentation seed, epoch, position)`` (:class:`~lsbench.problems.transforms.Augmentation`), on the host.

    ``state_dict``/``load_state_dict`` capture the current permutation, the position in it, the shuffling
    generator's state and the augmentation seed, so a restored sampler continues with bitwise the same batches
    (checkpoint/resume) -- on any kind of device: none of it depends on where the data lives.

    States written before augmentation was keyed (they hold an ``augment_rng``, the state of a generator on the
    data's device) cannot be continued with the same augmentation; an augmented sampler refuses them with a
    ValueError that says so (delete the run's checkpoints to restart it), a sampler without augmentation, which
    never drew from that generator, takes them.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        *,
        batch_size: int,
        seed: int,
        normalize: Normalize | None,
        augmentation: Augmentation | None = None,
    ) -> None:
        """Wrap a training set that is already on its device.

        Args:
            inputs: raw training inputs ``(N, ...)`` (``uint8`` images, floats, or int64 token ids), on the
                device to train on.
            targets: int64 targets ``(N,)`` (class labels) or ``(N, T)`` (next tokens) on the same device.
            batch_size: samples per batch; at most ``N``.
            seed: seeds the shuffling and augmentation streams (see :func:`derive_seed`).
            normalize: applied to every batch after augmentation; ``None`` passes inputs through unchanged
                (token ids).
            augmentation: random crop/flip applied to every batch, or ``None``.
        """
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"inputs and targets differ in length: {inputs.shape[0]} vs {targets.shape[0]}")
        if inputs.device != targets.device:
            raise ValueError(f"inputs on {inputs.device} but targets on {targets.device}")
        if not 1 <= batch_size <= inputs.shape[0]:
            raise ValueError(f"batch_size must be in [1, {inputs.shape[0]}], got {batch_size}")
        self.batch_size = batch_size
        self.num_samples = inputs.shape[0]
        self.augmentation = augmentation
        self._inputs = inputs
        self._targets = targets
        self._normalize = normalize
        self._shuffle_rng = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
        self._augment_seed = derive_seed(seed, "augment")
        self._permutation: Tensor | None = None
        self._position = 0
        self._epoch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    @property
    def epoch(self) -> int:
        """Number of epochs started so far (0 before the first batch)."""
        return self._epoch

    @property
    def device(self) -> torch.device:
        return self._inputs.device

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """Return the next ``(inputs, targets)`` batch: float32 normalized inputs (raw inputs if there is no
        normalization) and int64 targets."""
        if self._permutation is None or self._position + self.batch_size > self.num_samples:
            self._permutation = _to_device(torch.randperm(self.num_samples, generator=self._shuffle_rng), self.device)
            self._position = 0
            self._epoch += 1
        position = self._position
        indices = self._permutation[position : position + self.batch_size]
        self._position += self.batch_size
        if self.augmentation is None:
            raw = self._inputs[indices]
        else:
            raw = self.augmentation(self._inputs, indices, (self._augment_seed, self._epoch, position))
        inputs = raw if self._normalize is None else self._normalize(raw)
        return inputs, self._targets[indices]

    def dataset(self) -> DataSplit:
        """The whole training set in its stored order, normalized and without augmentation: the data set whose
        loss is "the full-batch loss" of a line measurement (:mod:`lsbench.lines`)."""
        inputs = self._inputs if self._normalize is None else self._normalize(self._inputs)
        return DataSplit(inputs, self._targets)

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bitwise identically; tensors are on the CPU, so the dict can be
        saved with ``torch.save`` and loaded with ``weights_only=True``. Nothing in it depends on the device."""
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "epoch": self._epoch,
            "position": self._position,
            "permutation": None if self._permutation is None else self._permutation.cpu(),
            "shuffle_rng": self._shuffle_rng.get_state(),
            "augment_seed": self._augment_seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a sampler over the same data and batch size, written on any
        device. Raises ValueError for another dataset size or batch size, and for a state of an augmented sampler
        written before augmentation was keyed (see the class docstring)."""
        for key in ("num_samples", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]}, this sampler has {getattr(self, key)}")
        if "augment_seed" not in state and self.augmentation is not None:
            raise ValueError(
                "the sampler state was written by an earlier lsbench that drew augmentation from a device "
                "generator; it cannot be continued with the same augmentation (delete the run's checkpoints to "
                "restart the run)"
            )
        permutation = state["permutation"]
        self._permutation = None if permutation is None else permutation.to(self.device)
        self._position = int(state["position"])
        self._epoch = int(state["epoch"])
        # The generator state must be a CPU byte tensor, even if the checkpoint was mapped onto an accelerator.
        self._shuffle_rng.set_state(state["shuffle_rng"].cpu())
        self._augment_seed = int(state.get("augment_seed", self._augment_seed))


def _to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (on the CPU) on ``device``; to a GPU through pinned memory, so the copy does not block the host
    (a copy from pageable memory waits for everything queued on the device before it)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


# ------------------------------------------------------------------------------------------------ streamed

Batch = Sequence[Tensor]
"""A collated batch as a ``DataLoader`` yields it (on the CPU, possibly pinned)."""


def _loader_context(device: torch.device, workers: int) -> str | None:
    """How loader workers start: spawned for data that goes to a GPU (see the module docstring), else the
    platform's default (fork on Linux, cheap for the CPU runs of tests and laptops)."""
    return "spawn" if workers and device.type == "cuda" else None


class _RunBatches:
    """The run's batches from ``(epoch, position)`` on, epoch after epoch, as lists of ``(index, sample_seed)`` keys
    for ``DataLoader(batch_sampler=...)``: one loader serves the whole run.

    Keys are made lazily, a batch at a time, so an ImageNet epoch does not hash 1.2 M seeds up front.
    """

    def __init__(self, sampler: StreamingSampler, epoch: int, position: int) -> None:
        self.sampler = sampler
        self.epoch = epoch
        self.position = position

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed, size = self.sampler._seed, self.sampler.batch_size
        epoch, position = self.epoch, self.position
        while True:
            order = self.sampler.permutation(epoch)[position:].tolist()
            for start in range(0, len(order) // size * size, size):
                yield [(index, derive_seed(seed, f"augment/{epoch}/{index}")) for index in order[start : start + size]]
            epoch, position = epoch + 1, 0


class StreamingSampler:
    """Infinite sampler of shuffled training batches that ``DataLoader`` workers read and augment from disk.

    Same contract as :class:`BatchSampler`: epoch ``e`` (counting from 1) visits the samples in the order of a
    permutation drawn from a generator seeded ``derive_seed(seed, f"shuffle/{e}")``, cut into
    ``batches_per_epoch`` batches (``drop_last``). ``dataset[(index, sample_seed)]`` must return the augmented
    sample, drawing every random choice from ``sample_seed = derive_seed(seed, f"augment/{e}/{index}")``;
    ``finish`` turns a collated CPU batch into the ``(inputs, targets)`` the model trains on (device transfer
    and normalization).

    The state is only ``(epoch, position)``: workers prefetch ahead, but :meth:`state_dict` records the batches
    handed out, and a restored sampler starts a new loader at that position. So a restored sampler continues
    with the same samples, augmented the same way, regardless of ``num_workers``. One loader (and one set of
    workers) serves all epochs of a run.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        batch_size: int,
        seed: int,
        finish: Callable[[Batch], tuple[Tensor, Tensor]],
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        """Stream ``dataset`` (a map-style dataset indexed by ``(index, sample_seed)`` keys).

        Args:
            dataset: ``len(dataset)`` training samples.
            batch_size: samples per batch; at most ``len(dataset)``.
            seed: run seed; the permutations and the per-sample augmentation derive from it.
            finish: maps a collated batch to ``(inputs, targets)`` on the training device.
            device: the training device (reported by :attr:`device`; workers are spawned for a GPU).
            num_workers: loader worker processes; 0 loads in the calling process.
            pin_memory: collate into pinned memory (for asynchronous copies to a GPU).
            prefetch_factor: batches each worker loads ahead.
        """
        num_samples = len(dataset)  # type: ignore[arg-type]
        if not 1 <= batch_size <= num_samples:
            raise ValueError(f"batch_size must be in [1, {num_samples}], got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.num_workers = num_workers
        self._dataset = dataset
        self._seed = seed
        self._finish = finish
        self._device = torch.device(device)
        self._pin_memory = pin_memory
        self._prefetch_factor = prefetch_factor
        self._epoch = 0
        self._position = 0
        self._iterator: Iterator[Batch] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    @property
    def epoch(self) -> int:
        """Number of epochs started so far (0 before the first batch)."""
        return self._epoch

    @property
    def device(self) -> torch.device:
        return self._device

    def permutation(self, epoch: int) -> Tensor:
        """The sample order of epoch ``epoch`` (counting from 1): int64 ``(num_samples,)``."""
        generator = torch.Generator().manual_seed(derive_seed(self._seed, f"shuffle/{epoch}"))
        return torch.randperm(self.num_samples, generator=generator)

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """Return the next ``(inputs, targets)`` batch, as ``finish`` makes it."""
        # The loader runs on from epoch to epoch in the same order as this bookkeeping (_RunBatches).
        if self._epoch == 0 or self._position + self.batch_size > self.num_samples:
            self._epoch += 1
            self._position = 0
        if self._iterator is None:
            self._iterator = self._open()
        batch = next(self._iterator)
        self._position += self.batch_size
        return self._finish(batch)

    def _open(self) -> Iterator[Batch]:
        workers = self.num_workers
        loader = DataLoader(
            self._dataset,
            batch_sampler=_RunBatches(self, self._epoch, self._position),
            num_workers=workers,
            pin_memory=self._pin_memory,
            prefetch_factor=self._prefetch_factor if workers else None,
            multiprocessing_context=_loader_context(self._device, workers),
        )
        return iter(loader)

    def _close(self) -> None:
        # Dropping the last reference to a multi-process iterator shuts its workers down.
        self._iterator = None

    def __iter__(self) -> StreamingSampler:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """The position in the run's sample sequence: plain integers, so it saves with ``torch.save``."""
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "epoch": self._epoch,
            "position": self._position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a sampler over the same data, batch size and seed."""
        for key in ("num_samples", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]}, this sampler has {getattr(self, key)}")
        self._close()
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])


class StreamedSplit:
    """An evaluation split read from disk batch by batch, in index order, never augmented.

    ``dataset[index]`` returns one preprocessed sample; ``finish`` maps a collated batch to ``(inputs,
    targets)`` on the device, like :class:`StreamingSampler`'s. The loader of a batch size is made once and keeps
    its workers between evaluations (``persistent_workers``), spawned for a GPU ``device``.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        finish: Callable[[Batch], tuple[Tensor, Tensor]],
        num_workers: int = 0,
        pin_memory: bool = False,
        eval_batch_size: int = 250,
        device: str | torch.device = "cpu",
    ) -> None:
        self._dataset = dataset
        self._finish = finish
        self.num_workers = num_workers
        self._pin_memory = pin_memory
        self.eval_batch_size = eval_batch_size
        self._device = torch.device(device)
        self._loaders: dict[int, DataLoader[Any]] = {}

    def __len__(self) -> int:
        return len(self._dataset)  # type: ignore[arg-type]

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """All samples in index order, ``batch_size`` at a time (the last batch may be smaller)."""
        loader = self._loaders.get(batch_size)
        if loader is None:
            workers = self.num_workers
            loader = self._loaders[batch_size] = DataLoader(
                self._dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=workers,
                pin_memory=self._pin_memory,
                persistent_workers=workers > 0,
                multiprocessing_context=_loader_context(self._device, workers),
            )
        for batch in loader:
            yield self._finish(batch)
