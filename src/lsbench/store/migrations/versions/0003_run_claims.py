"""Run claims: ``runs.claim`` names the attempt that holds the run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Whether a run may be trained again used to be decided by a file lock seen from the login node, which on cluster file
systems with node-local locks sees nothing. A worker now claims its run in the store with a conditional write that
only one attempt can win. Existing runs start unclaimed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("claim", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("claim")
