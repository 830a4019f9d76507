"""Batched, device-side input transforms: random crop with zero padding, horizontal flip, normalization.

The transforms work on a whole batch at once by index arithmetic on the device tensor that holds the dataset,
so a training step never leaves the device and never runs a per-image Python loop. They reproduce the
torchvision pipeline ``RandomCrop(32, padding=4) -> RandomHorizontalFlip() -> ToTensor() -> Normalize(mean,
std)``: the padding is zero in *raw* pixel space and normalization happens after the crop, so padded pixels
become ``-mean / std`` exactly as they do there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Augmentation", "Normalize", "crop_and_flip"]


def crop_and_flip(images: Tensor, indices: Tensor, top: Tensor, left: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Gather ``images[indices]`` as crops of the zero-padded images, mirrored horizontally where ``flip``.

    Args:
        images: raw dataset ``(N, C, H, W)``; any dtype, the result keeps it.
        indices: ``(B,)`` sample indices into ``images``.
        top, left: ``(B,)`` integer offsets of the crop window inside the image padded by ``pad`` on every
            side, each in ``[0, 2 * pad]``; ``pad`` means "no shift" (torchvision's RandomCrop coordinates).
        flip: ``(B,)`` bool, mirror the crop left-right.
        pad: zero padding on each side.

    Returns:
        ``(B, C, H, W)`` tensor equal to ``hflip(crop(pad(images[i], pad), top, left, H, W))`` per sample.
        It is built from one gather with clamped source coordinates plus a mask, instead of materialising
        the padded dataset, which would cost an extra copy of the dataset on the device.
    """
    _, channels, height, width = images.shape
    device = images.device
    rows = top.to(device)[:, None] - pad + torch.arange(height, device=device)
    cols = left.to(device)[:, None] - pad + torch.arange(width, device=device)
    # Mirroring the crop is reading its source columns in reverse order.
    cols = torch.where(flip.to(device)[:, None], cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    gathered = images[
        indices.to(device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows.clamp(0, height - 1)[:, None, :, None],
        cols.clamp(0, width - 1)[:, None, None, :],
    ]
    return gathered.masked_fill(~inside[:, None], 0)


@dataclass(frozen=True)
class Augmentation:
    """Random crop with zero padding ``pad`` followed by a horizontal flip with probability 1/2.

    ``pad`` is a dataset setting because the reference harnesses differ: 4 for CIFAR-10 and for CIFAR-100 in
    the PAL experiments, 8 for CIFAR-100 in the LABPAL harness.
    """

    pad: int
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be non-negative, got {self.pad}")

    def __call__(self, images: Tensor, indices: Tensor, generator: torch.Generator) -> Tensor:
        """Return augmented raw images ``images[indices]``, drawing offsets and flips from ``generator``.

        ``generator`` must live on ``images.device`` so drawing the randomness needs no host round trip.
        """
        batch = indices.shape[0]
        device = images.device
        top = torch.randint(0, 2 * self.pad + 1, (batch,), generator=generator, device=device)
        left = torch.randint(0, 2 * self.pad + 1, (batch,), generator=generator, device=device)
        if self.flip:
            flip = torch.rand(batch, generator=generator, device=device) < 0.5
        else:
            flip = torch.zeros(batch, dtype=torch.bool, device=device)
        return crop_and_flip(images, indices, top, left, flip, self.pad)


class Normalize:
    """Per-channel normalization ``(x - mean) / std`` of raw inputs, with the constants held on ``device``.

    Raw ``uint8`` images are scaled to [0, 1] first (like ``ToTensor``); floating-point raw data is taken as
    already scaled. The constants are created once on the device because building them per batch would
    copy from the host, which synchronises a CUDA stream on every step. "Channel" is dimension 1, so
    ``(N, F)`` feature data is normalized per feature.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu") -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)

    def __call__(self, raw: Tensor) -> Tensor:
        """Return the float32 network input for ``raw``; ``raw`` itself is never modified."""
        x = raw.to(torch.float32)
        if raw.dtype == torch.uint8:
            x = x / 255.0
        shape = (1, -1) + (1,) * (raw.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)
