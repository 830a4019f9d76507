"""Grid loading: every kind of bad grid is one GridError line naming the file and the key."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest
import yaml

from lsbench.optim import OPTIMIZERS
from lsbench.problems import PROBLEMS
from lsbench.sweep.grid import MAX_RUNS, Grid, GridError, load_grid, parse_grid

GOOD = """\
name: t
problems: [digits_mlp]
optimizers:
  sgd:
    grid: {lr: [0.1, 0.01]}
"""


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def grid_error(tmp_path: Path, text: str) -> GridError:
    path = write(tmp_path, text)
    with pytest.raises(GridError) as info:
        load_grid(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return info.value


def test_minimal_grid_gets_registry_defaults(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path, GOOD))
    assert isinstance(grid, Grid)
    defaults = PROBLEMS["digits_mlp"].defaults
    assert grid.name == "t"
    assert grid.seeds == [1, 2, 3]
    assert grid.budget["digits_mlp"].steps == defaults.steps
    assert grid.budget["digits_mlp"].eval_every == defaults.eval_every
    assert grid.training["digits_mlp"].batch_size == defaults.batch_size
    assert grid.training["digits_mlp"].weight_decay == defaults.weight_decay
    assert grid.training["digits_mlp"].split == "default"
    assert grid.resources.gpus_per_run == 1 and grid.resources.time_limit == "24:00:00"
    assert grid.resources.memory == "16G"
    assert grid.store is None
    assert grid.source_text == GOOD
    assert len(grid.grid_hash) == 64
    assert [p["lr"] for p in grid.optimizers["sgd"].points] == [0.1, 0.01]


def test_grid_hash_ignores_comments_but_not_content(tmp_path: Path) -> None:
    a = load_grid(write(tmp_path, GOOD, "a.yaml"))
    b = load_grid(write(tmp_path, "# comment\n" + GOOD, "b.yaml"))
    c = load_grid(write(tmp_path, GOOD.replace("0.01]", "0.001]"), "c.yaml"))
    assert a.grid_hash == b.grid_hash != c.grid_hash


def test_per_problem_budget_and_training(tmp_path: Path) -> None:
    grid = load_grid(
        write(
            tmp_path,
            """\
            name: t
            problems: [digits_mlp, synthetic_mlp]
            budget: {steps: {digits_mlp: 50}, eval_every: 10}
            training: {batch_size: {synthetic_mlp: 8}, weight_decay: 0}
            optimizers: {sgd: null}
            """,
        )
    )
    assert grid.budget["digits_mlp"].steps == 50
    assert grid.budget["synthetic_mlp"].steps == PROBLEMS["synthetic_mlp"].defaults.steps
    assert grid.budget["synthetic_mlp"].eval_every == 10
    assert grid.training["synthetic_mlp"].batch_size == 8
    assert grid.training["digits_mlp"].batch_size == PROBLEMS["digits_mlp"].defaults.batch_size
    assert grid.training["digits_mlp"].weight_decay == 0.0 and isinstance(
        grid.training["digits_mlp"].weight_decay, float
    )
    assert len(grid.optimizers["sgd"].points) == 1


def test_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(GridError, match=r"nope\.yaml: file not found"):
        load_grid(missing)
    with pytest.raises(GridError, match="is a directory"):
        load_grid(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(GridError, match="not UTF-8"):
        load_grid(binary)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("name: t\nproblems: [digits_mlp\n", "line 3", "invalid YAML"),
        ("name: t\n  bad: indent\n", "line 2", "invalid YAML"),
        ("a: !!python/object:os.system {}\n", "line 1", "invalid YAML"),
        ("- 1\n- 2\n", "", "top level must be a mapping, got list"),
        ("just a string\n", "", "top level must be a mapping"),
        ("", "", "empty document"),
        ("---\nname: a\n---\nname: b\n", "line 3", "invalid YAML"),
    ],
)
def test_document_problems(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    error = grid_error(tmp_path, text)
    assert error.key.startswith(key)
    assert fragment in error.problem


def test_unknown_top_level_key_lists_valid_keys(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD + "sedes: [1]\n")
    assert error.key == "sedes"
    valid = ("name", "problems", "budget", "seeds", "training", "kind", "linescan", "optimizers", "resources", "store")
    assert error.valid == valid
    assert str(error).endswith(f"(valid: {', '.join(valid)})")


@pytest.mark.parametrize("missing", ["name", "problems", "optimizers"])
def test_missing_required_key(tmp_path: Path, missing: str) -> None:
    data = yaml.safe_load(GOOD)
    del data[missing]
    error = grid_error(tmp_path, yaml.safe_dump(data))
    assert error.key == missing and "missing" in error.problem


def test_unknown_problem_lists_the_registry(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD.replace("[digits_mlp]", "[digits_mlp, cifar10_resnet56]"))
    assert error.key == "problems[1]"
    assert "cifar10_resnet56" in error.problem
    assert error.valid == tuple(PROBLEMS)


def test_unknown_optimizer_lists_the_registry(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD + "  adamw: {grid: {lr: 0.1}}\n")
    assert error.key == "optimizers.adamw"
    assert error.valid == tuple(OPTIMIZERS)


def test_unknown_hyperparameter_lists_the_optimizers_hyperparameters(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD.replace("sgd:", "pal:").replace("lr:", "mu:"))
    assert error.key == "optimizers.pal.grid.mu"
    assert "unknown hyperparameter 'mu'" in error.problem
    assert error.valid == tuple(hp.name for hp in OPTIMIZERS["pal"].hparams)


BAD_VALUES = [
    # (fragment of YAML under optimizers.sgd, expected key, expected fragment of the problem)
    ("grid: {lr: ['0.1']}", "optimizers.sgd.grid.lr[0]", "expected float, got str"),
    ("grid: {lr: ['1e-4']}", "optimizers.sgd.grid.lr[0]", "quoted, so it is a string: write the number without quotes"),
    ("grid: {lr: [true]}", "optimizers.sgd.grid.lr[0]", "expected float, got bool"),
    ("grid: {lr: [.nan]}", "optimizers.sgd.grid.lr[0]", "finite"),
    ("grid: {lr: [-0.1]}", "optimizers.sgd.grid.lr[0]", "below the minimum"),
    ("grid: {momentum: [0.9, 1.5]}", "optimizers.sgd.grid.momentum[1]", "above the maximum"),
    ("grid: {nesterov: [1]}", "optimizers.sgd.grid.nesterov[0]", "expected bool"),
    ("grid: {lr: []}", "optimizers.sgd.grid.lr", "empty list"),
    ("grid: {lr: [[0.1]]}", "optimizers.sgd.grid.lr[0]", "expected float, got list"),
    ("grid: {lr: [2020-01-01]}", "optimizers.sgd.grid.lr[0]", "unsupported value"),
    ("grid: {lr: [1000000000000000000000000000]}", "optimizers.sgd.grid.lr[0]", "too large"),
    ("grid: [lr]", "optimizers.sgd.grid", "expected a mapping"),
    ("fixed: {lr: [0.1, 0.2]}", "optimizers.sgd.fixed.lr", "lists of candidates go under grid"),
    ("fixed: {lr_schedule: cosine}", "optimizers.sgd.fixed.lr_schedule", "not a valid choice"),
    ("grid: {lr: 0.1}\n    fixed: {lr: 0.2}", "optimizers.sgd.fixed.lr", "already set in optimizers.sgd.grid.lr"),
    ("zip: [{lr: [0.1]}, {lr: [0.2]}]", "optimizers.sgd.zip[1].lr", "already set in optimizers.sgd.zip[0].lr"),
    ("zip: [{lr: [0.1, 0.2], momentum: [0.9]}]", "optimizers.sgd.zip[0]", "lr has 2, momentum has 1"),
    ("zip: [{}]", "optimizers.sgd.zip[0]", "non-empty mapping"),
    ("zip: 3", "optimizers.sgd.zip", "list of groups"),
    ("gird: {lr: 0.1}", "optimizers.sgd.gird", "unknown key"),
    # a combination the registry accepts value by value but the optimizer rejects
    ("fixed: {nesterov: true, momentum: 0.0}", "optimizers.sgd", "invalid combination"),
]


@pytest.mark.parametrize(("fragment", "key", "problem"), BAD_VALUES)
def test_bad_hyperparameter_values(tmp_path: Path, fragment: str, key: str, problem: str) -> None:
    error = grid_error(tmp_path, f"name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    {fragment}\n")
    assert error.key == key, str(error)
    assert problem in error.problem, str(error)


def test_choice_error_lists_the_choices(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD.replace("grid: {lr: [0.1, 0.01]}", "fixed: {lr_schedule: cosine}"))
    assert error.valid == ("constant", "piecewise")


def test_list_valued_hyperparameters(tmp_path: Path) -> None:
    head = "name: t\nproblems: [digits_mlp]\noptimizers:\n  labpal_nsgd:\n"
    grid = load_grid(write(tmp_path, head + "    grid: {direction_norm_bounds: [[0.001, 100], [0.01, 10]]}\n"))
    assert [p["direction_norm_bounds"] for p in grid.optimizers["labpal_nsgd"].points] == [[0.001, 100.0], [0.01, 10.0]]
    grid = load_grid(write(tmp_path, head + "    fixed: {batch_size_schedule: [[0, 1], [0.5, 2]]}\n"))
    assert grid.optimizers["labpal_nsgd"].points[0]["batch_size_schedule"] == [[0.0, 1.0], [0.5, 2.0]]
    # one value written without the outer list under grid: a clear error, not two bogus candidates
    error = grid_error(tmp_path, head + "    grid: {direction_norm_bounds: [0.001, 100]}\n")
    assert error.key == "optimizers.labpal_nsgd.grid.direction_norm_bounds"
    assert "list of lists" in error.problem
    # the optimizer rejects a malformed value at load time
    error = grid_error(tmp_path, head + "    fixed: {batch_size_schedule: [[0.5, 1], [0.2, 2]]}\n")
    assert error.key == "optimizers.labpal_nsgd" and "batch_size_schedule" in error.problem
    error = grid_error(tmp_path, head + "    fixed: {direction_norm_bounds: [1, 2, 3]}\n")
    assert error.key == "optimizers.labpal_nsgd"


BAD_SETTINGS = [
    # (YAML appended to a good grid, expected key, expected fragment of the problem)
    ("budget: {steps: 0}", "budget.steps", "outside [1,"),
    ("budget: {steps: -5}", "budget.steps", "outside [1,"),
    ("budget: {steps: 1.5e+3}", "budget.steps", "expected a positive integer"),
    ("budget: {steps: '100'}", "budget.steps", "expected a positive integer"),
    ("budget: {steps: true}", "budget.steps", "expected a positive integer"),
    ("budget: {eval_every: 0}", "budget.eval_every", "outside"),
    ("budget: {steps: {cifar10_resnet32: 10}}", "budget.steps.cifar10_resnet32", "not one of this grid's problems"),
    ("budget: {stpes: 10}", "budget.stpes", "unknown key"),
    ("budget: [10]", "budget", "expected a mapping"),
    ("seeds: []", "seeds", "empty list"),
    ("seeds: [1, 1.5]", "seeds[1]", "expected a non-negative integer"),
    ("seeds: [1, '2']", "seeds[1]", "expected a non-negative integer"),
    ("seeds: [true]", "seeds[0]", "expected a non-negative integer"),
    ("seeds: [-1]", "seeds[0]", "outside"),
    ("seeds: [1, 2, 1]", "seeds[2]", "listed twice"),
    ("seeds: {a: 1}", "seeds", "expected a list"),
    ("training: {batch_size: 0}", "training.batch_size", "outside"),
    ("training: {weight_decay: -1.0e-4}", "training.weight_decay", ">= 0"),
    ("training: {weight_decay: '1e-4'}", "training.weight_decay", "write the number without quotes"),
    ("budget: {steps: 5e3}", "budget.steps", "expected a positive integer, got number 5000.0"),
    ("training: {split: random}", "training.split", "unknown split"),
    ("resources: {gpus_per_run: 0}", "resources.gpus_per_run", "outside"),
    ("resources: {runs_per_worker: 0}", "resources.runs_per_worker", "outside"),
    ("resources: {runs_per_worker: four}", "resources.runs_per_worker", "expected a positive integer"),
    ("resources: {time_limit: 24:00:00}", "resources.time_limit", 'quote it: "24:00:00"'),
    ("resources: {time_limit: '1 day'}", "resources.time_limit", "HH:MM:SS"),
    ("resources: {memory: 16}", "resources.memory", "Slurm size"),
    ("resources: {memory: 16Q}", "resources.memory", "Slurm size"),
    ("resources: {cpus: 4}", "resources.cpus", "unknown key"),
    ("store: 3", "store", "SQLAlchemy URL"),
    ("store: not a url", "store", "SQLAlchemy URL"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), BAD_SETTINGS)
def test_bad_settings(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    error = grid_error(tmp_path, GOOD + text + "\n")
    assert error.key == key, str(error)
    assert fragment in error.problem, str(error)


def test_split_error_lists_the_splits(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD + "training: {split: random}\n")
    assert error.valid == ("default", "labpal")


BAD_NAMES = ["", "a/b", "../x", "a b", "a;b", "$(rm -rf ~)", "`x`", "a|b", "-x", ".hidden", "x" * 65, "é", "a\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names(tmp_path: Path, name: str) -> None:
    error = grid_error(tmp_path, GOOD.replace("name: t", f"name: {json.dumps(name)}"))
    assert error.key == "name"


@pytest.mark.parametrize("name", [123, True, None, ["a"]])
def test_name_must_be_a_string(tmp_path: Path, name: object) -> None:
    error = grid_error(tmp_path, GOOD.replace("name: t", f"name: {json.dumps(name)}"))
    assert error.key == "name" and "expected a string" in error.problem


def test_good_names(tmp_path: Path) -> None:
    for name in ["a", "pal_cifar10", "A.b-c_1", "9" * 64]:
        assert load_grid(write(tmp_path, GOOD.replace("name: t", f"name: '{name}'"))).name == name


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: t\nname: u\nproblems: [digits_mlp]\noptimizers: {sgd: {}}\n", "name"),
        (
            "name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd:\n    grid: {lr: 0.1, lr: 0.2}\n",
            "optimizers.sgd.grid.lr",
        ),
        ("name: t\nproblems: [digits_mlp]\noptimizers:\n  sgd: {}\n  sgd: {}\n", "optimizers.sgd"),
    ],
)
def test_duplicate_keys(tmp_path: Path, text: str, key: str) -> None:
    error = grid_error(tmp_path, text)
    assert error.key == key and "duplicate key" in error.problem


def test_repeated_problem(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD.replace("[digits_mlp]", "[digits_mlp, digits_mlp]"))
    assert error.key == "problems[1]" and "twice" in error.problem


BAD_PROBLEMS = ["[]", "{a: 1}", "null", "3"]


@pytest.mark.parametrize("value", BAD_PROBLEMS)
def test_problems_must_be_a_non_empty_list(tmp_path: Path, value: str) -> None:
    error = grid_error(tmp_path, GOOD.replace("[digits_mlp]", value))
    assert error.key == "problems"


def test_one_value_where_a_list_is_expected(tmp_path: Path) -> None:
    """`problems: digits_mlp` and `seeds: 1` are one-element lists, and grid values one candidate."""
    text = "name: t\nproblems: digits_mlp\nseeds: 7\noptimizers:\n  sgd:\n    grid: {lr: 0.1}\n"
    grid = load_grid(write(tmp_path, text))
    assert grid.problems == ["digits_mlp"] and grid.seeds == [7]
    assert [p["lr"] for p in grid.optimizers["sgd"].points] == [0.1]
    listed = load_grid(write(tmp_path, text.replace("digits_mlp", "[digits_mlp]").replace("7", "[7]"), "b.yaml"))
    assert listed.grid_hash == grid.grid_hash
    error = grid_error(tmp_path, text.replace("problems: digits_mlp", "problems: mnist_mpl"))
    assert error.key == "problems[0]" and error.valid == tuple(PROBLEMS)


@pytest.mark.parametrize(("written", "value"), [("1e-3", 1e-3), ("1E-4", 1e-4), ("5e3", 5e3), ("+2.5e+1", 25.0)])
def test_numbers_in_exponent_notation_are_floats(tmp_path: Path, written: str, value: float) -> None:
    """YAML 1.2 reads 1e-3 as a float (PyYAML's YAML 1.1 reads it as a string): as grid values and settings."""
    text = f"name: t\nproblems: [digits_mlp]\ntraining: {{weight_decay: {written}}}\noptimizers:\n"
    text += f"  sgd:\n    grid: {{lr: [{written}, 0.5]}}\n"
    grid = load_grid(write(tmp_path, text))
    assert [p["lr"] for p in grid.optimizers["sgd"].points] == [value, 0.5]
    assert grid.training["digits_mlp"].weight_decay == value
    same = text.replace(written, repr(value))  # the same grid written with a dot: the same grid hash
    assert load_grid(write(tmp_path, same, "dot.yaml")).grid_hash == grid.grid_hash


BAD_OPTIMIZERS = ["{}", "[sgd]", "null", "3"]


@pytest.mark.parametrize("value", BAD_OPTIMIZERS)
def test_optimizers_must_be_a_non_empty_mapping(tmp_path: Path, value: str) -> None:
    error = grid_error(tmp_path, f"name: t\nproblems: [digits_mlp]\noptimizers: {value}\n")
    assert error.key == "optimizers" and error.valid == tuple(OPTIMIZERS)


def test_non_string_keys(tmp_path: Path) -> None:
    error = grid_error(tmp_path, GOOD + "1: 2\n")
    assert error.key == "1" and "keys must be strings" in error.problem


def test_aliases_and_merge_keys_are_fine(tmp_path: Path) -> None:
    text = """\
    name: t
    problems: [digits_mlp]
    optimizers:
      labpal_sgd: &base
        grid: {momentum: [0.0, 0.9]}
      labpal_nsgd:
        <<: *base
        fixed: {sgd_steps: 100}
    """
    grid = load_grid(write(tmp_path, text))
    assert len(grid.optimizers["labpal_sgd"].points) == 2
    assert [p["sgd_steps"] for p in grid.optimizers["labpal_nsgd"].points] == [100, 100]


def test_alias_bomb_is_rejected_quickly(tmp_path: Path) -> None:
    """Aliases share objects, so 25 anchors describe a value with 2**25 leaves: refused by size, not expanded."""
    anchors = ["&b0 [0, 1]"] + [f"&b{i} [*b{i - 1}, *b{i - 1}]" for i in range(1, 25)]
    text = (
        "name: t\nproblems: [digits_mlp]\noptimizers:\n  labpal_sgd:\n    fixed:\n"
        f"      batch_size_schedule: [{', '.join(anchors)}]\n"
    )
    error = grid_error(tmp_path, text)
    assert error.key == "optimizers.labpal_sgd.fixed.batch_size_schedule"
    assert "too large" in error.problem


def test_too_many_runs(tmp_path: Path) -> None:
    values = ", ".join(str(0.01 * (i + 1)) for i in range(100))
    text = f"""\
    name: t
    problems: [digits_mlp]
    seeds: {list(range(60))}
    optimizers:
      sgd:
        grid: {{lr: [{values}], momentum: [{", ".join(str(0.009 * i) for i in range(100))}], nesterov: [false, true]}}
    """
    assert MAX_RUNS < 100 * 100 * 2 * 60
    error = grid_error(tmp_path, text)
    assert error.key == "optimizers" and "more than" in error.problem


def test_parse_grid_names_its_source() -> None:
    with pytest.raises(GridError, match=r"^<string>: sedes: unknown key"):
        parse_grid(GOOD + "sedes: [1]\n")
    with pytest.raises(GridError, match=r"^memory\.yaml: "):
        parse_grid("[1", source="memory.yaml")


def test_never_a_traceback_on_random_documents() -> None:
    """Random structures built from the schema's vocabulary: a Grid or a one-line GridError, nothing else."""
    rng = random.Random(0)
    keys = [
        "name", "problems", "budget", "seeds", "training", "optimizers", "resources", "store", "grid", "zip", "fixed",
        "steps", "eval_every", "batch_size", "weight_decay", "split", "gpus_per_run", "time_limit", "memory",
        "runs_per_worker", *OPTIMIZERS, *PROBLEMS, "lr", "momentum", "nesterov", "measuring_step_size",
        "batch_size_schedule", "direction_norm_bounds", "noise_factor", "max_step_size", "lr_schedule", "estimator",
    ]  # fmt: skip
    scalars = [
        None, True, False, 0, 1, -1, 3, 2**70, 0.5, 1e-4, -0.0, float("inf"), "", "x", "sgd", "digits_mlp",
        "piecewise", "labpal", "24:00:00", "16G", "sqlite:///x.db", "1e-4", "a/b",
    ]  # fmt: skip

    def value(depth: int) -> object:
        roll = rng.random()
        if depth > 3 or roll < 0.4:
            return rng.choice(scalars)
        if roll < 0.7:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(4))}

    base = yaml.safe_load(GOOD)
    outcomes = {"grid": 0, "error": 0}
    for _ in range(400):
        data = dict(base) if rng.random() < 0.7 else {}
        for _ in range(rng.randrange(0, 4)):
            data[rng.choice(keys)] = value(0)
        if rng.random() < 0.5:
            data["optimizers"] = {rng.choice(list(OPTIMIZERS)): {rng.choice(["grid", "fixed", "zip"]): value(1)}}
        text = yaml.safe_dump(data)
        try:
            parse_grid(text)
            outcomes["grid"] += 1
        except GridError as error:
            assert "\n" not in str(error) and str(error).startswith("<string>: ")
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and outcomes["grid"] > 0
