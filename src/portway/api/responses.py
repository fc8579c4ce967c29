"""``/responses``: create (unary or SSE), retrieve, delete, cancel, input items."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from portway.api.deps import context, services
from portway.api.disconnect import cancel_on_disconnect
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.base import RequestModel
from portway.protocol.responses import CreateResponse
from portway.serving.context import RequestContext
from portway.serving.responses import ResponsesService
from portway.serving.responses_request import SUPPORTED_INCLUDE
from portway.sse import NamedEventStreamResponse

router = APIRouter()

ENDPOINT = "responses"
_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")


def _service(request: Request) -> ResponsesService:
    return ResponsesService(services(request).chat, request.app.state.store)


def _parts(loc: tuple[int | str, ...]) -> list[int | str]:
    """A pydantic location without union branch names (``str``, ``list[...]``,
    ``item:message``...)."""
    return [part for part in loc if isinstance(part, int) or (_FIELD.match(part) and part != "str")]


def _param(loc: tuple[int | str, ...]) -> str | None:
    """OpenAI's name for a pydantic location: ``input[0].content``."""
    text = ""
    for part in _parts(loc):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def invalid_body(exc: ValidationError) -> InvalidRequest:
    """The deepest validation problem of a request body (the branch of a union
    that got furthest), with its parameter named."""
    errors = exc.errors(include_url=False)
    error = max(errors, key=lambda found: len(_parts(tuple(found["loc"]))))
    kind, param = error["type"], _param(tuple(error["loc"]))
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request: " + error["msg"], code="invalid_json"
        )
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
    if kind in ("model_type", "dict_type") and not error["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    message = f"Invalid value for '{param}': {error['msg']}" if param else error["msg"]
    return InvalidRequest(message, param=param, code="invalid_value" if param else None)


async def _body(request: Request) -> CreateResponse:
    try:
        return CreateResponse.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid_body(exc) from exc


@router.post("/responses", response_model=None)
async def create_response(request: Request) -> Any:
    ctx = await context(request, ENDPOINT)
    body = await _body(request)
    service = _service(request)
    run = await service.create(ctx, body)
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
        raise invalid_body(exc) from exc
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
