"""``GET /usage``: requests and tokens from the ledger, summed per day, model or user.

A token sees its own user's usage; one with the ``admin`` scope sees everyone's
(or one user's with ``?user=``). ``group_by`` names any of ``day``, ``model`` and
``user`` (comma-separated, default ``day,model``); ``days`` (1 to 366, default 30)
is how many UTC days back, today included, or ``start_time`` and ``end_time``
(Unix seconds, as OpenAI's usage API takes them; end excluded) bound the requests'
start instead; ``model`` keeps one model's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request

from portway.api.deps import principal
from portway.auth.principal import Principal
from portway.digits import ascii_decimal
from portway.errors import InvalidRequest, PermissionDenied
from portway.store import DailyUsage, Store

router = APIRouter()

GROUPS = ("day", "model", "user")
DEFAULT_DAYS = 30
MAX_DAYS = 366


def _group_by(text: str | None) -> tuple[str, ...]:
    named = [part.strip() for part in (text or "day,model").split(",") if part.strip()]
    unknown = [part for part in named if part not in GROUPS]
    if unknown or not named:
        raise InvalidRequest(
            f"Invalid value for 'group_by': use any of {', '.join(GROUPS)}, comma-separated.",
            param="group_by",
        )
    return tuple(dict.fromkeys(named))


def _days(text: str | None) -> int:
    if text is None:
        return DEFAULT_DAYS
    days = ascii_decimal(text, max_digits=3)
    if days is None or not 1 <= days <= MAX_DAYS:
        raise InvalidRequest(
            f"Invalid value for 'days': a whole number from 1 to {MAX_DAYS}.", param="days"
        )
    return days


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    seconds = ascii_decimal(text, max_digits=11)
    if seconds is None:
        raise InvalidRequest(f"Invalid value for '{name}': Unix seconds.", param=name)
    return datetime.fromtimestamp(seconds, UTC)


def _range(query: Mapping[str, str]) -> tuple[datetime, datetime | None]:
    """From ``start_time`` (or ``days`` back from today) to ``end_time`` (or now)."""
    start, end = _time(query, "start_time"), _time(query, "end_time")
    if start is not None and query.get("days") is not None:
        raise InvalidRequest("Give 'days' or 'start_time', not both.", param="start_time")
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=_days(query.get("days")) - 1)
    if end is not None and end <= start:
        raise InvalidRequest("'end_time' must be after the start.", param="end_time")
    return start, end


def _whose(who: Principal, user: str | None) -> str | None:
    """The user whose usage is read; None: everyone (admin scope only)."""
    if who.is_admin:
        return user
    if user is not None and user != who.user.name:
        raise PermissionDenied(
            "Only a token with the 'admin' scope may read other users' usage.",
            code="missing_scope",
        )
    return who.user.name


def summarise(rows: list[DailyUsage], group_by: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows summed over every field not in ``group_by``, ordered by those."""
    totals: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        key = tuple(getattr(row, name) for name in group_by)
        total = totals[key]
        total[0] += row.requests
        total[1] += row.prompt_tokens
        total[2] += row.completion_tokens
    return [
        {
            **dict(zip(group_by, key, strict=True)),
            "requests": requests,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        for key, (requests, prompt, completion) in sorted(totals.items())
    ]


@router.get("/usage")
async def usage(request: Request) -> dict[str, Any]:
    who = await principal(request)
    query = request.query_params
    group_by = _group_by(query.get("group_by"))
    since, until = _range(query)
    user = _whose(who, query.get("user"))
    model = query.get("model")
    store: Store = request.app.state.store
    rows = await store.usage_by_day(since, user, until=until, model=model)
    return {
        "object": "list",
        "group_by": list(group_by),
        "since": since.date().isoformat(),
        "start_time": int(since.timestamp()),
        "end_time": None if until is None else int(until.timestamp()),
        "user": user,
        "model": model,
        "data": summarise(rows, group_by),
    }
