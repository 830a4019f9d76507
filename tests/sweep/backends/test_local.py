"""The local pool's slots: the GPUs CUDA can use (MIG instances included), and a fair share of CPU threads each."""

import pytest

from lsbench.sweep.backends import local
from lsbench.sweep.backends.local import Slot, default_slots, mig_slots, visible_gpus

LISTING = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5c3e2a-0000-1111-2222-333344445555)
  MIG 3g.40gb     Device  0: (UUID: MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff)
  MIG 3g.40gb     Device  1: (UUID: MIG-1a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-6d5c3e2a-0000-1111-2222-333344445555)
"""


def test_mig_instances_are_pinned_by_uuid_and_plain_gpus_beside_them_too():
    assert mig_slots(LISTING) == [
        "MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff",
        "MIG-1a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff",
        "GPU-6d5c3e2a-0000-1111-2222-333344445555",
    ]
    assert mig_slots("GPU 0: NVIDIA H200 (UUID: GPU-5d5c3e2a)\nGPU 1: NVIDIA H200 (UUID: GPU-6d5c3e2a)\n") == []


def test_without_mig_the_pool_counts_what_cuda_enumerates(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local, "_nvidia_driver_present", lambda: True)
    asked = []

    def run(command):
        asked.append(command[0])
        return "GPU 0: A (UUID: GPU-1)\nGPU 1: B (UUID: GPU-2)\n" if command[0] == "nvidia-smi" else "noise\n2\n"

    monkeypatch.setattr(local, "_run_quietly", run)
    assert visible_gpus() == ["0", "1"]
    assert asked[0] == "nvidia-smi" and "python" in asked[1]


def test_no_driver_means_no_gpus_without_starting_anything(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local, "_nvidia_driver_present", lambda: False)
    monkeypatch.setattr(local, "_run_quietly", lambda command: pytest.fail(f"ran {command}"))
    assert visible_gpus() == []


def test_gpu_slots_share_the_cpus_and_set_the_thread_count(monkeypatch):
    monkeypatch.setattr(local, "visible_gpus", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(local, "available_cpus", lambda: 18)
    slots = default_slots()
    assert slots == [Slot(gpu, 4) for gpu in ("0", "1", "2", "3")]
    environment = slots[1].environment()
    assert (environment["CUDA_VISIBLE_DEVICES"], environment["OMP_NUM_THREADS"], environment["MKL_NUM_THREADS"]) == (
        "1",
        "4",
        "4",
    )
    assert default_slots(workers=2) == [Slot("0", 9), Slot("1", 9)]


def test_cpu_slots_are_single_threaded_and_hide_the_gpus(monkeypatch):
    monkeypatch.setattr(local, "visible_gpus", lambda: [])
    monkeypatch.setattr(local, "available_cpus", lambda: 3)
    slots = default_slots()
    assert slots == [Slot(None)] * 3
    environment = slots[0].environment()
    assert (environment["CUDA_VISIBLE_DEVICES"], environment["OMP_NUM_THREADS"]) == ("", "1")
