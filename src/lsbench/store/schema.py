"""SQLAlchemy Core tables of the result store.

These describe the schema *at the head revision* and are what the queries use. The database itself is created and
changed only by the Alembic migrations in ``migrations/versions`` (a test checks that the two agree).

Tables:

- ``sweeps``: one row per sweep name (grid hash and text, sweep directory, backend).
- ``runs``: one row per run id, global across sweeps (a run shared by two grids is the same run); its identity
  columns are the fields of :class:`lsbench.runs.RunSpec`.
- ``sweep_runs``: membership with a stable, append-only index per sweep (primary key (sweep, run_id), unique
  (sweep, idx)).
- ``attempts``: one row per execution of a run, keyed (run_id, attempt_id).
- ``metrics``: keyed (run_id, step, name), so a re-written key is never a duplicate. The primary key's index is also
  the (run_id, step) index the "last step of each run" lookup uses; on SQLite the table is ``WITHOUT ROWID`` so the
  value sits in the same B-tree as the key.

Timestamps are UTC; JSON columns use the generic :class:`sqlalchemy.JSON` type (TEXT on SQLite, json on Postgres).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_type_hints

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from lsbench.runs.spec import IDENTITY_FIELDS, RunSpec, canonical_json, field_default

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones: values are stored as naive UTC and read back with ``tzinfo=UTC``; Postgres stores
    ``timestamptz`` and values are converted to UTC on read. Naive datetimes are rejected on write.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


sweeps = Table(
    "sweeps",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("grid_hash", String(64), nullable=False),
    Column("grid_text", Text, nullable=False),
    Column("sweep_dir", Text, nullable=False),
    Column("backend", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


def _identity_columns() -> list[Column[Any]]:
    """One column per field of :class:`lsbench.runs.RunSpec`, so a new run field needs no edit here (only a
    migration). Strings get their declared length; implicit fields a server default, which is what rows recorded
    before the field existed hold."""
    types = get_type_hints(RunSpec)
    columns: list[Column[Any]] = []
    for f in IDENTITY_FIELDS:
        python_type = types[f.name]
        column_type: Any = {str: String(f.metadata["max_length"]), int: Integer, float: Float}.get(python_type, JSON)
        value = field_default(f)
        default = (
            {"server_default": canonical_json(value) if isinstance(value, dict) else value}
            if f.metadata["implicit"]
            else {}
        )
        columns.append(Column(f.name, column_type, primary_key=f.name == "run_id", nullable=False, **default))
    return columns


runs = Table(
    "runs",
    metadata,
    *_identity_columns(),
    Column("status", String(16), nullable=False),
    Column("step", Integer, nullable=True),
    Column("diverged_at_step", Integer, nullable=True),
    Column("summary", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The attempt that holds the run (Store.start_attempt with a claim); stays after it ends.
    Column("claim", String(128), nullable=True),
    # Where the run's measured arrays lie (a linescan run's zarr group); null for runs without.
    Column("arrays", Text, nullable=True),
)
"""Identity columns (:data:`lsbench.runs.spec.IDENTITY_FIELDS`), then the run's state."""

sweep_runs = Table(
    "sweep_runs",
    metadata,
    Column("sweep", String(64), ForeignKey("sweeps.name", ondelete="CASCADE"), nullable=False),
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    PrimaryKeyConstraint("sweep", "run_id"),
    UniqueConstraint("sweep", "idx"),
    Index("ix_sweep_runs_run_id", "run_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("attempt_id", String(128), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("job_id", String(64), nullable=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("gpu", String(255), nullable=True),
    Column("log_path", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("heartbeat_step", Integer, nullable=True),
    Column("versions", JSON, nullable=False),
    PrimaryKeyConstraint("run_id", "attempt_id"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("name", String(64), nullable=False),
    # Nullable because SQLite stores NaN as NULL; the store reads NULL back as NaN.
    Column("value", Float, nullable=True),
    PrimaryKeyConstraint("run_id", "step", "name"),
    sqlite_with_rowid=False,
)
