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
    was_training = model.training
    model.eval()
    try:
        loss_sum: Tensor | None = None
        correct: Tensor | None = None
        count = 0
        regression = False
        for inputs, targets in data.batches(chunk):
            logits = model(inputs)
            elements = targets.numel()
            batch_loss = loss_fn(logits, targets).double() * elements
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            regression = targets.is_floating_point()
            if not regression:
                batch_correct = (logits.argmax(dim=-1) == targets).sum()
                correct = batch_correct if correct is None else correct + batch_correct
            count += elements
    finally:
        model.train(was_training)
    assert loss_sum is not None
    if regression:
        return loss_sum.item() / count, math.nan
    assert correct is not None
    return loss_sum.item() / count, correct.item() / count
