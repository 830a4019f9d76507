"""The grid's JSON Schema (``grid_json_schema``, what ``sweep schema grid`` prints for editors): a valid draft 2020-12
schema generated from the registries, that accepts every shipped grid and rejects every malformed-grid case of
grid/test_load.py that is about structure, names or single values. Rules between keys and the trial build
are the loader's alone; those cases are listed below with the reason, and the schema must accept them (so the
list stays true)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from tests import paths
from tests.sweep.grid.test_load import (
    BAD_NAMES,
    BAD_OPTIMIZERS,
    BAD_PROBLEMS,
    BAD_SETTINGS,
    BAD_VALUES,
    GOOD,
)

from lsbench.optim import OPTIMIZERS
from lsbench.problems import PROBLEMS
from lsbench.sweep.grid import grid_json_schema, parse_grid
from lsbench.sweep.yamlfile import YamlProblem, read_yaml

GRIDS = paths.GRIDS
SCHEMA = grid_json_schema()
VALIDATOR = Draft202012Validator(SCHEMA)

# Malformed grids that only loading rejects: the schema cannot say it (or JSON has no such value).
LOADER_ONLY = {
    "grid: {lr: [.nan]}": "JSON has no NaN",
    "grid: {lr: [1000000000000000000000000000]}": "size limit of values",
    "grid: {lr: 0.1}\n    fixed: {lr: 0.2}": "a hyperparameter set in two places",
    "zip: [{lr: [0.1]}, {lr: [0.2]}]": "a hyperparameter set in two places",
    "zip: [{lr: [0.1, 0.2], momentum: [0.9]}]": "zip lists of equal length",
    "zip: [{}]": "an empty zip group (an empty grid: mapping is fine)",
    "fixed: {nesterov: true, momentum: 0.0}": "the trial build",
    "budget: {steps: 1.5e+3}": "JSON Schema counts 1500.0 as an integer",
    "budget: {steps: 5e3}": "JSON Schema counts 5000.0 as an integer",
    "budget: {steps: {cifar10_resnet32: 10}}": "per-problem keys must be this grid's problems",
}


def schema_accepts(text: str) -> bool:
    return VALIDATOR.is_valid(read_yaml(text))


def test_schema_is_a_valid_json_schema_and_plain_json() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA
    assert grid_json_schema() == SCHEMA  # a fresh dict every time, the same content


def test_schema_names_come_from_the_registries() -> None:
    definitions = SCHEMA["$defs"]
    assert list(definitions["Optimizers"]["properties"]) == list(OPTIMIZERS)
    assert definitions["Optimizers"]["additionalProperties"] is False
    problems = SCHEMA["properties"]["problems"]["anyOf"]
    assert problems[0]["enum"] == list(PROBLEMS) and problems[1]["items"]["enum"] == list(PROBLEMS)
    for name, entry in OPTIMIZERS.items():
        section = definitions["Optimizers"]["properties"][name]["anyOf"][0]["$ref"].split("/")[-1]
        fixed = definitions[section]["properties"]["fixed"]["anyOf"][0]["$ref"].split("/")[-1]
        assert list(definitions[fixed]["properties"]) == [hp.name for hp in entry.hparams]
        assert {k: v["default"] for k, v in definitions[fixed]["properties"].items()} == {
            hp.name: hp.default for hp in entry.hparams
        }


@pytest.mark.parametrize("path", sorted(GRIDS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_grid_is_valid(path: Path) -> None:
    errors = [error.message for error in VALIDATOR.iter_errors(read_yaml(path.read_text()))]
    assert errors == []


def test_the_good_grid_and_the_new_spellings_are_valid() -> None:
    assert schema_accepts(GOOD)
    assert schema_accepts("name: t\nproblems: digits_mlp\nseeds: 1\noptimizers: {sgd: {grid: {lr: 1e-3}}}\n")


def check(text: str) -> None:
    """The loader rejects ``text``; the schema too, unless it is a LOADER_ONLY case (then it must accept it)."""
    with pytest.raises(ValueError):
        parse_grid(text)
    key = next((k for k in LOADER_ONLY if k in text), None)
    assert schema_accepts(text) is (key is not None), LOADER_ONLY.get(key, "the schema should reject this")


@pytest.mark.parametrize(("fragment", "key", "problem"), BAD_VALUES)
def test_bad_hyperparameter_values(fragment: str, key: str, problem: str) -> None:
    check(f"name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    {fragment}\n")


@pytest.mark.parametrize(("text", "key", "fragment"), BAD_SETTINGS)
def test_bad_settings(text: str, key: str, fragment: str) -> None:
    check(GOOD + text + "\n")


@pytest.mark.parametrize("name", [*BAD_NAMES, 123, True, None, ["a"]])
def test_bad_names(name: Any) -> None:
    check(GOOD.replace("name: t", f"name: {json.dumps(name)}"))


@pytest.mark.parametrize("value", [*BAD_PROBLEMS, "[digits_mlp, digits_mlp]", "[digits_mlp, cifar10_resnet56]"])
def test_bad_problems(value: str) -> None:
    check(GOOD.replace("[digits_mlp]", value))


@pytest.mark.parametrize("value", BAD_OPTIMIZERS)
def test_bad_optimizer_sections(value: str) -> None:
    check(f"name: t\nproblems: [digits_mlp]\noptimizers: {value}\n")


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "sedes: [1]\n",  # unknown top-level key
        GOOD + "1: 2\n",  # non-string key
        GOOD + "  adamw: {grid: {lr: 0.1}}\n",  # unknown optimizer
        GOOD.replace("sgd:", "pal:").replace("lr:", "mu:"),  # unknown hyperparameter
        GOOD.replace("grid: {lr: [0.1, 0.01]}", "fixed: {lr_schedule: cosine}"),  # not a choice
        "name: t\nproblems: [digits_mlp]\n",  # missing optimizers
        "name: t\noptimizers: {sgd: {}}\n",  # missing problems
        "problems: [digits_mlp]\noptimizers: {sgd: {}}\n",  # missing name
        "- 1\n- 2\n",  # not a mapping
        # list-valued hyperparameter written as one value under grid
        "name: t\nproblems: [digits_mlp]\noptimizers:\n  labpal_nsgd:\n    grid: {direction_norm_bounds: [0.1, 1]}\n",
    ],
)
def test_bad_structure(text: str) -> None:
    check(text)


BEST_OF = "name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    best_of: {}\n"


@pytest.mark.parametrize(
    ("best_of", "loader_only"),
    [
        ("{sweep: src}", False),
        ("{problem: digits_mlp}", False),
        ("{sweep: ../x, problem: digits_mlp}", False),
        ("{sweep: src, problem: nope}", False),
        ("{sweep: src, problem: digits_mlp, optimizer: nope}", False),
        ("{sweep: src, problem: digits_mlp, run: 1}", False),
        ("[src, digits_mlp]", False),
        ("{sweep: t, problem: digits_mlp}", True),  # its own sweep: needs the grid's name
        ("{sweep: src, problem: digits_mlp, optimizer: pal}", True),  # pal's hyperparameters are not sgd's
    ],
)
def test_bad_best_of(best_of: str, loader_only: bool) -> None:
    text = BEST_OF.replace("{}", best_of)
    with pytest.raises(ValueError):
        parse_grid(text)
    assert schema_accepts(text) is loader_only


@pytest.mark.parametrize(
    ("section", "loader_only"),
    [
        ("budget: {steps: 0}", False),
        ("training: {split: odd}", False),
        ("training: {lr: 1.0}", False),
        ("vary: {mu: [0.2]}", False),
        ("vary: {lr: [-1.0]}", False),
        ("training: {batch_size: {mnist_mlp: 8}}", True),  # a problem, but not one of this grid's
        ("vary: {}", True),  # an empty vary (the model is the one of grid:, where empty is fine)
        ("grid: {lr: [0.1]}\n    vary: {lr: [0.2]}", True),  # set in two places
        ("best_of: {sweep: s, problem: digits_mlp}\n    grid: {lr: [0.1]}", True),  # best_of takes only fixed
    ],
)
def test_bad_optimizer_overrides(section: str, loader_only: bool) -> None:
    text = f"name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    {section}\n"
    with pytest.raises(ValueError):
        parse_grid(text)
    assert schema_accepts(text) is loader_only


def test_yaml_that_is_no_document_is_the_readers_to_reject() -> None:
    for text in ("name: t\nproblems: [digits_mlp\n", "name: t\nname: u\n"):
        with pytest.raises(YamlProblem):
            read_yaml(text)


def test_the_training_section_has_exactly_the_run_models_training_fields() -> None:
    from lsbench.runs.spec import TRAINING_FIELDS

    training = SCHEMA["$defs"]["TrainingSection"]["properties"]
    assert set(training) == {f.name for f in TRAINING_FIELDS} >= {"batch_size", "weight_decay", "split", "precision"}
    assert training["precision"]["anyOf"][0]["enum"] == ["fp32", "tf32", "bf16"]


def test_exclusive_bounds_are_exclusive_in_the_schema() -> None:
    sls = SCHEMA["$defs"]["SlsValue"]["properties"]["initial_step_size"]
    assert sls.get("exclusiveMinimum") == 0 and "minimum" not in sls
    assert not VALIDATOR.is_valid(
        {"name": "x", "problems": ["digits_mlp"], "optimizers": {"sls": {"fixed": {"initial_step_size": 0}}}}
    )
