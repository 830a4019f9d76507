"""Readers, splits and samplers of the thesis datasets (SVHN, MNIST, Tolstoi, ImageNet image folders), each
tested on tiny files the test writes in the real on-disk format, plus the streaming sampler and the
evaluation of streamed and sequence splits."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.io import savemat
from torch.utils.data import Dataset

from lsbench.problems import DataSplit, evaluate
from lsbench.problems.datasets import (
    channel_stats,
    load_dataset,
    mnist_split,
    read_idx,
    read_mnist,
    read_svhn,
    svhn_split,
)
from lsbench.problems.evaluation import SequenceCrossEntropy
from lsbench.problems.imagefolder import IMAGENET_MEAN, IMAGENET_STD, load_image_folder
from lsbench.problems.sampling import StreamedSplit, StreamingSampler, derive_seed
from lsbench.problems.text import encode_text, load_tolstoi, make_sequences, read_tolstoi
from lsbench.problems.transforms import center_crop_box, random_resized_crop_box, resize_shorter_side

# ------------------------------------------------------------------------------------------------ writers


def write_svhn(root: Path, num_train: int = 40, num_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """torchvision's SVHN files: ``X`` uint8 (32, 32, 3, N), ``y`` uint8 (N, 1) with 10 for the digit 0."""
    rng = np.random.default_rng(seed)
    folder = root / "svhn"
    folder.mkdir(parents=True)
    written = {}
    for part, count in (("train", num_train), ("test", num_test)):
        pixels = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
        labels = rng.integers(1, 11, size=(count, 1)).astype(np.uint8)
        labels[0, 0] = 10
        savemat(folder / f"{part}_32x32.mat", {"X": pixels, "y": labels})
        written[f"{part}_X"], written[f"{part}_y"] = pixels, labels
    return written


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def write_mnist(
    root: Path, num_train: int = 12, num_test: int = 4, folder: str = "mnist", seed: int = 0
) -> dict[str, np.ndarray]:
    """The four idx files; the training files gzipped, the test files plain (both occur in the wild)."""
    rng = np.random.default_rng(seed)
    directory = root / folder
    directory.mkdir(parents=True)
    written = {}
    for part, count, suffix in (("train", num_train, ".gz"), ("t10k", num_test, "")):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        write_idx(directory / f"{part}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{part}-labels-idx1-ubyte{suffix}", labels)
        written[f"{part}_images"], written[f"{part}_labels"] = images, labels
    return written


TOLSTOI_TEXT = (
    "Well, Prince, so Genoa and Lucca are now just family estates of the Buonapartes. But I warn you, if you "
    "don't tell me that this means war, if you still try to defend the infamies and horrors perpetrated by "
    "that Antichrist--I really believe he is Antichrist--I will have nothing more to do with you.\n"
) * 6


def write_tolstoi(root: Path, text: str = TOLSTOI_TEXT) -> None:
    (root / "tolstoi").mkdir(parents=True)
    (root / "tolstoi" / "war_and_peace.txt").write_text(text, encoding="utf-8")


IMAGE_CLASSES = ("n01440764", "n01443537", "n01484850")


def write_image_folder(root: Path, per_class: int = 4, val_per_class: int = 1, seed: int = 0) -> Path:
    """``root/imagenet/{train,val}/<wnid>/`` with small PNG and JPEG images of varying size."""
    rng = np.random.default_rng(seed)
    folder = root / "imagenet"
    for part, count in (("train", per_class), ("val", val_per_class)):
        for label, wnid in enumerate(IMAGE_CLASSES):
            (folder / part / wnid).mkdir(parents=True)
            for index in range(count):
                height, width = (20 + 3 * index, 28) if index % 2 else (26, 18 + 2 * label)
                pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                extension = "JPEG" if (index + label) % 3 == 0 else "png"
                image = Image.fromarray(pixels)
                image.save(folder / part / wnid / f"{wnid}_{index}.{extension}")
        (folder / part / IMAGE_CLASSES[0] / "notes.txt").write_text("not an image")
    return folder


# ---------------------------------------------------------------------------------------------------- SVHN


