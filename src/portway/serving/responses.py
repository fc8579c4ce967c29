"""The Responses API. A response is a chat completion of its conversation (the
``previous_response_id`` chain, then the request's input), run through
:class:`~portway.serving.chat.ChatService` (so metering, tools, constrained
decoding, the reasoning split and cancellation work as in chat), streamed as
Responses events, and stored for the user who created it.

The unary body is the ``response`` of the stream's last event, so the two agree.
A response is stored (unless ``store`` is false) before its last event is sent;
a failed or cancelled one is stored with that status; a refused one not at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio

from portway.aio import PrimedStream, aclose
from portway.errors import ContextLengthExceeded, InvalidRequest, NotFound, PortwayError
from portway.protocol import response_object as wire
from portway.protocol.responses import CreateResponse
from portway.registry.models import ModelEntry
from portway.serving.chat import ChatRun, ChatService
from portway.serving.context import RequestContext
from portway.serving.responses_events import EventWriter
from portway.serving.responses_input import (
    Item,
    check_conversation,
    new_id,
    normalise,
    to_messages,
    turns,
)
from portway.serving.responses_request import (
    chat_request,
    check_supported,
    echo,
    named_for_responses,
)
from portway.store import Store
from portway.store.records import StoredResponse

log = logging.getLogger("portway.responses")

MAX_CHAIN = 100
"""The most responses one conversation (a ``previous_response_id`` chain) may hold."""

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass
class ResponseRun:
    """One accepted response: the chat run behind it and what it will store."""

    id: str
    created_at: int
    user_id: int
    chat: ChatRun
    chunks: PrimedStream[dict[str, Any]]
    echo: dict[str, Any]
    input_items: list[Item]
    store: bool
    finish_reason: str = "stop"
    error: PortwayError | None = None

    def snapshot(self, status: wire.ResponseStatus, output: list[wire.OutputItem]) -> wire.Response:
        """The response object with ``status`` and ``output`` (usage once it ends)."""
        fields: dict[str, Any] = {}
        if status not in ("in_progress", "queued"):
            fields["usage"] = self.usage()
        if status == "completed":
            fields["completed_at"] = int(time.time())
        if status == "incomplete":
            fields["incomplete_details"] = {"reason": _INCOMPLETE[self.finish_reason]}
        if self.error is not None:
            fields["error"] = {"code": "server_error", "message": self.error.message}
        return wire.Response.model_validate(
            {
                "id": self.id,
                "created_at": self.created_at,
                "status": status,
                "model": self.chat.entry.name,
                "output": output,
                **self.echo,
                **fields,
            }
        )

    def usage(self) -> wire.ResponseUsage:
        meter = self.chat.meter
        return wire.ResponseUsage(
            input_tokens=meter.prompt_tokens,
            output_tokens=meter.completion_tokens,
            total_tokens=meter.prompt_tokens + meter.completion_tokens,
            output_tokens_details=wire.OutputTokensDetails(
                reasoning_tokens=self.chat.reasoning_tokens
            ),
        )

    def final_status(self) -> wire.ResponseStatus:
        if self.error is not None:
            return "failed"
        return "incomplete" if self.finish_reason in _INCOMPLETE else "completed"


class ResponsesService:
    """Creates, reads and deletes the responses of the Responses API."""

    def __init__(self, chat: ChatService, store: Store) -> None:
        self.chat = chat
        self.store = store

    # -- creating

    async def create(
        self, ctx: RequestContext, body: CreateResponse, entry: ModelEntry | None = None
    ) -> ResponseRun:
        """Check ``body``, rebuild its conversation and start the model on it
        (``entry``, if the caller resolved the model ``body`` names).

        Everything a request can be refused for is raised here, before anything
        is stored or streamed.
        """
        check_supported(body)
        items = normalise(body.input)
        history = await self._history(ctx.principal.user.id, body.previous_response_id)
        check_conversation(history, items)
        chat, chunks = await self._start(ctx, body, history + items, entry)
        return ResponseRun(
            id=new_id("resp"),
            created_at=int(time.time()),
            user_id=ctx.principal.user.id,
            chat=chat,
            chunks=chunks,
            echo=echo(body),
            input_items=items,
            store=body.store is not False,
        )

    async def _history(self, user_id: int, previous_id: str | None) -> list[Item]:
        """The items of the conversation ``previous_id`` ends, oldest first."""
        if previous_id is None:
            return []
        chain = await self.store.response_chain(previous_id, user_id, MAX_CHAIN)
        param = "previous_response_id"
        if not chain:
            raise NotFound(f"Previous response with id '{previous_id}' not found.", param=param)
        if len(chain) >= MAX_CHAIN:  # the new response would be one too many (or a cycle)
            raise InvalidRequest(
                f"A conversation holds at most {MAX_CHAIN} responses, and the one that "
                f"'{param}' continues is full; start a new conversation with the items "
                "you want to keep.",
                param=param,
                code="conversation_too_long",
            )
        missing = chain[-1].previous_response_id
        if missing is not None:
            raise NotFound(
                f"Response '{missing}', an earlier part of the conversation that '{param}' "
                "continues, no longer exists.",
                param=param,
            )
        return [
            item for stored in reversed(chain) for item in stored.input_items + stored.output_items
        ]

    async def _start(
        self,
        ctx: RequestContext,
        body: CreateResponse,
        items: list[Item],
        entry: ModelEntry | None,
    ) -> tuple[ChatRun, PrimedStream[dict[str, Any]]]:
        """Accept and prime the chat run; with ``truncation: "auto"``, drop the
        oldest turns until the prompt fits the model's context."""
        kept = turns(items)
        while True:
            messages = to_messages(body.instructions, [item for turn in kept for item in turn])
            with named_for_responses():
                run = await self.chat.accept(ctx, chat_request(body, messages), entry)
                try:
                    return run, await self.chat.stream(ctx, run)
                except ContextLengthExceeded:
                    if body.truncation != "auto" or len(kept) <= 1:
                        raise
            kept = kept[1:]

    # -- running

    async def events(self, run: ResponseRun) -> AsyncIterator[dict[str, Any]]:
        """The stream events of ``run``, numbered from 0; see the module docstring."""
        writer = EventWriter()
        ended = False
        try:
            start = run.snapshot("in_progress", [])
            yield writer.lifecycle("created", start)
            yield writer.lifecycle("in_progress", start)
            try:
                async for event in self._output_events(run, writer):
                    yield event
            except Exception as exc:
                writer.abandon()
                run.error = exc if isinstance(exc, PortwayError) else PortwayError()
                if not isinstance(exc, PortwayError):
                    log.exception("response %s failed", run.id, exc_info=exc)
            status = run.final_status()
            final = run.snapshot(status, writer.output)
            await self._save(run, final)
            ended = True
            yield writer.lifecycle(status, final)
        finally:
            await aclose(run.chunks)
            if not ended:
                writer.abandon()
                await self._save(run, run.snapshot("cancelled", writer.output))

    async def _output_events(
        self, run: ResponseRun, writer: EventWriter
    ) -> AsyncIterator[dict[str, Any]]:
        async for chunk in run.chunks:
            for choice in chunk["choices"]:
                for event in writer.feed(choice):
                    yield event
                if choice["finish_reason"]:
                    run.finish_reason = choice["finish_reason"]
                    status: wire.ItemStatus = (
                        "incomplete" if run.finish_reason in _INCOMPLETE else "completed"
                    )
                    for event in writer.finish(status):
                        yield event

    async def complete(self, run: ResponseRun) -> dict[str, Any]:
        """The unary body: the response of the stream's last event. A failure
        is raised (after the failed response was stored)."""
        events = self.events(run)
        last: dict[str, Any] = {}
        try:
            async for event in events:
                last = event
        finally:
            await aclose(events)
        if run.error is not None:
            raise run.error
        body: dict[str, Any] = last["response"]
        return body

    async def _save(self, run: ResponseRun, response: wire.Response) -> None:
        if not run.store:
            return
        body = response.model_dump(mode="json")
        stored = StoredResponse(
            id=run.id,
            user_id=run.user_id,
            previous_response_id=response.previous_response_id,
            model=response.model,
            status=response.status,
            created_at=datetime.fromtimestamp(run.created_at, UTC),
            input_items=tuple(run.input_items),
            output_items=tuple(body["output"]),
            body=body,
        )
        with anyio.CancelScope(shield=True):
            await self.store.save_response(stored)

    # -- reading

    async def _owned(self, ctx: RequestContext, response_id: str) -> StoredResponse:
        stored = await self.store.get_response(response_id, ctx.principal.user.id)
        if stored is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return stored

    async def retrieve(self, ctx: RequestContext, response_id: str) -> dict[str, Any]:
        return (await self._owned(ctx, response_id)).body

    async def delete(self, ctx: RequestContext, response_id: str) -> dict[str, Any]:
        if not await self.store.delete_response(response_id, ctx.principal.user.id):
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return wire.DeletedResponse(id=response_id).model_dump(mode="json")

    async def cancel(self, ctx: RequestContext, response_id: str) -> dict[str, Any]:
        await self._owned(ctx, response_id)
        raise InvalidRequest(
            "Cannot cancel a synchronous response: only background responses can be "
            "cancelled, and Portway runs none.",
            param="response_id",
        )

    async def input_items(
        self, ctx: RequestContext, response_id: str, *, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        """A page of the response's input items (OpenAI's list object)."""
        user_id = ctx.principal.user.id
        try:
            page = await self.store.list_input_items(
                response_id, user_id, after=after, limit=limit, order=order
            )
        except ValueError as exc:
            raise InvalidRequest(
                f"No input item with id '{after}' in response '{response_id}'.", param="after"
            ) from exc
        if page is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        data = list(page.items)
        return wire.InputItemList(
            data=data,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
            has_more=page.has_more,
        ).model_dump(mode="json")
