"""The sweep commands as functions that return data: what ``sweep submit|status|aggregate|...`` do, for scripts.

    from lsbench.sweep import api

    submitted = api.submit("grids/demo_digits.yaml")             # plans, records, starts the local pool
    api.wait(submitted.sweep, submitted.queued)                  # blocks until those runs have ended
    rows = api.aggregate("demo_digits")                          # Table A.1 rows (lsbench.report.SummaryRow)

The CLI (:mod:`lsbench.sweep.cli`) parses arguments, calls these functions and formats what they return; it adds
nothing else. Every function takes ``root``, the directory holding all sweeps (``None``: ``$LSBENCH_ROOT``, else
``./runs``). A request that cannot work as given -- a malformed grid, an unknown sweep, a profile that contradicts
the backend, a problem whose data is not where the workers will read it -- raises :class:`BadInput` (one line, naming
what to fix) before anything is written or queued; any other exception is a failure of the machinery.

A grid path is looked up as given (the working directory), then under ``sweeps/``, then among the grids that ship
with the package, so ``grids/pal_cifar10.yaml`` works in a checkout and after ``pip install`` alike. A profile is a
file given by path or the name of a shipped one (:func:`lsbench.sweep.backends.profile.find_profile`).

This module prints nothing and never exits the process.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsbench.files import atomic_write_text
from lsbench.report import RunOutcome, SummaryRow
from lsbench.runs import FINISHED, PENDING, RESUBMIT_FAILED, RESUBMIT_MISSING, RUN_STATES, RunState
from lsbench.store import RunRow, Store
from lsbench.store.spool import FileClaims, ingest
from lsbench.sweep.backends import Backend, BackendInputError, SubmitOptions, get_backend
from lsbench.sweep.layout import SWEEP_NAME_PATTERN, SweepDir, sweep_root
from lsbench.sweep.protocol import claim_stale_seconds
from lsbench.sweep.status import DEFAULT_STALE_SECONDS, SweepStatus, sweep_status

if TYPE_CHECKING:
    import pandas as pd

    from lsbench.runs import RunSpec
    from lsbench.sweep.backends.profile import Profile
    from lsbench.sweep.grid import Grid
    from lsbench.sweep.plan import DryRunSummary

__all__ = [
    "BadInput",
    "CancelResult",
    "Plan",
    "ProfileListing",
    "Progress",
    "ReportResult",
    "ResubmitResult",
    "SubmitResult",
    "SweepListing",
    "WaitResult",
    "aggregate",
    "cancel",
    "export",
    "list_sweeps",
    "plan",
    "profiles",
    "report",
    "resubmit",
    "status",
    "submit",
    "wait",
    "write_reports",
]

GRID_SEARCH_DIR = Path("sweeps")
SHIPPED_GRIDS_BASE = Path(__file__).resolve().parent  # ``grids/<name>.yaml`` under it: the grids in the package
WAIT_POLL_SECONDS = 1.0
WAIT_GRACE_POLLS = 3  # polls with unfinished runs but no worker before `wait` gives up (a worker may be just ending)
# `cancel` stops runs in these states (a `running` one only when no live worker here holds its lock).
CANCELLABLE = PENDING | {RunState.PREEMPTED}


class BadInput(Exception):
    """The request cannot work as given; ``str()`` is one line saying what to fix. Nothing was written."""


# -- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A grid expanded into runs, before anything is recorded; from :func:`plan`, also the cluster profile it was
    planned for and what a real submission would refuse (``checks``: data not there yet, a missing image)."""

    grid: Grid
    runs: tuple[RunSpec, ...]
    profile: Profile | None = None
    checks: tuple[str, ...] = ()

    @functools.cached_property
    def summary(self) -> DryRunSummary:
        """Run counts and GPU-hours per problem and optimizer (what ``sweep submit --dry-run`` prints), with the
        plan's ``checks`` among its warnings."""
        from lsbench.sweep.plan import summarize

        summary = summarize(self.runs, self.grid)
        return dataclasses.replace(summary, warnings=(*summary.warnings, *self.checks))


