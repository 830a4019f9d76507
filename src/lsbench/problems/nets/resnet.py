"""ResNet-18/34/50 (He et al. 2016) in torchvision's layout: CIFAR variants with a small-image stem, as in the
LABPAL code, and torchvision's own ImageNet models.

These are the ImageNet-style ResNets (widths 64-512, 1×1 projection shortcuts); the CIFAR ResNet-20/32 of the
thesis, with three stages of 16-64 channels and parameter-free shortcuts, is
:class:`lsbench.problems.models.CifarResNet`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "cifar_resnet_tv", "imagenet_resnet"]


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Conv1×1 (stride) + BN shortcut for a block that changes the shape, identity otherwise."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Conv3×3-BN-ReLU-Conv3×3-BN plus shortcut, then ReLU (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """Conv1×1-BN-ReLU-Conv3×3(stride)-BN-ReLU-Conv1×1(4·planes)-BN plus shortcut, then ReLU (ResNet-50).

    The stride sits on the 3×3 convolution, as in torchvision ("ResNet v1.5").
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _projection(in_planes, out_planes, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


_LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """torchvision's ResNet with a 3×3 stride-1 stem for 32×32 images (the LABPAL code's ResNet-18/34/50).

    Stem Conv3×3(64, stride 1)-BN-ReLU, then -- if ``maxpool`` -- the MaxPool 3×3 stride 2 of the ImageNet model;
    four stages with widths 64/128/256/512 (×4 output channels for bottleneck blocks), strides 1/2/2/2 and 1×1
    projection shortcuts; global average pooling and a linear layer.

    ``maxpool`` (default ``True``): the LABPAL reference keeps the max-pool, so a 32×32 image enters the first stage
    at 16×16 and leaves the last at 2×2. ``maxpool=False`` gives the common CIFAR variant (e.g. kuangliu's, used by
    the PAL repository's PyTorch example) that stays at 32×32 in the first stage, at about 4× the compute.

    Initialisation as in the reference: Kaiming-normal convolutions (fan_out, ReLU gain), BatchNorm weight 1 and
    bias 0, PyTorch's default for the linear layer; ``zero_init_residual`` (off, as in the reference) zeroes the
    weight of each block's last BatchNorm.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        maxpool: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(_LAYOUTS)}, got {depth}")
        block, blocks_per_stage = _LAYOUTS[depth]
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if maxpool else nn.Identity()
        stages = []
        in_planes = 64
        for planes, stride, count in zip((64, 128, 256, 512), (1, 2, 2, 2), blocks_per_stage, strict=True):
            blocks = []
            for index in range(count):
                blocks.append(block(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    nn.init.zeros_(module.last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(out.mean(dim=(2, 3)))


def cifar_resnet_tv(depth: int, num_classes: int = 10, in_channels: int = 3, maxpool: bool = True) -> ResNet:
    """ResNet-18/34/50 for 32×32 images in torchvision's layout (see :class:`ResNet`; ``maxpool`` kept by default)."""
    return ResNet(depth, num_classes=num_classes, in_channels=in_channels, maxpool=maxpool)


def imagenet_resnet(depth: int, num_classes: int = 1000) -> nn.Module:
    """torchvision's ImageNet ResNet-18/34/50 (``resnetNN(weights=None)``: 7×7 stride-2 stem and max-pool)."""
    import torchvision.models as tvm

    constructors = {18: tvm.resnet18, 34: tvm.resnet34, 50: tvm.resnet50}
    if depth not in constructors:
        raise ValueError(f"ResNet depth must be one of {sorted(constructors)}, got {depth}")
    return constructors[depth](weights=None, num_classes=num_classes)
