"""PLS: Probabilistic Line Search (Mahsereci & Hennig 2015; thesis Section 2.6.5, Algorithm 5).

This is the variant the thesis compared against (Appendix C.4): the TensorFlow reference implementation by
L. Balles ("development version with experimental changes compared to the paper"), as ported to PyTorch by
Mishkin (SLS repository) and run in the LABPAL harness, where every sampled batch is one function evaluation.
See :class:`PLS` for the algorithm and the places where this implementation deliberately differs from those
ports; the GP lives in :mod:`lsbench.optim._gp`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from lsbench.optim._gp import LineGP
from lsbench.optim._hparams import COUNT, POSITIVE, UNIT_INTERVAL, Range, check_ranges, nullable, one_of
from lsbench.optim._linesearch import Closure, LineSearchOptimizer, flat_dot, move_along
from lsbench.optim.closure import BatchClosure

EXPLORATION_POLICIES = ("linear", "exponential")
CANDIDATE_SELECTIONS = ("wolfe", "ei_wolfe")
PER_SAMPLE_ELEMENTS = 2**24  # per-sample gradient entries held at once on the CPU (samples x parameters)
PER_SAMPLE_MEMORY_FRACTION = 0.25  # of a GPU's memory, for the per-sample gradients of one chunk
_BYTES_PER_ENTRY = 3  # element sizes per per-sample gradient entry: the gradient, its centred square, temporaries
ABORT_STEP = 0.01  # scaled position of the fallback step when no Wolfe point is found
_NAN_SUBSTITUTE = (100.0, 10.0, 1.0, 1.0)  # f, f′, σ_f², σ_f′² of a non-finite evaluation (the reference's values)

_log = logging.getLogger(__name__)


# -- per-sample statistics ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_batch_statistics(model: nn.Module) -> Iterator[dict[nn.Module, list[tuple[Tensor, Tensor]]]]:
    """Record, for every BatchNorm layer in training mode, the batch mean and (biased) variance it normalizes with.

    Yields a dict ``module -> [(mean, var), ...]`` (one entry per call of the module in a forward pass) that fills
    while the context is open. Used around the closure's forward pass, so that the per-sample pass can normalize
    every sample with the statistics of the batch it belongs to.
    """
    stats: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {}
    handles = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # bfloat16 under autocast; per-sample pass is float32
        dims = [0, *range(2, x.dim())]
        stats.setdefault(module, []).append((x.mean(dims), x.var(dims, unbiased=False)))

    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.training:
            handles.append(module.register_forward_pre_hook(hook))
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _fixed_batch_statistics(stats: dict[nn.Module, list[tuple[Tensor, Tensor]]]) -> Iterator[list[int]]:
    """Make every recorded BatchNorm layer normalize with its recorded batch statistics, held constant.

    Each layer's ``forward`` is shadowed by an instance attribute for the duration (so parameters swapped in by
    ``functional_call`` are still used), and running statistics are neither read nor updated. Yields the list of
    per-layer call counters, which the caller resets before each forward pass.
    """
    counters = [0] * len(stats)

    def fixed(index: int, module: _BatchNorm, x: Tensor) -> Tensor:
        calls = stats[module]
        mean, var = calls[counters[index] % len(calls)]
        counters[index] += 1
        return nn.functional.batch_norm(x, mean, var, module.weight, module.bias, False, 0.0, module.eps)

    modules = list(stats)
    for index, module in enumerate(modules):
        module.forward = lambda x, index=index, module=module: fixed(index, module, x)  # type: ignore[method-assign]
    try:
        yield counters
    finally:
        for module in modules:
            del module.forward


def per_sample_chunk_size(parameters: int, batch: int, device: torch.device, element_size: int = 4) -> int:
    """Samples per vmapped chunk of :func:`batch_mean_variances` for a model of ``parameters`` parameters of
    ``element_size`` bytes each on ``device``: at most ``batch``, at least 1.

    On a GPU: as many as :data:`PER_SAMPLE_MEMORY_FRACTION` of its memory holds at three elements per per-sample
    gradient entry -- on an H200 every CIFAR network of the grids (DenseNet-121: 7 M parameters) takes a batch of
    128 in one pass; a fixed entry budget gave DenseNet-121 two samples per chunk, 64 passes in a row. The GPU's
    *total* memory, not its free memory, decides, so a run resumed on the same kind of GPU chunks -- and therefore
    rounds, and draws per-sample dropout masks -- the same way. On the CPU: :data:`PER_SAMPLE_ELEMENTS` entries.
    """
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        entries = int(total * PER_SAMPLE_MEMORY_FRACTION) // (_BYTES_PER_ENTRY * element_size)
    else:
        entries = PER_SAMPLE_ELEMENTS
    return max(1, min(batch, entries // max(1, parameters)))


def _chunk_size_for(params: list[Tensor], batch: int) -> int:
    if not params:
        return batch
    count = sum(p.numel() for p in params)
    return per_sample_chunk_size(count, batch, params[0].device, params[0].element_size())


def _per_sample_loss_fn(loss_fn: nn.Module) -> nn.Module:
    """A copy of ``loss_fn`` with ``reduction='none'``; the mean of its outputs must be the batch loss."""
    if getattr(loss_fn, "reduction", None) != "mean":
        raise TypeError(
            f"PLS needs per-sample losses: the closure's loss function must be a torch loss with reduction='mean' "
            f"(got {type(loss_fn).__name__} with reduction={getattr(loss_fn, 'reduction', None)!r})"
        )
    if getattr(loss_fn, "weight", None) is not None:
        raise TypeError(
            "PLS needs per-sample losses whose plain mean is the batch loss; a class-weighted loss is a weighted mean"
        )
    per_sample = copy.copy(loss_fn)
    per_sample.reduction = "none"
    return per_sample


def batch_mean_variances(
    closure: BatchClosure,
    params: Iterable[Tensor],
    batch_statistics: dict[nn.Module, list[tuple[Tensor, Tensor]]] | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, list[Tensor]]:
    r"""Variances of the mini-batch mean loss and of each coordinate of the mean gradient, from per-sample terms.

    With per-sample losses :math:`\ell_i` and gradients :math:`g_i` of a batch of n samples (the reference's
    estimator, i.e. the variance *of the mean*, not of a single sample):

    * :math:`\sigma_f^2 = (\overline{\ell^2} - \bar\ell^2)/(n-1)`;
    * per coordinate, :math:`(\overline{g^2} - \bar g^2)/(n-1)`.

    Both are computed with pairwise (chunk-wise) centred sums, not from raw second moments, so they do not lose
    precision to cancellation. The weight-decay term of the closure's factory is the same for every sample, so it
    adds nothing to either variance and is left out.

    Per-sample losses and gradients come from ``torch.func``: ``vmap`` over ``grad_and_value`` of the model's
    ``functional_call`` on one sample at a time (``closure.factory.model`` and ``closure.factory.loss_fn`` with
    ``reduction='none'``), in chunks of ``chunk_size`` samples (default :func:`per_sample_chunk_size`). Any model
    built from layers ``vmap`` supports works. The per-sample pass runs in float32 also when the closure's forward
    runs under bfloat16 autocast.

    Samples that interact in the batch forward pass are approximated:

    * **BatchNorm in training mode** normalizes with statistics of the whole batch, which couples the samples. Here
      each sample is normalized with the *batch's* mean and variance held constant (``batch_statistics`` as
      recorded by :func:`capture_batch_statistics` around the closure's forward pass; if not given they are
      recorded by an extra no-grad forward pass that leaves the running statistics unchanged). So every per-sample
      loss is exactly that sample's term of the batch loss, and only the gradient path through the batch
      statistics is dropped -- as in the LABPAL port, whose per-sample BatchNorm gradients also ignore the
      coupling. The two alternatives are worse: a sample alone in training mode is normalized by its own
      statistics (a different function; BatchNorm1d refuses a batch of one), and running statistics describe
      earlier parameters (at initialization they are 0 and 1).
    * **Dropout** draws a fresh, independent mask per sample (``vmap(randomness="different")``, seeded from the
      closure's seed so that the statistics are reproducible); the masks have the batch's distribution but are not
      the closure's masks, so the per-sample losses then differ from the batch's terms.

    BatchNorm running statistics are neither used nor changed, and the global RNG stream is not advanced.

    Returns ``(loss_variance, gradient_variances)``: a 0-d tensor and one tensor per entry of ``params``.
    """
    params = list(params)
    factory = closure.factory
    model, inputs, targets = factory.model, closure.inputs, closure.targets
    n = inputs.shape[0]
    if n < 2:
        raise ValueError(f"PLS estimates the noise from the samples of a batch and needs at least 2, got {n}")
    per_sample_loss = _per_sample_loss_fn(factory.loss_fn)

    names = {id(p): name for name, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise TypeError(f"PLS: optimizer parameters {missing} are not parameters of closure.factory.model")
    wanted = {names[id(p)]: p.detach() for p in params}
    constants = {name: p.detach() for name, p in model.named_parameters() if name not in wanted}

    device = inputs.device
    on_cuda = device.type == "cuda"
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[device] if on_cuda else []))
        if closure.seed is not None:
            torch.default_generator.manual_seed(closure.seed)
            if on_cuda:
                torch.cuda.default_generators[device.index or 0].manual_seed(closure.seed)
        if batch_statistics is None:
            batch_statistics = _record_batch_statistics(closure)
        counters = stack.enter_context(_fixed_batch_statistics(batch_statistics))

        def sample_loss(diff: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            counters[:] = [0] * len(counters)
            output = functional_call(model, {**constants, **diff}, (x.unsqueeze(0),))
            return per_sample_loss(output, y.unsqueeze(0)).mean()

        per_sample = vmap(grad_and_value(sample_loss), in_dims=(None, 0, 0), randomness="different")
        size = min(n, chunk_size or _chunk_size_for(params, n))
        losses, count, mean, m2 = [], 0, None, None
        for start in range(0, n, size):
            grads, chunk_losses = per_sample(wanted, inputs[start : start + size], targets[start : start + size])
            losses.append(chunk_losses.detach())
            chunk = [grads[names[id(p)]] for p in params]
            k = chunk[0].shape[0] if chunk else chunk_losses.shape[0]
            chunk_mean = [g.mean(0) for g in chunk]
            chunk_m2 = [(g - m).square().sum(0) for g, m in zip(chunk, chunk_mean, strict=True)]
            if mean is None:
                mean, m2 = chunk_mean, chunk_m2
            else:  # Chan et al.'s pairwise update of the centred sums
                total = count + k
                delta = torch._foreach_sub(chunk_mean, mean)
                torch._foreach_add_(mean, torch._foreach_mul(delta, k / total))
                torch._foreach_add_(m2, chunk_m2)
                torch._foreach_add_(m2, torch._foreach_mul(torch._foreach_mul(delta, delta), count * k / total))
            count += k
    loss_variance = torch.cat(losses).var(unbiased=False) / (n - 1)
    return loss_variance, torch._foreach_div(m2 or [], n * (n - 1))


def _record_batch_statistics(closure: BatchClosure) -> dict[nn.Module, list[tuple[Tensor, Tensor]]]:
    """The BatchNorm batch statistics of the closure's batch, from a no-grad forward that leaves no trace."""
    factory = closure.factory
    with torch.no_grad(), capture_batch_statistics(factory.model) as stats:
        if any(isinstance(m, _BatchNorm) and m.training for m in factory.model.modules()):
            factory.save_norm_statistics()
            factory.model(closure.inputs)
            factory.restore_norm_statistics()
    return stats


# -- the optimizer -----------------------------------------------------------------------------------------------


class PLS(LineSearchOptimizer):
    r"""Probabilistic Line Search, one function evaluation (one mini-batch) per ``step``.

    **Model.** Along the line :math:`\theta(\alpha) = \theta_0 + \alpha d` a GP with the once-integrated Wiener
    kernel (τ = 10) is conditioned on noisy observations of the loss and the directional derivative
    :math:`g^\top d`, each measured on a *different* batch (every ``step`` brings a new one). Units are scaled as
    in the paper (§3.4): :math:`t = \alpha/\alpha_0`, :math:`f = (\ell - \ell_0)/(|f'_0|\alpha_0)`,
    :math:`f' = g^\top d/|f'_0|`, so the line origin is observed at (0, 0, −1). The noise variances of every
    observation come from the per-sample statistics of its batch (:func:`batch_mean_variances`):
    :math:`\sigma_f^2` and :math:`\sigma_{f'}^2 = \sum_j \mathrm{Var}[\bar g_j]\, d_j^2` (the reference's
    diagonal form, scaled like the observations).

    **Procedure** (the reference's ``proceed``; each ``step`` does exactly one of the evaluations below):

    1. First call: evaluate at the current parameters, set :math:`d = -g` and start the first line. No move.
    2. Next position t: 1 on a fresh line; :math:`t = 0.01` ("abort") if the last evaluation was not finite, the
       line has used ``max_steps`` evaluations or ``max_expl`` explorations, or the posterior slope at the origin is
       not negative (:math:`\mu'(0) \ge` ``max_dmu0``); otherwise the best candidate: in every cell between
       observations the point where :math:`\mu'` rises through ``target_df``, plus one exploration point
       :math:`t = 2(k+1)` (``"linear"``) or :math:`2^{k+1}` (``"exponential"``) after k explorations. The candidate
       with the largest Wolfe probability wins (``candidate_selection="wolfe"``, the reference); ``"ei_wolfe"``
       maximizes expected improvement × Wolfe probability instead (the paper's criterion, thesis Algorithm 5,
       applied to the reference's candidates).
    3. Move there, evaluate on this step's batch, add the observation to the GP.
    4. Accept the point if it was an abort step or if its Wolfe probability
       :math:`P(f(t) \le f(0) + c_1 t f'(0),\ \text{df\_lo} \le f'(t) \le \text{df\_hi}) \ge c_W`. On acceptance,
       with :math:`\alpha = t\alpha_0`: if it was not an abort step and :math:`\alpha_0/10 < \alpha < 10\alpha_0`
       (``max_change_factor``), an EMA :math:`\bar\alpha \leftarrow 0.95\bar\alpha + 0.05\alpha` is updated and
       :math:`\alpha_0 \leftarrow` ``fpush`` :math:`\cdot\,\alpha`; otherwise :math:`\alpha_0 \leftarrow \bar\alpha`.
       The new direction is :math:`d \leftarrow \beta d - g` (``momentum`` β) with the gradient just measured, and
       a new line starts at the accepted point (its observation becomes the origin; no new evaluation).

    The parameters always sit at the last evaluated point; there is no snapshot.

    **Differences from the ports the thesis ran** (reference bugs and quirks are not reproduced):

    * the noise variances are those of the mini-batch *mean*, as in the TF reference; the LABPAL port's were about
      n times larger (per-sample variances);
    * every observation carries its own batch's variances (as in the LABPAL port; the TF reference and the SLS
      port reuse the origin's for all points of a line);
    * the first line needs one evaluation, not two identical ones on the same batch;
    * the deterministic fallback of the Wolfe probability (a variance below 1e-9) tests the same bounded
      curvature condition as the probabilistic one (the reference tested :math:`f'(t) \ge 0` there);
    * per-sample gradients come from ``torch.func`` for any model, not from per-layer hooks for Linear, Conv2d and
      BatchNorm2d only; see :func:`batch_mean_variances` for BatchNorm and dropout.

    The paper's own algorithm (Matlab release, thesis Algorithm 5) differs more: Wolfe conditions with
    :math:`c_2` instead of the band, minima of the posterior mean as candidates, and the lowest-mean point instead
    of the 0.01 abort step. Those are not implemented.

    **Closure.** ``closure`` must be a :class:`lsbench.optim.closure.BatchClosure` (built by
    :class:`~lsbench.optim.closure.ClosureFactory`): PLS reads its model, loss function and batch to compute the
    per-sample statistics itself; any other closure raises TypeError. Each ``step`` calls the closure once (forward
    + backward: the loss and gradient at the trial point, including the factory's weight decay) and makes one
    vmapped per-sample forward + backward pass, so the counters advance by 2 forward and 2 backward passes per step.

    **Reporting.** ``updated`` is True on the steps that accept a point; the effective learning rate is the last
    accepted α (learning-rate units along d), 0 before the first acceptance. Each step synchronizes with the host
    once, to bring the evaluation's loss, slope and variances (seven scalars in one transfer) to the GP; the
    direction update and all parameter moves stay on the device.

    Args:
        params: parameters to optimize (one group; all must belong to the closure's model).
        initial_step_size: :math:`\alpha_0` at the start (default 0.01).
        armijo_constant: :math:`c_1` of the sufficient-decrease condition (default 0.05).
        acceptance_threshold: :math:`c_W` (default 0.3).
        momentum: β of the direction update (default 0).
        fpush: factor on the accepted step for the next :math:`\alpha_0` (default 1).
        target_df: scaled slope that cell candidates aim for (default 0.5).
        df_lo, df_hi: the band of the curvature condition on the scaled slope (defaults −0.1, 1.1).
        max_steps, max_expl: evaluations and explorations per line before aborting (defaults 20, 20 as in the
            LABPAL port; the TF reference used 10 and 6).
        max_dmu0: abort when the posterior slope at the origin is at least this (default 0).
        max_change_factor: accepted steps outside :math:`[\alpha_0/c, c\alpha_0]` reset :math:`\alpha_0`
            (default 10).
        expl_policy: ``"linear"`` or ``"exponential"`` exploration points.
        candidate_selection: ``"wolfe"`` (reference) or ``"ei_wolfe"``.
        per_sample_chunk: samples per vmapped chunk (default: automatic, :func:`per_sample_chunk_size`). A chunk
            that does not fit into GPU memory is halved until it does; the size in use is saved with the state, so
            a resumed run continues with it.
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "initial_step_size": POSITIVE,
        "armijo_constant": UNIT_INTERVAL,
        "acceptance_threshold": UNIT_INTERVAL,
        "momentum": UNIT_INTERVAL,
        "fpush": POSITIVE,
        "max_steps": COUNT,
        "max_expl": COUNT,
        "max_change_factor": Range(low=1.0, low_exclusive=True),
        "expl_policy": one_of(EXPLORATION_POLICIES),
        "candidate_selection": one_of(CANDIDATE_SELECTIONS),
        "per_sample_chunk": nullable(COUNT),
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        initial_step_size: float = 0.01,
        armijo_constant: float = 0.05,
        acceptance_threshold: float = 0.3,
        momentum: float = 0.0,
        fpush: float = 1.0,
        target_df: float = 0.5,
        df_lo: float = -0.1,
        df_hi: float = 1.1,
        max_steps: int = 20,
        max_expl: int = 20,
        max_dmu0: float = 0.0,
        max_change_factor: float = 10.0,
        expl_policy: str = "linear",
        candidate_selection: str = "wolfe",
        per_sample_chunk: int | None = None,
    ) -> None:
        check_ranges(PLS.RANGES, locals())
        if not df_lo < df_hi:
            raise ValueError(f"Invalid curvature band: df_lo={df_lo} must be below df_hi={df_hi}")
        defaults = {
            "initial_step_size": initial_step_size,
            "armijo_constant": armijo_constant,
            "acceptance_threshold": acceptance_threshold,
            "momentum": momentum,
            "fpush": fpush,
            "target_df": target_df,
            "df_lo": df_lo,
            "df_hi": df_hi,
            "max_steps": max_steps,
            "max_expl": max_expl,
            "max_dmu0": max_dmu0,
            "max_change_factor": max_change_factor,
            "expl_policy": expl_policy,
            "candidate_selection": candidate_selection,
            "per_sample_chunk": per_sample_chunk,
        }
        super().__init__(params, defaults)
        # Host state of the line search: plain Python numbers and lists, saved by state_dict through ``shared``.
        self.shared.update(
            started=False,  # has the first line been set up?
            alpha0=float(initial_step_size),
            alpha_stats=float(initial_step_size),
            f0=0.0,  # raw loss at the line origin
            df0=1.0,  # |projected gradient| at the origin
            observations=[],  # GP observations (t, f, df, fvar, dfvar) in scaled units
            t=0.0,  # scaled position of the parameters on the current line
            num_steps=0,
            num_expl=0,
            abort_status=0,  # 1: a non-finite evaluation; 2: the next acceptance is an abort step
            last=None,  # host values of the last evaluation (see _evaluate)
            accepted=0,
        )
        self._gp_cache: tuple[list, LineGP] | None = None

    # -- evaluation -------------------------------------------------------------------------------------------

    def _line_params(self) -> list[Tensor]:
        """The parameters the line moves: those that had a gradient when the first line started."""
        return [p for p in self._params if "direction" in self.state[p]]

    def _evaluate(self, closure: BatchClosure) -> Tensor:
        r"""Loss, gradient and per-sample variances at the current parameters on this step's batch.

        Memorizes the gradient and the per-coordinate variances in the parameter state and brings seven
        scalars to the host in one transfer: the loss, its variance, :math:`g^\top d`, :math:`\sum v d^2`,
        :math:`g^\top g`, :math:`\sum v d g` and :math:`\sum v g^2` (v the gradient variances), from which the
        observation at this point (direction d) and, after :math:`d \leftarrow \beta d - g`, at the new origin
        follow without touching the device again.
        """
        with capture_batch_statistics(closure.factory.model) as stats:
            loss = self._loss_and_grad(closure)
        if not self.shared["started"]:
            for p in self._params:
                if p.grad is not None:
                    self.state[p]["direction"] = torch.zeros_like(p)
        params = self._line_params()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        loss_variance, variances = self._batch_mean_variances(closure, params, stats)
        # the per-sample pass: one vmapped forward and backward over the batch (a pooled closure of the noise
        # adaptation, lsbench.optim.noise, holds several sampled batches and counts as that many)
        passes = getattr(closure, "pooled_batches", 1)
        self.shared["forwards"] += passes
        self.shared["backwards"] += passes
        directions = [self.state[p]["direction"] for p in params]
        for p, g, v in zip(params, grads, variances, strict=True):
            self.state[p]["grad"] = g
            self.state[p]["gradvar"] = v
        vd = torch._foreach_mul(variances, directions)
        vg = torch._foreach_mul(variances, grads)
        scalars = torch.stack(
            [
                loss.to(torch.float64),
                loss_variance.to(torch.float64),
                flat_dot(grads, directions).to(torch.float64),
                flat_dot(vd, directions).to(torch.float64),
                flat_dot(grads, grads).to(torch.float64),
                flat_dot(vd, grads).to(torch.float64),
                flat_dot(vg, grads).to(torch.float64),
            ]
        )
        f, fvar, gd, vdd, gg, vdg, vgg = scalars.tolist()  # the one host synchronization of the step
        self.shared["last"] = {"f": f, "fvar": fvar, "gd": gd, "vdd": vdd, "gg": gg, "vdg": vdg, "vgg": vgg}
        return loss

    def _batch_mean_variances(
        self, closure: BatchClosure, params: list[Tensor], stats: dict[nn.Module, list[tuple[Tensor, Tensor]]]
    ) -> tuple[Tensor, list[Tensor]]:
        """:func:`batch_mean_variances` in chunks of the configured or automatic size, halved on a GPU out of memory
        (rare: the automatic size leaves three quarters of the GPU to the model and its activations)."""
        shared = self.shared
        chunk = self.param_groups[0]["per_sample_chunk"] or shared.get("per_sample_chunk")
        if chunk is None:
            chunk = shared["per_sample_chunk"] = _chunk_size_for(params, closure.inputs.shape[0])
        while True:
            try:
                return batch_mean_variances(closure, params, stats, chunk)
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                chunk = shared["per_sample_chunk"] = max(1, chunk // 2)
                _log.warning(
                    "PLS: per-sample gradients ran out of GPU memory; retrying with %d samples per chunk", chunk
                )

    # -- line bookkeeping -------------------------------------------------------------------------------------

    def _observe(self) -> None:
        """Add the last evaluation, at position t of the current line, to the GP observations (scaled)."""
        shared = self.shared
        last = shared["last"]
        f, df, fvar, dfvar = last["f"], last["gd"], last["fvar"], last["vdd"]
        if not all(math.isfinite(v) for v in (f, df, fvar, dfvar)):
            f, df, fvar, dfvar = _NAN_SUBSTITUTE
            shared["abort_status"] = 1
        scale = shared["df0"] * shared["alpha0"]
        shared["observations"] = [
            *shared["observations"],
            (shared["t"], (f - shared["f0"]) / scale, df / shared["df0"], fvar / scale**2, dfvar / shared["df0"] ** 2),
        ]
        shared["num_steps"] += 1

    def _new_line(self) -> None:
        """Turn the direction and start a line at the last evaluated point (no new evaluation)."""
        shared, group = self.shared, self.param_groups[0]
        beta = group["momentum"]
        params = self._line_params()
        directions = [self.state[p]["direction"] for p in params]
        grads = [self.state[p]["grad"] for p in params]
        if beta == 0:
            torch._foreach_copy_(directions, torch._foreach_neg(grads))
        else:
            torch._foreach_mul_(directions, beta)
            torch._foreach_sub_(directions, grads)
        last = shared["last"]
        # observation at the origin along the new direction d' = βd − g, from the memorized evaluation
        f, fvar = last["f"], last["fvar"]
        df = beta * last["gd"] - last["gg"]
        dfvar = beta * beta * last["vdd"] - 2 * beta * last["vdg"] + last["vgg"]
        shared.update(num_steps=0, num_expl=0, abort_status=0, t=0.0)
        if not all(math.isfinite(v) for v in (f, df, fvar, dfvar)):
            f, df, fvar, dfvar = _NAN_SUBSTITUTE
            shared["abort_status"] = 1
        df0 = max(abs(df), 1e-12)  # a vanishing slope (a stationary point) must not make the scaling infinite
        scale = df0 * shared["alpha0"]
        shared.update(f0=f, df0=df0, observations=[(0.0, 0.0, df / df0, fvar / scale**2, max(dfvar, 0.0) / df0**2)])

    def _accept(self) -> float:
        """Accept the current point: adapt α₀, start a new line there; returns the accepted step α."""
        shared, group = self.shared, self.param_groups[0]
        alpha0 = shared["alpha0"]
        alpha = shared["t"] * alpha0
        factor = group["max_change_factor"]
        if shared["abort_status"] != 2 and alpha0 / factor < alpha < alpha0 * factor:
            shared["alpha_stats"] = 0.95 * shared["alpha_stats"] + 0.05 * alpha
            shared["alpha0"] = group["fpush"] * alpha
        else:
            shared["alpha0"] = shared["alpha_stats"]
        shared["accepted"] += 1
        self._new_line()
        return alpha

    def _gp(self) -> LineGP:
        """The GP of the current observations, cached until they change (each change makes a new list)."""
        observations = self.shared["observations"]
        if self._gp_cache is None or self._gp_cache[0] is not observations:
            self._gp_cache = (observations, LineGP(observations))
        return self._gp_cache[1]

    def _next_position(self, gp: LineGP) -> float:
        """Where the next evaluation of the current line goes (step 2 of the procedure)."""
        shared, group = self.shared, self.param_groups[0]
        if shared["num_steps"] == 0:
            return 1.0
        if (
            shared["abort_status"] == 1
            or shared["num_steps"] >= group["max_steps"]
            or shared["num_expl"] >= group["max_expl"]
            or float(gp.d1([0.0])[0]) >= group["max_dmu0"]
        ):
            shared["abort_status"] = 2
            return ABORT_STEP
        candidates = gp.cell_candidates(group["target_df"])
        k = shared["num_expl"]
        exploration = 2.0 * (k + 1) if group["expl_policy"] == "linear" else 2.0 ** (k + 1)
        candidates.append(exploration)
        scores = gp.wolfe_probabilities(candidates, group["armijo_constant"], group["df_lo"], group["df_hi"])
        if group["candidate_selection"] == "ei_wolfe":
            scores = scores * gp.expected_improvements(candidates)
        best = int(scores.argmax())  # the first of equal scores: cell candidates precede the exploration point
        if best == len(candidates) - 1:
            shared["num_expl"] += 1
        return candidates[best]

    # -- step -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        if not isinstance(closure, BatchClosure):
            raise TypeError(
                "PLS computes per-sample losses and gradients itself and needs a lsbench.optim.BatchClosure "
                f"(from ClosureFactory), got {type(closure).__name__}"
            )
        shared, group = self.shared, self.param_groups[0]
        if not shared["started"]:
            loss = self._evaluate(closure)
            self._new_line()
            shared["started"] = True
            self._report(shared["effective_lr"], self._flags[False])
            return loss

        t = self._next_position(self._gp())
        move_along(
            self._line_params(),
            [self.state[p]["direction"] for p in self._line_params()],
            (t - shared["t"]) * shared["alpha0"],
        )
        shared["t"] = t
        loss = self._evaluate(closure)
        self._observe()
        accept = shared["abort_status"] == 2
        if not accept and shared["abort_status"] == 0:
            wolfe = self._gp().wolfe_probability(t, group["armijo_constant"], group["df_lo"], group["df_hi"])
            accept = wolfe >= group["acceptance_threshold"]
        if accept:
            alpha = self._accept()
            self._report(self._scalar(alpha), self._flags[True])
        else:
            self._report(shared["effective_lr"], self._flags[False])
        return loss

    @property
    def step_size(self) -> float:
        """The current α₀ (host float): the step a fresh line tries first."""
        return self.shared["alpha0"]
