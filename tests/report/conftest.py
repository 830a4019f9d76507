"""A small hand-checkable sweep shared by the report tests."""

import pytest

from lsbench.report import RunOutcome

PROBLEM = "cifar10_resnet32"
OPTIMIZER = "sgd_mom"


def _run(hparams: dict, seed: int, status: str, loss=None, val=None, test=None) -> RunOutcome:
    return RunOutcome(PROBLEM, OPTIMIZER, hparams, seed, status, loss, val, test)


@pytest.fixture
def example() -> list[RunOutcome]:
    """Four points × three seeds of one (problem, optimizer), with hand-computable per-point means.

    A {lr: 0.1}:   three completed seeds                      -> loss 2.0, val 0.60, test 0.50
    B {lr: 0.01}:  two completed, one diverged (ignored)      -> loss 1.0, val 0.85, test 0.75
    C {lr: 1.0}:   all three diverged                         -> no metric, not a point
    D {lr: 0.001}: two completed, one failed                  -> loss 5.0, val 0.40, test 0.30
    plus one timeout and one running run of a fifth point E that never completed.
    """
    a, b, c, d, e = {"lr": 0.1}, {"lr": 0.01}, {"lr": 1.0}, {"lr": 0.001}, {"lr": 0.5}
    return [
        _run(a, 1, "completed", 1.0, 0.5, 0.4),
        _run(a, 2, "completed", 2.0, 0.6, 0.5),
        _run(a, 3, "completed", 3.0, 0.7, 0.6),
        _run(b, 1, "completed", 0.5, 0.8, 0.7),
        _run(b, 2, "completed", 1.5, 0.9, 0.8),
        _run(b, 3, "diverged", float("nan"), 0.1, 0.1),
        _run(c, 1, "diverged"),
        _run(c, 2, "diverged", float("inf"), 0.1, 0.1),
        _run(c, 3, "diverged"),
        _run(d, 1, "completed", 4.0, 0.3, 0.2),
        _run(d, 2, "failed"),
        _run(d, 3, "completed", 6.0, 0.5, 0.4),
        _run(e, 1, "timeout"),
        _run(e, 2, "running"),
    ]
