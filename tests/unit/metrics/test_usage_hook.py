"""Every ledger row is told to the metrics, with the tokens the row holds and the
time its first token came."""

from __future__ import annotations

from dataclasses import replace

from portway.backends.scripted import ScriptedBackend
from portway.protocol.chat import ChatCompletionRequest
from portway.serving.chat import ChatService
from portway.serving.usage import Meter
from tests.unit.doubles import Ledger, context, registry

MODEL = "acme/demo/models/chat"


async def test_a_chat_requests_row_and_first_token_reach_the_metrics() -> None:
    told: list[tuple[Meter, str]] = []
    ledger = Ledger()
    chat = ChatService(registry((MODEL, ScriptedBackend(["a", "b", "c"]))), ledger)  # type: ignore[arg-type]
    ctx = replace(
        context("chat.completions"), on_usage=lambda meter, status: told.append((meter, status))
    )
    body = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi there"}]}
    )
    reply = await chat.complete(ctx, await chat.accept(ctx, body))
    [(meter, status)] = told
    [row] = ledger.rows
    assert status == row.status == "completed"
    assert (meter.prompt_tokens, meter.completion_tokens) == (
        row.prompt_tokens,
        row.completion_tokens,
    )
    assert meter.completion_tokens == reply["usage"]["completion_tokens"] == 3
    assert meter.first_token_at is not None and meter.first_token_at >= meter.clock_started


async def test_without_a_listener_nothing_is_told() -> None:
    ledger = Ledger()
    chat = ChatService(registry((MODEL, ScriptedBackend(["a"]))), ledger)  # type: ignore[arg-type]
    ctx = context("chat.completions")
    body = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    )
    await chat.complete(ctx, await chat.accept(ctx, body))
    assert len(ledger.rows) == 1
