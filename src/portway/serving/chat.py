"""Chat completions: one domain stream per choice, shaped into OpenAI's unary body
or stream chunks. The unary body is built by collecting the same chunks."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from portway.aio import PrimedStream, aclose, primed
from portway.backends.base import ChatBackend, Delta, GenerationRequest, TokenLogprob
from portway.protocol import chat as wire
from portway.registry.models import ModelEntry, Registry
from portway.serving import chat_request
from portway.serving.chat_assembly import Assembled
from portway.serving.chat_output import ChoiceOutput
from portway.serving.chat_request import ToolUse
from portway.serving.context import RequestContext
from portway.serving.metering import ledger_row
from portway.serving.usage import Meter, UsageRecorder
from portway.toolcalls import parser_for
from portway.toolcalls.reasoning import ThinkSplitter


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(21).replace("-", "x").replace("_", "y")


def wire_logprobs(items: tuple[TokenLogprob, ...]) -> wire.ChoiceLogprobs:
    return wire.ChoiceLogprobs(
        content=[
            wire.ChatCompletionTokenLogprob(
                token=item.token,
                logprob=item.logprob,
                bytes=list(item.bytes),
                top_logprobs=[
                    wire.TopLogprob(token=top.token, logprob=top.logprob, bytes=list(top.bytes))
                    for top in item.top
                ],
            )
            for item in items
        ]
    )


@dataclass
class ChatRun:
    """One accepted chat request: its model, domain request and meter."""

    entry: ModelEntry
    backend: ChatBackend
    generation: GenerationRequest
    tool_use: ToolUse
    choices: int
    include_usage: bool
    meter: Meter
    id: str
    created: int
    reasoning_tokens: int = 0

    def chunk(
        self, choices: list[wire.ChunkChoice], usage: wire.CompletionUsage | None = None
    ) -> dict[str, Any]:
        body = wire.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.entry.name,
            system_fingerprint=self.entry.fingerprint,
            choices=choices,
            usage=usage,
        ).model_dump(mode="json")
        for choice in body["choices"]:
            choice["delta"] = {
                key: value for key, value in choice["delta"].items() if value is not None
            }
        if not self.include_usage:
            del body["usage"]
        return body

    def usage(self) -> wire.CompletionUsage:
        prompt, completion = self.meter.prompt_tokens, self.meter.completion_tokens
        return wire.CompletionUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            completion_tokens_details=wire.CompletionTokensDetails(
                reasoning_tokens=self.reasoning_tokens
            ),
        )

    def output(self) -> ChoiceOutput:
        """The text-to-delta pipeline for one choice of this run."""
        parser = (
            parser_for(
                self.backend.tool_family,
                constrained=self.tool_use.forced,
                tool_names=[tool.name for tool in self.tool_use.tools],
            )
            if self.tool_use.active and self.backend.tool_family != "typed"
            else None
        )
        splitter = (
            ThinkSplitter(starts_inside=self.backend.reasoning_opened_by_template)
            if self.backend.reasons
            else None
        )
        return ChoiceOutput(parser, splitter, single_call=not self.tool_use.parallel)


class ChatService:
    def __init__(self, registry: Registry, recorder: UsageRecorder) -> None:
        self.registry = registry
        self.recorder = recorder

    async def accept(
        self,
        ctx: RequestContext,
        request: wire.ChatCompletionRequest,
        entry: ModelEntry | None = None,
    ) -> ChatRun:
        """Resolve the model (unless the caller did: ``entry``) and check every
        parameter; nothing runs yet."""
        entry = entry or self.registry.resolve(request.model, ctx.principal)
        backend = entry.chat_backend()
        chat_request.check_supported(request, backend.capabilities)
        tool_use = await chat_request.checked_tool_use(request)
        constraint = (
            await asyncio.to_thread(chat_request.constraint_for, request, tool_use, backend)
            if backend.capabilities.grammar
            else None
        )
        generation = GenerationRequest(
            messages=chat_request.to_messages(request, backend.capabilities),
            sampling=chat_request.to_sampling(request),
            request_id=ctx.request_id,
            tools=tool_use.tools if tool_use.active else (),
            constraint=constraint,
            tool_mode=tool_use.mode,
            tool_name=tool_use.name,
            parallel_tool_calls=tool_use.parallel,
            response_format=chat_request.json_response_format(request),
            user=fair_share_key(ctx),
        )
        meter = ctx.meter(request.user or request.safety_identifier)
        meter.model, meter.version_id = entry.name, entry.version_id
        ctx.log_fields["model"] = entry.name
        return ChatRun(
            entry=entry,
            backend=backend,
            generation=generation,
            tool_use=tool_use,
            choices=request.n or 1,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            meter=meter,
            id=completion_id(),
            created=int(time.time()),
        )

    async def stream(self, ctx: RequestContext, run: ChatRun) -> PrimedStream[dict[str, Any]]:
        """Chunks of ``run``, primed: a prompt the model refuses raises here, and
        writes no usage; once this returns, the run is metered however it ends."""
        return await primed(self._chunks(ctx, run))

    async def complete(self, ctx: RequestContext, run: ChatRun) -> dict[str, Any]:
        """The unary body, built from the same chunks a stream would send."""
        chunks = await self.stream(ctx, replace(run, include_usage=True))
        assembled = Assembled(logprobs=run.generation.sampling.logprobs)
        try:
            async for chunk in chunks:
                assembled.add(chunk)
        finally:
            await aclose(chunks)
        return wire.ChatCompletion(
            id=run.id,
            created=run.created,
            model=run.entry.name,
            system_fingerprint=run.entry.fingerprint,
            choices=[assembled.choice(index) for index in range(run.choices)],
            usage=assembled.usage or run.usage(),
        ).model_dump(mode="json")

    async def _chunks(self, ctx: RequestContext, run: ChatRun) -> AsyncIterator[dict[str, Any]]:
        """The choices run together (a backend may share their prompt's evaluation);
        their chunks go out one choice after the other."""
        choices = await run.backend.generate_choices(run.generation, run.choices)
        try:
            prime = await anext(choices[0])
            run.meter.prompt_tokens = prime.prompt_tokens or 0
        except BaseException:
            await _close_all(choices)
            raise
        try:
            with ledger_row(self.recorder, run.meter, ctx):
                async for chunk in self._choice_chunks(run, 0, choices[0]):
                    yield chunk
                for index in range(1, run.choices):
                    await anext(choices[index])
                    async for chunk in self._choice_chunks(run, index, choices[index]):
                        yield chunk
                if run.include_usage:
                    yield run.chunk([], run.usage())
        finally:
            await _close_all(choices)

    async def _choice_chunks(
        self, run: ChatRun, index: int, deltas: AsyncIterator[Delta]
    ) -> AsyncIterator[dict[str, Any]]:
        output = run.output()
        try:
            opening = wire.ChunkChoice(
                index=index, delta=wire.ChunkDelta(role="assistant", content="")
            )
            yield run.chunk([opening])
            async for delta in deltas:
                run.meter.completion_tokens += delta.tokens
                if delta.tokens:
                    run.meter.first_token()
                if delta.prompt_tokens is not None and index == 0:
                    run.meter.prompt_tokens = delta.prompt_tokens  # a later, exact count
                pieces = output.feed(delta.text, delta.tokens) if delta.text else []
                if delta.reasoning:
                    pieces += output.feed_reasoning(delta.reasoning, delta.tokens)
                if delta.calls:
                    pieces += output.feed_calls(delta.calls)
                logprobs = wire_logprobs(delta.logprobs) if delta.logprobs else None
                for piece in pieces or ([wire.ChunkDelta()] if logprobs else []):
                    yield run.chunk([wire.ChunkChoice(index=index, delta=piece, logprobs=logprobs)])
                    logprobs = None
                if delta.finish_reason:
                    for piece in output.finish():
                        yield run.chunk([wire.ChunkChoice(index=index, delta=piece)])
                    reason = (
                        "tool_calls"
                        if output.calls and delta.finish_reason == "stop"
                        else (delta.finish_reason)
                    )
                    closing = wire.ChunkChoice(
                        index=index, delta=wire.ChunkDelta(), finish_reason=reason
                    )
                    yield run.chunk([closing])
        finally:
            run.reasoning_tokens += output.reasoning_tokens
            await aclose(deltas)


def fair_share_key(ctx: RequestContext) -> str:
    """Whom a request counts for when a model admits requests fairly: its user."""
    return f"user:{ctx.principal.user.id}"


async def _close_all(streams: list[AsyncIterator[Delta]]) -> None:
    for stream in streams:
        await aclose(stream)
