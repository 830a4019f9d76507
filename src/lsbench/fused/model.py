"""K models of one architecture as one module whose layers are fused: one kernel per layer for all K copies.

Why fuse the layers. The models a fused group trains (the digits MLP and CNN, the CIFAR ResNets on small batches)
are launch and dispatch bound: a forward pass is dozens of tiny kernels, and K separate models pay that overhead K
times. ``torch.vmap`` over stacked parameters removes the Python loop but not the per-copy work inside the batching
rules (it measured only 1.4x for 8 digits MLPs on 2 CPU cores). Following HFTA (Wang et al., MLSys 2021), each layer
here is instead replaced by *one* ordinary layer that computes all K copies at once: a Linear becomes one batched
matmul (``baddbmm`` over ``(K, B, in)``), a Conv2d one grouped convolution with ``groups = K`` (times its own
groups), a BatchNorm one ``F.batch_norm`` over ``K * C`` channels. Each is a single kernel whatever K.

Layout. Inside the fused network a batch is *channel-stacked*: copy k's sample of ``C`` channels occupies channels
``k*C .. (k+1)*C - 1`` of a ``(B, K*C, H, W)`` tensor (``(B, K*F)`` for feature vectors). This is the layout a grouped
convolution and a ``K*C``-channel BatchNorm expect, and everything that acts per channel (ReLU, pooling, global mean)
works on it unchanged; flattening a sample gives K copy-major blocks, which is what the fused Linear splits. So the
models' own ``forward`` code (SmallCNN's ``flatten(1)``, CifarResNet's global mean, BasicBlock's residual add) runs
as written: :func:`fuse_models` deep-copies the first model and swaps each leaf module for its fused counterpart.
Only :class:`FusedModel.forward` sees the public layout, turning ``(K, B, *sample)`` inputs into ``(B, K*C, ...)``
and the ``(B, K*out)`` result back into ``(K, B, out)``.

Parameters. Every fused parameter and buffer has the copy as its leading dimension: ``p[k]`` is copy k's tensor in
its original shape, which the vectorised optimizers (:mod:`lsbench.fused.copies`) reduce per copy over
``p.reshape(K, -1)``. A layer views it flat for its kernel (``(K, out, in, kh, kw)`` as ``(K*out, in, kh, kw)``, a
BatchNorm's ``(K, C)`` running statistics as ``K*C`` channels) so that in-place updates land in the stored tensors.

Exactness. Copies never mix: every fused kernel computes each copy only from that copy's inputs and parameters
(groups of a convolution, batches of a bmm, channels of a BatchNorm), so copy k's outputs and gradients are those
of its own model -- a NaN in one copy stays in that copy. Only the module types listed here (and the container
modules whose ``forward`` was checked against the layout) can be fused; anything else is refused with a
``ValueError`` rather than silently mixing copies (a ``Softmax(dim=1)`` or a ``view(B, C, -1)`` would).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsbench.problems.models import MLP, BasicBlock, CifarResNet, OptionAShortcut, SmallCNN

__all__ = [
    "FusedBatchNorm",
    "FusedConv2d",
    "FusedLinear",
    "FusedModel",
    "FusedOptionAShortcut",
    "copy_losses",
    "fuse_models",
]


def _stack(tensors: Sequence[Tensor]) -> Tensor:
    """The copies' tensors stacked along a new leading dimension (new memory, detached)."""
    return torch.stack([t.detach() for t in tensors])


def _stacked_parameter(parameters: Sequence[nn.Parameter | None]) -> nn.Parameter | None:
    first = parameters[0]
    if first is None:
        return None
    return nn.Parameter(_stack([p for p in parameters if p is not None]), requires_grad=first.requires_grad)