@dataclass(frozen=True)
class ProfileListing:
    """One cluster profile, as ``sweep profiles`` shows it."""

    name: str
    path: Path
    shipped: bool  # ships with the package (else: a file in ./cluster/)
    chosen: bool  # what ``--profile NAME`` reads here (a file in ./cluster/ comes before a shipped one)
    backend: str | None  # None: the profile is broken (``problem`` says why)
    description: str
    gpu: str | None  # the node's GPU model and count, as the profile states them
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "shipped": self.shipped,
            "chosen": self.chosen,
            "backend": self.backend,
            "description": self.description,
            "gpu": self.gpu,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Progress:
    """Where the runs being waited for stand at one poll."""

    total: int
    done: int  # finished with a result (completed or diverged)
    running: int
    queued: int
    elapsed: float  # seconds since the wait began
    eta: float | None  # seconds left at the rate runs finished during this wait; None before the first one

    @property
    def active(self) -> int:
        """Runs a backend still has (queued or running)."""
        return self.running + self.queued

    @property
    def failed(self) -> int:
        """Runs that ended without a result (failed, timed out, preempted, cancelled)."""
        return self.total - self.done - self.active

    def to_json(self) -> dict[str, Any]:
        keys = ("total", "done", "running", "queued", "failed", "elapsed", "eta")
        return {key: getattr(self, key) for key in keys}


@dataclass(frozen=True)
class WaitResult:
    sweep: str
    progress: Progress  # at the last poll
    stalled: bool  # runs were left unfinished with no worker to run them (`resubmit` continues them)

    @property
    def ok(self) -> bool:
        """Every run waited for finished with a result."""
        return not self.stalled and self.progress.done == self.progress.total

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "ok": self.ok, "stalled": self.stalled, **self.progress.to_json()}


@dataclass(frozen=True)
class SubmitResult:
    sweep: str
    sweep_dir: Path
    backend: str
    runs: tuple[str, ...]  # every run of the grid, by id
    queued: tuple[str, ...]  # the runs handed to the backend now (not finished before, not being trained)
    finished: int  # runs of the grid that already had their result
    action: str  # what the backend did, in its own words

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "sweep_dir": str(self.sweep_dir),
            "backend": self.backend,
            "runs": len(self.runs),
            "queued": list(self.queued),
            "finished": self.finished,
            "action": self.action,
        }


@dataclass(frozen=True)
class ResubmitResult:
    sweep: str
    queued: tuple[str, ...]
    action: str

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "queued": list(self.queued), "action": self.action}


@dataclass(frozen=True)
class CancelResult:
    sweep: str
    stopped: str  # what the backend stopped, in its own words
    cancelled: tuple[str, ...]  # runs now marked cancelled

    def to_json(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "stopped": self.stopped, "cancelled": list(self.cancelled)}


@dataclass(frozen=True)
class SweepListing:
    """One sweep under the root, as ``sweep list`` shows it: its status, backend and whether work is left there."""

    status: SweepStatus
    backend: str
    active: bool  # the backend still has work of this sweep queued or running

    @property
    def name(self) -> str:
        return self.status.name

    def to_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "sweep": status.name,
            "backend": self.backend,
            "total": status.total,
            "finished": status.finished,
            "counts": status.counts,
            "active": self.active,
        }


# -- commands -------------------------------------------------------------------------------------------------


def plan(
    grid_path: str | Path,
    *,
    root: str | Path | None = None,
    backend: str | None = None,
    profile: str | None = None,
) -> Plan:
    """Load, validate and expand a grid without recording anything (``sweep submit --dry-run``).

    ``profile`` is loaded and validated as a submission would (a broken one is :class:`BadInput`). What a real
    submission would refuse only because it is not there yet -- a problem's data where the workers will read it, the
    profile's container image -- becomes one of the plan's ``checks`` instead of an error; a split rule a problem's
    dataset does not offer is an error here too. A ``best_of`` reference to a sweep that has no result yet becomes a
    one-point placeholder instead of an error.
    """
    backend_name, loaded = _backend_choice(backend, profile)
    planned = _plan(grid_path, root, dry_run=True)
    chosen = _backend(backend_name)
    sweep = SweepDir(sweep_root(root) / planned.grid.name)
    options = SubmitOptions(profile=profile, resources=planned.grid.resources)
    checks: list[str] = []
    if loaded is not None:
        if loaded.image is not None and not Path(loaded.image).is_file():
            checks.append(f"{loaded.source}: image: {loaded.image} does not exist yet (sweep image build)")
        else:  # the backend's own checks (GPUs per node, time limits), of which the image is the last
            _validate(chosen, sweep, sweep.default_store_url(), options)
    try:
        location = _data_location(chosen, sweep, options)
    except BadInput as error:  # e.g. --backend slurm with no profile: a real submission says so
        checks.append(str(error))
    else:
        checks += _data_problems(planned.runs, location, planned.grid.source)
    return dataclasses.replace(planned, profile=loaded, checks=tuple(checks))


