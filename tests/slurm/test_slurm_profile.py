"""Cluster profiles: one list of valid keys, one-line errors, the shipped profiles are valid."""

from pathlib import Path

import pytest

from lsbench.sweep.backends.profile import PROFILE_KEYS, Profile, ProfileError, load_profile, parse_profile
from lsbench.sweep.cli import main

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


@pytest.mark.parametrize("name", ["tcml", "local", "testing"])
def test_shipped_profiles_are_valid(name):
    profile = load_profile(CLUSTER / f"{name}.yaml")
    assert profile.backend in ("slurm", "local")


def test_tcml_profile_describes_the_thesis_nodes():
    tcml = load_profile(CLUSTER / "tcml.yaml")
    assert tcml.gpus_per_node == 4 and tcml.node["gpus"] == 4
    assert tcml.node["memory"] == "256G" and tcml.node["scratch_size"] == "2T"
    assert "E5-2650 v4" in tcml.node["cpu_model"] and "GTX 1080" in tcml.node["gpu_model"]
    assert tcml.placement == "node" and tcml.slots(1) == 4 and tcml.stage_data


def test_profile_fields_are_exactly_the_valid_keys():
    fields = set(Profile.__dataclass_fields__) - {"source", "text"}
    assert fields == set(PROFILE_KEYS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("placement: gpu\nimage: /x.sif\npartiton: day\n", "partiton: unknown key (valid: backend,"),
        ("image: /x.sif\nplacement: rack\n", "placement: must be one of gpu, node"),
        ("image: /x.sif\npartition: 'day; rm -rf /'\n", "partition: must be a Slurm name"),
        ("image: /x.sif\ntime_limit: 86400\n", 'time_limit: must be a quoted time "HH:MM:SS"'),
        ("image: /x.sif\nbinds: ['/data,/etc']\n", "binds: must not contain ','"),
        ("image: /x.sif\nnode: {gpu: 4}\n", "node.gpu: unknown key (valid: gpus,"),
        ("image: /x.sif\nscratch: '$(id)'\n", "scratch: must be a path or $VARIABLE"),
        ("backend: slurm\n", "image: a slurm profile needs the container image"),
        ("image: /x.sif\nstage_data: true\n", "stage_data: needs data_dir"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_profiles_are_one_line_errors(text, message):
    with pytest.raises(ProfileError) as error:
        parse_profile(text, "p.yaml")
    assert message in str(error.value) and "\n" not in str(error.value) and str(error.value).startswith("p.yaml: ")


def test_an_unknown_profile_key_is_exit_code_2_with_one_line(tmp_path, capsys):
    profile = tmp_path / "bad.yaml"
    profile.write_text("backend: slurm\nimage: /x.sif\ngpus: 4\n")
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nproblems: [digits_mlp]\noptimizers: {sgd: {}}\n")
    code = main(["submit", str(grid), "--profile", str(profile), "--root", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "gpus: unknown key" in err
    assert not (tmp_path / "runs").exists()  # nothing written
