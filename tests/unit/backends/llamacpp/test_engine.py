"""The batched llama.cpp engine, on the real embedded Gemma 3 270M.

What the model writes differs between CPUs, so nothing here depends on it: tests
compare two runs on this machine, count tokens, and read the engine's statistics
(admission order, prompt tokens evaluated and reused).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
import pytest_asyncio

from portway.backends.base import Delta, GenerationRequest, Message, SamplingParams
from portway.backends.llamacpp.admission import FairQueue
from portway.backends.llamacpp.backend import LlamaCppBackend
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.backends.llamacpp.slots import SlotTable, common_prefix
from portway.errors import Overloaded

N_CTX = 512
CHUNK = 8
"""A small prompt chunk, so that the short prompts here span several."""


@pytest.fixture(scope="session")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_gguf(tmp_path_factory.mktemp("data"))


async def started(path: Path, **options: Any) -> LlamaCppBackend:
    model = LlamaCppBackend(path, n_ctx=N_CTX, **options)
    await model.start()
    return model


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def backend(gguf_path: Path) -> AsyncIterator[LlamaCppBackend]:
    model = await started(gguf_path, parallel=4, prefix_reuse=True, prefill_chunk=CHUNK)
    yield model
    await model.close()


@pytest.fixture(scope="module")
def no_end(backend: LlamaCppBackend) -> dict[int, float]:
    """A logit bias forbidding the end-of-generation tokens: only ``max_tokens`` ends."""
    vocab = llama_cpp.llama_model_get_vocab(backend._loaded().model)
    return {t: -100.0 for t in range(backend._n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}


def request(
    text: str = "Write a short story about a lighthouse keeper.",
    *,
    user: str = "",
    request_id: str = "",
    **sampling: Any,
) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text),),
        sampling=SamplingParams(**sampling),
        user=user,
        request_id=request_id,
    )


async def tokens_and_text(stream: AsyncIterator[Delta]) -> tuple[int, str, str | None]:
    tokens, text, finish = 0, "", None
    async for delta in stream:
        tokens += delta.tokens
        text += delta.text
        finish = delta.finish_reason or finish
    return tokens, text, finish


async def run(backend: LlamaCppBackend, req: GenerationRequest) -> tuple[int, str, str | None]:
    return await tokens_and_text(backend.generate(req))


async def until(condition: Callable[[], bool], attempts: int = 3000) -> None:
    """Waits until ``condition`` holds (checked every 10 ms; a deadline, not a timing)."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# ------------------------------------------------------------------ pure parts


def test_fair_queue_takes_users_round_robin() -> None:
    queue: FairQueue[str] = FairQueue()
    for index in range(3):
        queue.push("x", f"x{index}")
    queue.push("y", "y0")
    queue.push("z", "z0")
    assert [queue.pop() for _ in range(5)] == ["x0", "y0", "z0", "x1", "x2"]
    assert len(queue) == 0


def test_fair_queue_removes_matching_items() -> None:
    queue: FairQueue[str] = FairQueue()
    for item in ("a1", "a2", "b1"):
        queue.push(item[0], item)
    assert queue.remove_if(lambda item: item.endswith("1")) == ["a1", "b1"]
    assert len(queue) == 1
    assert queue.peek() == "a2"


def test_slot_table_prefers_the_longest_shared_prefix_then_the_oldest() -> None:
    table = SlotTable(3)
    table.slots[1].tokens, table.slots[1].canonical = [1, 2, 3], 3
    table.slots[2].tokens, table.slots[2].canonical = [1, 2, 9], 3
    slot, shared = table.take_best([1, 2, 3, 4])
    assert (slot.seq_id, shared) == (1, 3)
    assert table.take_least_useful().seq_id == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_only_tokens_evaluated_in_whole_chunks_are_offered_for_reuse() -> None:
    table = SlotTable(2)
    table.slots[0].tokens, table.slots[0].canonical = [1, 2, 3, 4], 2
    table.slots[1].tokens = [1, 2, 3, 4]  # generated, or a partial chunk: not reusable
    slot, shared = table.take_best([1, 2, 3, 4, 5])
    assert (slot.seq_id, shared) == (0, 2)
    slot.cut(1)
    assert (slot.tokens, slot.canonical) == ([1], 1)


# ------------------------------------------------------------------ the engine


async def test_a_request_joins_while_another_generates(
    backend: LlamaCppBackend, no_end: dict[int, float]
) -> None:
    long = backend.generate(request(max_tokens=60, temperature=0, logit_bias=no_end))
    await anext(long)
    await until(lambda: backend.engine.stats.generated_tokens > 0 and backend.engine.running == 1)
    short = await run(backend, request("Hi", max_tokens=5, temperature=0, logit_bias=no_end))
    rest = await tokens_and_text(long)
    assert short[0] == 5 and short[2] == "length"
    assert rest[0] == 60 and rest[2] == "length"


