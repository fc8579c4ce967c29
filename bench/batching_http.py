"""The HTTP side of the batching bench: streams sent with the ``openai`` client to a
server (Portway or llama-cpp-python's), concurrently, as a multi-turn chat, and
as one long request with short ones behind it.

Every completion is forced to its full length: ``max_tokens`` plus a -100
``logit_bias`` on each end-of-generation token. Tokens are counted from the
usage chunk when the server sends one, else taken as ``max_tokens`` when the
stream finished by length, else counted as content chunks (and flagged).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common import CpuWatch, percentile, process_cpu_seconds


@dataclass
class Target:
    """A server to load: where it is, how to name the model, its process id."""

    name: str
    base_url: str
    api_key: str
    model: str
    pid: int
    extra_body: dict[str, Any] = field(default_factory=dict)
    usage: bool = True
    """Whether to ask for the usage chunk (``stream_options.include_usage``)."""


@dataclass(frozen=True)
class Sampling:
    end_tokens: tuple[int, ...]
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 1234


@dataclass(frozen=True)
class Completion:
    """One streamed completion as the client saw it (times from the run's start)."""

    sent: float
    first: float
    """When the first non-empty text arrived (NaN if none)."""
    last: float
    """When the last non-empty text arrived."""
    done: float
    tokens: int
    prompt_tokens: int | None
    finish_reason: str | None
    counted: str
    """How ``tokens`` was found: "usage", "length" or "chunks"."""
    text: str

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def seconds(self) -> float:
        return self.done - self.sent


def client_for(target: Target) -> Any:
    """An ``AsyncOpenAI`` client (its connection pool holds far more than 16 streams)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        base_url=target.base_url + "/v1", api_key=target.api_key, max_retries=0, timeout=1800
    )


async def stream(
    client: Any,
    target: Target,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    sampling: Sampling,
    seed_offset: int,
    origin: float,
    on_first: Callable[[], None] | None = None,
) -> Completion:
    """One streamed chat completion of exactly ``max_tokens`` tokens (if honoured);
    ``on_first`` is called when its first text arrives."""
    request: dict[str, Any] = {
        "model": target.model,
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "seed": sampling.seed + seed_offset,
        "logit_bias": {str(token): -100 for token in sampling.end_tokens},
    }
    if target.usage:
        request["stream_options"] = {"include_usage": True}
    if target.extra_body:
        request["extra_body"] = target.extra_body
    pieces: list[str] = []
    first, last, finish, usage = math.nan, math.nan, None, None
    sent = time.perf_counter() - origin
    chunks = await client.chat.completions.create(**request)
    async with chunks:
        async for chunk in chunks:
            for choice in chunk.choices:
                if choice.delta.content:
                    if not pieces:
                        first = time.perf_counter() - origin
                        if on_first is not None:
                            on_first()
                    pieces.append(choice.delta.content)
                    last = time.perf_counter() - origin
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
    done = time.perf_counter() - origin
    if usage is not None:
        tokens, counted, prompt = usage.completion_tokens, "usage", usage.prompt_tokens
    elif finish == "length":
        tokens, counted, prompt = max_tokens, "length", None
    else:
        tokens, counted, prompt = len(pieces), "chunks", None
    return Completion(sent, first, last, done, tokens, prompt, finish, counted, "".join(pieces))


@dataclass(frozen=True)
class Observed:
    """What a measurement cost: the server's CPU and other processes' load."""

    server_cpu: float
    foreign_cores: float


class Observer:
    """Records the server's CPU seconds and the foreign load over a measurement."""

    def __init__(self, target: Target, own: Sequence[int]) -> None:
        self._pid = target.pid
        self._watch = CpuWatch([*own, target.pid]).start()
        self._cpu = process_cpu_seconds(target.pid)

    def finish(self) -> Observed:
        return Observed(
            server_cpu=process_cpu_seconds(self._pid) - self._cpu,
            foreign_cores=self._watch.foreign_cores(),
        )


# --------------------------------------------------------------------------- concurrent


@dataclass(frozen=True)
class ConcurrentRun:
    target: str
    streams: int
    completions: list[Completion]
    observed: Observed

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.completions)

    @property
    def seconds(self) -> float:
        """From the first request sent to the last stream's end."""
        return max(c.done for c in self.completions) - min(c.sent for c in self.completions)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttfts(self) -> list[float]:
        return [c.ttft for c in self.completions]

    @property
    def cpu_ms_per_token(self) -> float:
        return 1000 * self.observed.server_cpu / self.tokens if self.tokens else math.nan


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def concurrent(
    target: Target,
    texts: Sequence[str],
    *,
    max_tokens: int,
    sampling: Sampling,
    own: Sequence[int],
) -> ConcurrentRun:
    """``len(texts)`` streams sent at once, one per text."""
    client = client_for(target)
    async with client:
        observer = Observer(target, own)
        origin = time.perf_counter()
        completions = await asyncio.gather(
            *(
                stream(
                    client,
                    target,
                    user(text),
                    max_tokens=max_tokens,
                    sampling=sampling,
                    seed_offset=index,
                    origin=origin,
                )
                for index, text in enumerate(texts)
            )
        )
        return ConcurrentRun(target.name, len(texts), list(completions), observer.finish())