def submit(
    grid_path: str | Path,
    *,
    root: str | Path | None = None,
    backend: str | None = None,
    profile: str | None = None,
    workers: int | None = None,
    spool: bool = False,
) -> SubmitResult:
    """Plan a grid, record the sweep and its runs, queue the unfinished ones and hand them to the backend.

    Returns at once (the backend trains in the background). Submitting the same grid again queues nothing that
    has its result; a grid with more values queues only the new runs.

    Args:
        backend: ``"local"`` or ``"slurm"``; default: the profile's backend, else local.
        profile: a cluster profile (a YAML file, or a name under ``cluster/``).
        workers: local pool size (default: the profile's, else one per GPU, else one per core).
        spool: workers record through spool files (automatic for a SQLite store with a non-local backend).
    """
    backend_name, loaded = _backend_choice(backend, profile)
    planned = _plan(grid_path, root, dry_run=False)
    grid, runs = planned.grid, planned.runs
    chosen = _backend(backend_name)
    sweep = SweepDir(sweep_root(root) / grid.name)
    store_url = grid.store or sweep.default_store_url()
    if sweep.exists() and sweep.store_url() != store_url:
        raise BadInput(f"sweep {grid.name!r} already records to another store; give the grid a new name")
    profile_workers = loaded.workers if loaded is not None else None
    options = SubmitOptions(workers=workers or profile_workers, profile=profile, resources=grid.resources)
    _validate(chosen, sweep, store_url, options)
    _require_data(runs, _data_location(chosen, sweep, options), grid.source)
    sweep.path.mkdir(parents=True, exist_ok=True)
    shown_url = sweep.keep_store_url(store_url)
    # SQLite must not be written from other machines: there, workers record through spool files (store/spool.py)
    spool = spool or (chosen.name != "local" and store_url.startswith("sqlite"))
    meta = {"name": grid.name, "grid_hash": grid.grid_hash, "store": shown_url, "backend": backend_name, "spool": spool}
    # Read by the backends when they form workers (lsbench.fused.groups.group_runs): the grid's, else the profile's.
    meta["runs_per_worker"] = grid.resources.runs_per_worker or (loaded.runs_per_worker if loaded is not None else 1)
    sweep.write_meta(meta)
    with Store(store_url) as store:
        grid_text = store.scrub(grid.source_text)  # a password written into the grid stays out of every copy
        atomic_write_text(sweep.grid_file, grid_text)
        store.upsert_sweep(grid.name, grid.grid_hash, grid_text, str(sweep.path.resolve()), backend_name)
        _extend_plan(sweep, runs, store.add_runs(grid.name, runs))
        wanted = {spec.run_id for spec in runs}
        rows = [row for row in store.sweep_runs(grid.name) if row.run_id in wanted]
        queued = _queue(store, sweep, rows)
        finished = sum(row.status in FINISHED for row in rows)
        action = _backend_submit(chosen, sweep, store, queued, options)
    return SubmitResult(
        sweep=grid.name,
        sweep_dir=sweep.path,
        backend=backend_name,
        runs=tuple(spec.run_id for spec in runs),
        queued=tuple(row.run_id for row in queued),
        finished=finished,
        action=action,
    )


