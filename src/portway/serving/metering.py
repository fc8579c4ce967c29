"""One ledger row per accepted unary request, however it ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from portway.errors import Overloaded, PortwayError
from portway.serving.context import RequestContext
from portway.serving.usage import Meter
from portway.store import UsageRecord


class Recorder(Protocol):
    def record(self, record: UsageRecord) -> None: ...


@contextmanager
def ledger_row(recorder: Recorder, meter: Meter, ctx: RequestContext) -> Iterator[None]:
    """Write ``meter``'s row when the block ends: completed, failed or cancelled
    (a client that went away), but none for a model too busy to take the request
    (``Overloaded``: refused, like a bad request); and log its token counts."""
    status: str | None = "cancelled"
    code = None
    try:
        yield
        status = "completed"
    except Overloaded:
        status = None
        raise
    except PortwayError as exc:
        status, code = "failed", exc.code or exc.type
        raise
    except Exception:
        status, code = "failed", "server_error"
        raise
    finally:
        if status is not None:
            recorder.record(meter.to_record(status, code))
        ctx.log_fields.update(
            prompt_tokens=meter.prompt_tokens, completion_tokens=meter.completion_tokens
        )
