"""Pydantic building blocks shared by the grid and cluster-profile schemas, and their one-line errors.

The schemas of ``sweeps/grids/*.yaml`` (:mod:`lsbench.sweep.grid.schema`) and ``cluster/*.yaml``
(:mod:`lsbench.sweep.backends.profile`) are pydantic models made of:

* :class:`Section`: a mapping whose unknown keys are errors naming the valid ones, and which remembers the order its
  keys were written in (the order of a grid's axes, optimizers and problems is part of what it means);
* :class:`Check`: a leaf value, checked by a function that says in one line what is wrong, with its JSON Schema;
* :class:`OneOrMany`: a list that may also be written as one value (``seeds: 1``).

:func:`first_problem` turns a ``ValidationError`` into ``(key path, problem, valid choices)``, e.g.
``("optimizers.sgd.grid.lr[0]", "below the minimum 0.0", None)``, for ``GridError`` and ``ProfileError``.
Checks raise ``ValueError(problem)``, or :func:`fail` where they know the valid choices or a deeper key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, PrivateAttr, model_validator
from pydantic import ValidationError as ValidationError
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "Check",
    "OneOrMany",
    "Section",
    "ValidationError",
    "as_key",
    "describe",
    "exception_text",
    "fail",
    "first_problem",
    "key_path",
    "key_text",
    "one_line",
    "problem_of",
    "short",
]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def fail(problem: str, *, at: Sequence[Any] = (), valid: Sequence[Any] | None = None) -> PydanticCustomError:
    """The error a check raises: ``problem`` (one line) at ``at`` below the checked value (keys and list indices),
    with the valid choices where there is a fixed set of them."""
    context = {"problem": problem, "at": tuple(at), "valid": tuple(str(v) for v in valid or ())}
    return PydanticCustomError("lsbench", "{problem}", context)


def problem_of(error: Exception) -> tuple[tuple[Any, ...], str, tuple[str, ...] | None]:
    """``(at, problem, valid)`` of an error raised by a check: :func:`fail`'s, or a ValueError's text."""
    if isinstance(error, PydanticCustomError) and error.type == "lsbench":
        context = error.context or {}
        return tuple(context.get("at", ())), str(context.get("problem", "")), tuple(context.get("valid", ())) or None
    return (), exception_text(error), None


def first_problem(error: ValidationError) -> tuple[str, str, tuple[str, ...] | None]:
    """``(key path, problem, valid choices)`` of the first error pydantic found (fields in declaration order)."""
    detail = error.errors(include_url=False)[0]
    context = detail.get("ctx") or {}
    at: tuple[Any, ...] = ()
    valid = None
    if detail["type"] == "lsbench":
        problem, at, valid = context["problem"], context["at"], context["valid"] or None
    elif detail["type"] == "value_error" and isinstance(context.get("error"), ValueError):
        problem = exception_text(context["error"])
    elif detail["type"] == "missing":
        problem = "missing (required)"
    else:  # pydantic's own wording: a check we do not write ourselves
        problem = f"{detail['msg']}, got {describe(detail.get('input'))}"
    return key_path((*detail["loc"], *at)), one_line(problem), valid


class Section(BaseModel):
    """A mapping of a YAML file: unknown or non-string keys are errors that list the valid keys.

    Subclasses declare their keys as fields (an alias where the key is no Python identifier); ``unknown`` names what
    a key is ("optimizer", "hyperparameter") and ``expected`` what the mapping is, for the error messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    unknown: ClassVar[str] = "key"
    expected: ClassVar[str] = "a mapping"
    _written: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def valid_keys(cls) -> tuple[str, ...]:
        """The valid keys, in declaration order."""
        return tuple(info.alias or name for name, info in cls.model_fields.items())

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys(cls, data: Any, handler: Callable[[Any], Section]) -> Section:
        if isinstance(data, cls):
            return data
        valid = cls.valid_keys()
        if not isinstance(data, dict):
            raise fail(f"expected {cls.expected}, got {describe(data)}", valid=valid)
        for key in data:
            if not isinstance(key, str):
                raise fail(f"keys must be strings, got {describe(key)}", at=(as_key(key),), valid=valid)
            if key not in valid:
                raise fail(f"unknown {cls.unknown} {short(key)}", at=(key,), valid=valid)
        section = handler(data)
        section._written = tuple(data)
        return section

    @property
    def written(self) -> tuple[str, ...]:
        """The keys given in the file (null values included), in file order."""
        return self._written

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, validated value)`` of every key given in the file, in file order."""
        names = {info.alias or name: name for name, info in type(self).model_fields.items()}
        for key in self._written:
            yield key, getattr(self, names[key])


@dataclass(frozen=True, eq=False)
class Check:
    """A leaf value: ``check(value)`` returns it (normalized) or raises ``ValueError``/:func:`fail`; ``json`` is its
    JSON Schema. With ``context``, ``check(value, context)`` gets the ``context`` given to ``model_validate``."""

    check: Callable[..., Any]
    json: Mapping[str, Any]
    context: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        if self.context:
            return core_schema.with_info_plain_validator_function(lambda value, info: self.check(value, info.context))
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return _copy(self.json)


@dataclass(frozen=True, eq=False)
class OneOrMany:
    """``Annotated[list[T], OneOrMany(...)]``: a list of items, where a value of one of the ``single`` types stands
    for a one-element list (``problems: digits_mlp``). Empty lists are errors unless ``empty``; with ``unique``
    (the item's name), so are repeated items."""

    expected: str
    single: tuple[type, ...]
    unique: str = ""
    empty: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))

    def _validate(self, value: Any, handler: Callable[[Any], list[Any]]) -> list[Any]:
        if isinstance(value, self.single) and (bool in self.single or not isinstance(value, bool)):
            value = [value]
        if not isinstance(value, list):
            raise fail(f"expected {self.expected}, got {describe(value)}")
        if not value and not self.empty:
            raise fail("empty list")
        items = handler(value)
        if self.unique:
            for i, item in enumerate(items):
                if item in items[:i]:
                    raise fail(f"{self.unique} {item!r} is listed twice", at=(i,))
        return items

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        many = dict(handler(schema))
        if not self.empty:
            many["minItems"] = 1
        if self.unique:
            many["uniqueItems"] = True
        return {"anyOf": [many["items"], many]}


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------- messages


