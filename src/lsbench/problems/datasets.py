"""Datasets of the benchmark problems, as raw tensors plus the recipe to turn them into network inputs.

Loaders return a :class:`RawDataset` on the CPU: inputs in raw pixel space (``uint8`` images, or floats for
data that has no natural byte form, or int64 token ids), the train/validation/test split already applied, and
the per-channel normalization and training augmentation to apply on the device. Keeping the data raw lets the
training augmentation pad with zeros in pixel space before normalizing, as the reference torchvision pipelines
do. ImageNet is too large for that; its loader returns a :class:`StreamedDataset` instead
(:mod:`lsbench.problems.imagefolder`), whose samples workers read from disk.

Every loader reads the standard on-disk format from ``data_dir`` (default ``$LSBENCH_DATA`` or
``~/.lsbench/data``) and raises ``FileNotFoundError`` naming the folder it looked for when the data is missing.

Splits follow the thesis experiments (``reference/algorithms.md`` §10, thesis App. A.2.3 and C.4):

* CIFAR-10/100, ``split="default"`` (PAL chapter): the first 90 % of the official CIFAR training set (45,000
  images) train, the last 10 % (5,000) validate, not shuffled. ``split="labpal"`` (LABPAL harness): a random
  80 %/20 % split (40,000/10,000) with ``random_split``'s indices for a generator seeded 42; CIFAR-100 is
  augmented with padding 8 instead of 4 there. Unlike that harness, validation data is not augmented here.
  CIFAR-100 is normalized with its own statistics in both (the PAL TensorFlow code used CIFAR-10's).
* SVHN (``svhn/train_32x32.mat``, ``test_32x32.mat``; the ``extra`` set is not used): ``"default"`` follows
  thesis C.4, "20,000/45,000" validation/training images, as the first 45,000 and the next 20,000 indices of
  ``random_split``'s permutation for seed 42 (the remaining 8,257 training images are unused);
  ``"labpal"`` follows the LABPAL harness, ``random_split`` seed 42 into 65,000 training images and the
  remaining 8,257 for validation. Both: crop with padding 4 + horizontal flip (C.4 and the harness), and
  per-channel mean/std computed over the split's training images (C.4: "determined over the dataset").
* MNIST (idx files, optionally gzipped): 50,000/10,000 as DeepOBS (its PyTorch data sets hold out
  ``train_eval_size`` = 10,000 training images for validation), by ``random_split``'s permutation for seed 42;
  pixels scaled to [0, 1] without standardization and no augmentation, as DeepOBS' ``ToTensor()``.
* Tolstoi's War and Peace (:mod:`lsbench.problems.text`) and ImageNet (:mod:`lsbench.problems.imagefolder`)
  document their splits in their modules.
* ``matfac``, the synthetic matrix factorization data of Vaswani et al. (2019, §7.2), is generated from a fixed
  seed (:func:`make_matrix_factorization`): 1,000 training samples, 250 for validation and 250 for testing, drawn
  in that order from one stream.

The test split is always the official test set (ImageNet: the official validation set). Splits are
fractions of the official training set size rather than fixed counts, so that a tiny folder in the same
format (as the tests write) is split by the same rules; for the official sizes they give the counts above.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from lsbench.problems import sources
from lsbench.problems.transforms import Augmentation
from lsbench.runs.spec import SPLITS

__all__ = [
    "DATASETS",
    "SPLITS",
    "RawDataset",
    "StreamedDataset",
    "channel_stats",
    "cifar10small_indices",
    "cifar_split",
    "default_data_dir",
    "load_dataset",
    "make_cifar_shaped",
    "make_matrix_factorization",
    "make_synthetic",
    "matrix_factorization_target",
    "missing_data_error",
    "mnist_split",
    "partition",
    "read_cifar",
    "read_idx",
    "read_mnist",
    "read_svhn",
    "svhn_split",
]

# SPLITS (lsbench.runs.spec) are the split rules a run may name; not every dataset offers every rule: which ones
# each offers is declared once, in lsbench.problems.sources.SOURCES (the login node checks grids against it).

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

DIGITS_SPLIT_SIZES = (1197, 300, 300)
"""Train/validation/test sizes of scikit-learn's 1,797 digits."""

Task = Literal["classification", "next_token", "regression"]


