"""``POST /images/generations``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import relay_if_hosted
from portway.protocol.images import ImageGenerationRequest
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import IMAGES

router = APIRouter()


@router.post("/images/generations", response_model=None)
async def create_image(request: Request) -> Any:
    ctx = await context(request, "images.generations")
    body = await parse_body(request, ImageGenerationRequest)

    async def local(name: str) -> Response:  # a hosted model's local fallback
        return await _serve(request, ctx, body.model_copy(update={"model": name}))

    if relayed := await relay_if_hosted(request, ctx, body.model, IMAGES, local):
        return relayed
    return await _serve(request, ctx, body)


async def _serve(request: Request, ctx: RequestContext, body: ImageGenerationRequest) -> Response:
    found = services(request)
    work = found.images.generate(ctx, body, found.settings.public_base_url)  # not the Host header
    return JSONResponse(await cancel_on_disconnect(request, work))
