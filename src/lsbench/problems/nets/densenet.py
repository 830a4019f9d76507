"""DenseNets: DenseNet-40 of the PAL chapter and DenseNet-121 of the LABPAL chapter (CIFAR and ImageNet).

* :class:`DenseNet` is the original, non-bottleneck DenseNet of Huang et al. (2017) for CIFAR, laid out as in the
  TensorFlow code of the PAL paper experiments (``densenet40``).
* :class:`DenseNetBC` is the bottleneck-compression variant in torchvision's layout with the small-image stem of the
  LABPAL code (``densenet121``); :func:`imagenet_densenet121` is torchvision's own ImageNet model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DenseNet", "DenseNetBC", "cifar_densenet121", "densenet40", "imagenet_densenet121"]

# TensorFlow's batch-normalization defaults (momentum 0.99 of the running average, epsilon 1e-3) in PyTorch terms.
_TF_BN = {"momentum": 0.01, "eps": 1e-3}


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv3×3(growth_rate, with bias)-Dropout, whose output is concatenated to its input."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels, **_TF_BN)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        new = self.dropout(self.conv(F.relu(self.norm(x))))
        return torch.cat([x, new], dim=1)


class _Transition(nn.Module):
    """BN (no ReLU) -> Conv1×1 (channels unchanged, compression 1.0) -> AvgPool 2×2 stride 2, as in the PAL code."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, **_TF_BN)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(self.norm(x)), 2)


class DenseNet(nn.Module):
    """Non-bottleneck DenseNet for CIFAR (Huang et al. 2017) as in the PAL paper's TensorFlow code.

    Three dense blocks of ``(depth - 4) / 3`` layers each (12 for DenseNet-40), growth rate ``k``:

    * stem: BN-ReLU-Conv3×3(2k) applied to the (normalized) image -- the reference puts a BN-ReLU *before* the
      first convolution;
    * dense layer: BN-ReLU-Conv3×3(k) with a bias, then dropout, concatenated to the layer's input;
    * transition between blocks: BN (no ReLU), Conv1×1 keeping the channel count (compression 1.0), AvgPool 2×2;
    * head: average pooling over the final map (AvgPool 8×8 on 32×32 inputs; global average pooling here, which is
      the same there and also accepts other sizes) with no final BN-ReLU, then a linear layer.

    Channels for DenseNet-40: 24 -> 168 -> 312 -> 456; 1,058,824 parameters with 10 classes (the paper rounds to 1.0 M).

    Initialisation follows TensorFlow's defaults used by the reference: Glorot-uniform kernels (convolutions and the
    linear layer), zero biases, BatchNorm weight 1 and bias 0 with TF's momentum 0.99 (PyTorch ``momentum=0.01``) and
    epsilon 1e-3.

    Dropout: line searches must see one function per step, so the reference reused its dropout masks across
    PAL's inferences. Here plain :class:`torch.nn.Dropout` is enough: a
    :class:`~lsbench.optim.closure.BatchClosure` seeds a forked RNG on every call, so every evaluation of one step
    draws the same masks.
    """

    def __init__(
        self,
        depth: int = 40,
        growth_rate: int = 12,
        dropout: float = 0.2,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 7 or (depth - 4) % 3 != 0:
            raise ValueError(f"DenseNet depth must be 3n+4 with n >= 1 (7, 10, ..., 40, ...), got {depth}")
        layers_per_block = (depth - 4) // 3
        channels = 2 * growth_rate
        self.stem_norm = nn.BatchNorm2d(in_channels, **_TF_BN)
        self.stem_conv = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for block in range(3):
            for _ in range(layers_per_block):
                blocks.append(_DenseLayer(channels, growth_rate, dropout))
                channels += growth_rate
            if block < 2:
                blocks.append(_Transition(channels))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem_conv(F.relu(self.stem_norm(x)))
        out = self.blocks(out)
        return self.classifier(out.mean(dim=(2, 3)))


def densenet40(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2) -> DenseNet:
    """DenseNet-40 (k = 12, non-bottleneck, compression 1.0, dropout 0.2) of the PAL chapter."""
    return DenseNet(40, growth_rate=12, dropout=dropout, num_classes=num_classes, in_channels=in_channels)


class _BottleneckLayer(nn.Module):
    """BN-ReLU-Conv1×1(bn_size·k)-BN-ReLU-Conv3×3(k), no biases; output concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        inner = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return torch.cat([x, out], dim=1)


class _CompressionTransition(nn.Sequential):
    """BN-ReLU-Conv1×1 halving the channels (compression 0.5), then AvgPool 2×2 stride 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2, stride=2),
        )


class DenseNetBC(nn.Module):
    """DenseNet-BC (bottleneck layers, compression 0.5) in torchvision's layout with a small-image stem.

    The LABPAL code's CIFAR DenseNet-121: growth rate 32, blocks (6, 12, 24, 16), 64 initial features, bottleneck
    width ``bn_size · k`` with ``bn_size`` 4, no dropout. The stem is Conv3×3 stride 1 (instead of torchvision's
    7×7 stride 2) + BN + ReLU, followed -- as in the reference -- by the MaxPool 3×3 stride 2, so a 32×32 image
    enters the first dense block at 16×16. Transitions are BN-ReLU-Conv1×1 (halving the channels)-AvgPool 2×2; the
    last block is followed by BN-ReLU, global average pooling and a linear layer (1024 features for DenseNet-121).

    Initialisation as in the reference: Kaiming-normal convolutions (fan_in, gain √2), BatchNorm weight 1 and bias 0,
    linear bias 0 (linear weight: PyTorch default).
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, num_init_features, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(num_init_features),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        channels = num_init_features
        for index, num_layers in enumerate(block_config):
            for _ in range(num_layers):
                layers.append(_BottleneckLayer(channels, growth_rate, bn_size))
                channels += growth_rate
            if index < len(block_config) - 1:
                layers.append(_CompressionTransition(channels, channels // 2))
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def cifar_densenet121(num_classes: int = 10, in_channels: int = 3) -> DenseNetBC:
    """DenseNet-121 for 32×32 images (LABPAL's CIFAR variant, see :class:`DenseNetBC`)."""
    return DenseNetBC(32, (6, 12, 24, 16), 64, bn_size=4, num_classes=num_classes, in_channels=in_channels)


def imagenet_densenet121(num_classes: int = 1000) -> nn.Module:
    """torchvision's ImageNet DenseNet-121 (``densenet121(weights=None)``, 7×7 stride-2 stem), randomly initialised."""
    from torchvision.models import densenet121

    return densenet121(weights=None, num_classes=num_classes)
