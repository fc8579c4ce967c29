"""Embeddings serving on a fake model: wire shapes, refusals, metering, batching."""

from __future__ import annotations

import asyncio
import base64
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from portway.api.deps import invalid_request
from portway.backends.base import EmbeddingBackend
from portway.backends.batching import Batcher
from portway.backends.scripted import ScriptedBackend
from portway.errors import InvalidRequest, UnsupportedParameter
from portway.protocol.embeddings import EmbeddingRequest
from portway.serving.context import RequestContext
from portway.serving.embeddings import EmbeddingService, shorten
from tests.unit.doubles import Ledger, context, registry

MODEL = "acme/embed/models/fake"
CHAT = "acme/chat/models/bot"


class Fake(EmbeddingBackend):
    """Words are tokens; token id i decodes to the word ``w{i}``; 4 dimensions."""

    dimensions = 4
    max_input_tokens = 5
    vocab_size = 100
    shortening = True

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(text.split()) for text in texts]

    async def decode(self, ids: list[list[int]]) -> list[str]:
        return [" ".join(f"w{token}" for token in tokens) for tokens in ids]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(texts)
        return [[0.5, 0.5, 0.5, 0.5] if len(text) % 2 else [0.8, 0.6, 0.0, 0.0] for text in texts]


def _service(backend: EmbeddingBackend | None = None) -> tuple[EmbeddingService, Ledger, Fake]:
    fake = backend or Fake()
    ledger = Ledger()
    served = registry((MODEL, fake), (CHAT, ScriptedBackend(["a"])))
    return EmbeddingService(served, ledger), ledger, fake  # type: ignore[return-value]


def _ctx() -> RequestContext:
    return context("embeddings")


def _request(**fields: Any) -> EmbeddingRequest:
    return EmbeddingRequest.model_validate({"model": MODEL, "input": "hi there", **fields})


async def _create(**fields: Any) -> tuple[dict[str, Any], Ledger, Fake]:
    service, ledger, fake = _service()
    body = await service.create(_ctx(), _request(**fields))
    return body, ledger, fake


async def test_body_usage_and_one_ledger_row() -> None:
    body, ledger, _ = await _create(input=["one two", "three"], user="u-1")
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert body["data"][0] == {"object": "embedding", "index": 0, "embedding": [0.5] * 4}
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    rows = [
        (row.status, row.prompt_tokens, row.completion_tokens, row.end_user) for row in ledger.rows
    ]
    assert rows == [("completed", 3, 0, "u-1")]
    assert ledger.rows[0].endpoint == "embeddings"


async def test_base64_is_little_endian_float32_of_the_floats() -> None:
    floats, _, _ = await _create(input=["odd", "even"])
    packed, _, _ = await _create(input=["odd", "even"], encoding_format="base64")
    for plain, encoded in zip(floats["data"], packed["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(encoded["embedding"]), dtype="<f4")
        assert decoded.tolist() == plain["embedding"]


async def test_dimensions_shorten_and_renormalise() -> None:
    body, _, _ = await _create(input="even", dimensions=1)
    assert body["data"][0]["embedding"] == [1.0]
    vector = shorten([0.5, 0.5, 0.5, 0.5], 3)
    assert math.isclose(math.fsum(value * value for value in vector), 1.0, rel_tol=1e-6)
    assert np.array(vector, dtype="<f4").tolist() == vector  # float32 values, exactly


async def test_full_dimensions_are_accepted_even_without_shortening() -> None:
    fake = Fake()
    fake.shortening = False
    service, _, _ = _service(fake)
    body = await service.create(_ctx(), _request(dimensions=4))
    assert len(body["data"][0]["embedding"]) == 4
    with pytest.raises(UnsupportedParameter) as refused:
        await service.create(_ctx(), _request(dimensions=2))
    assert refused.value.param == "dimensions"


async def test_more_dimensions_than_the_model_has_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as refused:
        await _create(dimensions=5)
    assert refused.value.param == "dimensions"


async def test_token_ids_are_decoded_with_the_model() -> None:
    _, ledger, fake = await _create(input=[[1, 2], [3]])
    assert fake.calls == [["w1 w2", "w3"]]
    assert ledger.rows[0].prompt_tokens == 3
    _, _, fake = await _create(input=[7, 8, 9])
    assert fake.calls == [["w7 w8 w9"]]


@pytest.mark.parametrize("ids", [[[1, 100]], [[-1]], [5, 1000]])
async def test_token_ids_outside_the_vocabulary_are_refused(ids: list[Any]) -> None:
    service, ledger, fake = _service()
    with pytest.raises(InvalidRequest) as refused:
        await service.create(_ctx(), _request(input=ids))
    assert refused.value.param == "input"
    assert "vocabulary" in refused.value.message
    assert ledger.rows == []
    assert fake.calls == []


async def test_input_over_the_limit_is_refused_and_not_metered() -> None:
    service, ledger, fake = _service()
    with pytest.raises(InvalidRequest) as refused:
        await service.create(_ctx(), _request(input=["short", "a b c d e f"]))
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "input"
    assert "input[1]" in refused.value.message
    assert ledger.rows == []
    assert fake.calls == []


async def test_a_chat_model_is_the_wrong_kind() -> None:
    service, ledger, _ = _service()
    with pytest.raises(InvalidRequest) as refused:
        await service.create(_ctx(), _request(model=CHAT))
    assert refused.value.code == "wrong_model_kind"
    assert "/chat/completions" in refused.value.message
    assert ledger.rows == []


async def test_a_failing_model_writes_a_failed_row() -> None:
    class Broken(Fake):
        async def embed(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("boom")

    service, ledger, _ = _service(Broken())
    with pytest.raises(RuntimeError):
        await service.create(_ctx(), _request())
    assert [(row.status, row.error_code) for row in ledger.rows] == [("failed", "server_error")]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([], "empty array"),
        ("", "empty string"),
        (["a", ""], "input[1]"),
        ([[]], "empty list"),
        (["x"] * 10_000, "at most 2048"),
        (["a", [1]], "mixes"),
        ([1.5], "token ids"),
        ([True], "token ids"),
        ({"text": "a"}, "string or an array"),
    ],
)
def test_bad_inputs_are_400s_naming_input(value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EmbeddingRequest.model_validate({"model": MODEL, "input": value})
    error = invalid_request(caught.value)
    assert error.status == 400
    assert error.param == "input"
    assert words in error.message


def test_unknown_fields_and_formats_are_refused() -> None:
    for fields, param in (({"truncate": True}, "truncate"), ({"encoding_format": "int8"}, None)):
        with pytest.raises(ValidationError) as caught:
            EmbeddingRequest.model_validate({"model": MODEL, "input": "a", **fields})
        error = invalid_request(caught.value)
        assert error.param == (param or "encoding_format")


# ---------------------------------------------------------------- the batcher


async def test_concurrent_submissions_share_one_call() -> None:
    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(items)
        return [item * 2 for item in items]

    batcher: Batcher[int, int] = Batcher(double, max_batch=64, max_wait=0.01)
    results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(10)))
    await batcher.close()
    assert results == [[i * 2, (i + 100) * 2] for i in range(10)]
    assert len(calls) == 1


