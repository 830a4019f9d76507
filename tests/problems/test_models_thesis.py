"""The thesis' further networks: DenseNet-40/121, MobileNetV2, EfficientNet-B0, ResNet-18/34/50 and the char-RNN.

Parameter counts are checked on the meta device (shapes only, no memory or initialisation); forward passes use
tiny batches.
"""

import math
from collections import Counter

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from lsbench.optim.closure import ClosureFactory
from lsbench.problems.evaluation import SequenceCrossEntropy
from lsbench.problems.models import MODELS, build_model
from lsbench.problems.nets.charrnn import CharRNN
from lsbench.problems.nets.densenet import DenseNet, densenet40
from lsbench.problems.nets.resnet import ResNet, cifar_resnet_tv, imagenet_resnet

CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)
VOCAB = 83  # Tolstoi's War and Peace

SMALL_IMAGE_KEYS = ["densenet40", "densenet121", "mobilenetv2", "resnet18", "resnet34", "resnet50"]
IMAGENET_KEYS = [
    "resnet18_imagenet",
    "resnet34_imagenet",
    "resnet50_imagenet",
    "densenet121_imagenet",
    "efficientnet_b0_imagenet",
]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_build(name: str, shape: tuple[int, ...], classes: int) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, shape, classes)


def shape_counts(model: nn.Module) -> Counter:
    return Counter(tuple(p.shape) for p in model.parameters())


# Pinned once; "≈" published values are cross-checked below.
PINNED_10_CLASSES = {
    "densenet40": 1_058_824,
    "densenet121": 6_956_426,
    "mobilenetv2": 2_236_682,
    "efficientnet_b0": 4_020_358,
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    "resnet18_imagenet": 11_181_642,
    "resnet34_imagenet": 21_289_802,
    "resnet50_imagenet": 23_528_522,
    "densenet121_imagenet": 6_964_106,
    "efficientnet_b0_imagenet": 4_020_358,
}


@pytest.mark.parametrize(("name", "expected"), sorted(PINNED_10_CLASSES.items()))
def test_parameter_counts_with_10_classes_are_pinned(name, expected):
    shape = IMAGENET if name.endswith("_imagenet") else CIFAR
    assert num_params(meta_build(name, shape, 10)) == expected


def test_parameter_counts_of_densenet40_with_100_classes_and_charrnn_with_83_characters():
    # 90 more classes add 90 rows of 456 weights plus 90 biases.
    assert num_params(meta_build("densenet40", CIFAR, 100)) == 1_058_824 + 90 * 457 == 1_099_954
    # Embedding 83×128, two LSTM layers 4·128·(128 + 128) + 2·4·128, decoder 128×83 + 83.
    expected = VOCAB * 128 + 2 * (4 * 128 * 256 + 2 * 4 * 128) + 128 * VOCAB + VOCAB
    assert num_params(meta_build("charrnn", (50,), VOCAB)) == expected == 285_523


def test_parameter_counts_match_published_values():
    assert num_params(meta_build("resnet50_imagenet", IMAGENET, 1000)) == 25_557_032
    assert num_params(meta_build("efficientnet_b0_imagenet", IMAGENET, 1000)) == 5_288_548
    assert num_params(meta_build("densenet121_imagenet", IMAGENET, 1000)) == 7_978_856
    assert PINNED_10_CLASSES["densenet40"] == pytest.approx(1.0e6, rel=0.06)  # Huang et al.: 1.0 M
    assert PINNED_10_CLASSES["resnet18"] == pytest.approx(11.2e6, rel=0.01)
    assert 2.2e6 <= PINNED_10_CLASSES["mobilenetv2"] <= 2.3e6
    assert PINNED_10_CLASSES["densenet121"] == pytest.approx(7.0e6, rel=0.01)


