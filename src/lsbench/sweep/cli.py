"""``sweep``: plan, submit, watch, aggregate, resubmit and cancel sweeps.

    sweep submit GRID [--backend local|slurm] [--profile PROFILE] [--dry-run] [--json] [--wait]
    sweep status NAME [--json]
    sweep aggregate NAME [--format text|md|csv|latex]
    sweep resubmit NAME [--failed] [--missing] [--profile PROFILE] [--wait]
    sweep cancel NAME
    sweep list
    sweep image check [DEFINITION]
    sweep image build [DEFINITION] [--output IMAGE] [--dry-run]

All state lives under a root directory (``--root``, else ``$LSBENCH_ROOT``, else ``./runs``). A grid path is looked
up in the working directory, then under ``sweeps/``. Exit codes: 0 ok, 1 failure, 2 bad input (one line on stderr,
and nothing written).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lsbench.files import atomic_write_text
from lsbench.report import RunOutcome, aggregate, format_table, write_reports
from lsbench.store import RunRow, RunSpecLike, Store
from lsbench.store.spool import ingest
from lsbench.sweep.backends import (
    BACKENDS,
    Backend,
    BackendError,
    BackendInputError,
    SubmitOptions,
    get_backend,
)
from lsbench.sweep.layout import SWEEP_NAME_PATTERN, SweepDir, sweep_root
from lsbench.sweep.protocol import FINISHED_STATES, run_is_locked
from lsbench.sweep.status import DEFAULT_STALE_SECONDS, FAILED_STATES, sweep_status

if TYPE_CHECKING:
    from lsbench.sweep.grid import Resources

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
GRID_SEARCH_DIR = Path("sweeps")
RESUBMIT_FAILED = (*FAILED_STATES, "preempted", "cancelled")
RESUBMIT_MISSING = ("planned", "queued", "running", "preempted", "cancelled")


class BadInput(Exception):
    """A user error: reported as one line on stderr with exit code 2."""


# -- helpers --------------------------------------------------------------------------------------------------


def resolve_grid(path: str) -> Path:
    """``path`` as given if it exists, else under ``sweeps/`` (so ``grids/pal_cifar10.yaml`` works from the repo)."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    candidate = GRID_SEARCH_DIR / given
    return candidate if candidate.exists() else given


def open_sweep(root: Path, name: str) -> SweepDir:
    if not SWEEP_NAME_PATTERN.fullmatch(name):
        raise BadInput(f"invalid sweep name {name!r} (letters, digits, '_', '.', '-'; no path separators)")
    sweep = SweepDir(root / name)
    if not sweep.exists():
        known = ", ".join(sorted(p.parent.name for p in root.glob("*/sweep.json"))) or "none"
        raise BadInput(f"no sweep {name!r} under {root} (sweeps there: {known})")
    return sweep


def queue_runs(store: Store, sweep: SweepDir, rows: Sequence[RunRow]) -> list[RunRow]:
    """Mark ``rows`` queued, skipping finished runs and runs a live worker is training; return those queued."""
    queued = []
    for row in rows:
        if row.status in FINISHED_STATES or run_is_locked(sweep.run_dir(row.run_id)):
            continue
        store.set_run_status(row.run_id, "queued")
        queued.append(row)
    return queued


def open_store(sweep: SweepDir) -> Store:
    """The sweep's store, with the workers' spool files ingested first when they record through spool files."""
    store = Store(sweep.store_url())
    if sweep.read_meta().get("spool"):
        ingest(store, sweep.path)
    return store


def backend_of(sweep: SweepDir) -> Backend:
    """The backend that started the sweep (recorded in ``sweep.json``)."""
    return get_backend(sweep.read_meta().get("backend", "local"))


