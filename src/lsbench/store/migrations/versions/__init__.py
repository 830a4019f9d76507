"""Alembic revisions of the result store, one file per revision (``NNNN_<slug>.py``)."""