def wait(
    name: str,
    run_ids: Iterable[str],
    *,
    root: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    poll_seconds: float = WAIT_POLL_SECONDS,
) -> WaitResult:
    """Block until none of ``run_ids`` is queued or running; call ``on_progress`` after every poll.

    Also returns, with ``stalled`` set, when runs are left unfinished and the backend has no worker left for them
    (a killed pool, cancelled jobs): ``resubmit`` continues them.
    """
    sweep = open_sweep(root, name)
    wanted = set(run_ids)
    backend = backend_of(sweep)
    spooled = bool(sweep.read_meta().get("spool"))
    started = time.monotonic()
    done_at_start: int | None = None
    idle_polls = 0
    with Store(sweep.store_url()) as store:
        while True:
            if spooled:
                ingest(store, sweep.path)
            backend.refresh(sweep, store)
            rows = [row for row in store.sweep_runs(sweep.name) if row.run_id in wanted]
            done = sum(row.status in FINISHED for row in rows)
            running = sum(row.status == RunState.RUNNING for row in rows)
            queued = sum(row.status == RunState.QUEUED for row in rows)
            done_at_start = done if done_at_start is None else done_at_start
            elapsed = time.monotonic() - started
            rate = (done - done_at_start) / elapsed if elapsed > 0 else 0.0
            eta = (running + queued) / rate if rate > 0 else None
            progress = Progress(len(rows), done, running, queued, elapsed, eta)
            if on_progress is not None:
                on_progress(progress)
            if progress.active == 0:
                return WaitResult(sweep.name, progress, stalled=False)
            idle_polls = 0 if backend.active(sweep) else idle_polls + 1
            if idle_polls > WAIT_GRACE_POLLS:
                return WaitResult(sweep.name, progress, stalled=True)
            time.sleep(poll_seconds)


def status(name: str, *, root: str | Path | None = None, stale_after: float = DEFAULT_STALE_SECONDS) -> SweepStatus:
    """Per-state counts, progress per problem and optimizer, and failures with log tails.

    Brings run states up to date first (the backend's view; runs whose worker vanished, silent for ``stale_after``
    seconds or dead on this host, are recorded as failed, unless the scheduler lists them as pending or running).
    """
    sweep = open_sweep(root, name)
    backend = backend_of(sweep)
    with open_store(sweep) as store:
        backend.refresh(sweep, store)
        return sweep_status(store, sweep.name, stale_after=stale_after, vouched=backend.vouched(sweep))


def aggregate(name: str, *, root: str | Path | None = None) -> list[SummaryRow]:
    """The Table A.1 summary of a sweep: one row per problem and optimizer (:class:`lsbench.report.SummaryRow`)."""
    from lsbench.report import aggregate as summarize_outcomes

    sweep = open_sweep(root, name)
    with open_store(sweep) as store:
        return summarize_outcomes(sweep_outcomes(store, sweep.name))


def write_reports(name: str, rows: Sequence[SummaryRow], *, root: str | Path | None = None) -> dict[str, Path]:
    """Write ``rows`` as ``summary.md``, ``summary.csv`` and ``summary.tex`` into the sweep's ``reports/``."""
    from lsbench.report import write_reports as write_files

    return write_files(rows, open_sweep(root, name).reports)


EXPORT_FORMATS = ("csv", "parquet")


def export(name: str, *, root: str | Path | None = None) -> pd.DataFrame:
    """Every metric of every run of a sweep as one long table: the run identity columns (:class:`lsbench.runs.RunSpec`
    fields, ``hparams`` as canonical JSON) and ``status``, then ``step, metric, value`` (two queries)."""
    import pandas as pd

    from lsbench.runs.spec import IDENTITY_FIELDS, canonical_json

    sweep = open_sweep(root, name)
    with open_store(sweep) as store:
        rows = store.sweep_runs(sweep.name)
        metrics = pd.DataFrame(store.sweep_metrics(sweep.name), columns=["run_id", "step", "metric", "value"])
    identity = pd.DataFrame(
        [
            {
                **{f.name: getattr(row, f.name) for f in IDENTITY_FIELDS},
                "hparams": canonical_json(row.hparams),
                "status": row.status,
            }
            for row in rows
        ],
        columns=[*(f.name for f in IDENTITY_FIELDS), "status"],
    )
    return identity.merge(metrics, on="run_id", how="inner").reset_index(drop=True)


def write_export(name: str, fmt: str, *, out: str | Path | None = None, root: str | Path | None = None) -> Path:
    """Write :func:`export` as ``<reports>/metrics.<csv|parquet>`` (or to ``out``); :class:`BadInput` for an unknown
    format or parquet without pyarrow."""
    if fmt not in EXPORT_FORMATS:
        raise BadInput(f"unknown export format {fmt!r} (valid: {', '.join(EXPORT_FORMATS)})")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            hint = "pip install 'lsbench[parquet]'"
            raise BadInput(f"--format parquet needs pyarrow ({hint}); --format csv needs nothing") from None
    table = export(name, root=root)
    path = Path(out) if out is not None else open_sweep(root, name).reports / f"metrics.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


