"""``lsbench train``: one training job from the command line.

    python -m lsbench train --problem digits_mlp --optimizer pal --set measuring_step_size=0.1 \\
        --seed 1 --steps 300 --eval-every 100 --checkpoint-every 50 --out runs/pal

Rerunning the same command with the same ``--out`` resumes from the newest checkpoint there. The same options
work as ``python -m lsbench.train.cli …`` without the subcommand.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from lsbench.lines.arrays import ArraysMismatchError
from lsbench.runs.spec import DEFAULT_KIND, DEFAULT_PRECISION, KINDS, PRECISIONS
from lsbench.sweep.protocol import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from lsbench.train.device import DeviceUnavailableError
from lsbench.train.precision import check_precision_supported
from lsbench.train.trainer import CheckpointMismatchError, TrainConfig, TrainResult, train

__all__ = ["add_train_parser", "main", "run_train"]

_DESCRIPTION = "Train one problem with one optimizer; resumes from a checkpoint in --out."


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand; its handler is ``args.handler = run_train``."""
    parser = subparsers.add_parser("train", help=_DESCRIPTION, description=_DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(handler=run_train)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--problem", required=True, help="problem name, e.g. digits_mlp")
    parser.add_argument("--optimizer", required=True, help="optimizer grid name, e.g. pal")
    parser.add_argument(
        "--set",
        dest="hparams",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        type=_key_value,
        help="optimizer hyperparameter (repeatable); VALUE is YAML, e.g. 0.1, 1e-3, true, null, [[0, 1]]",
    )
    parser.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    parser.add_argument("--steps", type=int, help="step budget (default: the problem's)")
    parser.add_argument("--eval-every", type=int, help="evaluation interval (default: the problem's)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the problem's)")
    parser.add_argument("--weight-decay", type=float, help="L2 coefficient (default: the problem's)")
    parser.add_argument("--checkpoint-every", type=int, help="checkpoint interval in steps (default: none)")
    parser.add_argument("--out", type=Path, help="run directory: checkpoints, result.json, metrics.jsonl")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N or auto (default cpu); auto requires CUDA when CUDA_VISIBLE_DEVICES names a GPU",
    )
    parser.add_argument("--data-dir", help="dataset root for CIFAR problems")
    parser.add_argument("--split", default="default", help="train/validation split rule: default or labpal")
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        help=f"numerics of the training passes: {', '.join(PRECISIONS)} (default {DEFAULT_PRECISION})",
    )
    parser.add_argument(
        "--kind", default=DEFAULT_KIND, help=f"what the run does: {', '.join(KINDS)} (default {DEFAULT_KIND})"
    )
    parser.add_argument(
        "--scan",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        type=_key_value,
        help="a linescan setting (repeatable; with --kind linescan and --out), e.g. every=10, per_sample=true",
    )


def _key_value(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` with a YAML value.

    PyYAML follows YAML 1.1, which reads ``1e-3`` (no dot) as a string; such a value is taken as the number
    it obviously is, so ``--set lr=1e-3`` works.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"{key}: cannot parse {raw!r} as YAML ({error})") from None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                value = number
    return key.strip(), value


def run_train(args: argparse.Namespace) -> int:
    """Run the job described by parsed arguments; print a one-line summary. Returns the exit code.

    Invalid problems, optimizers, hyperparameters, a precision the device cannot run and a checkpoint of another
    run in ``--out`` are usage errors: one line on stderr, exit code 2. A GPU that is asked for (``--device cuda``,
    or ``auto`` under a ``CUDA_VISIBLE_DEVICES`` naming one) but unusable is one line on stderr and exit code 1,
    before anything is trained. An error raised while training is not bad input: it propagates (traceback, exit
    code 1). A diverged run is a valid result and exits with 0.
    """
    try:
        config = TrainConfig.create(
            args.problem,
            args.optimizer,
            dict(args.hparams),
            args.seed,
            steps=args.steps,
            eval_every=args.eval_every,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            split=args.split,
            precision=args.precision,
            kind=args.kind,
            linescan=dict(args.scan),
            checkpoint_every=args.checkpoint_every,
            device=args.device,
            data_dir=args.data_dir,
        )
        config = config.resolved()
        check_precision_supported(config.run.precision, torch.device(config.device))
        if config.run.kind == "linescan" and args.out is None:
            raise ValueError("--kind linescan writes its lines into the run directory: give --out")
    except DeviceUnavailableError as error:
        print(f"lsbench train: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as error:
        return _bad_input(error)
    try:
        result = train(config, args.out)
    except (CheckpointMismatchError, ArraysMismatchError) as error:
        return _bad_input(error)
    print(_summary_line(config, result))
    return EXIT_OK


def _bad_input(error: Exception) -> int:
    print(f"lsbench train: error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _summary_line(config: TrainConfig, result: TrainResult) -> str:
    summary = result.summary()
    status = summary["status"]
    if result.diverged_at_step is not None:
        status += f" at step {result.diverged_at_step}"
    return (
        f"{config.run.problem} {config.run.optimizer} seed {config.run.seed}: {status}, {summary['steps']} steps, "
        f"train loss {summary['train_loss']:.4g}, val acc {summary['val_acc']:.4f}, "
        f"test acc {summary['test_acc']:.4f}, mean lr {summary['mean_effective_lr']:.4g}, "
        f"{summary['seconds']:.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lsbench.train.cli``: the ``train`` subcommand's options without the subcommand."""
    parser = argparse.ArgumentParser(prog="python -m lsbench.train.cli", description=_DESCRIPTION)
    _add_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