@dataclass(frozen=True)
class RawDataset:
    """Train/validation/test data in raw form plus the normalization and training augmentation to apply.

    ``uint8`` inputs are pixel values in [0, 255]; floating-point inputs are already scaled (see
    :class:`~lsbench.problems.transforms.Normalize`). ``augmentation`` applies to the training split only.

    ``task="classification"``: targets are ``(N,)`` class labels. ``task="next_token"``: inputs are ``(N, T)``
    int64 token ids, targets ``(N, T)`` the token that follows each input position, ``num_classes`` the
    vocabulary size; such data is never normalized (``mean``/``std`` are empty) and its loss is
    :class:`~lsbench.problems.evaluation.SequenceCrossEntropy`. ``task="regression"``: inputs ``(N, F)`` and
    targets ``(N, K)`` are floats, ``num_classes`` is the number of outputs ``K``; such data is never normalized
    either, its loss is the mean squared error and it has no accuracy
    (:func:`~lsbench.problems.evaluation.evaluate` reports NaN).
    """

    train_inputs: Tensor
    train_targets: Tensor
    validation_inputs: Tensor
    validation_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation | None
    task: Task = "classification"

    @classmethod
    def carved(
        cls,
        inputs: Tensor,
        targets: Tensor,
        train: Tensor,
        validation: Tensor,
        test: tuple[Tensor, Tensor],
        **settings: Any,
    ) -> RawDataset:
        """Train and validation taken by index out of one pool of samples (the official training set, or all
        samples of a generated set); ``test`` is ``(inputs, targets)`` and ``settings`` are the other fields."""
        return cls(
            train_inputs=inputs[train],
            train_targets=targets[train],
            validation_inputs=inputs[validation],
            validation_targets=targets[validation],
            test_inputs=test[0],
            test_targets=test[1],
            **settings,
        )


class StreamedDataset(Protocol):
    """A dataset whose samples are read from disk during training (ImageNet), built into samplers on demand.

    See :class:`lsbench.problems.imagefolder.ImageFolderDataset`, the implementation.
    """

    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def train_size(self) -> int: ...

    def train_sampler(self, *, batch_size: int, seed: int, device: torch.device) -> Any: ...

    def evaluation_split(self, name: str, *, device: torch.device) -> Any: ...


def default_data_dir() -> Path:
    """Where datasets live unless ``data_dir`` is given: ``$LSBENCH_DATA``, else ``~/.lsbench/data``."""
    return sources.default_data_dir()


def partition(num_samples: int, sizes: Sequence[int], *, seed: int | None) -> list[Tensor]:
    """Disjoint int64 index sets of the given ``sizes`` out of ``range(num_samples)``.

    With ``seed=None`` the sets are consecutive runs in order (the first ``sizes[0]`` indices, then the next
    ...). With a seed they are consecutive slices of ``torch.randperm(num_samples)`` drawn from a generator
    seeded ``seed`` — the same indices ``torch.utils.data.random_split`` returns for that generator, which is
    how the LABPAL harness split CIFAR. ``sizes`` may sum to less than ``num_samples``; the rest is unused.
    """
    if any(size < 0 for size in sizes) or sum(sizes) > num_samples:
        raise ValueError(f"cannot take sizes {list(sizes)} out of {num_samples} samples")
    if seed is None:
        order = torch.arange(num_samples)
    else:
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    return list(order[: sum(sizes)].split(list(sizes)))


def _check_split(dataset: str, split: str, offered: Sequence[str] | None = None) -> None:
    """Refuse a split rule ``dataset`` does not offer (default: the rules :data:`sources.SOURCES` declares)."""
    offered = sources.offered_splits(dataset) if offered is None else offered
    if split not in offered:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; available: {', '.join(offered)}")


