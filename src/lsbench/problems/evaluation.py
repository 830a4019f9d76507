"""Loss and accuracy of a model over a whole evaluation split, and the losses of the problems.

Targets may be class labels ``(N,)`` with logits ``(N, C)``, or one label per position ``(N, T)`` with logits
``(N, T, C)`` (character-level language models, :class:`SequenceCrossEntropy`): accuracy is then the fraction
of correctly predicted positions, and the loss the mean over positions. Floating-point targets are a regression
(the matrix factorization problems, squared loss): the loss is the mean over every output, and there is no
accuracy -- it is reported as NaN, which the trainer writes as null and the reports skip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsbench.problems.sampling import EvalSplit

__all__ = ["SequenceCrossEntropy", "evaluate"]


class SequenceCrossEntropy(nn.Module):
    """Mean cross-entropy over every position of every sequence.

    Takes logits ``(N, T, V)`` and targets ``(N, T)`` (class ids), flattens both to ``N * T`` predictions and
    returns their mean cross-entropy, as DeepOBS' ``tolstoi_char_rnn`` averages over all characters of a batch.
    Also accepts plain ``(N, V)``/``(N,)`` pairs, so it reduces to ``nn.CrossEntropyLoss()`` there.
    """

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape[:-1] != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: EvalSplit,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """Return ``(mean loss, accuracy)`` of ``model`` over all of ``data``, computed in eval mode; the accuracy is
    NaN for floating-point (regression) targets.

    ``data`` is a :class:`~lsbench.problems.sampling.DataSplit` on the device or a streamed split
    (:class:`~lsbench.problems.sampling.StreamedSplit`) read from disk batch by batch; ``batch_size``
    defaults to the split's ``eval_batch_size``.

    Eval mode makes BatchNorm use its running statistics, so the result does not depend on ``batch_size``
    (up to float rounding); the model's previous train/eval mode is restored afterwards so a trainer can call
    this in the middle of training. ``loss_fn`` must return the *mean* loss over the target elements of a
    chunk (as ``nn.CrossEntropyLoss()`` and :class:`SequenceCrossEntropy` do); chunks are weighted by their
    number of target elements, so with ``(N, T)`` targets both numbers are per position. The sums stay on the
    device until the end so evaluation costs one host synchronisation, not one per chunk.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty split")
    chunk = data.eval_batch_size if batch_size is None else batch_size
    if chunk < 1:
        raise ValueError(f"batch_size must be positive, got {chunk}")

    def score(inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor | None]:
        logits = model(inputs)
        loss = loss_fn(logits, targets).double() * targets.numel()
        return loss, None if targets.is_floating_point() else (logits.argmax(dim=-1) == targets).sum()

    loss_sum, correct, count = split_sums(model, data, score, chunk)
    if correct is None:
        return loss_sum.item() / count, math.nan
    values = torch.stack([loss_sum, correct.double()]).tolist()
    return values[0] / count, values[1] / count


Score = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]
"""One chunk's ``(loss sum, correct predictions)`` as device tensors (scalars, or one per fused copy); the count is
None for a regression."""


@torch.no_grad()
def split_sums(model: nn.Module, data: EvalSplit, score: Score, chunk: int) -> tuple[Tensor, Tensor | None, int]:
    """The sums of ``score`` over all of ``data`` in chunks of ``chunk`` samples, computed in eval mode (the model's
    mode is restored), and the number of target elements they cover.

    The one evaluation loop: :func:`evaluate` scores one model, :func:`lsbench.fused.trainer.evaluate_copies` every
    copy of a fused model. The sums stay on the device, so the caller reads them in one host synchronisation."""
    was_training = model.training
    model.eval()
    try:
        loss_sum: Tensor | None = None
        correct: Tensor | None = None
        count = 0
        for inputs, targets in data.batches(chunk):
            chunk_loss, chunk_correct = score(inputs, targets)
            loss_sum = chunk_loss if loss_sum is None else loss_sum + chunk_loss
            if chunk_correct is not None:
                correct = chunk_correct if correct is None else correct + chunk_correct
            count += targets.numel()
    finally:
        model.train(was_training)
    assert loss_sum is not None
    return loss_sum, correct, count
