"""ImageNet (or any dataset in the same layout) read from an image folder and streamed from disk.

Layout, under ``data_dir/imagenet/``: ``train/<class>/<image>`` and ``val/<class>/<image>`` (the official
validation images sorted into one folder per class, the layout torchvision's ``ImageFolder`` reads); images
are JPEG or PNG files (``.jpeg``, ``.jpg``, ``.png``, any case). Class indices are the sorted ``train/``
folder names (the WordNet ids for ImageNet).

Splits:

* ``split="default"`` (PAL chapter): validation = 10 images per class held out of ``train/`` (at most half
  of a class, which only matters for tiny folders), chosen per class by a permutation of its sorted files
  drawn from a generator seeded 42 -- 10,000 images for ImageNet's 1,000 classes, small enough to evaluate
  often; the thesis does not say how its ImageNet validation set was made. Training = the rest of ``train/``.
  Test = ``val/``, the official validation set, on which ImageNet results are reported (thesis Table A.1).
* ``split="labpal"`` (LABPAL harness, ``reference/algorithms.md`` §10.2): ``random_split`` with seed 42 of
  ``train/`` into 1,080,000 training images (scaled to the folder size) and the rest for validation.

Preprocessing (torchvision's ImageNet recipe, reimplemented with PIL so that workers need not import
torchvision): training images get a random resized crop to 224×224 (area 8-100 %, aspect 3/4-4/3, bilinear)
and a horizontal flip with probability 1/2 (``"default"`` and ``"labpal"``), and for ``"default"`` AlexNet's
PCA lighting noise with standard deviation 0.1 (thesis App. A.2.3: "we applied lighting as described in
(Krizhevsky et al., 2012)"). Evaluation images are resized to a shorter side of 256 and center-cropped to
224×224. All are normalized with the usual ImageNet mean/std.

Every random choice of a training sample comes from a NumPy generator seeded by the sampler from
``(run seed, epoch, index)`` (:class:`~lsbench.problems.sampling.StreamingSampler`), so batches are
reproducible and resumable whatever the number of loader workers. Workers default to ``min(8, CPUs available
to this process)`` -- the CPUs Slurm granted the task, not the node's -- and ``$LSBENCH_NUM_WORKERS`` overrides
that.

File names are held in NumPy byte arrays rather than Python lists: forked loader workers then share them
without the copy-on-access that reference counting causes on millions of Python strings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lsbench.cpus import available_cpus
from lsbench.problems.datasets import _check_split, missing_data_error, partition
from lsbench.problems.sampling import Batch, StreamedSplit, StreamingSampler
from lsbench.problems.transforms import (
    Normalize,
    center_crop_box,
    lighting_offset,
    random_resized_crop_box,
    resize_shorter_side,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderDataset",
    "default_num_workers",
    "image_folder_split",
    "load_image_folder",
    "load_imagenet",
    "scan_image_folder",
]

IMAGENET_FOLDER = "imagenet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_TRAIN_SIZE = 1_281_167
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
VALIDATION_PER_CLASS = 10
LABPAL_TRAIN_SIZE = 1_080_000
LIGHTING_STD = 0.1
_SPLIT_SEED = 42
_SPLITS = ("default", "labpal")


def default_num_workers() -> int:
    """Loader worker processes: ``$LSBENCH_NUM_WORKERS`` if set, else ``min(8, available_cpus())``."""
    value = os.environ.get("LSBENCH_NUM_WORKERS")
    if value is not None:
        return int(value)
    return min(8, available_cpus())


def scan_image_folder(
    folder: Path, classes: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """List the images of ``folder/<class>/*``: ``(paths, labels, classes)``.

    ``classes`` defaults to the sorted subfolder names; given (the training classes, for ``val/``), a
    subfolder that is not among them is an error. Files are sorted by name within a class; ``paths`` is a
    byte-string array, ``labels`` int64.
    """
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if classes is None:
        classes = tuple(found)
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{folder} has classes that the training folder lacks: {', '.join(unknown[:5])}")
    index = {name: position for position, name in enumerate(classes)}
    paths: list[bytes] = []
    labels: list[int] = []
    for name in found:
        files = sorted(
            entry.name
            for entry in os.scandir(folder / name)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths += [os.fsencode(folder / name / file) for file in files]
        labels += [index[name]] * len(files)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders")
    return np.array(paths), np.array(labels, dtype=np.int64), classes


def image_folder_split(labels: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and validation indices into the images of ``train/`` (see the module docstring)."""
    _check_split("imagenet", split, _SPLITS)
    count = labels.shape[0]
    if split == "labpal":
        num_train = count * LABPAL_TRAIN_SIZE // IMAGENET_TRAIN_SIZE
        train, validation = partition(count, [num_train, count - num_train], seed=_SPLIT_SEED)
        return np.sort(train.numpy()), np.sort(validation.numpy())
    generator = torch.Generator().manual_seed(_SPLIT_SEED)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(VALIDATION_PER_CLASS, members.shape[0] // 2)
        held_out.append(members[torch.randperm(members.shape[0], generator=generator)[:take].numpy()])
    validation = np.sort(np.concatenate(held_out))
    train = np.setdiff1d(np.arange(count), validation)
    return train, validation


def _open_rgb(path: bytes) -> Any:  # a PIL image; PIL is imported lazily
    from PIL import Image

    with Image.open(os.fsdecode(path)) as image:
        return image.convert("RGB")


def _to_chw(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class _TrainImages(Dataset):
    """Training images keyed by ``(index, sample_seed)``: ``(uint8 (3, S, S), label, float32 (3,) lighting)``."""

    def __init__(self, paths: np.ndarray, labels: np.ndarray, crop_size: int, lighting_std: float) -> None:
        self.paths = paths
        self.labels = labels
        self.crop_size = crop_size
        self.lighting_std = lighting_std

    def __len__(self) -> int:
        return self.paths.shape[0]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, Tensor]:
        from PIL import Image

        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        image = _open_rgb(self.paths[index])
        left, top, width, height = random_resized_crop_box(image.width, image.height, rng)
        size = (self.crop_size, self.crop_size)
        crop = image.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + width, top + height))
        array = np.asarray(crop)
        if rng.random() < 0.5:
            array = array[:, ::-1]
        offset = lighting_offset(rng, self.lighting_std)
        return _to_chw(array), int(self.labels[index]), torch.from_numpy(offset)


class _EvalImages(Dataset):
    """Evaluation images by index: resize the shorter side, center-crop; ``(uint8 (3, S, S), label)``."""

    def __init__(self, paths: np.ndarray, labels: np.ndarray, crop_size: int, resize_size: int) -> None:
        self.paths = paths
        self.labels = labels
        self.crop_size = crop_size
        self.resize_size = resize_size

    def __len__(self) -> int:
        return self.paths.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        image = _open_rgb(self.paths[index])
        size = resize_shorter_side(image.width, image.height, self.resize_size)
        resized = image.resize(size, Image.Resampling.BILINEAR)
        crop = resized.crop(center_crop_box(size[0], size[1], self.crop_size))
        return _to_chw(np.asarray(crop)), int(self.labels[index])


class _Finish:
    """Collated CPU batch -> normalized float32 inputs and int64 labels on the device (lighting added in
    [0, 1] pixel scale, before normalization)."""

    def __init__(self, device: torch.device, normalize: Normalize) -> None:
        self.device = device
        self.normalize = normalize

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor]:
        images, labels = batch[0], batch[1]
        pixels = images.to(self.device, non_blocking=True).to(torch.float32).div_(255.0)
        if len(batch) > 2:
            pixels += batch[2].to(self.device, non_blocking=True)[:, :, None, None]
        return self.normalize(pixels), labels.to(self.device, non_blocking=True)


@dataclass
class ImageFolderDataset:
    """The image lists of a split image folder plus its preprocessing; builds streamed samplers and splits.

    Implements :class:`~lsbench.problems.datasets.StreamedDataset`.
    """

    train_paths: np.ndarray
    train_labels: np.ndarray
    validation_paths: np.ndarray
    validation_labels: np.ndarray
    test_paths: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    crop_size: int = 224
    resize_size: int = 256
    lighting_std: float = LIGHTING_STD
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_workers: int = 0
    eval_batch_size: int = 250

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.crop_size, self.crop_size)

    @property
    def train_size(self) -> int:
        return self.train_paths.shape[0]

    def _finish(self, device: torch.device) -> _Finish:
        return _Finish(device, Normalize(self.mean, self.std, device=device))

    def train_sampler(self, *, batch_size: int, seed: int, device: torch.device) -> StreamingSampler:
        """Shuffled, augmented training batches on ``device``, resumable (see the module docstring)."""
        device = torch.device(device)
        return StreamingSampler(
            _TrainImages(self.train_paths, self.train_labels, self.crop_size, self.lighting_std),
            batch_size=batch_size,
            seed=seed,
            finish=self._finish(device),
            device=device,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )

    def evaluation_split(self, name: str, *, device: torch.device) -> StreamedSplit:
        """The ``"validation"`` or ``"test"`` split, streamed in file order with the evaluation transform."""
        device = torch.device(device)
        if name == "validation":
            paths, labels = self.validation_paths, self.validation_labels
        elif name == "test":
            paths, labels = self.test_paths, self.test_labels
        else:
            raise ValueError(f"unknown split {name!r}; expected 'validation' or 'test'")
        return StreamedSplit(
            _EvalImages(paths, labels, self.crop_size, self.resize_size),
            finish=self._finish(device),
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            eval_batch_size=self.eval_batch_size,
            device=device,
        )


def load_image_folder(
    folder: Path,
    split: str,
    *,
    title: str = "ImageNet",
    crop_size: int = 224,
    resize_size: int = 256,
    num_workers: int | None = None,
) -> ImageFolderDataset:
    """Scan ``folder/train`` and ``folder/val`` and split them by rule ``split`` (module docstring).

    ``crop_size``/``resize_size`` change the image size (ImageNet: 224 out of 256), e.g. for tests.
    """
    _check_split("imagenet", split, _SPLITS)
    for part in ("train", "val"):
        if not (folder / part).is_dir():
            raise missing_data_error(
                title, folder / part, f"{folder.name}/train/ and {folder.name}/val/", downloadable=False
            )
    paths, labels, classes = scan_image_folder(folder / "train")
    test_paths, test_labels, _ = scan_image_folder(folder / "val", classes)
    train, validation = image_folder_split(labels, split)
    return ImageFolderDataset(
        train_paths=paths[train],
        train_labels=labels[train],
        validation_paths=paths[validation],
        validation_labels=labels[validation],
        test_paths=test_paths,
        test_labels=test_labels,
        classes=classes,
        crop_size=crop_size,
        resize_size=resize_size,
        lighting_std=LIGHTING_STD if split == "default" else 0.0,
        num_workers=default_num_workers() if num_workers is None else num_workers,
    )


def load_imagenet(root: Path, split: str, download: bool) -> ImageFolderDataset:
    """ImageNet from ``root/imagenet/{train,val}``; ``download`` is not supported (the data needs a licence)."""
    return load_image_folder(Path(root).expanduser() / IMAGENET_FOLDER, split)