def wait_for(store: Store, sweep: SweepDir, run_ids: set[str], out: Callable[[str], None]) -> int:
    """Show progress until the runs are no longer queued or running; 0 if all finished, else 1."""
    backend = backend_of(sweep)
    started = time.monotonic()
    finished_before: int | None = None
    idle_polls = 0
    last_line = ""
    spooled = bool(sweep.read_meta().get("spool"))
    while True:
        if spooled:
            ingest(store, sweep.path)
        backend.refresh(sweep, store)
        rows = [row for row in store.sweep_runs(sweep.name) if row.run_id in run_ids]
        counts = {state: sum(row.status == state for row in rows) for state in {row.status for row in rows}}
        done = sum(counts.get(state, 0) for state in FINISHED_STATES)
        active = counts.get("queued", 0) + counts.get("running", 0)
        failed = len(rows) - done - active
        finished_before = done if finished_before is None else finished_before
        rate_done = done - finished_before
        elapsed = time.monotonic() - started
        eta = f"{(elapsed / rate_done) * active:.0f}s" if rate_done else "?"
        width = 30
        filled = int(width * done / len(rows)) if rows else width
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{len(rows)} done, {counts.get('running', 0)} running, "
            f"{failed} failed, ETA {eta}"
        )
        if sys.stdout.isatty():
            out(f"\r{line}   ")
        elif line.split(", ETA")[0] != last_line.split(", ETA")[0]:  # a log file gets a line per change only
            out(f"{line}\n")
        last_line = line
        if active == 0:
            out("\n" if sys.stdout.isatty() else "")
            return EXIT_OK if done == len(rows) else EXIT_FAILURE
        idle_polls = 0 if backend.active(sweep) else idle_polls + 1
        if idle_polls > 3:  # grace for a worker that is just recording its end
            out(f"\nno worker is left, {active} runs unfinished; `sweep resubmit {sweep.name}` continues them\n")
            return EXIT_FAILURE
        time.sleep(1.0)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# -- commands -------------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from lsbench.sweep.grid import load_grid
    from lsbench.sweep.plan import expand, summarize
    from lsbench.sweep.references import resolve_references

    grid_path = resolve_grid(args.grid)
    grid = resolve_references(load_grid(grid_path), sweep_root(args.root), dry_run=args.dry_run)
    runs = expand(grid)
    if args.dry_run:
        summary = summarize(runs, grid)
        print(_json(summary.to_json()) if args.json else summary.format_text())
        return EXIT_OK
    backend_name, profile_workers = _backend_choice(args)
    try:
        backend = get_backend(backend_name)
    except ValueError as error:
        raise BadInput(str(error)) from None
    sweep = SweepDir(sweep_root(args.root) / grid.name)
    store_url = grid.store or sweep.default_store_url()
    if sweep.exists() and sweep.store_url() != store_url:
        raise BadInput(f"sweep {grid.name!r} already records to another store; give the grid a new name")
    options = _submit_options(args, grid.resources, profile_workers)
    _validate(backend, sweep, store_url, options)
    sweep.path.mkdir(parents=True, exist_ok=True)
    shown_url = sweep.keep_store_url(store_url)
    # SQLite must not be written from other machines: there, workers record through spool files (store/spool.py)
    spool = args.spool or (backend.name != "local" and store_url.startswith("sqlite"))
    meta = {"name": grid.name, "grid_hash": grid.grid_hash, "store": shown_url, "backend": backend_name, "spool": spool}
    sweep.write_meta(meta)
    with Store(store_url) as store:
        grid_text = store.scrub(grid.source_text)  # a password written into the grid stays out of every copy
        atomic_write_text(sweep.grid_file, grid_text)
        store.upsert_sweep(grid.name, grid.grid_hash, grid_text, str(sweep.path.resolve()), backend_name)
        _extend_plan(sweep, runs, store.add_runs(grid.name, runs))
        wanted = {spec.run_id for spec in runs}
        rows = [row for row in store.sweep_runs(grid.name) if row.run_id in wanted]
        queued = queue_runs(store, sweep, rows)
        finished = sum(row.status in FINISHED_STATES for row in rows)
        action = backend.submit(sweep, store, queued, options)
        print(f"sweep {grid.name}: {len(runs)} runs, {len(queued)} queued, {finished} already finished; {action}")
        print(f"  watch: sweep status {grid.name}    results: sweep aggregate {grid.name}")
        if args.wait and queued:
            return wait_for(store, sweep, {row.run_id for row in queued}, _write)
    return EXIT_OK


