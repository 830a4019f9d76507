"""Where each dataset's data comes from: the files its reader needs, the split rules it offers, and how to get it.

This is what the login node knows about the data before any worker starts: ``sweep submit`` calls
:func:`check_data` with the (dataset, split) pairs of its runs and the directory the workers will read
(``$LSBENCH_DATA`` for the local pool, the profile's ``data_dir`` on Slurm), and refuses the grid with one line when
a dataset is missing or does not offer a split, instead of queueing runs that fail in their jobs.
``lsbench data check`` lists :func:`dataset_status` of every dataset, and ``lsbench data download NAME``
(:func:`download`) fetches what torchvision's downloaders can fetch.

The file lists here describe what the readers of :mod:`lsbench.problems.datasets`, :mod:`~lsbench.problems.text`
and :mod:`~lsbench.problems.imagefolder` open, and :data:`SOURCES` is the one list of the split rules each dataset
offers (the readers ask it). A presence check only looks for the files; it does not read them.

This module imports neither torch nor the dataset readers (only :func:`download` imports torchvision, when called),
so the login-node commands stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "SOURCES",
    "DataError",
    "DataSource",
    "DatasetStatus",
    "DownloadFailed",
    "check_data",
    "check_splits",
    "data_dir_origin",
    "dataset_of",
    "dataset_status",
    "default_data_dir",
    "download",
    "offered_splits",
    "source_of",
]

Kind = Literal["files", "download", "bundled", "generated"]


class DataError(ValueError):
    """A request about data that cannot work as asked (an unknown dataset, one lsbench cannot download); one line."""


class DownloadFailed(RuntimeError):
    """A download that was tried and failed (no network, a bad checksum); ``str()`` is one line."""


@dataclass(frozen=True)
class DataSource:
    """One dataset as the login node sees it.

    Attributes:
        name: the dataset key (the part of a problem name before the first ``_``).
        title: its usual name, for messages.
        splits: the split rules it offers (a subset of :data:`lsbench.runs.SPLITS`).
        kind: ``download`` (files on disk that torchvision can fetch), ``files`` (files on disk that must be put
            there by hand), ``bundled`` (ships with a package) or ``generated`` (made up from a seed).
        needs: for data on disk, the files under the data directory, each as a tuple of accepted forms (the first
            is the one messages name); a form ending in ``/`` is a directory. Every entry needs one of its forms.
        folder: what a data directory must contain, in words (``cifar-10-batches-py/``).
        how: how to get it where it cannot be downloaded.
        fetch: ``fetch(data_dir)`` downloads it (``download`` kind only).
    """

    name: str
    title: str
    splits: tuple[str, ...]
    kind: Kind
    needs: tuple[tuple[str, ...], ...] = ()
    folder: str = ""
    how: str = ""
    fetch: Callable[[Path], None] | None = None

    @property
    def on_disk(self) -> bool:
        return self.kind in ("files", "download")


# -- downloads (torchvision's downloaders; imported when called, it is slow to import) ---------------------------


def _torchvision_fetch(class_name: str, parts: Sequence[dict[str, object]], subfolder: str = "") -> Callable[..., None]:
    def fetch(data_dir: Path) -> None:
        import torchvision.datasets

        root = data_dir / subfolder if subfolder else data_dir
        root.mkdir(parents=True, exist_ok=True)
        for part in parts:
            getattr(torchvision.datasets, class_name)(root=str(root), download=True, **part)

    return fetch


def _idx(name: str) -> tuple[str, ...]:
    """MNIST's idx file ``name`` as the reader accepts it: DeepOBS' ``mnist/`` or torchvision's ``MNIST/raw/``, each
    plain or gzipped."""
    return tuple(f"{folder}/{name}{suffix}" for folder in ("mnist", "MNIST/raw") for suffix in ("", ".gz"))


_CIFAR10_FILES = tuple(
    (f"cifar-10-batches-py/{file}",) for file in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
)

SOURCES: dict[str, DataSource] = {
    source.name: source
    for source in (
        DataSource(
            "cifar10",
            "CIFAR-10",
            ("default", "labpal"),
            "download",
            _CIFAR10_FILES,
            "cifar-10-batches-py/",
            fetch=_torchvision_fetch("CIFAR10", [{"train": True}]),
        ),
        DataSource(
            "cifar100",
            "CIFAR-100",
            ("default", "labpal"),
            "download",
            (("cifar-100-python/train",), ("cifar-100-python/test",)),
            "cifar-100-python/",
            fetch=_torchvision_fetch("CIFAR100", [{"train": True}]),
        ),
        DataSource(
            "cifar10small",
            "CIFAR-10 (the 8 % subset of Chapter 5)",
            ("default",),
            "download",
            _CIFAR10_FILES,
            "cifar-10-batches-py/",
            fetch=_torchvision_fetch("CIFAR10", [{"train": True}]),
        ),
        DataSource(
            "svhn",
            "SVHN",
            ("default", "labpal"),
            "download",
            (("svhn/train_32x32.mat",), ("svhn/test_32x32.mat",)),
            "svhn/train_32x32.mat and svhn/test_32x32.mat",
            fetch=_torchvision_fetch("SVHN", [{"split": "train"}, {"split": "test"}], subfolder="svhn"),
        ),
        DataSource(
            "mnist",
            "MNIST",
            ("default",),
            "download",
            tuple(
                _idx(f"{part}-{kind}")
                for part in ("train", "t10k")
                for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
            ),
            "mnist/ (or torchvision's MNIST/raw/)",
            fetch=_torchvision_fetch("MNIST", [{"train": True}, {"train": False}]),
        ),
        DataSource(
            "tolstoi",
            "Tolstoi (War and Peace)",
            ("default",),
            "files",
            # the text, or DeepOBS' prepared train.npy and test.npy (lsbench.problems.text)
            (("tolstoi/war_and_peace.txt", "tolstoi/train.npy"), ("tolstoi/war_and_peace.txt", "tolstoi/test.npy")),
            "tolstoi/war_and_peace.txt",
            how="put War and Peace as UTF-8 text (Project Gutenberg #2600) there, or DeepOBS' tolstoi train.npy and "
            "test.npy",
        ),
        DataSource(
            "imagenet",
            "ImageNet",
            ("default", "labpal"),
            "files",
            (("imagenet/train/",), ("imagenet/val/",)),
            "imagenet/train/ and imagenet/val/",
            how="ImageNet needs a licence (image-net.org): unpack ILSVRC2012 train and val into one folder per class",
        ),
        DataSource("digits", "scikit-learn's digits", ("default",), "bundled", how="ships with scikit-learn"),
        DataSource("synthetic", "synthetic teacher data", ("default",), "generated", how="generated from a seed"),
        DataSource("cifar10shaped", "CIFAR-10-shaped synthetic data", ("default",), "generated", how="generated"),
        DataSource(
            "matfac", "matrix factorization data (Vaswani et al. 2019)", ("default",), "generated", how="generated"
        ),
    )
}
"""Every dataset a problem can name, by key."""


def default_data_dir() -> Path:
    """Where datasets live unless a data directory is given: ``$LSBENCH_DATA``, else ``~/.lsbench/data``."""
    return Path(os.environ.get("LSBENCH_DATA") or "~/.lsbench/data").expanduser()


def data_dir_origin() -> str:
    """Where :func:`default_data_dir` came from, for messages."""
    return "$LSBENCH_DATA" if os.environ.get("LSBENCH_DATA") else "the default; $LSBENCH_DATA is not set"


def source_of(name: str) -> DataSource:
    """The dataset ``name``; :class:`DataError` lists the valid ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r} (valid: {', '.join(SOURCES)})") from None


