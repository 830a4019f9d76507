"""Devices and precision of a training run, checked on a CPU: GPU pins that CUDA cannot honour fail with one line,
outputs load without CUDA, checkpoints written on a GPU resume on the CPU, and the precision setting reaches the
training passes but not evaluation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lsbench
from lsbench.runs.spec import RunSpec
from lsbench.train import FINAL_MODEL_FILE, DeviceUnavailableError, TrainConfig, train
from lsbench.train import trainer as trainer_module
from lsbench.train.checkpoint import CHECKPOINT
from lsbench.train.cli import main
from lsbench.train.device import device_metadata, resolve_device
from lsbench.train.precision import tf32_allowed

SRC = Path(lsbench.__file__).resolve().parents[1]
PAL = {"measuring_step_size": 0.1, "update_step_adaptation": 1.0}


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine where CUDA cannot be used (whatever this one has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(SRC), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=False)


# -- which device ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("visible", [None, "", "-1", "NoDevFiles"])
def test_auto_takes_the_cpu_when_no_gpu_is_named(monkeypatch, no_cuda, visible):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert resolve_device("auto") == torch.device("cpu")
    assert TrainConfig.create("synthetic_mlp", "sgd", device="auto").resolved().device == "cpu"


@pytest.mark.parametrize("visible", ["0", "2,3", "GPU-5d5c3e2a-0000-1111-2222-333344445555"])
def test_auto_under_a_pinned_gpu_that_cuda_cannot_use_refuses_in_one_line(monkeypatch, no_cuda, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(DeviceUnavailableError) as error:
        TrainConfig.create("synthetic_mlp", "sgd", device="auto").resolved()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"CUDA_VISIBLE_DEVICES={visible} names a GPU, but CUDA cannot use it (")
    assert message.endswith("not training on the CPU")


def test_an_index_beyond_the_gpus_cuda_sees_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(
        DeviceUnavailableError, match=r"^device cuda:1: CUDA sees 1 GPU\(s\) with CUDA_VISIBLE_DEVICES=3"
    ):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_lsbench_train_on_a_pinned_unusable_gpu_exits_with_one_line_and_trains_nothing(
    tmp_path, monkeypatch, no_cuda, capsys
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    argv = ["--problem", "synthetic_mlp", "--optimizer", "sgd", "--steps", "4", "--device", "auto"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("lsbench train: error: CUDA_VISIBLE_DEVICES=0 names a GPU")
    assert not (tmp_path / "run").exists()


def test_the_cpu_records_no_gpu():
    info = device_metadata("cpu")
    assert set(info) == {"gpu", "gpu_uuid", "cuda", "cudnn", "driver"}
    assert (info["gpu"], info["gpu_uuid"], info["driver"]) == ("none", "none", "none")


# -- outputs and checkpoints across devices ---------------------------------------------------------------------------


def test_final_model_loads_with_a_plain_torch_load_in_a_process_without_cuda(tmp_path):
    train(TrainConfig.create("synthetic_mlp", "sgd", steps=4, eval_every=4), tmp_path)
    locations: list[str] = []
    torch.load(
        tmp_path / FINAL_MODEL_FILE, map_location=lambda storage, location: locations.append(location) or storage
    )
    assert locations and set(locations) == {"cpu"}  # what a torch.load without map_location restores them to
    loaded = _run_python(
        f"import torch; state = torch.load({str(tmp_path / FINAL_MODEL_FILE)!r}); "
        "assert not torch.cuda.is_available(); print(sorted({v.device.type for v in state.values()}))",
        CUDA_VISIBLE_DEVICES="",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "['cpu']"


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu(tmp_path, assert_same_run):
    """The checkpoint of a run on CUDA, imitated: its config names the GPU and it carries a CUDA generator state
    (16 bytes; a CPU one has 5,056). Resumed on the CPU it ends as the uninterrupted CPU run."""
    config = TrainConfig.create("digits_mlp", "pal", PAL, seed=2, steps=60, eval_every=20, checkpoint_every=20)
    reference = train(config, tmp_path / "reference")
    calls = iter(range(1000))
    assert train(config, tmp_path / "run", should_stop=lambda: next(calls) >= 29).status == "interrupted"
    path = tmp_path / "run" / CHECKPOINT
    state = torch.load(path, weights_only=False)
    state["config"]["device"] = "cuda:0"
    state["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    assert "augment_rng" not in state["sampler"] and state["sampler"]["shuffle_rng"].numel() == 5056
    torch.save(state, path)
    resumed = train(config, tmp_path / "run")
    assert resumed.resumed_from_step == 30
    assert_same_run(tmp_path / "run", tmp_path / "reference", resumed.to_dict(), reference.to_dict())


def test_importing_the_trainer_sets_the_cublas_workspace_before_any_cuda_work():
    code = "import os, lsbench.train; print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'))"
    environment = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**environment, "PYTHONPATH": str(SRC)},
        check=False,
    )
    assert done.stdout.strip() == ":4096:8", done.stderr
    assert _run_python(code, CUBLAS_WORKSPACE_CONFIG=":16:8").stdout.strip() == ":16:8"  # the user's choice stays


# -- precision --------------------------------------------------------------------------------------------------------


def test_precision_is_an_implicit_part_of_the_run_identity():
    fp32 = RunSpec.create("synthetic_mlp", "sgd", seed=1)
    assert fp32.precision == "fp32" and "precision" not in fp32.identity()  # ids of earlier runs are kept
    assert RunSpec.create("synthetic_mlp", "sgd", seed=1, precision="fp32") == fp32
    bf16 = TrainConfig.create("synthetic_mlp", "sgd", seed=1, precision="bf16").run
    assert bf16.identity()["precision"] == "bf16" and bf16.run_id != fp32.run_id
    assert RunSpec.from_dict(bf16.to_dict()) == bf16
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of fp32, tf32, bf16"):
        RunSpec.create("synthetic_mlp", "sgd", precision="fp16")


def test_training_passes_run_in_the_run_precision_and_evaluation_in_fp32(monkeypatch, tf32_untouched):
    seen: list[tuple[bool, bool]] = []
    build = trainer_module.build_problem

    def build_and_watch(*args, **kwargs):
        problem = build(*args, **kwargs)
        problem.model.register_forward_hook(lambda module, a, o: seen.append((module.training, tf32_allowed("matmul"))))
        return problem

    monkeypatch.setattr(trainer_module, "build_problem", build_and_watch)
    train(TrainConfig.create("synthetic_mlp", "pal", PAL, steps=4, eval_every=2, precision="tf32"))
    assert {allowed for training, allowed in seen if training} == {True}  # every closure call, probes included
    assert {allowed for training, allowed in seen if not training} == {False}  # validation and test


@pytest.mark.parametrize("optimizer", ["pal", "pls"])
def test_a_bf16_run_trains_and_says_so(tmp_path, optimizer):
    hparams = PAL if optimizer == "pal" else {}
    config = TrainConfig.create("digits_cnn", optimizer, hparams, steps=6, eval_every=3, precision="bf16")
    result = train(config, tmp_path)
    assert result.status == "completed"
    assert result.config["precision"] == "bf16"
    assert all(torch.isfinite(torch.tensor(point["train_loss"])) for point in result.history)


@pytest.fixture
def tf32_untouched():
    before = (tf32_allowed("conv"), tf32_allowed("matmul"))
    yield
    assert (tf32_allowed("conv"), tf32_allowed("matmul")) == before
