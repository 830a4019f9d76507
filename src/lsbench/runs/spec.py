"""What a run is: :class:`RunSpec`, the one definition of a run's identity.

Everything else about a run is derived from the fields declared here, so a new field is added in one place (plus
a store migration):

- the **run id**: the first 16 hex digits of the sha256 of the canonical JSON (``json.dumps(..., sort_keys=True,
  separators=(",", ":"))``) of :meth:`RunSpec.identity`;
- the **store row**: :meth:`RunSpec.to_dict` is the identity part of a row of the ``runs`` table, whose columns
  :mod:`lsbench.store.schema` builds from :data:`IDENTITY_FIELDS`;
- the **plan entry**: ``plan.json`` holds :meth:`RunSpec.to_dict` per sweep index, read back by
  :meth:`RunSpec.from_dict`;
- the **trainer configuration**: :meth:`RunSpec.train_config` wraps the spec with settings that say where and how
  often it is executed, never what it computes.

Hyperparameters are fully resolved (every registry default filled in, see :func:`lsbench.sweep.grid.resolve_point`),
so writing a default explicitly or leaving it out is the same run, and a run shared by two grids is one run.

Fields declared *implicit* (``split``, ``kind``, ``precision``, ``linescan``) enter the identity only when they differ
from their default. They were added after runs had been recorded; leaving a default value out of the hash keeps the
ids of those runs, and a run with another value can never share an id with one on the default.

This module imports no torch: the login-node commands read plans and rows through it. :meth:`RunSpec.create` and
:meth:`RunSpec.train_config` import the registries and the trainer when called.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

if TYPE_CHECKING:
    from lsbench.train import TrainConfig

__all__ = [
    "DEFAULT_KIND",
    "DEFAULT_PRECISION",
    "DEFAULT_SPLIT",
    "IDENTITY_FIELDS",
    "KINDS",
    "PRECISIONS",
    "SPLITS",
    "TRAINING_FIELDS",
    "RunSpec",
    "canonical_json",
    "field_default",
    "implicit_default",
    "run_id_of",
]

KINDS = ("train", "linescan")
"""What a run does: ``train`` trains a problem with an optimizer and evaluates it on a schedule; ``linescan`` trains
the same way and also measures the full-batch loss along the update direction of every (k-th) step, the Chapter 5
measurement (:mod:`lsbench.lines`; its settings are the run's ``linescan`` field)."""
DEFAULT_KIND = "train"

SPLITS = ("default", "labpal")
"""Train/validation split rules: the problem's own, or the LABPAL harness' 40k/10k CIFAR split."""
DEFAULT_SPLIT = "default"

PRECISIONS = ("fp32", "tf32", "bf16")
"""Numerics of the forward and backward passes of training steps (every closure evaluation, line-search probes
included): ``fp32`` is IEEE float32 throughout (TensorFloat-32 off for cuBLAS and cuDNN, also on Ampere and newer
GPUs where PyTorch lets cuDNN use it by default); ``tf32`` allows TensorFloat-32 matrix products and convolutions;
``bf16`` runs them under bfloat16 autocast. Parameters, gradients, optimizer arithmetic and evaluation stay float32
in all three (:mod:`lsbench.train.precision`)."""
DEFAULT_PRECISION = "fp32"

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_json(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))``: the form run ids are hashed from."""
    return _ENCODER.encode(value)


def run_id_of(identity: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the canonical JSON of ``identity``."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:16]


def _identity(
    max_length: int | None = None,
    *,
    implicit: bool = False,
    choices: tuple[str, ...] = (),
    setting: str | None = None,
    help: str = "",
) -> Any:
    """Field metadata: the store column's length for strings, whether the field is hashed only when not default,
    the valid values of a string field, and the grid section that sets it (``budget`` or ``training``; None for the
    fields a grid spells out by structure) with its help text."""
    return {"max_length": max_length, "implicit": implicit, "choices": choices, "setting": setting, "help": help}


@dataclass(frozen=True)
class RunSpec:
    """One run, identified by its content.

    Attributes:
        run_id: 16 hex digits, :func:`run_id_of` of :meth:`identity`.
        problem: problem registry name.
        optimizer: optimizer registry name.
        hparams: every hyperparameter of the optimizer, defaults filled in.
        seed: run seed (initialisation, batch order, augmentation, dropout).
        steps: nominal budget in steps.
        eval_every: evaluation interval in steps.
        batch_size: training batch size.
        weight_decay: L2 coefficient.
        split: train/validation split rule (:data:`SPLITS`).
        kind: what the run does (:data:`KINDS`).
        precision: numerics of the training passes (:data:`PRECISIONS`).
        linescan: a linescan run's measurement, every setting filled in
            (:func:`lsbench.lines.settings.resolve_scan`); empty for every other kind.
    """

    run_id: str = field(metadata=_identity(64))
    problem: str = field(metadata=_identity(128))
    optimizer: str = field(metadata=_identity(64))
    hparams: dict[str, Any] = field(metadata=_identity())
    seed: int = field(metadata=_identity())
    steps: int = field(metadata=_identity(setting="budget", help="steps of every run"))
    eval_every: int = field(metadata=_identity(setting="budget", help="evaluation interval in steps"))
    batch_size: int = field(metadata=_identity(setting="training", help="samples per batch"))
    weight_decay: float = field(metadata=_identity(setting="training", help="L2 coefficient of the trainer"))
    split: str = field(
        default=DEFAULT_SPLIT,
        metadata=_identity(32, implicit=True, choices=SPLITS, setting="training", help="train/validation split rule"),
    )
    kind: str = field(default=DEFAULT_KIND, metadata=_identity(16, implicit=True, choices=KINDS))
    precision: str = field(
        default=DEFAULT_PRECISION,
        metadata=_identity(
            8, implicit=True, choices=PRECISIONS, setting="training", help="numerics of the training passes"
        ),
    )
    linescan: dict[str, Any] = field(default_factory=dict, metadata=_identity(implicit=True))

    def __hash__(self) -> int:
        return hash(self.run_id)

    def identity(self) -> dict[str, Any]:
        """The content the run id is hashed from: every field but the id, implicit ones only when not default."""
        return {
            f.name: getattr(self, f.name)
            for f in _HASHED
            if not (f.metadata["implicit"] and getattr(self, f.name) == field_default(f))
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: a plan entry, and the identity columns of the run's store row."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """A spec from :meth:`to_dict` output or a store row (extra keys are not allowed).

        ``run_id`` and fields with a default may be left out; a given ``run_id`` must match the content.
        Hyperparameters are taken as stored, not re-resolved against the current registry.

        Raises ValueError for unknown or missing keys, wrong types, or a run id that does not match.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in _TYPES)
        if unknown:
            raise ValueError(f"unknown run fields: {', '.join(unknown)}")
        missing = [f.name for f in _HASHED if field_default(f) is dataclasses.MISSING and f.name not in data]
        if missing:
            raise ValueError(f"missing run fields: {', '.join(missing)}")
        values = {name: _checked(name, value) for name, value in data.items() if name != "run_id"}
        values["linescan"] = _kind_settings(values.get("kind", DEFAULT_KIND), values.get("linescan", {}))
        spec = cls(run_id="", **values)
        run_id = run_id_of(spec.identity())
        if data.get("run_id") is not None and data["run_id"] != run_id:
            raise ValueError(f"run_id {data['run_id']!r} does not match the content (expected {run_id})")
        return dataclasses.replace(spec, run_id=run_id)

    @classmethod
    def create(
        cls,
        problem: str,
        optimizer: str,
        hparams: Mapping[str, Any] | None = None,
        seed: int = 1,
        *,
        steps: int | None = None,
        eval_every: int | None = None,
        batch_size: int | None = None,
        weight_decay: float | None = None,
        split: str = DEFAULT_SPLIT,
        kind: str = DEFAULT_KIND,
        precision: str = DEFAULT_PRECISION,
        linescan: Mapping[str, Any] | None = None,
    ) -> RunSpec:
        """A run from partial settings: the problem's defaults for every setting left None, every hyperparameter
        default filled in, the id computed.

        Raises ValueError for unknown names, invalid hyperparameters or settings out of range.
        """
        from lsbench.optim import get_optimizer
        from lsbench.problems import get_problem
        from lsbench.sweep.grid import resolve_point

        defaults = get_problem(problem).defaults
        values = {
            "problem": problem,
            "optimizer": optimizer,
            "hparams": resolve_point(get_optimizer(optimizer), hparams or {}),
            "seed": seed,
            "steps": defaults.steps if steps is None else steps,
            "eval_every": defaults.eval_every if eval_every is None else eval_every,
            "batch_size": defaults.batch_size if batch_size is None else batch_size,
            "weight_decay": defaults.weight_decay if weight_decay is None else weight_decay,
            "split": split,
            "kind": kind,
            "precision": precision,
            "linescan": dict(linescan or {}),
        }
        return cls.from_dict(values)

    def train_config(
        self, device: str = "auto", checkpoint_every: int | None = None, *, data_dir: str | None = None
    ) -> TrainConfig:
        """The trainer's configuration: this run, executed on ``device`` with the given checkpoint interval."""
        from lsbench.train import TrainConfig

        return TrainConfig(self, checkpoint_every=checkpoint_every, device=device, data_dir=data_dir)