def _extend_plan(sweep: SweepDir, runs: Sequence[RunSpecLike], indices: Sequence[int]) -> None:
    """Append new runs to ``plan.json`` at the indices the store gave them (the plan is append-only)."""
    plan = sweep.read_plan()
    for spec, index in sorted(zip(runs, indices, strict=True), key=lambda pair: pair[1]):
        if index < len(plan):
            if plan[index].run_id != spec.run_id:
                raise RuntimeError(f"{sweep.plan_file} disagrees with the store at index {index}")
        elif index == len(plan):
            plan.append(spec)
        else:
            raise RuntimeError(f"{sweep.plan_file} has a gap before index {index}")
    sweep.write_plan(plan)


def _backend_choice(args: argparse.Namespace) -> tuple[str, int | None]:
    """The backend to submit with: ``--backend``, else the profile's, else local; and the profile's pool size."""
    if not args.profile:
        return args.backend or "local", None
    from lsbench.sweep.backends.profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as error:
        raise BadInput(str(error)) from None
    if args.backend and args.backend != profile.backend:
        raise BadInput(f"--backend {args.backend} contradicts {profile.source} (backend: {profile.backend})")
    return profile.backend, profile.workers


def _submit_options(
    args: argparse.Namespace, resources: Resources | None = None, workers: int | None = None
) -> SubmitOptions:
    return SubmitOptions(workers=args.workers or workers, profile=args.profile, resources=resources)


def _validate(backend: Backend, sweep: SweepDir, store_url: str, options: SubmitOptions) -> None:
    """Let the backend reject a submission before anything is written (backends may offer ``validate``)."""
    validate = getattr(backend, "validate", None)
    if validate is not None:
        try:
            validate(sweep, store_url, options)
        except BackendInputError as error:
            raise BadInput(str(error)) from None


def cmd_status(args: argparse.Namespace) -> int:
    sweep = open_sweep(sweep_root(args.root), args.name)
    with open_store(sweep) as store:
        backend_of(sweep).refresh(sweep, store)
        status = sweep_status(store, sweep.name, stale_after=args.stale_after)
    print(_json(status.to_json()) if args.json else status.format_text())
    return EXIT_OK


def sweep_outcomes(store: Store, sweep: str) -> list[RunOutcome]:
    """The final results of a sweep's runs, as the aggregation reads them (one query)."""
    return [
        RunOutcome(
            problem=row.problem,
            optimizer=row.optimizer,
            hparams=row.hparams,
            seed=row.seed,
            status=row.status,
            train_loss=row.summary.get("train_loss"),
            val_acc=row.summary.get("val_acc"),
            test_acc=row.summary.get("test_acc"),
        )
        for row in store.sweep_runs(sweep)
    ]


def cmd_aggregate(args: argparse.Namespace) -> int:
    sweep = open_sweep(sweep_root(args.root), args.name)
    with open_store(sweep) as store:
        summary = aggregate(sweep_outcomes(store, sweep.name))
    print(format_table(summary, args.format), end="")
    paths = write_reports(summary, sweep.reports)
    print(f"written: {', '.join(str(path) for path in paths.values())}")
    return EXIT_OK


