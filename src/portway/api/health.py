"""``GET /health``: the one route without auth; a token with the ``admin`` scope
gets detail, a valid token without it a 403."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from portway.api.deps import principal, services
from portway.backends.base import RelayBackend
from portway.errors import AuthenticationFailed
from portway.registry.models import ModelEntry

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "ok"}
    if request.headers.get("authorization"):
        try:
            who = await principal(request)
        except AuthenticationFailed:
            return body
        who.require_scope("admin")
        body["models"] = [_detail(entry) for entry in services(request).registry.entries()]
        hub = request.app.state.runner_hub
        if hub.process is not None:  # one of a cluster's processes: every runner names its own
            body["process"] = hub.process
        body["runners"] = hub.health()
    return body


def _detail(entry: ModelEntry) -> dict[str, Any]:
    """A model's id, version and kind; for a hosted model, its endpoints' states."""
    found: dict[str, Any] = {"id": entry.name, "version": entry.version_id, "kind": entry.kind}
    if isinstance(entry.backend, RelayBackend):
        found["endpoints"] = entry.backend.health()
    return found