# Each CIFAR variant is torchvision's network with only the stem changed (strides are parameter-free).
@pytest.mark.parametrize(
    ("name", "torchvision_model", "stem_shapes"),
    [
        ("resnet18", tvm.resnet18, ((64, 3, 7, 7), (64, 3, 3, 3))),
        ("resnet34", tvm.resnet34, ((64, 3, 7, 7), (64, 3, 3, 3))),
        ("resnet50", tvm.resnet50, ((64, 3, 7, 7), (64, 3, 3, 3))),
        ("densenet121", tvm.densenet121, ((64, 3, 7, 7), (64, 3, 3, 3))),
        ("mobilenetv2", tvm.mobilenet_v2, None),
    ],
)
def test_cifar_variants_have_torchvision_layouts_up_to_the_stem(name, torchvision_model, stem_shapes):
    with torch.device("meta"):
        reference = shape_counts(torchvision_model(weights=None, num_classes=10))
    ours = shape_counts(meta_build(name, CIFAR, 10))
    if stem_shapes is not None:
        imagenet_stem, cifar_stem = stem_shapes
        reference[imagenet_stem] -= 1
        reference[cifar_stem] += 1
    assert +ours == +reference


@pytest.mark.parametrize("name", [*SMALL_IMAGE_KEYS, "efficientnet_b0"])
def test_cifar_models_map_cifar_images_to_logits(name):
    torch.manual_seed(0)
    model = build_model(name, CIFAR, 10)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


@pytest.mark.parametrize("name", IMAGENET_KEYS)
def test_imagenet_models_map_small_images_to_logits(name):
    torch.manual_seed(0)
    model = build_model(name, IMAGENET, 7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_resnet_keeps_the_reference_max_pool_unless_asked_not_to():
    torch.manual_seed(0)
    x = torch.randn(2, *CIFAR)
    with_pool = cifar_resnet_tv(18)
    without_pool = cifar_resnet_tv(18, maxpool=False)
    assert isinstance(with_pool.maxpool, nn.MaxPool2d)
    assert isinstance(build_model("resnet18", CIFAR, 10).maxpool, nn.MaxPool2d)
    assert isinstance(without_pool.maxpool, nn.Identity)
    assert num_params(with_pool) == num_params(without_pool)
    assert with_pool.conv1.kernel_size == (3, 3) and with_pool.conv1.stride == (1, 1)
    maps = {}
    for label, model in (("pool", with_pool), ("no pool", without_pool)):
        model.layer4.register_forward_hook(lambda module, args, out, label=label: maps.__setitem__(label, out.shape))
        model(x)
    assert maps == {"pool": (2, 512, 2, 2), "no pool": (2, 512, 4, 4)}


def test_cifar_efficientnet_reduces_the_stem_stride_only():
    cifar = build_model("efficientnet_b0", CIFAR, 10)
    imagenet = build_model("efficientnet_b0_imagenet", IMAGENET, 10)
    assert cifar.features[0][0].stride == (1, 1)
    assert imagenet.features[0][0].stride == (2, 2)
    assert shape_counts(cifar) == shape_counts(imagenet)
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        assert cifar.eval().features(x).shape == (2, 1280, 2, 2)
        assert imagenet.eval().features(x).shape == (2, 1280, 1, 1)


def test_densenet40_layout():
    model = densenet40()
    dense_layers = [m for m in model.modules() if type(m).__name__ == "_DenseLayer"]
    assert len(dense_layers) == 36
    assert all(layer.dropout.p == 0.2 and layer.conv.bias is not None for layer in dense_layers)
    assert [layer.conv.in_channels for layer in dense_layers[::12]] == [24, 168, 312]
    assert model.num_features == 456
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="3n\\+4"):
        DenseNet(depth=41)


def test_densenet40_initialisation_follows_tensorflow_defaults():
    torch.manual_seed(0)
    model = densenet40()
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
            bound = math.sqrt(6 / (fan_in + fan_out))  # Glorot uniform
            assert module.weight.abs().max().item() <= bound
            assert module.weight.abs().max().item() > 0.9 * bound
            if module.bias is not None:
                assert torch.all(module.bias == 0)
        elif isinstance(module, nn.BatchNorm2d):
            assert (module.momentum, module.eps) == (0.01, 1e-3)


