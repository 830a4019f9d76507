"""Cluster profiles: one list of valid keys, one-line errors, the shipped profiles are valid."""

import pytest
from jsonschema import Draft202012Validator
from tests import paths

from lsbench.sweep.backends.profile import (
    PROFILE_KEYS,
    Profile,
    ProfileError,
    find_profile,
    load_profile,
    parse_profile,
    profile_json_schema,
    shipped_profiles,
)
from lsbench.sweep.cli import main
from lsbench.sweep.yamlfile import read_yaml

PROFILES = paths.PROFILES


@pytest.mark.parametrize("name", ["tcml", "local", "testing"])
def test_shipped_profiles_are_valid(name):
    profile = load_profile(PROFILES / f"{name}.yaml")
    assert profile.backend in ("slurm", "local")


def test_tcml_profile_describes_the_thesis_nodes():
    tcml = load_profile(PROFILES / "tcml.yaml")
    assert tcml.gpus_per_node == 4 and tcml.node["gpus"] == 4
    assert tcml.node["memory"] == "256G" and tcml.node["scratch_size"] == "2T"
    assert "E5-2650 v4" in tcml.node["cpu_model"] and "GTX 1080" in tcml.node["gpu_model"]
    assert tcml.placement == "node" and tcml.slots(1) == 4 and tcml.stage_data


def test_profile_fields_are_exactly_the_valid_keys():
    # PROFILE_KEYS is read from the model: the same keys, in the same order, with the model's defaults.
    assert list(Profile.model_fields) == list(PROFILE_KEYS)
    assert {name: key.default for name, key in PROFILE_KEYS.items()} == {
        name: info.default for name, info in Profile.model_fields.items()
    }
    assert "source" not in PROFILE_KEYS and "text" not in PROFILE_KEYS  # set by the loader, not keys of the file
    profile = parse_profile("backend: local\n", "p.yaml")
    assert profile.source == "p.yaml" and profile.text == "backend: local\n"
    assert profile.poll_seconds == PROFILE_KEYS["poll_seconds"].default and profile.scratch == "$TMPDIR"


BAD_PROFILES = [
    ("placement: gpu\nimage: /x.sif\npartiton: day\n", "partiton: unknown key 'partiton' (valid: backend,"),
    ("image: /x.sif\nplacement: rack\n", "placement: must be one of gpu, node"),
    ("image: /x.sif\npartition: 'day; rm -rf /'\n", "partition: must be a Slurm name"),
    ("image: /x.sif\ntime_limit: 86400\n", 'time_limit: must be a quoted time "HH:MM:SS"'),
    ("image: /x.sif\nbinds: ['/data,/etc']\n", "binds: must not contain ','"),
    ("image: /x.sif\nnode: {gpu: 4}\n", "node.gpu: unknown key 'gpu' (valid: gpus,"),
    ("image: /x.sif\nscratch: '$(id)'\n", "scratch: must be a path or $VARIABLE"),
    ("backend: slurm\n", "image: a slurm profile needs the container image"),
    ("image: /x.sif\nstage_data: true\n", "stage_data: needs data_dir"),
    ("- a list\n", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PROFILES)
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


def test_profile_json_schema_describes_every_key_and_accepts_the_shipped_profiles():
    schema = profile_json_schema()
    Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]) == list(PROFILE_KEYS) and schema["additionalProperties"] is False
    assert schema["properties"]["placement"]["enum"] == ["gpu", "node"]
    assert schema["properties"]["signal_seconds"]["default"] == 120
    validator = Draft202012Validator(schema)
    for name in ("tcml", "local", "testing"):
        assert list(validator.iter_errors(read_yaml((PROFILES / f"{name}.yaml").read_text()))) == []


# Rejected by loading only: whether the image is given for slurm, stage_data without data_dir (rules between keys),
# and a path with a shell substitution (checked as a path when the profile is loaded).
LOADER_ONLY = ("backend: slurm\n", "image: /x.sif\nstage_data: true\n", "image: /x.sif\nscratch: '$(id)'\n")


@pytest.mark.parametrize(("text", "message"), BAD_PROFILES)
def test_profile_json_schema_rejects_the_bad_profiles(text, message):
    assert Draft202012Validator(profile_json_schema()).is_valid(read_yaml(text)) is (text in LOADER_ONLY)


def test_the_shipped_profiles_are_package_data_and_the_checkouts_cluster_files_link_to_them():
    assert sorted(shipped_profiles()) == ["local", "tcml", "testing"]
    for name, path in shipped_profiles().items():
        assert path.resolve() == (PROFILES / f"{name}.yaml").resolve()
        assert (paths.CLUSTER / f"{name}.yaml").resolve() == path.resolve()  # one copy of each file


def test_a_profile_is_found_by_name_in_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = shipped_profiles()["tcml"]
    assert find_profile("tcml") == find_profile("tcml.yaml") == find_profile("cluster/tcml.yaml") == shipped
    assert load_profile("tcml").node["gpus"] == 4
    # A project's own cluster/<name>.yaml comes first; a file given by path is read as given.
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "tcml.yaml").write_text("backend: local\n")
    assert load_profile("tcml").backend == "local"
    (tmp_path / "site.yaml").write_text("backend: local\nworkers: 3\n")
    assert load_profile(tmp_path / "site.yaml").workers == 3
    # A path that does not exist is not replaced by a shipped profile of the same name.
    with pytest.raises(ProfileError) as error:
        load_profile("elsewhere/tcml.yaml")
    assert str(error.value) == (
        "elsewhere/tcml.yaml: cannot read the profile: No such file or directory "
        "(shipped profiles: local, tcml, testing)"
    )


def test_dry_run_validates_the_profile_given_by_path_or_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nproblems: digits_mlp\noptimizers: {sgd: {}}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("backend: slurm\nimage: /x.sif\npartiton: gpu\n")
    root = str(tmp_path / "runs")
    assert main(["submit", str(grid), "--profile", str(broken), "--dry-run", "--root", root]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"sweep: error: {broken}: partiton: unknown key 'partiton' (valid: backend, ")
    assert main(["submit", str(grid), "--profile", "nope", "--dry-run", "--root", root]) == 2
    assert "nope: cannot read the profile" in capsys.readouterr().err
    assert main(["submit", str(grid), "--profile", "tcml", "--backend", "local", "--dry-run", "--root", root]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["submit", str(grid), "--profile", "tcml", "--dry-run", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "4 x NVIDIA GeForce GTX 1080 (8 GB) per node" in out.splitlines()[1]
    assert "image:" in out and "does not exist yet" in out  # a warning: the image is built later
    assert not (tmp_path / "runs").exists()