def test_read_svhn_maps_the_mat_layout_to_chw_and_label_10_to_digit_0(tmp_path):
    written = write_svhn(tmp_path)
    train_images, train_labels, test_images, test_labels = read_svhn(tmp_path)
    assert train_images.shape == (40, 3, 32, 32) and test_images.shape == (10, 3, 32, 32)
    assert train_images.dtype == torch.uint8 and train_labels.dtype == torch.int64
    # X[h, w, c, n] is pixel (h, w) of channel c of image n.
    assert torch.equal(train_images, torch.from_numpy(written["train_X"]).permute(3, 2, 0, 1))
    assert torch.equal(test_images[7, 1], torch.from_numpy(written["test_X"][:, :, 1, 7]))
    assert train_labels.tolist() == [label % 10 for label in written["train_y"][:, 0].tolist()]
    assert train_labels[0] == 0 and test_labels.tolist() == [y % 10 for y in written["test_y"][:, 0].tolist()]


def test_svhn_splits_follow_the_thesis_and_the_labpal_harness():
    train, validation = svhn_split(73_257, "default")
    assert (len(train), len(validation)) == (45_000, 20_000)  # thesis C.4
    labpal_train, labpal_validation = svhn_split(73_257, "labpal")
    assert (len(labpal_train), len(labpal_validation)) == (65_000, 8_257)  # LABPAL: 65,000 train
    for first, second in ((train, validation), (labpal_train, labpal_validation)):
        assert not set(first.tolist()) & set(second.tolist())
    # One permutation (seed 42): the LABPAL training set is the default training plus validation set.
    assert set(labpal_train.tolist()) == set(train.tolist()) | set(validation.tolist())
    assert torch.equal(svhn_split(73_257, "default")[0], train)


@pytest.mark.parametrize(("split", "sizes"), [("default", (24, 10)), ("labpal", (35, 5))])
def test_svhn_dataset_splits_normalizes_by_its_training_images_and_crops_with_padding_4(tmp_path, split, sizes):
    write_svhn(tmp_path)
    data = load_dataset("svhn", data_dir=tmp_path, split=split)
    assert (data.train_targets.shape[0], data.validation_targets.shape[0], data.test_targets.shape[0]) == (*sizes, 10)
    images, _, _, _ = read_svhn(tmp_path)
    train, validation = svhn_split(40, split)
    assert torch.equal(data.train_inputs, images[train]) and torch.equal(data.validation_inputs, images[validation])
    pixels = data.train_inputs.double() / 255
    assert data.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert data.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)
    assert data.augmentation is not None and (data.augmentation.pad, data.augmentation.flip) == (4, True)


