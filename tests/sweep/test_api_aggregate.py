"""`sweep aggregate` statistics on runs written straight into a store, diverged and failed runs included."""

import numpy as np
import pytest

from lsbench.report import aggregate
from lsbench.store import Store
from lsbench.sweep.api import sweep_outcomes
from lsbench.sweep.plan import RunSpec

# (lr, seed) -> (status, train loss, validation accuracy, test accuracy)
RESULTS = {
    (0.1, 1): ("completed", 0.30, 0.80, 0.78),
    (0.1, 2): ("completed", 0.50, 0.84, 0.80),
    (0.01, 1): ("completed", 0.90, 0.70, 0.69),
    (0.01, 2): ("diverged", float("nan"), 0.10, 0.10),
    (0.001, 1): ("diverged", float("nan"), 0.10, 0.10),
    (0.001, 2): ("diverged", float("nan"), 0.10, 0.10),
    (0.5, 1): ("completed", 0.20, 0.60, 0.61),
    (0.5, 2): ("failed", float("nan"), float("nan"), float("nan")),
}


def test_aggregate_matches_a_hand_computation(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/store.sqlite")
    specs = {key: RunSpec.create("digits_mlp", "sgd", {"lr": key[0]}, seed=key[1]) for key in RESULTS}
    store.upsert_sweep("hand", "0" * 64, "", str(tmp_path), "local")
    store.add_runs("hand", list(specs.values()))
    for key, (status, loss, val, test) in RESULTS.items():
        store.set_run_status(specs[key].run_id, status, summary={"train_loss": loss, "val_acc": val, "test_acc": test})

    (row,) = aggregate(sweep_outcomes(store, "hand"))
    # per point, means over completed seeds (loss, val, test): lr 0.1 -> (0.4, 0.82, 0.79);
    # lr 0.01 -> (0.9, 0.7, 0.69); lr 0.5 -> (0.2, 0.6, 0.61); lr 0.001 diverged on every seed
    losses = [0.4, 0.9, 0.2]
    assert (row.points, row.runs, row.completed, row.diverged, row.failed) == (3, 8, 4, 3, 1)
    assert row.train_loss_min == pytest.approx(0.2)
    assert (row.train_loss_median, row.train_loss_p25, row.train_loss_p75) == pytest.approx(
        (np.median(losses), np.percentile(losses, 25), np.percentile(losses, 75))
    )
    assert row.val_acc_max == pytest.approx(0.82)
    assert (row.val_acc_p25, row.val_acc_p75) == pytest.approx((0.65, 0.76))
    assert (row.test_acc_max, row.test_acc_median) == pytest.approx((0.79, 0.69))
    assert row.best_hparams["lr"] == 0.1 and row.best_test_acc == pytest.approx(0.79)
    assert row.varied == ("lr",)
    store.close()
