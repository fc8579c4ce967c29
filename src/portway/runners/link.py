"""The server's side of one attached runner: its calls and its outgoing frames."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from portway.errors import PortwayError
from portway.runners import wire
from portway.runners.errors import from_frame
from portway.runners.wire import Answer, ErrorFrame, ModelInfo

Event = Answer | None
"""What a call receives; None: the runner went away."""


@dataclass
class Call:
    """One request sent to a runner, and the frames it answered with so far."""

    id: str
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    started: bool = False
    """Whether its first delta arrived (it can no longer move to another runner)."""
    done: bool = False
    """Whether it ended (finish_reason or error): there is nothing to cancel."""


class RunnerLink:
    """An attached runner: what it serves, how many calls it runs, and its outbox.

    Frames to the runner are queued and written by :meth:`pump`, so sending
    (a cancel in a ``finally``, say) never waits on the network.
    """

    remote = False
    """Whether the runner is attached to another process (see cluster.runners_remote)."""

    def __init__(self, name: str, info: ModelInfo, concurrency: int, owner: str) -> None:
        self.name = name
        self.info = info
        self.concurrency = concurrency
        self.owner = owner
        self.in_flight = 0
        self.served = 0
        self.failed = 0
        self.gone = False
        self.calls: dict[str, Call] = {}
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._ids = itertools.count(1)

    @property
    def load(self) -> int:
        """Calls the runner is running, as the pool compares runners (fewest first);
        a runner of another process counts that process's calls too."""
        return self.in_flight

    def open(self, kind: str, payload: dict[str, Any]) -> Call:
        """Send a ``kind`` frame (``chat``, ``embed``, ...) with ``payload``; the
        runner's answers arrive in the call's events."""
        call = Call(f"c{next(self._ids)}")
        self.calls[call.id] = call
        self._outbox.put_nowait(wire.call_frame(kind, call.id, payload))
        return call

    def error(self, frame: ErrorFrame) -> PortwayError:
        """The client's error for the runner's ``error`` frame."""
        return from_frame(frame)

    def finish(self, call: Call) -> None:
        """Forget ``call``; if it had not ended, ask the runner to stop it."""
        self.calls.pop(call.id, None)
        if not call.done and not self.gone:
            self._outbox.put_nowait(wire.cancel_frame(call.id))

    def deliver(self, frame: Answer) -> None:
        """Route a runner's frame to its call (frames of finished calls are dropped)."""
        call = self.calls.get(frame.id)
        if call is not None:
            call.events.put_nowait(frame)

    def lose(self) -> None:
        """The runner went away: every open call learns it."""
        self.gone = True
        self._outbox.put_nowait(None)
        for call in self.calls.values():
            call.events.put_nowait(None)

    def close(self) -> None:
        """Stop writing frames (the connection then closes)."""
        self._outbox.put_nowait(None)

    async def pump(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Write queued frames with ``send`` until :meth:`close` or :meth:`lose`."""
        while (frame := await self._outbox.get()) is not None:
            await send(frame)

    def health(self) -> dict[str, Any]:
        return {
            "runner": self.name,
            "owner": self.owner,
            "concurrency": self.concurrency,
            "in_flight": self.in_flight,
            "served": self.served,
            "failed": self.failed,
        }
