"""Command-line interface: a thin layer that parses arguments, calls the library and formats the result.

Exit codes: 0 success, 1 failure, 2 bad input (with a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lsbench import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lsbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from lsbench.demo import add_demo_parser
    from lsbench.info import add_info_parser
    from lsbench.problems.cli import add_data_parser
    from lsbench.sweep.cli import add_commands
    from lsbench.sweep.worker import add_worker_parser
    from lsbench.train.cli import add_train_parser

    add_train_parser(subparsers)
    add_demo_parser(subparsers)
    add_info_parser(subparsers)
    add_data_parser(subparsers)
    add_worker_parser(subparsers)
    sweep = subparsers.add_parser("sweep", help="plan, submit, watch and aggregate sweeps (same as `sweep ...`)")
    add_commands(sweep.add_subparsers(dest="sweep_command", metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lsbench.sweep.cli import build_parser as sweep_parser
    from lsbench.sweep.cli import dispatch

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sweep"]:
        # Only the sweep commands' parser: the other commands' modules import torch (about 2 s), which status,
        # aggregate and report on a login node -- and `make demo` after its training -- never need.
        parser = sweep_parser(prog="lsbench sweep")
        return dispatch(parser, parser.parse_args(args[1:]))
    parser = build_parser()
    return dispatch(parser, parser.parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
