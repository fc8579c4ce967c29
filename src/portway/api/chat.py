"""``POST /chat/completions``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import serve_or_relay
from portway.protocol.chat import ChatCompletionRequest
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import CHAT
from portway.sse import EventStreamResponse

router = APIRouter()


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(request: Request) -> Any:
    ctx = await context(request, "chat.completions")
    body = await parse_body(request, ChatCompletionRequest)
    return await serve_or_relay(request, ctx, body, CHAT, _serve)


async def _serve(
    request: Request, ctx: RequestContext, body: ChatCompletionRequest, entry: ModelEntry
) -> Response:
    chat = services(request).chat
    run = await chat.accept(ctx, body, entry)
    if body.stream:
        return EventStreamResponse(await chat.stream(ctx, run))
    result = await cancel_on_disconnect(request, chat.complete(ctx, run))
    return JSONResponse(result)
