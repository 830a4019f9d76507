"""The optimizer registry: grid names, hyperparameter declarations, construction and step reports.

Every optimizer a grid may name is declared here once, with each hyperparameter's type, range and default.
This is the single source of truth that grid validation, the CLI and the trainer read: a key that is not
declared here is not a hyperparameter.

Some constructor arguments describe the training run rather than the optimizer (the step budget, the batch size,
the training-set size). They are not grid keys; the trainer supplies them from a :class:`TrainingContext`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from lsbench.optim.alig import ALIG
from lsbench.optim.baselines import SCHEDULES, SGD, Adam, RMSprop
from lsbench.optim.cocob import COCOB
from lsbench.optim.gols_i import GOLSI
from lsbench.optim.labpal import ESTIMATORS, LABPAL, THESIS_SCHEDULE
from lsbench.optim.noise import noise_adapted
from lsbench.optim.pal import PAL
from lsbench.optim.pls import PLS
from lsbench.optim.sgd_hd import SGDHD
from lsbench.optim.sls import RESET_OPTIONS, SLS

_TYPE_NAMES = {float: "float", int: "int", bool: "bool", str: "str", list: "list"}


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its grid key, type, default, valid range or choices, meaning and thesis symbol."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    symbol: str = ""
    """The symbol the thesis' tables and algorithms use (e.g. "μ", "s_max"); empty where the thesis has none."""

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this hyperparameter's type, or raise ValueError saying why not."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{self.name}: must not be null")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is list and isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        if not isinstance(value, self.type) or (self.type is not bool and isinstance(value, bool)):
            raise ValueError(f"{self.name}: expected {_TYPE_NAMES[self.type]}, got {type(value).__name__} {value!r}")
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"{self.name}: must be finite, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{self.name}: {value!r} is below the minimum {self.low}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{self.name}: {value!r} is above the maximum {self.high}")
        return value


@dataclass(frozen=True)
class TrainingContext:
    """Facts about the training run that some optimizers need (never grid keys)."""

    total_steps: int
    batch_size: int
    train_size: int

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.train_size // self.batch_size)


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: how to build it and which hyperparameters a grid may set."""

    name: str
    description: str
    factory: Callable[..., Optimizer]
    hparams: tuple[HParam, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    context: Callable[[TrainingContext], dict[str, Any]] = lambda ctx: {}

    def hparam(self, name: str) -> HParam:
        for hp in self.hparams:
            if hp.name == name:
                return hp
        raise ValueError(
            f"unknown hyperparameter {name!r} for optimizer {self.name!r} "
            f"(valid: {', '.join(hp.name for hp in self.hparams)})"
        )

    def resolve(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``values``, each validated; unknown keys raise ValueError."""
        resolved = {hp.name: hp.default for hp in self.hparams}
        for name, value in values.items():
            resolved[name] = self.hparam(name).validate(value)
        return resolved

    def build(self, params: Iterable[Tensor], values: Mapping[str, Any], context: TrainingContext) -> Optimizer:
        return self.factory(params, **self.fixed, **self.resolve(values), **self.context(context))


def _total_steps(ctx: TrainingContext) -> dict[str, Any]:
    return {"total_steps": ctx.total_steps}


def _labpal_context(ctx: TrainingContext) -> dict[str, Any]:
    return {"total_steps": ctx.total_steps, "batch_size": ctx.batch_size, "training_set_size": ctx.train_size}


def _sls_context(ctx: TrainingContext) -> dict[str, Any]:
    return {"batches_per_epoch": ctx.batches_per_epoch}


def _noise_context(ctx: TrainingContext) -> dict[str, Any]:
    """What a noise-adapted line search needs (lsbench.optim.noise): the budget and Eq. 6.8's inputs."""
    return {"total_steps": ctx.total_steps, "batch_size": ctx.batch_size, "training_set_size": ctx.train_size}


def _noise_sls_context(ctx: TrainingContext) -> dict[str, Any]:
    return {**_noise_context(ctx), **_sls_context(ctx)}


_SCHEDULE = HParam(
    "lr_schedule",
    str,
    "constant",
    "constant, or piecewise: ÷10 at 50 % and ÷100 at 75 % of the budget",
    choices=SCHEDULES,
)

_NOISE_FACTOR = HParam(
    "noise_factor",
    float,
    1.0,
    "ε of Eq. 6.8: every update measures the mean of max(int(ε), 1) batches and the budget becomes "
    "round(ε · steps); null derives ε from batch and training-set size; 1 = off",
    low=0.0,
    nullable=True,
    symbol="ε",
)

