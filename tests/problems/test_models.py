import math

import pytest
import torch
from torch import nn

from lsbench.problems.models import MLP, BasicBlock, OptionAShortcut, SmallCNN, build_model, cifar_resnet


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# 90 more classes add 90 rows of 64 weights plus 90 biases to the final Linear layer.
@pytest.mark.parametrize(
    ("depth", "classes", "expected"),
    [(20, 10, 269_722), (32, 10, 464_154), (20, 100, 269_722 + 90 * 65), (32, 100, 464_154 + 90 * 65)],
)
def test_cifar_resnet_parameter_counts_match_the_paper_models(depth, classes, expected):
    assert num_params(cifar_resnet(depth, classes)) == expected


@pytest.mark.parametrize("depth", [20, 32])
def test_cifar_resnet_maps_cifar_images_to_logits(depth):
    torch.manual_seed(0)
    model = cifar_resnet(depth, num_classes=100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("depth", [0, 7, 19, 21])
def test_cifar_resnet_rejects_depths_that_are_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(depth)


def test_option_a_shortcut_is_parameter_free_subsampling_with_zero_channels():
    shortcut = OptionAShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 32, 32)
    out = shortcut(x)
    assert num_params(shortcut) == 0
    assert out.shape == (2, 32, 16, 16)
    # planes / 4 = 8 zero channels on each side, the input subsampled by 2 in between.
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, :8]) == 0
    assert torch.count_nonzero(out[:, 24:]) == 0


def test_downsampling_block_has_only_conv_and_batchnorm_parameters():
    block = BasicBlock(16, 32, stride=2)
    assert isinstance(block.shortcut, OptionAShortcut)
    assert num_params(block) == 16 * 32 * 9 + 32 * 32 * 9 + 2 * (2 * 32)
    assert block(torch.randn(1, 16, 32, 32)).shape == (1, 32, 16, 16)


def test_cifar_resnet_initialisation_is_kaiming_normal_and_reproducible():
    torch.manual_seed(3)
    model = cifar_resnet(20)
    torch.manual_seed(3)
    again = cifar_resnet(20)
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    # The 64 -> 64 convs of stage 3: fan_in 64 * 3 * 3 = 576, kaiming std sqrt(2 / fan_in).
    convs = [m for m in model.layer3.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 64]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.03)
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1)
            assert torch.all(module.bias == 0)


def test_small_models_map_digits_to_logits():
    x = torch.randn(5, 1, 8, 8)
    assert SmallCNN((1, 8, 8), 10)(x).shape == (5, 10)
    assert MLP(64, 10)(x).shape == (5, 10)
    assert num_params(MLP(64, 10, hidden=32)) == 64 * 32 + 32 + 32 * 10 + 10


def test_build_model_builds_by_key_and_rejects_unknown_keys():
    assert num_params(build_model("resnet20", (3, 32, 32), 10)) == 269_722
    assert build_model("mlp", (1, 8, 8), 3)(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="resnet20") as excinfo:
        build_model("resnet19", (3, 32, 32), 10)
    assert "'resnet19'" in str(excinfo.value)
