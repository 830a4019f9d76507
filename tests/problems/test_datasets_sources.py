"""lsbench.problems.sources: what each dataset needs on disk and which splits it offers (checked on the login node
before runs are queued), `lsbench data check` and `lsbench data download`."""

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torchvision.datasets
from tests.problems.test_datasets import write_cifar
from tests.problems.test_datasets_thesis import write_image_folder, write_mnist, write_svhn, write_tolstoi

from lsbench.cli import main
from lsbench.problems import PROBLEMS, sources
from lsbench.problems.datasets import _CIFAR_SPLITS, _SVHN_SPLITS, load_dataset
from lsbench.problems.imagefolder import _SPLITS as IMAGE_FOLDER_SPLITS
from lsbench.runs import SPLITS


def write_tolstoi_npy(root: Path) -> None:
    (root / "tolstoi").mkdir(parents=True)
    ids = np.arange(2000) % 7  # enough for one 50-character sequence in each split
    np.save(root / "tolstoi" / "train.npy", ids[:1600])
    np.save(root / "tolstoi" / "test.npy", ids[1600:])


# dataset -> (write a tiny copy under root, a file whose loss makes it unreadable)
WRITERS = {
    "cifar10": (lambda root: write_cifar(root, "cifar10"), "cifar-10-batches-py/data_batch_3"),
    "cifar100": (lambda root: write_cifar(root, "cifar100"), "cifar-100-python/test"),
    "cifar10small": (lambda root: write_cifar(root, "cifar10"), "cifar-10-batches-py/test_batch"),
    "svhn": (write_svhn, "svhn/test_32x32.mat"),
    "mnist": (write_mnist, "mnist/train-images-idx3-ubyte.gz"),
    "mnist_torchvision": (lambda root: write_mnist(root, folder="MNIST/raw"), "MNIST/raw/t10k-labels-idx1-ubyte"),
    "tolstoi": (write_tolstoi, "tolstoi/war_and_peace.txt"),
    "tolstoi_npy": (write_tolstoi_npy, "tolstoi/test.npy"),
    "imagenet": (write_image_folder, "imagenet/val"),
}


def test_every_problem_names_its_dataset_and_every_dataset_is_described():
    assert {spec.dataset for spec in PROBLEMS.values()} <= set(sources.SOURCES)
    for name, spec in PROBLEMS.items():
        assert sources.dataset_of(name) == spec.dataset
    for source in sources.SOURCES.values():
        assert set(source.splits) <= set(SPLITS) and "default" in source.splits
        assert bool(source.needs) == source.on_disk and (source.fetch is not None) == (source.kind == "download")


def test_declared_splits_are_the_rules_the_readers_implement():
    assert set(sources.offered_splits("cifar10")) == set(sources.offered_splits("cifar100")) == set(_CIFAR_SPLITS)
    assert set(sources.offered_splits("svhn")) == set(_SVHN_SPLITS)
    assert set(sources.offered_splits("imagenet")) == set(IMAGE_FOLDER_SPLITS)
    for name in ("digits", "synthetic", "cifar10shaped", "matfac"):  # generated or bundled: the loader asks SOURCES
        with pytest.raises(ValueError, match="has no split 'labpal'; available: default"):
            load_dataset(name, split="labpal")


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_presence_check_agrees_with_the_reader(tmp_path, case):
    dataset = case.partition("_")[0]
    write, needed = WRITERS[case]
    write(tmp_path)
    status = sources.dataset_status(dataset, tmp_path)
    assert status.present and status.path is not None and status.path.exists()
    assert sources.check_data([(f"{dataset}_x", "default")], tmp_path) == []
    load_dataset(dataset, data_dir=tmp_path)  # what the check calls present, the reader reads

    gone = tmp_path / needed
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    status = sources.dataset_status(dataset, tmp_path)
    assert not status.present
    with pytest.raises(FileNotFoundError):
        load_dataset(dataset, data_dir=tmp_path)


def test_bundled_and_generated_data_is_always_present(tmp_path):
    for name in ("digits", "synthetic", "cifar10shaped", "matfac"):
        status = sources.dataset_status(name, tmp_path / "nothing")
        assert status.present and status.path is None


def test_missing_data_is_one_line_naming_the_problems_the_file_and_the_fix(tmp_path):
    runs = [(problem, "default") for problem in ("cifar10_resnet20", "cifar10_resnet32", "digits_mlp")]
    runs += [("imagenet_resnet50_imagenet", "labpal"), ("cifar10_densenet40", "labpal"), ("cifar10_resnet18", "x")]
    problems = sources.check_data(runs, tmp_path, origin="$LSBENCH_DATA", set_dir="set $LSBENCH_DATA")
    assert len(problems) == 2  # CIFAR-10 and ImageNet; digits ships with scikit-learn
    cifar, imagenet = problems
    assert "\n" not in cifar and "\n" not in imagenet
    assert cifar.startswith(
        "CIFAR-10 (for cifar10_resnet20, cifar10_resnet32, cifar10_densenet40 and 1 more) is not in "
        f"{tmp_path} ($LSBENCH_DATA): no {tmp_path}/cifar-10-batches-py/data_batch_1; "
        f"run `lsbench data download cifar10 --data-dir {tmp_path}` on a machine with network access"
    )
    assert cifar.endswith("or set $LSBENCH_DATA to a directory that holds cifar-10-batches-py/")
    assert f"no {tmp_path}/imagenet/train;" in imagenet and "licence" in imagenet


