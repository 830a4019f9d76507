"""Tolstoi's War and Peace as a character-level next-character prediction task (DeepOBS' ``tolstoi``).

Sources, in ``data_dir/tolstoi/``:

* ``war_and_peace.txt``, the raw text (UTF-8): the vocabulary is its sorted set of distinct characters and
  every character becomes its index in that vocabulary; the first 80 % of the characters are the training
  part and the last 20 % the test part (DeepOBS' preparation script; its test set of 653,237 characters is
  20 % of the text);
* or, if there is no text file, DeepOBS' prepared ``train.npy`` and ``test.npy`` (the two parts as arrays of
  character ids; the vocabulary size is then the largest id + 1, 83 for DeepOBS' files).

DeepOBS evaluates on a subset of the training data; for a validation split that takes no part in training,
the last eighth of the training part (10 % of the text) is held out here: training = characters [0, 70 %),
validation = [70 %, 80 %), test = [80 %, 100 %), each contiguous, so no sequence straddles two splits.

Each part is cut into consecutive non-overlapping sequences of ``SEQUENCE_LENGTH`` = 50 characters (DeepOBS'
``seq_length``); the targets of a sequence are its characters shifted by one, i.e. the next character of the
text at every position (the last target is the first character of the next sequence). DeepOBS keeps the
sequences of a batch in text order for a stateful RNN; the model here (``charrnn``) starts every sequence
from a zero state, so sequences are independent samples and the training sampler shuffles them like images.
No augmentation (thesis App. A.2.3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lsbench.problems.datasets import RawDataset, _check_split, missing_data_error

__all__ = [
    "SEQUENCE_LENGTH",
    "TOLSTOI_FOLDER",
    "encode_text",
    "load_tolstoi",
    "make_sequences",
    "read_tolstoi",
    "tolstoi_parts",
]

TOLSTOI_FOLDER = "tolstoi"
TEXT_FILE = "war_and_peace.txt"
SEQUENCE_LENGTH = 50
"""Characters per sequence (DeepOBS ``tolstoi`` ``seq_length``)."""


def encode_text(text: str) -> tuple[Tensor, tuple[str, ...]]:
    """``(ids, vocabulary)``: the sorted distinct characters of ``text`` and the text as int64 indices into it."""
    vocabulary = tuple(sorted(set(text)))
    lookup = {char: index for index, char in enumerate(vocabulary)}
    ids = np.fromiter((lookup[char] for char in text), dtype=np.int64, count=len(text))
    return torch.from_numpy(ids), vocabulary


def read_tolstoi(root: str | Path) -> tuple[Tensor, Tensor, int, tuple[str, ...] | None]:
    """Read ``root/tolstoi/``: ``(train_part, test_part, vocabulary_size, vocabulary)``.

    The parts are int64 character ids (80 %/20 % of the text); ``vocabulary`` is ``None`` when the data came
    from DeepOBS' ``.npy`` files, which do not store it.
    """
    folder = Path(root).expanduser() / TOLSTOI_FOLDER
    text_file = folder / TEXT_FILE
    if text_file.is_file():
        ids, vocabulary = encode_text(text_file.read_text(encoding="utf-8"))
        split_at = ids.shape[0] - ids.shape[0] // 5
        return ids[:split_at], ids[split_at:], len(vocabulary), vocabulary
    arrays = [folder / "train.npy", folder / "test.npy"]
    if not all(path.is_file() for path in arrays):
        raise missing_data_error(
            "Tolstoi (War and Peace)",
            text_file,
            f"{TOLSTOI_FOLDER}/{TEXT_FILE} or DeepOBS' train.npy/test.npy",
            downloadable=False,
        )
    train, test = (torch.from_numpy(np.load(path).astype(np.int64).reshape(-1)) for path in arrays)
    size = int(max(train.max().item(), test.max().item())) + 1
    return train, test, size, None


def tolstoi_parts(train_part: Tensor) -> tuple[Tensor, Tensor]:
    """Split the 80 % training part into training (its first 7/8) and validation (its last 1/8) characters."""
    split_at = train_part.shape[0] - train_part.shape[0] // 8
    return train_part[:split_at], train_part[split_at:]


def make_sequences(ids: Tensor, length: int = SEQUENCE_LENGTH) -> tuple[Tensor, Tensor]:
    """Cut ``ids`` into ``(len(ids) - 1) // length`` sequences; returns ``(inputs, targets)``, both
    ``(num_sequences, length)``, with ``targets[i, t]`` the character after ``inputs[i, t]``."""
    count = (ids.shape[0] - 1) // length
    if count < 1:
        raise ValueError(f"{ids.shape[0]} characters are too few for one sequence of {length} plus its target")
    inputs = ids[: count * length].reshape(count, length)
    targets = ids[1 : count * length + 1].reshape(count, length)
    return inputs.clone(), targets.clone()


def load_tolstoi(root: Path, split: str, download: bool) -> RawDataset:
    """The Tolstoi dataset as sequences: see the module docstring. ``download`` is not supported."""
    _check_split("tolstoi", split)
    train_part, test_part, vocabulary_size, _ = read_tolstoi(root)
    train, validation = tolstoi_parts(train_part)
    train_inputs, train_targets = make_sequences(train)
    validation_inputs, validation_targets = make_sequences(validation)
    test_inputs, test_targets = make_sequences(test_part)
    return RawDataset(
        train_inputs=train_inputs,
        train_targets=train_targets,
        validation_inputs=validation_inputs,
        validation_targets=validation_targets,
        test_inputs=test_inputs,
        test_targets=test_targets,
        num_classes=vocabulary_size,
        mean=(),
        std=(),
        augmentation=None,
        task="next_token",
    )
