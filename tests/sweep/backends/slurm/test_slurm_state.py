"""Reading sacct/squeue output and turning scheduler states into run states (no cluster needed)."""

import json
import time
from pathlib import Path

import pytest
from tests.factories import run_spec

from lsbench.store import Store
from lsbench.sweep.backends.slurm import SlurmBackend
from lsbench.sweep.backends.slurm_state import ElementState, expand_job_id, parse_sacct, parse_squeue, reconcile
from lsbench.sweep.layout import SweepDir


def test_array_ids_expand_including_pending_ranges_with_throttles():
    assert expand_job_id("12_3") == ["12_3"]
    assert expand_job_id("12_[4-6,9%2]") == ["12_4", "12_5", "12_6", "12_9"]
    assert expand_job_id("12_[7]") == ["12_7"]
    assert expand_job_id("99") == ["99"]


def test_sacct_rows_keep_the_cancelling_uid_and_skip_steps():
    text = "\n".join(
        [
            "12_0|COMPLETED|0:0",
            "12_1|CANCELLED by 1000|0:15",
            "12_2|OUT_OF_MEMORY|0:125",
            "12_2.batch|OUT_OF_MEMORY|0:125",
            "12_[3-4%2]|PENDING|0:0",
            "13_0|NODE_FAIL|1:0",
        ]
    )
    states = parse_sacct(text)
    assert set(states) == {"12_0", "12_1", "12_2", "12_3", "12_4", "13_0"}
    assert states["12_1"] == ElementState("CANCELLED", "by 1000", "0:15", "sacct")
    assert states["12_2"].state == "OUT_OF_MEMORY" and states["12_4"].state == "PENDING"
    assert states["12_1"].describe() == "CANCELLED by 1000 exit 0:15"


def test_squeue_rows_carry_the_pending_reason():
    states = parse_squeue("7_4|PENDING|JobArrayTaskLimit\n7_0|RUNNING|None\n7_1|CANCELLED|None\n")
    assert states["7_4"] == ElementState("PENDING", "JobArrayTaskLimit", "", "squeue")
    assert states["7_0"].active and not states["7_1"].active


@pytest.mark.parametrize(
    ("run", "slurm", "expected"),
    [
        ("completed", "FAILED", None),  # what a worker recorded as finished never changes
        ("diverged", "CANCELLED", None),
        ("queued", "PENDING", None),
        ("running", "PENDING", "queued"),  # requeued: resumes when the element starts again
        ("preempted", "REQUEUED", "queued"),
        ("preempted", "RUNNING", "queued"),
        ("running", "RUNNING", None),
        ("queued", "FAILED", "failed"),  # never got to record anything (e.g. the image did not start)
        ("running", "OUT_OF_MEMORY", "failed"),
        ("running", "NODE_FAIL", "failed"),
        ("running", "TIMEOUT", "timeout"),
        ("preempted", "TIMEOUT", "timeout"),  # checkpointed at the limit, not requeued
        ("queued", "CANCELLED", "cancelled"),
        ("preempted", "CANCELLED", "cancelled"),
        ("running", "PREEMPTED", "preempted"),
        ("preempted", "COMPLETED", None),  # max requeues reached: stays resumable
        ("failed", "FAILED", None),
        ("queued", "COMPLETED", "failed"),
    ],
)
def test_reconcile_maps_scheduler_states_onto_run_states(run, slurm, expected):
    assert reconcile(run, ElementState(slurm), recently_submitted=False) == expected


def test_an_element_slurm_does_not_list_is_cancelled_lost_or_on_its_way():
    assert reconcile("queued", None, recently_submitted=True, array_known=False) is None  # not in sacct yet
    assert reconcile("queued", None, recently_submitted=True, array_known=True) == "cancelled"
    assert reconcile("queued", None, recently_submitted=False, array_known=True) == "cancelled"  # scancel, pending
    assert reconcile("queued", None, recently_submitted=False, array_known=False) == "failed"  # purged, no records
    assert reconcile("running", None, recently_submitted=False, array_known=True) == "failed"
    assert reconcile("preempted", None, recently_submitted=False) is None
    assert reconcile("completed", None, recently_submitted=False) is None


def sweep_with_snapshot(tmp_path: Path, states: dict[str, str], asked: float) -> tuple[SweepDir, Store]:
    """A Slurm sweep of runs r0, r1, ... in one array, with a cached scheduler snapshot taken at ``asked``."""
    sweep = SweepDir(tmp_path / "s")
    (sweep.path / "slurm").mkdir(parents=True)
    url = f"sqlite:///{sweep.path / 'store.sqlite'}"
    sweep.write_meta({"name": "s", "grid_hash": "0" * 64, "store": url, "backend": "slurm", "spool": False})
    store = Store(url)
    store.upsert_sweep("s", "0" * 64, "", str(sweep.path), "slurm")
    store.add_runs("s", [run_spec(f"r{i}", optimizer="sgd", hparams={}) for i in range(len(states))])
    tasks = [[[i, f"r{i}"]] for i in range(len(states))]
    jobs = {"arrays": [{"job_id": "7", "submission": 1, "tasks": tasks, "submitted_at": asked - 600}]}
    (sweep.path / "slurm" / "jobs.json").write_text(json.dumps(jobs))
    (sweep.path / "slurm" / "profile.yaml").write_text("image: /x.sif\npoll_seconds: 3600\n")
    elements = {f"7_{i}": [state, "", ""] for i, state in enumerate(states.values())}
    snapshot = {"time": asked, "jobs": ["7"], "source": "sacct", "elements": elements}
    (sweep.path / "slurm" / "state.json").write_text(json.dumps(snapshot))
    return sweep, store


def test_refresh_never_overrules_what_the_store_learned_after_slurm_was_asked(tmp_path):
    # Slurm was asked first; then the worker of r0 started (store: running) -- the old PENDING must not win.
    sweep, store = sweep_with_snapshot(tmp_path / "a", {"r0": "PENDING"}, asked=time.time() - 5)
    store.set_run_status("r0", "running")
    SlurmBackend().refresh(sweep, store)
    assert store.get_run("r0").status == "running"
    # The same facts the other way round: the run was left running, then Slurm said PENDING (requeued).
    sweep, store = sweep_with_snapshot(tmp_path / "b", {"r0": "PENDING", "r1": "FAILED"}, asked=time.time() + 5)
    store.set_run_status("r0", "running")
    store.set_run_status("r1", "queued")
    SlurmBackend().refresh(sweep, store)
    assert store.get_run("r0").status == "queued" and store.get_run("r1").status == "failed"
    [attempt] = store.attempts("r1")  # a run that never started gets an attempt that points at its log
    assert attempt.job_id == "7_1" and attempt.status == "failed" and attempt.log_path.endswith("logs/r1.log")
    assert "Slurm 7_1 ended FAILED" in Path(attempt.log_path).read_text()
