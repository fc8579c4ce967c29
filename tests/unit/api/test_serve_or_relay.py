"""A model route resolves the model once: serve_or_relay resolves it and hands the
entry to the serving layer, which does not resolve it again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from starlette.responses import Response

from portway.api.relay import serve_or_relay
from portway.auth.principal import Principal
from portway.backends.scripted import ScriptedBackend
from portway.protocol.chat import ChatCompletionRequest
from portway.registry.models import ModelEntry, Registry
from portway.serving.chat import ChatService
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import CHAT
from tests.unit.doubles import Ledger, context, registry

MODEL = "acme/chat/models/bot"


class Counting(Registry):
    def __init__(self, inner: Registry) -> None:
        self.inner = inner
        self.resolved: list[str] = []

    def resolve(self, text: str, principal: Principal) -> ModelEntry:
        self.resolved.append(text)
        return self.inner.resolve(text, principal)


async def test_a_local_model_is_resolved_once_per_request() -> None:
    counting = Counting(registry((MODEL, ScriptedBackend(["hi"]))))
    chat = ChatService(counting, Ledger())  # type: ignore[arg-type]
    request: Any = SimpleNamespace(
        app=SimpleNamespace(
            state=SimpleNamespace(services=SimpleNamespace(registry=counting, limiter=None))
        )
    )
    ctx = context("chat.completions")
    body = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    )
    served: list[ModelEntry] = []

    async def serve(
        request: Any, ctx: RequestContext, body: ChatCompletionRequest, entry: ModelEntry
    ) -> Response:
        served.append(entry)
        await chat.complete(ctx, await chat.accept(ctx, body, entry))
        return Response()

    await serve_or_relay(request, ctx, body, CHAT, serve)
    assert [entry.name for entry in served] == [MODEL]
    assert counting.resolved == [MODEL]
