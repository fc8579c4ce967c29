"""What every API route needs: the app's services, the principal, the parsed body."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from portway.api.standard_json import holds_non_finite, non_finite_error
from portway.auth.principal import Authenticator, Principal
from portway.errors import InvalidRequest
from portway.limits.limiter import Limiter
from portway.registry.models import Registry
from portway.serving.chat import ChatService
from portway.serving.context import RequestContext
from portway.serving.embeddings import EmbeddingService
from portway.serving.images import ImageService
from portway.serving.media import MediaStore
from portway.serving.relay.service import RelayService
from portway.serving.usage import Meter
from portway.settings import Settings

M = TypeVar("M", bound=BaseModel)


@dataclass
class Services:
    """Built once at start-up and kept on ``app.state.services``."""

    settings: Settings
    authenticator: Authenticator
    registry: Registry
    chat: ChatService
    embeddings: EmbeddingService
    images: ImageService
    media: MediaStore
    relay: RelayService
    on_usage: Callable[[Meter, str], None] | None = None
    """Told of each request's usage once its ledger row is written (metrics)."""
    limiter: Limiter | None = None
    """Limits per token and per user (``portway limits``), around every model request."""


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def principal(request: Request) -> Principal:
    header = request.headers.get("authorization")
    return await services(request).authenticator.authenticate(header)


async def context(request: Request, endpoint: str) -> RequestContext:
    who = await principal(request)
    who.require_scope("inference")
    fields: dict[str, Any] = request.state.log_fields
    return RequestContext(
        request_id=request.state.request_id,
        principal=who,
        endpoint=endpoint,
        log_fields=fields,
        on_usage=services(request).on_usage,
    )


_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")
ROLE_TAGS = frozenset({"system", "developer", "user", "assistant", "tool"})
FIELD_TAGS = {"response_format": frozenset({"text", "json_object", "json_schema"})}
"""Fields holding a union tagged by ``type``: pydantic names the tag after the field."""


def _is_tag(loc: tuple[int | str, ...], index: int) -> bool:
    """Whether ``loc[index]`` is the tag of a discriminated union: a message's role
    after its index, or a ``FIELD_TAGS`` tag after its field."""
    before = loc[index - 1] if index else None
    if isinstance(before, int):
        return loc[index] in ROLE_TAGS
    return isinstance(before, str) and loc[index] in FIELD_TAGS.get(before, ())


def _parts(loc: tuple[int | str, ...]) -> list[int | str]:
    """A pydantic location without the union branch names pydantic adds to it
    (``str``, ``list[...]``, ``item:message``, tags: see ``_is_tag``)."""
    parts: list[int | str] = []
    for index, part in enumerate(loc):
        named = isinstance(part, str) and _FIELD.match(part) and part != "str"
        if isinstance(part, int) or (named and not _is_tag(loc, index)):
            parts.append(part)
    return parts


def _param(loc: tuple[int | str, ...]) -> str | None:
    """OpenAI's name for a pydantic location: ``messages[0].content``."""
    text = ""
    for part in _parts(loc):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """The deepest validation problem (the branch of a union that got furthest),
    named the way OpenAI names parameters."""
    return invalid_request_of(exc.errors(include_url=False))


def invalid_request_of(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """:func:`invalid_request` for pydantic's error details (FastAPI's too, their
    locations without the ``query``, ``path``, ``header`` or ``body`` before them)."""
    error = max(errors, key=lambda found: len(_parts(tuple(found["loc"]))))
    kind = error["type"]
    param = _param(tuple(error["loc"]) + (("role",) if kind == "union_tag_invalid" else ()))
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


async def parse_body(request: Request, model: type[M]) -> M:
    """The body as ``model``: standard JSON (no NaN or Infinity) that validates.
    Where a field's own validation refuses a non-finite number, the 400 names it."""
    body = await request.body()
    non_finite = holds_non_finite(body)
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from exc
    if non_finite:
        raise non_finite_error()
    return parsed