def test_channel_stats_are_exact_for_any_chunking():
    images = torch.randint(0, 256, (7, 2, 3, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(images, chunk=3)
    pixels = images.double() / 255
    assert mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)


def test_missing_svhn_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SVHN not found: no .*svhn/train_32x32\.mat.*data_dir"):
        load_dataset("svhn", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("folder", ["mnist", "MNIST/raw"])
def test_read_mnist_reads_plain_and_gzipped_idx_files(tmp_path, folder):
    written = write_mnist(tmp_path, folder=folder)
    train_images, train_labels, test_images, test_labels = read_mnist(tmp_path)
    assert train_images.shape == (12, 1, 28, 28) and test_images.shape == (4, 1, 28, 28)
    assert torch.equal(train_images[:, 0], torch.from_numpy(written["train_images"]))
    assert torch.equal(test_images[:, 0], torch.from_numpy(written["t10k_images"]))
    assert train_labels.dtype == torch.int64
    assert train_labels.tolist() == written["train_labels"].tolist()
    assert test_labels.tolist() == written["t10k_labels"].tolist()


def test_idx_reader_rejects_bad_magic_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x01\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((3, 2), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        read_idx(tmp_path / "short")


def test_mnist_split_is_deepobs_50k_10k_and_the_data_is_scaled_not_augmented(tmp_path):
    train, validation = mnist_split(60_000)
    assert (len(train), len(validation)) == (50_000, 10_000)
    assert not set(train.tolist()) & set(validation.tolist())
    assert torch.equal(mnist_split(60_000)[1], validation)
    write_mnist(tmp_path)
    data = load_dataset("mnist", data_dir=tmp_path)
    assert (data.train_targets.shape[0], data.validation_targets.shape[0], data.test_targets.shape[0]) == (10, 2, 4)
    assert (data.mean, data.std, data.augmentation) == ((0.0,), (1.0,), None)
    images, labels, _, _ = read_mnist(tmp_path)
    train, validation = mnist_split(12)
    assert torch.equal(data.validation_inputs, images[validation]) and torch.equal(data.train_targets, labels[train])


def test_missing_mnist_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST not found: no .*mnist/train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


# ------------------------------------------------------------------------------------------------- Tolstoi


def test_tolstoi_vocabulary_is_the_sorted_characters_and_the_parts_are_contiguous(tmp_path):
    write_tolstoi(tmp_path)
    train_part, test_part, size, vocabulary = read_tolstoi(tmp_path)
    assert vocabulary == tuple(sorted(set(TOLSTOI_TEXT))) and size == len(vocabulary)
    decoded = "".join(vocabulary[i] for i in torch.cat([train_part, test_part]).tolist())
    assert decoded == TOLSTOI_TEXT
    assert test_part.shape[0] == len(TOLSTOI_TEXT) // 5  # DeepOBS: 80 % train, 20 % test
    ids, same_vocabulary = encode_text("bca")
    assert same_vocabulary == ("a", "b", "c") and ids.tolist() == [1, 2, 0]


def test_sequences_are_consecutive_windows_with_targets_shifted_by_one():
    inputs, targets = make_sequences(torch.arange(23), length=5)
    assert inputs.tolist() == [list(range(s, s + 5)) for s in (0, 5, 10, 15)]  # (23 - 1) // 5 = 4 windows
    assert torch.equal(targets, inputs + 1)
    with pytest.raises(ValueError, match="too few"):
        make_sequences(torch.arange(5), length=5)


def test_tolstoi_dataset_holds_out_the_end_of_train_for_validation(tmp_path):
    write_tolstoi(tmp_path)
    data = load_tolstoi(tmp_path, "default", False)
    train_part, test_part, size, _ = read_tolstoi(tmp_path)
    held_out = train_part.shape[0] // 8
    assert data.task == "next_token" and data.num_classes == size and data.augmentation is None
    assert data.train_inputs.shape[1] == data.train_targets.shape[1] == 50
    assert data.train_inputs.dtype == torch.int64
    # Contiguous parts in text order: training, then validation (the last eighth of the 80 %), then test.
    assert torch.equal(data.train_inputs[0], train_part[:50])
    assert torch.equal(data.validation_inputs[0], train_part[-held_out:][:50])
    assert torch.equal(data.test_targets[0], test_part[1:51])
    assert data.train_inputs.shape[0] == (train_part.shape[0] - held_out - 1) // 50


def test_tolstoi_reads_deepobs_npy_files_the_same_way(tmp_path):
    write_tolstoi(tmp_path / "text")
    train_part, test_part, size, _ = read_tolstoi(tmp_path / "text")
    (tmp_path / "npy" / "tolstoi").mkdir(parents=True)
    np.save(tmp_path / "npy" / "tolstoi" / "train.npy", train_part.numpy().astype(np.int32))
    np.save(tmp_path / "npy" / "tolstoi" / "test.npy", test_part.numpy().astype(np.int32))
    from_text = load_tolstoi(tmp_path / "text", "default", False)
    from_npy = load_tolstoi(tmp_path / "npy", "default", False)
    assert from_npy.num_classes == size
    for field in ("train_inputs", "validation_targets", "test_inputs"):
        assert torch.equal(getattr(from_npy, field), getattr(from_text, field))
    with pytest.raises(FileNotFoundError, match=r"Tolstoi .*war_and_peace\.txt"):
        load_dataset("tolstoi", data_dir=tmp_path)


class _NextIsSame(torch.nn.Module):
    """Predicts that every character repeats: logits ``(N, T, V)`` peaked at the input character."""

    def __init__(self, vocabulary: int) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids, self.vocabulary).float() * 3.0


def test_sequence_cross_entropy_and_evaluate_count_every_character(tmp_path):
    write_tolstoi(tmp_path)
    data = load_tolstoi(tmp_path, "default", False)
    model = _NextIsSame(data.num_classes)
    inputs, targets = data.validation_inputs, data.validation_targets
    logits = model(inputs)
    loss = SequenceCrossEntropy()(logits, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.permute(0, 2, 1), targets).item(), rel=1e-6)
    split = DataSplit(inputs, targets)
    mean_loss, accuracy = evaluate(model, SequenceCrossEntropy(), split, batch_size=2)  # uneven chunks
    assert mean_loss == pytest.approx(loss.item(), rel=1e-6)
    assert accuracy == pytest.approx((inputs == targets).double().mean().item())
    with pytest.raises(ValueError, match="do not match"):
        SequenceCrossEntropy()(logits[:, :-1], targets)


# ------------------------------------------------------------------------------------------ image folders


def test_image_folder_classes_split_and_test_set(tmp_path):
    folder = write_image_folder(tmp_path)
    data = load_image_folder(folder, "default", num_workers=0)
    assert data.classes == IMAGE_CLASSES and data.num_classes == 3
    # Default: per class min(10, half of the class) held out for validation; val/ is the test set.
    assert (data.train_size, len(data.validation_paths), len(data.test_paths)) == (6, 6, 3)
    assert np.bincount(data.validation_labels).tolist() == [2, 2, 2]
    assert not set(data.train_paths.tolist()) & set(data.validation_paths.tolist())
    assert data.test_labels.tolist() == [0, 1, 2]
    again = load_image_folder(folder, "default", num_workers=0)
    assert np.array_equal(again.validation_paths, data.validation_paths)
    labpal = load_image_folder(folder, "labpal", num_workers=0)  # random_split, 1,080,000 of 1,281,167
    assert (labpal.train_size, len(labpal.validation_paths)) == (12 * 1_080_000 // 1_281_167, 2)
    assert (data.lighting_std, labpal.lighting_std) == (0.1, 0.0)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ImageNet not found: no .*imagenet/train"):
        load_dataset("imagenet", data_dir=tmp_path)
    folder = write_image_folder(tmp_path)
    (folder / "val" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="n99999999"):
        load_image_folder(folder, "default", num_workers=0)


def test_evaluation_images_are_resized_center_cropped_and_normalized(tmp_path):
    folder = write_image_folder(tmp_path)
    data = load_image_folder(folder, "default", crop_size=16, resize_size=18, num_workers=0)
    split = data.evaluation_split("test", device=torch.device("cpu"))
    inputs, targets = next(split.batches(3))
    assert inputs.shape == (3, 3, 16, 16) and targets.tolist() == [0, 1, 2]
    with Image.open(data.test_paths[1].decode()) as image:
        size = resize_shorter_side(image.width, image.height, 18)
        expected = np.asarray(
            image.convert("RGB").resize(size, Image.Resampling.BILINEAR).crop(center_crop_box(*size, 16))
        )
    pixels = torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255
    normalized = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(inputs[1], normalized, atol=1e-6)  # (torch.testing.assert_close costs 2 s to import)


def test_training_images_are_reproducible_and_lighting_is_a_per_image_colour_shift(tmp_path):
    folder = write_image_folder(tmp_path)
    default = load_image_folder(folder, "default", crop_size=16, num_workers=0)
    # Same files and crops without lighting: the labpal-augmented twin of the default training set.
    plain = load_image_folder(folder, "default", crop_size=16, num_workers=0)
    plain.lighting_std = 0.0
    cpu = torch.device("cpu")
    first = default.train_sampler(batch_size=4, seed=3, device=cpu).next_batch()
    again = default.train_sampler(batch_size=4, seed=3, device=cpu).next_batch()
    unlit = plain.train_sampler(batch_size=4, seed=3, device=cpu).next_batch()
    assert first[0].shape == (4, 3, 16, 16) and first[0].dtype == torch.float32
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1]) and torch.equal(first[1], unlit[1])
    shift = first[0] - unlit[0]  # lighting / std: constant over the pixels of each image and channel
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-5)
    assert shift.abs().amax() > 0
    other = default.train_sampler(batch_size=4, seed=4, device=cpu).next_batch()
    assert not torch.equal(other[0], first[0])


