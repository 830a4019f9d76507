"""What a Slurm submission consists of -- batch scripts, container command lines, task tables -- without a cluster.

Generated files are compared with golden/ here. After an intended change, regenerate them on purpose with

    LSBENCH_REGENERATE_GOLDEN=1 pytest tests/sweep/backends/slurm/test_slurm_script.py

and review the diff; without the variable a difference is a failure, never silently rewritten.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests import paths

from lsbench.sweep.backends import SubmitOptions
from lsbench.sweep.backends.slurm import (
    SlurmBackend,
    SubmissionError,
    clean_environment,
    plan_arrays,
    run_sbatch,
    throttle_shares,
)
from lsbench.sweep.backends.slurm_script import (
    BatchSpec,
    container_command,
    render_batch_script,
    sbatch_value,
    shell_words,
)
from lsbench.sweep.grid import Resources
from lsbench.sweep.layout import SweepDir

GOLDEN = paths.GOLDEN
REGENERATE = os.environ.get("LSBENCH_REGENERATE_GOLDEN") == "1"
NASTY = "we ird 'q' \"dq\" ; $(touch PWNED) `touch PWNED2` & |"


def check_golden(files: dict[str, str]) -> None:
    """Compare generated ``files`` (name -> text) with the golden files, or rewrite them when asked to."""
    if REGENERATE:
        for name, text in files.items():
            (GOLDEN / name).write_text(text)
        pytest.skip(f"regenerated {', '.join(files)} in {GOLDEN} (LSBENCH_REGENERATE_GOLDEN=1): review the diff")
    for name, text in files.items():
        path = GOLDEN / name
        assert path.is_file(), f"{path} is missing; create it with LSBENCH_REGENERATE_GOLDEN=1 and review it"
        assert text == path.read_text(), f"{name} differs from the golden file (regenerate on purpose if intended)"


def make_sweep(root: Path, name: str = "golden") -> SweepDir:
    sweep = SweepDir(root / name)
    sweep.path.mkdir(parents=True)
    sweep.write_meta({"name": name, "grid_hash": "0" * 64, "store": "sqlite:///unused.sqlite", "backend": "slurm"})
    return sweep


def runs(count: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(index=i, run_id=f"{i:016x}") for i in range(count)]


PROFILE = """\
backend: slurm
placement: {placement}
gpus_per_node: 4
cpus_per_gpu: 6
partition: day
account: ml-group
qos: normal
signal_seconds: 300
max_requeues: 10
max_concurrent_runs: {limit}
max_array_size: 5
image: {image}
apptainer: {runtime}
binds: [{binds}]
data_dir: {data}
stage_data: {stage}
scratch: {scratch}
exclusive: {exclusive}
"""


def write_profile(tmp: Path, **values: object) -> Path:
    defaults = {
        "placement": "gpu", "limit": "null", "runtime": "apptainer", "binds": "", "data": "null", "stage": "false",
        "scratch": "$TMPDIR", "exclusive": "false",
    }  # fmt: skip
    image = tmp / "images" / "lsbench.sif"
    image.parent.mkdir(exist_ok=True)
    image.write_text("golden image\n")  # fixed content: a fixed digest in the scripts
    path = tmp / "profile.yaml"
    path.write_text(PROFILE.format(image=json.dumps(str(image)), **{**defaults, **values}))
    return path


def normalized(text: str, tmp: Path) -> str:
    return text.replace(str(tmp.resolve()), "/TMP")


def prepare(tmp: Path, count: int, **profile: object) -> list[str]:
    sweep = make_sweep(tmp / "runs")
    options = SubmitOptions(profile=str(write_profile(tmp, **profile)), resources=Resources(1, "12:00:00", "16G"))
    prepared = SlurmBackend(environ={"PATH": os.environ["PATH"]}).prepare(sweep, runs(count), options)
    return [normalized(script.read_text(), tmp) for script, _tasks, _plan, _spec in prepared.arrays] + [
        normalized(tasks.read_text(), tmp) for _script, tasks, _plan, _spec in prepared.arrays
    ]


def test_batch_script_one_gpu_per_task_matches_golden(tmp_path):
    files = prepare(tmp_path, 7, limit=3)  # 7 runs, MaxArraySize 5: arrays of 5 and 2 tasks, throttle 3 split 2 + 1
    check_golden({"sbatch-gpu-array1.sh": files[0], "sbatch-gpu-array2.sh": files[1], "tasks-gpu-array2.txt": files[3]})


def test_batch_script_whole_node_packing_matches_golden(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    files = prepare(
        tmp_path, 6, placement="node", runtime="singularity", binds=json.dumps(f"{tmp_path}:ro"),
        data=json.dumps(str(data)), stage="true", exclusive="true",
    )  # fmt: skip
    assert len(files) == 2  # 6 runs, 4 per node: one array of 2 tasks
    check_golden({"sbatch-node.sh": files[0], "tasks-node.txt": files[1]})


def test_container_command_matches_golden():
    command = container_command(
        runtime="apptainer",
        image="/images/lsbench.sif",
        python="python",
        sweep_dir="/home/user/runs/pal_cifar10",
        binds=["/data/cifar:ro"],
        image_digest="sha256:" + "ab" * 32,
    )
    worker = [*command, "--index", "7", "--job-id", "1234_3"]  # what the job entry runs for one slot
    check_golden({"apptainer-exec.txt": shell_words(worker) + "\n"})


def test_array_plan_chunks_to_max_array_size_and_splits_the_throttle():
    plans = plan_arrays([[(i, f"r{i}")] for i in range(12)], slots=1, max_array_size=5, max_concurrent_runs=4)
    assert [len(plan.tasks) for plan in plans] == [5, 5, 2]
    assert [plan.tasks[0].runs[0][0] for plan in plans] == [0, 5, 10]  # re-based: array indices 0..n-1
    assert sum(plan.throttle for plan in plans) == 4 and [plan.after for plan in plans] == [None] * 3
    packed = plan_arrays([[(i, f"r{i}")] for i in range(10)], slots=4, max_array_size=1001, max_concurrent_runs=8)
    assert [len(task.runs) for task in packed[0].tasks] == [4, 4, 2] and packed[0].throttle == 2  # 8 runs = 2 nodes
    assert throttle_shares([5, 5, 5], 2) == ([1, 1, 1], [None, None, 0])  # more arrays than slots: a chain
    assert throttle_shares([5, 1], 4) == ([2, 1], [None, None])
    assert throttle_shares([3, 3], None) == ([None, None], [None, None])


def batch_spec(**changes: object) -> BatchSpec:
    values: dict[str, object] = {
        "sweep": "s", "sweep_dir": "/s", "label": "test", "tasks": 1, "throttle": None, "dependency": None,
        "placement": "gpu", "slots": 1, "gpus_per_run": 1, "cpus_per_run": 1, "memory_per_run": "1G",
        "threads_per_run": 1, "time_limit": "00:10:00", "partition": None, "account": None, "qos": None,
        "constraint": None, "exclusive": False, "signal_seconds": 60, "max_requeues": 1, "output": "/s/%A_%a.out",
        "tasks_file": "/s/t.tasks", "entry": "/s/entry.sh", "worker": ("true",), "runtime_env_prefix": "APPTAINER",
        "data_dir": None, "stage_data": False, "scratch": "$TMPDIR",
    }  # fmt: skip
    values.update(changes)
    return BatchSpec(**values)  # type: ignore[arg-type]


def test_values_with_spaces_quotes_semicolons_and_command_substitution_round_trip(tmp_path):
    """Every value of a generated script reaches the job entry exactly as given, and nothing is executed."""
    base = tmp_path / NASTY
    sweep_dir, data, image = base / "runs" / "sweep", base / "data dir", base / "img $(x)" / "lsbench.sif"
    for directory in (sweep_dir, data, image.parent):
        directory.mkdir(parents=True)
    entry = tmp_path / "entry.sh"  # stands in for jobs/lsbench-job.sh: records what it was given
    entry.write_text(
        "#!/bin/bash\n"
        'python3 -c \'import json, os, sys; json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in '
        'os.environ.items() if k.startswith("LSBENCH_")}}, open(sys.argv[1], "w"))\' "$RECORD" "$@"\n'
    )
    worker = container_command(
        runtime="apptainer", image=str(image), python="python", sweep_dir=str(sweep_dir), binds=[str(data) + ":ro"],
        image_digest="sha256:00",
    )  # fmt: skip
    spec = batch_spec(
        sweep_dir=str(sweep_dir), entry=str(entry), worker=tuple(worker), data_dir=str(data),
        tasks_file=str(sweep_dir / "a.tasks"), output=str(sweep_dir / "%A_%a.out"),
    )  # fmt: skip
    script = tmp_path / "job.sbatch"
    script.write_text(render_batch_script(spec))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    record = tmp_path / "record.json"
    env = {"PATH": os.environ["PATH"], "RECORD": str(record)}
    subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, check=True)
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == worker  # argv[0] is the record path
    assert seen["env"]["LSBENCH_SWEEP_DIR"] == str(sweep_dir)
    assert seen["env"]["LSBENCH_DATA_DIR"] == str(data)
    assert seen["env"]["LSBENCH_SCRATCH"] == "$TMPDIR"  # evaluated on the node by the entry, not here
    assert not list(tmp_path.rglob("PWNED*")) and not (tmp_path / "PWNED").exists()


def test_sbatch_lines_quote_what_sbatch_would_split_and_reject_newlines():
    assert sbatch_value("/plain/path_%A_%a.out") == "/plain/path_%A_%a.out"
    assert sbatch_value('/a b/"c"\\d') == '"/a b/\\"c\\"\\\\d"'
    assert sbatch_value("x#y") == '"x#y"'  # an unquoted '#' would start a comment
    with pytest.raises(ValueError, match="newline"):
        sbatch_value("a\nb")
    assert shlex.split(shell_words(["a b", "$(x)", "'", "\n"])) == ["a b", "$(x)", "'", "\n"]


def test_environment_is_cleaned_of_sbatch_settings_and_inherited_allocations():
    login = {"PATH": "/bin", "SBATCH_PARTITION": "wrong", "SLURM_CONF": "/etc/slurm/x.conf", "SLURM_TIME_FORMAT": "x"}
    assert clean_environment(login) == {"PATH": "/bin", "SLURM_CONF": "/etc/slurm/x.conf", "SLURM_TIME_FORMAT": "x"}
    inside = {**login, "SLURM_JOB_ID": "7", "SLURM_GPUS_PER_NODE": "3", "SRUN_DEBUG": "3", "SALLOC_GRES": "gpu:2"}
    assert clean_environment(inside) == {"PATH": "/bin", "SLURM_CONF": "/etc/slurm/x.conf"}


def fake_sbatch(tmp: Path, failures: int, message: str) -> Path:
    """An `sbatch` that fails ``failures`` times with ``message``, then answers like `sbatch --parsable`."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    counter = tmp / "calls"
    script = bin_dir / "sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f'n=$(($(cat {shlex.quote(str(counter))} 2>/dev/null || echo 0) + 1)); echo $n > {shlex.quote(str(counter))}\n'
        f'if ((n <= {failures})); then echo {shlex.quote(message)} >&2; exit 1; fi\n'
        "echo 4242\n"
    )  # fmt: skip
    script.chmod(0o755)
    return bin_dir