def offered_splits(name: str) -> tuple[str, ...]:
    """The split rules dataset ``name`` offers."""
    return source_of(name).splits


def dataset_of(problem: str) -> str:
    """The dataset of a problem named ``<dataset>_<model>`` (dataset keys contain no ``_``), without importing the
    registry (which imports torch)."""
    dataset = problem.partition("_")[0]
    if dataset not in SOURCES:
        raise DataError(f"problem {problem!r}: unknown dataset {dataset!r} (valid: {', '.join(SOURCES)})")
    return dataset


# -- presence ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be read from a data directory (what ``lsbench data check`` lists)."""

    name: str
    title: str
    kind: Kind
    present: bool
    path: Path | None  # where it is (present) or the first file missing; None when nothing is read from disk
    splits: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.name,
            "title": self.title,
            "kind": self.kind,
            "present": self.present,
            "path": None if self.path is None else str(self.path),
            "splits": list(self.splits),
        }


def _exists(path: Path, form: str) -> bool:
    return path.is_dir() if form.endswith("/") else path.is_file()


def _first_missing(source: DataSource, data_dir: Path) -> Path | None:
    for forms in source.needs:
        if not any(_exists(data_dir / form, form) for form in forms):
            return data_dir / forms[0]
    return None


def dataset_status(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetStatus:
    """Whether dataset ``name`` is in ``data_dir`` (default :func:`default_data_dir`); bundled and generated data
    are always present."""
    source = source_of(name)
    root = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    if not source.on_disk:
        return DatasetStatus(name, source.title, source.kind, True, None, source.splits)
    missing = _first_missing(source, root)
    if missing is None:  # the top folder of the form found of its first file
        found = next(form for form in source.needs[0] if _exists(root / form, form))
        return DatasetStatus(name, source.title, source.kind, True, root / found.split("/")[0], source.splits)
    return DatasetStatus(name, source.title, source.kind, False, missing, source.splits)


def _fix(source: DataSource, data_dir: Path, set_dir: str) -> str:
    if source.kind == "download":
        return (
            f"run `lsbench data download {source.name} --data-dir {data_dir}` on a machine with network access, "
            f"or {set_dir} to a directory that holds {source.folder}"
        )
    return f"{source.how}, or {set_dir} to a directory that holds {source.folder}"


def check_splits(runs: Iterable[tuple[str, str]]) -> list[str]:
    """The split rules that runs, given as ``(problem, split)`` pairs, ask of a dataset that does not offer them: one
    line each (wrong wherever the data is). :class:`DataError` for a problem of an unknown dataset."""
    first: dict[tuple[str, str], str] = {}  # (dataset, split) -> the first problem asking for it
    for problem, split in runs:
        first.setdefault((dataset_of(problem), split), problem)
    return [
        f"{problem}: dataset {dataset!r} has no split {split!r} (it offers: {', '.join(SOURCES[dataset].splits)})"
        for (dataset, split), problem in first.items()
        if split not in SOURCES[dataset].splits
    ]


def check_data(
    runs: Iterable[tuple[str, str]],
    data_dir: str | os.PathLike[str],
    *,
    origin: str = "",
    set_dir: str = "set $LSBENCH_DATA",
) -> list[str]:
    """The datasets that runs, given as ``(problem, split)`` pairs, cannot find in ``data_dir``: one line each,
    naming the problems, the first file missing and how to get it. ``origin`` says where ``data_dir`` came from and
    ``set_dir`` how to change it. Only looks for the files (:data:`SOURCES`); bundled and generated data is always
    there."""
    problems_of: dict[str, list[str]] = {}  # dataset -> its problems, in order of appearance
    for problem, _split in runs:
        listed = problems_of.setdefault(dataset_of(problem), [])
        if problem not in listed:
            listed.append(problem)
    root = Path(data_dir).expanduser()
    shown = f"{root} ({origin})" if origin else str(root)
    found = []
    for dataset, problems in problems_of.items():
        source = SOURCES[dataset]
        missing = _first_missing(source, root) if source.on_disk else None
        if missing is not None:
            named = ", ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
            found.append(f"{source.title} (for {named}) is not in {shown}: no {missing}; {_fix(source, root, set_dir)}")
    return found


# -- download ------------------------------------------------------------------------------------------------


def download(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetStatus:
    """Fetch dataset ``name`` into ``data_dir`` (default :func:`default_data_dir`) with torchvision's downloader,
    unless it is there already; returns its status afterwards.

    Raises:
        DataError: lsbench cannot download this dataset (licensed data, or data that is bundled or generated).
        DownloadFailed: the download failed (e.g. no network), in one line.
    """
    source = source_of(name)
    root = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    status = dataset_status(name, root)
    if status.present:
        return status
    if source.fetch is None:
        raise DataError(f"{source.title} cannot be downloaded by lsbench: {source.how}; then put it in {root}")
    try:
        source.fetch(root)
    except Exception as error:
        # torchvision raises URLError, OSError or RuntimeError (a failed checksum) with multi-line messages.
        reason = " ".join(str(getattr(error, "reason", None) or error).split()) or type(error).__name__
        raise DownloadFailed(
            f"cannot download {source.title} into {root}: {reason}; it needs network access to the dataset's host: "
            f"run `lsbench data download {name} --data-dir DIR` where there is, then copy DIR/{source.folder} to {root}"
        ) from None
    status = dataset_status(name, root)
    if not status.present:
        raise DownloadFailed(f"{source.title} was downloaded into {root} but {status.path} is still missing")
    return status
