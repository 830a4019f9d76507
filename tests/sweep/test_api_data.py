"""Data checked before anything is queued: `sweep submit` refuses a grid whose data is not where its workers will
read it ($LSBENCH_DATA locally, the profile's data_dir on Slurm) or whose split a dataset does not offer, with one
line and exit 2; `--dry-run` prints the same as a warning; `submit --wait` exits 1 and says how many runs failed."""

import json
import time
from pathlib import Path

import pytest
from tests.problems.test_datasets import write_cifar

from lsbench.store import Store
from lsbench.sweep import api
from lsbench.sweep.layout import SweepDir

CIFAR_GRID = """\
name: {name}
problems: {problems}
budget: {{steps: 20, eval_every: 20}}
seeds: [1]
optimizers:
  sgd: {{grid: {{lr: {lrs}}}}}
"""


def write_grid(directory: Path, name: str, problems: str = "cifar10_resnet20", lrs: str = "[0.1]") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(CIFAR_GRID.format(name=name, problems=problems, lrs=lrs))
    return path


def error_line(outcome) -> str:
    """The one line a refused command prints, without the program's prefix."""
    lines = outcome.stderr.strip().splitlines()
    assert outcome.returncode == 2 and len(lines) == 1 and outcome.stdout == "", outcome
    return lines[0].removeprefix("sweep: error: ")


