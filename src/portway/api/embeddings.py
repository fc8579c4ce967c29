"""``POST /embeddings``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.protocol.embeddings import EmbeddingRequest

router = APIRouter()


@router.post("/embeddings", response_model=None)
async def create_embeddings(request: Request) -> Any:
    ctx = await context(request, "embeddings")
    body = await parse_body(request, EmbeddingRequest)
    result = await cancel_on_disconnect(request, services(request).embeddings.create(ctx, body))
    return JSONResponse(result)