class FusedLinear(nn.Module):
    """K ``nn.Linear`` layers as one batched matmul: ``(..., K*in) -> (..., K*out)``, copy-major features.

    ``weight`` is ``(K, out, in)`` and ``bias`` ``(K, out)``; copy k's features are multiplied by its own weight
    only (one ``baddbmm`` over the copy dimension)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        first = layers[0]
        self.copies = len(layers)
        self.in_features = first.in_features
        self.out_features = first.out_features
        self.weight = _stacked_parameter([layer.weight for layer in layers])
        self.register_parameter("bias", _stacked_parameter([layer.bias for layer in layers]))

    def forward(self, x: Tensor) -> Tensor:
        # Computed transposed, W x^T: (K, out, in) @ (K, in, N). The (K, in, N) view of the channel-stacked input
        # is a transposed BLAS operand (no copy), the weight's gradient comes out in the weight's own layout, and
        # the (K, out, N) result permuted to (N, K*out) is a view too (its rows strided, not contiguous).
        lead = x.shape[:-1]
        inputs = x.reshape(-1, self.copies, self.in_features).permute(1, 2, 0)
        if self.bias is None:
            outputs = torch.bmm(self.weight, inputs)
        else:
            outputs = torch.baddbmm(self.bias.unsqueeze(2), self.weight, inputs)
        return outputs.permute(2, 0, 1).reshape(*lead, self.copies * self.out_features)

    def extra_repr(self) -> str:
        return f"copies={self.copies}, in_features={self.in_features}, out_features={self.out_features}"


class FusedConv2d(nn.Module):
    """K ``nn.Conv2d`` layers as one grouped convolution over channel-stacked inputs ``(B, K*C_in, H, W)``.

    ``weight`` is ``(K, out, in/groups, kh, kw)``, viewed (not copied) as ``(K*out, in/groups, kh, kw)``, and the
    convolution has ``K * groups`` groups, so copy k's output channels see only copy k's input channels."""

    def __init__(self, layers: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = layers[0]
        if first.padding_mode != "zeros":
            raise ValueError(f"cannot fuse Conv2d with padding_mode={first.padding_mode!r} (only 'zeros')")
        self.copies = len(layers)
        self.in_channels = first.in_channels
        self.out_channels = first.out_channels
        self.kernel_size = first.kernel_size
        self.stride = first.stride
        self.padding = first.padding
        self.dilation = first.dilation
        self.groups = first.groups
        self.weight = _stacked_parameter([layer.weight for layer in layers])
        self.register_parameter("bias", _stacked_parameter([layer.bias for layer in layers]))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.flatten(0, 1)
        bias = None if self.bias is None else self.bias.flatten()
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.copies * self.groups)

    def extra_repr(self) -> str:
        return (
            f"copies={self.copies}, {self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}"
        )


class FusedBatchNorm(nn.Module):
    """K ``nn.BatchNorm1d``/``nn.BatchNorm2d`` layers as one ``F.batch_norm`` over ``K*C`` channels.

    Batch statistics are per channel, hence per copy; ``weight``, ``bias``, ``running_mean`` and ``running_var``
    are stored ``(K, C)`` and ``num_batches_tracked`` ``(K,)``, and are passed to the kernel as flat views, so its
    in-place running-statistics update lands in the stored buffers. The forward mirrors ``_BatchNorm.forward``
    (train mode: batch statistics, momentum update, ``num_batches_tracked += 1``; eval mode: running statistics).
    A cumulative average (``momentum=None``) is not supported: its factor ``1 / num_batches_tracked`` would have to
    be read on the host, per copy.
    """

    def __init__(self, layers: Sequence[nn.BatchNorm1d | nn.BatchNorm2d]) -> None:
        super().__init__()
        first = layers[0]
        if first.momentum is None:
            raise ValueError(f"cannot fuse {type(first).__name__} with momentum=None (cumulative moving average)")
        self.copies = len(layers)
        self.num_features = first.num_features
        self.eps = first.eps
        self.momentum = first.momentum
        self.affine = first.affine
        self.track_running_stats = first.track_running_stats
        self.input_dims = (2, 3) if isinstance(first, nn.BatchNorm1d) else (4,)
        self.weight = _stacked_parameter([layer.weight for layer in layers])
        self.register_parameter("bias", _stacked_parameter([layer.bias for layer in layers]))
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buffers = [getattr(layer, name) for layer in layers]
            self.register_buffer(name, None if buffers[0] is None else _stack(buffers))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in self.input_dims:
            raise ValueError(f"expected a {' or '.join(map(str, self.input_dims))}D input, got {x.dim()}D")
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None
        return F.batch_norm(
            x,
            None if running_mean is None else running_mean.view(-1),
            None if running_var is None else running_var.view(-1),
            None if self.weight is None else self.weight.view(-1),
            None if self.bias is None else self.bias.view(-1),
            bn_training,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"copies={self.copies}, {self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class FusedOptionAShortcut(nn.Module):
    """K option-A shortcuts on channel-stacked inputs: subsample, then zero-pad *each copy's* channels.

    Padding the ``K*C`` channels as a whole (what :class:`OptionAShortcut` would do) would shift every copy but the
    first into its neighbour's channels; here the channels are split into ``(K, C)`` before padding."""

    def __init__(self, shortcuts: Sequence[OptionAShortcut]) -> None:
        super().__init__()
        first = shortcuts[0]
        self.copies = len(shortcuts)
        self.stride = first.stride
        self.pad_before = first.pad_before
        self.pad_after = first.pad_after

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        batch, channels, height, width = x.shape
        x = x.reshape(batch, self.copies, channels // self.copies, height, width)
        x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        return x.reshape(batch, -1, height, width)

    def extra_repr(self) -> str:
        return f"copies={self.copies}, stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


_FUSERS: dict[type[nn.Module], Callable[[Sequence[Any]], nn.Module]] = {
    nn.Linear: FusedLinear,
    nn.Conv2d: FusedConv2d,
    nn.BatchNorm1d: FusedBatchNorm,
    nn.BatchNorm2d: FusedBatchNorm,
    OptionAShortcut: FusedOptionAShortcut,
}
"""Leaf modules with state or a channel-mixing forward, mapped to the class that fuses K of them."""

_PER_CHANNEL: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)
"""Stateless leaf modules that act per element or per channel: they work on the channel-stacked layout as they are."""

_CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, MLP, SmallCNN, CifarResNet, BasicBlock)
"""Modules whose own ``forward`` only chains children, adds them, acts per channel or flattens a sample from dimension
1 on, all of which keep the copies apart on the channel-stacked layout (checked by reading their code). A subclass is
not one of them: it may have its own forward."""


def _config(module: nn.Module) -> dict[str, Any]:
    """A module's public settings (``stride``, ``eps``, ``in_features`` …), to check that the copies agree."""
    return {name: value for name, value in vars(module).items() if not name.startswith("_") and name != "training"}


def _check_architectures(models: Sequence[nn.Module]) -> None:
    """Raise ValueError unless every model has the first one's modules, settings and tensor shapes and dtypes."""
    first = models[0]
    reference_modules = [(name, type(module), _config(module)) for name, module in first.named_modules()]
    reference_state = {name: (t.shape, t.dtype, t.device) for name, t in first.state_dict().items()}
    for index, model in enumerate(models[1:], start=1):
        modules = [(name, type(module), _config(module)) for name, module in model.named_modules()]
        if modules != reference_modules:
            raise ValueError(f"model {index} does not have the architecture of model 0 (modules or settings differ)")
        state = {name: (t.shape, t.dtype, t.device) for name, t in model.state_dict().items()}
        if state != reference_state:
            raise ValueError(f"model {index} does not have the tensors of model 0 (names, shapes, dtypes or devices)")


def _fuse(target: nn.Module, sources: Sequence[nn.Module], path: str) -> nn.Module:
    """The fused counterpart of ``target`` (the deep copy of ``sources[0]``): a new fused leaf, or ``target`` with
    its children replaced in place. Raises ValueError for a module that cannot be fused."""
    kind = type(target)
    where = path or "the model"
    if kind in _FUSERS:
        return _FUSERS[kind](sources).train(target.training)
    if kind is nn.Flatten:
        start, end = getattr(target, "start_dim", None), getattr(target, "end_dim", None)
        if (start, end) != (1, -1):  # a sample must be flattened whole, into K copy-major blocks
            raise ValueError(f"cannot fuse Flatten({start}, {end}) at {where}; only Flatten(1, -1)")
        return target
    if kind in _PER_CHANNEL:
        return target
    if kind not in _CONTAINERS:
        raise ValueError(f"cannot fuse module type {kind.__name__} at {where}")
    own = [*target._parameters, *target._buffers]
    if own:
        raise ValueError(f"cannot fuse {kind.__name__} at {where}: it holds tensors of its own ({', '.join(own)})")
    for name, child in list(target.named_children()):
        fused = _fuse(child, [source.get_submodule(name) for source in sources], f"{path}.{name}" if path else name)
        if fused is not child:
            setattr(target, name, fused)
    return target