@dataclass(frozen=True)
class ReportResult:
    """What :func:`report` wrote: the page, the figures (:class:`lsbench.report.figures.Figure`) and the tables."""

    sweep: str
    index: Path
    figures: list[Any]
    tables: dict[str, Path]

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "index": str(self.index),
            "figures": [figure.to_json() for figure in self.figures],
            "tables": {key: str(path) for key, path in self.tables.items()},
        }


def report(
    name: str, *, compare: Sequence[str] = (), out: str | Path | None = None, root: str | Path | None = None
) -> ReportResult:
    """Write the sweep's report into ``out`` (default: its ``reports/``): every figure as PNG, PDF and CSV, the
    Table A.1 summary under both divergence conventions as CSV, and a self-contained ``index.html``.

    With ``compare``, the other sweeps' runs are drawn side by side (box plots and curves: one row of panels per
    sweep), their optimizers labelled ``sweep:optimizer`` elsewhere.
    Works on unfinished sweeps (the page says how many runs have not finished) and counts failed and diverged runs.
    A sweep with linescan runs also gets their line analysis (:mod:`lsbench.report.lines`): its figures, the
    section "Line analysis (Chapter 5)" of the page and ``lines_findings.csv`` (under ``tables["lines"]``).
    """
    import pandas as pd

    from lsbench.report import figures_data as fd
    from lsbench.report.figures import draw_all
    from lsbench.report.lines import line_section
    from lsbench.report.page import summary_table, write_page

    names = [name, *(other for other in compare if other != name)]
    runs, metrics, statuses, axes, linescans = [], [], [], {}, []
    for sweep_name in names:
        sweep = open_sweep(root, sweep_name)
        shown = status(sweep_name, root=root)
        statuses.append((sweep_name, shown.counts, shown.failures))
        with open_store(sweep) as store:
            data = fd.load(store, sweep.name)
            rows = [row for row in store.sweep_runs(sweep.name) if row.kind == "linescan"]
        linescans += [(row, sweep.run_dir(row.run_id)) for row in rows]
        prefix = sweep_name + ":" if len(names) > 1 else ""
        axes.update({prefix + optimizer: axis for optimizer, axis in _vary_axes(sweep).items()})
        if len(names) > 1:
            data.runs["optimizer"] = sweep_name + ":" + data.runs["optimizer"]
            data.runs["run_id"] = sweep_name + "/" + data.runs["run_id"]
            data.metrics["run_id"] = sweep_name + "/" + data.metrics["run_id"]
        runs.append(data.runs)
        metrics.append(data.metrics)
    data = fd.ReportData(pd.concat(runs, ignore_index=True), pd.concat(metrics, ignore_index=True))
    directory = Path(out) if out is not None else open_sweep(root, name).reports
    figures = draw_all(data, directory, axes=axes)
    tables, paths = {}, {}
    for convention in fd.CONVENTIONS:
        tables[convention] = summary_table(fd.box_stats(data.runs, convention))
        paths[convention] = directory / f"table_a1_{convention}.csv"
        tables[convention].to_csv(paths[convention], index=False)
    lines = line_section(linescans, directory)
    if lines is not None and lines.findings_csv is not None:
        paths["lines"] = lines.findings_csv
    sections = [lines.html()] if lines is not None else []
    index = write_page(directory / "index.html", " + ".join(names), statuses, tables, figures, sections)
    return ReportResult(name, index, [*figures, *(lines.figures if lines is not None else [])], paths)


