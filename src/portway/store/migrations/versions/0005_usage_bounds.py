"""Usage ledger: 64-bit token counts, 256-character end users, a unique entry id
(a row replayed after a crash is stored once), and a table of refused rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Widen ``usage_records``, add ``entry_id``, create ``usage_rejected``."""
    with op.batch_alter_table("usage_records") as batch:
        for name in ("prompt_tokens", "completion_tokens"):
            batch.alter_column(name, existing_type=sa.Integer(), type_=sa.BigInteger())
        batch.alter_column("end_user", existing_type=sa.String(200), type_=sa.String(256))
        batch.add_column(sa.Column("entry_id", sa.String(32), nullable=True))
        batch.create_index("ix_usage_records_entry_id", ["entry_id"], unique=True)
    op.create_table(
        "usage_rejected",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_rejected"),
    )


def downgrade() -> None:
    """Drop ``usage_rejected`` and ``entry_id``; narrow the columns back (values
    that no longer fit make this fail rather than be cut)."""
    op.drop_table("usage_rejected")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_entry_id")
        batch.drop_column("entry_id")
        batch.alter_column("end_user", existing_type=sa.String(256), type_=sa.String(200))
        for name in ("prompt_tokens", "completion_tokens"):
            batch.alter_column(name, existing_type=sa.BigInteger(), type_=sa.Integer())
