"""The schema of a grid file as pydantic models, checked against the registries, and its JSON Schema.

:class:`GridFile` is what a grid file may say, before defaults are filled in (that, expansion, the run limit and
the trial build are :mod:`lsbench.sweep.grid.load`'s). Every mapping forbids unknown keys and names the valid ones;
every leaf is a :class:`~lsbench.sweep.schema.Check` that says in one line what is wrong.

The registries are the only lists of valid names: problem names are enums of :data:`lsbench.problems.PROBLEMS`,
and every optimizer of :data:`lsbench.optim.OPTIMIZERS` has its own section model whose ``grid``, ``zip``,
``vary`` and ``fixed`` mappings have exactly its hyperparameters as keys, each value checked by the registry's
``HParam.validate`` and described in the JSON Schema by its type, range and choices. The registries are read when
this module is imported (they import torch).

Rules between keys live in model validators: a hyperparameter is set in one place, the lists of a ``zip`` group
have equal lengths, ``best_of`` combines only with ``fixed``, per-problem settings name the grid's own problems.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, create_model, model_validator

from lsbench.lines.settings import SCAN_DATA, SCAN_FIELDS, ScanSettings, resolve_scan
from lsbench.optim import OPTIMIZERS, HParam, OptimizerEntry
from lsbench.problems import PROBLEMS
from lsbench.runs.spec import DEFAULT_KIND, KINDS, TRAINING_FIELDS
from lsbench.sweep.grid.points import canonical
from lsbench.sweep.grid.types import (
    DEFAULT_SEEDS,
    MAX_BATCH_SIZE,
    MAX_GPUS_PER_RUN,
    MAX_RUNS_PER_WORKER,
    MAX_SEED,
    MAX_STEPS,
    Resources,
)
from lsbench.sweep.layout import SWEEP_NAME_PATTERN
from lsbench.sweep.schema import (
    Check,
    OneOrMany,
    Section,
    as_key,
    describe,
    exception_text,
    fail,
    key_path,
    optional,
    problem_of,
    short,
)

__all__ = ["GridFile", "OptimizerSection", "grid_json_schema", "hparam_value"]

TIME_LIMIT_PATTERN = re.compile(r"(?:[0-9]{1,3}-)?[0-9]{1,4}:[0-5][0-9]:[0-5][0-9]")
MEMORY_PATTERN = re.compile(r"[1-9][0-9]{0,9}[KMGT]?")
URL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+._-]*://\S*")
# Limits on one hyperparameter value (list-valued ones can nest): keeps YAML alias bombs from blowing up.
_MAX_VALUE_NODES = 10_000
_MAX_VALUE_DEPTH = 16


def _anchored(pattern: re.Pattern[str]) -> str:
    """``pattern`` as a JSON Schema pattern (those match anywhere; Python's fullmatch is meant)."""
    return f"^(?:{pattern.pattern})$"


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _unset(description: str) -> Any:
    """A field that is absent unless written (its default comes from elsewhere, so the JSON Schema shows none)."""
    return Field(None, description=description, json_schema_extra=lambda schema: schema.pop("default", None))


def _number_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (quoted, so it is a string: write the number without quotes)"
    return ""


# ------------------------------------------------------------------------------------------------ leaf values


def _name(value: Any) -> str:
    if not isinstance(value, str):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        raise ValueError(
            f"expected a string, got {describe(value)}" + (f" (quote it: name: '{value}')" if number else "")
        )
    if not SWEEP_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"invalid name {short(value)}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit "
            "(no path separators, spaces or shell metacharacters)"
        )
    return value


def _sweep(value: Any) -> str:
    if not isinstance(value, str) or not SWEEP_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            "expected a sweep name (1-64 letters, digits, '_', '.' or '-', starting with a letter or digit), "
            f"got {describe(value)}"
        )
    return value


