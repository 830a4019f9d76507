"""Numerical precision of training steps: TensorFloat-32 switches, bfloat16 autocast, and a CPU imitation of TF32.

A run's ``precision`` (:data:`lsbench.runs.spec.PRECISIONS`) says how the forward and backward passes of its
training steps are computed:

* ``fp32`` (default): IEEE float32. TensorFloat-32 is switched *off* for cuBLAS matrix products and cuDNN
  convolutions and RNNs, whatever the process had set. This matters on Ampere and newer GPUs (A100, H100, H200),
  where PyTorch lets cuDNN convolutions round their operands to TF32's 10-bit mantissa by default; a GTX 1080 has
  no TF32 and computes the same either way.
* ``tf32``: TensorFloat-32 allowed for cuBLAS and cuDNN (faster on Ampere and newer, no effect elsewhere).
* ``bf16``: as ``fp32``, and every closure's forward pass (model and loss) runs under
  ``torch.autocast(dtype=torch.bfloat16)``; its backward pass follows the forward's dtypes. Needs a device with
  bfloat16 support (Ampere or newer GPUs; CPUs).

Why ``fp32`` is the default: line searches read curvature out of *differences* of losses at nearby points. LABPAL's
near probe sits 1.77e-4 along the unit direction, where the curvature term of the loss of a CIFAR ResNet at
initialisation is about 1e-7 -- below the rounding of one TF32 product by three orders of magnitude. With TF32
convolutions the near-probe curvature of ResNet-20 came out as about -46 instead of +3.6 (imitated on a CPU with
:func:`imitate_tf32`; ``benchmarks/gpu_suite.py`` measures it on the device), so the same grid would give different
results on an H200 and on a GTX 1080.

In every precision:

* all closure evaluations of a step -- the training forward/backward and every line-search probe -- run in the
  run's precision, so the probes of one step measure one function;
* parameters, gradients and optimizer state stay float32, and the optimizers' own arithmetic (dot products, norms,
  parabola fits, updates: ``torch._foreach_*`` and elementwise kernels, never TF32) is float32;
* evaluation (validation and test) runs in ``fp32``, so accuracies compare across precisions.

PyTorch 2.9 and newer have per-backend ``fp32_precision`` settings and refuse to mix them with the older
``allow_tf32`` flags; older releases (the container's 2.5) have only the flags. :func:`numerics` sets whichever the
running PyTorch has and restores the previous values when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lsbench.optim import ClosureFactory
from lsbench.runs.spec import DEFAULT_PRECISION, PRECISIONS

__all__ = [
    "PRECISIONS",
    "autocast",
    "check_precision_supported",
    "closure_factory",
    "imitate_tf32",
    "numerics",
    "round_to_tf32",
    "tf32_allowed",
]

_NEW_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _precision_leaves() -> tuple[list[Any], list[Any]]:
    """The backends whose ``fp32_precision`` :func:`numerics` sets (PyTorch >= 2.9): cuBLAS and cuDNN (convolutions,
    RNNs); and oneDNN on the CPU, kept IEEE in every precision (TF32 is a GPU mode)."""
    gpu = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    mkldnn = torch.backends.mkldnn
    cpu = [getattr(mkldnn, name) for name in ("matmul", "conv", "rnn") if hasattr(mkldnn, name)]
    return gpu, cpu


def _check(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def numerics(precision: str = DEFAULT_PRECISION) -> Iterator[None]:
    """TensorFloat-32 on (``tf32``) or off (``fp32``, ``bf16``) for cuBLAS and cuDNN for the block; the previous
    settings are restored afterwards. Setting flags is host-only work: no device synchronisation."""
    _check(precision)
    allow = precision == "tf32"
    if _NEW_API:
        gpu, cpu = _precision_leaves()
        leaves = gpu + cpu
        saved = [leaf.fp32_precision for leaf in leaves]
        for leaf in leaves:
            leaf.fp32_precision = "tf32" if allow and leaf in gpu else "ieee"
        try:
            yield
        finally:
            for leaf, value in zip(leaves, saved, strict=True):
                leaf.fp32_precision = value
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (torch.get_float32_matmul_precision(), matmul.allow_tf32, cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high" if allow else "highest")
    matmul.allow_tf32 = cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        matmul.allow_tf32, cudnn.allow_tf32 = before[1], before[2]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a training forward pass: bfloat16 for ``bf16``, nothing otherwise."""
    _check(precision)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_precision_supported(precision: str, device: torch.device) -> None:
    """Raise ValueError (one line) when ``device`` cannot run ``precision``: bfloat16 on a GPU older than Ampere."""
    _check(precision)
    if precision == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(
            f"precision bf16 needs a GPU with bfloat16 support (compute capability 8.0 or newer); "
            f"{torch.cuda.get_device_name(device)} has {major}.{minor}"
        )


