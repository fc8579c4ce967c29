"""Image generation wire models, after OpenAI's ``CreateImageRequest`` / ``ImagesResponse``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from portway.protocol.base import RequestModel, ResponseModel

MAX_PROMPT_CHARS = 32000
"""The longest prompt OpenAI takes (its GPT image models'); longer is a 400."""


class ImageGenerationRequest(RequestModel):
    """Every field OpenAI defines is declared, so each is honoured or refused by name."""

    model: str
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    moderation: Literal["low", "auto"] | None = None
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    user: str | None = Field(default=None, max_length=256)


class Image(ResponseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImageInputTokensDetails(ResponseModel):
    text_tokens: int
    image_tokens: int = 0


class ImageUsage(ResponseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: ImageInputTokensDetails


class ImagesResponse(ResponseModel):
    created: int
    data: list[Image]
    output_format: Literal["png", "jpeg", "webp"] | None = None
    usage: ImageUsage | None = None
