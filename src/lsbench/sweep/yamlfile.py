"""Reading the YAML of grids and cluster profiles: PyYAML's safe loader, numbers as YAML 1.2 reads them, every key
written once.

PyYAML implements YAML 1.1, which reads ``1e-3`` and ``5E3`` (an exponent without a dot) as strings; every
researcher writes them, and YAML 1.2 reads them as floats, so :class:`Loader` does too. Everything YAML 1.1 already
read as a float stays one (``1.0e-4``, ``.inf``, base-60 floats); integers are unchanged. A key repeated within one
mapping is an error: ``safe_load`` would silently keep the last one.

This module must never build anything but ``yaml.SafeLoader``'s plain types, and never raise anything but
:class:`YamlProblem` for bad input.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml

from lsbench.sweep.schema import exception_text, key_path

__all__ = ["FLOAT_PATTERN", "Loader", "YamlProblem", "read_yaml"]

_FLOAT_TAG = "tag:yaml.org,2002:float"
FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.0, 1., 1.0e-4, 1.0E4
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                            # 1e-4, 5E3: YAML 1.2 (strings in YAML 1.1)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?                     # .5, .5e-3
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*                 # base 60 (YAML 1.1, kept)
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
"""Plain scalars read as floats: YAML 1.2's core-schema floats and everything YAML 1.1 reads as a float."""


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with :data:`FLOAT_PATTERN` in place of YAML 1.1's float pattern."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, FLOAT_PATTERN if tag == _FLOAT_TAG else pattern) for tag, pattern in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


class YamlProblem(ValueError):
    """YAML that cannot be read. ``key`` is ``line L column C`` for syntax errors, the key path of a repeated key,
    or empty; ``problem`` is one line."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def read_yaml(text: str) -> Any:
    """The one document in ``text`` as plain Python data (None for an empty document)."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _reject_repeated_keys(node)
        return loader.construct_document(node)
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise YamlProblem(where, f"invalid YAML: {context + ', ' if context else ''}{what}") from None
    except RecursionError:
        raise YamlProblem("", "invalid YAML: nested too deeply") from None
    except Exception as exc:  # e.g. a timestamp-like scalar that is no valid date
        raise YamlProblem("", f"invalid YAML: {exception_text(exc)}") from None
    finally:
        loader.dispose()


def _reject_repeated_keys(root: yaml.Node) -> None:
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # aliases share nodes: visit each once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    stack.append((value_node, path))
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if key_node.value in keys:
                    line = key_node.start_mark.line + 1
                    raise YamlProblem(key_path((*path, key_node.value)), f"duplicate key (line {line})")
                keys.add(key_node.value)
                stack.append((value_node, (*path, key_node.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
