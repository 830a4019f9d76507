"""Nothing is lost when the database goes away mid-sweep, and its password never leaks."""

import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from tests.services.postgres import control, fresh_database

from lsbench.store import Store
from lsbench.sweep.cli import main
from lsbench.sweep.layout import CREDENTIALS_FILE, SweepDir

GRID = """\
name: pgsweep
problems: [digits_mlp]
budget: {{steps: 600, eval_every: 50}}
seeds: [1, 2]
optimizers:
  sgd: {{grid: {{lr: [0.1, 0.05]}}}}
store: {url}
"""


@pytest.fixture
def private_postgres():
    """A Postgres server of this test alone, so stopping it disturbs no other test.

    Its directory sits directly under /tmp: the `postgres` user cannot enter pytest's root-only temporary tree.
    """
    instance = {"LSBENCH_PG_DIR": tempfile.mkdtemp(prefix="lsbench-pg-"), "LSBENCH_PG_PORT": "55499"}
    url = control("start", instance)
    yield url, instance
    control("stop", instance)


def test_postgres_down_for_10_s_mid_sweep_loses_nothing_and_the_password_never_leaks(
    tmp_path, capsys, monkeypatch, private_postgres
):
    base_url, instance = private_postgres
    password = base_url.split(":")[2].split("@")[0]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "runs"
    with fresh_database(base_url) as url:
        grid = tmp_path / "grid.yaml"
        grid.write_text(GRID.format(url=url))
        assert main(["submit", str(grid), "--root", str(root), "--workers", "2"]) == 0
        sweep = SweepDir(root / "pgsweep")

        def outage() -> None:  # as soon as the first evaluation points are in, stop the server for 10 s
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not list((root / "pgsweep" / "runs").glob("*/checkpoint.pt")):
                time.sleep(0.1)
            control("pause", instance)
            time.sleep(10)
            control("start", instance)

        server = threading.Thread(target=outage)
        server.start()
        server.join()
        with Store(url) as store:  # the workers carry on by themselves once the server is back
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and any(
                run.status in ("queued", "running") for run in store.sweep_runs("pgsweep")
            ):
                time.sleep(0.5)
        assert main(["status", "pgsweep", "--root", str(root)]) == 0
        assert main(["aggregate", "pgsweep", "--root", str(root)]) == 0
        assert main(["list", "--root", str(root)]) == 0
        output = capsys.readouterr()

        with Store(url) as store:
            runs = store.sweep_runs("pgsweep")
            assert {run.status for run in runs} == {"completed"}
            for run in runs:
                steps = sorted({m.step for m in store.metrics(run.run_id)})
                assert steps == list(range(50, 601, 50))  # every evaluation point, once
            assert all(a.status == "completed" for a in store.attempts())  # no worker gave up

    # the password is in no output, log, report, plan or copy of the grid -- only in the owner-only credentials file
    assert password not in output.out + output.err
    credentials = sweep.path / CREDENTIALS_FILE
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    leaks = [
        path
        for path in Path(sweep.path).rglob("*")
        if path.is_file() and path != credentials and password.encode() in path.read_bytes()
    ]
    assert leaks == []
    assert sweep.read_meta()["store"].count("***") == 1