def test_a_split_the_dataset_does_not_offer_is_named_with_the_ones_it_does():
    runs = [("digits_mlp", "labpal"), ("digits_cnn", "labpal"), ("cifar10_resnet20", "labpal"), ("mnist_mlp", "x")]
    assert sources.check_splits(runs) == [
        "digits_mlp: dataset 'digits' has no split 'labpal' (it offers: default)",
        "mnist_mlp: dataset 'mnist' has no split 'x' (it offers: default)",
    ]
    with pytest.raises(sources.DataError, match="unknown dataset 'nope'"):
        sources.check_splits([("nope_mlp", "default")])


def test_the_sources_module_does_not_import_torch():
    code = "import sys, lsbench.problems.sources, lsbench.problems.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------- lsbench data


def test_data_check_lists_every_dataset_and_what_is_there(tmp_path, capsys, monkeypatch):
    write_cifar(tmp_path, "cifar10")
    monkeypatch.setenv("LSBENCH_DATA", str(tmp_path))
    assert main(["data", "check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"data directory: {tmp_path} ($LSBENCH_DATA)"
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows == {name: "missing" for name in sources.SOURCES} | {
        "cifar10": "present",
        "cifar10small": "present",
        "digits": "bundled",
        "synthetic": "generated",
        "cifar10shaped": "generated",
        "matfac": "generated",
    }

    assert main(["data", "check", "--json", "--data-dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    by_name = {entry["dataset"]: entry for entry in report["datasets"]}
    assert by_name["cifar10"] == {
        "dataset": "cifar10",
        "title": "CIFAR-10",
        "kind": "download",
        "present": True,
        "path": str(tmp_path / "cifar-10-batches-py"),
        "splits": ["default", "labpal"],
    }
    assert by_name["svhn"]["present"] is False and by_name["svhn"]["path"] == str(tmp_path / "svhn/train_32x32.mat")

    # Named datasets: exit 1 when one of them is missing (for scripts), 2 for an unknown name.
    assert main(["data", "check", "cifar10", "digits"]) == 0
    assert main(["data", "check", "cifar10", "svhn"]) == 1
    capsys.readouterr()
    assert main(["data", "check", "cifar11"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


class FakeCIFAR10:
    """torchvision.datasets.CIFAR10 as far as the downloader uses it: writes the folder as if downloaded."""

    calls: ClassVar[list[dict]] = []

    def __init__(self, root, train=True, download=False, **_):
        FakeCIFAR10.calls.append({"root": root, "train": train, "download": download})
        write_cifar(Path(root), "cifar10")


def test_data_download_fetches_with_torchvision_into_the_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls.clear()
    target = tmp_path / "data"
    assert main(["data", "download", "cifar10", "--data-dir", str(target)]) == 0
    assert capsys.readouterr().out == f"cifar10: downloaded to {target / 'cifar-10-batches-py'}\n"
    assert FakeCIFAR10.calls == [{"root": str(target), "train": True, "download": True}]
    assert load_dataset("cifar10", data_dir=target).train_targets.shape == (90,)
    # Present already: nothing is fetched again.
    assert main(["data", "download", "cifar10", "--data-dir", str(target)]) == 0
    assert "already in" in capsys.readouterr().out and len(FakeCIFAR10.calls) == 1
    # The readers' download=True goes through the same downloader.
    assert load_dataset("cifar10", data_dir=tmp_path / "other", download=True).test_targets.shape == (20,)
    assert FakeCIFAR10.calls[-1]["root"] == str(tmp_path / "other")


def test_data_download_offline_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):  # what urllib raises without DNS
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", offline)
    assert main(["data", "download", "cifar100", "--data-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"lsbench data: error: cannot download CIFAR-100 into {tmp_path}: ")
    assert "Temporary failure in name resolution" in line and "network access" in line


def test_data_that_cannot_be_downloaded_says_how_to_get_it(tmp_path, capsys):
    assert main(["data", "download", "imagenet", "--data-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "ImageNet cannot be downloaded by lsbench" in line and "licence" in line
    assert main(["data", "download", "digits"]) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_data_commands_have_help(capsys):
    for command in (["data"], ["data", "check"], ["data", "download"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "-h"])
        assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
