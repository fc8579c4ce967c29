"""What a model page shows beyond OpenAI's model object: where the model runs,
what it honours, its versions and their runners. ``GET /models/{model}`` carries
it in one added field, ``portway``; OpenAI's own fields keep their shape."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from portway.auth.principal import Principal
from portway.backends.base import (
    ChatBackend,
    EmbeddingBackend,
    ImageBackend,
    ModelBackend,
    RelayBackend,
)
from portway.registry.models import ModelEntry, Registry
from portway.runners.backend import RunnerBackend


def backend_kind(backend: ModelBackend) -> str:
    """``runner`` (served by attached runners), ``hosted`` (relayed to another
    server) or ``local`` (runs in this server)."""
    if isinstance(backend, RunnerBackend):
        return "runner"
    if isinstance(backend, RelayBackend):
        return "hosted"
    return "local"


def _limits(backend: ModelBackend) -> dict[str, Any]:
    if isinstance(backend, ChatBackend):
        return {
            "context_length": backend.context_length or None,
            "capabilities": asdict(backend.capabilities),
        }
    if isinstance(backend, EmbeddingBackend):
        return {"dimensions": backend.dimensions, "max_input_tokens": backend.max_input_tokens}
    if isinstance(backend, ImageBackend):
        width, height = backend.capabilities.default_size
        return {"default_size": f"{width}x{height}", "max_side": backend.capabilities.max_side}
    return {}


def _runners(entry: ModelEntry, principal: Principal) -> list[dict[str, Any]]:
    """The runners attached to this version; their names and counts for admins
    and the model's owner only."""
    if not isinstance(entry.backend, RunnerBackend):
        return []
    found: list[dict[str, Any]] = entry.backend.health().get("runners", [])
    if principal.is_admin or principal.user.name == entry.ref.user:
        return found
    return [{"runner": None} for _ in found]


def _versions(entry: ModelEntry, registry: Registry, principal: Principal) -> list[dict[str, Any]]:
    same = [other for other in registry.runner_entries() if other.ref == entry.ref]
    return [
        {
            "id": version.version_id,
            "created": version.created,
            "runners": _runners(version, principal),
        }
        for version in (same or [entry])
    ]


def detail(entry: ModelEntry, registry: Registry, principal: Principal) -> dict[str, Any]:
    """The ``portway`` field of one model."""
    return {
        "backend": backend_kind(entry.backend),
        "visibility": entry.visibility,
        "aliases": list(entry.aliases),
        "versions": _versions(entry, registry, principal),
        **_limits(entry.backend),
    }