class _AutocastClosures(ClosureFactory):
    """A :class:`~lsbench.optim.ClosureFactory` whose objective runs under autocast (see the module docstring)."""

    def __init__(
        self, model: nn.Module, loss_fn: nn.Module, weight_decay: float, precision: str, device: torch.device
    ) -> None:
        super().__init__(model, loss_fn, weight_decay)
        self.precision = precision
        self.device = device

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        with autocast(self.precision, self.device):
            return super().loss(inputs, targets).float()


def closure_factory(
    model: nn.Module, loss_fn: nn.Module, weight_decay: float, precision: str, device: torch.device
) -> ClosureFactory:
    """The closures of a run in ``precision``: plain ones for ``fp32``/``tf32`` (the switches of :func:`numerics`
    do the rest), autocast ones for ``bf16``."""
    _check(precision)
    if precision == "bf16":
        return _AutocastClosures(model, loss_fn, weight_decay, precision, device)
    return ClosureFactory(model, loss_fn, weight_decay)


# -- imitated TF32 (CPU checks) ------------------------------------------------------------------------------------

_CONVOLUTIONS = frozenset({torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d})
_MATMULS = frozenset({F.linear, torch.matmul, torch.mm, torch.bmm, torch.addmm, Tensor.__matmul__, Tensor.matmul})


def _resolved_fp32_precision(leaf: Any, parents: list[Any]) -> str:
    """A leaf's ``fp32_precision`` with "none" (inherit) resolved through its parents; all "none" means IEEE."""
    value = leaf.fp32_precision
    for parent in parents:
        if value != "none":
            break
        value = getattr(parent, "fp32_precision", "none")
    return "ieee" if value == "none" else value


def tf32_allowed(kind: str) -> bool:
    """Whether PyTorch's current settings let a GPU use TF32 for ``kind`` ("conv" for cuDNN convolutions, "matmul"
    for cuBLAS products) -- what an Ampere-or-newer GPU would do with a float32 operation right now."""
    if kind not in ("conv", "matmul"):
        raise ValueError(f"kind: expected 'conv' or 'matmul', got {kind!r}")
    if _NEW_API:
        if kind == "conv":
            parents = [torch.backends.cudnn, torch.backends]
            return _resolved_fp32_precision(torch.backends.cudnn.conv, parents) == "tf32"
        parents = [torch.backends.cuda, torch.backends]
        return _resolved_fp32_precision(torch.backends.cuda.matmul, parents) == "tf32"
    if kind == "conv":
        return bool(torch.backends.cudnn.allow_tf32)
    return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"


def round_to_tf32(x: Tensor) -> Tensor:
    """``x`` (float32) with its mantissa rounded to TF32's 10 bits (to nearest, ties away from zero), as a GPU's
    tensor cores read a TF32 operand. The gradient passes straight through. Other dtypes are returned unchanged."""
    if x.dtype != torch.float32:
        return x
    bits = x.detach().view(torch.int32)
    rounded = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return x + (rounded - x).detach() if x.requires_grad else rounded


class _TF32Imitation(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        kind = "conv" if func in _CONVOLUTIONS else "matmul" if func in _MATMULS else None
        if kind is not None and tf32_allowed(kind):
            operands = tuple(round_to_tf32(a) if isinstance(a, Tensor) else a for a in args[:2])
            args = operands + tuple(args[2:])
        return func(*args, **kwargs)


def imitate_tf32() -> contextlib.AbstractContextManager[Any]:
    """Within the block, float32 convolutions and matrix products round both operands to TF32 whenever PyTorch's
    settings (:func:`tf32_allowed`) would let an Ampere-or-newer GPU use TF32 for them: a CPU stand-in for such a GPU
    in tests and ``benchmarks/gpu_suite.py --device cpu``. Only forward passes are imitated (autograd's backward
    kernels do not pass through Python), which is what line-search probes measure."""
    return _TF32Imitation()
