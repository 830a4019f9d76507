"""Input transforms: batched device-side crop/flip/normalization, and the per-image ImageNet geometry.

The batched transforms work on a whole batch at once by index arithmetic on the device tensor that holds the
dataset, so a training step never leaves the device and never runs a per-image Python loop. They reproduce
the torchvision pipeline ``RandomCrop(32, padding=4) -> RandomHorizontalFlip() -> ToTensor() ->
Normalize(mean, std)``: the padding is zero in *raw* pixel space and normalization happens after the crop, so
padded pixels become ``-mean / std`` exactly as they do there.

Datasets too large for the device (ImageNet) are decoded and cropped per image in loader workers instead; the
functions at the end draw that per-image randomness (random-resized-crop window, flip, AlexNet lighting) from a
NumPy generator the caller seeds per sample, so the result does not depend on which worker decoded it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IMAGENET_EIGENVALUES",
    "IMAGENET_EIGENVECTORS",
    "Augmentation",
    "Normalize",
    "center_crop_box",
    "crop_and_flip",
    "lighting_offset",
    "random_resized_crop_box",
    "resize_shorter_side",
]


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

    The offsets and flips of a batch are drawn on the host from a NumPy generator seeded with the batch's *key*
    (the sampler passes ``(stream seed, epoch, position in the epoch)``), never from a device generator: the same
    batch is augmented the same way on a CPU and on a GPU, and a sampler's state holds no generator whose format
    depends on the device kind (a CPU generator's state is 5,056 bytes, a CUDA one's 16, and neither loads into
    the other). The draws reach the device in one asynchronous copy from pinned memory.
    """

    pad: int
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"pad must be non-negative, got {self.pad}")

    def draw(self, key: Sequence[int], batch: int) -> np.ndarray:
        """The random choices of a batch of ``batch`` samples: int64 ``(3, batch)`` rows top, left, flip (0/1),
        a function of ``key`` (non-negative integers) alone."""
        rng = np.random.default_rng([int(k) for k in key])
        draws = np.zeros((3, batch), dtype=np.int64)
        draws[:2] = rng.integers(0, 2 * self.pad + 1, size=(2, batch))
        if self.flip:
            draws[2] = rng.integers(0, 2, size=batch)
        return draws

    def __call__(self, images: Tensor, indices: Tensor, key: Sequence[int]) -> Tensor:
        """Return augmented raw images ``images[indices]``, with the random choices :meth:`draw` makes for ``key``.

        Nothing here waits for the device: on CUDA the draws are copied from pinned memory without blocking (the
        caching host allocator keeps the pinned block until the copy has run).
        """
        draws = torch.from_numpy(self.draw(key, indices.shape[0]))
        if images.device.type == "cuda":
            draws = draws.pin_memory().to(images.device, non_blocking=True)
        return crop_and_flip(images, indices, draws[0], draws[1], draws[2].bool(), self.pad)


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


# ------------------------------------------------------------------------------------ per-image (ImageNet)

IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
"""Eigenvalues of the covariance of ImageNet RGB pixels in [0, 1], largest first (the PCA behind AlexNet's
lighting augmentation, Krizhevsky et al. 2012, Sec. 4.1, in the values the fb.resnet.torch recipes use)."""
IMAGENET_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
"""Matching eigenvectors as columns: row ``c`` holds the R/G/B component ``c`` of each eigenvector."""


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """The window ``(left, top, crop_width, crop_height)`` of an Inception-style random resized crop.

    Draws an area fraction uniformly from ``scale`` and an aspect ratio log-uniformly from ``ratio`` until the
    window fits into the image (at most ``attempts`` tries), then a uniform position; if no draw fits, the
    largest centred window whose aspect ratio lies within ``ratio`` is used. This is the sampling rule of
    torchvision's ``RandomResizedCrop`` (its default ranges), drawn from ``rng`` instead of the global RNG.
    """
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return left, top, crop_width, crop_height
    aspect = width / height
    if aspect < ratio[0]:
        crop_width, crop_height = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        crop_width, crop_height = round(height * ratio[1]), height
    else:
        crop_width, crop_height = width, height
    return (width - crop_width) // 2, (height - crop_height) // 2, crop_width, crop_height


def resize_shorter_side(width: int, height: int, size: int) -> tuple[int, int]:
    """Image size after resizing the shorter side to ``size`` with the aspect ratio kept (long side truncated,
    as torchvision's ``Resize(size)`` does)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box of a centred ``size``×``size`` crop (offsets rounded like
    torchvision's ``CenterCrop``)."""
    if size > width or size > height:
        raise ValueError(f"cannot center-crop {size}x{size} out of a {width}x{height} image")
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return left, top, left + size, top + size


def lighting_offset(rng: np.random.Generator, alphastd: float) -> np.ndarray:
    """AlexNet's PCA lighting noise: the RGB offset ``V (alpha * lambda)`` with ``alpha ~ N(0, alphastd^2)``.

    It is added to every pixel of an image in [0, 1] scale before normalization (Krizhevsky et al. 2012,
    Sec. 4.1; thesis App. A.2.3 applies it on ImageNet). Returns a float32 array of shape ``(3,)``; all zeros
    when ``alphastd`` is 0, without drawing from ``rng``.
    """
    if alphastd == 0:
        return np.zeros(3, dtype=np.float32)
    alpha = rng.normal(0.0, alphastd, size=3)
    offset = np.asarray(IMAGENET_EIGENVECTORS) @ (alpha * np.asarray(IMAGENET_EIGENVALUES))
    return offset.astype(np.float32)