def _vary_axes(sweep: SweepDir) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Per optimizer section of the sweep's grid.yaml built with ``vary:``: its base point (the first point: the
    base of the first ``grid``/``zip`` combination) and the varied hyperparameters. Empty when no section varies
    (the grid is then not validated, which would import torch) or the grid cannot be read."""
    from lsbench.sweep.yamlfile import read_yaml

    try:
        raw = read_yaml(sweep.grid_file.read_text())
    except (OSError, ValueError):
        return {}
    sections = raw.get("optimizers") if isinstance(raw, dict) else None
    if not isinstance(sections, dict) or not any(isinstance(v, dict) and v.get("vary") for v in sections.values()):
        return {}
    from lsbench.sweep.grid import GridError, load_grid

    try:
        grid = load_grid(sweep.grid_file)
    except GridError:
        return {}
    return {
        optimizer: (dict(section.points[0]), list(section.vary))
        for optimizer, section in grid.optimizers.items()
        if section.vary and section.points
    }


def resubmit(
    name: str,
    *,
    failed: bool = False,
    missing: bool = False,
    root: str | Path | None = None,
    profile: str | None = None,
    workers: int | None = None,
) -> ResubmitResult:
    """Queue again the runs that ended without a result (``failed``) and/or never finished (``missing``); neither
    flag means both. Runs a live worker holds are left alone."""
    sweep = open_sweep(root, name)
    states: set[str] = set()
    if failed or not missing:
        states |= RESUBMIT_FAILED
    if missing or not failed:
        states |= RESUBMIT_MISSING
    backend = backend_of(sweep)
    options = SubmitOptions(workers=workers, profile=profile)
    _validate(backend, sweep, sweep.store_url(), options)
    location = _data_location(backend, sweep, options)
    with open_store(sweep) as store:
        backend.refresh(sweep, store)
        rows = [row for row in store.sweep_runs(sweep.name) if row.status in states]
        _require_data(rows, location, f"sweep {sweep.name}")
        queued = _queue(store, sweep, rows)
        action = _backend_submit(backend, sweep, store, queued, options)
    return ResubmitResult(sweep.name, tuple(row.run_id for row in queued), action)


def cancel(name: str, *, root: str | Path | None = None) -> CancelResult:
    """Stop the sweep's workers and mark its unfinished runs cancelled (``resubmit`` queues them again)."""
    sweep = open_sweep(root, name)
    with open_store(sweep) as store:
        stopped = backend_of(sweep).cancel(sweep, store)
        held = _held_runs(store, sweep)
        candidates = [
            row.run_id
            for row in store.sweep_runs(sweep.name)
            if row.status in CANCELLABLE and not (row.status == RunState.RUNNING and row.run_id in held)
        ]
        # A run that reached another state since it was read (a result, say) keeps it.
        cancelled = store.set_status_many(candidates, RunState.CANCELLED.value, unless=set(RUN_STATES) - CANCELLABLE)
    return CancelResult(sweep.name, stopped, tuple(cancelled))


def list_sweeps(root: str | Path | None = None) -> list[SweepListing]:
    """Every sweep under the root, by name."""
    listings = []
    for path in sorted(path.parent for path in sweep_root(root).glob("*/sweep.json")):
        sweep = SweepDir(path)
        backend = backend_of(sweep)
        with open_store(sweep) as store:
            snapshot = sweep_status(store, sweep.name, vouched=backend.vouched(sweep))
        listings.append(SweepListing(snapshot, backend.name, backend.active(sweep)))
    return listings


def profiles() -> list[ProfileListing]:
    """The cluster profiles ``--profile NAME`` can name here: those in ``./cluster/`` and those shipped with the
    package, each loaded and validated (a broken one is listed with its ``problem``)."""
    from lsbench.sweep.backends.profile import PROFILE_DIR, ProfileError, parse_profile, shipped_profiles

    own = {path.stem: path for path in sorted(Path(PROFILE_DIR).glob("*.yaml"))}
    shipped = shipped_profiles()
    found = [(name, path, False) for name, path in own.items()]
    found += [(name, path, True) for name, path in shipped.items()]
    listings = []
    for name, path, is_shipped in found:
        if not is_shipped and name in shipped and path.resolve() == shipped[name].resolve():
            continue  # a checkout's cluster/ links to the shipped files
        chosen = not is_shipped or name not in own or own[name].resolve() == path.resolve()
        try:
            loaded = parse_profile(path.read_text(), str(path), path.resolve().parent)
        except (OSError, ProfileError) as error:
            listings.append(ProfileListing(name, path, is_shipped, chosen, None, "", None, str(error)))
            continue
        gpu = loaded.node.gpu_model
        gpus = f"{loaded.node.gpus or loaded.gpus_per_node} x {gpu}" if gpu else None
        listings.append(ProfileListing(name, path, is_shipped, chosen, loaded.backend, loaded.description, gpus))
    return listings


# -- shared steps ---------------------------------------------------------------------------------------------


