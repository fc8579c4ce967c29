"""``POST /chat/completions``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from portway.api.deps import context, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import relay_if_hosted
from portway.protocol.chat import ChatCompletionRequest
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import CHAT
from portway.sse import EventStreamResponse

router = APIRouter()


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(request: Request) -> Any:
    ctx = await context(request, "chat.completions")
    body = await parse_body(request, ChatCompletionRequest)

    async def local(name: str) -> Response:  # a hosted model's local fallback
        return await _serve(request, ctx, body.model_copy(update={"model": name}))

    if relayed := await relay_if_hosted(request, ctx, body.model, CHAT, local):
        return relayed
    return await _serve(request, ctx, body)


async def _serve(request: Request, ctx: RequestContext, body: ChatCompletionRequest) -> Response:
    chat = services(request).chat
    run = await chat.accept(ctx, body)
    if body.stream:
        return EventStreamResponse(await chat.stream(ctx, run))
    result = await cancel_on_disconnect(request, chat.complete(ctx, run))
    return JSONResponse(result)
