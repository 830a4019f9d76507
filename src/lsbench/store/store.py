"""The result store: sweeps, runs, attempts and metrics in SQLite or Postgres through SQLAlchemy Core.

Every method runs one short transaction on a fresh connection (``NullPool``) and returns plain frozen dataclasses, so
callers never hold sessions or connections. Writes are idempotent where a retried or requeued worker may repeat them:
metrics are keyed (run_id, step, name) and inserted with ``ON CONFLICT DO NOTHING``, attempts are keyed
(run_id, attempt_id), and run rows and sweep indices are created once. That is also what makes every method safe to
retry when the database is briefly unreachable (:mod:`lsbench.store.retry`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from types import TracebackType
from typing import Any

from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url

from lsbench.runs.spec import IDENTITY_FIELDS, RunSpec
from lsbench.store import schema
from lsbench.store.engine import create_store_engine, redact_url, writer
from lsbench.store.migrate import upgrade_to_head
from lsbench.store.retry import retried
from lsbench.store.rows import RUN_STATES, AttemptRow, MetricRow, RunRow, SweepRow

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
_BULK_CHUNK = 10_000
_ATTEMPT_RUNNING = "running"


def _now() -> datetime:
    return datetime.now(UTC)


def _metric_value(value: Any) -> float | None:
    """A metric value as stored: a float, NaN as NULL (SQLite has no NaN; Postgres is kept the same)."""
    v = float(value)
    return None if math.isnan(v) else v


def _read_value(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _encode_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Summary values as JSON-safe values: non-finite floats become "NaN"/"Infinity"/"-Infinity" (not valid JSON)."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if value is None:
            out[str(key)] = None
            continue
        v = float(value)
        out[str(key)] = v if math.isfinite(v) else ("NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity"))
    return out


def _decode_summary(summary: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: (float(v) if isinstance(v, str) else v) for k, v in (summary or {}).items()}


def _check_status(status: str) -> None:
    if status not in RUN_STATES:
        raise ValueError(f"unknown status {status!r} (valid: {', '.join(RUN_STATES)})")


def _chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class Store:
    """Result store behind an SQLAlchemy URL (``sqlite:///path`` or ``postgresql://...``).

    Opening migrates the database to the packaged Alembic head (idempotent; safe when several processes open the same
    new database at once, see :mod:`lsbench.store.migrate`). SQLite gets WAL, ``busy_timeout`` 30 s and foreign keys
    (see :mod:`lsbench.store.engine`). ``url`` is the URL as given; print or log only ``redacted_url``.

    Missing sweeps, runs or attempts raise :class:`KeyError`; statuses outside :data:`RUN_STATES` raise
    :class:`ValueError`.
    """

    def __init__(self, url: str) -> None:
        self.url = str(url)
        self.redacted_url = redact_url(self.url)
        backend = make_url(self.url).get_backend_name()
        if backend not in SUPPORTED_DIALECTS:
            raise ValueError(f"unsupported store database {backend!r} (supported: {', '.join(SUPPORTED_DIALECTS)})")
        self._password = make_url(self.url).password
        self._engine = create_store_engine(self.url)
        try:
            self._migrate()
        except BaseException:
            self._engine.dispose()
            raise
        self._writer = writer(self._engine)

    @retried
    def _migrate(self) -> None:
        upgrade_to_head(self._engine)

    def scrub(self, text: str) -> str:
        """``text`` with this store's password blanked out (driver error messages may quote connection strings)."""
        return text.replace(self._password, "***") if self._password else text

    def __repr__(self) -> str:
        return f"Store({self.redacted_url!r})"

    def close(self) -> None:
        """Release the engine (idempotent; with NullPool no connection is held between calls anyway)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT (which has ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    @staticmethod
    def _require_run(conn: Connection, run_id: str) -> None:
        if conn.execute(select(schema.runs.c.run_id).where(schema.runs.c.run_id == run_id)).first() is None:
            raise KeyError(f"unknown run {run_id!r}")

    # ------------------------------------------------------------------ sweeps

    @retried
    def upsert_sweep(self, name: str, grid_hash: str, grid_text: str, sweep_dir: str, backend: str) -> None:
        """Create the sweep, or update its grid, directory and backend (``created_at`` is kept)."""
        now = _now()
        stmt = self._insert(schema.sweeps).values(
            name=name,
            grid_hash=grid_hash,
            grid_text=grid_text,
            sweep_dir=str(sweep_dir),
            backend=backend,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[schema.sweeps.c.name],
            set_={
                "grid_hash": stmt.excluded.grid_hash,
                "grid_text": stmt.excluded.grid_text,
                "sweep_dir": stmt.excluded.sweep_dir,
                "backend": stmt.excluded.backend,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        with self._writer.begin() as conn:
            conn.execute(stmt)

    @retried
    def get_sweep(self, name: str) -> SweepRow | None:
        with self._engine.begin() as conn:
            row = conn.execute(select(schema.sweeps).where(schema.sweeps.c.name == name)).first()
        return None if row is None else SweepRow(**row._mapping)

    @retried
    def list_sweeps(self) -> list[SweepRow]:
        """All sweeps, oldest first."""
        stmt = select(schema.sweeps).order_by(schema.sweeps.c.created_at, schema.sweeps.c.name)
        with self._engine.begin() as conn:
            return [SweepRow(**row._mapping) for row in conn.execute(stmt)]

    # ------------------------------------------------------------------ runs

    @retried
    def add_runs(self, sweep: str, specs: Sequence[RunSpec]) -> list[int]:
        """Add runs to a sweep; returns the sweep index of every spec, in order.

        Indices start at 0 and are append-only: pairs (sweep, run_id) already present keep their index, new run ids
        get the next free indices in the order given (a run id repeated in ``specs`` gets one index). Run rows are
        created with status "planned" when new and left untouched when they exist (possibly from another sweep).
        One transaction; concurrent calls for the same sweep are serialized (SQLite write lock, Postgres row lock on
        the sweep).
        """
        specs = list(specs)
        first: dict[str, RunSpec] = {}
        for spec in specs:
            first.setdefault(str(spec.run_id), spec)
        now = _now()
        run_rows = [
            {
                **spec.to_dict(),
                "status": "planned",
                "step": None,
                "diverged_at_step": None,
                "summary": {},
                "created_at": now,
                "updated_at": now,
            }
            for spec in first.values()
        ]
        sr = schema.sweep_runs
        with self._writer.begin() as conn:
            locked = select(schema.sweeps.c.name).where(schema.sweeps.c.name == sweep).with_for_update()
            if conn.execute(locked).first() is None:
                raise KeyError(f"unknown sweep {sweep!r} (call upsert_sweep first)")
            for chunk in _chunks(run_rows, _BULK_CHUNK):
                conn.execute(self._insert(schema.runs).on_conflict_do_nothing(index_elements=["run_id"]), chunk)
            index: dict[str, int] = dict(conn.execute(select(sr.c.run_id, sr.c.idx).where(sr.c.sweep == sweep)).all())
            next_idx = max(index.values(), default=-1) + 1
            members = []
            for run_id in first:
                if run_id not in index:
                    index[run_id] = next_idx
                    members.append({"sweep": sweep, "run_id": run_id, "idx": next_idx})
                    next_idx += 1
            for chunk in _chunks(members, _BULK_CHUNK):
                conn.execute(sr.insert(), chunk)
        return [index[str(spec.run_id)] for spec in specs]

    @staticmethod
    def _run_row(row: Row[Any], index: int | None) -> RunRow:
        m = row._mapping
        return RunRow(
            **{f.name: m[f.name] for f in IDENTITY_FIELDS},
            index=index,
            status=m["status"],
            step=m["step"],
            diverged_at_step=m["diverged_at_step"],
            summary=_decode_summary(m["summary"]),
            updated_at=m["updated_at"],
            arrays=m["arrays"],
        )

    @retried
    def sweep_runs(self, sweep: str) -> list[RunRow]:
        """The runs of a sweep ordered by index (one query; empty for an unknown sweep)."""
        sr, r = schema.sweep_runs, schema.runs
        stmt = (
            select(r, sr.c.idx)
            .select_from(sr.join(r, r.c.run_id == sr.c.run_id))
            .where(sr.c.sweep == sweep)
            .order_by(sr.c.idx)
        )
        with self._engine.begin() as conn:
            return [self._run_row(row, row.idx) for row in conn.execute(stmt)]

    @retried
    def get_run(self, run_id: str) -> RunRow | None:
        """The run (``index`` is None: runs are global, a run may belong to several sweeps)."""
        with self._engine.begin() as conn:
            row = conn.execute(select(schema.runs).where(schema.runs.c.run_id == run_id)).first()
        return None if row is None else self._run_row(row, None)

    @retried
    def set_run_status(
        self,
        run_id: str,
        status: str,
        *,
        step: int | None = None,
        diverged_at_step: int | None = None,
        summary: Mapping[str, float] | None = None,
        arrays: str | None = None,
        end_attempt: Sequence[Any] | None = None,
    ) -> None:
        """Set the run's status; ``step``, ``diverged_at_step``, ``summary`` and ``arrays`` (where the run's
        measured arrays lie) are changed only when given.

        A given ``summary`` replaces the stored one (non-finite values round-trip). ``end_attempt=(attempt_id,
        exit_code)`` also ends that attempt with the same status in the same transaction, so a worker killed at any
        instant never leaves a finished run without its finished attempt (or the other way round).
        """
        _check_status(status)
        values: dict[str, Any] = {"status": status, "updated_at": _now()}
        if step is not None:
            values["step"] = int(step)
        if diverged_at_step is not None:
            values["diverged_at_step"] = int(diverged_at_step)
        if summary is not None:
            values["summary"] = _encode_summary(summary)
        if arrays is not None:
            values["arrays"] = arrays
        with self._writer.begin() as conn:
            result = conn.execute(update(schema.runs).where(schema.runs.c.run_id == run_id).values(**values))
            if result.rowcount == 0:
                raise KeyError(f"unknown run {run_id!r}")
            if end_attempt is not None:
                attempt_id, exit_code = end_attempt
                ended = {"status": status, "exit_code": int(exit_code), "ended_at": _now()}
                self._update_attempt(run_id, attempt_id, conn=conn, **ended)

    @retried
    def set_status_many(self, run_ids: Iterable[str], status: str, *, unless: Iterable[str] = ()) -> list[str]:
        """Set ``status`` on every run of ``run_ids`` whose current status is not in ``unless``, in one transaction.

        Returns the run ids that were changed, in the order given. Queueing, cancelling and resubmitting a sweep of
        thousands of runs is then one round trip per chunk instead of one transaction per run (on Postgres with
        password authentication each fresh connection costs milliseconds). Unknown run ids are ignored.
        """
        _check_status(status)
        wanted = list(dict.fromkeys(str(run_id) for run_id in run_ids))
        skip = [str(state) for state in unless]
        r = schema.runs
        changed: set[str] = set()
        with self._writer.begin() as conn:
            for chunk in _chunks(wanted, _BULK_CHUNK):
                condition = r.c.run_id.in_(chunk)
                if skip:
                    condition &= r.c.status.not_in(skip)
                ids = [row.run_id for row in conn.execute(select(r.c.run_id).where(condition))]
                if ids:
                    conn.execute(update(r).where(r.c.run_id.in_(ids)).values(status=status, updated_at=_now()))
                changed.update(ids)
        return [run_id for run_id in wanted if run_id in changed]

    # ------------------------------------------------------------------ attempts

    @retried
    def start_attempt(
        self,
        run_id: str,
        attempt_id: str,
        *,
        backend: str,
        job_id: str | None,
        host: str,
        pid: int,
        log_path: str,
        gpu: str | None,
        versions: Mapping[str, str],
        claim_stale_after: float | None = None,
    ) -> bool:
        """Record the start of an attempt (status "running"); a repeated (run_id, attempt_id) leaves the first row.

        With ``claim_stale_after`` the attempt also *claims* the run, and is recorded only if it wins: the run is
        free, or the attempt holding it has ended or sent no heartbeat for ``claim_stale_after`` seconds. Exactly
        one of several workers started for the same run wins, whichever machines they run on (a file lock is only
        seen on its own node on many cluster file systems). Returns whether the attempt was recorded.

        The claim is decided under a row lock on the run (``SELECT ... FOR UPDATE``; SQLite's write transaction),
        and the holder is read by a statement after the lock is granted, so on Postgres it sees a rival's attempt
        committed while this one waited.
        """
        now = _now()
        stmt = (
            self._insert(schema.attempts)
            .values(
                run_id=run_id,
                attempt_id=attempt_id,
                backend=backend,
                job_id=None if job_id is None else str(job_id),
                host=host,
                pid=int(pid),
                gpu=gpu,
                log_path=str(log_path),
                status=_ATTEMPT_RUNNING,
                exit_code=None,
                started_at=now,
                ended_at=None,
                heartbeat_at=now,
                heartbeat_step=None,
                versions={str(k): str(v) for k, v in versions.items()},
            )
            .on_conflict_do_nothing(index_elements=["run_id", "attempt_id"])
        )
        r = schema.runs
        with self._writer.begin() as conn:
            holder = conn.execute(select(r.c.claim).where(r.c.run_id == run_id).with_for_update()).first()
            if holder is None:
                raise KeyError(f"unknown run {run_id!r}")
            if claim_stale_after is not None:
                held_by_another = holder.claim not in (None, attempt_id)
                if held_by_another and self._claim_is_live(conn, run_id, holder.claim, now, claim_stale_after):
                    return False
                conn.execute(update(r).where(r.c.run_id == run_id).values(claim=attempt_id))
            conn.execute(stmt)
        return True

    @staticmethod
    def _claim_is_live(conn: Connection, run_id: str, attempt_id: str, now: datetime, stale_after: float) -> bool:
        a = schema.attempts
        row = conn.execute(
            select(a.c.status, a.c.heartbeat_at).where(a.c.run_id == run_id, a.c.attempt_id == attempt_id)
        ).first()
        if row is None or row.status != _ATTEMPT_RUNNING:
            return False
        return (now - (row.heartbeat_at or now)).total_seconds() <= stale_after

    @retried
    def live_claims(self, sweep: str, stale_after: float) -> set[str]:
        """The runs of ``sweep`` held by an attempt that is still running and sent a heartbeat within
        ``stale_after`` seconds: what a resubmission must leave alone, whichever node the worker runs on."""
        r, sr, a = schema.runs, schema.sweep_runs, schema.attempts
        cutoff = _now() - timedelta(seconds=stale_after)
        stmt = (
            select(r.c.run_id)
            .select_from(sr.join(r, r.c.run_id == sr.c.run_id))
            .join(a, (a.c.run_id == r.c.run_id) & (a.c.attempt_id == r.c.claim))
            .where(sr.c.sweep == sweep, a.c.status == _ATTEMPT_RUNNING, a.c.heartbeat_at >= cutoff)
        )
        with self._engine.begin() as conn:
            return {row.run_id for row in conn.execute(stmt)}

    def _update_attempt(self, run_id: str, attempt_id: str, conn: Connection | None = None, **values: Any) -> None:
        a = schema.attempts
        stmt = update(a).where(a.c.run_id == run_id, a.c.attempt_id == attempt_id).values(**values)
        with self._writer.begin() if conn is None else contextlib.nullcontext(conn) as active:
            if active.execute(stmt).rowcount == 0:
                raise KeyError(f"unknown attempt {attempt_id!r} of run {run_id!r}")

    @retried
    def heartbeat(self, run_id: str, attempt_id: str, step: int | None, at: datetime | None = None) -> bool:
        """Record that the attempt is alive (at ``at``, default now) at ``step``; ``step`` None keeps the last one.

        Returns whether the attempt still holds the run's claim (True for attempts that never claimed): a worker
        that lost it -- silent for too long, and another worker took the run over -- must stop training.
        """
        values: dict[str, Any] = {"heartbeat_at": at or _now()}
        if step is not None:
            values["heartbeat_step"] = int(step)
        r = schema.runs
        with self._writer.begin() as conn:
            self._update_attempt(run_id, attempt_id, conn=conn, **values)
            claim = conn.execute(select(r.c.claim).where(r.c.run_id == run_id)).scalar_one_or_none()
        return claim in (None, attempt_id)

    @retried
    def end_attempt(self, run_id: str, attempt_id: str, status: str, exit_code: int) -> None:
        """Record the end of an attempt (status from :data:`RUN_STATES`; repeating it overwrites)."""
        _check_status(status)
        self._update_attempt(run_id, attempt_id, status=status, exit_code=int(exit_code), ended_at=_now())

    @retried
    def attempts(self, run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of one run (or of all runs), in order of start."""
        a = schema.attempts
        stmt = select(a).order_by(a.c.started_at, a.c.run_id, a.c.attempt_id)
        if run_id is not None:
            stmt = stmt.where(a.c.run_id == run_id)
        with self._engine.begin() as conn:
            return [AttemptRow(**{**row._mapping, "versions": dict(row.versions)}) for row in conn.execute(stmt)]

    # ------------------------------------------------------------------ metrics

    def _metrics_insert(self) -> Any:
        return self._insert(schema.metrics).on_conflict_do_nothing(index_elements=["run_id", "step", "name"])

    def _insert_metric_rows(self, conn: Connection, rows: Iterable[tuple[str, int, str, float | None]]) -> None:
        """Execute the metrics INSERT ... ON CONFLICT DO NOTHING for ``rows`` in chunks, on ``conn``'s transaction.

        On SQLite the statement is compiled once and run through the driver's ``executemany`` with plain tuples
        (SQLAlchemy's per-row parameter processing costs about twice the insert itself); elsewhere SQLAlchemy's
        executemany (batched "insertmanyvalues" on Postgres) is used.
        """
        stmt = self._metrics_insert()
        columns = ("run_id", "step", "name", "value")
        if self._engine.dialect.name == "sqlite":
            compiled = stmt.compile(dialect=self._engine.dialect)
            order = [columns.index(key) for key in compiled.positiontup]
            identity = order == [0, 1, 2, 3]
            for chunk in _chunks(rows, _BULK_CHUNK):
                conn.exec_driver_sql(str(compiled), chunk if identity else [tuple(r[i] for i in order) for r in chunk])
        else:
            for chunk in _chunks(rows, _BULK_CHUNK):
                conn.execute(stmt, [dict(zip(columns, r, strict=True)) for r in chunk])

    @retried
    def add_metrics(self, run_id: str, step: int, values: Mapping[str, float]) -> None:
        """Write metric values of one step; keys (run_id, step, name) already present are left as they are."""
        rows = [(run_id, int(step), str(name), _metric_value(value)) for name, value in values.items()]
        if not rows:
            return
        with self._writer.begin() as conn:
            self._require_run(conn, run_id)
            self._insert_metric_rows(conn, rows)

    @retried
    def add_metrics_many(self, rows: Iterable[tuple[str, int, str, float]]) -> None:
        """Write ``(run_id, step, name, value)`` rows in one transaction (streamed in chunks; duplicates ignored).

        For ingestion and benchmarks: run ids are not checked one by one, an unknown run id fails the foreign key
        (:class:`sqlalchemy.exc.IntegrityError`) and nothing of the call is written.
        """
        records = ((run_id, int(step), str(name), _metric_value(value)) for run_id, step, name, value in rows)
        with self._writer.begin() as conn:
            self._insert_metric_rows(conn, records)

    @retried
    def metrics(self, run_id: str) -> list[MetricRow]:
        """All metric values of a run ordered by (step, name)."""
        m = schema.metrics
        stmt = select(m).where(m.c.run_id == run_id).order_by(m.c.step, m.c.name)
        with self._engine.begin() as conn:
            return [MetricRow(row.run_id, row.step, row.name, _read_value(row.value)) for row in conn.execute(stmt)]

    @retried
    def final_metrics(self, sweep: str) -> dict[str, dict[str, float]]:
        """run_id -> {name: value} at each run's last step (the largest step with any metric), for one sweep.

        One query: per member run, the last step comes from an index lookup (max over the (run_id, step) prefix of the
        metrics primary key) and only that step's rows are read. Runs without metrics are absent.
        """
        sr, m = schema.sweep_runs, schema.metrics
        m_last = m.alias("m_last")
        last_step = (
            select(func.max(m_last.c.step)).where(m_last.c.run_id == sr.c.run_id).scalar_subquery().label("last_step")
        )
        last = select(sr.c.run_id, last_step).where(sr.c.sweep == sweep).subquery("last")
        stmt = select(m.c.run_id, m.c.name, m.c.value).select_from(
            last.join(m, (m.c.run_id == last.c.run_id) & (m.c.step == last.c.last_step))
        )
        out: dict[str, dict[str, float]] = {}
        with self._engine.begin() as conn:
            for run_id, name, value in conn.execute(stmt):
                out.setdefault(run_id, {})[name] = _read_value(value)
        return out

    @retried
    def sweep_metrics(self, sweep: str) -> list[tuple[str, int, str, float]]:
        """Every metric row ``(run_id, step, name, value)`` of a sweep's runs, in one query, ordered by run id, step
        and name (NaN for a stored NULL). For reports and exports, which need every curve at once."""
        sr, m = schema.sweep_runs, schema.metrics
        stmt = (
            select(m.c.run_id, m.c.step, m.c.name, m.c.value)
            .select_from(sr.join(m, m.c.run_id == sr.c.run_id))
            .where(sr.c.sweep == sweep)
            .order_by(m.c.run_id, m.c.step, m.c.name)
        )
        with self._engine.begin() as conn:
            return [(run_id, step, name, _read_value(value)) for run_id, step, name, value in conn.execute(stmt)]
