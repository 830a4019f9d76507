"""The run model: what a run is (its identity, from which its id, store row, plan entry and trainer configuration
derive) and the states it goes through. Torch-free."""

from lsbench.runs.spec import (
    DEFAULT_KIND,
    DEFAULT_SPLIT,
    IDENTITY_FIELDS,
    KINDS,
    SPLITS,
    RunSpec,
    canonical_json,
    run_id_of,
)
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
    "DEFAULT_KIND",
    "DEFAULT_SPLIT",
    "FAILED",
    "FINISHED",
    "IDENTITY_FIELDS",
    "KINDS",
    "NO_RESULT",
    "PENDING",
    "RESUBMIT_FAILED",
    "RESUBMIT_MISSING",
    "RUN_STATES",
    "SPLITS",
    "STOPPED",
    "RunSpec",
    "RunState",
    "canonical_json",
    "run_id_of",
]
