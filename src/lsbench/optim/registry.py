"""The optimizer registry: grid names, hyperparameter declarations, construction and step reports.

Every optimizer a grid may name is declared here once, with the hyperparameters a grid may set: their type,
meaning and thesis symbol. This is the single list that grid validation, the CLI and the trainer read: a key that
is not declared here is not a hyperparameter.

Each hyperparameter's **default and valid range are not written here**; they have exactly one home each:

* the default is the constructor's, read from its signature (:func:`inspect.signature`; for a noise-adapted line
  search the signatures of :class:`~lsbench.optim.noise.NoiseAdaptation` and of the wrapped class);
* the range is the constructor's ``RANGES`` declaration (:mod:`lsbench.optim._hparams`), which the constructor
  itself checks its arguments with.

Why this way round: the constructors must validate anyway (they are public and used without the registry), and
the defaults they document are the ones a direct user gets, so the registry derives both instead of restating
them; declaring them in the registry instead would make each constructor import its own registry entry, which
does not exist for the non-grid arguments (``epsilon``, ``max_backtracks``, ...) and is two entries for LABPAL.
An :class:`OptimizerEntry` fills in its :class:`HParam` objects when it is created, so a registry default can no
longer differ from the constructor's, and the registry rejects exactly the single values the constructor rejects.
Constraints between several arguments stay in the constructors; grid validation builds each point once to apply
them.

Some constructor arguments describe the training run rather than the optimizer (the step budget, the batch size,
the training-set size). They are not grid keys; the trainer supplies them from a :class:`TrainingContext`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from lsbench.optim._hparams import UNBOUNDED, Range
from lsbench.optim.alig import ALIG
from lsbench.optim.baselines import SGD, Adam, RMSprop
from lsbench.optim.cocob import COCOB
from lsbench.optim.exact import ExactLineSearch
from lsbench.optim.gols_i import GOLSI
from lsbench.optim.labpal import LABPAL
from lsbench.optim.noise import noise_adapted
from lsbench.optim.pal import PAL
from lsbench.optim.pls import PLS
from lsbench.optim.sgd_hd import SGDHD
from lsbench.optim.sls import SLS

_TYPE_NAMES = {float: "float", int: "int", bool: "bool", str: "str", list: "list"}


class _FromConstructor:
    def __repr__(self) -> str:
        return "<the constructor's default>"


FROM_CONSTRUCTOR: Any = _FromConstructor()
"""Placeholder default of a declared :class:`HParam`; its :class:`OptimizerEntry` replaces it."""


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: its grid key, type, meaning, thesis symbol, default and valid range.

    Registry declarations give name, type, help and symbol; :class:`OptimizerEntry` fills in ``default`` and
    ``range`` from the optimizer's constructor.
    """

    name: str
    type: type
    help: str
    symbol: str = ""
    """The symbol the thesis' tables and algorithms use (e.g. "μ", "s_max"); empty where the thesis has none."""
    default: Any = FROM_CONSTRUCTOR
    range: Range = UNBOUNDED

    @property
    def low(self) -> float | None:
        return self.range.low

    @property
    def high(self) -> float | None:
        return self.range.high

    @property
    def low_exclusive(self) -> bool:
        return self.range.low_exclusive

    @property
    def high_exclusive(self) -> bool:
        return self.range.high_exclusive

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return self.range.choices

    @property
    def nullable(self) -> bool:
        return self.range.nullable

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
        problem = self.range.problem(value)
        if problem:
            raise ValueError(f"{self.name}: {problem}")
        return value


