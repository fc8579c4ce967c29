"""Embeddings wire models, after OpenAI's ``CreateEmbeddingRequest`` / ``...Response``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from portway.protocol.base import RequestModel, ResponseModel

MAX_INPUTS = 2048
"""Items one request may hold (OpenAI's limit)."""

EmbeddingInput = str | list[str] | list[int] | list[list[int]]


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_input", message)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_item(item: Any, where: str) -> None:
    if isinstance(item, str):
        if not item:
            raise _invalid(f"{where} is an empty string; every input must hold text")
    elif isinstance(item, list):
        if not item:
            raise _invalid(f"{where} is an empty list of token ids")
        if not all(_is_id(token) for token in item):
            raise _invalid(f"{where} must hold only integer token ids")
    else:
        raise _invalid(f"{where} must be a string or a list of token ids")


def check_input(value: Any) -> Any:
    """A string, or 1 to 2048 strings, token ids or token-id lists (never mixed)."""
    if isinstance(value, str):
        _check_item(value, "'input'")
        return value
    if not isinstance(value, list):
        raise _invalid("'input' must be a string or an array")
    if not value:
        raise _invalid("'input' is an empty array; give at least one input")
    if len(value) > MAX_INPUTS:
        raise _invalid(f"'input' holds {len(value)} items; at most {MAX_INPUTS} are allowed")
    if all(_is_id(item) for item in value):
        return value
    kinds = {type(item) for item in value}
    if len(kinds) > 1:
        raise _invalid("'input' mixes kinds: give only strings or only token-id arrays")
    for index, item in enumerate(value):
        _check_item(item, f"'input[{index}]'")
    return value


class EmbeddingRequest(RequestModel):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, value: Any) -> Any:
        return check_input(value)


class Embedding(ResponseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
