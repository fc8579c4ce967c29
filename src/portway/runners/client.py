"""The runner process: serves a model backend to a Portway server over one WebSocket.

It connects out, says ``hello`` and waits for ``ready``; then it runs each
request as its own task (the server sends no more than the runner's
concurrency; see :mod:`portway.runners.work`), and stops a request on
``cancel`` (a generation's backend iterator is closed). A dropped connection
is retried with exponential backoff and jitter; a refusal is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from portway.backends.base import ModelBackend
from portway.errors import PortwayError
from portway.registry.runner_spec import RunnerTimeouts
from portway.runners.work import Worker, error_frame, model_info

log = logging.getLogger("portway.runner")

MAX_FRAME = 16 * 1024 * 1024
REFUSED_CODES = range(4400, 4500)


class Refused(Exception):
    """The server will not take this runner (bad token, not the owner, ...)."""


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before reconnect attempt ``n`` (from 0): doubling, capped, jittered."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.cap, self.first * 2.0**attempt)) * random.uniform(0.5, 1.0)


def connect_url(server: str) -> str:
    """The WebSocket URL of a server's runner endpoint (http→ws, https→wss)."""
    base = server.rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if base.startswith(plain):
            base = secure + base[len(plain) :]
    if not base.startswith(("ws://", "wss://")):
        raise ValueError(f"the server URL must start with http:// or https://, not {server!r}")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + "/v1/runners/connect"


class RunnerClient:
    """Serves ``backend`` (already started) as ``reference`` version ``version``."""

    def __init__(
        self,
        backend: ModelBackend,
        *,
        reference: str,
        version: str,
        server: str,
        token: str,
        concurrency: int,
        private: bool = False,
        timeouts: RunnerTimeouts | None = None,
        say: Callable[[str], None] = print,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.worker = Worker(backend)
        self.url = connect_url(server)
        self.token = token
        self.hello = {
            "type": "hello",
            "model": model_info(backend, reference, version, timeouts),
            "concurrency": concurrency,
            "runner": f"{socket.gethostname()}:{os.getpid()}",
            "visibility": "private" if private else "public",
        }
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.say = say
        self.backoff = backoff
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.ws: ClientConnection | None = None

    async def run(self) -> None:
        """Serve until cancelled; raise Refused if the server refuses the runner."""
        attempt = 0
        while True:
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=MAX_FRAME,
                    open_timeout=10,
                ) as ws:
                    await self._handshake(ws)
                    attempt = 0
                    self.ws = ws
                    await self._session(ws)
            except InvalidStatus as exc:
                if exc.response.status_code in range(400, 500):
                    raise Refused(f"HTTP {exc.response.status_code}") from None
                log.warning("connecting failed: %s", exc)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                log.warning("connection lost: %s", exc or type(exc).__name__)
            finally:
                self.ws = None
                await self._drop_calls()
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def drain(self, grace: float) -> None:
        """Ask the server to send no more requests, and wait (at most ``grace``
        seconds) for those in flight to end; then :meth:`run` may be cancelled."""
        if self.ws is None:
            return
        await _send(self.ws, {"type": "drain"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self.tasks.values()), timeout=left)

    async def _handshake(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps(self.hello))
        try:
            reply = json.loads(await ws.recv())
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code in REFUSED_CODES:
                raise Refused(exc.rcvd.reason or f"closed with {exc.rcvd.code}") from None
            raise
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise Refused("the server's reply to hello is not a JSON object")
        if reply.get("type") == "refused":
            raise Refused(f"{reply.get('status')}: {reply.get('message')}")
        if reply.get("type") != "ready":
            raise Refused(f"unexpected reply to hello: {str(reply)[:200]}")
        self.say(f"serving {reply.get('model')} version {reply.get('version_id')}")

    async def _session(self, ws: ClientConnection) -> None:
        async for message in ws:
            try:
                frame = json.loads(message)
                kind, call_id = frame.get("type"), str(frame.get("id", ""))
            except (ValueError, AttributeError):
                log.warning("ignoring a frame that is not a JSON object: %.200r", message)
                continue
            if kind in ("chat", "embed", "count_tokens", "image"):
                self._start(ws, frame)
            elif kind == "cancel":
                task = self.tasks.get(call_id)
                if task is not None:
                    task.cancel()
            elif kind == "refused":
                raise Refused(f"{frame.get('status')}: {frame.get('message')}")
            else:
                log.warning("ignoring a frame of unknown type %r", kind)

    def _start(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        call_id = str(frame.get("id", ""))
        task = asyncio.ensure_future(self._run(ws, frame))
        self.tasks[call_id] = task
        task.add_done_callback(lambda done: self._forget(call_id, done))

    def _forget(self, call_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(call_id) is task:
            del self.tasks[call_id]

    async def _run(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        """One request, once one of ``concurrency`` slots is free (the server sends
        no more than that; this holds even if it did)."""
        async with self.slots:
            await self.worker.run(frame, lambda answer: _send(ws, answer))

    async def _drop_calls(self) -> None:
        """The connection is gone: stop every request it carried."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()


async def _send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    """Send ``frame``; an answer too large for one frame, or holding NaN or Infinity
    (not JSON), becomes an error instead (the server would drop the connection, and
    the request would come back)."""
    try:
        text = json.dumps(frame, separators=(",", ":"), allow_nan=False)
    except ValueError:
        error = PortwayError("The model's answer holds NaN or Infinity, which JSON cannot carry.")
        text = json.dumps(error_frame(str(frame.get("id", "")), error))
    if len(text) > MAX_FRAME - 4096:
        limit = MAX_FRAME // 2**20
        error = PortwayError(f"The model's answer is larger than a runner may send ({limit} MiB).")
        text = json.dumps(error_frame(str(frame.get("id", "")), error))
    with contextlib.suppress(ConnectionClosed):
        await ws.send(text)