SCHEMA_KINDS = ("grid", "profile")


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a grid file or a cluster profile (draft 2020-12), for editors and CI linters: generated
    from the same models that validate the files, so it lists exactly the keys (problems, optimizers,
    hyperparameters with their ranges) this version accepts."""
    if kind == "grid":
        from lsbench.sweep.grid import grid_json_schema

        return grid_json_schema()
    if kind == "profile":
        from lsbench.sweep.backends.profile import profile_json_schema

        return profile_json_schema()
    raise BadInput(f"no schema {kind!r} (valid: {', '.join(SCHEMA_KINDS)})")


def resolve_grid(path: str | Path) -> Path:
    """``path`` as given if it exists, else under ``sweeps/``, else among the grids shipped with the package (so
    ``grids/pal_cifar10.yaml`` works in a checkout and after ``pip install`` alike); else as given (reading fails)."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    for candidate in (GRID_SEARCH_DIR / given, SHIPPED_GRIDS_BASE / given):
        if candidate.is_file():
            return candidate
    return given


def open_sweep(root: str | Path | None, name: str) -> SweepDir:
    """The sweep ``name`` under the root; :class:`BadInput` for a malformed or unknown name."""
    if not SWEEP_NAME_PATTERN.fullmatch(name):
        raise BadInput(f"invalid sweep name {name!r} (letters, digits, '_', '.', '-'; no path separators)")
    base = sweep_root(root)
    sweep = SweepDir(base / name)
    if not sweep.exists():
        known = ", ".join(sorted(p.parent.name for p in base.glob("*/sweep.json"))) or "none"
        raise BadInput(f"no sweep {name!r} under {base} (sweeps there: {known})")
    return sweep


def open_store(sweep: SweepDir) -> Store:
    """The sweep's store, with the workers' spool files ingested first when they record through spool files."""
    store = Store(sweep.store_url())
    if sweep.read_meta().get("spool"):
        ingest(store, sweep.path)
    return store


def backend_of(sweep: SweepDir) -> Backend:
    """The backend that started the sweep (recorded in ``sweep.json``)."""
    return get_backend(sweep.read_meta().get("backend", "local"))


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


def _plan(grid_path: str | Path, root: str | Path | None, *, dry_run: bool) -> Plan:
    # Imported here: the grid module imports torch (to trial-build optimizers), which status commands never need.
    from lsbench.sweep.grid import GridError, load_grid
    from lsbench.sweep.plan import expand
    from lsbench.sweep.references import resolve_references

    try:
        grid = resolve_references(load_grid(resolve_grid(grid_path)), sweep_root(root), dry_run=dry_run)
        return Plan(grid, tuple(expand(grid)))
    except GridError as error:
        raise BadInput(str(error)) from None


def _held_runs(store: Store, sweep: SweepDir) -> set[str]:
    """The runs a live worker holds (its claim in the store, or in claim files for a spooled sweep) or the scheduler
    still has pending or running: queueing them again would train them twice. Decided from the store and the
    scheduler, so it is right on cluster file systems whose file locks are invisible from the login node."""
    stale_after = claim_stale_seconds()
    if sweep.read_meta().get("spool"):
        claimed = FileClaims(sweep.path).live([row.run_id for row in store.sweep_runs(sweep.name)], stale_after)
    else:
        claimed = store.live_claims(sweep.name, stale_after)
    return claimed | backend_of(sweep).vouched(sweep)


def _queue(store: Store, sweep: SweepDir, rows: Sequence[RunRow]) -> list[RunRow]:
    """Mark ``rows`` queued, skipping finished runs and runs a live worker or the scheduler holds; return those
    queued.

    One transaction for all of them (a grid of a thousand runs is one round trip per chunk, not per run).
    """
    held = _held_runs(store, sweep) if rows else set()
    candidates = [row.run_id for row in rows if row.status not in FINISHED and row.run_id not in held]
    queued = set(store.set_status_many(candidates, RunState.QUEUED.value, unless=FINISHED))
    return [row for row in rows if row.run_id in queued]


def _extend_plan(sweep: SweepDir, runs: Sequence[RunSpec], indices: Sequence[int]) -> None:
    """Append new runs to ``plan.json`` at the indices the store gave them (the plan is append-only)."""
    plan = sweep.read_plan()
    for spec, index in sorted(zip(runs, indices, strict=True), key=lambda pair: pair[1]):
        if index < len(plan):
            if plan[index].run_id != spec.run_id:
                raise RuntimeError(f"{sweep.plan_file} disagrees with the store at index {index}")
        elif index == len(plan):
            plan.append(spec)  # type: ignore[arg-type]
        else:
            raise RuntimeError(f"{sweep.plan_file} has a gap before index {index}")
    sweep.write_plan(plan)


