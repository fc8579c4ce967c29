"""Cancel unary work when its client goes away."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from portway.aio import Disconnected, disconnected, unless_disconnected
from portway.errors import ClientDisconnected

T = TypeVar("T")


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; cancel it and raise ClientDisconnected if the client leaves first."""
    try:
        return await unless_disconnected(work, lambda: disconnected(request.receive))
    except Disconnected:
        raise ClientDisconnected() from None
