"""``ModelClass``: what a user's ``model.py`` subclasses."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portway.sdk.types import GenerateParams, Output

if TYPE_CHECKING:
    from portway.sdk.config import ModelConfig


class ModelClass:
    """A model Portway serves. Portway sets ``config`` (the parsed
    ``portway-model.toml``) and ``path`` (the model folder), then calls
    ``load_model`` once, off the event loop.

    Chat models implement ``generate`` as a generator (sync generators run in a
    worker thread, async ones on the event loop); embedding models ``embed``;
    image models ``generate_image``. Exceptions become OpenAI errors (HTTP 500,
    code ``model_error``) with the exception's type and message.
    """

    config: ModelConfig
    path: Path
    stops_at_max_tokens: bool = False
    """True when ``generate`` itself stops at ``params.max_tokens`` (by its own
    count, reported with ``Usage``): Portway then does not cut its text by
    ``count_tokens``, and ``Usage.completion_tokens`` reaching it means ``length``."""

    def load_model(self) -> None:
        """Load weights and the like; called once before the first request."""

    def generate(
        self, messages: list[dict[str, Any]], params: GenerateParams
    ) -> Iterator[Output] | AsyncIterator[Output]:
        """Stream the reply to OpenAI-shaped ``messages``: yield ``str``/``Text``,
        ``Reasoning``, ``ToolCall``, ``ToolCallDelta`` or ``Usage``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement generate()")

    def close(self) -> None:
        """Free what ``load_model`` took; called once at shutdown."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; the default estimates one per 4 UTF-8 bytes."""
        return math.ceil(len(text.encode("utf-8")) / 4)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector of ``config.dimensions`` floats per text."""
        raise NotImplementedError(f"{type(self).__name__} does not implement embed()")

    def generate_image(self, prompt: str, *, n: int, width: int, height: int) -> list[bytes]:
        """``n`` PNG images (the file's bytes) of ``width`` x ``height``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement generate_image()")
