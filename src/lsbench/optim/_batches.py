"""The sampled batches behind one multi-batch update, kept once for LABPAL and the noise adaptation.

LABPAL (its measurements and its k-batch training updates) and the noise-adapted line searches
(:mod:`lsbench.optim.noise`) make one update from several sampled batches, one ``step`` call per batch. Between
those calls both need the same things, which :class:`BatchGroup` keeps:

* the closures of the group so far, to evaluate all of them again at other parameters (:meth:`BatchGroup.losses`);
* per-parameter sums of the batches' gradients. They live in the optimizer's per-parameter state, under a key the
  owner chooses, so that a checkpoint taken in the middle of a group carries them. A parameter that receives no
  gradient from some batch counts as a zero gradient there;
* checkpointing of the closures: :meth:`BatchGroup.snapshot` turns them into ``closure.snapshot()`` dictionaries
  for ``state_dict``, and after :meth:`BatchGroup.load` the next closure the optimizer is given rebuilds them with
  ``closure.replay(snapshot)`` (:meth:`BatchGroup.resume`; :class:`lsbench.optim.closure.BatchClosure` provides
  both), so a resumed group continues bit-identically.

Loss sums are not kept here: LABPAL averages only the finite losses of a measurement, the noise adaptation all
losses of a group, and each keeps its own 0-d sum in its optimizer-wide state.

Nothing in this module reads a tensor value on the host, and nothing calls a closure except :meth:`losses`.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lsbench.optim._linesearch import Closure


def stack_losses(closures: Sequence[Closure], evaluate: Callable[[Closure], Tensor] | None = None) -> Tensor:
    """The losses of ``closures`` at the current parameters, as one 1-d tensor (``evaluate(c)``, default ``c()``)."""
    return torch.stack([closure() if evaluate is None else evaluate(closure) for closure in closures])


class BatchGroup:
    """The closures and gradient sums of the batches collected towards one update; see the module docstring.

    ``grad_key`` names the per-parameter state entry of the gradient sums; ``what`` names the group in error
    messages (e.g. "a running LABPAL measurement").
    """

    def __init__(self, grad_key: str, what: str) -> None:
        self.grad_key = grad_key
        self.what = what
        self.closures: list[Closure] = []
        self._pending: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.closures)

    # -- closures ---------------------------------------------------------------------------------------------

    def add(self, closure: Closure) -> None:
        self.closures.append(closure)

    def clear(self) -> None:
        """Forget the closures (the gradient sums are dropped by the next group's first :meth:`add_gradients`)."""
        self.closures = []

    def take(self) -> list[Closure]:
        """The closures, leaving the group empty."""
        closures, self.closures = self.closures, []
        return closures

    def losses(self, evaluate: Callable[[Closure], Tensor] | None = None) -> Tensor:
        """Every stored closure evaluated again at the current parameters (see :func:`stack_losses`)."""
        return stack_losses(self.closures, evaluate)

    # -- gradient sums ----------------------------------------------------------------------------------------

    def add_gradients(
        self,
        state: MutableMapping[Tensor, dict[str, Any]],
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        first: bool,
    ) -> None:
        """Add one batch's gradients to the sums in ``state`` (an optimizer's per-parameter state).

        ``first`` starts a new group: every sum left in ``state`` (from an earlier or abandoned group) is dropped.
        """
        key = self.grad_key
        if first:
            for entry in state.values():
                entry.pop(key, None)
        sums, added = [], []
        for p, g in zip(params, grads, strict=True):
            if key in state[p]:
                sums.append(state[p][key])
                added.append(g)
            else:
                state[p][key] = g.clone()
        if sums:
            torch._foreach_add_(sums, added)

    def pop_gradients(
        self, state: MutableMapping[Tensor, dict[str, Any]], params: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The parameters of ``params`` that hold a gradient sum (in their order) and the sums, removed."""
        key = self.grad_key
        summed = [p for p in params if p in state and key in state[p]]
        return summed, [state[p].pop(key) for p in summed]

    # -- checkpointing ----------------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """``closure.snapshot()`` of every stored closure, for the owner's ``state_dict``."""
        snapshots = []
        for closure in self.closures:
            if not hasattr(closure, "snapshot"):
                raise TypeError(
                    f"{self.what} can only be saved if its closures provide snapshot()/replay(); "
                    "build closures with lsbench.optim.ClosureFactory"
                )
            snapshots.append(closure.snapshot())
        return snapshots

    def load(self, snapshots: Sequence[dict[str, Any]]) -> None:
        """Forget the closures and rebuild them from ``snapshots`` at the next :meth:`resume`."""
        self.closures = []
        self._pending = list(snapshots)

    def resume(self, closure: Closure) -> None:
        """After :meth:`load`: rebuild the saved closures with ``closure.replay``; otherwise do nothing."""
        snapshots, self._pending = self._pending, None
        if snapshots is None:
            return
        if snapshots and not hasattr(closure, "replay"):
            raise TypeError(f"resuming {self.what} needs closures with replay(); use lsbench.optim.ClosureFactory")
        self.closures = [closure.replay(s) for s in snapshots]  # type: ignore[attr-defined]