async def test_batches_hold_at_most_max_batch_items_unless_one_job_is_larger() -> None:
    calls: list[int] = []

    def count(items: list[int]) -> list[int]:
        calls.append(len(items))
        return items

    batcher: Batcher[int, int] = Batcher(count, max_batch=4, max_wait=0.01)
    await asyncio.gather(*(batcher.submit([1, 2, 3]) for _ in range(3)), batcher.submit([0] * 9))
    await batcher.close()
    assert sorted(calls) == [3, 3, 3, 9]


async def test_a_failure_reaches_every_caller_of_the_batch() -> None:
    def fail(items: list[int]) -> list[int]:
        raise ValueError("bad batch")

    batcher: Batcher[int, int] = Batcher(fail, max_batch=8, max_wait=0.01)
    results = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
    await batcher.close()
    assert [type(result) for result in results] == [ValueError, ValueError]


async def test_a_cancelled_caller_is_left_out() -> None:
    seen: list[list[int]] = []

    def record(items: list[int]) -> list[int]:
        seen.append(items)
        return items

    batcher: Batcher[int, int] = Batcher(record, max_batch=8, max_wait=0.05)
    leaving = asyncio.ensure_future(batcher.submit([1]))
    staying = asyncio.ensure_future(batcher.submit([2]))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == [2]
    await batcher.close()
    assert seen == [[2]]


async def test_a_lone_caller_never_waits_for_company() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: items, max_batch=8, max_wait=3600)
    assert await asyncio.wait_for(batcher.submit([1]), timeout=60) == [1]
    assert await asyncio.wait_for(batcher.submit([2]), timeout=60) == [2]
    await batcher.close()


WINDOW = 1234.5
"""The batcher's ``max_wait`` in the test below, whose sleep the test holds open."""


async def test_callers_that_come_together_wait_for_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[int]] = []

    def record(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    in_window, window_closes = asyncio.Event(), asyncio.Event()
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        """The batcher's wait for company lasts until the test ends it."""
        if delay != WINDOW:
            return await real_sleep(delay, result)
        in_window.set()
        await window_closes.wait()
        return result

    monkeypatch.setattr(asyncio, "sleep", sleep)
    batcher: Batcher[int, int] = Batcher(record, max_batch=8, max_wait=WINDOW)
    await asyncio.gather(batcher.submit([1]), batcher.submit([2]))
    first = asyncio.ensure_future(batcher.submit([3]))
    await asyncio.wait_for(in_window.wait(), timeout=60)  # a deadline against hangs
    late = asyncio.ensure_future(batcher.submit([4]))
    await real_sleep(0)  # the late caller is queued
    window_closes.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, late), timeout=60)) == [[3], [4]]
    await batcher.close()
    assert calls == [[1, 2], [3, 4]]
