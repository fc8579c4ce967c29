"""A user's sync generator on a thread of its own, read as an async iterator.

The thread runs at most ``AHEAD`` items ahead of the reader. Closing the reader
(or the reader going away) makes the thread stop at the generator's next yield
and close it, so the user's ``finally`` runs on the thread that ran the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

AHEAD = 4
_END = object()


class ThreadedIterator:
    """Iterates ``produce()`` on a new daemon thread; ``done`` runs on the event
    loop once the thread has finished (after the generator was closed)."""

    def __init__(self, produce: Callable[[], Iterable[Any]], done: Callable[[], None]) -> None:
        self._produce = produce
        self._done = done
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._credits = threading.Semaphore(AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portway-model", daemon=True)
        self._thread.start()

    def _post(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            self._stop.set()

    def _run(self) -> None:
        try:
            self._iterate()
        except BaseException as exc:
            self._post(exc)
        finally:
            self._post(_END)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._done)

    def _iterate(self) -> None:
        items = iter(self._produce())
        try:
            while not self._stop.is_set():
                while not self._credits.acquire(timeout=0.5):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                item = next(items, _END)
                if item is _END:
                    return
                self._post(item)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._read()

    async def _read(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self._items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self._credits.release()
                yield item
        finally:
            self.stop()

    def stop(self) -> None:
        """Ask the thread to close the generator at its next yield."""
        self._stop.set()
        self._credits.release()
