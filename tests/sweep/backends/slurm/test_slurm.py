"""Sweeps on the real single-node Slurm test cluster (4 fake GPUs), through the `sweep` CLI.

Each worker runs through the stand-in `apptainer` (bin/ here), which checks `exec --nv`, the binds and the image
and records what it saw (CUDA_VISIBLE_DEVICES, the job id, the data directory) before running the worker on the
host. Runs are tiny digits runs so that the waiting is mostly Slurm's.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from lsbench.store import Store
from lsbench.sweep.cli import main as sweep_main
from lsbench.sweep.layout import SweepDir

pytestmark = pytest.mark.slurm

NASTY = "we ird 'q' \"dq\" ; $(touch PWNED) `touch PWNED2`"
METRICS = ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc")


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def completed_attempts(store: Store, run_ids: set[str]) -> list:
    return [a for a in store.attempts() if a.run_id in run_ids and a.status == "completed"]


def element_intervals(job_ids: list[str], count: int) -> dict[str, tuple[datetime, datetime]]:
    """When each array element ran, as Slurm's accounting recorded it (one element runs one run here).

    Attempt times in the store are not used: with spool files they are the times the login node ingested them.
    """

    def finished() -> list[dict[str, str]] | None:
        rows = sacct(job_ids, "JobID,State,Start,End")
        done = [row for row in rows if row["State"] == "COMPLETED" and row["End"] not in ("", "Unknown")]
        return done if len(done) == count else None

    rows = wait_for(finished, 60, "accounting to record every element", interval=1.0)
    return {row["JobID"]: (datetime.fromisoformat(row["Start"]), datetime.fromisoformat(row["End"])) for row in rows}


def sacct(job_ids: list[str], fields: str) -> list[dict[str, str]]:
    done = subprocess.run(
        ["sacct", "-P", "-X", "-n", "-o", fields, "-j", ",".join(job_ids)], capture_output=True, text=True, check=True
    )
    names = fields.split(",")
    return [dict(zip(names, line.split("|"), strict=True)) for line in done.stdout.splitlines() if line]


def run_states(env, name: str) -> dict[int, str]:
    env.status(name)  # refreshes from Slurm and ingests the workers' spool files
    with env.store(name) as store:
        return {row.index: row.status for row in store.sweep_runs(name)}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def test_ten_runs_on_the_four_gpu_node_one_gpu_each(slurm_env, monkeypatch):
    env = slurm_env
    grid = env.grid("ten", lrs=[0.1, 0.05, 0.02, 0.01, 0.005], seeds=[1, 2])
    profile = env.profile()
    # Submitted from inside an allocation: what it inherits must not change what the jobs ask for.
    monkeypatch.setenv("SLURM_JOB_ID", "999999")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "7")
    monkeypatch.setenv("SBATCH_TIMELIMIT", "00:02:00")
    monkeypatch.setenv("SBATCH_GRES", "gpu:2")
    submitted = env.run("submit", str(grid), "--profile", str(profile))
    assert submitted.returncode == 0, submitted.stderr
    assert "10 runs, 10 queued, 0 already finished; queued Slurm arrays" in submitted.stdout
    for name in ("SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "SBATCH_TIMELIMIT", "SBATCH_GRES"):
        monkeypatch.delenv(name)

    status = env.wait("ten", lambda s: s["counts"] == {"completed": 10})
    assert status["failures"] == []
    arrays = env.jobs("ten")["arrays"]
    assert [len(array["tasks"]) for array in arrays] == [5, 5]  # MaxArraySize 5 on the test cluster
    for row in sacct([array["job_id"] for array in arrays], "JobID,Timelimit,ReqTRES,ReqCPUS"):
        assert row["Timelimit"] == "00:10:00" and "gres/gpu=1" in row["ReqTRES"] and row["ReqCPUS"] == "2", row

    with env.store("ten") as store:
        run_ids = {row.run_id for row in store.sweep_runs("ten")}
        attempts = completed_attempts(store, run_ids)
    assert sorted(a.run_id for a in attempts) == sorted(run_ids)  # each run trained exactly once
    calls = {call["job_id"]: call for call in env.stand_in_calls() if call["kind"] == "exec"}
    assert len(calls) == 10
    sweep_dir = str(env.sweep("ten").path.resolve())
    for call in calls.values():
        assert call["image"] == str(env.image) and call["pythonnousersite"] == "1"
        assert sweep_dir in call["binds"] and "--nv" in call["argv"]
        assert call["cuda_visible_devices"] in {"0", "1", "2", "3"}
    intervals = element_intervals([array["job_id"] for array in arrays], 10)
    assert set(intervals) == set(calls)
    assert 2 <= max_overlap(list(intervals.values())) <= 4
    for first, (start1, end1) in intervals.items():
        for second, (start2, end2) in intervals.items():
            if first != second and start1 < end2 and start2 < end1:  # ran at the same time: different GPUs
                assert calls[first]["cuda_visible_devices"] != calls[second]["cuda_visible_devices"]

    again = env.run("submit", str(grid), "--profile", str(profile))
    assert again.returncode == 0 and "0 queued, 10 already finished; nothing to run" in again.stdout
    assert env.jobs("ten")["arrays"] == arrays  # nothing submitted


def test_twelve_runs_split_into_arrays_below_max_array_size_with_a_sweep_wide_throttle(slurm_env, slurm_cluster):
    env = slurm_env
    assert slurm_cluster.max_array_size == 5
    grid = env.grid("twelve", lrs=[0.1, 0.05, 0.02, 0.01, 0.005, 0.002], seeds=[1, 2])
    submitted = env.run("submit", str(grid), "--profile", str(env.profile(max_concurrent_runs=3)))
    assert submitted.returncode == 0, submitted.stderr
    arrays = env.jobs("twelve")["arrays"]
    assert [len(array["tasks"]) for array in arrays] == [5, 5, 2]
    assert [array["throttle"] for array in arrays] == [1, 1, 1]  # 3 at once, split over the sweep's arrays
    scripts = [Path(array["script"]).read_text() for array in arrays]
    assert [line for s in scripts for line in s.splitlines() if "--array" in line] == [
        "#SBATCH --array=0-4%1",
        "#SBATCH --array=0-4%1",
        "#SBATCH --array=0-1%1",
    ]
    plan_indices = [index for array in arrays for task in array["tasks"] for index, _ in task]
    assert plan_indices == list(range(12))  # re-based per array, mapped back through the task tables

    env.wait("twelve", lambda s: s["counts"] == {"completed": 12})
    with env.store("twelve") as store:
        attempts = completed_attempts(store, {row.run_id for row in store.sweep_runs("twelve")})
    assert len(attempts) == 12
    intervals = element_intervals([array["job_id"] for array in arrays], 12)
    assert max_overlap(list(intervals.values())) <= 3
    raised = env.jobs("twelve")["arrays"]  # finished arrays handed their share to the others
    assert sum(array["throttle"] for array in raised) > 3


def test_node_packing_runs_four_workers_on_four_gpus_and_resubmit_failed_takes_exactly_the_failures(
    slurm_env, monkeypatch
):
    env = slurm_env
    data = env.tmp / "data"
    data.mkdir()
    (data / "part.bin").write_bytes(b"dataset bytes")
    scratch = env.tmp / "scratch"
    scratch.mkdir()
    profile = env.profile(placement="node", data_dir=str(data), stage_data=True, scratch=str(scratch))
    grid = env.grid("packed", lrs=[0.1, 0.05], seeds=[1, 2])
    monkeypatch.setenv("LSBENCH_FAKE_APPTAINER_FAIL", "2")  # the container of plan index 2 does not start
    submitted = env.run("submit", str(grid), "--profile", str(profile))
    assert submitted.returncode == 0, submitted.stderr
    monkeypatch.delenv("LSBENCH_FAKE_APPTAINER_FAIL")
    [array] = env.jobs("packed")["arrays"]
    assert len(array["tasks"]) == 1 and len(array["tasks"][0]) == 4  # one task takes the node: 4 runs
    element = f"{array['job_id']}_0"

    status = env.wait("packed", lambda s: s["counts"] == {"completed": 3, "failed": 1})
    calls = [call for call in env.stand_in_calls() if call["kind"] == "exec"]
    assert len(calls) == 4 and {call["job_id"] for call in calls} == {element}
    assert sorted(call["cuda_visible_devices"] for call in calls) == ["0", "1", "2", "3"]
    assert sorted(call["index"] for call in calls) == ["0", "1", "2", "3"]  # each worker a different run
    staged = scratch / "lsbench-data-0"
    assert (staged / "part.bin").read_bytes() == b"dataset bytes"
    assert all(call["data"] == str(staged) for call in calls)
    [failure] = status["failures"]
    assert failure["index"] == 2 and failure["status"] == "failed"
    tail = "\n".join(failure["log_tail"])
    assert "FATAL" in tail and "the worker exited with status 255" in tail
    assert "FAILED" in failure["scheduler"] and element in failure["scheduler"]

    again = env.run("resubmit", "packed", "--failed")
    assert again.returncode == 0, again.stderr
    assert "1 runs queued again; queued Slurm array" in again.stdout
    last = env.jobs("packed")["arrays"][-1]
    assert [[index for index, _ in task] for task in last["tasks"]] == [[2]]
    env.wait("packed", lambda s: s["counts"] == {"completed": 4})


def test_runs_per_worker_trains_fused_groups_in_array_tasks_and_records_every_run(slurm_env):
    env = slurm_env
    grid = env.grid("fused", lrs=[0.3, 0.1, 0.03], seeds=[1, 2], steps=60, eval_every=20, runs_per_worker=4)
    submitted = env.run("submit", str(grid), "--profile", str(env.profile()))
    assert submitted.returncode == 0, submitted.stderr
    [array] = env.jobs("fused")["arrays"]
    assert len(array["tasks"]) == 2  # six runs in units of at most four: one task each
    table = (env.sweep("fused").path / "slurm" / "s001-a001.tasks").read_text().splitlines()
    assert [line.split()[1].split(":")[0].count("+") for line in table if not line.startswith("#")] == [3, 1]
    status = env.wait("fused", lambda s: s["counts"] == {"completed": 6})
    assert not status["failures"]
    sweep = env.sweep("fused")
    with env.store("fused") as store:
        for row in store.sweep_runs("fused"):
            assert sorted({m.step for m in store.metrics(row.run_id)}) == [20, 40, 60]
            [attempt] = store.attempts(row.run_id)
            assert attempt.status == "completed" and attempt.job_id.startswith(f"{array['job_id']}_")
            log = sweep.log_file(row.run_id).read_text()
            assert "fused group of" in log and "completed at step 60" in log
    aggregated = env.run("aggregate", "fused", "--format", "csv")
    assert aggregated.returncode == 0 and len(aggregated.stdout.splitlines()) > 1


def test_requeued_and_timed_out_runs_checkpoint_resume_and_match_an_uninterrupted_run(slurm_env):
    env = slurm_env
    grid = env.grid("requeue", lrs=[0.1], seeds=[1, 2], steps=1500, eval_every=100)
    # The uninterrupted reference: the same runs on the local pool, at the same time.
    reference_root = env.tmp / "reference"
    assert sweep_main(["submit", str(grid), "--backend", "local", "--root", str(reference_root)]) == 0
    submitted = env.run("submit", str(grid), "--profile", str(env.profile()))
    assert submitted.returncode == 0, submitted.stderr
    sweep = env.sweep("requeue")
    [array] = env.jobs("requeue")["arrays"]
    job = array["job_id"]
    (_, requeued), (_, timed_out) = (task[0] for task in array["tasks"])  # plan index 0 -> task 0, 1 -> task 1

    def checkpointed(run: str) -> bool:
        return (sweep.run_dir(run) / "checkpoint.pt").exists()

    # Run 0: requeued from outside while it trains.
    wait_for(lambda: checkpointed(requeued), 120, "run 0 to write a checkpoint")
    subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True)

    # Run 1: reaches its time limit. Slurm sends the --signal warning anywhere up to ~30 s before the limit's
    # own window, so the test sets a limit about a minute ahead only once the run has a checkpoint, and keeps the
    # worker paused until the warning came -- the run is then surely in the middle of training when its time runs
    # out. The limit counts from the element's start: one shorter than the time it already ran would end it in the
    # same pass of slurmctld that sends the warning, before the worker could checkpoint (a loaded machine takes
    # more than a minute to get here).
    wait_for(lambda: checkpointed(timed_out), 120, "run 1 to write a checkpoint")
    paused = [c["pid"] for c in env.stand_in_calls() if c["kind"] == "exec" and c["index"] == "1"][-1]
    batch_log = sweep.path / "logs" / "slurm" / f"{job}_1.out"
    os.kill(paused, signal.SIGSTOP)
    try:
        limit = math.ceil(run_seconds(f"{job}_1") / 60) + 1
        subprocess.run(["scontrol", "update", f"JobId={job}_1", f"TimeLimit={limit}"], check=True)
        wait_for(lambda: "got SIGUSR2" in batch_log.read_text(), 120, "the time-limit signal")
    finally:
        os.kill(paused, signal.SIGCONT)
    wait_for(lambda: f"requeueing {job}_1" in batch_log.read_text(), 60, "the entry to requeue its element")
    subprocess.run(["scontrol", "update", f"JobId={job}_1", "TimeLimit=00:10:00"], check=True)

    env.wait("requeue", lambda s: s["counts"] == {"completed": 2}, timeout=300)
    assert sweep_main(["submit", str(grid), "--backend", "local", "--root", str(reference_root), "--wait"]) == 0
    reference = SweepDir(reference_root / "requeue")
    with env.store("requeue") as store, Store(reference.store_url()) as uninterrupted:
        for task, run in enumerate((requeued, timed_out)):
            got = {(m.step, m.name): m.value for m in store.metrics(run) if m.name in METRICS}
            want = {(m.step, m.name): m.value for m in uninterrupted.metrics(run) if m.name in METRICS}
            assert sorted({step for step, _ in got}) == list(range(100, 1501, 100))
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), (run, key)
            attempts = store.attempts(run)
            assert [a.status for a in attempts] == ["preempted", "completed"], run
            assert {a.job_id for a in attempts} == {f"{job}_{task}"}
    log = batch_log.read_text()
    assert f"requeueing {job}_1 (restart 1 of at most 3)" in log and "restart 1 on" in log
    first = (sweep.path / "logs" / "slurm" / f"{job}_0.out").read_text()
    assert "DUE TO JOB REQUEUE" in first and "got SIGTERM" in first and "restart 1 on" in first


def run_seconds(job: str) -> int:
    """How long a running job (array element) has run, from ``scontrol show job``'s RunTime=[D-]HH:MM:SS."""
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    days, _, clock = re.search(r"RunTime=(\S+)", shown).group(1).rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def test_quoted_paths_with_spaces_quotes_semicolons_and_substitutions_reach_slurm_intact(slurm_env, capsys):
    env = slurm_env
    root = env.tmp / NASTY / "runs"
    grid = env.grid("quoted", lrs=[0.1], seeds=[1])
    assert sweep_main(["submit", str(grid), "--profile", str(env.profile()), "--root", str(root)]) == 0
    sweep = SweepDir(root / "quoted")
    [array] = json.loads((sweep.path / "slurm" / "jobs.json").read_text())["arrays"]

    def finished() -> bool:
        capsys.readouterr()
        sweep_main(["status", "quoted", "--root", str(root), "--json"])
        return json.loads(capsys.readouterr().out)["counts"] == {"completed": 1}

    wait_for(finished, 180, "the quoted sweep", interval=1.0)
    assert (sweep.path / "logs" / "slurm" / f"{array['job_id']}_0.out").is_file()  # sbatch read the #SBATCH path
    [call] = [c for c in env.stand_in_calls() if c["kind"] == "exec"]
    assert str(sweep.path.resolve()) in call["binds"]
    assert not [p for p in env.tmp.rglob("PWNED*")] and not Path("PWNED").exists()

    newline = env.tmp / "new\nline"
    capsys.readouterr()
    code = sweep_main(["submit", str(grid), "--profile", str(env.profile()), "--root", str(newline)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "contains '\\n'" in err
    assert not newline.exists()  # nothing written


def cancel_scenario(env, name: str, *, with_sweep_cancel: bool) -> dict:
    # Long enough (seconds) that a status poll sees the first run running before it would finish.
    grid = env.grid(name, lrs=[0.1], seeds=[1, 2, 3], steps=20_000, eval_every=2_000)
    submitted = env.run("submit", str(grid), "--profile", str(env.profile(max_concurrent_runs=1)))
    assert submitted.returncode == 0, submitted.stderr
    [array] = env.jobs(name)["arrays"]
    job = array["job_id"]
    wait_for(lambda: run_states(env, name).get(0) == "running", 120, "the first run to start", interval=0.5)
    subprocess.run(["scancel", f"{job}_0"], check=True)  # a running element
    if with_sweep_cancel:
        wait_for(lambda: run_states(env, name).get(1) == "completed", 180, "the second run", interval=1.0)
        cancelled = env.run("cancel", name)
        assert cancelled.returncode == 0 and f"cancelled Slurm array {job}" in cancelled.stdout
    else:
        subprocess.run(["scancel", f"{job}_2"], check=True)  # a pending element
    return env.wait(name, lambda s: s["counts"] == {"completed": 1, "cancelled": 2}, timeout=180)


def test_scancel_shows_as_cancelled(slurm_env):
    status = cancel_scenario(slurm_env, "cancel", with_sweep_cancel=False)
    notes = json.loads((slurm_env.sweep("cancel").path / "slurm" / "notes.json").read_text())["runs"]
    assert sum("CANCELLED by 0" in note and "(sacct)" in note for note in notes.values()) == 1  # the running one
    assert sum("not listed by Slurm" in note for note in notes.values()) == 1  # a cancelled pending task: no record
    assert status["total"] == 3


def test_without_accounting_status_still_reports_every_run(slurm_env, no_accounting):
    assert subprocess.run(["sacct", "-n"], capture_output=True).returncode != 0  # accounting really is off
    cancel_scenario(slurm_env, "noacct", with_sweep_cancel=True)
    notes = json.loads((slurm_env.sweep("noacct").path / "slurm" / "notes.json").read_text())["runs"]
    assert notes and all("(squeue)" in note for note in notes.values())
    text = slurm_env.run("status", "noacct")
    assert "3 runs (completed 1, cancelled 2)" in text.stdout


def test_a_run_slurm_reports_running_is_never_marked_failed_whatever_its_heartbeat_age(slurm_env, monkeypatch):
    monkeypatch.setenv("LSBENCH_HEARTBEAT_SECONDS", "3600")  # the worker says nothing after its start
    grid = slurm_env.grid("vouched", lrs=[0.1], seeds=[1], steps=40_000, eval_every=40_000)
    assert slurm_env.run("submit", str(grid), "--profile", str(slurm_env.profile())).returncode == 0
    slurm_env.wait("vouched", lambda status: status["counts"].get("running") == 1)
    for _ in range(3):
        time.sleep(1.0)
        outcome = slurm_env.run("status", "vouched", "--json", "--stale-after", "0.5")
        assert json.loads(outcome.stdout)["counts"] in ({"running": 1}, {"completed": 1})
    final = slurm_env.wait("vouched", lambda status: status["counts"].get("completed") == 1)
    assert final["counts"] == {"completed": 1}