_LABPAL_HPARAMS = (
    HParam("update_step_adaptation", float, 1.8, "α: multiplies the clipped vertex step", low=0.0, symbol="α"),
    HParam("momentum", float, 0.0, "heavy-ball factor on the direction", low=0.0, high=1.0, symbol="β"),
    HParam("sgd_steps", int, 1000, "n_SGD: updates between measurements", low=1, symbol="n_SGD"),
    HParam(
        "approximation_batch_size",
        int,
        1280,
        "|B_a|: samples per line measurement (at k = 1)",
        low=1,
        symbol="|B_a|",
    ),
    HParam(
        "batch_size_schedule",
        list,
        [list(e) for e in THESIS_SCHEDULE],
        "k(t) as [fraction of budget, multiplier] pairs",
        symbol="k(t)",
    ),
    HParam("max_step_size", float, 1.0, "cap on the vertex step before α", low=0.0, symbol="s_max"),
    HParam(
        "noise_factor",
        float,
        1.0,
        "ε of Eq. 6.8; null derives it from batch and training-set size",
        low=0.0,
        nullable=True,
        symbol="ε",
    ),
    HParam("measuring_step_size", float, 0.01, "far probe distance", low=0.0),
    HParam("near_measuring_step_size", float, 1.77e-4, "near probe distance", low=0.0),
    HParam("estimator", str, "published", "parabola fit: published (reference code) or exact", choices=ESTIMATORS),
    HParam("untrustworthy_updates", int, 400, "updates before measurements are averaged", low=0),
    HParam("averaging_window", int, 25, "measurements averaged after that", low=1),
    HParam("direction_norm_bounds", list, [1e-3, 100.0], "valid range of the measuring direction's norm"),
)

OPTIMIZERS: dict[str, OptimizerEntry] = {
    entry.name: entry
    for entry in (
        OptimizerEntry(
            "sgd",
            "SGD with momentum (torch)",
            SGD,
            (
                HParam("lr", float, 0.1, "learning rate λ", low=0.0, symbol="λ"),
                HParam("momentum", float, 0.0, "momentum", low=0.0, high=1.0, symbol="α"),
                HParam("nesterov", bool, False, "Nesterov momentum"),
                _SCHEDULE,
            ),
            context=_total_steps,
        ),
        OptimizerEntry(
            "adam",
            "Adam (torch)",
            Adam,
            (
                HParam("lr", float, 1e-3, "learning rate λ", low=0.0, symbol="λ"),
                HParam("beta1", float, 0.9, "first-moment decay β1", low=0.0, high=1.0, symbol="β_1"),
                HParam("beta2", float, 0.999, "second-moment decay β2", low=0.0, high=1.0, symbol="β_2"),
                HParam("epsilon", float, 1e-8, "denominator guard ε", low=0.0, symbol="ϵ"),
                _SCHEDULE,
            ),
            context=_total_steps,
        ),
        OptimizerEntry(
            "rmsprop",
            "RMSprop (torch)",
            RMSprop,
            (
                HParam("lr", float, 1e-2, "learning rate λ", low=0.0, symbol="λ"),
                HParam("alpha", float, 0.9, "discounting factor f", low=0.0, high=1.0, symbol="f"),
                HParam("epsilon", float, 1e-8, "denominator guard ε", low=0.0, symbol="ϵ"),
                HParam("momentum", float, 0.0, "momentum", low=0.0, high=1.0),
                _SCHEDULE,
            ),
            context=_total_steps,
        ),
        OptimizerEntry(
            "pal",
            "Parabolic Approximation Line Search (thesis Ch. 4)",
            noise_adapted(PAL),
            (
                HParam("measuring_step_size", float, 1.0, "μ: distance of the second measurement", low=0.0, symbol="μ"),
                HParam("update_step_adaptation", float, 1 / 0.6, "α: multiplies the vertex step", low=0.0, symbol="α"),
                HParam("direction_adaptation", float, 0.4, "β: direction-buffer decay", low=0.0, high=1.0, symbol="β"),
                HParam("max_step_size", float, 3.16, "s_max: cap on the step", low=0.0, symbol="s_max"),
                _NOISE_FACTOR,
            ),
            context=_noise_context,
        ),
        OptimizerEntry(
            "labpal_sgd",
            "Large-Batch PAL, SGD variant (thesis Ch. 6)",
            LABPAL,
            _LABPAL_HPARAMS,
            fixed={"mode": "sgd"},
            context=_labpal_context,
        ),
        OptimizerEntry(
            "labpal_nsgd",
            "Large-Batch PAL, normalized-SGD variant (thesis Ch. 6)",
            LABPAL,
            _LABPAL_HPARAMS,
            fixed={"mode": "nsgd"},
            context=_labpal_context,
        ),
        OptimizerEntry(
            "sls",
            "Stochastic Armijo line search (Vaswani et al. 2019)",
            noise_adapted(SLS),
            (
                HParam("initial_step_size", float, 1.0, "η0", low=0.0, symbol="μ"),
                HParam("armijo_constant", float, 0.1, "c of the Armijo condition", low=0.0, high=1.0, symbol="c"),
                HParam("step_size_decay", float, 0.9, "β: backtracking factor", low=0.0, high=1.0, symbol="β"),
                HParam("step_size_reset", float, 2.0, "γ: growth per epoch of the reset", low=1.0, symbol="γ"),
                HParam(
                    "max_step_size",
                    float,
                    None,
                    "cap on the reset step (thesis grids: 10)",
                    low=0.0,
                    nullable=True,
                    symbol="μ_max",
                ),
                HParam("reset_option", str, "grow", "grow, keep or initial", choices=RESET_OPTIONS),
                _NOISE_FACTOR,
            ),
            context=_noise_sls_context,
        ),
        OptimizerEntry(
            "gols_i",
            "Gradient-Only Line Search that is Inexact (Kafka & Wilke 2019), one batch per evaluation",
            noise_adapted(GOLSI),
            (
                HParam(
                    "initial_step_size",
                    float,
                    1e-8,
                    "λ_init of the first search; later searches start at the last accepted step",
                    low=0.0,
                    symbol="μ",
                ),
                HParam(
                    "momentum", float, 0.0, "heavy-ball factor of the search direction", low=0.0, high=1.0, symbol="β"
                ),
                HParam(
                    "step_size_scaling",
                    float,
                    2.0,
                    "η > 1: grow/shrink factor of the trial step",
                    low=1.0,
                    symbol="η",
                ),
                HParam(
                    "wolfe_c2",
                    float,
                    0.9,
                    "modified Wolfe condition: accept the first trial if 0 ≤ D ≤ c2·|D_0|",
                    low=0.0,
                    symbol="c2",
                ),
                _NOISE_FACTOR,
            ),
            context=_noise_context,
        ),
        OptimizerEntry(
            "pls",
            "Probabilistic Line Search (Mahsereci & Hennig 2015; the TF-reference variant), one batch per evaluation",
            noise_adapted(PLS, pooled=True),  # PLS reads the BatchClosure's model and batch: pooled mode
            (
                HParam(
                    "initial_step_size", float, 0.01, "α0: the first line's first trial step", low=0.0, symbol="α_0"
                ),
                HParam(
                    "armijo_constant", float, 0.05, "c1 of the first Wolfe condition", low=0.0, high=1.0, symbol="c_1"
                ),
                HParam(
                    "acceptance_threshold",
                    float,
                    0.3,
                    "cW: accept a point whose Wolfe probability reaches it",
                    low=0.0,
                    high=1.0,
                    symbol="c_W",
                ),
                HParam("momentum", float, 0.0, "direction d ← βd − g", low=0.0, high=1.0, symbol="β"),
                _NOISE_FACTOR,
            ),
            context=_noise_context,
        ),
        OptimizerEntry(
            "alig",
            "ALI-G: clipped Polyak step with momentum (Berrada et al. 2020)",
            ALIG,
            (
                HParam(
                    "max_lr",
                    float,
                    0.1,
                    "maximal learning rate (cap on the Polyak step); null: no cap",
                    low=0.0,
                    nullable=True,
                    symbol="λ",
                ),
                HParam("momentum", float, 0.9, "momentum", low=0.0, high=1.0, symbol="β"),
                HParam("epsilon", float, 1e-5, "denominator guard of the Polyak step", low=0.0, symbol="ϵ"),
            ),
        ),
        OptimizerEntry(
            "sgd_hd",
            "SGD with hypergradient descent on the learning rate (Baydin et al. 2018)",
            SGDHD,
            (
                HParam("lr", float, 0.01, "initial learning rate", low=0.0, symbol="λ"),
                HParam(
                    "hypergradient_lr",
                    float,
                    1e-3,
                    "hyper gradient learning rate: λ_t = λ_{t-1} + β g_t·u_{t-1}",
                    low=0.0,
                    symbol="β",
                ),
                HParam("momentum", float, 0.0, "momentum (not in the thesis grids)", low=0.0, high=1.0),
            ),
        ),
        OptimizerEntry(
            "cocob",
            "COCOB-Backprop: coin betting, no learning rate (Orabona & Tommasi 2017)",
            COCOB,
            (HParam("alpha", float, 100.0, "restriction factor", low=0.0, symbol="α"),),
        ),
    )
}


