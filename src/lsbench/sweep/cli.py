"""``sweep``: plan, submit, watch, aggregate, resubmit and cancel sweeps.

    sweep submit GRID [--backend local|slurm] [--profile PROFILE] [--dry-run] [--json] [--wait]
    sweep status NAME [--json]
    sweep aggregate NAME [--format text|md|csv|latex | --json]
    sweep resubmit NAME [--failed] [--missing] [--profile PROFILE] [--wait] [--json]
    sweep cancel NAME [--json]
    sweep list [--json]
    sweep profiles [--json]
    sweep schema grid|profile
    sweep image check [DEFINITION] [--json]
    sweep image build [DEFINITION] [--output IMAGE] [--dry-run]

All state lives under a root directory (``--root``, else ``$LSBENCH_ROOT``, else ``./runs``). A grid path is looked
up in the working directory, then under ``sweeps/``, then among the grids shipped with the package
(``grids/pal_cifar10.yaml``); a profile is a file or the name of a shipped one (``sweep profiles``). Exit codes
(:mod:`lsbench.sweep.protocol`): 0 ok, 1 failure (also: a run waited for ended without a result), 2 bad input (one
line on stderr, and nothing written or queued).

Each command parses its arguments, calls :mod:`lsbench.sweep.api` and formats what comes back; the work is there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lsbench.report import TEXT_WIDTH
from lsbench.sweep import api
from lsbench.sweep.backends import BACKENDS, BackendError, BackendInputError
from lsbench.sweep.layout import sweep_root
from lsbench.sweep.protocol import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from lsbench.sweep.status import DEFAULT_STALE_SECONDS

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.progress import Progress, TaskID

# -- output ---------------------------------------------------------------------------------------------------


def _console() -> Console:
    """A rich console on stdout: styled and redrawn in place on a terminal, plain text in a file or pipe."""
    from rich.console import Console

    terminal = sys.stdout.isatty()
    # A log file or pipe has no width of its own: rich would assume 80 columns and wrap the tables, which are laid
    # out for 120 (what the files under reports/ hold in full). $COLUMNS still wins where it is set.
    width = None if terminal or os.environ.get("COLUMNS") else TEXT_WIDTH
    return Console(force_terminal=terminal, width=width, highlight=False, markup=False, emoji=False)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _print_json(value: object) -> None:
    print(json.dumps(_finite(value), indent=2, sort_keys=True, allow_nan=False))


class ProgressView:
    """What ``--wait`` shows: a rich progress bar redrawn in place on a terminal; elsewhere (a log file) one plain
    line per change of the counts, so the log says when each run ended without a line per poll."""

    BAR_WIDTH = 30

    def __init__(self, name: str, console: Console | None = None) -> None:
        self.name = name
        self.console = console or _console()
        self._last_counts = ""
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, progress: api.Progress) -> None:
        eta = "?" if progress.eta is None else f"{progress.eta:.0f}s"
        counts = f"{progress.running} running, {progress.failed} failed"
        if self.console.is_terminal:
            self._draw(progress, counts, eta)
            return
        line = f"{progress.done}/{progress.total} done, {counts}"
        if line != self._last_counts:
            filled = self.BAR_WIDTH * progress.done // progress.total if progress.total else self.BAR_WIDTH
            bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
            self.console.file.write(f"[{bar}] {line}, ETA {eta}\n")
            self.console.file.flush()
            self._last_counts = line

    def _draw(self, progress: api.Progress, counts: str, eta: str) -> None:
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=self.BAR_WIDTH),
                MofNCompleteColumn(),
                TextColumn("done, {task.fields[counts]}, ETA {task.fields[eta]}", markup=False),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.name, total=progress.total, counts=counts, eta=eta)
        assert self._task is not None
        self._bar.update(self._task, completed=progress.done, total=progress.total, counts=counts, eta=eta)


def _wait(name: str, run_ids: Iterable[str], root: str | None, *, quiet: bool) -> api.WaitResult:
    """``api.wait`` with the progress shown (unless ``quiet``, as with ``--json``)."""
    if quiet:
        return api.wait(name, run_ids, root=root)
    with ProgressView(name) as view:
        result = api.wait(name, run_ids, root=root, on_progress=view.update)
    if result.stalled:
        unfinished = result.progress.active
        print(f"no worker is left, {unfinished} runs unfinished; `sweep resubmit {name}` continues them", flush=True)
    return result


def _report_failures(name: str, waited: api.WaitResult | None) -> int:
    """The exit code after ``--wait``: 1, with one line on stderr saying how many, when a run ended without a result
    (a diverged run has one)."""
    if waited is None or waited.ok:
        return EXIT_OK
    progress = waited.progress
    if progress.failed:
        print(
            f"sweep {name}: {progress.failed} of {progress.total} runs failed; `sweep status {name}` shows why, "
            f"`sweep resubmit {name} --failed` runs them again",
            file=sys.stderr,
            flush=True,
        )
    return EXIT_FAILURE


def _estimate_note(profile: Any) -> str:
    """The line under a dry run's estimate that names the profile's GPUs (the estimate is for the reference GPU)."""
    gpu = profile.node.gpu_model
    gpus = f"{profile.node.gpus or profile.gpus_per_node} x {gpu} per node" if gpu else "its GPU model is not stated"
    return f"profile {profile.source} ({profile.backend}): {gpus}; the GPU-hours are not rescaled to it"


# -- commands -------------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    if args.dry_run:
        plan = api.plan(args.grid, root=args.root, backend=args.backend, profile=args.profile)
        summary = plan.summary
        if args.json:
            profile = plan.profile
            shown = None
            if profile is not None:
                node = {"gpus": profile.node.gpus or profile.gpus_per_node, "gpu_model": profile.node.gpu_model}
                shown = {"source": profile.source, "backend": profile.backend, **node}
            _print_json({**summary.to_json(), "warnings": list(summary.warnings), "profile": shown})
        else:
            lines = summary.format_text().splitlines()
            if plan.profile is not None:
                lines.insert(1, _estimate_note(plan.profile))
            print("\n".join(lines))
        return EXIT_OK
    result = api.submit(
        args.grid,
        root=args.root,
        backend=args.backend,
        profile=args.profile,
        workers=args.workers,
        spool=args.spool,
    )
    if not args.json:
        print(
            f"sweep {result.sweep}: {len(result.runs)} runs, {len(result.queued)} queued, {result.finished} already "
            f"finished; {result.action}"
        )
        print(f"  watch: sweep status {result.sweep}    results: sweep aggregate {result.sweep}", flush=True)
    waited = _wait(result.sweep, result.queued, args.root, quiet=args.json) if args.wait and result.queued else None
    if args.json:
        _print_json({**result.to_json(), "wait": waited.to_json() if waited else None})
    return _report_failures(result.sweep, waited)


def cmd_status(args: argparse.Namespace) -> int:
    status = api.status(args.name, root=args.root, stale_after=args.stale_after)
    if args.json:
        _print_json(status.to_json())
    else:
        from lsbench.report.formats import print_blocks

        print_blocks(_console(), status.renderables())
    return EXIT_OK


def cmd_aggregate(args: argparse.Namespace) -> int:
    from lsbench.report.formats import format_table, print_blocks, summary_tables

    rows = api.aggregate(args.name, root=args.root)
    if args.json:
        paths = api.write_reports(args.name, rows, root=args.root)
        reports = {fmt: str(path) for fmt, path in paths.items()}
        _print_json({"sweep": args.name, "rows": [row.to_dict() for row in rows], "reports": reports})
        return EXIT_OK
    if args.format == "text":
        print_blocks(_console(), summary_tables(rows))
    else:
        print(format_table(rows, args.format), end="")
    paths = api.write_reports(args.name, rows, root=args.root)
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return EXIT_OK


def cmd_resubmit(args: argparse.Namespace) -> int:
    result = api.resubmit(
        args.name, failed=args.failed, missing=args.missing, root=args.root, profile=args.profile, workers=args.workers
    )
    if not args.json:
        print(f"sweep {result.sweep}: {len(result.queued)} runs queued again; {result.action}", flush=True)
    waited = _wait(result.sweep, result.queued, args.root, quiet=args.json) if args.wait and result.queued else None
    if args.json:
        _print_json({**result.to_json(), "wait": waited.to_json() if waited else None})
    return _report_failures(result.sweep, waited)


def cmd_cancel(args: argparse.Namespace) -> int:
    result = api.cancel(args.name, root=args.root)
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"sweep {result.sweep}: {result.stopped}; {len(result.cancelled)} runs cancelled")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    sweeps = api.list_sweeps(args.root)
    if args.json:
        _print_json({"root": str(sweep_root(args.root)), "sweeps": [sweep.to_json() for sweep in sweeps]})
        return EXIT_OK
    if not sweeps:
        print(f"no sweeps under {sweep_root(args.root)}")
    for sweep in sweeps:
        running = "active" if sweep.active else "idle"
        print(f"{sweep.name:<32}{sweep.status.finished:>6}/{sweep.status.total:<6} finished   {running}")
    return EXIT_OK


def cmd_profiles(args: argparse.Namespace) -> int:
    listings = api.profiles()
    if args.json:
        _print_json({"profiles": [listing.to_json() for listing in listings]})
        return EXIT_OK
    width = max((len(listing.name) for listing in listings), default=0)
    for listing in listings:
        where = "shipped" if listing.shipped else "cluster/"
        hidden = "" if listing.chosen else f" (not used: cluster/{listing.name}.yaml comes first)"
        if listing.backend is None:
            print(f"{listing.name:<{width}}  {where:<8}  broken: {listing.problem}")
            continue
        gpu = f"; {listing.gpu} per node" if listing.gpu else ""
        print(f"{listing.name:<{width}}  {where:<8}  {listing.backend:<5}  {listing.description}{gpu}{hidden}")
        print(f"{'':<{width}}  {listing.path}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    _print_json(api.schema(args.kind))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    path = api.write_export(args.name, args.format, out=args.out, root=args.root)
    if args.json:
        _print_json({"sweep": args.name, "format": args.format, "path": str(path)})
    else:
        print(f"written: {path}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    result = api.report(args.name, compare=args.compare, out=args.out, root=args.root)
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"{len(result.figures)} figures; open {result.index}")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the sweep commands to ``subparsers`` (used by ``sweep`` and by ``python -m lsbench sweep``)."""

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--root", default=None, help="sweep root directory (default $LSBENCH_ROOT or ./runs)")
        parser.set_defaults(handler=handler)
        return parser

    def json_flag(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, what: str = "") -> None:
        parser.add_argument("--json", action="store_true", help=f"print JSON{what}")

    submit = command("submit", cmd_submit, "plan a grid, record it in the store and start training")
    submit.add_argument(
        "grid", help="grid YAML file (looked up in the working directory, then in sweeps/, then the shipped grids/)"
    )
    submit.add_argument(
        "--backend", choices=BACKENDS, default=None, help="where to run (default: the profile's backend, else local)"
    )
    submit.add_argument(
        "--profile", default=None, help="cluster profile: a YAML file, or a name (sweep profiles lists them)"
    )
    submit.add_argument(
        "--dry-run",
        action="store_true",
        help="print run counts and GPU-hours and check the profile and the data (missing data: a warning); change "
        "nothing",
    )
    json_flag(submit, " (with --wait: once, when the runs have ended, instead of progress)")
    submit.add_argument("--wait", action="store_true", help="show progress until the runs finish")
    submit.add_argument("--workers", type=int, default=None, help="local pool size (default: GPUs, else cores)")
    submit.add_argument(
        "--spool",
        action="store_true",
        help="workers record through spool files that status/aggregate ingest (automatic for SQLite off this machine)",
    )

    status = command("status", cmd_status, "per-state counts, progress and failures of a sweep")
    status.add_argument("name")
    json_flag(status)
    status.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_SECONDS,
        metavar="SECONDS",
        help="a running attempt silent this long is marked lost (default %(default)s)",
    )

    agg = command("aggregate", cmd_aggregate, "the thesis' Table A.1 summary of a sweep")
    agg.add_argument("name")
    shown = agg.add_mutually_exclusive_group()
    shown.add_argument("--format", choices=("text", "md", "csv", "latex"), default="text")
    json_flag(shown, ": the summary rows and the report files written")

    resubmit = command("resubmit", cmd_resubmit, "queue failed and/or unfinished runs again")
    resubmit.add_argument("name")
    resubmit.add_argument("--failed", action="store_true", help="failed, timed-out, preempted or cancelled runs")
    resubmit.add_argument("--missing", action="store_true", help="runs that never finished")
    resubmit.add_argument("--wait", action="store_true", help="show progress until the runs finish")
    json_flag(resubmit, " (with --wait: once, when the runs have ended, instead of progress)")
    resubmit.add_argument("--workers", type=int, default=None, help="local pool size (default: GPUs, else cores)")
    resubmit.add_argument("--profile", default=None, help="slurm: cluster profile (default: the one last used)")

    cancel = command("cancel", cmd_cancel, "stop a sweep's workers and cancel its unfinished runs")
    cancel.add_argument("name")
    json_flag(cancel)

    listing = command("list", cmd_list, "the sweeps under the root directory")
    json_flag(listing)

    text = "the cluster profiles --profile NAME can name: ./cluster/*.yaml and those shipped with lsbench"
    shown = subparsers.add_parser("profiles", help=text, description=text)
    json_flag(shown)
    shown.set_defaults(handler=cmd_profiles)

    text = "the JSON Schema of grid files or cluster profiles, for editors (e.g. yaml-language-server)"
    schema = subparsers.add_parser("schema", help=text, description=text)
    schema.add_argument("kind", choices=api.SCHEMA_KINDS)
    schema.set_defaults(handler=cmd_schema)

    exported = command("export", cmd_export, "every metric of every run as one long table (CSV or Parquet)")
    exported.add_argument("name")
    exported.add_argument("--format", choices=api.EXPORT_FORMATS, default="csv", help="parquet needs pyarrow")
    exported.add_argument("--out", default=None, help="file to write (default: the sweep's reports/metrics.FORMAT)")
    json_flag(exported, ": the path written")

    reported = command("report", cmd_report, "figures, tables and a self-contained index.html of a sweep")
    reported.add_argument("name")
    reported.add_argument("--compare", nargs="*", default=[], metavar="OTHER", help="sweeps shown side by side")
    reported.add_argument("--out", default=None, help="directory to write (default: the sweep's reports/)")
    json_flag(reported, ": the files written")

    from lsbench.sweep.image import add_image_commands

    add_image_commands(subparsers)


def build_parser(prog: str = "sweep") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the chosen command, turning bad input into one line on stderr and exit code 2."""
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except (api.BadInput, BackendInputError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BackendError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return dispatch(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