@pytest.fixture
def empty_data(tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("LSBENCH_DATA", str(data))
    return data


def slurm_profile(directory: Path, data_dir: Path, *, image: bool = True) -> Path:
    """A Slurm profile whose image exists (unless ``image`` is false) and whose workers read ``data_dir``."""
    sif = directory / "lsbench.sif"
    if image:
        sif.write_bytes(b"not really an image")
    path = directory / "site.yaml"
    path.write_text(
        "backend: slurm\npartition: gpu\nnode: {gpus: 4, gpu_model: NVIDIA H100 (80 GB)}\n"
        f"image: {sif}\ndata_dir: {data_dir}\n"
    )
    return path


def test_a_grid_written_as_people_write_it_plans(tmp_path):
    path = tmp_path / "simple.yaml"
    path.write_text("name: simple\nproblems: digits_mlp\nseeds: 1\noptimizers:\n  sgd: {grid: {lr: [1e-3]}}\n")
    planned = api.plan(path, root=tmp_path / "runs")
    (run,) = planned.runs
    assert (run.problem, run.optimizer, run.seed, run.hparams["lr"]) == ("digits_mlp", "sgd", 1, 0.001)
    assert planned.checks == ()  # digits ships with scikit-learn


def test_missing_data_refuses_a_local_submit_with_one_line_before_anything_is_queued(tmp_path, sweep_cli, empty_data):
    root = tmp_path / "runs"
    grid = write_grid(tmp_path, "cifar")
    line = error_line(sweep_cli(root, "submit", str(grid)))
    assert line.startswith(
        f"CIFAR-10 (for cifar10_resnet20) is not in {empty_data} ($LSBENCH_DATA): "
        f"no {empty_data}/cifar-10-batches-py/data_batch_1; run `lsbench data download cifar10 --data-dir {empty_data}`"
    )
    assert not root.exists()  # no sweep directory, no store, no run queued

    # The dry run prints the same line as a warning, after the plan.
    dry = sweep_cli(root, "submit", str(grid), "--dry-run")
    assert dry.returncode == 0 and dry.stderr == ""
    assert "sweep cifar: 1 runs" in dry.stdout and dry.stdout.rstrip().endswith(f"warning: {line}")
    report = json.loads(sweep_cli(root, "submit", str(grid), "--dry-run", "--json").stdout)
    assert report["warnings"] == [line] and report["profile"] is None and report["total"]["runs"] == 1
    assert not root.exists()

    # With the data in place the same grid passes the check (the dry run warns of nothing).
    write_cifar(empty_data, "cifar10")
    assert json.loads(sweep_cli(root, "submit", str(grid), "--dry-run", "--json").stdout)["warnings"] == []


def test_missing_data_in_a_slurm_profiles_data_dir_is_refused_from_the_login_node(tmp_path, sweep_cli, monkeypatch):
    # $LSBENCH_DATA holds the data, but the workers read the profile's data_dir, which does not.
    here = tmp_path / "here"
    write_cifar(here, "cifar10")
    monkeypatch.setenv("LSBENCH_DATA", str(here))
    shared = tmp_path / "shared" / "data"
    profile = slurm_profile(tmp_path, shared)
    root, grid = tmp_path / "runs", write_grid(tmp_path, "cifar")

    line = error_line(sweep_cli(root, "submit", str(grid), "--profile", str(profile)))
    assert line.startswith(f"CIFAR-10 (for cifar10_resnet20) is not in {shared} (data_dir of {profile}): ")
    assert line.endswith(f"or set data_dir in {profile} to a directory that holds cifar-10-batches-py/")
    assert not root.exists()  # refused before a sweep directory, a batch script or an sbatch call

    dry = sweep_cli(root, "submit", str(grid), "--profile", str(profile), "--dry-run", "--json")
    report = json.loads(dry.stdout)
    assert dry.returncode == 0 and report["warnings"] == [line]
    assert report["profile"] == {
        "source": str(profile),
        "backend": "slurm",
        "gpus": 4,
        "gpu_model": "NVIDIA H100 (80 GB)",
    }

    write_cifar(shared, "cifar10")
    text = sweep_cli(root, "submit", str(grid), "--profile", str(profile), "--dry-run")
    assert text.returncode == 0 and "warning" not in text.stdout
    assert f"profile {profile} (slurm): 4 x NVIDIA H100 (80 GB) per node" in text.stdout.splitlines()[1]


def test_a_missing_image_is_a_warning_in_a_dry_run_and_an_error_for_a_real_submit(tmp_path, sweep_cli):
    data = tmp_path / "data"
    write_cifar(data, "cifar10")
    profile = slurm_profile(tmp_path, data, image=False)
    root, grid = tmp_path / "runs", write_grid(tmp_path, "cifar")
    expected = f"{profile}: image: {tmp_path / 'lsbench.sif'} does not exist"
    dry = sweep_cli(root, "submit", str(grid), "--profile", str(profile), "--dry-run", "--json")
    assert dry.returncode == 0
    assert json.loads(dry.stdout)["warnings"] == [f"{expected} yet (sweep image build)"]
    assert error_line(sweep_cli(root, "submit", str(grid), "--profile", str(profile))).startswith(expected)
    assert not root.exists()


def test_a_split_the_dataset_does_not_offer_is_refused_in_a_dry_run_too(tmp_path, sweep_cli):
    path = tmp_path / "split.yaml"
    path.write_text("name: split\nproblems: [digits_mlp]\ntraining: {split: labpal}\noptimizers: {sgd: {}}\n")
    expected = f"{path}: digits_mlp: dataset 'digits' has no split 'labpal' (it offers: default)"
    for extra in ([], ["--dry-run"]):
        assert error_line(sweep_cli(tmp_path / "runs", "submit", str(path), *extra)) == expected
    assert not (tmp_path / "runs").exists()


def test_submit_wait_exits_1_and_says_how_many_runs_failed_a_diverged_run_is_a_result(tmp_path, sweep_cli, empty_data):
    # Files that are present but unreadable: the check passes, the runs on them fail in their workers.
    folder = empty_data / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    root = tmp_path / "runs"
    grid = write_grid(tmp_path, "mixed", problems="[digits_mlp, cifar10_resnet20]", lrs="[0.1, 1e12]")
    outcome = sweep_cli(root, "submit", str(grid), "--wait", "--workers", "2")
    assert outcome.returncode == 1, outcome
    assert outcome.stderr.strip().splitlines() == [
        "sweep mixed: 2 of 4 runs failed; `sweep status mixed` shows why, `sweep resubmit mixed --failed` runs them "
        "again"
    ]
    with Store(SweepDir(root / "mixed").store_url()) as store:
        states = {(row.problem, row.hparams["lr"]): row.status for row in store.sweep_runs("mixed")}
    assert states == {
        ("digits_mlp", 0.1): "completed",
        ("digits_mlp", 1e12): "diverged",
        ("cifar10_resnet20", 0.1): "failed",
        ("cifar10_resnet20", 1e12): "failed",
    }

    # `resubmit` checks the data as well: with the folder gone it queues nothing.
    deadline = time.monotonic() + 60
    while api.list_sweeps(root)[0].active:  # the pool exits a moment after its last run
        assert time.monotonic() < deadline, "the pool did not exit"
        time.sleep(0.2)
    for path in folder.iterdir():
        path.unlink()
    line = error_line(sweep_cli(root, "resubmit", "mixed", "--failed"))
    assert line.startswith(f"CIFAR-10 (for cifar10_resnet20) is not in {empty_data} ($LSBENCH_DATA): ")
    assert json.loads(sweep_cli(root, "status", "mixed", "--json").stdout)["counts"]["failed"] == 2
