"""A sweep directory written straight into a store, shaped like the demo sweep: known values, fast to make."""

import math
from pathlib import Path

from lsbench.runs import RunSpec
from lsbench.store import Store
from lsbench.sweep.layout import SweepDir

PROBLEMS = ("digits_mlp", "cifar10_resnet32")
OPTIMIZERS = ("sgd", "adam", "pal")
LRS = (1.0, 0.1, 0.01)
SEEDS = (1, 2)


def make_sweep(root: Path, name: str = "synthetic") -> SweepDir:
    """2 problems × 3 optimizers × 3 points × 2 seeds; lr 1.0 of pal diverges, one adam run failed, six points of
    evaluation per run; seconds per step: sgd 0.1, adam 0.12, pal 0.2."""
    sweep = SweepDir(root / name)
    sweep.path.mkdir(parents=True)
    url = sweep.default_store_url()
    sweep.write_meta({"name": name, "grid_hash": "0" * 64, "store": url, "backend": "local"})
    store = Store(url)
    store.upsert_sweep(name, "0" * 64, "", str(sweep.path), "local")
    specs = [
        RunSpec(f"{name[:4]}{p}{o}{k}{s}", problem, optimizer, {"lr": lr}, seed, 600, 100, 32, 0.0)
        for p, problem in enumerate(PROBLEMS)
        for o, optimizer in enumerate(OPTIMIZERS)
        for k, lr in enumerate(LRS)
        for s, seed in enumerate(SEEDS)
    ]
    store.add_runs(name, specs)
    per_step = {"sgd": 0.1, "adam": 0.12, "pal": 0.2}
    for spec in specs:
        quality = 1.0 - abs(math.log10(spec.hparams["lr"]) + 1) / 3 + 0.01 * spec.seed
        if spec.optimizer == "pal" and spec.hparams["lr"] == 1.0:
            steps, status = 200, "diverged"
        elif spec.optimizer == "adam" and spec.hparams["lr"] == 0.01 and spec.seed == 2:
            store.set_run_status(spec.run_id, "failed")
            continue
        else:
            steps, status = 600, "completed"
        points = range(100, steps + 1, 100)
        curve = {
            "train_loss": lambda t, q=quality: 2.0 * math.exp(-q * t / 150),
            "val_acc": lambda t, q=quality: 0.9 * q * (1 - math.exp(-t / 150)),
            "test_acc": lambda t, q=quality: 0.88 * q * (1 - math.exp(-t / 150)),
            "mean_effective_lr": lambda t, lr=spec.hparams["lr"]: lr * (1 + 100 / t),
        }
        store.add_metrics_many((spec.run_id, t, key, f(t)) for t in points for key, f in curve.items())
        final = {key: f(steps) for key, f in curve.items()}
        if status == "diverged":
            final["train_loss"] = math.nan
        final["seconds"] = per_step[spec.optimizer] * steps
        store.set_run_status(spec.run_id, status, summary=final, step=steps)
    store.close()
    return sweep
