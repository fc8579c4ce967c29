"""Tokens get an optional name, given when they are created (the console shows it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``api_tokens.name`` (empty for the tokens made before it)."""
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop ``api_tokens.name``."""
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("name")
