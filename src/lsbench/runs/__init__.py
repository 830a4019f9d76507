"""The run model: what a run is (its identity, from which its id, store row, plan entry and trainer configuration
derive) and the states it goes through. Torch-free."""

from lsbench.runs.states import (
    ACTIVE,
    FAILED,
    FINISHED,
    NO_RESULT,
    PENDING,
    RESUBMIT_FAILED,
    RESUBMIT_MISSING,
    RUN_STATES,
    STOPPED,
    RunState,
)

__all__ = [
    "ACTIVE",
    "FAILED",
    "FINISHED",
    "NO_RESULT",
    "PENDING",
    "RESUBMIT_FAILED",
    "RESUBMIT_MISSING",
    "RUN_STATES",
    "STOPPED",
    "RunState",
]
