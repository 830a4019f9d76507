"""Numerical precision of a run: ``runs.precision`` (``fp32``, ``tf32`` or ``bf16``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Precision changes what a run computes (TensorFloat-32 or bfloat16 passes on Ampere and newer GPUs), so it is part
of the run's identity; like ``split`` and ``kind`` it enters the run id only when not the default, so existing runs
keep their ids and get ``fp32``: they were trained without a precision setting, i.e. in IEEE float32 on the CPU and
on GPUs older than Ampere (on Ampere and newer, PyTorch's default let cuDNN convolutions run in TensorFloat-32; the
GPU model recorded with each attempt tells those apart).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("precision", sa.String(8), nullable=False, server_default="fp32"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("precision")