class FusedModel(nn.Module):
    """K copies of one architecture trained as one module (see the module docstring for the layout).

    ``forward`` maps ``(K, B, *sample_shape)`` inputs -- copy k's batch in row k -- to ``(K, B, num_outputs)``, a
    (not contiguous) view of the last batched matmul's ``(K, num_outputs, B)`` result that :func:`copy_losses` reads
    without a copy.
    Every parameter and buffer is ``(K, *original_shape)``, in the original model's order; :meth:`copy_state_dict`
    and :meth:`load_copy_state_dict` read and write one copy in the original model's ``state_dict`` format, so a
    run's checkpoint is an ordinary model checkpoint. Build one with :func:`fuse_models`.
    """

    def __init__(self, network: nn.Module, copies: int) -> None:
        super().__init__()
        self.network = network
        self.copies = copies

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.dim() < 3 or inputs.shape[0] != self.copies:
            raise ValueError(f"expected inputs of shape ({self.copies}, B, *sample_shape), got {tuple(inputs.shape)}")
        batch = inputs.shape[1]
        stacked = inputs.transpose(0, 1).reshape(batch, self.copies * inputs.shape[2], *inputs.shape[3:])
        outputs = self.network(stacked)  # (B, K*out), copy-major
        return outputs.reshape(batch, self.copies, -1).transpose(0, 1)

    def copy_state_dict(self, k: int) -> dict[str, Tensor]:
        """Copy k's state in the original model's ``state_dict`` format (same keys and shapes; clones, on the
        fused model's device)."""
        self._check_copy(k)
        return {name: tensor[k].detach().clone() for name, tensor in self.network.state_dict().items()}

    @torch.no_grad()
    def load_copy_state_dict(self, k: int, state: Mapping[str, Tensor]) -> None:
        """Set copy k from a ``state_dict`` of the original model (on any device); the keys must match exactly."""
        self._check_copy(k)
        own = self.network.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state of copy {k} does not match the model: missing {missing}, unexpected {unexpected}")
        for name, tensor in own.items():
            value = state[name]
            if value.shape != tensor.shape[1:]:
                raise ValueError(f"{name}: expected shape {tuple(tensor.shape[1:])}, got {tuple(value.shape)}")
            tensor[k].copy_(value)

    def norm_buffers(self) -> list[Tensor]:
        """Every BatchNorm running buffer (``running_mean``, ``running_var``, ``num_batches_tracked``), the stored
        tensors themselves: a closure can clone them before a probe forward pass in train mode and copy them back."""
        return [
            buffer
            for module in self.modules()
            if isinstance(module, FusedBatchNorm)
            for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
            if buffer is not None
        ]

    def _check_copy(self, k: int) -> None:
        if not 0 <= k < self.copies:
            raise IndexError(f"copy {k} out of range for {self.copies} copies")

    def extra_repr(self) -> str:
        return f"copies={self.copies}"


def fuse_models(models: Sequence[nn.Module]) -> FusedModel:
    """The K >= 1 ``models`` (one architecture, same dtype and device) as one :class:`FusedModel`, copy k holding
    a copy of model k's parameters and buffers (the models themselves are left untouched).

    Raises ValueError naming the module type for a module that cannot be fused (see :data:`_FUSERS`,
    :data:`_PER_CHANNEL`, :data:`_CONTAINERS`), and for models whose architectures differ.
    """
    models = list(models)
    if not models:
        raise ValueError("fuse_models needs at least one model")
    _check_architectures(models)
    network = _fuse(copy.deepcopy(models[0]), models, "")
    fused = FusedModel(network, len(models))
    fused.training = network.training  # the submodules keep the modes they were copied with
    return fused


def copy_losses(loss_fn: nn.Module, outputs: Tensor, targets: Tensor) -> Tensor:
    """Every copy's loss ``(K,)`` for ``outputs`` ``(K, B, C)`` and ``targets`` ``(K, B)`` (class indices) or
    ``(K, B, C)`` (class probabilities), each equal to ``loss_fn(outputs[k], targets[k])``.

    One ``F.cross_entropy`` with ``reduction="none"`` over all K*B samples, then a per-copy mean (or sum): a loop
    over the copies would launch K times as many kernels. Supports ``nn.CrossEntropyLoss`` without class weights, with
    ``reduction`` "mean" or "sum", any ``ignore_index`` and ``label_smoothing``; raises ValueError otherwise.
    """
    if type(loss_fn) is not nn.CrossEntropyLoss:
        raise ValueError(f"copy_losses supports nn.CrossEntropyLoss only, got {type(loss_fn).__name__}")
    if loss_fn.weight is not None:
        raise ValueError("copy_losses does not support CrossEntropyLoss with class weights")
    if loss_fn.reduction not in ("mean", "sum"):
        raise ValueError(f"copy_losses needs reduction 'mean' or 'sum', got {loss_fn.reduction!r}")
    if outputs.dim() != 3:
        raise ValueError(f"expected outputs of shape (K, B, C), got {tuple(outputs.shape)}")
    copies, batch, classes = outputs.shape
    probabilities = targets.is_floating_point()
    if targets.shape != ((copies, batch, classes) if probabilities else (copies, batch)):
        raise ValueError(f"targets of shape {tuple(targets.shape)} do not match outputs {tuple(outputs.shape)}")
    # Classes in dimension 1, the (N, C, d) form of cross_entropy: a fused model's outputs are a (K, B, C) view of a
    # (K, C, B) tensor (what its last batched matmul computes), so this reads them without a copy.
    losses = F.cross_entropy(
        outputs.transpose(1, 2),
        targets.transpose(1, 2) if probabilities else targets,
        ignore_index=loss_fn.ignore_index,
        reduction="none",
        label_smoothing=loss_fn.label_smoothing,
    )
    if loss_fn.reduction == "sum":
        return losses.sum(dim=1)
    if probabilities:
        return losses.mean(dim=1)
    counted = (targets != loss_fn.ignore_index).sum(dim=1)  # ignored samples count in neither the sum nor the mean
    return losses.sum(dim=1) / counted.to(losses.dtype)
