"""Device-resident training batches and evaluation splits.

The whole training set lives in one tensor on the training device; a batch is an index gather on that tensor
followed by batched augmentation and normalization. This replaces a ``DataLoader``: no worker processes, no
per-step host-to-device copies, and the sampling randomness comes only from the sampler's own generators, so a
run's batches do not depend on anything else the process does with the global RNG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lsbench.problems.transforms import Augmentation, Normalize

__all__ = ["BatchSampler", "DataSplit", "derive_seed"]


def derive_seed(seed: int, stream: str) -> int:
    """Map ``(seed, stream)`` to an independent 63-bit seed.

    Shuffling and augmentation get their own streams so that, e.g., changing the augmentation does not
    change the order in which samples are visited. A hash (not ``seed + k``) keeps the streams of
    neighbouring seeds unrelated and is stable across processes and Python versions.
    """
    digest = hashlib.sha256(f"lsbench:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class DataSplit:
    """An evaluation split, already normalized and on the device, evaluated as is (never augmented)."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.targets.shape[0]


class BatchSampler:
    """Infinite sampler of shuffled, augmented, normalized training batches held on the data's device.

    Each epoch is a fresh random permutation, cut into ``batches_per_epoch = num_samples // batch_size``
    batches; the remainder of the permutation is dropped (``drop_last``), so every batch has exactly
    ``batch_size`` samples. Shuffling uses a CPU generator (``randperm`` once per epoch, then one copy of the
    permutation to the device); augmentation uses a generator on the data device.

    ``state_dict``/``load_state_dict`` capture the current permutation, the position in it and both generator
    states, so a restored sampler continues with bitwise the same batches (checkpoint/resume).
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        *,
        batch_size: int,
        seed: int,
        normalize: Normalize,
        augmentation: Augmentation | None = None,
    ) -> None:
        """Wrap a training set that is already on its device.

        Args:
            inputs: raw training inputs ``(N, ...)`` (``uint8`` images or floats), on the device to train on.
            targets: ``(N,)`` int64 class labels on the same device.
            batch_size: samples per batch; at most ``N``.
            seed: seeds the shuffling and augmentation streams (see :func:`derive_seed`).
            normalize: applied to every batch after augmentation.
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
        self._augment_rng = torch.Generator(device=inputs.device).manual_seed(derive_seed(seed, "augment"))
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
        """Return the next ``(inputs, targets)`` batch: float32 normalized inputs and int64 targets."""
        if self._permutation is None or self._position + self.batch_size > self.num_samples:
            self._permutation = torch.randperm(self.num_samples, generator=self._shuffle_rng).to(self.device)
            self._position = 0
            self._epoch += 1
        indices = self._permutation[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        if self.augmentation is None:
            raw = self._inputs[indices]
        else:
            raw = self.augmentation(self._inputs, indices, self._augment_rng)
        return self._normalize(raw), self._targets[indices]

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bitwise identically; tensors are on the CPU, so the dict can be
        saved with ``torch.save`` and loaded with ``weights_only=True``."""
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "epoch": self._epoch,
            "position": self._position,
            "permutation": None if self._permutation is None else self._permutation.cpu(),
            "shuffle_rng": self._shuffle_rng.get_state(),
            "augment_rng": self._augment_rng.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a sampler over the same data and batch size."""
        for key in ("num_samples", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]}, this sampler has {getattr(self, key)}")
        permutation = state["permutation"]
        self._permutation = None if permutation is None else permutation.to(self.device)
        self._position = int(state["position"])
        self._epoch = int(state["epoch"])
        # Generator states must be CPU byte tensors, even if the checkpoint was mapped onto an accelerator.
        self._shuffle_rng.set_state(state["shuffle_rng"].cpu())
        self._augment_rng.set_state(state["augment_rng"].cpu())