def _member(noun: str, names: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in names:
            what = (
                f"unknown {noun} {short(value)}"
                if isinstance(value, str)
                else f"expected a name, got {describe(value)}"
            )
            raise fail(what, valid=names)
        return value

    return Check(check, {"enum": list(names)})


def _integer(low: int, high: int, what: str) -> Check:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected {what}, got {describe(value)}{_number_hint(value)}")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside [{low}, {high}]")
        return value

    return Check(check, {"type": "integer", "minimum": low, "maximum": high})


def _weight_decay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number >= 0, got {describe(value)}{_number_hint(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"expected a finite number >= 0, got {short(value)}")
    return number


def _time_limit(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'got the integer {value}: YAML reads an unquoted 24:00:00 as a base-60 number; quote it: "24:00:00"'
        )
    if not isinstance(value, str) or not TIME_LIMIT_PATTERN.fullmatch(value):
        raise ValueError(f'expected "HH:MM:SS" or "D-HH:MM:SS", got {describe(value)}')
    return value


def _memory(value: Any) -> str:
    if not isinstance(value, str) or not MEMORY_PATTERN.fullmatch(value):
        raise ValueError(f"expected a Slurm size such as 16G (units K, M, G, T), got {describe(value)}")
    return value


def _store(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not URL_PATTERN.fullmatch(value)):
        raise ValueError(
            f"expected an SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db) or null, got {describe(value)}"
        )
    return value


def _per_problem(leaf: Check) -> Check:
    """One value for every problem, or a mapping problem -> value (problems left out keep their default); that the
    problems are the grid's own is :meth:`GridFile._own_problems`' check."""

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            return leaf.check(value)
        out = {}
        for problem, item in value.items():
            try:
                out[problem] = leaf.check(item)
            except ValueError as error:
                at, text, valid = problem_of(error)
                raise fail(text, at=(as_key(problem), *at), valid=valid) from None
        return out

    mapping = {"type": "object", "propertyNames": {"enum": list(PROBLEMS)}, "additionalProperties": dict(leaf.json)}
    return Check(check, {"anyOf": [dict(leaf.json), mapping]})


PROBLEM = _member("problem", tuple(PROBLEMS))
OPTIMIZER = _member("optimizer", tuple(OPTIMIZERS))
SEED = _integer(0, MAX_SEED, "a non-negative integer")
STEPS = _per_problem(_integer(1, MAX_STEPS, "a positive integer"))
BATCH_SIZE = _per_problem(_integer(1, MAX_BATCH_SIZE, "a positive integer"))
WEIGHT_DECAY = _per_problem(Check(_weight_decay, {"type": "number", "minimum": 0}))
NAME = Check(_name, {"type": "string", "pattern": _anchored(SWEEP_NAME_PATTERN)})
SWEEP = Check(_sweep, {"type": "string", "pattern": _anchored(SWEEP_NAME_PATTERN)})
TIME_LIMIT = Check(_time_limit, {"type": "string", "pattern": _anchored(TIME_LIMIT_PATTERN)})
MEMORY = Check(_memory, {"type": "string", "pattern": _anchored(MEMORY_PATTERN)})
STORE = Check(_store, {"anyOf": [{"type": "string", "pattern": _anchored(URL_PATTERN)}, {"type": "null"}]})


# ------------------------------------------------------------------------------------------- hyperparameters


def hparam_value(hp: HParam, value: Any, hint: str = "") -> Any:
    """``value`` checked with the registry's ``HParam.validate``, in canonical form; raises :func:`fail`."""
    problem = _plain_problem(value)
    if problem:
        raise fail(problem)
    if hp.choices is not None and not isinstance(value, list | dict) and value not in hp.choices:
        raise fail(f"{short(value)} is not a valid choice", valid=hp.choices)
    try:
        checked = hp.validate(value)
    except Exception as exc:
        message = exception_text(exc)
        if message.startswith(f"{hp.name}: "):
            message = message[len(hp.name) + 2 :]
        raise fail(f"{message}{_number_hint(value)}{hint}") from None
    return canonical(hp, checked)


def _candidates(hp: HParam, values: Any) -> list[Any]:
    if hp.type is list:
        if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
            raise fail(
                f"{hp.name} is list-valued: write its candidates as a list of lists, e.g. "
                f"{short(json.dumps([hp.default]))}, or one value under fixed"
            )
    elif not isinstance(values, list):
        values = [values]
    if not values:
        raise fail("empty list: give at least one value")
    out = []
    for i, value in enumerate(values):
        try:
            out.append(hparam_value(hp, value))
        except Exception as error:
            at, text, valid = problem_of(error)
            raise fail(text, at=(i, *at), valid=valid) from None
    return out


def _fixed(hp: HParam, value: Any) -> Any:
    hint = "; fixed takes one value, lists of candidates go under grid" if isinstance(value, list) else ""
    return hparam_value(hp, value, hint)


def _hparam_json(hp: HParam) -> dict[str, Any]:
    kinds = {float: "number", int: "integer", bool: "boolean", str: "string", list: "array"}
    schema: dict[str, Any] = {"type": kinds.get(hp.type, "string")}
    if getattr(hp, "low", None) is not None:
        schema["exclusiveMinimum" if hp.low_exclusive else "minimum"] = hp.low
    if getattr(hp, "high", None) is not None:
        schema["exclusiveMaximum" if hp.high_exclusive else "maximum"] = hp.high
    if hp.choices is not None:
        schema["enum"] = list(hp.choices)
    return {"anyOf": [schema, {"type": "null"}]} if getattr(hp, "nullable", False) else schema


def _hparams(entry: OptimizerEntry, kind: str, value: Callable[[HParam], Check], default: bool) -> type[Section]:
    """A mapping of ``entry``'s hyperparameters (keys as aliases: any registry name works)."""
    fields: dict[str, Any] = {}
    for i, hp in enumerate(entry.hparams):

        def extra(schema: dict[str, Any], hp: HParam = hp) -> None:
            schema.pop("default", None)
            if default:
                schema["default"] = hp.default

        fields[f"h{i}"] = (
            Annotated[Any, value(hp)],
            Field(None, alias=hp.name, description=hp.help, json_schema_extra=extra),
        )
    model = create_model(f"{_camel(entry.name)}{kind.title()}", __base__=Section, **fields)
    model.unknown = "hyperparameter"
    model.expected = f"a mapping hyperparameter -> {kind}"
    model.__doc__ = f"Hyperparameters of {entry.name} -> {kind}."
    return model


def _candidates_check(hp: HParam) -> Check:
    one = _hparam_json(hp)
    many = {"type": "array", "items": one, "minItems": 1}
    return Check(lambda values: _candidates(hp, values), many if hp.type is list else {"anyOf": [one, many]})


def _value_check(hp: HParam) -> Check:
    return Check(lambda value: _fixed(hp, value), _hparam_json(hp))


# ---------------------------------------------------------------------------------------------------- sections


class BudgetSection(Section):
    """Training length; every value defaults to the problem registry's."""

    steps: Annotated[Any, STEPS] = _unset("steps of every run: one value, or a mapping problem -> steps")
    eval_every: Annotated[Any, STEPS] = _unset("evaluation interval in steps: one value, or per problem")


def _training_check(f: dataclasses.Field[Any]) -> Check:
    """The check of one training setting, from the run model's declaration of the field."""
    if f.metadata["choices"]:
        return _per_problem(_member(f.name.replace("_", " "), f.metadata["choices"]))
    return {"batch_size": BATCH_SIZE, "weight_decay": WEIGHT_DECAY}[f.name]


TrainingSection: type[Section] = create_model(
    "TrainingSection",
    __base__=Section,
    __doc__="Training settings (the run model's training fields); every value defaults to the problem registry's.",
    **{
        f.name: (Annotated[Any, _training_check(f)], _unset(f"{f.metadata['help']}: one value, or per problem"))
        for f in TRAINING_FIELDS
    },
)


def _scan_check(f: dataclasses.Field[Any]) -> Check:
    """The check of one linescan setting: :class:`ScanSettings`' own validation of that value alone (rules between
    settings are :class:`LinescanSection`'s), its JSON Schema from the declared type."""

    def check(value: Any) -> Any:
        if f.name in ("s_min", "s_max") and isinstance(value, int | float) and not isinstance(value, bool):
            # One bound alone cannot be checked against the other's default; LinescanSection checks the pair.
            ScanSettings(s_min=min(value, 0), s_max=max(value, 0) or 1.0)
            return value
        try:
            ScanSettings(**{f.name: value})
        except ValueError as error:
            text = exception_text(error)
            raise ValueError(text.removeprefix(f"{f.name}: ") + _number_hint(value)) from None
        return value

    json: dict[str, Any] = {
        "every": {"type": "integer", "minimum": 1},
        "samples": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        "per_sample": {"type": "boolean"},
        "data": {"enum": list(SCAN_DATA)},
        "resolution": {"type": "number", "exclusiveMinimum": 0},
    }.get(f.name, {"type": "number"})
    return Check(check, json)


class _LinescanSection(Section):
    @model_validator(mode="after")
    def _consistent(self) -> _LinescanSection:
        """Rules between settings (0 inside [s_min, s_max], the number of step sizes)."""
        try:
            resolve_scan(dict(self.items()))
        except ValueError as error:
            at, _, text = exception_text(error).partition(": ")
            raise fail(text, at=(at.split(",")[0],)) from None
        return self


LinescanSection: type[Section] = create_model(
    "LinescanSection",
    __base__=_LinescanSection,
    __doc__="What a linescan run measures along every (k-th) update direction (lsbench.lines.settings).",
    **{f.name: (Annotated[Any, _scan_check(f)], Field(f.default, description=f.metadata["help"])) for f in SCAN_FIELDS},
)


class ResourcesSection(Section):
    """What one run asks the scheduler for."""

    gpus_per_run: Annotated[int, _integer(1, MAX_GPUS_PER_RUN, "a positive integer")] = Field(
        Resources.gpus_per_run, description="GPUs reserved per run"
    )
    time_limit: Annotated[str, TIME_LIMIT] = Field(Resources.time_limit, description='"HH:MM:SS" or "D-HH:MM:SS"')
    memory: Annotated[str, MEMORY] = Field(Resources.memory, description="Slurm size: digits and K, M, G or T")
    runs_per_worker: Annotated[int | None, optional(_integer(1, MAX_RUNS_PER_WORKER, "a positive integer"))] = Field(
        None,
        description="compatible runs one worker trains together as one fused model (default: the profile's, else 1)",
    )


class BestOfSection(Section):
    """The best configuration of an optimizer in another sweep (resolved at submit time)."""

    sweep: Annotated[str, SWEEP] = Field(description="the source sweep's name")
    problem: Annotated[str, PROBLEM] = Field(description="the source problem (need not be one of this grid's)")
    optimizer: Annotated[str | None, OPTIMIZER] = _unset("the source optimizer; default: this section's")


class OptimizerSection(Section):
    """Base of the section model generated for each optimizer (:func:`_section` declares the keys; ``optimizer``
    names it)."""

    optimizer: ClassVar[str] = ""

    @model_validator(mode="after")
    def _one_place(self) -> OptimizerSection:
        """A hyperparameter appears under one ``grid`` key, one ``zip`` group or ``fixed`` (a ``vary`` one may also
        be under ``fixed``, as its base value); ``best_of`` combines only with ``fixed``."""
        base = f"optimizers.{self.optimizer}"
        if self.best_of is not None:
            for other in ("grid", "zip", "vary"):
                if getattr(self, other) is not None:
                    raise fail(
                        "best_of stands for one point: combine it only with fixed (to override some of its values)",
                        at=(other,),
                    )
            self._best_of_fits()
        where: dict[str, str] = {}

        def claim(name: str, at: tuple[Any, ...]) -> None:
            if name in where:
                raise fail(f"{name} is already set in {where[name]}", at=at)
            where[name] = key_path(("optimizers", self.optimizer, *at))

        for name, _ in self.grid.items() if self.grid is not None else ():
            claim(name, ("grid", name))
        for g, group in enumerate(self.zip or ()):
            if not group.written:
                raise fail(f"expected a non-empty mapping hyperparameter -> values, got {describe({})}", at=("zip", g))
            lengths = {name: len(values) for name, values in group.items()}
            if len(set(lengths.values())) > 1:
                detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
                raise fail(f"the lists of a zip group must have equal lengths: {detail}", at=("zip", g))
            for name in lengths:
                claim(name, ("zip", g, name))
        for name, _ in self.fixed.items() if self.fixed is not None else ():
            claim(name, ("fixed", name))
        if self.vary is not None:
            if not self.vary.written:
                raise fail(f"expected a non-empty mapping hyperparameter -> values, got {describe({})}", at=("vary",))
            for name, _ in self.vary.items():
                if name in where and not where[name].startswith(f"{base}.fixed"):
                    raise fail(
                        f"{name} is already set in {where[name]} (vary takes its base value from fixed)",
                        at=("vary", name),
                    )
        return self

    def _best_of_fits(self) -> None:
        source = self.best_of.optimizer or self.optimizer
        names = {hp.name for hp in OPTIMIZERS[self.optimizer].hparams}
        foreign = [hp.name for hp in OPTIMIZERS[source].hparams if hp.name not in names]
        if foreign:
            raise fail(
                f"the hyperparameters {', '.join(foreign)} of {source!r} are unknown to {self.optimizer!r}: its best "
                "point cannot be used here",
                at=("best_of", "optimizer"),
            )


def _section(entry: OptimizerEntry) -> type[OptimizerSection]:
    candidates = _hparams(entry, "values", _candidates_check, default=False)
    values = _hparams(entry, "value", _value_check, default=True)
    groups = Annotated[list[candidates], OneOrMany("a list of groups (mappings)", (dict,), empty=True)]
    model = create_model(
        f"{_camel(entry.name)}Section",
        __base__=OptimizerSection,
        __doc__=f"{entry.description}. Null or {{}} trains the registry defaults (one point).",
        grid=(candidates | None, _unset("cartesian product: hyperparameter -> candidates (a scalar = [scalar])")),
        zip=(groups | None, _unset("groups of equally long candidate lists that vary together; one axis each")),
        vary=(candidates | None, _unset("one at a time around the base point (defaults and fixed)")),
        fixed=(values | None, _unset("hyperparameter -> value, set in every point")),
        best_of=(BestOfSection | None, _unset("one point: the best configuration of another sweep")),
        budget=(BudgetSection | None, _unset("this optimizer's budget, over the top-level one")),
        training=(TrainingSection | None, _unset("this optimizer's training settings, over the top-level ones")),
    )
    model.optimizer = entry.name
    return model


class _Optimizers(Section):
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})
    unknown = "optimizer"
    expected = "a mapping of optimizer names"

    @model_validator(mode="after")
    def _not_empty(self) -> _Optimizers:
        if not self.model_fields_set:
            raise fail("no optimizers given", valid=self.valid_keys())
        return self


