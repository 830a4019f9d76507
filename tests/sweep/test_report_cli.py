"""`sweep report` and `sweep export` through the CLI on a sweep written straight into a store."""

import json

import matplotlib.image
import pandas as pd
import pytest
from tests.report.synthetic import make_sweep, make_vary_sweep

from lsbench.sweep import api


def test_report_writes_every_figure_and_a_self_contained_page(tmp_path, sweep_cli):
    make_sweep(tmp_path)
    result = sweep_cli(tmp_path, "report", "synthetic", "--json")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    names = {figure["name"] for figure in written["figures"]}
    assert names == {
        *(f"box_{p}_{c}" for p in ("digits_mlp", "cifar10_resnet32") for c in ("penalized", "excluded")),
        "curves_digits_mlp", "curves_cifar10_resnet32", "lr_digits_mlp", "lr_cifar10_resnet32",
        "cost", "performance_profile",
    }  # fmt: skip
    for figure in written["figures"]:
        for ext in ("png", "pdf", "csv"):
            assert (tmp_path / "synthetic" / "reports" / f"{figure['name']}.{ext}").stat().st_size > 0
    page = (tmp_path / "synthetic" / "reports" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(names)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "penalized convention); 1 of 9 points had a diverged run" in page  # pal lr=1.0, both seeds
    cost = pd.read_csv(tmp_path / "synthetic" / "reports" / "cost.csv").set_index(["problem", "optimizer"])
    # per problem: sgd 6 runs of 600 steps at 0.1 s; pal 4 of 600 steps at 0.2 s and 2 diverged after 200 steps
    assert cost.loc[("digits_mlp", "pal"), "gpu_hours_relative"] == pytest.approx((4 * 120 + 2 * 40) / (6 * 60))
    assert "GPU-hours of all runs (right) per optimizer relative to SGD" in page
    penalized = pd.read_csv(written["tables"]["penalized"])
    assert set(penalized["failed"]) == {0, 1} and set(penalized["diverged"]) == {0, 2}


def test_report_compare_labels_optimizers_by_sweep(tmp_path):
    make_sweep(tmp_path, "one")
    make_sweep(tmp_path, "two")
    result = api.report("one", compare=["two"], root=tmp_path, out=tmp_path / "both")
    cost = pd.read_csv(tmp_path / "both" / "cost.csv")
    assert {"one:sgd", "two:pal"} <= set(cost["optimizer"]) and result.index.exists()
    # One row of panels per compared sweep: twice the height of the same figure of one sweep.
    alone = api.report("one", root=tmp_path, out=tmp_path / "one_alone")
    for name in ("box_digits_mlp_penalized", "curves_digits_mlp"):
        compared = matplotlib.image.imread(tmp_path / "both" / f"{name}.png").shape[0]
        single = matplotlib.image.imread(tmp_path / "one_alone" / f"{name}.png").shape[0]
        assert compared == 2 * single, name
    assert alone.index.exists()


def test_export_csv_long_table_and_parquet_without_pyarrow(tmp_path, sweep_cli):
    make_sweep(tmp_path)
    result = sweep_cli(tmp_path, "export", "synthetic")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "synthetic" / "reports" / "metrics.csv")
    assert {"run_id", "problem", "optimizer", "hparams", "seed", "status", "step", "metric", "value"} <= set(table)
    # 2 problems × 3 optimizers × 3 points × 2 seeds = 36 runs: per problem 1 failed (no rows), 2 diverged at step 200
    assert len(table) == (30 * 6 + 4 * 2) * 4
    frame = api.export("synthetic", root=tmp_path)
    assert len(frame) == len(table)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        parquet = sweep_cli(tmp_path, "export", "synthetic", "--format", "parquet")
        assert parquet.returncode == 2 and "pyarrow" in parquet.stderr and parquet.stderr.count("\n") == 1


def test_report_of_a_vary_sweep_draws_its_sensitivity_under_both_conventions(tmp_path, sweep_cli):
    make_vary_sweep(tmp_path)
    result = sweep_cli(tmp_path, "report", "vary", "--json")
    assert result.returncode == 0, result.stderr
    names = [figure["name"] for figure in json.loads(result.stdout)["figures"]]
    assert "sensitivity_digits_mlp_penalized" in names and "sensitivity_digits_mlp_excluded" in names
    reports = tmp_path / "vary" / "reports"
    table = pd.read_csv(reports / "sensitivity_digits_mlp_penalized.csv")
    assert set(table["optimizer"]) == {"sgd"} and set(table["hparam"]) == {"lr", "momentum"}
    lr = table[table["hparam"] == "lr"]
    # lr 0.01, 0.1 (base), 1.0 (diverged on both seeds: chance accuracy on digits)
    assert list(lr["value"]) == [0.01, 0.1, 1.0] and list(lr["base"]) == [False, True, False]
    assert list(lr["val_acc"]) == pytest.approx([0.591, 0.6, 0.1]) and list(lr["diverged"]) == [0, 0, 2]
    excluded = pd.read_csv(reports / "sensitivity_digits_mlp_excluded.csv")
    assert list(excluded.loc[excluded["hparam"] == "lr", "value"]) == [0.01, 0.1]
    page = (reports / "index.html").read_text()
    assert "One-at-a-time sensitivity on digits_mlp: final validation accuracy and training loss of 5 points" in page
    assert "(penalized convention); 2 diverged runs" in page
