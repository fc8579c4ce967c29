"""``POST /images/generations``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import serve_or_relay
from portway.protocol.images import ImageGenerationRequest
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import IMAGES

router = APIRouter()


@router.post("/images/generations", response_model=None)
async def create_image(request: Request) -> Any:
    ctx = await context(request, "images.generations")
    body = await parse_body(request, ImageGenerationRequest)
    return await serve_or_relay(request, ctx, body, IMAGES, _serve)


async def _serve(
    request: Request, ctx: RequestContext, body: ImageGenerationRequest, entry: ModelEntry
) -> Response:
    found = services(request)
    base_url = found.settings.public_base_url  # not the Host header
    work = found.images.generate(ctx, body, base_url, entry)
    return JSONResponse(await cancel_on_disconnect(request, work))
