"""The usage ledger: one row per request, rows the database refused set aside,
and the totals reported per user, model and day."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from portway.store.engine import Database, require_aware, utc_now
from portway.store.records import (
    ANONYMOUS_USER,
    USAGE_STATUSES,
    DailyUsage,
    RejectedUsage,
    UsageRecord,
    UsageSummary,
    printable,
)
from portway.store.tables import usage_records, usage_rejected, users

_USAGE_FIELDS = tuple(UsageRecord.__dataclass_fields__)


def _usage(row: RowMapping) -> UsageRecord:
    return UsageRecord(**{name: row[usage_records.c[name]] for name in _USAGE_FIELDS})


def _usage_row(record: UsageRecord) -> dict[str, Any]:
    if record.status not in USAGE_STATUSES:
        raise ValueError(
            f"usage record {record.request_id!r} has status {record.status!r}, "
            f"expected one of {USAGE_STATUSES}"
        )
    require_aware(record.started_at, f"started_at of usage record {record.request_id!r}")
    require_aware(record.ended_at, f"ended_at of usage record {record.request_id!r}")
    return {name: getattr(record, name) for name in _USAGE_FIELDS}


def _usage_json(record: UsageRecord) -> dict[str, Any]:
    """``record`` as JSON-ready values (datetimes as ISO 8601 text)."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in asdict(record).items()
    }


def _usage_select(user_name: str | None) -> Select[Any]:
    stmt = select(usage_records)
    if user_name is not None:
        stmt = stmt.join_from(usage_records, users).where(users.c.name == user_name)
    return stmt.order_by(usage_records.c.started_at, usage_records.c.id)


class UsageLedger(Database):
    """Usage records and their totals."""

    # -- usage

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        """Insert ``records`` in one transaction (all or nothing); a record whose
        ``entry_id`` is already stored is skipped (a replay stores nothing twice).

        ``user_id`` and ``token_id`` may be None. Raises ``ValueError`` (and
        writes nothing) if a status is not one of
        :data:`~portway.store.records.USAGE_STATUSES`, a datetime is naive, or a
        record names a user or token that does not exist.
        """
        rows = [_usage_row(record) for record in records]
        if not rows:
            return
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(usage_records).on_conflict_do_nothing(index_elements=["entry_id"])
        try:
            async with self._write() as conn:
                await conn.execute(stmt, rows)
        except IntegrityError as exc:
            raise ValueError("usage records name an unknown user or token") from exc

    async def set_aside_usage(self, record: UsageRecord, reason: str) -> None:
        """Keep ``record``, which the database refused, where an admin can see it
        (:meth:`rejected_usage`): as JSON text (non-ASCII escaped), with ``reason``.
        A record whose ``entry_id`` is already set aside is skipped (a replay)."""
        values = {
            "request_id": printable(record.request_id)[:200],
            "record": json.dumps(_usage_json(record), ensure_ascii=True),
            "reason": printable(reason)[:2000],
            "rejected_at": utc_now(),
            "entry_id": record.entry_id,
        }
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(usage_rejected).on_conflict_do_nothing(index_elements=["entry_id"])
        async with self._write() as conn:
            await conn.execute(stmt.values(values))

    async def rejected_usage(self) -> list[RejectedUsage]:
        """Every usage record set aside, oldest first."""
        stmt = select(usage_rejected).order_by(usage_rejected.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            RejectedUsage(
                id=row.id,
                request_id=row.request_id,
                record=json.loads(row.record),
                reason=row.reason,
                rejected_at=row.rejected_at,
            )
            for row in rows
        ]

    async def usage_summary(self, user_name: str | None = None) -> list[UsageSummary]:
        """Totals per (user name, model), sorted by user then model.

        Usage recorded without a user is reported as
        :data:`~portway.store.records.ANONYMOUS_USER` (and only when
        ``user_name`` is None).
        """
        stmt = (
            select(
                users.c.name,
                usage_records.c.model,
                func.count(),
                func.sum(usage_records.c.prompt_tokens),
                func.sum(usage_records.c.completion_tokens),
            )
            .select_from(usage_records.outerjoin(users, usage_records.c.user_id == users.c.id))
            .group_by(users.c.name, usage_records.c.model)
        )
        if user_name is not None:
            stmt = stmt.where(users.c.name == user_name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        summaries = [
            UsageSummary(
                user=ANONYMOUS_USER if name is None else name,
                model=model,
                requests=int(requests),
                prompt_tokens=int(prompt or 0),
                completion_tokens=int(completion or 0),
            )
            for name, model, requests, prompt, completion in rows
        ]
        return sorted(summaries, key=lambda s: (s.user, s.model))

    async def usage_by_day(
        self,
        since: datetime,
        user_name: str | None = None,
        *,
        until: datetime | None = None,
        model: str | None = None,
    ) -> list[DailyUsage]:
        """Totals per (UTC day, user, model) of requests started at or after
        ``since`` (and before ``until``), for everyone or for ``user_name``, of
        every model or of ``model``, by day, user, model."""
        require_aware(since, "since")
        require_aware(until, "until")
        day = self._day(usage_records.c.started_at).label("day")
        stmt = (
            select(
                day,
                users.c.name,
                usage_records.c.model,
                func.count(),
                func.sum(usage_records.c.prompt_tokens),
                func.sum(usage_records.c.completion_tokens),
            )
            .select_from(usage_records.outerjoin(users, usage_records.c.user_id == users.c.id))
            .where(usage_records.c.started_at >= since)
            .group_by(day, users.c.name, usage_records.c.model)
        )
        if user_name is not None:
            stmt = stmt.where(users.c.name == user_name)
        if until is not None:
            stmt = stmt.where(usage_records.c.started_at < until)
        if model is not None:
            stmt = stmt.where(usage_records.c.model == model)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        found = [
            DailyUsage(
                str(when), name or ANONYMOUS_USER, model, int(count), int(p or 0), int(c or 0)
            )
            for when, name, model, count, p, c in rows
        ]
        return sorted(found, key=lambda row: (row.day, row.user, row.model))

    def _day(self, column: Any) -> Any:
        """``YYYY-MM-DD`` (UTC) of a stored datetime: SQLite keeps naive UTC text."""
        if self.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
        return func.substr(column, 1, 10)

    async def list_usage(self, user_name: str | None = None) -> list[UsageRecord]:
        """All usage records, or those of ``user_name``, by ``started_at``."""
        async with self._read() as conn:
            rows = (await conn.execute(_usage_select(user_name))).all()
        return [_usage(row._mapping) for row in rows]
