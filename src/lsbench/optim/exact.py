"""An exact line search on the mini-batch loss (thesis Section 4.6, Figure 4.12).

The thesis compares PAL with "an inefficient binary line search, which measured up to 20 values on each line to
estimate the position of a minimum" of the mini-batch loss along the negative gradient, and finds that such an
exact search optimizes poorly. Its code is not published; :class:`ExactLineSearch` is this package's design of
that search (see the class docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from lsbench.optim._hparams import COUNT, NON_NEGATIVE, POSITIVE, Range, check_ranges
from lsbench.optim._linesearch import (
    Closure,
    LineSearchOptimizer,
    flat_norm,
    restore,
    set_along,
    snapshot,
)

GOLDEN_FRACTION = (3.0 - math.sqrt(5.0)) / 2.0
"""0.381966...: a golden-section probe sits this fraction of the larger part of the bracket away from its best
point, so that every probe shrinks the bracket by the same factor 0.618 (the golden ratio's inverse)."""

GROWTH = 2.0
"""Factor by which the bracketing phase doubles its trial step (the "binary" part of the thesis' search)."""


class LineMinimum(NamedTuple):
    """What :func:`minimize_on_line` found.

    Attributes:
        step: the position ``s*`` of the lowest loss measured (0 if nothing lower than the origin was found).
        loss: the loss there.
        evaluations: probes spent (loss evaluations beyond the known value at the origin).
        bracket: width of the final interval known to contain the minimum found (for ``step`` 0, the interval
            next to the origin that the budget left unexplored; ``inf`` when the budget ran out while the line was
            still descending).
    """

    step: float
    loss: float
    evaluations: int
    bracket: float


def _parabola_vertex(a: float, fa: float, b: float, fb: float, c: float, fc: float) -> float | None:
    """Position of the vertex of the parabola through three points, or None if it has none (collinear)."""
    left, right = (b - a) * (fb - fc), (b - c) * (fb - fa)
    denominator = left - right
    if denominator == 0 or not math.isfinite(denominator):
        return None
    vertex = b - 0.5 * ((b - a) * left - (b - c) * right) / denominator
    return vertex if math.isfinite(vertex) else None


def minimize_on_line(
    loss_at: Callable[[float], float],
    loss_0: float,
    *,
    initial_step: float,
    max_step: float,
    max_evaluations: int,
) -> LineMinimum:
    r"""Locate a minimum of :math:`l(s)` on :math:`[0, s_{max}]` with at most ``max_evaluations`` probes.

    :math:`l(0)` = ``loss_0`` is known and :math:`l` is assumed to descend at 0 (the line follows the negative
    gradient). Non-finite values count as :math:`+\infty`, i.e. "too far".

    1. **Bracketing.** Probe :math:`s_1` = ``initial_step`` (at most :math:`s_{max}`). If :math:`l(s_1) < l(0)`,
       double the step (capped at :math:`s_{max}`) while the loss keeps decreasing; the last three steps
       :math:`a < b < c` then satisfy :math:`l(b) < l(a)` and :math:`l(b) \le l(c)`, so a minimum lies in
       :math:`(a, c)`. If the loss still decreases at :math:`s_{max}`, a minimum on :math:`[0, s_{max}]` lies in
       :math:`(a, s_{max}]`: probe a fraction 0.382 of the interval below :math:`s_{max}` and move :math:`a` up to
       the probe until one is lower than :math:`l(s_{max})`, which gives the triple :math:`(a, b, s_{max})`; if the
       budget runs out first, the result is :math:`s_{max}`. If :math:`l(s_1) \ge l(0)`, a minimum lies in
       :math:`(0, s_1)`: probe the golden-section point :math:`0.382\,c` of :math:`(0, c)` and shrink :math:`c`
       to it until a probe is lower than :math:`l(0)`, which gives the triple :math:`(0, b, c)`; if the budget runs
       out first, the result is 0 (no point lower than the origin was found).
    2. **Golden-section search.** Probe the point a fraction 0.382 into the larger of :math:`(a, b)` and
       :math:`(b, c)` and keep the sub-triple around the lower of the two middle values; every probe shrinks
       the bracket by about 0.618.
    3. **Parabolic step.** The last probe of the budget goes to the vertex of the parabola through
       :math:`(a, b, c)` (inside the bracket, because :math:`l(b)` is the lowest of the three); near a smooth
       minimum it is far more accurate than one more golden step, on a quadratic it is exact.

    The result is the lowest point measured (always the middle of the final triple), so the search returns a
    minimum of the measured function to the resolution of its final bracket; the search stops early when the
    bracket can no longer be split in floating point.
    """
    evaluations = 0

    def measure(step: float) -> float:
        nonlocal evaluations
        evaluations += 1
        value = float(loss_at(step))
        return value if math.isfinite(value) else math.inf

    # 1. Bracketing: find a < b < c with l(b) < l(a) and l(b) <= l(c).
    a, fa = 0.0, loss_0
    b = min(initial_step, max_step)
    fb = measure(b)
    if fb < fa:
        # Descending: double the step while the loss keeps decreasing.
        while b < max_step:
            if evaluations >= max_evaluations:
                return LineMinimum(b, fb, evaluations, math.inf)
            c = min(GROWTH * b, max_step)
            fc = measure(c)
            if not fc < fb:
                break
            a, fa, b, fb = b, fb, c, fc
        else:
            # Still descending at the cap: a minimum on [0, s_max] lies in (a, s_max]; close in on the cap until
            # a probe is lower than the cap's loss.
            c, fc = b, fb
            while True:
                b = c - GOLDEN_FRACTION * (c - a)
                if evaluations >= max_evaluations or not a < b < c:
                    return LineMinimum(c, fc, evaluations, c - a)
                fb = measure(b)
                if fb < fc:
                    break
                a, fa = b, fb
    else:
        # Not lower than the origin: a minimum lies in (0, b); shrink towards the origin until a probe is lower
        # than the origin's loss.
        c, fc = b, fb
        while True:
            b = GOLDEN_FRACTION * c
            if evaluations >= max_evaluations or not 0.0 < b < c:
                return LineMinimum(0.0, loss_0, evaluations, c)
            fb = measure(b)
            if fb < fa:
                break
            c, fc = b, fb

    # 2./3. Golden-section search in (a, c), the last probe a parabolic step.
    while evaluations < max_evaluations:
        probe = None
        if evaluations == max_evaluations - 1:
            vertex = _parabola_vertex(a, fa, b, fb, c, fc)
            if vertex is not None and a < vertex < c and vertex != b:
                probe = vertex
        if probe is None:
            probe = b + GOLDEN_FRACTION * (c - b) if c - b > b - a else b - GOLDEN_FRACTION * (b - a)
        if not a < probe < c or probe == b:
            break  # the bracket cannot be split any further in floating point
        value = measure(probe)
        if probe > b:
            if value < fb:
                a, fa, b, fb = b, fb, probe, value
            else:
                c, fc = probe, value
        elif value < fb:
            c, fc, b, fb = b, fb, probe, value
        else:
            a, fa = probe, value
    return LineMinimum(b, fb, evaluations, c - a)


class ExactLineSearch(LineSearchOptimizer):
    r"""Exact line search on the mini-batch loss along the normalized negative gradient (thesis Sec. 4.6).

    Each step computes the batch gradient :math:`g` at :math:`\theta_0`, defines the line
    :math:`l(s) = \ell_{\mathbb{B}}(\theta_0 + s\,d)` with the unit direction :math:`d = -g/\lVert g\rVert` (so
    :math:`s` is a distance in parameter space and :math:`l'(0) = -\lVert g\rVert < 0`) and searches it for a
    minimum with at most ``max_evaluations`` forward passes of the same batch (:func:`minimize_on_line`):
    bracketing by doubling a trial step from ``initial_step_size`` (capped at ``max_step_size``), golden-section
    search inside the bracket, and a parabolic step through the final bracket as the last probe. The update is
    :math:`\theta \leftarrow \theta_0 + s^*d`, with :math:`s^*` the lowest point measured.

    **Why "exact".** :math:`s^*` lies in the final bracket, an interval that contains a minimum of :math:`l`;
    every golden-section probe shrinks it by 0.618, so with the default 20 probes (typically 3 to 8 of them spent
    on bracketing) it ends at about :math:`10^{-3}` of its size after bracketing, and the closing parabolic step
    refines that to the accuracy of a quadratic model of :math:`l` -- on a quadratic, to rounding error. The
    directional derivative of the batch loss at the new point therefore vanishes up to that resolution: the new
    batch gradient is orthogonal to the step, the property Figure 4.12 plots (the angle between direction and
    gradient at the update point is 90°). The search finds *a* local minimum -- the first one along the line,
    reached by doubling -- not necessarily the global one. The thesis' own implementation ("an inefficient binary
    line search") is not published; doubling plus golden-section is this package's reading of it, with the same
    budget of up to 20 measured values.

    Cases where no minimum is bracketed:

    * the loss still decreases at ``max_step_size``: the search closes in on the cap from below and continues as
      above once a probe is lower than the cap's loss, or takes ``max_step_size`` when the budget runs out first;
    * the budget runs out while still doubling: the step is the last (lowest) probe;
    * no probe below the origin's loss was found (the shrinking phase spent the budget, e.g. on a flat or noisy
      line): no update;
    * a non-finite loss at the origin, or :math:`\lVert g\rVert <` ``min_gradient_norm``: no update.

    Probe losses that are NaN or infinite count as :math:`+\infty`, so the search backs away from them.

    Closure calls per step: 1 with backward, then one forward-only call per probe -- ``max_evaluations`` of
    them unless the search stops early (at the cap, or when the bracket cannot be split further). The closures of
    :class:`~lsbench.optim.closure.ClosureFactory` keep the probes from changing BatchNorm running statistics.
    Every probe decides the next one on the host, so a step synchronizes once per probe, like SLS' backtracking.

    Reported effective learning rate: :math:`s^*/\lVert g\rVert`, the learning rate of the SGD step that lands on
    the same point (0 without an update). :attr:`last_evaluations` is the number of probes of the last step.

    Args:
        params: the parameters to optimize (one group).
        initial_step_size: the first trial distance along the unit direction on every line (default 0.1).
        max_step_size: cap on the distance :math:`s^*` (default 10).
        max_evaluations: probes per line (default 20, the thesis' "up to 20 values on each line").
        min_gradient_norm: below this gradient norm no step is taken (default 1e-12).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "initial_step_size": POSITIVE,
        "max_step_size": POSITIVE,
        "max_evaluations": COUNT,
        "min_gradient_norm": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        initial_step_size: float = 0.1,
        max_step_size: float = 10.0,
        max_evaluations: int = 20,
        min_gradient_norm: float = 1e-12,
    ) -> None:
        check_ranges(ExactLineSearch.RANGES, locals())
        defaults = {
            "initial_step_size": initial_step_size,
            "max_step_size": max_step_size,
            "max_evaluations": max_evaluations,
            "min_gradient_norm": min_gradient_norm,
        }
        super().__init__(params, defaults)
        self.shared["evaluations"] = 0

    @property
    def last_evaluations(self) -> int:
        """Probes (forward passes beyond the one with backward) of the last step."""
        return self.shared["evaluations"]

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:  # type: ignore[override]
        group = self.param_groups[0]
        loss_0 = self._loss_and_grad(closure)
        params, grads = self._params_with_grad()
        grad_norm = flat_norm(grads)
        loss_value, norm_value = torch.stack([loss_0.double(), grad_norm.double()]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value) and norm_value > 0) or (
            norm_value < group["min_gradient_norm"]
        ):
            self.shared["evaluations"] = 0
            self._report(torch.zeros_like(grad_norm), self._flags[False])
            return loss_0

        origin = snapshot(params)

        def loss_at(distance: float) -> float:
            set_along(params, origin, grads, -distance / norm_value)
            return self._loss(closure).item()

        found = minimize_on_line(
            loss_at,
            loss_value,
            initial_step=group["initial_step_size"],
            max_step=group["max_step_size"],
            max_evaluations=group["max_evaluations"],
        )
        self.shared["evaluations"] = found.evaluations
        if found.step > 0:
            set_along(params, origin, grads, -found.step / norm_value)
            self._report(torch.full_like(grad_norm, found.step / norm_value), self._flags[True])
        else:
            restore(params, origin)
            self._report(torch.zeros_like(grad_norm), self._flags[False])
        return loss_0
