"""The library under the `sweep` CLI (lsbench.sweep.api): batch writes, `--wait`'s display, the README's snippet."""

import io
import os
import re
from pathlib import Path

import pytest
from rich.console import Console
from tests import paths

from lsbench.store import Store
from lsbench.sweep import api
from lsbench.sweep.cli import ProgressView
from lsbench.sweep.layout import SweepDir

REPO = paths.REPO

SIX_RUNS = """\
name: batch
problems: [digits_mlp]
budget: {steps: 40, eval_every: 20}
seeds: [1, 2]
optimizers:
  sgd: {grid: {lr: [0.1, 0.05, 0.02]}}
"""


class IdleBackend:
    """A backend that accepts runs and starts nothing, so the tests see only what the api writes."""

    name = "local"

    def submit(self, sweep, store, runs, options):
        return f"took {len(runs)} runs"

    def active(self, sweep):
        return False

    def refresh(self, sweep, store):
        pass

    def vouched(self, sweep):
        return set()

    def cancel(self, sweep, store):
        return "stopped nothing"


@pytest.fixture
def batches(monkeypatch):
    """Every `Store.set_status_many` call as (status, number of run ids); `set_run_status` must not be used."""
    calls: list[tuple[str, int]] = []
    batch = Store.set_status_many

    def counted(self, run_ids, status, *, unless=()):
        run_ids = list(run_ids)
        calls.append((status, len(run_ids)))
        return batch(self, run_ids, status, unless=unless)

    def one_by_one(self, *args, **kwargs):
        raise AssertionError("a run status was written on its own")

    monkeypatch.setattr(Store, "set_status_many", counted)
    monkeypatch.setattr(Store, "set_run_status", one_by_one)
    monkeypatch.setattr(api, "get_backend", lambda name: IdleBackend())
    return calls


def test_queue_cancel_and_resubmit_write_all_their_runs_in_one_batch(tmp_path, batches):
    root = tmp_path / "runs"
    grid = tmp_path / "batch.yaml"
    grid.write_text(SIX_RUNS)

    submitted = api.submit(grid, root=root)
    assert len(submitted.queued) == 6 and submitted.action == "took 6 runs"
    assert batches == [("queued", 6)]

    cancelled = api.cancel("batch", root=root)
    assert len(cancelled.cancelled) == 6 and cancelled.stopped == "stopped nothing"
    assert batches[-1] == ("cancelled", 6)

    sweep = SweepDir(root / "batch")
    with Store(sweep.store_url()) as store:  # a live worker elsewhere holds this run: it is not queued again
        attempt = {"backend": "slurm", "job_id": "7_0", "host": "node-elsewhere", "pid": 1, "log_path": "-"}
        held = store.start_attempt(submitted.queued[0], "7_0/a", **attempt, gpu=None, versions={}, claim_stale_after=60)
        assert held
    again = api.resubmit("batch", failed=True, root=root)
    assert len(again.queued) == 5 and submitted.queued[0] not in again.queued
    assert batches[-1] == ("queued", 5) and len(batches) == 3
    with Store(sweep.store_url()) as store:
        states = {run.run_id: run.status for run in store.sweep_runs("batch")}
    assert states.pop(submitted.queued[0]) == "cancelled" and set(states.values()) == {"queued"}


def test_bad_input_is_one_exception_type(tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("name: bad\nproblems: [digits_mlp]\noptimizers: {adamw: {}}\n")
    with pytest.raises(api.BadInput, match="adamw"):
        api.plan(grid, root=tmp_path)
    with pytest.raises(api.BadInput, match="no sweep 'missing'"):
        api.status("missing", root=tmp_path)
    with pytest.raises(api.BadInput, match="invalid sweep name"):
        api.aggregate("../up", root=tmp_path)
    with pytest.raises(api.BadInput, match="not available"):
        api.submit(six_runs_grid(tmp_path), root=tmp_path, backend="pbs")
    assert not (tmp_path / "batch").exists()


def six_runs_grid(directory: Path) -> Path:
    path = directory / "six.yaml"
    path.write_text(SIX_RUNS)
    return path


def progress(done: int, running: int, queued: int, eta: float | None = None) -> api.Progress:
    return api.Progress(total=4, done=done, running=running, queued=queued, elapsed=1.0, eta=eta)


UPDATES = [progress(0, 2, 2), progress(0, 2, 2, eta=9.0), progress(1, 2, 1, eta=6.0), progress(4, 0, 0, eta=0.0)]


def test_wait_in_a_log_file_writes_one_plain_line_per_change():
    out = io.StringIO()
    with ProgressView("s", Console(file=out, force_terminal=False)) as view:
        for update in UPDATES:
            view.update(update)
    assert out.getvalue().splitlines() == [
        "[..............................] 0/4 done, 2 running, 0 failed, ETA ?",  # the ETA alone changes: no line
        "[#######.......................] 1/4 done, 2 running, 0 failed, ETA 6s",
        "[##############################] 4/4 done, 0 running, 0 failed, ETA 0s",
    ]


def test_wait_on_a_terminal_redraws_one_bar_in_place():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, force_interactive=True, width=100)
    with ProgressView("s", console) as view:
        for update in UPDATES:
            view.update(update)
    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: the bar is redrawn, not appended
    assert "4/4" in text and "0 running, 0 failed, ETA 0s" in text
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.split("\r")[-1])
    assert final.count("\n") <= 1


def test_the_readme_snippet_runs_as_written_on_a_tiny_grid(tmp_path, monkeypatch):
    """The Python use shown in the README's Sweeps section, with the demo grid swapped for a two-run grid."""
    readme = (REPO / "README.md").read_text()
    sweeps = readme[readme.index("## Sweeps") :]
    snippet = re.search(r"```python\n(.*?)```", sweeps, re.S).group(1)
    assert "api.submit(" in snippet and "api.wait(" in snippet and "api.aggregate(" in snippet
    grid = tmp_path / "snippet.yaml"
    grid.write_text(SIX_RUNS.replace("name: batch", "name: snippet").replace("[0.1, 0.05, 0.02]", "[0.1]"))
    code = snippet.replace("sweeps/grids/demo_digits.yaml", str(grid)).replace('"demo_digits"', '"snippet"')
    monkeypatch.setenv("LSBENCH_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["waited"].ok
    (row,) = namespace["rows"]
    assert (row.problem, row.optimizer, row.completed) == ("digits_mlp", "sgd", 2)
    assert 0.0 < row.test_acc_max <= 1.0
    assert os.path.isfile(tmp_path / "runs" / "snippet" / "reports" / "summary.csv")