async def test_same_seed_gives_same_tokens_through_the_engine(backend: LlamaCppBackend) -> None:
    req = request(max_tokens=16, temperature=1.0, seed=1234)
    assert await run(backend, req) == await run(backend, req)


async def test_cancelling_frees_the_slot_at_once(gguf_path: Path, no_end: dict[int, float]) -> None:
    model = await started(gguf_path, parallel=1, max_queue=4)
    try:
        stream = model.generate(request(max_tokens=400, logit_bias=no_end))
        await anext(stream)
        await anext(stream)  # it generates
        waiting = asyncio.create_task(run(model, request("Hi", max_tokens=3, logit_bias=no_end)))
        await until(lambda: model.engine.waiting == 1)
        await stream.aclose()
        assert (await asyncio.wait_for(waiting, 60))[0] == 3
        assert model.engine.stats.generated_tokens < 400
    finally:
        await model.close()


async def test_a_finished_slot_is_reused_for_a_longer_prompt(
    backend: LlamaCppBackend, no_end: dict[int, float]
) -> None:
    """A follow-up turn evaluates only what its prompt adds to the cached one."""
    first = (Message("user", "Tell me a story about a cat."),)
    reply = await run(backend, request(first[0].content, max_tokens=8, temperature=0))
    second = (*first, Message("assistant", reply[1]), Message("user", "And then?"))
    stats = backend.engine.stats
    reused, evaluated = stats.prompt_tokens_reused, stats.prompt_tokens_evaluated
    prompt = backend._tokenize_prompt(second)
    await run(backend, GenerationRequest(second, SamplingParams(max_tokens=2, temperature=0)))
    cached = len(backend._tokenize_prompt(first))
    kept = stats.prompt_tokens_reused - reused
    assert kept == cached - cached % CHUNK  # the first prompt's whole chunks
    assert stats.prompt_tokens_evaluated - evaluated == len(prompt) - kept


def conversation(turn: int) -> tuple[Message, ...]:
    """A chat of ``turn`` user messages, each answered by a fixed assistant text."""
    messages: list[Message] = []
    for index in range(turn):
        messages.append(Message("user", f"Question {index}: name a color and a number."))
        if index < turn - 1:
            messages.append(Message("assistant", f"Blue and {index * 7}, then more words."))
    return tuple(messages)


async def replies(model: LlamaCppBackend, turns: int) -> list[tuple[int, str, Any]]:
    """Each turn's tokens, text and logprobs: seeded draws at temperature 1."""
    results = []
    for turn in range(1, turns + 1):
        sampling = SamplingParams(max_tokens=6, temperature=1.0, seed=turn, logprobs=True)
        text, logprobs = "", []
        async for delta in model.generate(GenerationRequest(conversation(turn), sampling)):
            text += delta.text
            logprobs += [(item.token, item.logprob) for item in delta.logprobs]
        results.append((turn, text, logprobs))
    return results


@pytest.mark.parametrize("repacking", [False, True], ids=["plain", "repacked"])
async def test_prefix_reuse_is_exact(gguf_path: Path, repacking: bool) -> None:
    """A conversation whose turns reuse the cached prefix gets logits bit-identical to
    evaluating every prompt afresh: the same tokens and the same logprobs, to the bit,
    under seeded sampling (and with or without llama.cpp's weight repacking, whose
    kernels depend most on the batch's shape)."""
    options = {"parallel": 2, "prefill_chunk": CHUNK, "extra_buffer_types": repacking}
    reusing = await started(gguf_path, prefix_reuse=True, **options)
    fresh = await started(gguf_path, prefix_reuse=False, **options)
    try:
        with_reuse = await replies(reusing, 4)
        assert reusing.engine.stats.prompt_tokens_reused > 0
        assert fresh.engine.stats.prompt_tokens_reused == 0
        assert await replies(fresh, 4) == with_reuse
    finally:
        await reusing.close()
        await fresh.close()


async def test_a_request_alone_writes_the_same_whatever_ran_before(
    backend: LlamaCppBackend,
) -> None:
    req = request("Describe the sea.", max_tokens=12, temperature=1.0, seed=99, logprobs=True)
    first = await run(backend, req)
    await run(backend, request("Something else entirely, and longer.", max_tokens=9, seed=3))
    assert await run(backend, req) == first  # reusing its cached prompt this time