def test_random_resized_crop_box_fits_and_falls_back_to_a_centre_crop():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, width, height = random_resized_crop_box(40, 30, rng)
        assert left >= 0 and left + width <= 40 and top >= 0 and top + height <= 30 and width > 0 and height > 0
    # An area fraction above 1 never fits: the fallback is the centred crop of the allowed aspect ratio.
    assert random_resized_crop_box(100, 10, rng, scale=(2.0, 2.0)) == (43, 0, 13, 10)
    assert random_resized_crop_box(20, 20, rng, scale=(2.0, 2.0)) == (0, 0, 20, 20)


# -------------------------------------------------------------------------------------- streaming sampler


class _Keys(Dataset):
    """Sample ``i`` under key ``(i, sample_seed)`` is ``[i, sample_seed]``, so batches show what was loaded."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        index, sample_seed = key
        return torch.tensor([index, sample_seed]), index


def _stream(size: int = 10, batch_size: int = 3, seed: int = 0, workers: int = 0) -> StreamingSampler:
    return StreamingSampler(
        _Keys(size), batch_size=batch_size, seed=seed, finish=lambda batch: (batch[0], batch[1]), num_workers=workers
    )


def test_streaming_epoch_visits_every_sample_once_with_per_epoch_seeds():
    sampler = _stream()
    assert (sampler.batches_per_epoch, sampler.num_samples) == (3, 10)
    epoch = [sampler.next_batch() for _ in range(3)]
    indices = torch.cat([targets for _, targets in epoch]).tolist()
    assert len(set(indices)) == 9 and sampler.epoch == 1  # drop_last: one sample is left out
    assert indices == sampler.permutation(1)[:9].tolist()
    seeds = torch.cat([keys[:, 1] for keys, _ in epoch]).tolist()
    assert seeds == [derive_seed(0, f"augment/1/{i}") for i in indices]
    sampler.next_batch()
    assert sampler.epoch == 2
    assert not torch.equal(sampler.permutation(2), sampler.permutation(1))


@pytest.mark.parametrize("consumed", [0, 2, 3, 5])
def test_restored_streaming_sampler_continues_with_the_same_batches(consumed):
    sampler = _stream()
    for _ in range(consumed):
        sampler.next_batch()
    state = sampler.state_dict()
    expected = [sampler.next_batch()[0] for _ in range(4)]
    restored = _stream()
    restored.load_state_dict(state)
    assert all(torch.equal(restored.next_batch()[0], keys) for keys in expected)
    with pytest.raises(ValueError, match="batch_size"):
        _stream(batch_size=2).load_state_dict(state)


def test_worker_processes_load_the_same_batches():
    in_process, workers = _stream(seed=5), _stream(seed=5, workers=2)
    for _ in range(4):  # crosses an epoch boundary
        assert torch.equal(in_process.next_batch()[0], workers.next_batch()[0])


def test_evaluate_on_a_streamed_split_equals_the_split_held_in_memory(tmp_path):
    folder = write_image_folder(tmp_path)
    data = load_image_folder(folder, "default", crop_size=8, resize_size=10, num_workers=0)
    streamed = data.evaluation_split("validation", device=torch.device("cpu"))
    assert isinstance(streamed, StreamedSplit) and len(streamed) == 6
    inputs, targets = (torch.cat(parts) for parts in zip(*streamed.batches(4), strict=True))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    loss_fn = torch.nn.CrossEntropyLoss()
    assert evaluate(model, loss_fn, streamed, batch_size=4) == pytest.approx(
        evaluate(model, loss_fn, DataSplit(inputs, targets))
    )
    assert evaluate(model, loss_fn, streamed) == pytest.approx(evaluate(model, loss_fn, streamed, batch_size=1))
