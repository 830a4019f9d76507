"""Initial schema: sweeps, runs, sweep_runs, attempts, metrics.

Revision ID: 0001
Revises:
Create Date: 2026-05-20

Written by hand and frozen: it does not import the live table definitions, so later schema changes go into new
revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("grid_hash", sa.String(64), nullable=False),
        sa.Column("grid_text", sa.Text(), nullable=False),
        sa.Column("sweep_dir", sa.Text(), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_sweeps"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("problem", sa.String(128), nullable=False),
        sa.Column("optimizer", sa.String(64), nullable=False),
        sa.Column("hparams", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("eval_every", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("weight_decay", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("diverged_at_step", sa.Integer(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
    )
    op.create_table(
        "sweep_runs",
        sa.Column("sweep", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["sweep"], ["sweeps.name"], name="fk_sweep_runs_sweep_sweeps", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_sweep_runs_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sweep", "run_id", name="pk_sweep_runs"),
        sa.UniqueConstraint("sweep", "idx", name="uq_sweep_runs_sweep_idx"),
    )
    op.create_index("ix_sweep_runs_run_id", "sweep_runs", ["run_id"])
    op.create_table(
        "attempts",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("attempt_id", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("gpu", sa.String(255), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_step", sa.Integer(), nullable=True),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_attempts_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "attempt_id", name="pk_attempts"),
    )
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_metrics_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "step", "name", name="pk_metrics"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_table("attempts")
    op.drop_index("ix_sweep_runs_run_id", table_name="sweep_runs")
    op.drop_table("sweep_runs")
    op.drop_table("runs")
    op.drop_table("sweeps")
