"""Small async helpers shared by the serving layer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (if any) and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def aclose(iterator: AsyncIterator[object]) -> None:
    """Close an async generator, even from a cancelled task (the close is shielded)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()


class PrimedStream(Generic[T]):
    """An async iterator whose first item was already taken (so that errors before
    it surfaced early); closing it closes the source even if never iterated."""

    def __init__(self, head: T, rest: AsyncIterator[T]) -> None:
        self._head: list[T] = [head]
        self._rest = rest

    def __aiter__(self) -> PrimedStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._head:
            return self._head.pop()
        return await anext(self._rest)

    async def aclose(self) -> None:
        await aclose(self._rest)


async def primed(source: AsyncIterator[T]) -> PrimedStream[T]:
    """Take ``source``'s first item now; raise what producing it raised."""
    try:
        head = await anext(source)
    except BaseException:
        await aclose(source)
        raise
    return PrimedStream(head, source)


class Disconnected(Exception):
    """The client went away before the work it asked for ended (it was cancelled)."""


async def disconnected(receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
    """Return once ASGI's ``receive`` says the client has gone (``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(
    work: Awaitable[T], disconnected: Callable[[], Awaitable[object]]
) -> T:
    """Await ``work`` in this task; if ``disconnected()`` returns first, cancel it
    and raise :class:`Disconnected`. One watcher task, and ``work`` runs in the
    caller's task (no second task, no ``asyncio.wait``: both are on every request's
    path). A cancellation from elsewhere still propagates as such."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        await disconnected()
        gone = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        result = await work
    except asyncio.CancelledError:
        if gone and current.uncancel() == 0:
            raise Disconnected() from None
        raise
    finally:
        watcher.cancel()
    if gone:  # ``work`` ended anyway, but the client is gone
        current.uncancel()
        raise Disconnected()
    return result
