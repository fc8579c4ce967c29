"""The event-loop side of an engine job: what the engine thread emits, as an
async iterator of ``Delta``s that cancels the job when closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from portway.backends.base import Delta
from portway.backends.llamacpp.engine import QueueItem
from portway.errors import BackendError, PortwayError


def emitter(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[QueueItem]
) -> Callable[[QueueItem], None]:
    """Puts what the engine thread emits on ``queue``, from that thread."""

    def emit(item: QueueItem) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return emit


class JobStream:
    """``first`` (the prompt's delta), then what the engine emits for one job until
    its ``finish_reason``. ``aclose`` (or losing the last reference) calls
    ``cancel``, which drops the job at the engine's next step."""

    def __init__(
        self, first: Delta, queue: asyncio.Queue[QueueItem], cancel: Callable[[], None]
    ) -> None:
        self._first: Delta | None = first
        self._queue = queue
        self._cancel: Callable[[], None] | None = cancel

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> Delta:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._cancel is None:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._close()
            if isinstance(item, PortwayError):
                raise item
            raise BackendError("The model failed while generating.") from item
        if item.finish_reason is not None:
            self._close()
        return item

    async def aclose(self) -> None:
        self._close()

    def _close(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def __del__(self) -> None:
        self._close()
