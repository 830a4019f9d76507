"""The step-based trainer: budget in steps, evaluation schedule, effective learning-rate logging, divergence
policy and checkpoint/resume.

    >>> from lsbench.train import TrainConfig, train
    >>> result = train(TrainConfig.create("digits_mlp", "sgd", {"lr": 0.1}, seed=1, steps=300))
    >>> result.status, result.final["test_acc"]

:mod:`lsbench.train.cli` holds the ``lsbench train`` command.
"""

from lsbench.train.checkpoint import load_checkpoint, save_checkpoint
from lsbench.train.device import DeviceUnavailableError
from lsbench.train.trainer import (
    FINAL_MODEL_FILE,
    METRICS_FILE,
    RESULT_FILE,
    CheckpointMismatchError,
    EvalPoint,
    Status,
    TrainConfig,
    TrainResult,
    train,
)

__all__ = [
    "FINAL_MODEL_FILE",
    "METRICS_FILE",
    "RESULT_FILE",
    "CheckpointMismatchError",
    "DeviceUnavailableError",
    "EvalPoint",
    "Status",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
