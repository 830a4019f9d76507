"""`sweep report` and `sweep export` through the CLI on a sweep written straight into a store."""

import json

import pandas as pd
from tests.report.synthetic import make_sweep

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
    penalized = pd.read_csv(written["tables"]["penalized"])
    assert set(penalized["failed"]) == {0, 1} and set(penalized["diverged"]) == {0, 2}


def test_report_compare_labels_optimizers_by_sweep(tmp_path):
    make_sweep(tmp_path, "one")
    make_sweep(tmp_path, "two")
    result = api.report("one", compare=["two"], root=tmp_path, out=tmp_path / "both")
    cost = pd.read_csv(tmp_path / "both" / "cost.csv")
    assert {"one:sgd", "two:pal"} <= set(cost["optimizer"]) and result.index.exists()


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
