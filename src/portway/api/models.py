"""``GET /models`` and ``GET /models/{model}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from portway.api.deps import principal, services
from portway.api.model_detail import detail
from portway.protocol.models import ListModelsResponse, Model
from portway.registry.models import ModelEntry

router = APIRouter()


def _wire(entry: ModelEntry) -> Model:
    return Model(
        id=entry.name,
        created=entry.created,
        owned_by=entry.ref.user,
        kind=entry.kind,
        version=entry.version_id,
    )


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    who = await principal(request)
    entries = services(request).registry.visible(who)
    return ListModelsResponse(data=[_wire(entry) for entry in entries]).model_dump(mode="json")


@router.get("/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    who = await principal(request)
    registry = services(request).registry
    entry = registry.describe(model, who)
    return {**_wire(entry).model_dump(mode="json"), "portway": detail(entry, registry, who)}