def one_line(text: Any) -> str:
    return " ".join(str(text).split())


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """``integer 3``, ``list [1, 2]``, ``null``: a value with its YAML kind, for "expected X, got Y"."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return f"{names.get(type(value), type(value).__name__)} {short(value)}"


def key_text(key: Any) -> str:
    """A mapping key as it appears in a key path: plain names as they are, anything else as its ``repr``."""
    return key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else short(key)


class _Shown(str):
    """A key already written as :func:`key_text` shows it (a non-string key such as ``1``)."""


def as_key(key: Any) -> Any:
    """``key`` as a part of a key path (:func:`key_path` reads ints as list indices; a mapping key 1 is no index)."""
    return key if isinstance(key, str) else _Shown(key_text(key))


def key_path(parts: Sequence[Any]) -> str:
    """``("optimizers", "sgd", "grid", "lr", 0)`` -> ``optimizers.sgd.grid.lr[0]``."""
    path = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        else:
            text = part if isinstance(part, _Shown) else key_text(part)
            path = f"{path}.{text}" if path else text
    return path


def exception_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return one_line(text if len(text) <= 300 else text[:297] + "...")


def optional(leaf: Check) -> Check:
    """``leaf``, or null."""

    def check(value: Any, *context: Any) -> Any:
        return None if value is None else leaf.check(value, *context)

    return Check(check, {"anyOf": [dict(leaf.json), {"type": "null"}]}, leaf.context)
