"""Result store of the sweep toolkit: SQLAlchemy schema, Alembic migrations and the :class:`Store` API.

``Store(url)`` opens (and migrates to head) a SQLite file (``sqlite:///path``, one machine only) or a Postgres database
(the cluster setup). See :mod:`lsbench.store.store` for the API, :mod:`lsbench.store.engine` for connection settings
and :mod:`lsbench.store.migrate` for migrations.
"""

from lsbench.store.engine import redact_url
from lsbench.store.migrate import current_revision, head_revision
from lsbench.store.retry import StoreUnavailable
from lsbench.store.rows import RUN_STATES, AttemptRow, MetricRow, RunRow, SweepRow
from lsbench.store.store import Store

__all__ = [
    "RUN_STATES",
    "AttemptRow",
    "MetricRow",
    "RunRow",
    "Store",
    "StoreUnavailable",
    "SweepRow",
    "current_revision",
    "head_revision",
    "redact_url",
]
