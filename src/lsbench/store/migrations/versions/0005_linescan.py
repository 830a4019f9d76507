"""Linescan runs: their measurement settings ``runs.linescan`` and the pointer ``runs.arrays`` to their arrays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

``linescan`` is part of a run's identity (the step sizes, data set and interval a linescan run measures). Like
``split``, ``kind`` and ``precision`` it enters the run id only when not its default, the empty mapping every other
kind of run holds, so existing runs keep their ids and get ``{}``. ``arrays`` says where a run's measured arrays lie
(a linescan run's zarr group on the shared file system, see :mod:`lsbench.lines.arrays`); null for runs without.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("linescan", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("arrays", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("arrays")
        batch.drop_column("linescan")