def missing_data_error(title: str, path: Path, what: str, *, downloadable: bool) -> FileNotFoundError:
    """The error every reader raises when its data is not on disk: what is missing and how to fix it."""
    fix = "pass download=True to fetch it, or set" if downloadable else "set"
    return FileNotFoundError(
        f"{title} not found: no {path}; {fix} data_dir (or $LSBENCH_DATA) to the directory that contains {what}"
    )


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``uint8`` images ``(N, C, H, W)``, in [0, 1] pixel scale.

    Computed exactly from per-channel histograms of the 256 pixel values (chunked, so it needs no float copy
    of the dataset); the standard deviation is the population one over all pixels of a channel.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    channels = images.shape[1]
    counts = torch.zeros(channels, 256, dtype=torch.float64)
    for part in images.split(chunk):
        for channel in range(channels):
            counts[channel] += torch.bincount(part[:, channel].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(dim=1)
    mean = (counts * values).sum(dim=1) / total
    variance = (counts * values.square()).sum(dim=1) / total - mean.square()
    return tuple(mean.tolist()), tuple(variance.clamp_min(0).sqrt().tolist())


# --------------------------------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarFormat:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labpal_pad: int


_CIFAR = {
    "cifar10": _CifarFormat(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        labpal_pad=4,
    ),
    "cifar100": _CifarFormat(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        labpal_pad=8,
    ),
}

# Validation share of the official training set (percent) and the shuffling seed (None: keep file order).
_CIFAR_SPLITS: dict[str, tuple[int, int | None]] = {"default": (10, None), "labpal": (20, 42)}
_CIFAR_DEFAULT_PAD = 4


def _read_cifar_file(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        # The official files were pickled by Python 2: "bytes" keeps their str keys as bytes.
        batch: dict[Any, Any] = pickle.load(handle, encoding="bytes")
    fields = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    data = np.asarray(fields["data"], dtype=np.uint8)
    labels = np.asarray(fields[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: expected (N, 3072) pixel rows and N labels, got {data.shape}/{labels.shape}")
    return data, labels


def read_cifar(name: str, root: str | os.PathLike[str], *, download: bool = False) -> tuple[Tensor, ...]:
    """Read CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) from ``root``.

    Reads the official python-pickle folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) directly,
    without torchvision's dataset class, which would insist on the official checksums. Each file row holds
    the red plane, then green, then blue, each 32×32 row-major, so it reshapes to ``(3, 32, 32)`` CHW.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``, images ``uint8 (N, 3, 32, 32)``, labels
        ``int64 (N,)``.

    Raises:
        FileNotFoundError: the folder is missing and ``download`` is false.
    """
    fmt = _CIFAR[name]
    folder = Path(root).expanduser() / fmt.folder
    if not folder.is_dir():
        if not download:
            raise FileNotFoundError(
                f"{fmt.title} not found: no folder {folder}; pass download=True to fetch it, "
                f"or set data_dir (or $LSBENCH_DATA) to the directory that contains {fmt.folder}/"
            )
        _fetch(name, folder.parent)

    def read(files: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        parts = [_read_cifar_file(folder / file, fmt.label_key) for file in files]
        images = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([labels for _, labels in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)

    return (*read(fmt.train_files), *read(fmt.test_files))


def _fetch(dataset: str, root: Path) -> None:
    """Download ``dataset`` into ``root`` with its torchvision downloader (:data:`sources.SOURCES`)."""
    fetch = sources.SOURCES[dataset].fetch
    assert fetch is not None, dataset
    fetch(root)


def cifar_split(num_train_images: int, split: str) -> tuple[Tensor, Tensor]:
    """Training and validation indices into the official CIFAR training set of ``num_train_images``.

    ``"default"``: first 90 %/last 10 % (45,000/5,000 for the real data); ``"labpal"``: random 80 %/20 %
    (40,000/10,000) as ``random_split`` with a generator seeded 42.
    """
    _check_split("cifar", split, tuple(_CIFAR_SPLITS))
    validation_percent, seed = _CIFAR_SPLITS[split]
    num_validation = num_train_images * validation_percent // 100
    train, validation = partition(num_train_images, [num_train_images - num_validation, num_validation], seed=seed)
    return train, validation


def _load_cifar(name: str, root: Path, split: str, download: bool) -> RawDataset:
    fmt = _CIFAR[name]
    _check_split(name, split)
    train_images, train_labels, test_images, test_labels = read_cifar(name, root, download=download)
    train, validation = cifar_split(train_labels.shape[0], split)
    return RawDataset.carved(
        train_images,
        train_labels,
        train,
        validation,
        (test_images, test_labels),
        num_classes=fmt.num_classes,
        mean=fmt.mean,
        std=fmt.std,
        augmentation=Augmentation(pad=fmt.labpal_pad if split == "labpal" else _CIFAR_DEFAULT_PAD),
    )


def cifar10small_indices(num_train_images: int) -> Tensor:
    """Indices, into the default training split, of the CIFAR-10 subset of thesis Chapter 5.

    The subset holds 8 % of the official training set (4,000 of 50,000 images), drawn once from the default
    45,000-image training split with a generator seeded 0, so it is the same for every run seed. Sorted.
    """
    default_train, _ = cifar_split(num_train_images, "default")
    subset = partition(default_train.shape[0], [num_train_images * 8 // 100], seed=0)[0]
    return subset.sort().values


def _load_cifar10small(root: Path, split: str, download: bool) -> RawDataset:
    _check_split("cifar10small", split)
    full = _load_cifar("cifar10", root, split, download)
    keep = cifar10small_indices(full.train_targets.shape[0] + full.validation_targets.shape[0])
    return RawDataset(
        train_inputs=full.train_inputs[keep],
        train_targets=full.train_targets[keep],
        validation_inputs=full.validation_inputs,
        validation_targets=full.validation_targets,
        test_inputs=full.test_inputs,
        test_targets=full.test_targets,
        num_classes=full.num_classes,
        mean=full.mean,
        std=full.std,
        augmentation=full.augmentation,
    )


# ---------------------------------------------------------------------------------------------------- SVHN

SVHN_FOLDER = "svhn"
SVHN_TRAIN_SIZE = 73_257
"""Images in the official SVHN ``train_32x32.mat``."""

# (training, validation) images out of the official 73,257 (None: all the rest); every split shuffles with a
# generator seeded 42, as the LABPAL harness' random_split.
_SVHN_SPLITS: dict[str, tuple[int, int | None]] = {"default": (45_000, 20_000), "labpal": (65_000, None)}
_SVHN_SPLIT_SEED = 42
_SVHN_PAD = 4


def read_svhn(root: str | os.PathLike[str], *, download: bool = False) -> tuple[Tensor, ...]:
    """Read SVHN's cropped digits from ``root/svhn/{train,test}_32x32.mat`` (the files torchvision's ``SVHN``
    downloads, MATLAB v5 format).

    The files hold ``X`` as ``uint8 (32, 32, 3, N)`` (height, width, RGB, sample) and ``y`` as ``(N, 1)`` labels
    1-10, where 10 stands for the digit 0; labels are mapped to the digit, 0-9.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``, images ``uint8 (N, 3, 32, 32)``, labels
        ``int64 (N,)``.
    """
    folder = Path(root).expanduser() / SVHN_FOLDER
    files = {part: folder / f"{part}_32x32.mat" for part in ("train", "test")}
    if not all(path.is_file() for path in files.values()):
        if not download:
            missing = next(path for path in files.values() if not path.is_file())
            raise missing_data_error("SVHN", missing, f"{SVHN_FOLDER}/train_32x32.mat", downloadable=True)
        _fetch("svhn", folder.parent)

    from scipy.io import loadmat  # imported here: only this reader needs it

    def read(path: Path) -> tuple[Tensor, Tensor]:
        mat = loadmat(str(path), variable_names=("X", "y"))
        pixels = np.asarray(mat["X"], dtype=np.uint8)
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        if pixels.ndim != 4 or pixels.shape[:3] != (32, 32, 3) or pixels.shape[3] != labels.shape[0]:
            raise ValueError(f"{path}: expected X (32, 32, 3, N) and y (N, 1), got {pixels.shape}/{labels.shape}")
        if labels.size and (labels.min() < 1 or labels.max() > 10):
            raise ValueError(f"{path}: labels must lie in 1..10 (10 = digit 0)")
        images = np.ascontiguousarray(pixels.transpose(3, 2, 0, 1))
        return torch.from_numpy(images), torch.from_numpy(labels % 10)

    return (*read(files["train"]), *read(files["test"]))


def svhn_split(num_train_images: int, split: str) -> tuple[Tensor, Tensor]:
    """Training and validation indices into SVHN's official training set of ``num_train_images``.

    Counts scale with the set size (``count * num_train_images // 73_257``), so the official set gives
    ``"default"`` 45,000/20,000 (thesis C.4) and ``"labpal"`` 65,000/8,257 (LABPAL harness); both are
    consecutive slices of one permutation drawn with seed 42, so the LABPAL training set is the default
    training plus validation set.
    """
    _check_split("svhn", split, tuple(_SVHN_SPLITS))
    train_count, validation_count = _SVHN_SPLITS[split]
    num_train = num_train_images * train_count // SVHN_TRAIN_SIZE
    if validation_count is None:
        num_validation = num_train_images - num_train
    else:
        num_validation = num_train_images * validation_count // SVHN_TRAIN_SIZE
    train, validation = partition(num_train_images, [num_train, num_validation], seed=_SVHN_SPLIT_SEED)
    return train, validation


def _load_svhn(root: Path, split: str, download: bool) -> RawDataset:
    _check_split("svhn", split)
    train_images, train_labels, test_images, test_labels = read_svhn(root, download=download)
    train, validation = svhn_split(train_labels.shape[0], split)
    mean, std = channel_stats(train_images[train])
    return RawDataset.carved(
        train_images,
        train_labels,
        train,
        validation,
        (test_images, test_labels),
        num_classes=10,
        mean=mean,
        std=std,
        augmentation=Augmentation(pad=_SVHN_PAD),
    )


# --------------------------------------------------------------------------------------------------- MNIST

MNIST_FOLDERS = ("mnist", "MNIST/raw")
"""Where MNIST's idx files are looked for under the data directory: DeepOBS' layout, then torchvision's."""
MNIST_TRAIN_SIZE = 60_000
_MNIST_VALIDATION = 10_000
_MNIST_SPLIT_SEED = 42
_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file of unsigned bytes (LeCun's MNIST format), gzipped if the name ends in ``.gz``.

    Layout: two zero bytes, the type code (0x08 = unsigned byte), the number of dimensions ``d``, ``d``
    big-endian uint32 sizes, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic number)")
    if data[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: idx type code {data[2]:#04x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != math.prod(shape):
        raise ValueError(f"{path}: header says {shape} ({math.prod(shape)} bytes), file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find_mnist_file(root: Path, name: str) -> Path | None:
    for folder in MNIST_FOLDERS:
        for candidate in (root / folder / name, root / folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_mnist(root: str | os.PathLike[str], *, download: bool = False) -> tuple[Tensor, ...]:
    """Read MNIST from the idx files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``) in ``root/mnist/``
    or, as torchvision stores them, ``root/MNIST/raw/``.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``, images ``uint8 (N, 1, 28, 28)``, labels
        ``int64 (N,)``.
    """
    root = Path(root).expanduser()
    names = [f"{part}-{kind}" for part in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    paths = [_find_mnist_file(root, name) for name in names]
    if any(path is None for path in paths):
        if not download:
            missing = names[[path is None for path in paths].index(True)]
            raise missing_data_error("MNIST", root / MNIST_FOLDERS[0] / missing, "mnist/", downloadable=True)
        _fetch("mnist", root)
        paths = [_find_mnist_file(root, name) for name in names]
    arrays = [read_idx(path) for path in paths if path is not None]
    result = []
    for images, labels, path in ((arrays[0], arrays[1], paths[0]), (arrays[2], arrays[3], paths[2])):
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"{path}: expected (N, H, W) images and N labels, got {images.shape}/{labels.shape}")
        result += [torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))]
    return tuple(result)


def mnist_split(num_train_images: int) -> tuple[Tensor, Tensor]:
    """Training and validation indices into MNIST's training set: 50,000/10,000 for the official 60,000 (the
    validation share scales with the set size), slices of the permutation of a generator seeded 42."""
    num_validation = num_train_images * _MNIST_VALIDATION // MNIST_TRAIN_SIZE
    train, validation = partition(
        num_train_images, [num_train_images - num_validation, num_validation], seed=_MNIST_SPLIT_SEED
    )
    return train, validation


def _load_mnist(root: Path, split: str, download: bool) -> RawDataset:
    _check_split("mnist", split)
    train_images, train_labels, test_images, test_labels = read_mnist(root, download=download)
    train, validation = mnist_split(train_labels.shape[0])
    return RawDataset.carved(
        train_images,
        train_labels,
        train,
        validation,
        (test_images, test_labels),
        num_classes=10,
        mean=(0.0,),
        std=(1.0,),
        augmentation=None,
    )


# ------------------------------------------------------------------------------------------ small datasets


def _load_digits(root: Path, split: str, download: bool) -> RawDataset:
    """scikit-learn's 8×8 digits (shipped with the package, so no download): a real dataset small enough to
    train on a laptop CPU in seconds. Fixed permutation (seed 0) into 1,197/300/300; pixels scaled to [0, 1]
    and normalized by the training split's mean and standard deviation."""
    _check_split("digits", split)
    # Imported here: scikit-learn is only needed for this dataset and is slow to import.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train, validation, test = partition(labels.shape[0], DIGITS_SPLIT_SIZES, seed=0)
    train_images = images[train]
    return RawDataset(
        train_inputs=train_images,
        train_targets=labels[train],
        validation_inputs=images[validation],
        validation_targets=labels[validation],
        test_inputs=images[test],
        test_targets=labels[test],
        num_classes=10,
        mean=(train_images.mean().item(),),
        std=(train_images.std().item(),),
        augmentation=None,
    )


def make_synthetic(
    *,
    sample_shape: tuple[int, ...] = (1, 8, 8),
    num_classes: int = 10,
    sizes: tuple[int, int, int] = (1024, 256, 256),
    seed: int = 0,
) -> RawDataset:
    """A learnable synthetic classification task: standard-normal inputs labelled by a random linear teacher.

    Labels are ``argmax(x @ W)`` for a fixed Gaussian ``W``, so even a linear model can reach high accuracy
    and a loss curve shows real progress. Everything is drawn from a generator seeded ``seed``; the inputs
    are already standardized (identity normalization) and there is no augmentation.
    """
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    inputs = torch.randn(total, *sample_shape, generator=generator)
    teacher = torch.randn(math.prod(sample_shape), num_classes, generator=generator)
    targets = (inputs.flatten(1) @ teacher).argmax(dim=1)
    train, validation, test = partition(total, sizes, seed=None)
    channels = sample_shape[0]
    return RawDataset.carved(
        inputs,
        targets,
        train,
        validation,
        (inputs[test], targets[test]),
        num_classes=num_classes,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        augmentation=None,
    )


def make_cifar_shaped(
    *, num_classes: int = 10, sizes: tuple[int, int, int] = (2048, 256, 256), seed: int = 0
) -> RawDataset:
    """Synthetic stand-in for CIFAR-10: ``uint8`` 3×32×32 images with CIFAR-10 normalization and augmentation.

    It exists so that the cost of a CIFAR ResNet training step (and an optimizer's overhead on it) can be
    measured without the real dataset. Each class has a random colour and an image is that colour plus pixel
    noise: the label survives random crops and flips, so the task stays learnable under augmentation.
    """
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    colours = torch.rand(num_classes, 3, 1, 1, generator=generator) * 255.0
    targets = torch.randint(0, num_classes, (total,), generator=generator)
    noise = torch.randn(total, 3, 32, 32, generator=generator) * 40.0
    images = (colours[targets] + noise).round_().clamp_(0, 255).to(torch.uint8)
    train, validation, test = partition(total, sizes, seed=None)
    return RawDataset.carved(
        images,
        targets,
        train,
        validation,
        (images[test], targets[test]),
        num_classes=num_classes,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augmentation=Augmentation(pad=_CIFAR_DEFAULT_PAD),
    )


MATFAC_SHAPE = (10, 6)
"""(outputs, inputs) of the matrix A of the matrix factorization problem."""
MATFAC_SPLIT_SIZES = (1000, 250, 250)
"""Train/validation/test samples of the matrix factorization data."""
MATFAC_ROW_SCALE_RATIO = 1e-10
"""Smallest row scale of A relative to its largest (the paper's "condition number 10^10", see below)."""
MATFAC_SEED = 0


def matrix_factorization_target(seed: int = MATFAC_SEED) -> Tensor:
    """The matrix A (``float64``, 10 × 6) whose product with the inputs the matrix factorization problem fits.

    Its rows are scaled linearly from 1 down to 1e-10, each row a vector of independent uniform [0, 1) entries
    drawn from a generator seeded ``seed``: A = diag(linspace(1, 1e-10, 10)) · U. Vaswani et al. (2019, §7.2)
    describe A as having "condition number 10^10"; their published experiment builds A in this way (the
    construction of Recht's two-layer linear network example), so 10^10 is the ratio of the row scales, not of
    the singular values. This package follows the construction the experiment ran with, because it fixes what
    the thesis' Figure 4.14 shows: for seed 0 the singular values are about 2.52, 0.634, 0.321, 0.278, 0.190 and
    0.119 (condition number about 21), so a rank-1 or rank-4 factorization W2·W1 cannot fit A and the loss stalls
    at a clearly visible floor (about 0.063 and 0.005 in expectation over x ~ N(0, I)), while rank 10 ≥ 6
    interpolates.
    """
    return _draw_matfac_target(torch.Generator().manual_seed(seed))


def _draw_matfac_target(generator: torch.Generator) -> Tensor:
    rows, columns = MATFAC_SHAPE
    scales = torch.linspace(1.0, MATFAC_ROW_SCALE_RATIO, rows, dtype=torch.float64)
    return scales[:, None] * torch.rand(rows, columns, generator=generator, dtype=torch.float64)


def make_matrix_factorization(
    *, sizes: tuple[int, int, int] = MATFAC_SPLIT_SIZES, seed: int = MATFAC_SEED
) -> RawDataset:
    """The synthetic matrix factorization data of Vaswani et al. (2019, §7.2), used in thesis Sec. 4.7.

    Inputs x ~ N(0, I) in R^6 and noise-free targets y = A x in R^10, with A from
    :func:`matrix_factorization_target`. A and all samples come from one generator seeded ``seed`` (A first,
    then train, validation and test inputs in that order), never from a run's seed: every run trains on the same
    data, and the run seed only initializes the model and orders the batches. Computed in ``float64``, stored as
    ``float32``; a regression task, so nothing is normalized or augmented.
    """
    generator = torch.Generator().manual_seed(seed)
    target = _draw_matfac_target(generator)
    total = sum(sizes)
    inputs = torch.randn(total, MATFAC_SHAPE[1], generator=generator, dtype=torch.float64)
    targets = inputs @ target.T
    train, validation, test = partition(total, sizes, seed=None)
    inputs, targets = inputs.float(), targets.float()
    return RawDataset.carved(
        inputs,
        targets,
        train,
        validation,
        (inputs[test], targets[test]),
        num_classes=MATFAC_SHAPE[0],
        mean=(),
        std=(),
        augmentation=None,
        task="regression",
    )


def _generated(name: str, make: Callable[[], RawDataset]) -> Callable[[Path, str, bool], RawDataset]:
    def load(root: Path, split: str, download: bool) -> RawDataset:
        _check_split(name, split)
        return make()

    return load


def _load_tolstoi(root: Path, split: str, download: bool) -> RawDataset:
    from lsbench.problems.text import load_tolstoi  # imported here: text.py builds on this module

    return load_tolstoi(root, split, download)


def _load_imagenet(root: Path, split: str, download: bool) -> StreamedDataset:
    from lsbench.problems.imagefolder import load_imagenet  # imported here: it builds on this module

    return load_imagenet(root, split, download)


# ---------------------------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[[Path, str, bool], RawDataset | StreamedDataset]] = {
    "cifar10": lambda root, split, download: _load_cifar("cifar10", root, split, download),
    "cifar100": lambda root, split, download: _load_cifar("cifar100", root, split, download),
    "cifar10small": _load_cifar10small,
    "svhn": _load_svhn,
    "mnist": _load_mnist,
    "tolstoi": _load_tolstoi,
    "imagenet": _load_imagenet,
    "digits": _load_digits,
    "synthetic": _generated("synthetic", make_synthetic),
    "cifar10shaped": _generated("cifar10shaped", make_cifar_shaped),
    "matfac": _generated("matfac", make_matrix_factorization),
}
"""Dataset keys used in problem names, mapped to ``loader(root, split, download)``."""


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "default",
    download: bool = False,
) -> RawDataset | StreamedDataset:
    """Load dataset ``name`` (a key of :data:`DATASETS`) on the CPU, split by rule ``split``.

    ``data_dir`` (default :func:`default_data_dir`) matters for the datasets read from disk (CIFAR, SVHN,
    MNIST, Tolstoi, ImageNet); ``download`` fetches a missing CIFAR, SVHN or MNIST folder with torchvision's
    downloaders. The others ship with a package or are generated. ImageNet comes back as a
    :class:`StreamedDataset`, everything else as a :class:`RawDataset`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}")
    root = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    return DATASETS[name](root, split, download)