_FIELDS = dataclasses.fields(RunSpec)
_HASHED = tuple(f for f in _FIELDS if f.name != "run_id")
IDENTITY_FIELDS: tuple[dataclasses.Field[Any], ...] = _FIELDS
"""The declared fields of a run (with their metadata: string column length, implicit, choices, grid section), in
column order."""
TRAINING_FIELDS: tuple[dataclasses.Field[Any], ...] = tuple(f for f in _FIELDS if f.metadata["setting"] == "training")
"""The fields a grid's ``training:`` section sets (one value, or one per problem); a new one needs no grid code."""


def implicit_default(name: str, value: Any) -> bool:
    """Whether ``value`` of field ``name`` is left out of identities (an implicit field at its default)."""
    f = next(f for f in _FIELDS if f.name == name)
    return bool(f.metadata["implicit"]) and value == field_default(f)


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (made by its factory for mutable ones), or ``dataclasses.MISSING``."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _kind_settings(kind: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``linescan`` field for a run of ``kind``: a linescan run's settings resolved (defaults filled in, so an
    explicit default is the same run), nothing for any other kind."""
    if kind == "linescan":
        from lsbench.lines.settings import resolve_scan

        try:
            return resolve_scan(settings)
        except ValueError as error:
            raise ValueError(f"linescan: {error}") from None
    if settings:
        raise ValueError(f"linescan: settings given for a run of kind {kind!r}; only linescan runs take them")
    return {}


_TYPES: dict[str, Any] = get_type_hints(RunSpec)
_MAX_INT = 2**63 - 1


def _checked(name: str, value: Any) -> Any:
    """``value`` checked against the declared type and range of field ``name``; an int is taken for a float."""
    expected = _TYPES[name]
    meta = next(f.metadata for f in _FIELDS if f.name == name)
    if expected is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(meta['choices'])}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if name != "seed" and value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
            raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        return float(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {value!r}")
    return copy.deepcopy(dict(value))
