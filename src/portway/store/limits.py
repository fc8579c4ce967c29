"""Limits per user and per token (NULL: unlimited), and the ledger's token totals
that budgets start from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import RowMapping

from portway.store.engine import Database, require_aware, utc_now
from portway.store.tables import api_tokens, limits, usage_records, users

LIMIT_COLUMNS = ("rpm", "tpm", "concurrent", "tokens_per_day", "tokens_per_month")


@dataclass(frozen=True)
class LimitRow:
    """One user's or one token's limits; None is unlimited."""

    user: str
    """The user's name (for a token's row, its owner's)."""
    token_id: str | None
    rpm: int | None
    tpm: int | None
    concurrent: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    updated_at: datetime


def _row(row: RowMapping) -> LimitRow:
    return LimitRow(
        user=row["user_name"],
        token_id=row[limits.c.token_id],
        updated_at=row[limits.c.updated_at],
        **{name: row[limits.c[name]] for name in LIMIT_COLUMNS},
    )


def _select() -> Any:
    owner = func.coalesce(limits.c.user_id, api_tokens.c.user_id)
    return (
        select(limits, users.c.name.label("user_name"))
        .select_from(
            limits.outerjoin(api_tokens, limits.c.token_id == api_tokens.c.id).join(
                users, users.c.id == owner
            )
        )
        .order_by(users.c.name, limits.c.token_id.is_not(None), limits.c.token_id)
    )


class LimitRows(Database):
    """The ``limits`` table."""

    async def set_limits(
        self,
        values: dict[str, int | None],
        *,
        user_id: int | None = None,
        token_id: str | None = None,
    ) -> None:
        """Set the named columns of one subject's limits (others kept; a new row's
        others unlimited). Exactly one of ``user_id`` and ``token_id``."""
        if (user_id is None) == (token_id is None):
            raise ValueError("name exactly one of user_id and token_id")
        unknown = set(values) - set(LIMIT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}")
        where = (
            limits.c.user_id == user_id if user_id is not None else limits.c.token_id == token_id
        )
        subject = {"user_id": user_id, "token_id": token_id}
        async with self._write() as conn:
            await conn.execute(
                self._insert_ignore(
                    limits,
                    ["user_id"] if user_id is not None else ["token_id"],
                    {**subject, "updated_at": utc_now()},
                )
            )
            await conn.execute(update(limits).where(where).values(**values, updated_at=utc_now()))

    async def clear_limits(
        self, *, user_id: int | None = None, token_id: str | None = None
    ) -> bool:
        """Remove one subject's limits. False if it had none."""
        where = (
            limits.c.user_id == user_id if user_id is not None else limits.c.token_id == token_id
        )
        async with self._write() as conn:
            result = await conn.execute(delete(limits).where(where))
        return result.rowcount > 0

    async def list_limits(self) -> list[LimitRow]:
        """Every subject's limits, by user name, the user's own row first."""
        async with self._read() as conn:
            rows = (await conn.execute(_select())).all()
        return [_row(row._mapping) for row in rows]

    async def limits_for(
        self, user_id: int, token_id: str
    ) -> tuple[LimitRow | None, LimitRow | None]:
        """The limits of a user and of one of its tokens (None where there are none)."""
        stmt = _select().where((limits.c.user_id == user_id) | (limits.c.token_id == token_id))
        async with self._read() as conn:
            rows = [_row(row._mapping) for row in (await conn.execute(stmt)).all()]
        user = next((row for row in rows if row.token_id is None), None)
        token = next((row for row in rows if row.token_id is not None), None)
        return user, token

    async def tokens_used_since(
        self, since: datetime, *, user_id: int | None = None, token_id: str | None = None
    ) -> int:
        """Prompt plus completion tokens of the requests started at or after ``since``,
        of one user or one token."""
        require_aware(since, "since")
        total = func.coalesce(
            func.sum(usage_records.c.prompt_tokens + usage_records.c.completion_tokens), 0
        )
        stmt = select(total).where(usage_records.c.started_at >= since)
        if user_id is not None:
            stmt = stmt.where(usage_records.c.user_id == user_id)
        else:
            stmt = stmt.where(usage_records.c.token_id == token_id)
        async with self._read() as conn:
            used = (await conn.execute(stmt)).scalar_one()
        return int(used)