def get_optimizer(name: str) -> OptimizerEntry:
    """The registry entry for a grid name; an unknown name raises ValueError listing the valid ones."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r} (valid: {', '.join(OPTIMIZERS)})") from None


def build_optimizer(
    name: str, params: Iterable[Tensor], hparams: Mapping[str, Any], context: TrainingContext
) -> Optimizer:
    """Construct the optimizer registered as ``name`` with validated hyperparameters."""
    return get_optimizer(name).build(params, hparams, context)


def training_steps(optimizer: Optimizer, steps: int) -> int:
    """The budget the trainer should run: LABPAL's noise adaptation rescales it (Eq. 6.8), others keep it."""
    return getattr(optimizer, "training_steps", steps)


@dataclass(frozen=True)
class StepReport:
    """What an optimizer says about its last step. Values may be device tensors: read them only when logging."""

    effective_lr: Tensor | float
    updated: Tensor | bool
    forward_passes: int
    backward_passes: int


def step_report(optimizer: Optimizer) -> StepReport:
    """The last step's report of any lsbench optimizer (line searches and the wrapped torch baselines)."""
    return StepReport(
        optimizer.effective_lr,  # type: ignore[attr-defined]
        optimizer.updated,  # type: ignore[attr-defined]
        optimizer.forward_passes,  # type: ignore[attr-defined]
        optimizer.backward_passes,  # type: ignore[attr-defined]
    )
