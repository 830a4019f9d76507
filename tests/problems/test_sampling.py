import io

import pytest
import torch
import torchvision.transforms.functional as TF

from lsbench.problems import BatchSampler
from lsbench.problems.transforms import Augmentation, Normalize, crop_and_flip

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def sampler(
    inputs: torch.Tensor, *, batch_size: int, seed: int, augmentation: Augmentation | None = None
) -> BatchSampler:
    """Targets are the sample indices, so a batch's targets show which samples it holds."""
    targets = torch.arange(inputs.shape[0], device=inputs.device)
    normalize = Normalize((0.0,) * inputs.shape[1], (1.0,) * inputs.shape[1], device=inputs.device)
    return BatchSampler(
        inputs, targets, batch_size=batch_size, seed=seed, normalize=normalize, augmentation=augmentation
    )


# ----------------------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(("top", "left"), [(0, 0), (4, 4), (1, 7), (8, 3)])
def test_crop_and_flip_then_normalize_equals_torchvision_pipeline(top, left, flip):
    data = images()
    index = torch.tensor([2])
    out = crop_and_flip(data, index, torch.tensor([top]), torch.tensor([left]), torch.tensor([flip]), pad=4)
    # torchvision: RandomCrop(32, padding=4) at this offset -> RandomHorizontalFlip -> ToTensor -> Normalize.
    expected = TF.crop(TF.pad(data[2], [4]), top, left, 32, 32)
    if flip:
        expected = TF.hflip(expected)
    assert torch.equal(out[0], expected)
    normalized = Normalize(MEAN, STD)(out)
    torch.testing.assert_close(normalized[0], TF.normalize(expected.float() / 255, list(MEAN), list(STD)))


def test_crop_offset_shifts_the_image_and_pads_with_zero_pixels():
    data = images(1)
    # top = pad keeps rows in place; left = pad + 1 moves the content one pixel to the left.
    shifted = crop_and_flip(data, torch.tensor([0]), torch.tensor([4]), torch.tensor([5]), torch.tensor([False]), 4)
    assert torch.equal(shifted[0, :, :, :31], data[0, :, :, 1:])
    assert torch.count_nonzero(shifted[0, :, :, 31]) == 0
    mirrored = crop_and_flip(data, torch.tensor([0]), torch.tensor([4]), torch.tensor([4]), torch.tensor([True]), 4)
    assert torch.equal(mirrored[0], data[0].flip(-1))


