"""Limits per user and per token: requests and tokens per minute, concurrent
requests, tokens per day and per month (NULL: unlimited).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``limits``: one row per user or per token."""
    op.create_table(
        "limits",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_limits_user_id_users"),
            nullable=True,
        ),
        sa.Column(
            "token_id",
            sa.String(64),
            sa.ForeignKey(
                "api_tokens.id", ondelete="CASCADE", name="fk_limits_token_id_api_tokens"
            ),
            nullable=True,
        ),
        *(
            sa.Column(name, sa.BigInteger(), nullable=True)
            for name in ("rpm", "tpm", "concurrent", "tokens_per_day", "tokens_per_month")
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("(user_id IS NULL) <> (token_id IS NULL)", name="ck_limits_one_subject"),
        sa.PrimaryKeyConstraint("id", name="pk_limits"),
    )
    op.create_index("ix_limits_user_id", "limits", ["user_id"], unique=True)
    op.create_index("ix_limits_token_id", "limits", ["token_id"], unique=True)


def downgrade() -> None:
    """Drop ``limits``."""
    op.drop_table("limits")
