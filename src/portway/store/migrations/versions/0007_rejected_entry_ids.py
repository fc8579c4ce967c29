"""Refused usage rows keep their entry id, unique: a journal replayed after a
partial failure sets a row aside once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``usage_rejected.entry_id`` (empty for the rows set aside before it)."""
    with op.batch_alter_table("usage_rejected") as batch:
        batch.add_column(sa.Column("entry_id", sa.String(32), nullable=True))
        batch.create_index("ix_usage_rejected_entry_id", ["entry_id"], unique=True)


def downgrade() -> None:
    """Drop ``usage_rejected.entry_id``."""
    with op.batch_alter_table("usage_rejected") as batch:
        batch.drop_index("ix_usage_rejected_entry_id")
        batch.drop_column("entry_id")
