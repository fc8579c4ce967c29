"""Embedding and image backends for ``portway.sdk`` model folders: the model's
``embed`` and ``generate_image`` run on worker threads, at most
``config.concurrency`` calls at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from portway.backends.base import (
    PNG_MAGIC,
    EmbeddingBackend,
    GeneratedImage,
    ImageBackend,
    ImageRequest,
)
from portway.backends.python.model import model_failed
from portway.errors import ModelFailed, UnsupportedParameter
from portway.sdk.config import ModelConfig
from portway.sdk.model import ModelClass

T = TypeVar("T")


class _Threaded:
    """Runs the model's methods on worker threads, ``concurrency`` at a time."""

    model: ModelClass
    config: ModelConfig
    _slots: asyncio.Semaphore | None = None

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.concurrency)
        async with self._slots:
            try:
                return await asyncio.to_thread(method, *args, **kwargs)
            except Exception as exc:
                raise model_failed(exc, self.config.reference) from exc

    async def close(self) -> None:
        await asyncio.to_thread(self.model.close)

    def _count(self, text: str) -> int:
        try:
            return int(self.model.count_tokens(text))
        except Exception as exc:
            raise model_failed(exc, self.config.reference) from exc


class PythonEmbeddingBackend(_Threaded, EmbeddingBackend):
    """Vectors of ``config.dimensions`` floats; inputs of at most
    ``config.context_length`` tokens; token-id inputs are refused (no vocabulary)."""

    def __init__(self, model: ModelClass, config: ModelConfig) -> None:
        self.model, self.config = model, config
        self.dimensions = config.dimensions
        self.max_input_tokens = config.context_length
        self.vocab_size = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.model.load_model)

    async def count_tokens(self, texts: list[str]) -> list[int]:
        return [self._count(text) for text in texts]

    async def decode(self, ids: list[list[int]]) -> list[str]:
        raise UnsupportedParameter("input", "cannot hold token ids for this model; send text")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = await self._call(self.model.embed, texts)
        return [self._checked(vectors, index) for index in range(len(texts))]

    def _checked(self, vectors: Any, index: int) -> list[float]:
        name = self.config.reference
        if not isinstance(vectors, list) or len(vectors) <= index:
            raise ModelFailed(f"ValueError: {name}.embed() did not return one vector per text")
        vector = [float(value) for value in vectors[index]]
        if len(vector) != self.dimensions:
            raise ModelFailed(
                f"ValueError: {name}.embed() returned a vector of {len(vector)} values, "
                f"not {self.dimensions} (model.dimensions)"
            )
        return vector


class PythonImageBackend(_Threaded, ImageBackend):
    """PNG images from the model's ``generate_image``."""

    def __init__(self, model: ModelClass, config: ModelConfig) -> None:
        self.model, self.config = model, config
        self.max_prompt_tokens = config.context_length

    async def start(self) -> None:
        await asyncio.to_thread(self.model.load_model)

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        images = await self._call(
            self.model.generate_image,
            request.prompt,
            n=request.n,
            width=request.width,
            height=request.height,
        )
        name = self.config.reference
        if not isinstance(images, list) or len(images) != request.n:
            raise ModelFailed(f"ValueError: {name}.generate_image() must return {request.n} images")
        for image in images:
            if not isinstance(image, bytes) or not image.startswith(PNG_MAGIC):
                raise ModelFailed(
                    f"ValueError: {name}.generate_image() returned something that is not PNG bytes"
                )
        return [GeneratedImage(png=image) for image in images]