def _backend(name: str) -> Backend:
    try:
        return get_backend(name)
    except ValueError as error:
        raise BadInput(str(error)) from None


def _backend_choice(backend: str | None, profile: str | None) -> tuple[str, Profile | None]:
    """The backend to submit with (``backend``, else the profile's, else local) and the profile, validated."""
    if not profile:
        return backend or "local", None
    from lsbench.sweep.backends.profile import ProfileError, load_profile

    try:
        loaded = load_profile(profile)
    except ProfileError as error:
        raise BadInput(str(error)) from None
    if backend and backend != loaded.backend:
        raise BadInput(f"backend {backend!r} contradicts {loaded.source} (backend: {loaded.backend})")
    return loaded.backend, loaded


@dataclass(frozen=True)
class _DataLocation:
    """Where a submission's workers will read datasets, as seen from here, and how messages describe it."""

    path: Path
    origin: str  # where the path comes from
    set_dir: str  # how to change it


def _data_location(backend: Backend, sweep: SweepDir, options: SubmitOptions) -> _DataLocation:
    """The profile's ``data_dir`` where the backend reads one (Slurm: a shared path the login node sees too), else
    ``$LSBENCH_DATA`` or its default, which the local pool's workers and sbatch's jobs inherit from here."""
    from lsbench.problems import sources

    locate = getattr(backend, "data_dir", None)
    if locate is None:
        return _DataLocation(sources.default_data_dir(), sources.data_dir_origin(), "set $LSBENCH_DATA")
    try:
        data_dir, source = locate(sweep, options)
    except BackendInputError as error:
        raise BadInput(str(error)) from None
    from lsbench.sweep.backends.profile import SHIPPED_PROFILES

    # A shipped profile lives inside the installed package: the user edits a copy, given by path.
    shipped = Path(source).resolve().parent == SHIPPED_PROFILES
    set_dir = f"set data_dir in {'a copy of ' if shipped else ''}{source}"
    if data_dir is not None:
        return _DataLocation(Path(data_dir), f"data_dir of {source}", set_dir)
    origin = f"{sources.data_dir_origin()}; {source} sets no data_dir"
    return _DataLocation(sources.default_data_dir(), origin, set_dir)


def _data_problems(runs: Iterable[RunSpec], location: _DataLocation, where: str) -> list[str]:
    """Missing data of ``runs`` in ``location``, one line per dataset; a split rule a dataset does not offer is
    :class:`BadInput` (it is wrong wherever the data is) saying ``where`` (the grid file, the sweep)."""
    from lsbench.problems import sources

    pairs = list(dict.fromkeys((run.problem, run.split) for run in runs))  # in plan order, for the messages
    try:
        wrong = sources.check_splits(pairs)
    except sources.DataError as error:
        raise BadInput(f"{where}: {error}") from None
    if wrong:
        raise BadInput(f"{where}: {_one_line(wrong)}")
    return sources.check_data(pairs, location.path, origin=location.origin, set_dir=location.set_dir)


def _require_data(runs: Iterable[RunSpec], location: _DataLocation, where: str) -> None:
    """:class:`BadInput` unless every run can read its data (checked before a run is queued)."""
    missing = _data_problems(runs, location, where)
    if missing:
        raise BadInput(_one_line(missing))


def _one_line(problems: Sequence[str]) -> str:
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more: `lsbench data check` lists them)" if more else "")


def _validate(backend: Backend, sweep: SweepDir, store_url: str, options: SubmitOptions) -> None:
    """Let the backend reject a submission before anything is written (backends may offer ``validate``)."""
    validate = getattr(backend, "validate", None)
    if validate is not None:
        try:
            validate(sweep, store_url, options)
        except BackendInputError as error:
            raise BadInput(str(error)) from None


def _backend_submit(
    backend: Backend, sweep: SweepDir, store: Store, runs: Sequence[RunRow], options: SubmitOptions
) -> str:
    try:
        return backend.submit(sweep, store, runs, options)
    except BackendInputError as error:
        raise BadInput(str(error)) from None