def test_labpal_initialisations():
    torch.manual_seed(0)
    resnet = ResNet(18)
    conv = resnet.layer4[1].conv1  # fan_out 512 · 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.03)
    mobilenet = build_model("mobilenetv2", CIFAR, 10)
    linear = mobilenet.classifier[1]
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(linear.bias == 0)
    densenet = build_model("densenet121", CIFAR, 10)
    conv = densenet.features[-3].conv2  # last bottleneck layer's 3×3: fan_in 128 · 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)
    assert torch.all(densenet.classifier.bias == 0)
    for model in (resnet, mobilenet, densenet):
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


@pytest.mark.parametrize("name", ["densenet40", "mobilenetv2", "efficientnet_b0", "charrnn"])
def test_construction_is_deterministic_given_the_seed(name):
    shape, classes = ((5,), VOCAB) if name == "charrnn" else (CIFAR, 10)
    models = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        models.append(build_model(name, shape, classes))
    first, same, other = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models)
    assert torch.equal(first, same)
    assert not torch.equal(first, other)


def test_small_image_models_take_the_channel_count_of_the_input():
    for name in SMALL_IMAGE_KEYS:
        model = meta_build(name, (1, 28, 28), 10)
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == 1, name
    torch.manual_seed(0)
    assert build_model("densenet40", (1, 28, 28), 10)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["efficientnet_b0", *IMAGENET_KEYS])
def test_torchvision_based_models_reject_non_rgb_inputs(name):
    with pytest.raises(ValueError, match="3, H, W"):
        build_model(name, (1, 28, 28), 10)


def test_imagenet_resnet_rejects_unknown_depths():
    with pytest.raises(ValueError, match="depth"):
        imagenet_resnet(101)
    with pytest.raises(ValueError, match="depth"):
        ResNet(20)


def test_charrnn_maps_character_sequences_to_per_character_logits():
    torch.manual_seed(0)
    model = build_model("charrnn", (5,), VOCAB)
    assert isinstance(model, CharRNN)
    inputs = torch.randint(VOCAB, (2, 5))
    logits = model(inputs)
    assert logits.shape == (2, 5, VOCAB)
    targets = torch.randint(VOCAB, (2, 5))
    manual = torch.stack(
        [-torch.log_softmax(logits[n, t], dim=0)[targets[n, t]] for n in range(2) for t in range(5)]
    ).mean()
    assert SequenceCrossEntropy()(logits, targets).item() == pytest.approx(manual.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["densenet40", "mobilenetv2", "efficientnet_b0", "charrnn"])
def test_dropout_masks_are_fixed_within_a_step(name):
    """The calls of one seeded closure see one function; other seeds (and unseeded calls) draw other masks."""
    torch.manual_seed(0)
    if name == "charrnn":
        model = build_model(name, (5,), VOCAB)
        inputs, targets = torch.randint(VOCAB, (2, 5)), torch.randint(VOCAB, (2, 5))
    else:
        model = build_model(name, CIFAR, 10)
        inputs, targets = torch.randn(4, 3, 16, 16), torch.randint(10, (4,))
    model.train()
    factory = ClosureFactory(model, SequenceCrossEntropy() if name == "charrnn" else nn.CrossEntropyLoss())
    with torch.no_grad():
        closure = factory(inputs, targets, seed=11)
        first, second = closure(), closure()
        other_seed = factory(inputs, targets, seed=12)()
        unseeded = factory(inputs, targets)(), factory(inputs, targets)()
    assert torch.equal(first, second)
    assert first != other_seed
    assert unseeded[0] != unseeded[1]


def test_every_thesis_model_key_is_registered():
    assert set(PINNED_10_CLASSES) | {"charrnn"} <= set(MODELS)
