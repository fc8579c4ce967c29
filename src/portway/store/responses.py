"""Stored responses of the Responses API: saved, read, chained, paged, deleted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Select, delete, insert, literal_column, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from portway.store.engine import Database, require_aware
from portway.store.records import RESPONSE_STATUSES, ItemPage, StoredResponse
from portway.store.tables import responses

_RESPONSE_FIELDS = tuple(StoredResponse.__dataclass_fields__)


def _stored_response(row: RowMapping) -> StoredResponse:
    values = {name: row[responses.c[name]] for name in _RESPONSE_FIELDS}
    values["input_items"] = tuple(values["input_items"])
    values["output_items"] = tuple(values["output_items"])
    return StoredResponse(**values)


def _response_row(response: StoredResponse) -> dict[str, Any]:
    if response.status not in RESPONSE_STATUSES:
        raise ValueError(
            f"response {response.id!r} has status {response.status!r}, "
            f"expected one of {RESPONSE_STATUSES}"
        )
    require_aware(response.created_at, f"created_at of response {response.id!r}")
    row = asdict(response)
    row["input_items"] = list(response.input_items)
    row["output_items"] = list(response.output_items)
    return row


def _chain_select(response_id: str, user_id: int, limit: int) -> Select[Any]:
    """The response ``response_id`` of ``user_id`` and up to ``limit - 1`` of its
    predecessors, newest first. Bounded by depth, so a cycle cannot loop."""
    start = select(
        responses.c.id, responses.c.previous_response_id, literal_column("1").label("depth")
    ).where(responses.c.id == response_id, responses.c.user_id == user_id)
    chain = start.cte("chain", recursive=True)
    link = responses.alias("link")
    step = (
        select(link.c.id, link.c.previous_response_id, chain.c.depth + 1)
        .select_from(link.join(chain, link.c.id == chain.c.previous_response_id))
        .where(link.c.user_id == user_id, chain.c.depth < limit)
    )
    chain = chain.union_all(step)
    return (
        select(responses)
        .join(chain, responses.c.id == chain.c.id)
        .order_by(chain.c.depth)
        .limit(limit)
    )


def _page(items: Sequence[dict[str, Any]], after: str | None, limit: int, order: str) -> ItemPage:
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise ValueError(f"no input item {after!r} in this response")
        ordered = ordered[ids.index(after) + 1 :]
    return ItemPage(items=tuple(ordered[:limit]), has_more=len(ordered) > limit)


class StoredResponses(Database):
    """Responses, each owned by one user."""

    # -- responses

    async def save_response(self, response: StoredResponse) -> None:
        """Store ``response``, replacing an earlier save of the same id by the same user.

        Raises ``ValueError`` (and writes nothing) for a status not in
        :data:`~portway.store.records.RESPONSE_STATUSES`, a naive ``created_at``,
        an unknown user, or an id another user's response already has.
        """
        row = _response_row(response)
        mine = (responses.c.id == response.id) & (responses.c.user_id == response.user_id)
        try:
            async with self._write() as conn:
                await conn.execute(delete(responses).where(mine))
                await conn.execute(insert(responses).values(row))
        except IntegrityError as exc:
            raise ValueError(f"response {response.id!r} cannot be stored: {exc.orig}") from exc

    async def get_response(self, response_id: str, user_id: int) -> StoredResponse | None:
        """The response ``response_id`` if user ``user_id`` owns it, else None."""
        stmt = select(responses).where(
            responses.c.id == response_id, responses.c.user_id == user_id
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _stored_response(row._mapping)

    async def delete_response(self, response_id: str, user_id: int) -> bool:
        """Delete the response if user ``user_id`` owns it. False if there was none."""
        stmt = delete(responses).where(
            responses.c.id == response_id, responses.c.user_id == user_id
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    async def response_chain(
        self, response_id: str, user_id: int, limit: int
    ) -> list[StoredResponse]:
        """``response_id`` and its predecessors (``previous_response_id``), newest
        first: at most ``limit`` responses, all owned by ``user_id``.

        The walk stops at a response without predecessor, at one that is missing
        or not the user's (the last one returned then names it), or at ``limit``.
        """
        async with self._read() as conn:
            rows = (await conn.execute(_chain_select(response_id, user_id, limit))).all()
        return [_stored_response(row._mapping) for row in rows]

    async def list_input_items(
        self,
        response_id: str,
        user_id: int,
        *,
        after: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        """A page of the input items of the response, or None if the user has no
        such response. ``order`` is ``"asc"`` or ``"desc"``; ``after`` is the id
        of the item the page starts after (``ValueError`` if there is none).
        """
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        stmt = select(responses.c.input_items).where(
            responses.c.id == response_id, responses.c.user_id == user_id
        )
        async with self._read() as conn:
            items = (await conn.execute(stmt)).scalar_one_or_none()
        return None if items is None else _page(items, after, limit, order)
