"""Reading grid YAML (lsbench.sweep.yamlfile): numbers as YAML 1.2 reads them, nothing else changed from PyYAML's
safe loader, repeated keys refused; and a grid package that imports without torch."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import yaml

from lsbench.sweep.yamlfile import YamlProblem, read_yaml


@pytest.mark.parametrize(
    ("written", "value"),
    [("1e-3", 1e-3), ("1E-4", 1e-4), ("5e3", 5000.0), ("-2e+2", -200.0), ("+1e0", 1.0), ("1.0e4", 1e4)],
)
def test_exponent_notation_is_a_float(written: str, value: float) -> None:
    assert yaml.safe_load(f"x: {written}")["x"] != value  # PyYAML alone (YAML 1.1): a string
    read = read_yaml(f"x: {written}\ny: [{written}]\n")
    assert read == {"x": value, "y": [value]} and isinstance(read["x"], float)


@pytest.mark.parametrize(
    "written",
    [
        "1", "-3", "1_000", "0x1F", "0o17", "24:00:00", "1.5", "-0.0", "1.", ".5", "1.0e-4", ".5e-3", ".inf", "-.inf",
        "true", "null", "2020-01-01", "'1e-3'", '"5e3"', "1e", "e3", "1e-", "1.2.3", "1e3e3", "abc", "1-e3",
    ],
)  # fmt: skip
def test_everything_else_reads_as_pyyaml_reads_it(written: str) -> None:
    assert read_yaml(f"x: {written}") == yaml.safe_load(f"x: {written}")


def test_nan_stays_nan() -> None:
    assert math.isnan(read_yaml("x: .nan")["x"])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("a: 1\na: 2\n", "a"),
        ("a: {b: 1, c: 2, b: 3}\n", "a.b"),
        ("a:\n  - {x: 1}\n  - {y: 1, y: 2}\n", "a[1].y"),
    ],
)
def test_a_repeated_key_is_refused_with_its_path_and_line(text: str, key: str) -> None:
    with pytest.raises(YamlProblem) as info:
        read_yaml(text)
    assert info.value.key == key and info.value.problem.startswith("duplicate key (line ")


def test_merge_keys_and_aliases_are_no_repeats() -> None:
    assert read_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\ne: *x\n") == {
        "a": {"b": 1},
        "c": {"b": 1, "d": 2},
        "e": {"b": 1},
    }


@pytest.mark.parametrize("text", ["a: [1\n", "a: !!python/object:os.system {}\n", "---\na: 1\n---\na: 2\n"])
def test_bad_yaml_is_one_problem_with_a_position(text: str) -> None:
    with pytest.raises(YamlProblem) as info:
        read_yaml(text)
    assert info.value.key.startswith("line ") and info.value.problem.startswith("invalid YAML: ")


def test_empty_document_is_none() -> None:
    assert read_yaml("") is None and read_yaml("# only a comment\n") is None


def test_importing_the_grid_package_and_profiles_does_not_import_torch() -> None:
    """GridError, Resources and the profile schema are used by commands that never train; torch (through the
    registries) is imported only when a grid is loaded."""
    code = (
        "import sys\n"
        "from lsbench.sweep.grid import Grid, GridError, Resources, resolve_point\n"
        "from lsbench.sweep.backends.profile import load_profile, profile_json_schema\n"
        "profile_json_schema()\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from lsbench.sweep.grid import parse_grid\n"
        "parse_grid('name: t\\nproblems: digits_mlp\\noptimizers: {sgd: {}}\\n')\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
