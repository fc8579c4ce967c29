"""The runner's side of a call: run one request on the model's backend and
send back its deltas, its result or its error."""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from portway.aio import aclose
from portway.backends.base import (
    ChatBackend,
    Delta,
    EmbeddingBackend,
    ImageBackend,
    ModelBackend,
)
from portway.errors import InvalidRequest, ModelFailed, PortwayError
from portway.registry.runner_spec import RunnerTimeouts
from portway.runners import wire

log = logging.getLogger("portway.runner")

Send = Callable[[dict[str, Any]], Awaitable[None]]
_TEXTS = TypeAdapter(list[str])


def model_info(
    backend: ModelBackend,
    reference: str,
    version: str,
    timeouts: RunnerTimeouts | None = None,
) -> dict[str, Any]:
    """The ``model`` part of ``hello``: what the server needs to serve the backend."""
    found: dict[str, Any] = {"reference": reference, "version": version, "kind": backend.kind}
    if timeouts is not None:
        found["timeouts"] = timeouts.model_dump()
    if isinstance(backend, ChatBackend):
        caps = backend.capabilities
        names = [name for name in wire.Capabilities.model_fields if hasattr(caps, name)]
        found |= {
            "context_length": backend.context_length,
            "capabilities": {name: getattr(caps, name) for name in names},
            "tool_family": backend.tool_family,
            "reasons": backend.reasons,
        }
    elif isinstance(backend, EmbeddingBackend):
        found |= {"context_length": backend.max_input_tokens, "dimensions": backend.dimensions}
    elif isinstance(backend, ImageBackend):
        found["context_length"] = backend.max_prompt_tokens
    return found


def error_frame(call_id: str, error: PortwayError) -> dict[str, Any]:
    return {
        "type": "error",
        "id": call_id,
        "status": error.status,
        "message": error.message[:4000],
        "code": error.code,
        "param": error.param,
    }


class Worker:
    """Runs the server's requests on ``backend`` (already started)."""

    def __init__(self, backend: ModelBackend) -> None:
        self.backend = backend

    async def run(self, frame: dict[str, Any], send: Send) -> None:
        """Answer one request frame; cancelling the task stops the work."""
        call_id = str(frame.get("id", ""))
        try:
            await self._dispatch(frame, call_id, send)
        except PortwayError as exc:
            await send(error_frame(call_id, exc))
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            await send(
                error_frame(call_id, PortwayError(f"The runner got a bad request: {problem}"))
            )
        except Exception as exc:
            log.exception("request %s failed", call_id)
            await send(error_frame(call_id, ModelFailed(f"{type(exc).__name__}: {exc}")))

    async def _dispatch(self, frame: dict[str, Any], call_id: str, send: Send) -> None:
        kind, backend = frame.get("type"), self.backend
        if kind == "chat" and isinstance(backend, ChatBackend):
            await self._chat(backend, wire.request_from_json(frame.get("request")), call_id, send)
        elif kind == "embed" and isinstance(backend, EmbeddingBackend):
            vectors = await backend.embed(_TEXTS.validate_python(frame.get("texts")))
            await send({"type": "result", "id": call_id, "vectors": vectors})
        elif kind == "count_tokens" and isinstance(backend, EmbeddingBackend):
            counts = await backend.count_tokens(_TEXTS.validate_python(frame.get("texts")))
            await send({"type": "result", "id": call_id, "counts": counts})
        elif kind == "image" and isinstance(backend, ImageBackend):
            images = await _images(backend, frame.get("request"))
            await send({"type": "result", "id": call_id, "images": images})
        else:
            raise InvalidRequest(
                f"This runner serves a {backend.kind} model, not '{kind}' requests."
            )

    @staticmethod
    async def _chat(backend: ChatBackend, request: Any, call_id: str, send: Send) -> None:
        """Stream the deltas as they come; the last one carries finish_reason."""
        stream = backend.generate(request)
        try:
            finished = False
            async for delta in stream:
                finished = finished or delta.finish_reason is not None
                await send(wire.delta_frame(call_id, delta))
            if not finished:
                await send(wire.delta_frame(call_id, Delta(finish_reason="stop")))
        finally:
            await aclose(stream)


async def _images(backend: ImageBackend, data: Any) -> list[dict[str, Any]]:
    request = wire.image_request_from_json(data)
    backend.prompt_tokens(request.prompt)
    images = await backend.generate(request)
    return [
        {"png": base64.b64encode(image.png).decode("ascii"), "revised_prompt": image.revised_prompt}
        for image in images
    ]
