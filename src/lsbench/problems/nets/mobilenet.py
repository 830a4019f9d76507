"""MobileNetV2 (Sandler et al. 2018) for 32×32 images, in torchvision's layout as in the LABPAL code."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CIFAR_INVERTED_RESIDUAL_SETTING", "MobileNetV2", "cifar_mobilenetv2"]

CIFAR_INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet model
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""Stages ``(t, c, n, s)``: expansion factor, output channels, blocks, stride of the first block."""


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """Expand (Conv1×1 to ``t·in``, omitted for ``t = 1``) - depthwise Conv3×3 (stride) - linear Conv1×1 projection,
    each followed by BN (ReLU6 after the first two); residual connection when stride 1 and channels match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier 1 in torchvision's layout, CIFAR variant of the LABPAL code.

    Stem Conv3×3(32)-BN-ReLU6 at stride 1 (2 in the ImageNet model), the inverted-residual stages of
    ``setting`` (default :data:`CIFAR_INVERTED_RESIDUAL_SETTING`: the ImageNet stages with the second, 24-channel,
    stage at stride 1 as well, so the total stride is 8 and a 32×32 image ends at 4×4), a Conv1×1(1280)-BN-ReLU6,
    global average pooling, Dropout(0.2) and a linear layer. 2,236,682 parameters with 10 classes -- the same as
    torchvision's ``mobilenet_v2(num_classes=10)``, since only strides differ.

    This is the LABPAL chapter's network. The PAL chapter's TF-slim variant differs (no stem convolution; the
    network starts with the expansion-1 block) and is not provided.

    Initialisation as in the reference: Kaiming-normal convolutions (fan_out), BatchNorm weight 1 and bias 0,
    linear weight N(0, 0.01²) and bias 0.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        setting: tuple[tuple[int, int, int, int], ...] = CIFAR_INVERTED_RESIDUAL_SETTING,
        stem_stride: int = 1,
        dropout: float = 0.2,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, stride=stem_stride)]
        channels = 32
        for expansion, out_channels, count, stride in setting:
            for index in range(count):
                layers.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1, expansion))
                channels = out_channels
        layers.append(_conv_bn_relu6(channels, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def cifar_mobilenetv2(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2) -> MobileNetV2:
    """LABPAL's CIFAR MobileNetV2: stride-1 stem and stride-1 second stage (see :class:`MobileNetV2`)."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
