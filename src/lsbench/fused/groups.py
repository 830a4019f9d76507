"""Which runs may train together as one fused model, and how a sweep's runs are grouped (no torch).

A fused group (:mod:`lsbench.fused`) trains K runs as one model with one vectorised optimizer. Its copies step in
lock-step through one loop, so they must agree on everything that shapes that loop or the model: the problem (the
architecture and data), the budget and evaluation interval, the batch size, the precision, the optimizer, the weight
decay, the split -- and the hyperparameters that change an optimizer's *control flow* (a schedule, a reset rule, a
measurement period), listed per optimizer in :data:`SHARED_HPARAMS`. Every other hyperparameter, and the seed, may
differ from copy to copy: the fused optimizer holds it as a vector.

:data:`FUSED_OPTIMIZERS` and :data:`FUSED_MODELS` name what fusion supports; a run of anything else (or a linescan
run) always trains alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from lsbench.runs.spec import DEFAULT_KIND, RunSpec, canonical_json

_LABPAL_SCHEDULE = (
    "sgd_steps",
    "approximation_batch_size",
    "batch_size_schedule",
    "noise_factor",
    "estimator",
    "untrustworthy_updates",
    "averaging_window",
)
"""What fixes when LABPAL measures and how many batches it averages: its copies step through one schedule."""

SHARED_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("nesterov", "lr_schedule"),
    "adam": ("lr_schedule",),
    "rmsprop": ("lr_schedule",),
    "pal": (),
    "sls": ("reset_option", "max_backtracks"),
    "labpal_sgd": _LABPAL_SCHEDULE,
    "labpal_nsgd": _LABPAL_SCHEDULE,
}
"""The optimizers that train fused, each with the hyperparameters that must be equal within a group."""

FUSED_OPTIMIZERS = tuple(SHARED_HPARAMS)

UNFUSED_NOISE_ADAPTATION = ("pal", "sls")
"""Optimizers whose noise adaptation (``noise_factor`` other than 1: every update averages several batches,
:mod:`lsbench.optim.noise`) has no fused version: such runs train alone."""

FUSED_MODELS = ("mlp", "cnn", "resnet20", "resnet32")
"""Models :func:`lsbench.fused.model.fuse_models` can fuse (by their :mod:`lsbench.problems.models` name)."""


def fusable(spec: RunSpec) -> bool:
    """Whether ``spec`` can train in a fused group at all."""
    from lsbench.problems import PROBLEMS

    problem = PROBLEMS.get(spec.problem)
    noise_adapted = spec.optimizer in UNFUSED_NOISE_ADAPTATION and spec.hparams.get("noise_factor", 1.0) != 1.0
    return (
        spec.kind == DEFAULT_KIND
        and spec.optimizer in SHARED_HPARAMS
        and not noise_adapted
        and problem is not None
        and problem.model in FUSED_MODELS
    )


def group_key(spec: RunSpec) -> str | None:
    """What runs of one group must share, as a string; None for a run that trains alone."""
    if not fusable(spec):
        return None
    shared = {name: spec.hparams.get(name) for name in SHARED_HPARAMS[spec.optimizer]}
    identity = spec.identity()
    for name in ("run_id", "hparams", "seed"):
        identity.pop(name, None)
    return canonical_json({**identity, "shared": shared})


def group_runs(specs: Sequence[RunSpec], runs_per_worker: int) -> list[list[int]]:
    """Positions in ``specs`` grouped into workers of at most ``runs_per_worker`` compatible runs.

    Runs keep their order: a group is filled with the next compatible runs, so a grid's seeds and neighbouring
    hyperparameters train together and a sweep's first groups finish first. A run that cannot be fused is a group of
    one.
    """
    if runs_per_worker < 1:
        raise ValueError(f"runs_per_worker must be at least 1, got {runs_per_worker}")
    groups: list[list[int]] = []
    open_groups: dict[str, list[int]] = {}
    for position, spec in enumerate(specs):
        key = group_key(spec) if runs_per_worker > 1 else None
        if key is None:
            groups.append([position])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= runs_per_worker:
            group = open_groups[key] = []
            groups.append(group)
        group.append(position)
    return groups
