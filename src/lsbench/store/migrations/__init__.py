"""Alembic migration environment of the result store (run programmatically by :mod:`lsbench.store.migrate`)."""
