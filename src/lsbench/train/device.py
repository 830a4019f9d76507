"""Which device a run trains on, and what is recorded about it.

A run pinned to a GPU must train on that GPU or not at all. ``CUDA_VISIBLE_DEVICES`` naming a GPU (the local pool's
GPU slots, Slurm's ``--gres=gpu`` allocations) is such a pin: if CUDA cannot use the GPU there -- a bad index, a
driver older than the CUDA runtime inside the container, a container started without ``--nv`` -- ``"auto"`` would
quietly pick the CPU and spend days on a 150,000-step CIFAR run that records ``gpu=None``. :func:`resolve_device`
raises :class:`DeviceUnavailableError` with a one-line reason instead. Without a pin (a laptop, ``CUDA_VISIBLE_DEVICES``
unset or empty) ``"auto"`` still means "CUDA if available, else the CPU".

:func:`device_metadata` is what a worker records with an attempt: the GPU's name and UUID, the CUDA runtime, cuDNN
and driver versions.
"""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

import torch

__all__ = ["DeviceUnavailableError", "device_metadata", "gpu_named_by_environment", "resolve_device"]

_DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


class DeviceUnavailableError(RuntimeError):
    """The run is pinned to a GPU that CUDA cannot use; the message is one line that says why."""


def gpu_named_by_environment() -> str | None:
    """``CUDA_VISIBLE_DEVICES`` when it names at least one GPU, else None.

    Unset, empty, ``-1`` (the usual "hide every GPU") and Slurm's ``NoDevFiles`` name none: CUDA stops reading the list
    at its first invalid entry, so only the first entry decides.
    """
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    first = value.split(",")[0].strip()
    if not first or first.startswith("-") or first == "NoDevFiles":
        return None
    return value


def resolve_device(requested: str) -> torch.device:
    """The device to train on for ``requested`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``).

    Raises:
        DeviceUnavailableError: a GPU is asked for -- explicitly, or by ``"auto"`` under a ``CUDA_VISIBLE_DEVICES``
            that names one -- and CUDA cannot use it.
        ValueError: ``requested`` is not a device name.
    """
    if requested == "auto":
        pinned = gpu_named_by_environment()
        if pinned is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        _require_cuda(f"CUDA_VISIBLE_DEVICES={pinned} names a GPU")
        return torch.device("cuda")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"device: {requested!r} is not a torch device or 'auto'") from None
    if device.type == "cuda":
        _require_cuda(f"device {requested}", device.index)
    return device


def _require_cuda(what: str, index: int | None = None) -> None:
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(f"{what}, but CUDA cannot use it ({_cuda_problem()}); not training on the CPU")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        pinned = "" if visible is None else f" with CUDA_VISIBLE_DEVICES={visible}"
        raise DeviceUnavailableError(f"{what}: CUDA sees {count} GPU(s){pinned}, so cuda:{count - 1} is the last")


def _cuda_problem() -> str:
    """Why CUDA is unavailable, in a few words (the first sentence of CUDA's own error where there is one)."""
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support"
    try:
        torch.cuda.init()
    except Exception as error:  # whatever the driver reports: no device, driver too old, busy or unavailable device
        text = " ".join(str(error).split())
        first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
        return (first[:200] + "...") if len(first) > 200 else first or type(error).__name__
    return "torch.cuda.is_available() is False"


def device_metadata(device: torch.device | str) -> dict[str, str]:
    """What an attempt records about the device it trains on: ``gpu`` (name), ``gpu_uuid``, ``cuda`` (runtime),
    ``cudnn`` and ``driver`` versions; ``"none"`` for what does not apply (the CPU) and ``"unknown"`` for what could
    not be read. Called once per attempt, not per step."""
    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info = {
        "gpu": "none",
        "gpu_uuid": "none",
        "cuda": torch.version.cuda or "none",
        "cudnn": "none" if cudnn is None else str(cudnn),
        "driver": "none",
    }
    if device.type != "cuda" or not torch.cuda.is_available():
        return info
    index = device.index if device.index is not None else torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(index)
    uuid = getattr(properties, "uuid", None)
    info.update(gpu=properties.name, gpu_uuid="unknown" if uuid is None else f"GPU-{uuid}", driver=driver_version())
    return info


def driver_version() -> str:
    """The NVIDIA driver version: from ``/proc/driver/nvidia/version`` (also visible inside containers), else from
    NVML (``nvmlSystemGetDriverVersion``); ``"unknown"`` if neither answers."""
    try:
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", _DRIVER_VERSION_FILE.read_text())
    except OSError:
        match = None
    if match:
        return match.group(1)
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return "unknown"
        try:
            buffer = ctypes.create_string_buffer(96)
            if nvml.nvmlSystemGetDriverVersion(buffer, ctypes.c_uint(96)) == 0:
                return buffer.value.decode()
        finally:
            nvml.nvmlShutdown()
    except OSError:
        pass
    return "unknown"
