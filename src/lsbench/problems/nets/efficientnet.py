"""EfficientNet-B0 (Tan and Le 2019), torchvision's implementation, for ImageNet and for 32×32 images.

The thesis (PAL chapter) trains an EfficientNet-B0 on CIFAR-10/100 without describing its adaptation to 32×32
images. torchvision's B0 reduces the resolution by 32 (stem stride 2, then four stride-2 stages), which leaves a
1×1 map for a 32×32 image; the CIFAR variant here sets the stem convolution's stride to 1, so the total stride is
16 and the last stage sees 2×2. That changes no parameter: the network is torchvision's
``efficientnet_b0(weights=None, num_classes=...)`` with one stride changed, keeping its stochastic depth (0.2,
linearly increasing over blocks), its classifier Dropout(0.2) and its initialisation (Kaiming-normal fan_out
convolutions, BatchNorm 1/0, linear uniform ±1/√out with zero bias).

Stochastic depth and dropout draw from the global RNG, so a :class:`~lsbench.optim.closure.BatchClosure`, which
seeds a forked RNG per call, repeats them across the evaluations of one step.
"""

from __future__ import annotations

from torch import nn

__all__ = ["cifar_efficientnet_b0", "imagenet_efficientnet_b0"]


def imagenet_efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    """torchvision's EfficientNet-B0 (``efficientnet_b0(weights=None)``), randomly initialised; 224×224 inputs."""
    from torchvision.models import efficientnet_b0

    return efficientnet_b0(weights=None, num_classes=num_classes)


def cifar_efficientnet_b0(num_classes: int = 10) -> nn.Module:
    """EfficientNet-B0 for 32×32 images: torchvision's model with the stem convolution at stride 1 instead of 2."""
    model = imagenet_efficientnet_b0(num_classes)
    stem = model.features[0][0]
    if not isinstance(stem, nn.Conv2d) or stem.stride != (2, 2):
        raise RuntimeError(f"unexpected EfficientNet-B0 stem in this torchvision version: {stem}")
    stem.stride = (1, 1)
    return model
