"""``lsbench demo``: train the digits problem with SGD and the line searches and print a side-by-side table.

This is the embedded default end to end on a laptop CPU: scikit-learn's digits (shipped with the package, no
download), the step-based trainer and every line search of the thesis' comparison, in well under a minute.
The hyperparameters are the thesis defaults except where digits needs otherwise (noted per run).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from lsbench.train import TrainConfig, TrainResult, train

PROBLEM = "digits_mlp"


@dataclass(frozen=True)
class DemoRun:
    label: str
    optimizer: str
    hparams: dict[str, Any] = field(default_factory=dict)


DEMO_RUNS = (
    DemoRun("SGD", "sgd", {"lr": 0.1}),
    DemoRun("PAL", "pal", {"measuring_step_size": 0.1, "update_step_adaptation": 1.0}),
    DemoRun("LABPAL&NSGD", "labpal_nsgd"),
    # With the published estimator (about twice the vertex) and α = 1.8, the fixed learning rate of the first
    # measurement is too large for this small MLP; α = 1 keeps the published estimator.
    DemoRun("LABPAL&SGD", "labpal_sgd", {"update_step_adaptation": 1.0}),
    DemoRun("SLS", "sls"),
)


def run_demo(seed: int = 1, problem: str = PROBLEM) -> list[tuple[DemoRun, TrainResult]]:
    """Train every demo run on ``problem`` and return the results in table order."""
    return [(run, train(TrainConfig.create(problem, run.optimizer, dict(run.hparams), seed=seed))) for run in DEMO_RUNS]


def format_table(results: list[tuple[DemoRun, TrainResult]]) -> str:
    header = f"{'optimizer':<13}{'train loss':>11}{'val acc':>9}{'test acc':>9}{'mean lr':>10}{'seconds':>9}  status"
    lines = [header, "-" * len(header)]
    for run, result in results:
        summary = result.summary()
        lines.append(
            f"{run.label:<13}{summary['train_loss']:>11.4f}{summary['val_acc']:>9.3f}{summary['test_acc']:>9.3f}"
            f"{summary['mean_effective_lr']:>10.4f}{summary['seconds']:>9.1f}  {summary['status']}"
        )
    return "\n".join(lines)


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train digits with SGD, PAL, LABPAL and SLS and print a table")
    parser.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    parser.set_defaults(handler=_run_demo_command)


def _run_demo_command(args: argparse.Namespace) -> int:
    print(f"lsbench demo: {PROBLEM}, seed {args.seed}, thesis step accounting (one step = one sampled batch)")
    print(format_table(run_demo(seed=args.seed)))
    return 0
