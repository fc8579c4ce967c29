"""``/responses``: create (unary or SSE), retrieve, delete, cancel, input items."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError
from starlette.responses import Response

from portway.api.deps import context, invalid_request, parse_body, services
from portway.api.disconnect import cancel_on_disconnect
from portway.api.relay import serve_or_relay
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.base import RequestModel
from portway.protocol.responses import CreateResponse
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import RESPONSES
from portway.serving.responses import ResponsesService
from portway.serving.responses_request import SUPPORTED_INCLUDE
from portway.sse import NamedEventStreamResponse

router = APIRouter()

ENDPOINT = "responses"


def _service(request: Request) -> ResponsesService:
    return ResponsesService(services(request).chat, request.app.state.store)


async def _body(request: Request) -> CreateResponse:
    return await parse_body(request, CreateResponse)


@router.post("/responses", response_model=None)
async def create_response(request: Request) -> Any:
    ctx = await context(request, ENDPOINT)
    body = await _body(request)
    return await serve_or_relay(request, ctx, body, RESPONSES, _create)


async def _create(
    request: Request, ctx: RequestContext, body: CreateResponse, entry: ModelEntry
) -> Response:
    service = _service(request)
    run = await service.create(ctx, body, entry)
    if body.stream:
        return NamedEventStreamResponse(service.events(run))
    return JSONResponse(await cancel_on_disconnect(request, service.complete(run)))


class _Query(RequestModel):
    """Query parameters; unknown ones are refused like unknown body fields."""

    include: list[str] = []
    after: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    stream: bool = False
    starting_after: int | None = None
    include_obfuscation: bool | None = None


def _query(request: Request, allowed: set[str]) -> _Query:
    values: dict[str, Any] = {}
    for key in set(request.query_params):
        name = key.removesuffix("[]")
        if name not in allowed:
            raise InvalidRequest(f"Unrecognized query parameter supplied: {name}", param=name)
        found = request.query_params.getlist(key)
        values[name] = found if name == "include" else found[-1]
    try:
        query = _Query.model_validate(values)
    except ValidationError as exc:
        raise invalid_request(exc) from exc
    unsupported = sorted(set(query.include) - SUPPORTED_INCLUDE)
    if unsupported:
        raise UnsupportedParameter("include", f"supports only {sorted(SUPPORTED_INCLUDE)}")
    if query.stream or query.starting_after is not None:
        name = "stream" if query.stream else "starting_after"
        raise UnsupportedParameter(
            name, "is only for background responses, which Portway runs none of"
        )
    return query


async def _context(request: Request) -> RequestContext:
    return await context(request, ENDPOINT)


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(request: Request, response_id: str) -> Any:
    ctx = await _context(request)
    _query(request, {"include", "stream", "starting_after", "include_obfuscation"})
    return JSONResponse(await _service(request).retrieve(ctx, response_id))


@router.delete("/responses/{response_id}", response_model=None)
async def delete_response(request: Request, response_id: str) -> Any:
    ctx = await _context(request)
    _query(request, set())
    return JSONResponse(await _service(request).delete(ctx, response_id))


@router.post("/responses/{response_id}/cancel", response_model=None)
async def cancel_response(request: Request, response_id: str) -> Any:
    ctx = await _context(request)
    return JSONResponse(await _service(request).cancel(ctx, response_id))


@router.get("/responses/{response_id}/input_items", response_model=None)
async def list_input_items(request: Request, response_id: str) -> Any:
    ctx = await _context(request)
    query = _query(request, {"include", "after", "limit", "order"})
    page = await _service(request).input_items(
        ctx, response_id, after=query.after, limit=query.limit, order=query.order
    )
    return JSONResponse(page)
