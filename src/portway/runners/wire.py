"""The runner protocol's JSON frames, and the codec of the domain types they carry.

Server to runner: ``ready``, ``refused``, ``chat`` (``request``: a GenerationRequest),
``embed`` and ``count_tokens`` (``texts``), ``image`` (``request``: an ImageRequest),
``cancel``. Runner to server: ``hello``, ``delta`` (a Delta), ``result``
(``vectors``, ``counts`` or ``images``: base64 PNGs), ``error``, ``drain`` (no
new requests, please). Dataclasses travel
with their default-valued fields left out. What a runner sends is untrusted:
:func:`parse_runner_frame` validates it strictly and raises :class:`FrameError`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from portway.backends.base import Delta, GenerationRequest, ImageRequest
from portway.registry.refs import SEGMENT, VERSION_ID
from portway.registry.runner_spec import RunnerTimeouts

MAX_CONCURRENCY = 1024
MAX_ID = 64
MAX_TOKEN_COUNT = 1 << 32
"""The largest token count a frame may carry (a delta's, a prompt's, a text's)."""


class FrameError(ValueError):
    """A frame from a runner that breaks the protocol; the message says how."""


def to_json(value: Any) -> Any:
    """A dataclass (recursively) as JSON-ready data, fields at their default left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        found = {}
        for item in dataclasses.fields(value):
            current = getattr(value, item.name)
            if current != _default(item):
                found[item.name] = to_json(current)
        return found
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    return value


def _default(item: dataclasses.Field[Any]) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return dataclasses.MISSING


_REQUEST = TypeAdapter(GenerationRequest)


def request_from_json(data: Any) -> GenerationRequest:
    """The GenerationRequest a ``chat`` frame carries (raises ValidationError)."""
    return _REQUEST.validate_python(data)


_IMAGE_REQUEST = TypeAdapter(ImageRequest)


def image_request_from_json(data: Any) -> ImageRequest:
    """The ImageRequest an ``image`` frame carries (raises ValidationError)."""
    return _IMAGE_REQUEST.validate_python(data)


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
"""Frames are standard JSON: ``NaN`` and ``Infinity`` are refused like any bad value."""
CallId = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


class Capabilities(BaseModel):
    """What the runner's model honours (see ``portway.backends.base.Capabilities``)."""

    model_config = _STRICT
    tools: bool = False
    json_schema: bool = False
    vision: bool = False
    reasoning: bool = False
    reasoning_effort: bool = False
    logprobs: bool = False
    logit_bias: bool = False
    seed: bool = True


class ModelInfo(BaseModel):
    """The model a runner serves, as its ``hello`` describes it."""

    model_config = _STRICT
    reference: Annotated[str, Field(max_length=400)]
    version: Annotated[str, Field(pattern=f"^{VERSION_ID.pattern}$")]
    kind: Literal["chat", "embedding", "image"] = "chat"
    context_length: Annotated[int, Field(ge=0, le=1 << 24)] = 0
    """Chat: the context window; embedding: the most tokens of one input; image:
    the most tokens of a prompt (0: no limit)."""
    dimensions: Annotated[int, Field(ge=0, le=65536)] = 0
    """Embedding models: the length of their vectors."""
    capabilities: Capabilities = Capabilities()
    tool_family: Literal["typed", "json", "hermes", "llama3", "mistral", "functiongemma"] = "typed"
    reasons: bool = False
    timeouts: RunnerTimeouts | None = None
    """The model folder's own deadlines (a catalogue declaration wins; None: the defaults)."""


class Hello(BaseModel):
    model_config = _STRICT
    type: Literal["hello"]
    model: ModelInfo
    concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)] = 1
    runner: Annotated[str, Field(max_length=200)] = ""
    """A name for the runner in ``/health`` (host and pid)."""
    visibility: Literal["public", "private"] = "public"
    """Private: the owner alone may use the model (a catalogue declaration wins)."""


class DeltaFrame(BaseModel):
    model_config = _STRICT
    type: Literal["delta"]
    id: CallId
    delta: Delta


class ErrorFrame(BaseModel):
    model_config = _STRICT
    type: Literal["error"]
    id: CallId
    status: Annotated[int, Field(ge=400, le=599)] = 500
    message: Annotated[str, Field(max_length=4000)]
    code: Annotated[str, Field(max_length=100)] | None = None
    param: Annotated[str, Field(max_length=200)] | None = None


class ImageResult(BaseModel):
    model_config = _STRICT
    png: Annotated[str, Field(min_length=1)]
    """Base64 PNG bytes."""
    revised_prompt: str | None = None


class ResultFrame(BaseModel):
    """The answer to an ``embed``, ``count_tokens`` or ``image`` frame."""

    model_config = _STRICT
    type: Literal["result"]
    id: CallId
    vectors: list[list[float]] | None = None
    counts: list[Annotated[int, Field(ge=0, le=MAX_TOKEN_COUNT)]] | None = None
    images: list[ImageResult] | None = None


class DrainFrame(BaseModel):
    """The runner is stopping: send it nothing new (it finishes what it has)."""

    model_config = _STRICT
    type: Literal["drain"]


Answer = DeltaFrame | ResultFrame | ErrorFrame
"""A runner's answer to one call."""
RunnerFrame = Hello | DeltaFrame | ResultFrame | ErrorFrame | DrainFrame
_FRAME: TypeAdapter[RunnerFrame] = TypeAdapter(Annotated[RunnerFrame, Field(discriminator="type")])


def parse_runner_frame(text: str | bytes) -> RunnerFrame:
    """Validate one frame from a runner; raise FrameError saying what is wrong."""
    try:
        frame = _FRAME.validate_json(text)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"] if part != "delta") or "frame"
        raise FrameError(f"invalid frame: {where}: {error['msg']}") from None
    if isinstance(frame, DeltaFrame):
        _check_delta(frame.delta)
    if isinstance(frame, Hello):
        _check_reference(frame.model.reference)
    return frame


def _check_delta(delta: Delta) -> None:
    counts = [delta.tokens, *(() if delta.prompt_tokens is None else (delta.prompt_tokens,))]
    if any(count < 0 or count > MAX_TOKEN_COUNT for count in counts):
        raise FrameError(
            f"invalid frame: delta token counts must not be negative or above {MAX_TOKEN_COUNT}"
        )
    if any(piece.index < 0 or piece.index > 1024 for piece in delta.calls):
        raise FrameError("invalid frame: delta.calls index must be between 0 and 1024")


def _check_reference(reference: str) -> None:
    """``{user}/{app}/models/{model}``, or ``{app}/models/{model}`` (the token's user's)."""
    parts = reference.split("/")
    valid = len(parts) in (3, 4) and parts[-2] == "models"
    if not valid or not all(SEGMENT.fullmatch(part) and ".." not in part for part in parts):
        raise FrameError(
            f"invalid frame: model.reference '{reference[:200]}' is not "
            "'{user}/{app}/models/{model}' or '{app}/models/{model}'"
        )


def call_frame(kind: str, call_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A request to a runner: ``chat``, ``embed``, ``count_tokens`` or ``image``."""
    return {"type": kind, "id": call_id, **to_json(payload)}


def cancel_frame(call_id: str) -> dict[str, Any]:
    return {"type": "cancel", "id": call_id}


def delta_frame(call_id: str, delta: Delta) -> dict[str, Any]:
    return {"type": "delta", "id": call_id, "delta": to_json(delta)}