def constructor_facts(factory: type) -> tuple[dict[str, Any], dict[str, Range]]:
    """The defaults and declared ranges of ``factory``'s constructor arguments.

    Walks the classes whose ``__init__`` runs when ``factory`` is built: from the most derived one on, as long as
    each passes unknown keywords on (``**kwargs``), as the noise adaptation does to the line search it wraps.
    A derived class' default or range wins over its base's. A factory that is a function has no ranges.
    """
    if not isinstance(factory, type):
        parameters = inspect.signature(factory).parameters.values()
        return {p.name: p.default for p in parameters if p.default is not p.empty}, {}
    defaults: dict[str, Any] = {}
    ranges: dict[str, Range] = {}
    for cls in factory.__mro__:
        init = vars(cls).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        for parameter in parameters:
            if parameter.default is not parameter.empty:
                defaults.setdefault(parameter.name, parameter.default)
        for name, bounds in vars(cls).get("RANGES", {}).items():
            ranges.setdefault(name, bounds)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            break
    return defaults, ranges


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

    def __post_init__(self) -> None:
        """Fill in every hyperparameter's default and range from the constructor (see the module docstring)."""
        defaults, ranges = constructor_facts(self.factory)  # type: ignore[arg-type]
        completed = []
        for hp in self.hparams:
            if hp.name not in defaults:
                raise TypeError(f"optimizer {self.name!r}: {hp.name!r} is not a constructor argument with a default")
            bounds = ranges.get(hp.name, UNBOUNDED)
            if hp.range not in (UNBOUNDED, bounds):
                raise TypeError(
                    f"optimizer {self.name!r}: declare the range of {hp.name!r} in the constructor's RANGES"
                )
            with_range = dataclasses.replace(hp, range=bounds, default=None)
            default = with_range.validate(defaults[hp.name])
            if hp.default is not FROM_CONSTRUCTOR and hp.default != default:
                raise TypeError(
                    f"optimizer {self.name!r}: the default of {hp.name!r} is the constructor's ({default!r})"
                )
            completed.append(dataclasses.replace(with_range, default=default))
        object.__setattr__(self, "hparams", tuple(completed))

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


_SCHEDULE = HParam("lr_schedule", str, "constant, or piecewise: ÷10 at 50 % and ÷100 at 75 % of the budget")

_NOISE_FACTOR = HParam(
    "noise_factor",
    float,
    "ε of Eq. 6.8: every update measures the mean of max(int(ε), 1) batches and the budget becomes "
    "round(ε · steps); null derives ε from batch and training-set size; 1 = off",
    symbol="ε",
)

_LABPAL_HPARAMS = (
    HParam("update_step_adaptation", float, "α: multiplies the clipped vertex step", symbol="α"),
    HParam("momentum", float, "heavy-ball factor on the direction", symbol="β"),
    HParam("sgd_steps", int, "n_SGD: updates between measurements", symbol="n_SGD"),
    HParam("approximation_batch_size", int, "|B_a|: samples per line measurement (at k = 1)", symbol="|B_a|"),
    HParam("batch_size_schedule", list, "k(t) as [fraction of budget, multiplier] pairs", symbol="k(t)"),
    HParam("max_step_size", float, "cap on the vertex step before α", symbol="s_max"),
    HParam("noise_factor", float, "ε of Eq. 6.8; null derives it from batch and training-set size", symbol="ε"),
    HParam("measuring_step_size", float, "far probe distance"),
    HParam("near_measuring_step_size", float, "near probe distance"),
    HParam("estimator", str, "parabola fit: published (reference code) or exact"),
    HParam("untrustworthy_updates", int, "updates before measurements are averaged"),
    HParam("averaging_window", int, "measurements averaged after that"),
    HParam("direction_norm_bounds", list, "valid range of the measuring direction's norm"),
)