async def test_n_choices_share_one_prompt_evaluation(gguf_path: Path) -> None:
    model = await started(gguf_path, parallel=4, prefix_reuse=False)
    try:
        req = request(max_tokens=6, temperature=1.0, seed=7)
        prompt = len(model._tokenize_prompt(req.messages))

        streams = await model.generate_choices(req, 3)
        first = [await tokens_and_text(stream) for stream in streams]
        assert model.engine.stats.prompt_tokens_evaluated == prompt  # once for all three
        assert [result[0] for result in first] == [6, 6, 6]
    finally:
        await model.close()


async def test_more_choices_than_slots_run_in_groups(gguf_path: Path) -> None:
    model = await started(gguf_path, parallel=2, prefix_reuse=False)
    try:
        streams = await model.generate_choices(request(max_tokens=3, seed=1), 5)
        results = [await tokens_and_text(stream) for stream in streams]
        assert len(results) == 5
        assert all(result[2] is not None for result in results)
    finally:
        await model.close()


async def test_admission_is_fair_across_users(gguf_path: Path, no_end: dict[int, float]) -> None:
    model = await started(gguf_path, parallel=1, max_queue=20)
    try:
        blocker = model.generate(request(max_tokens=400, logit_bias=no_end, request_id="block"))
        await anext(blocker)
        await until(lambda: list(model.engine.stats.admitted) == ["block"])
        burst = [
            asyncio.create_task(run(model, request(max_tokens=1, user="x", request_id=f"x{i}")))
            for i in range(10)
        ]
        await until(lambda: model.engine.waiting == 10)
        single = asyncio.create_task(run(model, request(max_tokens=1, user="y", request_id="y")))
        await until(lambda: model.engine.waiting == 11)
        await blocker.aclose()
        await asyncio.wait_for(asyncio.gather(*burst, single), 120)
        order = list(model.engine.stats.admitted)
        # one of x's ten (whichever queued first) goes before y; y before x's others
        assert order[0] == "block" and order[2] == "y"
        assert sorted(order[1:2] + order[3:]) == sorted(f"x{i}" for i in range(10))
    finally:
        await model.close()


async def test_queue_is_bounded_beyond_the_free_slots(
    gguf_path: Path, no_end: dict[int, float]
) -> None:
    model = await started(gguf_path, parallel=2, max_queue=1, model_name="bounded")
    try:
        holding = [model.generate(request(max_tokens=400, logit_bias=no_end)) for _ in range(3)]
        for stream in holding:
            await anext(stream)  # two generate, one waits
        await until(lambda: model.engine.running == 2 and model.engine.waiting == 1)
        with pytest.raises(Overloaded, match="bounded") as refused:
            await anext(model.generate(request(max_tokens=1)))
        assert refused.value.headers["Retry-After"]
        for stream in holding:
            await stream.aclose()
    finally:
        await model.close()


async def test_default_max_tokens_bounds_requests_without_max_tokens(
    gguf_path: Path, no_end: dict[int, float]
) -> None:
    model = await started(gguf_path, parallel=1, default_max_tokens=7)
    try:
        assert (await run(model, request(logit_bias=no_end)))[:3:2] == (7, "length")
        assert (await run(model, request(max_tokens=9, logit_bias=no_end)))[0] == 9
    finally:
        await model.close()


async def test_closing_the_backend_ends_running_and_waiting_requests(
    gguf_path: Path, no_end: dict[int, float]
) -> None:
    model = await started(gguf_path, parallel=1)
    running = model.generate(request(max_tokens=400, logit_bias=no_end))
    await anext(running)
    await until(lambda: model.engine.running == 1)
    waiting = asyncio.create_task(run(model, request(max_tokens=400, logit_bias=no_end)))
    await until(lambda: model.engine.waiting == 1)
    await model.close()
    with pytest.raises(Exception, match="unloaded"):
        await asyncio.wait_for(tokens_and_text(running), 30)
    with pytest.raises(Exception, match="unloaded"):
        await asyncio.wait_for(waiting, 30)


async def test_load_reports_waiting_and_running_for_the_metrics(
    gguf_path: Path, no_end: dict[int, float]
) -> None:
    model = await started(gguf_path, parallel=1, max_queue=4)
    try:
        assert model.load() == (0, 0)
        stream = model.generate(request(max_tokens=400, logit_bias=no_end))
        await anext(stream)
        await anext(stream)  # it generates
        waiting = asyncio.create_task(run(model, request("Hi", max_tokens=2)))
        await until(lambda: model.engine.waiting == 1)
        assert model.load() == (1, 1)
        await stream.aclose()
        await asyncio.wait_for(waiting, 60)
    finally:
        await model.close()