def test_padded_area_is_normalized_zero():
    data = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    corner = crop_and_flip(data, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), torch.tensor([False]), 4)
    normalized = Normalize(MEAN, STD)(corner)[0]
    zero = torch.tensor([-m / s for m, s in zip(MEAN, STD, strict=True)])
    for channel in range(3):
        assert torch.allclose(normalized[channel, :4, :], zero[channel].expand(4, 32))
        assert torch.allclose(normalized[channel, :, :4], zero[channel].expand(32, 4))
    inside = (200 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(normalized[:, 4:, 4:], inside[:, None, None].expand(3, 28, 28))


def test_normalize_leaves_float_raw_data_untouched():
    raw = torch.rand(4, 2)
    before = raw.clone()
    out = Normalize((0.5, 0.5), (0.25, 0.25))(raw)
    assert torch.equal(raw, before)
    torch.testing.assert_close(out, (before - 0.5) / 0.25)


@pytest.mark.parametrize("device", DEVICES)
def test_augmented_batches_are_float_on_the_data_device(device):
    data = images(20).to(device)
    batches = sampler(data, batch_size=8, seed=0, augmentation=Augmentation(pad=4))
    inputs, targets = batches.next_batch()
    assert inputs.shape == (8, 3, 32, 32)
    assert inputs.dtype == torch.float32
    assert targets.dtype == torch.int64
    assert inputs.device == targets.device == data.device


def test_augmentation_without_padding_or_flip_is_the_identity():
    data = images(10)
    inputs, targets = sampler(data, batch_size=5, seed=0, augmentation=Augmentation(pad=0, flip=False)).next_batch()
    assert torch.equal(inputs, data[targets].float() / 255)


def test_augmentation_is_reproducible_from_the_seed_and_varies_with_it():
    data = images(20)
    augmentation = Augmentation(pad=4)
    first = [sampler(data, batch_size=8, seed=5, augmentation=augmentation).next_batch() for _ in range(2)]
    assert torch.equal(first[0][0], first[1][0])
    other, _ = sampler(data, batch_size=8, seed=6, augmentation=augmentation).next_batch()
    assert not torch.equal(first[0][0], other)


# ------------------------------------------------------------------------------------------------ sampler


def test_each_epoch_visits_every_sample_at_most_once_and_drops_the_remainder():
    batches = sampler(torch.zeros(10, 1), batch_size=3, seed=0)
    assert batches.batches_per_epoch == 3
    for epoch in range(1, 5):
        seen = torch.cat([batches.next_batch()[1] for _ in range(batches.batches_per_epoch)])
        assert batches.epoch == epoch
        assert seen.unique().numel() == 9
    assert batches.epoch == 4


def test_all_samples_are_visited_when_the_batch_divides_the_dataset():
    batches = sampler(torch.zeros(12, 1), batch_size=4, seed=1)
    seen = torch.cat([batches.next_batch()[1] for _ in range(3)])
    assert sorted(seen.tolist()) == list(range(12))


def test_different_seeds_give_different_orders():
    first, second = (sampler(torch.zeros(50, 1), batch_size=10, seed=s).next_batch()[1] for s in (0, 1))
    assert not torch.equal(first, second)


def test_sampling_ignores_the_global_rng():
    data = images(20)
    quiet = sampler(data, batch_size=8, seed=3, augmentation=Augmentation(pad=4))
    noisy = sampler(data, batch_size=8, seed=3, augmentation=Augmentation(pad=4))
    for step in range(4):
        torch.manual_seed(step)
        torch.rand(7)
        a, b = quiet.next_batch(), noisy.next_batch()
        assert torch.equal(a[0], b[0])
        assert torch.equal(a[1], b[1])


@pytest.mark.parametrize("consumed", [0, 3, 6])
def test_restored_sampler_continues_with_bitwise_identical_batches(consumed):
    data = images(50)
    original = sampler(data, batch_size=8, seed=11, augmentation=Augmentation(pad=4))
    for _ in range(consumed):
        original.next_batch()
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    # A different seed proves that everything comes from the state, not from the constructor.
    restored = sampler(data, batch_size=8, seed=999, augmentation=Augmentation(pad=4))
    restored.load_state_dict(state)
    # 8 batches cross at least one epoch boundary (6 batches per epoch).
    for _ in range(8):
        expected, actual = original.next_batch(), restored.next_batch()
        assert torch.equal(expected[0], actual[0])
        assert torch.equal(expected[1], actual[1])
    assert restored.epoch == original.epoch


def test_state_of_another_dataset_size_is_rejected():
    state = sampler(torch.zeros(10, 1), batch_size=2, seed=0).state_dict()
    with pytest.raises(ValueError, match="num_samples"):
        sampler(torch.zeros(12, 1), batch_size=2, seed=0).load_state_dict(state)


def test_batch_larger_than_the_dataset_is_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        sampler(torch.zeros(10, 1), batch_size=11, seed=0)


# ------------------------------------------------------------------------------------- devices and resume


def test_sampler_state_holds_nothing_that_depends_on_the_device():
    """A CPU generator's state is 5,056 bytes, a CUDA one's 16, and neither loads into the other; the state holds
    only the CPU shuffling generator, integers and a CPU permutation."""
    batches = sampler(images(20), batch_size=8, seed=3, augmentation=Augmentation(pad=4))
    batches.next_batch()
    state = batches.state_dict()
    assert set(state) == {
        "num_samples",
        "batch_size",
        "epoch",
        "position",
        "permutation",
        "shuffle_rng",
        "augment_seed",
    }
    assert state["shuffle_rng"].device.type == "cpu" and state["shuffle_rng"].numel() == 5056
    assert state["permutation"].device.type == "cpu"
    assert isinstance(state["augment_seed"], int)


def test_augmentation_is_a_function_of_the_batch_key_alone():
    augmentation = Augmentation(pad=4)
    draws = augmentation.draw((123, 2, 16), 64)
    assert draws.shape == (3, 64) and draws.dtype.name == "int64"
    assert (draws[:2] >= 0).all() and (draws[:2] <= 8).all() and set(draws[2].tolist()) == {0, 1}
    assert (augmentation.draw((123, 2, 16), 64) == draws).all()
    assert not (augmentation.draw((123, 2, 24), 64) == draws).all()
    data, indices = images(70), torch.arange(64)
    first = augmentation(data, indices, (123, 2, 16))
    expected = crop_and_flip(
        data, indices, *(torch.from_numpy(row) for row in draws[:2]), torch.from_numpy(draws[2]) > 0, 4
    )
    assert torch.equal(first, expected)


def _legacy_state(batches: BatchSampler) -> dict:
    """A state as lsbench wrote it before augmentation was keyed, by a sampler whose data was on a GPU."""
    state = batches.state_dict()
    del state["augment_seed"]
    state["augment_rng"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    return state


def test_a_legacy_state_of_an_augmented_sampler_is_refused_with_one_line():
    batches = sampler(images(20), batch_size=8, seed=3, augmentation=Augmentation(pad=4))
    batches.next_batch()
    with pytest.raises(ValueError, match=r"earlier lsbench.*delete the run's checkpoints") as error:
        sampler(images(20), batch_size=8, seed=3, augmentation=Augmentation(pad=4)).load_state_dict(
            _legacy_state(batches)
        )
    assert "\n" not in str(error.value)


def test_a_legacy_state_of_a_sampler_without_augmentation_resumes():
    original = sampler(images(20), batch_size=8, seed=3)
    original.next_batch()
    restored = sampler(images(20), batch_size=8, seed=3)
    restored.load_state_dict(_legacy_state(original))
    for _ in range(4):
        assert torch.equal(original.next_batch()[0], restored.next_batch()[0])
