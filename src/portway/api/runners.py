"""``/v1/runners/connect``: the WebSocket a runner attaches over.

The runner authenticates with a PAT that has the ``runner`` scope and sends
``hello``; the server answers ``ready`` (or ``refused`` and closes with 4000 +
the HTTP status: 4400 bad frame, 4401 bad token, 4403 not allowed, 4409 name
taken). Requests then flow as ``chat``/``cancel`` frames; answers as
``delta``/``error`` frames; ``drain`` stops new requests to the runner. A frame
that breaks the protocol closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from portway.errors import InvalidRequest, PortwayError
from portway.registry.models import ModelEntry
from portway.runners.hub import RunnerHub
from portway.runners.link import RunnerLink
from portway.runners.wire import DrainFrame, FrameError, Hello, parse_runner_frame

router = APIRouter()
log = logging.getLogger("portway.runners")

HELLO_TIMEOUT = 10.0
"""Seconds a runner has to say hello after connecting."""


@router.websocket("/runners/connect")
async def connect(websocket: WebSocket) -> None:
    await websocket.accept()
    hub: RunnerHub = websocket.app.state.runner_hub
    try:
        link, entry = await _attach(websocket, hub)
    except PortwayError as exc:
        await _refuse(websocket, exc.status, exc.message)
        return
    except (WebSocketDisconnect, TimeoutError):
        return
    try:
        ready = {"type": "ready", "model": entry.name, "version_id": entry.version_id}
        await websocket.send_json(ready)
        await _serve(websocket, link, lambda: hub.drain(link, entry))
    except FrameError as exc:
        log.warning("runner %s broke the protocol: %s", link.name, exc)
        await _refuse(websocket, 400, str(exc))
    except WebSocketDisconnect:
        pass
    finally:
        hub.detach(link, entry)


async def _attach(websocket: WebSocket, hub: RunnerHub) -> tuple[RunnerLink, ModelEntry]:
    principal = await websocket.app.state.services.authenticator.authenticate(
        websocket.headers.get("authorization")
    )
    principal.require_scope("runner")
    message = await asyncio.wait_for(websocket.receive(), HELLO_TIMEOUT)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        hello = parse_runner_frame(_text(message))
    except FrameError as exc:
        raise InvalidRequest(str(exc)) from None
    if not isinstance(hello, Hello):
        raise InvalidRequest("the first frame must be 'hello'")
    return await hub.attach(principal, hello)


async def _serve(websocket: WebSocket, link: RunnerLink, drain: Callable[[], None]) -> None:
    """Relay frames both ways until either side stops."""
    pump = asyncio.ensure_future(link.pump(websocket.send_json))
    try:
        reader = asyncio.ensure_future(_read(websocket, link, drain))
        done, _ = await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, reader):
            if task not in done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
        for task in done:
            task.result()
        if pump in done:  # the server is shutting down
            await websocket.close(1001, "server shutting down")
    finally:
        pump.cancel()


async def _read(websocket: WebSocket, link: RunnerLink, drain: Callable[[], None]) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        frame = parse_runner_frame(_text(message))
        if isinstance(frame, Hello):
            raise FrameError("'hello' is sent once, first")
        if isinstance(frame, DrainFrame):
            drain()
        else:
            link.deliver(frame)


def _text(message: Message) -> str:
    text = message.get("text")
    if not isinstance(text, str):
        raise FrameError("frames are JSON text, not binary")
    return text


async def _refuse(websocket: WebSocket, status: int, message: str) -> None:
    """Tell the runner why it is refused, then close with 4000 + ``status``."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_json({"type": "refused", "status": status, "message": message})
        await websocket.close(
            4000 + status, message.encode("utf-8")[:120].decode("utf-8", "ignore")
        )
