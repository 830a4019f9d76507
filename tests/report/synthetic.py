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


VARY_GRID = """name: {name}
problems: [digits_mlp]
seeds: [1, 2]
optimizers:
  sgd:
    fixed: {{lr: 0.1, momentum: 0.9}}
    vary:
      lr: [0.01, 1.0]
      momentum: [0.0, 0.5]
  adam:
    grid:
      lr: [0.01, 0.001]
"""


def make_vary_sweep(root: Path, name: str = "vary") -> SweepDir:
    """A sweep whose grid.yaml varies sgd's lr and momentum one at a time around (0.1, 0.9), next to a 2-point adam
    grid; the sgd point lr=1.0 diverges on both seeds, validation accuracy 0.5 + lr / 10 + momentum / 10 otherwise."""
    from lsbench.sweep.grid import load_grid

    sweep = SweepDir(root / name)
    sweep.path.mkdir(parents=True)
    sweep.grid_file.write_text(VARY_GRID.format(name=name))
    grid = load_grid(sweep.grid_file)
    url = sweep.default_store_url()
    sweep.write_meta({"name": name, "grid_hash": "0" * 64, "store": url, "backend": "local"})
    store = Store(url)
    store.upsert_sweep(name, "0" * 64, "", str(sweep.path), "local")
    specs = [
        RunSpec(f"{optimizer}{k}s{seed}", "digits_mlp", optimizer, point, seed, 600, 100, 32, 0.0)
        for optimizer, section in grid.optimizers.items()
        for k, point in enumerate(section.points)
        for seed in grid.seeds
    ]
    store.add_runs(name, specs)
    for spec in specs:
        lr, momentum = spec.hparams["lr"], spec.hparams.get("momentum", 0.0)
        val = 0.5 + lr / 10 + momentum / 10
        status = "diverged" if spec.optimizer == "sgd" and lr == 1.0 else "completed"
        summary = {"train_loss": math.nan if status == "diverged" else 1.0 - val, "val_acc": val, "test_acc": val}
        store.set_run_status(spec.run_id, status, summary={**summary, "seconds": 60.0}, step=600)
    store.close()
    return sweep
