"""``POST /embeddings``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import relay_if_hosted
from portway.protocol.embeddings import EmbeddingRequest
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import EMBEDDINGS

router = APIRouter()


@router.post("/embeddings", response_model=None)
async def create_embeddings(request: Request) -> Any:
    ctx = await context(request, "embeddings")
    body = await parse_body(request, EmbeddingRequest)

    async def local(name: str) -> Response:  # a hosted model's local fallback
        return await _serve(request, ctx, body.model_copy(update={"model": name}))

    if relayed := await relay_if_hosted(request, ctx, body.model, EMBEDDINGS, local):
        return relayed
    return await _serve(request, ctx, body)


async def _serve(request: Request, ctx: RequestContext, body: EmbeddingRequest) -> Response:
    result = await cancel_on_disconnect(request, services(request).embeddings.create(ctx, body))
    return JSONResponse(result)