Optimizers = create_model(
    "Optimizers",
    __base__=_Optimizers,
    **{
        f"o{i}": (_section(entry) | None, Field(None, alias=name, description=entry.description))
        for i, (name, entry) in enumerate(OPTIMIZERS.items())
    },
)


def _keys_other_than(problems: list[str], value: Any) -> list[Any]:
    return [key for key in value if key not in problems] if isinstance(value, dict) else []


class GridFile(Section):
    """A sweep grid: problems x optimizers' hyperparameter points x seeds (sweeps/grids/*.yaml)."""

    name: Annotated[str, NAME] = Field(description="the sweep's name: 1-64 letters, digits, '_', '.' or '-'")
    problems: Annotated[list[Annotated[str, PROBLEM]], OneOrMany("a list of problem names", (str,), "problem")] = Field(
        description="problem registry names (one name or a list)"
    )
    budget: BudgetSection | None = _unset("step budget and evaluation interval (default: the problem registry's)")
    seeds: Annotated[list[Annotated[int, SEED]], OneOrMany("a list of seeds", (int,), "seed")] = Field(
        list(DEFAULT_SEEDS), description="run seeds (one seed or a list)"
    )
    training: TrainingSection | None = _unset("batch size, weight decay, split, precision (default: the problem's)")
    kind: Annotated[str, _member("kind", KINDS)] = Field(
        DEFAULT_KIND, description="what every run does: train, or linescan (train and measure lines, Chapter 5)"
    )
    linescan: LinescanSection | None = _unset("what a linescan run measures (only with kind: linescan)")
    optimizers: Optimizers = Field(description="optimizer registry name -> its section")
    resources: ResourcesSection | None = _unset("what one run asks the scheduler for")
    store: Annotated[str | None, STORE] = Field(None, description="SQLAlchemy URL; null: SQLite in the sweep folder")

    @model_validator(mode="after")
    def _linescan_only_for_its_kind(self) -> GridFile:
        if self.linescan is not None and self.kind != "linescan":
            raise fail(
                f"linescan settings apply to kind: linescan, but the grid's kind is {self.kind}", at=("linescan",)
            )
        return self

    @model_validator(mode="after")
    def _own_problems(self) -> GridFile:
        """Per-problem settings name this grid's problems; ``best_of`` refers to another sweep."""
        sections: list[tuple[tuple[str, ...], Any]] = [(("budget",), self.budget), (("training",), self.training)]
        for optimizer, section in self.optimizers.items():
            if section is not None:
                base = ("optimizers", optimizer)
                sections += [((*base, "budget"), section.budget), ((*base, "training"), section.training)]
                if section.best_of is not None and section.best_of.sweep == self.name:
                    raise fail(f"a grid cannot refer to its own sweep {self.name!r}", at=(*base, "best_of", "sweep"))
        for at, values in sections:
            for key, value in values.items() if values is not None else ():
                for problem in _keys_other_than(self.problems, value):
                    where = (*at, key, as_key(problem))
                    raise fail(f"{short(problem)} is not one of this grid's problems", at=where, valid=self.problems)
        return self


