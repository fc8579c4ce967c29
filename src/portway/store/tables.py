"""Table definitions (SQLAlchemy Core). The migrations are the source of truth
for the live schema; ``tests/unit/store/test_store.py`` checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that only accepts and returns aware UTC datetimes.

    SQLite has no time zones: values are stored as naive UTC text (which sorts
    chronologically) and made aware again on the way out.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        utc: datetime = value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BIGINT on PostgreSQL, but SQLite only auto-increments an "INTEGER PRIMARY KEY".
BigId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("is_admin", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "user_id",
        Integer,
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("last4", String(16), nullable=False),
    Column("scopes", JSON(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("name", String(100), nullable=False, server_default=""),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(200), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column(
        "token_id",
        String(64),
        ForeignKey("api_tokens.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("endpoint", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version_id", String(200), nullable=True),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_code", String(200), nullable=True),
    Column("end_user", String(256), nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime(), nullable=False),
    Column("entry_id", String(32), nullable=True),
    CheckConstraint("status IN ('completed', 'failed', 'cancelled')", name="status"),
    Index(None, "user_id", "started_at"),
    Index(None, "started_at"),
    Index(None, "entry_id", unique=True),
)

usage_rejected = Table(
    "usage_rejected",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(200), nullable=False),
    Column("record", Text(), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("rejected_at", UTCDateTime(), nullable=False),
    Column("entry_id", String(32), nullable=True),
    Index(None, "entry_id", unique=True),
)

responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "user_id",
        Integer,
        ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("previous_response_id", String(128), nullable=True),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("input_items", JSON(), nullable=False),
    Column("output_items", JSON(), nullable=False),
    Column("body", JSON(), nullable=False),
    CheckConstraint(
        "status IN ('completed', 'failed', 'cancelled', 'incomplete', 'in_progress')",
        name="status",
    ),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("version_id", String(200), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

stored_secrets = Table(
    "secrets",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("ciphertext", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

runner_models = Table(
    "runner_models",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

limits = Table(
    "limits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("token_id", String(64), ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=True),
    Column("rpm", BigInteger, nullable=True),
    Column("tpm", BigInteger, nullable=True),
    Column("concurrent", BigInteger, nullable=True),
    Column("tokens_per_day", BigInteger, nullable=True),
    Column("tokens_per_month", BigInteger, nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("(user_id IS NULL) <> (token_id IS NULL)", name="one_subject"),
    Index(None, "user_id", unique=True),
    Index(None, "token_id", unique=True),
)
