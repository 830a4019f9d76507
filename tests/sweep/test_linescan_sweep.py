"""A linescan grid through the ordinary sweep machinery: submit --wait, status, the store's pointer, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lsbench.lines.arrays import ARRAYS_DIR, read_lines
from lsbench.store import Store
from lsbench.sweep.layout import SweepDir

GRID = """\
name: lines_e2e
problems: [digits_mlp]
seeds: [1]
budget: {steps: 40, eval_every: 20}
kind: linescan
linescan: {every: 2, resolution: 0.02, samples: 300, per_sample: true}
optimizers:
  sgd:
    grid: {momentum: [0.0, 0.9]}
    fixed: {lr: 0.1}
"""


def test_linescan_sweep_end_to_end(tmp_path: Path, sweep_cli) -> None:
    root = tmp_path / "runs"
    grid = tmp_path / "lines_e2e.yaml"
    grid.write_text(GRID)
    submitted = sweep_cli(root, "submit", str(grid), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    status = json.loads(sweep_cli(root, "status", "lines_e2e", "--json").stdout)
    assert status["counts"] == {"completed": 2}

    sweep = SweepDir(root / "lines_e2e")
    with Store(sweep.store_url()) as store:
        rows = store.sweep_runs("lines_e2e")
    for row in rows:
        assert row.kind == "linescan" and row.linescan["every"] == 2
        assert row.arrays == str((sweep.run_dir(row.run_id) / ARRAYS_DIR).resolve())
        lines = read_lines(row.arrays)
        assert list(lines.step) == list(range(2, 41, 2))  # every 2nd step, each exactly once
        assert lines.full_loss.shape == (20, 51) and np.isfinite(lines.full_loss).all()
        assert lines.per_sample.shape == (20, 51, 300)

    report = sweep_cli(root, "report", "lines_e2e")
    assert report.returncode == 0, report.stderr
    html = (sweep.reports / "index.html").read_text()
    assert "Line analysis (Chapter 5)" in html
    findings = (sweep.reports / "lines_findings.csv").read_text()
    assert all(row.run_id in findings for row in rows)
    for row in rows:
        for figure in ("losses", "shapes", "fits", "strategies", "angle", "batches", "labpal"):
            assert (sweep.reports / f"lines_{row.run_id}_{figure}.png").stat().st_size > 0
