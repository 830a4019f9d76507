"""`--json` on every `sweep` command that reports something, and the aggregate table at 120 columns.

One tiny sweep (two runs of 40 steps on digits) is trained once for the module; the commands then read it.
"""

import contextlib
import io
import json
import time
from pathlib import Path

import pytest
from tests import paths

from lsbench.report import aggregate
from lsbench.store import Store
from lsbench.sweep import api
from lsbench.sweep.api import sweep_outcomes
from lsbench.sweep.cli import main
from lsbench.sweep.layout import SweepDir

REPO = paths.REPO

TINY = """\
name: {name}
problems: [digits_mlp]
budget: {{steps: 40, eval_every: 20}}
seeds: [1]
optimizers:
  sgd: {{grid: {{lr: [0.1]}}}}
  pal: {{fixed: {{measuring_step_size: 0.1, update_step_adaptation: 1.0}}}}
"""


def write_tiny_grid(directory: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(TINY.format(name=name))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-run sweep, submitted with `submit --json --wait`; yields (root, grid, the printed JSON)."""
    base = tmp_path_factory.mktemp("cli")
    root, grid = base / "runs", write_tiny_grid(base, "tiny")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setenv("OMP_NUM_THREADS", "1")
        code = main(["submit", str(grid), "--json", "--wait", "--root", str(root)])
    assert code == 0, out.getvalue()
    deadline = time.monotonic() + 60
    while api.list_sweeps(root)[0].active:  # the pool exits a moment after its last run
        assert time.monotonic() < deadline, "the pool did not exit"
        time.sleep(0.2)
    return root, grid, json.loads(out.getvalue())


def run_json(sweep_cli, root: Path, *args: str) -> dict:
    outcome = sweep_cli(root, *args, "--json")
    assert outcome.returncode == 0, outcome.stderr
    return json.loads(outcome.stdout)


def test_submit_json_with_wait_reports_the_queued_runs_and_how_the_wait_ended(trained):
    _root, _grid, report = trained
    assert set(report) == {"sweep", "sweep_dir", "backend", "runs", "queued", "finished", "action", "wait"}
    assert (report["sweep"], report["backend"], report["runs"], report["finished"]) == ("tiny", "local", 2, 0)
    assert len(report["queued"]) == 2 and report["action"] == "started a local pool"
    assert report["wait"]["ok"] is True and report["wait"]["done"] == report["wait"]["total"] == 2


def test_submit_json_without_dry_run_or_wait(trained, sweep_cli):
    root, grid, _ = trained
    again = run_json(sweep_cli, root, "submit", str(grid))
    assert again["queued"] == [] and again["finished"] == 2 and again["wait"] is None
    assert again["action"] == "nothing to run"


def test_submit_dry_run_json(trained, sweep_cli):
    root, grid, _ = trained
    plan = run_json(sweep_cli, root, "submit", str(grid), "--dry-run")
    assert set(plan) == {"sweep", "problems", "total", "warnings", "profile"}
    assert plan["total"]["runs"] == 2 and set(plan["problems"]["digits_mlp"]) == {"sgd", "pal"}
    assert plan["warnings"] == [] and plan["profile"] is None


def test_status_json(trained, sweep_cli):
    status = run_json(sweep_cli, trained[0], "status", "tiny")
    assert set(status) == {"sweep", "total", "counts", "progress", "failures", "scheduler"}
    assert status["counts"] == {"completed": 2} and status["failures"] == []


def test_aggregate_json_has_the_summary_rows_and_the_report_files(trained, sweep_cli):
    root = trained[0]
    report = run_json(sweep_cli, root, "aggregate", "tiny")
    assert set(report) == {"sweep", "rows", "reports"}
    assert [row["optimizer"] for row in report["rows"]] == ["pal", "sgd"]
    assert {"train_loss_median", "val_acc_max", "test_acc_p75", "best_hparams", "completed"} <= set(report["rows"][0])
    assert set(report["reports"]) == {"md", "csv", "latex"}
    assert all(Path(path).is_file() for path in report["reports"].values())


def test_aggregate_text_fits_120_columns_and_shows_the_numbers(trained, sweep_cli, monkeypatch):
    root = trained[0]
    monkeypatch.setenv("COLUMNS", "120")
    shown = sweep_cli(root, "aggregate", "tiny")
    assert shown.returncode == 0, shown.stderr
    *tables, written = shown.stdout.splitlines()
    assert max(len(line) for line in tables) <= 120
    with Store(SweepDir(root / "tiny").store_url()) as store:
        rows = aggregate(sweep_outcomes(store, "tiny"))
    for row in rows:
        assert f"{row.train_loss_min:#.4g}" in shown.stdout
        assert f"{100 * row.test_acc_max:.2f}" in shown.stdout
    assert written.startswith("written: ") and "summary.tex" in written  # paths: as long as they are


def test_aggregate_in_a_log_file_is_laid_out_for_120_columns_not_wrapped_at_80(trained, sweep_cli, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    shown = sweep_cli(trained[0], "aggregate", "tiny")
    *tables, _written = shown.stdout.splitlines()
    assert 80 < max(len(line) for line in tables) <= 120


def test_list_json(trained, sweep_cli):
    listing = run_json(sweep_cli, trained[0], "list")
    assert set(listing) == {"root", "sweeps"}
    (entry,) = listing["sweeps"]
    assert entry == {
        "sweep": "tiny",
        "backend": "local",
        "total": 2,
        "finished": 2,
        "counts": {"completed": 2},
        "active": False,
    }


def test_list_json_of_an_empty_root(tmp_path, sweep_cli):
    assert run_json(sweep_cli, tmp_path / "none", "list") == {"root": str(tmp_path / "none"), "sweeps": []}


def test_resubmit_json(trained, sweep_cli):
    report = run_json(sweep_cli, trained[0], "resubmit", "tiny", "--failed")
    assert report == {"sweep": "tiny", "queued": [], "action": "nothing to run", "wait": None}


def test_cancel_json(trained, sweep_cli):
    report = run_json(sweep_cli, trained[0], "cancel", "tiny")
    assert report == {"sweep": "tiny", "stopped": "no pool was running", "cancelled": []}


def test_image_check_json(sweep_cli, tmp_path):
    report = run_json(sweep_cli, tmp_path, "image", "check", str(REPO / "containers" / "lsbench.def"))
    assert set(report) == {"definition", "ok", "bootstrap", "from", "sections", "policy_checked"}
    assert report["ok"] is True and report["bootstrap"] == "docker" and report["from"].startswith("pytorch/pytorch:")
    assert "test" in report["sections"] and report["policy_checked"] is True


def test_aggregate_json_and_format_exclude_each_other(trained, sweep_cli):
    refused = sweep_cli(trained[0], "aggregate", "tiny", "--json", "--format", "csv")
    assert refused.returncode == 2 and "not allowed with" in refused.stderr


def test_unknown_sweep_is_one_line_and_exit_2_for_every_command(tmp_path, sweep_cli):
    for command in ("status", "aggregate", "resubmit", "cancel"):
        refused = sweep_cli(tmp_path, command, "nosuch", "--json")
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "no sweep 'nosuch'" in refused.stderr


def test_python_m_lsbench_sweep_is_the_same_cli(trained):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lsbench", "sweep", "list", "--json", "--root", str(trained[0])],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert [entry["sweep"] for entry in json.loads(done.stdout)["sweeps"]] == ["tiny"]


def test_schema_grid_validates_every_shipped_grid_and_rejects_an_unknown_key(sweep_cli, tmp_path):
    from jsonschema import Draft202012Validator

    from lsbench.sweep.yamlfile import read_yaml

    outcome = sweep_cli(tmp_path, "schema", "grid")
    assert outcome.returncode == 0, outcome.stderr
    validator = Draft202012Validator(json.loads(outcome.stdout))
    grids = sorted(paths.GRIDS.glob("*.yaml"))
    assert grids
    for path in grids:
        document = read_yaml(path.read_text())
        assert validator.is_valid(document), (path, next(validator.iter_errors(document)).message)
    assert not validator.is_valid({"name": "x", "problems": ["digits_mlp"], "optimizers": {"sgd": {}}, "colour": 1})


def test_schema_profile_validates_the_shipped_profiles(sweep_cli, tmp_path):
    from jsonschema import Draft202012Validator

    from lsbench.sweep.yamlfile import read_yaml

    outcome = sweep_cli(tmp_path, "schema", "profile")
    validator = Draft202012Validator(json.loads(outcome.stdout))
    for path in sorted(paths.PROFILES.glob("*.yaml")):
        assert validator.is_valid(read_yaml(path.read_text())), path
    assert not validator.is_valid({"backend": "slurm", "partiton": "gpu"})
    assert sweep_cli(tmp_path, "schema", "table").returncode == 2


def test_profiles_lists_the_shipped_ones_and_a_projects_own(sweep_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: only the shipped profiles
    listed = run_json(sweep_cli, tmp_path, "profiles")["profiles"]
    assert [(p["name"], p["shipped"], p["backend"]) for p in listed] == [
        ("local", True, "local"),
        ("tcml", True, "slurm"),
        ("testing", True, "slurm"),
    ]
    assert next(p for p in listed if p["name"] == "tcml")["gpu"] == "4 x NVIDIA GeForce GTX 1080 (8 GB)"

    # ./cluster/<name>.yaml comes first for --profile NAME; a broken one is listed with its problem.
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "tcml.yaml").write_text("backend: local\ndescription: my laptop\n")
    (tmp_path / "cluster" / "bad.yaml").write_text("backend: slurm\npartiton: gpu\n")
    listed = {(p["name"], p["shipped"]): p for p in run_json(sweep_cli, tmp_path, "profiles")["profiles"]}
    assert listed["tcml", False]["chosen"] and not listed["tcml", True]["chosen"]
    assert listed["bad", False]["backend"] is None and "partiton: unknown key" in listed["bad", False]["problem"]
    text = sweep_cli(tmp_path, "profiles")
    assert text.returncode == 0 and "(not used: cluster/tcml.yaml comes first)" in text.stdout
    assert "bad      cluster/  broken: cluster/bad.yaml: partiton: unknown key" in text.stdout