def test_sbatch_is_retried_with_backoff_on_transient_errors(tmp_path):
    transient = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
    bin_dir = fake_sbatch(tmp_path, 2, transient)
    waits: list[float] = []
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    assert run_sbatch(tmp_path / "x.sbatch", env=env, retries=3, backoff=0.5, sleep=waits.append) == "4242"
    assert waits == [0.5, 1.0]
    (tmp_path / "calls").unlink()
    with pytest.raises(SubmissionError, match="gave up after 1 retries"):
        run_sbatch(tmp_path / "x.sbatch", env=env, retries=1, backoff=0.5, sleep=waits.append)


def test_sbatch_errors_that_are_not_transient_fail_at_once(tmp_path):
    bin_dir = fake_sbatch(tmp_path / "", 5, "sbatch: error: Batch job submission failed: Invalid partition name")
    waits: list[float] = []
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with pytest.raises(SubmissionError, match="Invalid partition name"):
        run_sbatch(tmp_path / "x.sbatch", env=env, retries=5, backoff=1.0, sleep=waits.append)
    assert waits == [] and (tmp_path / "calls").read_text().strip() == "1"


def test_a_store_password_never_reaches_the_generated_files(tmp_path):
    sweep = make_sweep(tmp_path / "runs")
    shown = sweep.keep_store_url("postgresql+psycopg://lsbench:s3cr3t-pw@db.example.org/sweeps")
    sweep.write_meta({**sweep.read_meta(), "store": shown})
    options = SubmitOptions(profile=str(write_profile(tmp_path)), resources=Resources(1, "01:00:00", "4G"))
    SlurmBackend(environ={"PATH": os.environ["PATH"]}).prepare(sweep, runs(3), options)
    written = [path for path in (sweep.path / "slurm").iterdir() if path.is_file()]
    assert written and not [path for path in written if "s3cr3t-pw" in path.read_text()]


def test_every_image_command_has_help(capsys):
    from lsbench.sweep.cli import main

    for command in (["image", "-h"], ["image", "check", "-h"], ["image", "build", "-h"]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
