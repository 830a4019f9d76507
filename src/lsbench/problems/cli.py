"""``lsbench data``: which datasets are where the runs will read them, and fetching those that can be fetched.

    lsbench data check [NAME ...] [--data-dir DIR] [--json]
    lsbench data download NAME [--data-dir DIR]

The data directory is ``--data-dir``, else ``$LSBENCH_DATA``, else ``~/.lsbench/data`` -- what workers of the local
pool read; on a cluster, check the profile's ``data_dir`` with ``--data-dir``. ``check`` exits 1 when a dataset it
was asked about by name is missing. ``download`` uses torchvision's downloaders (CIFAR-10/100, SVHN, MNIST) and so
needs network access to the datasets' hosts; ImageNet and Tolstoi are put in place by hand. The work is in
:mod:`lsbench.problems.sources`; this module parses and formats.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lsbench.problems import sources
from lsbench.sweep.protocol import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK

__all__ = ["add_data_parser"]


def _data_dir(args: argparse.Namespace) -> tuple[Path, str]:
    if args.data_dir:
        return Path(args.data_dir).expanduser(), "--data-dir"
    return sources.default_data_dir(), sources.data_dir_origin()


def _state(status: sources.DatasetStatus) -> str:
    if status.kind == "bundled":
        return "bundled"
    if status.kind == "generated":
        return "generated"
    return "present" if status.present else "missing"


def cmd_check(args: argparse.Namespace) -> int:
    data_dir, origin = _data_dir(args)
    names = args.names or list(sources.SOURCES)
    try:
        statuses = [sources.dataset_status(name, data_dir) for name in names]
    except sources.DataError as error:
        print(f"lsbench data: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({"data_dir": str(data_dir), "datasets": [s.to_json() for s in statuses]}, indent=2))
    else:
        print(f"data directory: {data_dir} ({origin})")
        width = max(len(s.name) for s in statuses)
        for status in statuses:
            source = sources.SOURCES[status.name]
            if status.path is None:
                where = source.how
            elif status.present:
                where = str(status.path)
            else:
                get = f"lsbench data download {status.name}" if source.kind == "download" else source.how
                where = f"no {status.path} ({get})"
            print(f"{status.name:<{width}}  {_state(status):<9}  splits: {', '.join(status.splits):<15}  {where}")
    missing = any(not status.present for status in statuses)
    return EXIT_FAILURE if args.names and missing else EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    data_dir, _ = _data_dir(args)
    try:
        before = sources.dataset_status(args.name, data_dir)
        status = sources.download(args.name, data_dir)
    except sources.DataError as error:
        print(f"lsbench data: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except sources.DownloadFailed as error:
        print(f"lsbench data: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    if status.path is None:
        print(f"{status.name}: {sources.SOURCES[status.name].how}; nothing to download")
    elif before.present:
        print(f"{status.name}: already in {status.path}")
    else:
        print(f"{status.name}: downloaded to {status.path}")
    return EXIT_OK


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data check`` and ``data download`` to the ``lsbench`` command."""
    text = "which datasets are present, and fetching those torchvision can download"
    data = subparsers.add_parser("data", help=text, description=text)
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")
    data.set_defaults(handler=lambda args: _usage(data))

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--data-dir", default=None, help="the data directory (default: $LSBENCH_DATA, else ~/.lsbench/data)"
        )
        return parser

    check = command("check", "list which datasets are in the data directory (exit 1 if one named is missing)")
    names = ", ".join(sources.SOURCES)
    check.add_argument("names", nargs="*", metavar="NAME", help=f"datasets (default: all; {names})")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=cmd_check)

    download = command("download", "fetch a dataset with torchvision's downloader (needs network access)")
    download.add_argument("name", metavar="NAME", help=", ".join(sources.SOURCES))
    download.set_defaults(handler=cmd_download)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_BAD_INPUT
