"""The one ledger writer: one row per accepted request, however it ends.

Local models' serving layer writes it with :func:`ledger_row`; the relay with
:func:`record_row`, once it knows how a request ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from portway.errors import Overloaded, PortwayError
from portway.serving.context import RequestContext
from portway.serving.usage import Meter
from portway.store import UsageRecord

Status = tuple[str, str | None]
"""A row's status (completed, failed, cancelled) and error code."""


class Recorder(Protocol):
    def record(self, record: UsageRecord) -> None: ...


def row_status(ended: BaseException | None) -> Status | None:
    """The row of a request that ended with ``ended`` (None: it completed):
    failed with the error's code, cancelled when the client went away, and no
    row for a model too busy to take the request (``Overloaded``: refused, like
    a bad request)."""
    if ended is None:
        return "completed", None
    if isinstance(ended, Overloaded):
        return None
    if isinstance(ended, PortwayError):
        return "failed", ended.code or ended.type
    if isinstance(ended, Exception):
        return "failed", "server_error"
    return "cancelled", None


def record_row(recorder: Recorder, meter: Meter, ended: BaseException | None) -> None:
    """Write ``meter``'s row for a request that ended with ``ended`` (see row_status)."""
    status = row_status(ended)
    if status is not None:
        recorder.record(meter.to_record(*status))
        if meter.on_end is not None:
            meter.on_end(meter, status[0])


def log_tokens(ctx: RequestContext, meter: Meter) -> None:
    ctx.log_fields.update(
        prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens
    )


CUT_SHORT = asyncio.CancelledError()
"""How a request ended that was left before it could say (its row: cancelled)."""


@contextmanager
def ledger_row(recorder: Recorder, meter: Meter, ctx: RequestContext) -> Iterator[None]:
    """Write ``meter``'s row when the block ends, as :func:`row_status` says, and
    log its token counts."""
    ended: BaseException | None = CUT_SHORT
    try:
        yield
        ended = None
    except BaseException as exc:
        ended = exc
        raise
    finally:
        record_row(recorder, meter, ended)
        log_tokens(ctx, meter)