OPTIMIZERS: dict[str, OptimizerEntry] = {
    entry.name: entry
    for entry in (
        OptimizerEntry(
            "sgd",
            "SGD with momentum (torch)",
            SGD,
            (
                HParam("lr", float, "learning rate λ", symbol="λ"),
                HParam("momentum", float, "momentum", symbol="α"),
                HParam("nesterov", bool, "Nesterov momentum"),
                _SCHEDULE,
            ),
            context=_total_steps,
        ),
        OptimizerEntry(
            "adam",
            "Adam (torch)",
            Adam,
            (
                HParam("lr", float, "learning rate λ", symbol="λ"),
                HParam("beta1", float, "first-moment decay β1", symbol="β_1"),
                HParam("beta2", float, "second-moment decay β2", symbol="β_2"),
                HParam("epsilon", float, "denominator guard ε", symbol="ϵ"),
                _SCHEDULE,
            ),
            context=_total_steps,
        ),
        OptimizerEntry(
            "rmsprop",
            "RMSprop (torch)",
            RMSprop,
            (
                HParam("lr", float, "learning rate λ", symbol="λ"),
                HParam("alpha", float, "discounting factor f", symbol="f"),
                HParam("epsilon", float, "denominator guard ε", symbol="ϵ"),
                HParam("momentum", float, "momentum"),
                _SCHEDULE,
            ),
            context=_total_steps,
        ),
        OptimizerEntry(
            "pal",
            "Parabolic Approximation Line Search (thesis Ch. 4)",
            noise_adapted(PAL),
            (
                HParam("measuring_step_size", float, "μ: distance of the second measurement", symbol="μ"),
                HParam("update_step_adaptation", float, "α: multiplies the vertex step", symbol="α"),
                HParam("direction_adaptation", float, "β: direction-buffer decay", symbol="β"),
                HParam("max_step_size", float, "s_max: cap on the step", symbol="s_max"),
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
                HParam("initial_step_size", float, "η0", symbol="μ"),
                HParam("armijo_constant", float, "c of the Armijo condition", symbol="c"),
                HParam("step_size_decay", float, "β: backtracking factor", symbol="β"),
                HParam("step_size_reset", float, "γ: growth per epoch of the reset", symbol="γ"),
                HParam("max_step_size", float, "cap on the reset step (thesis grids: 10)", symbol="μ_max"),
                HParam("reset_option", str, "grow, keep or initial"),
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
                    "λ_init of the first search; later searches start at the last accepted step",
                    symbol="μ",
                ),
                HParam("momentum", float, "heavy-ball factor of the search direction", symbol="β"),
                HParam("step_size_scaling", float, "η > 1: grow/shrink factor of the trial step", symbol="η"),
                HParam(
                    "wolfe_c2",
                    float,
                    "modified Wolfe condition: accept the first trial if 0 ≤ D ≤ c2·|D_0|",
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
                HParam("initial_step_size", float, "α0: the first line's first trial step", symbol="α_0"),
                HParam("armijo_constant", float, "c1 of the first Wolfe condition", symbol="c_1"),
                HParam(
                    "acceptance_threshold", float, "cW: accept a point whose Wolfe probability reaches it", symbol="c_W"
                ),
                HParam("momentum", float, "direction d ← βd − g", symbol="β"),
                _NOISE_FACTOR,
            ),
            context=_noise_context,
        ),
        OptimizerEntry(
            "alig",
            "ALI-G: clipped Polyak step with momentum (Berrada et al. 2020)",
            ALIG,
            (
                HParam("max_lr", float, "maximal learning rate (cap on the Polyak step); null: no cap", symbol="λ"),
                HParam("momentum", float, "momentum", symbol="β"),
                HParam("epsilon", float, "denominator guard of the Polyak step", symbol="ϵ"),
            ),
        ),
        OptimizerEntry(
            "sgd_hd",
            "SGD with hypergradient descent on the learning rate (Baydin et al. 2018)",
            SGDHD,
            (
                HParam("lr", float, "initial learning rate", symbol="λ"),
                HParam(
                    "hypergradient_lr",
                    float,
                    "hyper gradient learning rate: λ_t = λ_{t-1} + β g_t·u_{t-1}",
                    symbol="β",
                ),
                HParam("momentum", float, "momentum (not in the thesis grids)"),
            ),
        ),
        OptimizerEntry(
            "cocob",
            "COCOB-Backprop: coin betting, no learning rate (Orabona & Tommasi 2017)",
            COCOB,
            (HParam("alpha", float, "restriction factor", symbol="α"),),
        ),
        OptimizerEntry(
            "exact_ls",
            "Exact line search on the mini-batch loss along −g: doubling + golden section (thesis Sec. 4.6)",
            ExactLineSearch,
            (
                HParam("initial_step_size", float, "first trial distance along the unit direction on every line"),
                HParam("max_step_size", float, "cap on the distance moved along the unit direction", symbol="s_max"),
                HParam("max_evaluations", int, "loss evaluations (forward passes) per line, the thesis' 20"),
            ),
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
