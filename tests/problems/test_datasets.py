import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from lsbench.problems import build_problem
from lsbench.problems.datasets import (
    cifar10small_indices,
    cifar_split,
    load_dataset,
    make_cifar_shaped,
    make_synthetic,
    partition,
    read_cifar,
)

PER_BATCH = 20  # 5 training batches -> a tiny "official training set" of 100 images


def write_cifar(root: Path, name: str, *, str_keys: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny CIFAR folder in the official pickle format and return what it holds.

    The official files were pickled by Python 2, so their keys load as bytes; ``str_keys`` writes Python 3
    style keys instead.
    """
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)

    def key(text: str) -> str | bytes:
        return text if str_keys else text.encode()

    def dump(file: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        rows = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=count)
        batch = {key("batch_label"): b"fake", key("data"): rows, key(label_key): labels.tolist()}
        if name == "cifar100":
            batch[key("coarse_labels")] = (labels // 5).tolist()
        with (folder / file).open("wb") as handle:
            pickle.dump(batch, handle)
        return rows, labels

    if name == "cifar10":
        parts = [dump(f"data_batch_{i}", PER_BATCH) for i in range(1, 6)]
        test = dump("test_batch", PER_BATCH)
        meta = {key("label_names"): [f"class{i}".encode() for i in range(10)]}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    else:
        parts = [dump("train", 5 * PER_BATCH)]
        test = dump("test", PER_BATCH)
        meta = {key("fine_label_names"): [f"class{i}".encode() for i in range(100)]}
        (folder / "meta").write_bytes(pickle.dumps(meta))
    return {
        "train_rows": np.concatenate([rows for rows, _ in parts]),
        "train_labels": np.concatenate([labels for _, labels in parts]),
        "test_rows": test[0],
        "test_labels": test[1],
    }


# --------------------------------------------------------------------------------------------- CIFAR files


@pytest.mark.parametrize("str_keys", [False, True])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_read_cifar_returns_the_files_pixels_and_labels_in_chw_order(tmp_path, name, str_keys):
    written = write_cifar(tmp_path, name, str_keys=str_keys)
    train_images, train_labels, test_images, test_labels = read_cifar(name, tmp_path)
    assert train_images.shape == (100, 3, 32, 32)
    assert test_images.shape == (20, 3, 32, 32)
    assert train_images.dtype == test_images.dtype == torch.uint8
    assert train_labels.dtype == test_labels.dtype == torch.int64
    assert train_labels.tolist() == written["train_labels"].tolist()
    assert test_labels.tolist() == written["test_labels"].tolist()
    # A row is the red 32x32 plane, then green, then blue, each row-major.
    rows = written["train_rows"]
    for image, channel, y, x in [(0, 0, 0, 0), (7, 1, 3, 30), (99, 2, 31, 31), (42, 2, 16, 5)]:
        assert train_images[image, channel, y, x].item() == rows[image, channel * 1024 + y * 32 + x]
    assert np.array_equal(train_images.numpy().reshape(100, -1), rows)
    assert np.array_equal(test_images.numpy().reshape(20, -1), written["test_rows"])


def test_missing_cifar_folder_names_the_place_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        read_cifar("cifar10", tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "download=True" in message
    assert "\n" not in message


def test_missing_cifar_folder_fails_the_same_way_through_build_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        build_problem("cifar100_resnet20", seed=1, data_dir=tmp_path)


def test_data_dir_defaults_to_the_lsbench_data_variable(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar10")
    monkeypatch.setenv("LSBENCH_DATA", str(tmp_path))
    assert load_dataset("cifar10").test_targets.shape == (20,)


# ------------------------------------------------------------------------------------------------- splits


def test_default_cifar_split_is_first_45k_train_last_5k_validation():
    train, validation = cifar_split(50_000, "default")
    assert torch.equal(train, torch.arange(45_000))
    assert torch.equal(validation, torch.arange(45_000, 50_000))


def test_labpal_cifar_split_is_random_split_with_seed_42():
    train, validation = cifar_split(50_000, "labpal")
    assert (train.numel(), validation.numel()) == (40_000, 10_000)
    assert torch.cat([train, validation]).unique().numel() == 50_000
    reference = torch.utils.data.random_split(range(50_000), [40_000, 10_000], torch.Generator().manual_seed(42))
    assert train.tolist() == reference[0].indices
    assert validation.tolist() == reference[1].indices
    again = cifar_split(50_000, "labpal")
    assert torch.equal(train, again[0])


def test_unknown_split_is_rejected_with_the_available_ones():
    with pytest.raises(ValueError, match="default, labpal"):
        cifar_split(100, "random")
    with pytest.raises(ValueError, match="available: default"):
        load_dataset("digits", split="labpal")


def test_partition_gives_disjoint_sets_of_the_requested_sizes():
    parts = partition(20, [5, 3, 7], seed=1)
    assert [p.numel() for p in parts] == [5, 3, 7]
    assert torch.cat(parts).unique().numel() == 15
    assert all(torch.equal(p, q) for p, q in zip(parts, partition(20, [5, 3, 7], seed=1), strict=True))
    assert [p.tolist() for p in partition(6, [2, 3], seed=None)] == [[0, 1], [2, 3, 4]]
    with pytest.raises(ValueError):
        partition(10, [6, 5], seed=None)


def test_cifar10small_is_a_fixed_4000_image_subset_of_the_default_training_split():
    subset = cifar10small_indices(50_000)
    assert subset.numel() == 4_000
    assert subset.unique().numel() == 4_000
    assert subset.max().item() < 45_000
    assert torch.equal(subset, cifar10small_indices(50_000))


@pytest.mark.parametrize(("split", "train_size", "pad"), [("default", 90, 4), ("labpal", 80, 4)])
def test_cifar10_dataset_applies_the_split_to_the_file_contents(tmp_path, split, train_size, pad):
    written = write_cifar(tmp_path, "cifar10")
    data = load_dataset("cifar10", data_dir=tmp_path, split=split)
    train, validation = cifar_split(100, split)
    assert data.train_targets.numel() == train_size
    assert data.validation_targets.numel() == 100 - train_size
    rows = torch.from_numpy(written["train_rows"]).view(-1, 3, 32, 32)
    assert torch.equal(data.train_inputs, rows[train])
    assert torch.equal(data.validation_inputs, rows[validation])
    assert data.test_targets.tolist() == written["test_labels"].tolist()
    assert data.augmentation is not None
    assert data.augmentation.pad == pad
    assert data.mean == (0.4914, 0.4822, 0.4465)
    assert data.std == (0.2470, 0.2435, 0.2616)


@pytest.mark.parametrize(("split", "pad"), [("default", 4), ("labpal", 8)])
def test_cifar100_uses_its_own_statistics_and_pads_8_in_the_labpal_split(tmp_path, split, pad):
    write_cifar(tmp_path, "cifar100")
    data = load_dataset("cifar100", data_dir=tmp_path, split=split)
    assert data.num_classes == 100
    assert data.augmentation is not None
    assert data.augmentation.pad == pad
    assert data.mean == (0.5071, 0.4867, 0.4408)
    assert data.std == (0.2675, 0.2565, 0.2761)


def test_cifar10small_keeps_cifar10_validation_and_test(tmp_path):
    write_cifar(tmp_path, "cifar10")
    full = load_dataset("cifar10", data_dir=tmp_path)
    small = load_dataset("cifar10small", data_dir=tmp_path)
    keep = cifar10small_indices(100)
    assert small.train_targets.numel() == 8  # 8 % of 100
    assert torch.equal(small.train_inputs, full.train_inputs[keep])
    assert torch.equal(small.validation_inputs, full.validation_inputs)
    assert torch.equal(small.test_inputs, full.test_inputs)


def test_cifar_problem_builds_and_takes_a_training_step(tmp_path):
    write_cifar(tmp_path, "cifar10")
    problem = build_problem("cifar10_resnet20", seed=1, data_dir=tmp_path, batch_size=4)
    assert problem.train_size == 90
    assert problem.num_classes == 10
    assert problem.validation.inputs.shape == (10, 3, 32, 32)
    assert len(problem.test) == 20
    inputs, targets = problem.train.next_batch()
    loss = problem.loss_fn(problem.model(inputs), targets)
    loss.backward()
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------------------- small datasets


def test_digits_split_is_a_fixed_1197_300_300_partition_of_sklearn_digits():
    data = load_dataset("digits")
    parts = [data.train_inputs, data.validation_inputs, data.test_inputs]
    assert [p.shape for p in parts] == [(1197, 1, 8, 8), (300, 1, 8, 8), (300, 1, 8, 8)]
    # Together the three splits hold every digit exactly once.
    ours = Counter(tuple(row) for row in (torch.cat(parts).flatten(1) * 16).round().int().tolist())
    theirs = Counter(tuple(row) for row in load_digits().data.astype(int).tolist())
    assert ours == theirs
    labels = torch.cat([data.train_targets, data.validation_targets, data.test_targets])
    assert torch.bincount(labels).tolist() == np.bincount(load_digits().target).tolist()


def test_digits_split_does_not_depend_on_the_seed():
    first, second = build_problem("digits_mlp", seed=1), build_problem("digits_mlp", seed=2)
    assert torch.equal(first.validation.inputs, second.validation.inputs)
    assert torch.equal(first.test.targets, second.test.targets)
    assert first.train_size == second.train_size == 1197


def test_digits_inputs_are_standardized_by_the_training_split():
    problem = build_problem("digits_cnn", seed=1, batch_size=1197)
    inputs, _ = problem.train.next_batch()  # one batch = the whole training split
    assert inputs.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert inputs.std().item() == pytest.approx(1.0, abs=1e-5)


def test_synthetic_datasets_are_deterministic_and_shaped_as_documented():
    data = make_synthetic()
    assert data.train_inputs.shape == (1024, 1, 8, 8)
    assert (data.validation_targets.numel(), data.test_targets.numel()) == (256, 256)
    assert data.train_targets.unique().numel() == 10
    assert torch.equal(make_synthetic().train_inputs, data.train_inputs)
    custom = make_synthetic(sample_shape=(5,), num_classes=3, sizes=(30, 10, 10))
    assert custom.train_inputs.shape == (30, 5)
    assert custom.train_targets.max().item() <= 2

    shaped = make_cifar_shaped()
    assert shaped.train_inputs.shape == (2048, 3, 32, 32)
    assert shaped.train_inputs.dtype == torch.uint8
    assert shaped.augmentation is not None
    assert shaped.augmentation.pad == 4