def grid_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a grid file, as a plain dict, e.g. for editors (``sweep schema grid``).

    Generated from :class:`GridFile`, so it lists exactly the keys, problem and optimizer names and, per
    optimizer, the hyperparameters (with type, range, choices and default) that loading accepts. Rules between
    keys (a hyperparameter set twice, zip lengths, per-problem keys that are not the grid's problems) and the trial
    build are checked only by :func:`lsbench.sweep.grid.load_grid`. A grid is YAML: numbers such as ``1e-3`` are
    floats, as in YAML 1.2.
    """
    schema = GridFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "lsbench sweep grid"}


def _plain_problem(value: Any) -> str:
    """Why ``value`` cannot be a hyperparameter value ('' if it can): only JSON scalars and lists, bounded."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_VALUE_NODES or depth > _MAX_VALUE_DEPTH:
            return f"value too large (more than {_MAX_VALUE_NODES} elements or nested deeper than {_MAX_VALUE_DEPTH})"
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"must be finite, got {item!r}"
        elif isinstance(item, int) and not isinstance(item, bool):
            if abs(item) > 2**63:
                return f"integer {short(item)} is too large"
        elif item is not None and not isinstance(item, bool | str):
            return f"unsupported value {describe(item)} (use numbers, strings, booleans, null or lists)"
    return ""
