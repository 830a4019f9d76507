"""``lsbench info``: what a researcher may write in a grid -- every optimizer with its hyperparameters, every problem.

Both lists are read from the registries (:data:`lsbench.optim.OPTIMIZERS`, :data:`lsbench.problems.PROBLEMS`),
so they cannot drift from what grid validation accepts. ``--json`` prints the same content as one JSON object::

    {"optimizers": {name: {"description": ..., "hyperparameters": {key: {"type", "default", "low", "high",
                                                                        "choices", "nullable", "symbol", "help"}}}},
     "problems": {name: {"dataset", "model", "description", "batch_size", "steps", "weight_decay", "eval_every"}}}
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

__all__ = ["add_info_parser", "collect", "format_text", "optimizer_info", "problem_info"]

_TYPE_NAMES = {float: "float", int: "int", bool: "bool", str: "str", list: "list"}


def optimizer_info() -> dict[str, dict[str, Any]]:
    """Every registered optimizer: its description and hyperparameters (type, default, range, symbol, help)."""
    from lsbench.optim import OPTIMIZERS

    return {
        name: {
            "description": entry.description,
            "hyperparameters": {
                hp.name: {
                    "type": _TYPE_NAMES.get(hp.type, hp.type.__name__),
                    "default": hp.default,
                    "low": hp.low,
                    "high": hp.high,
                    "choices": list(hp.choices) if hp.choices is not None else None,
                    "nullable": hp.nullable,
                    "symbol": hp.symbol,
                    "help": hp.help,
                }
                for hp in entry.hparams
            },
        }
        for name, entry in OPTIMIZERS.items()
    }


def problem_info() -> dict[str, dict[str, Any]]:
    """Every registered problem: dataset, model, description and training defaults."""
    from lsbench.problems import PROBLEMS

    return {
        name: {"dataset": spec.dataset, "model": spec.model, "description": spec.description, **asdict(spec.defaults)}
        for name, spec in PROBLEMS.items()
    }


def collect() -> dict[str, Any]:
    """The ``--json`` document: ``{"optimizers": ..., "problems": ...}``."""
    return {"optimizers": optimizer_info(), "problems": problem_info()}


def _number(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, float) else str(value)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _range(hp: dict[str, Any]) -> str:
    if hp["choices"] is not None:
        text = " | ".join(map(_value, hp["choices"]))
    elif hp["low"] is not None and hp["high"] is not None:
        text = f"[{_number(hp['low'])}, {_number(hp['high'])}]"
    elif hp["low"] is not None:
        text = f">= {_number(hp['low'])}"
    elif hp["high"] is not None:
        text = f"<= {_number(hp['high'])}"
    else:
        text = "any" if hp["type"] != "bool" else "true | false"
    return f"{text}, null" if hp["nullable"] else text


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    """Left-aligned columns; the last column is not padded."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        return (indent + "  ".join([*cells, row[-1]])).rstrip()

    return [line(header), indent + "  ".join("-" * w for w in [*widths, len(header[-1])]), *map(line, rows)]


def format_text(info: dict[str, Any]) -> str:
    """Readable tables: one per optimizer, then one of all problems."""
    lines = ["Optimizers (grid: `optimizers: {name: {grid: {key: [values]}, fixed: {key: value}}}`)", ""]
    for name, entry in info["optimizers"].items():
        lines.append(f"{name} -- {entry['description']}")
        rows = [
            (key, hp["symbol"] or "-", hp["type"], _value(hp["default"]), _range(hp), hp["help"])
            for key, hp in entry["hyperparameters"].items()
        ]
        if rows:
            lines += _table(("hyperparameter", "symbol", "type", "default", "range", "meaning"), rows)
        else:
            lines.append("  (no hyperparameters)")
        lines.append("")
    lines += ["Problems (grid: `problems: [name, ...]`; defaults apply unless the grid's budget/training set them)", ""]
    rows = [
        (
            name,
            str(p["batch_size"]),
            str(p["steps"]),
            _number(p["weight_decay"]),
            str(p["eval_every"]),
            p["description"],
        )
        for name, p in info["problems"].items()
    ]
    lines += _table(("problem", "batch", "steps", "weight decay", "eval every", "description"), rows)
    return "\n".join(lines)


def add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="list every optimizer with its hyperparameters and every problem with its defaults"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(handler=_run_info_command)


def _run_info_command(args: argparse.Namespace) -> int:
    info = collect()
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else format_text(info))
    return 0