def cmd_resubmit(args: argparse.Namespace) -> int:
    sweep = open_sweep(sweep_root(args.root), args.name)
    states = set()
    if args.failed or not args.missing:
        states.update(RESUBMIT_FAILED)
    if args.missing or not args.failed:
        states.update(RESUBMIT_MISSING)
    backend = backend_of(sweep)
    options = _submit_options(args)
    _validate(backend, sweep, sweep.store_url(), options)
    with open_store(sweep) as store:
        backend.refresh(sweep, store)
        rows = [row for row in store.sweep_runs(sweep.name) if row.status in states]
        queued = queue_runs(store, sweep, rows)
        action = backend.submit(sweep, store, queued, options)
        print(f"sweep {sweep.name}: {len(queued)} runs queued again; {action}")
        if args.wait and queued:
            return wait_for(store, sweep, {row.run_id for row in queued}, _write)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    sweep = open_sweep(sweep_root(args.root), args.name)
    with open_store(sweep) as store:
        stopped = backend_of(sweep).cancel(sweep, store)
        cancelled = 0
        for row in store.sweep_runs(sweep.name):
            if row.status in ("planned", "queued", "preempted") or (
                row.status == "running" and not run_is_locked(sweep.run_dir(row.run_id))
            ):
                store.set_run_status(row.run_id, "cancelled")
                cancelled += 1
    print(f"sweep {sweep.name}: {stopped}; {cancelled} runs cancelled")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    root = sweep_root(args.root)
    sweeps = sorted(path.parent for path in root.glob("*/sweep.json"))
    if not sweeps:
        print(f"no sweeps under {root}")
    for path in sweeps:
        sweep = SweepDir(path)
        with open_store(sweep) as store:
            status = sweep_status(store, sweep.name)
        running = "active" if backend_of(sweep).active(sweep) else "idle"
        print(f"{sweep.name:<32}{status.finished:>6}/{status.total:<6} finished   {running}")
    return EXIT_OK


def _json(value: object) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True)


# -- parser ---------------------------------------------------------------------------------------------------


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the sweep commands to ``subparsers`` (used by ``sweep`` and by ``python -m lsbench sweep``)."""

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--root", default=None, help="sweep root directory (default $LSBENCH_ROOT or ./runs)")
        parser.set_defaults(handler=handler)
        return parser

    submit = command("submit", cmd_submit, "plan a grid, record it in the store and start training")
    submit.add_argument("grid", help="grid YAML file (looked up in the working directory, then in sweeps/)")
    submit.add_argument(
        "--backend", choices=BACKENDS, default=None, help="where to run (default: the profile's backend, else local)"
    )
    submit.add_argument("--profile", default=None, help="cluster profile: a YAML file or a name under cluster/")
    submit.add_argument("--dry-run", action="store_true", help="print run counts and GPU-hours; change nothing")
    submit.add_argument("--json", action="store_true", help="with --dry-run: print JSON")
    submit.add_argument("--wait", action="store_true", help="show progress until the runs finish")
    submit.add_argument("--workers", type=int, default=None, help="local pool size (default: GPUs, else cores)")
    submit.add_argument(
        "--spool",
        action="store_true",
        help="workers record through spool files that status/aggregate ingest (automatic for SQLite off this machine)",
    )

    status = command("status", cmd_status, "per-state counts, progress and failures of a sweep")
    status.add_argument("name")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_SECONDS,
        metavar="SECONDS",
        help="a running attempt silent this long is marked lost (default %(default)s)",
    )

    agg = command("aggregate", cmd_aggregate, "the thesis' Table A.1 summary of a sweep")
    agg.add_argument("name")
    agg.add_argument("--format", choices=("text", "md", "csv", "latex"), default="text")

    resubmit = command("resubmit", cmd_resubmit, "queue failed and/or unfinished runs again")
    resubmit.add_argument("name")
    resubmit.add_argument("--failed", action="store_true", help="failed, timed-out, preempted or cancelled runs")
    resubmit.add_argument("--missing", action="store_true", help="runs that never finished")
    resubmit.add_argument("--wait", action="store_true", help="show progress until the runs finish")
    resubmit.add_argument("--workers", type=int, default=None, help="local pool size (default: GPUs, else cores)")
    resubmit.add_argument("--profile", default=None, help="slurm: cluster profile (default: the one last used)")

    cancel = command("cancel", cmd_cancel, "stop a sweep's workers and cancel its unfinished runs")
    cancel.add_argument("name")

    command("list", cmd_list, "the sweeps under the root directory")

    from lsbench.sweep.image import add_image_commands

    add_image_commands(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweep", description=__doc__.splitlines()[0])
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the chosen command, turning bad input into one line on stderr and exit code 2."""
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except (BadInput, BackendInputError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BackendError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as error:
        from lsbench.sweep.grid import GridError  # imported here: it pulls in torch, which most commands never need

        if not isinstance(error, GridError):
            raise
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return dispatch(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
