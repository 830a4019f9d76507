"""Store every field of a run's identity: ``split`` and ``kind`` columns on ``runs``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Before this revision the split entered a run's id (when not the default) but was not stored, so a run id could not
be rebuilt from its row. Existing rows get ``kind = 'train'`` (the only kind then) and the split whose hash
reproduces their id: the default split unless the id was hashed with another (an online upgrade only: rendered
offline SQL cannot hash rows). Frozen like every revision: the
splits that existed at this revision are listed here, not imported.
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NON_DEFAULT_SPLITS = ("labpal",)
_IDENTITY = ("problem", "optimizer", "hparams", "seed", "steps", "eval_every", "batch_size", "weight_decay")


def _run_id(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("split", sa.String(32), nullable=False, server_default="default"))
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
    if context.is_offline_mode():
        # SQL rendered for a DBA has no rows to read; the split of existing rows is recovered by an online upgrade.
        op.execute("-- runs.split of existing rows: run the upgrade online (Store(url) does) to recover it")
        return
    runs = sa.table("runs", sa.column("run_id"), sa.column("split"), *(sa.column(name) for name in _IDENTITY))
    bind = op.get_bind()
    rows = bind.execute(sa.select(runs.c.run_id, *(runs.c[name] for name in _IDENTITY))).all()
    for row in rows:
        identity = {name: getattr(row, name) for name in _IDENTITY}
        if isinstance(identity["hparams"], str):  # a driver that hands JSON back as text
            identity["hparams"] = json.loads(identity["hparams"])
        if _run_id(identity) == row.run_id:
            continue
        for split in _NON_DEFAULT_SPLITS:
            if _run_id({**identity, "split": split}) == row.run_id:
                bind.execute(sa.update(runs).where(runs.c.run_id == row.run_id).values(split=split))
                break


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("kind")
        batch.drop_column("split")
