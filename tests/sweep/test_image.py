"""`sweep image check` (our own definition-file parser) and `sweep image build` (through the stand-in apptainer)."""

import json
import os
import re
import tomllib

import pytest
from tests import paths

from lsbench.sweep.cli import main

REPO = paths.REPO
DEFINITION = REPO / "containers" / "lsbench.def"
STAND_IN_BIN = paths.STAND_IN_BIN


def sweep(capsys, *args):
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_shipped_definition_passes(capsys):
    code, out, err = sweep(capsys, "image", "check", str(DEFINITION))
    assert code == 0, err
    assert "ok (Bootstrap docker pytorch/pytorch:" in out


def broken(tmp_path, old, new):
    text = DEFINITION.read_text()
    assert old in text
    path = tmp_path / "broken.def"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("Bootstrap: docker\n", "", "the first header line must be 'Bootstrap: <agent>'"),
        ("Bootstrap: docker\nFrom: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime\n", "", "no 'Bootstrap:' header"),
        ("Bootstrap: docker", "Bootstrap: dockr", "unknown bootstrap agent 'dockr'"),
        ("From: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", "From: pytorch/pytorch", "is not pinned"),
        ("From: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", "From: pytorch/pytorch:latest", "is not pinned"),
        ("From: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime\n", "", "'Bootstrap: docker' needs a 'From:' line"),
        ("%post\n", "%postt\n", "unknown section %postt"),
        ("%environment\n    # $HOME", "%environment\n    # x", None),  # a comment change only: still fine
        ("    export PYTHONNOUSERSITE=1\n", "", "must export PYTHONNOUSERSITE=1"),
        ("%test\n", "%help\n", "no %test section"),
        ("    org.lsbench.version {{ LSBENCH_VERSION }}\n", "    org.lsbench.version\n", "needs a name and a value"),
        ("    LSBENCH_VERSION=0.1.0\n", "", "template {{ LSBENCH_VERSION }} has no default"),
        ("containers/requirements.txt /opt", "containers/requirements.txt /opt /x", "needs 'source [destination]'"),
        ("Bootstrap: docker\n", "Bootstrap: docker\nBootstrap: docker\n", "repeats line"),
    ],
)
def test_a_broken_definition_fails_with_a_one_line_reason(tmp_path, capsys, old, new, reason):
    code, out, err = sweep(capsys, "image", "check", str(broken(tmp_path, old, new)))
    if reason is None:
        assert code == 0, err
        return
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and reason in err and err.startswith(f"sweep: error: {tmp_path / 'broken.def'}")


def test_build_lints_then_runs_apptainer_build_fakeroot_and_records_the_digest(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", f"{STAND_IN_BIN}{os.pathsep}{os.environ['PATH']}")
    calls = tmp_path / "calls"
    monkeypatch.setenv("LSBENCH_FAKE_APPTAINER_LOG", str(calls))
    wheel = tmp_path / "lsbench-0.0.0.dev0-py3-none-any.whl"  # a name no real build has: nothing is overwritten
    wheel.write_bytes(b"not a real wheel")
    copied = REPO / "build" / "image" / wheel.name
    output = tmp_path / "out" / "lsbench.sif"
    code, out, err = sweep(capsys, "image", "build", str(DEFINITION), "--output", str(output), "--wheel", str(wheel))
    assert code == 0, err
    [call] = [json.loads(path.read_text()) for path in calls.glob("*.json")]
    assert call["kind"] == "build" and "--fakeroot" in call["argv"]
    assert call["build_args"] == {"WHEEL": wheel.name, "LSBENCH_VERSION": "0.1.0"}
    assert call["definition"] == str(DEFINITION) and call["cwd"] == str(REPO)  # %files paths are repo-relative
    assert copied.is_file()
    copied.unlink()
    digest = (tmp_path / "out" / "lsbench.sif.sha256").read_text().split()[0]
    assert f"sha256:{digest}" in out


def test_build_refuses_a_broken_definition_before_building(tmp_path, capsys):
    code, _out, err = sweep(capsys, "image", "build", str(broken(tmp_path, "%test\n", "%help\n")), "--dry-run")
    assert code == 2 and "no %test section" in err


def test_the_image_installs_every_dependency_of_the_wheel():
    """The wheel goes in with --no-deps, so requirements.txt must name every dependency the base image lacks."""
    project = tomllib.loads((paths.REPO / "pyproject.toml").read_text())["project"]
    wanted = {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]}
    lines = (paths.REPO / "containers" / "requirements.txt").read_text().splitlines()
    pinned = {re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower() for line in lines if line and line[0] != "#"}
    in_base_image = {"torch", "torchvision", "numpy"}
    assert sorted(wanted - in_base_image - pinned) == []