# --------------------------------------------------------------------------- multi-turn


FOLLOW_UPS = [
    "Go on, and say more about the people there.",
    "What happens next?",
    "Describe the weather now.",
    "And the boats?",
    "Tell me about the sounds.",
    "What does the harbour master do?",
    "Who arrives on the ferry?",
    "How does the day end?",
    "Sum it up in one line.",
]


@dataclass(frozen=True)
class Conversation:
    target: str
    turns: list[Completion]
    observed: Observed

    @property
    def growth(self) -> float:
        """Time to first token of the last turn over the first turn's."""
        return self.turns[-1].ttft / self.turns[0].ttft


async def conversation(
    target: Target,
    opening: str,
    *,
    turns: int,
    max_tokens: int,
    sampling: Sampling,
    own: Sequence[int],
) -> Conversation:
    """A ``turns``-turn chat: each turn sends the whole history (every earlier
    question and answer) plus a new question."""
    messages = user(opening)
    completions = []
    client = client_for(target)
    async with client:
        observer = Observer(target, own)
        for turn in range(turns):
            origin = time.perf_counter()
            reply = await stream(
                client,
                target,
                messages,
                max_tokens=max_tokens,
                sampling=sampling,
                seed_offset=turn,
                origin=origin,
            )
            completions.append(reply)
            follow_up = FOLLOW_UPS[turn % len(FOLLOW_UPS)]
            messages = [
                *messages,
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": follow_up},
            ]
        return Conversation(target.name, completions, observer.finish())


# --------------------------------------------------------------------------- interference


@dataclass(frozen=True)
class Interference:
    target: str
    alone: list[Completion]
    """The short requests sent together without the long one."""
    long: Completion
    behind: list[Completion]
    """The same short requests sent just after the long one started."""
    observed: Observed

    @property
    def ratio(self) -> float:
        """Median completion time of the short ones behind the long one, over alone."""
        return median_seconds(self.behind) / median_seconds(self.alone)


def median_seconds(completions: Sequence[Completion]) -> float:
    return percentile([c.seconds for c in completions], 0.5)


async def interference(
    target: Target,
    long_text: str,
    alone_texts: Sequence[str],
    behind_texts: Sequence[str],
    *,
    long_tokens: int,
    short_tokens: int,
    sampling: Sampling,
    own: Sequence[int],
) -> Interference:
    """The short requests alone (sent together), then one long request and, once
    its first token has arrived, as many short requests again (other prompts of the
    same length, so that none finds its prompt cached)."""
    client = client_for(target)
    async with client:
        observer = Observer(target, own)

        def short(texts: Sequence[str], origin: float) -> list[Any]:
            return [
                stream(
                    client,
                    target,
                    user(text),
                    max_tokens=short_tokens,
                    sampling=sampling,
                    seed_offset=index,
                    origin=origin,
                )
                for index, text in enumerate(texts)
            ]

        alone = await asyncio.gather(*short(alone_texts, time.perf_counter()))
        long_started = asyncio.Event()
        origin = time.perf_counter()
        long_task = asyncio.create_task(
            stream(
                client,
                target,
                user(long_text),
                max_tokens=long_tokens,
                sampling=sampling,
                seed_offset=100,
                origin=origin,
                on_first=long_started.set,
            )
        )
        await long_started.wait()
        behind = await asyncio.gather(*short(behind_texts, time.perf_counter()))
        long = await long_task
        return Interference(target.name, list(alone), long, list(behind), observer.finish())
