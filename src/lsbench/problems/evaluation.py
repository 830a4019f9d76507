"""Loss and accuracy of a model over a whole evaluation split."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lsbench.problems.sampling import DataSplit

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: DataSplit,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """Return ``(mean loss, accuracy)`` of ``model`` over all of ``data``, computed in eval mode.

    Eval mode makes BatchNorm use its running statistics, so the result does not depend on ``batch_size``
    (up to float rounding); the model's previous train/eval mode is restored afterwards so a trainer can call
    this in the middle of training. ``loss_fn`` must return the *mean* loss of a chunk (as
    ``nn.CrossEntropyLoss()`` does); chunks are weighted by their size. The sums stay on the device until
    the end so evaluation costs one host synchronisation, not one per chunk.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty split")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=data.inputs.device)
        correct = torch.zeros((), dtype=torch.int64, device=data.inputs.device)
        for start in range(0, len(data), batch_size):
            inputs = data.inputs[start : start + batch_size]
            targets = data.targets[start : start + batch_size]
            logits = model(inputs)
            loss_sum += loss_fn(logits, targets).double() * targets.shape[0]
            correct += (logits.argmax(dim=1) == targets).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / len(data), correct.item() / len(data)
