"""Embedding and image models served by runners: one unary call per request."""

from __future__ import annotations

import base64
import binascii

from portway.backends.base import (
    PNG_MAGIC,
    EmbeddingBackend,
    GeneratedImage,
    ImageBackend,
    ImageRequest,
)
from portway.backends.tokens import estimate_tokens
from portway.errors import BadGateway, UnsupportedParameter
from portway.runners.backend import RunnerBackend
from portway.runners.pool import MAX_QUEUE
from portway.runners.wire import ModelInfo


class RunnerEmbeddingBackend(RunnerBackend, EmbeddingBackend):
    """Vectors and token counts come from a runner; token-id inputs are refused."""

    def __init__(
        self, reference: str, info: ModelInfo | None = None, max_queue: int = MAX_QUEUE
    ) -> None:
        super().__init__(reference, info, max_queue)
        if info is not None:
            self.dimensions = info.dimensions
            self.max_input_tokens = info.context_length
        self.vocab_size = 0

    async def count_tokens(self, texts: list[str]) -> list[int]:
        counts = (await self.unary("count_tokens", {"texts": texts})).counts
        if counts is None or len(counts) != len(texts):
            raise self._broken("one token count per text")
        return counts

    async def decode(self, ids: list[list[int]]) -> list[str]:
        raise UnsupportedParameter("input", "cannot hold token ids for this model; send text")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = (await self.unary("embed", {"texts": texts})).vectors
        if vectors is None or len(vectors) != len(texts):
            raise self._broken("one vector per text")
        if any(len(vector) != self.dimensions for vector in vectors):
            raise self._broken(f"vectors of {self.dimensions} values")
        return vectors

    def _broken(self, wanted: str) -> BadGateway:
        return BadGateway(f"The runner of '{self.reference}' did not answer with {wanted}.")


class RunnerImageBackend(RunnerBackend, ImageBackend):
    """PNG images made by a runner; prompts are counted here by estimate, and the
    runner refuses one longer than its model takes."""

    def __init__(
        self, reference: str, info: ModelInfo | None = None, max_queue: int = MAX_QUEUE
    ) -> None:
        super().__init__(reference, info, max_queue)
        self.max_prompt_tokens = 0

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(len(text))

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        images = (await self.unary("image", {"request": request})).images
        if images is None or len(images) != request.n:
            raise BadGateway(f"The runner of '{self.reference}' did not send {request.n} images.")
        return [
            GeneratedImage(_png(image.png, self.reference), image.revised_prompt)
            for image in images
        ]


def _png(data: str, reference: str) -> bytes:
    try:
        png = base64.b64decode(data, validate=True)
    except binascii.Error:
        png = b""
    if not png.startswith(PNG_MAGIC):
        raise BadGateway(f"The runner of '{reference}' sent an image that is not a PNG.")
    return png
