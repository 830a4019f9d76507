"""Networks of the benchmark problems: the CIFAR ResNets of the thesis, two small models for CPU runs, and the
registry :data:`MODELS` of every network by key (the other architectures live in :mod:`lsbench.problems.nets`).

Every constructor draws its initial parameters from the global torch RNG;
:func:`~lsbench.problems.build_problem` calls them under a forked, seeded RNG so that a problem's
initialisation depends only on its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from lsbench.problems.nets.charrnn import CharRNN
from lsbench.problems.nets.densenet import cifar_densenet121, densenet40, imagenet_densenet121
from lsbench.problems.nets.efficientnet import cifar_efficientnet_b0, imagenet_efficientnet_b0
from lsbench.problems.nets.mobilenet import cifar_mobilenetv2
from lsbench.problems.nets.resnet import cifar_resnet_tv, imagenet_resnet

__all__ = [
    "MLP",
    "MODELS",
    "BasicBlock",
    "CifarResNet",
    "LinearFactorization",
    "OptionAShortcut",
    "SmallCNN",
    "build_model",
    "cifar_resnet",
]


class OptionAShortcut(nn.Module):
    """Parameter-free residual shortcut ("option A" of He et al. 2016) for a block that changes shape.

    Subsamples spatially by ``stride`` (keeps every ``stride``-th pixel) and zero-pads the channel dimension
    symmetrically from ``in_planes`` to ``planes``: ``planes / 4`` zero channels on each side in the CIFAR
    ResNets. Being parameter-free, it keeps the parameter counts of the paper's CIFAR ResNets (ResNet-20:
    0.27 M), which a 1×1 projection shortcut would change.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"option A cannot reduce channels ({in_planes} -> {planes})")
        self.stride = stride
        self.pad_before = (planes - in_planes) // 2
        self.pad_after = planes - in_planes - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Conv3×3-BN-ReLU-Conv3×3-BN plus shortcut, then ReLU; option-A shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), Sec. 4.2, as in Idelbayev's PyTorch version used by the
    LABPAL and line-analysis experiments: 3×3 stem with 16 channels, three stages of ``blocks_per_stage``
    basic blocks (widths 16/32/64, strides 1/2/2), global average pooling and a linear classifier.

    Initialisation follows that implementation: ``kaiming_normal_`` (fan_in, gain √2) for every Conv2d and
    Linear weight, PyTorch defaults otherwise (BatchNorm weight 1, bias 0; Linear bias uniform).
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet of depth ``6n + 2`` (20, 32, 44, 56, 110, ...) with ``n`` blocks per stage."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes, in_channels=in_channels)


class SmallCNN(nn.Module):
    """Two Conv3×3-BN-ReLU-MaxPool2 stages (16 and 32 channels) and a linear head, for tiny images such as
    the 8×8 digits, where it trains to > 90 % test accuracy in seconds on a CPU but, unlike an MLP, still
    exercises convolutions and BatchNorm (whose running statistics line searches must take care of)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height % 4 or width % 4:
            raise ValueError(f"SmallCNN needs height and width divisible by 4, got {height}x{width}")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """Flatten -> Linear -> ReLU -> Linear: the smallest non-linear model, for fast CPU tests and demos."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LinearFactorization(nn.Module):
    """The two-layer linear network W2·W1·x of the matrix factorization problem (Vaswani et al. 2019, §7.2).

    ``W1`` is ``rank × in_features`` and ``W2`` is ``out_features × rank``, both without bias and initialized as
    PyTorch initializes a bias-free ``nn.Linear`` (uniform in ±1/√fan_in). A rank below the rank of the target
    matrix cannot represent it; a rank at least ``min(in_features, out_features)`` can (interpolation).
    """

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x.flatten(1)))


ModelBuilder = Callable[[tuple[int, ...], int], nn.Module]


def _rgb(shape: tuple[int, ...], name: str) -> None:
    """torchvision's models (and the variants built from them) take 3-channel images only."""
    if len(shape) != 3 or shape[0] != 3:
        raise ValueError(f"model {name!r} needs (3, H, W) images, got input shape {shape}")


def _torchvision(name: str, build: Callable[[int], nn.Module]) -> ModelBuilder:
    def builder(shape: tuple[int, ...], classes: int) -> nn.Module:
        _rgb(shape, name)
        return build(classes)

    return builder


MODELS: dict[str, ModelBuilder] = {
    # The small-image networks take any channel count (``input_shape[0]``).
    "resnet20": lambda shape, classes: cifar_resnet(20, classes, in_channels=shape[0]),
    "resnet32": lambda shape, classes: cifar_resnet(32, classes, in_channels=shape[0]),
    "cnn": lambda shape, classes: SmallCNN((shape[0], shape[1], shape[2]), classes),
    "mlp": lambda shape, classes: MLP(math.prod(shape), classes),
    "densenet40": lambda shape, classes: densenet40(classes, in_channels=shape[0]),
    "densenet121": lambda shape, classes: cifar_densenet121(classes, in_channels=shape[0]),
    "mobilenetv2": lambda shape, classes: cifar_mobilenetv2(classes, in_channels=shape[0]),
    "resnet18": lambda shape, classes: cifar_resnet_tv(18, classes, in_channels=shape[0]),
    "resnet34": lambda shape, classes: cifar_resnet_tv(34, classes, in_channels=shape[0]),
    "resnet50": lambda shape, classes: cifar_resnet_tv(50, classes, in_channels=shape[0]),
    "efficientnet_b0": _torchvision("efficientnet_b0", cifar_efficientnet_b0),
    # torchvision's ImageNet models (224×224 inputs; 3 channels).
    "resnet18_imagenet": _torchvision("resnet18_imagenet", lambda classes: imagenet_resnet(18, classes)),
    "resnet34_imagenet": _torchvision("resnet34_imagenet", lambda classes: imagenet_resnet(34, classes)),
    "resnet50_imagenet": _torchvision("resnet50_imagenet", lambda classes: imagenet_resnet(50, classes)),
    "densenet121_imagenet": _torchvision("densenet121_imagenet", imagenet_densenet121),
    "efficientnet_b0_imagenet": _torchvision("efficientnet_b0_imagenet", imagenet_efficientnet_b0),
    # Character-level language model: input (N, T) indices, ``num_classes`` is the vocabulary size, output
    # (N, T, vocabulary) logits -- pair it with a per-character loss (nets.charrnn.sequence_cross_entropy).
    "charrnn": lambda shape, classes: CharRNN(vocab_size=classes),
    # Matrix factorization (Vaswani et al. 2019, §7.2): W2·W1 of rank 1, 4 and 10; ``num_classes`` is the number of
    # outputs of the regression.
    "rank1": lambda shape, classes: LinearFactorization(math.prod(shape), classes, rank=1),
    "rank4": lambda shape, classes: LinearFactorization(math.prod(shape), classes, rank=4),
    "rank10": lambda shape, classes: LinearFactorization(math.prod(shape), classes, rank=10),
}
"""Model keys used in problem names, mapped to ``builder(input_shape, num_classes)`` with ``input_shape`` the
shape of one sample (``(C, H, W)``, ``(F,)``, or ``(T,)`` for ``charrnn``).

Keys without a suffix are the small-image (CIFAR, SVHN, MNIST) variants; ``*_imagenet`` are torchvision's ImageNet
models."""


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build model ``name`` (a key of :data:`MODELS`) for samples of ``input_shape`` and ``num_classes``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(input_shape), num_classes)
