"""Helpers shared by the trainer tests (the one-thread setting comes from tests/conftest.py)."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lsbench.train import FINAL_MODEL_FILE


def _assert_same_run(out: Path, other_out: Path, result: dict, other: dict) -> None:
    """Two completed runs (``TrainResult.to_dict()`` form) have the same evaluation points except for the
    elapsed seconds, the same mean learning rate and bitwise the same final parameters in their directories."""
    assert result["status"] == other["status"] == "completed"

    def without_elapsed(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in point.items() if k != "elapsed"} for point in history]

    assert without_elapsed(result["history"]) == without_elapsed(other["history"])
    assert result["mean_effective_lr"] == other["mean_effective_lr"]
    params, other_params = torch.load(out / FINAL_MODEL_FILE), torch.load(other_out / FINAL_MODEL_FILE)
    assert params.keys() == other_params.keys()
    for name, value in params.items():
        assert torch.equal(value, other_params[name]), name


@pytest.fixture
def assert_same_run() -> Callable[[Path, Path, dict, dict], None]:
    return _assert_same_run
