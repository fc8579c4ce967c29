"""``POST /embeddings``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import serve_or_relay
from portway.protocol.embeddings import EmbeddingRequest
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import EMBEDDINGS

router = APIRouter()


@router.post("/embeddings", response_model=None)
async def create_embeddings(request: Request) -> Any:
    ctx = await context(request, "embeddings")
    body = await parse_body(request, EmbeddingRequest)
    return await serve_or_relay(request, ctx, body, EMBEDDINGS, _serve)


async def _serve(
    request: Request, ctx: RequestContext, body: EmbeddingRequest, entry: ModelEntry
) -> Response:
    work = services(request).embeddings.create(ctx, body, entry)
    result = await cancel_on_disconnect(request, work)
    return JSONResponse(result)
