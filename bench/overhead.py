"""Part (b): the request path's own cost, with a model that costs nothing.

Portway serves a scripted model (canned pieces, no delay), so what is measured is
HTTP, auth, validation, routing, chunk building, usage recording and logging.
The load generator is ``httpx.AsyncClient`` with HTTP keep-alive (one connection
per concurrent worker); each worker sends its next request when the last one is
answered. Unary latency is to the full body; streamed latency to the last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import httpx
from common import percentile

SCRIPT = [
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    " while",
    " the",
    " cat",
    " sleeps",
    " in",
    " the",
    " sun.",
]

SCRIPTED_CATALOG = """\
default_model = false

[[models]]
user = "bench"
app = "overhead"
model = "scripted"
backend = "scripted"
aliases = ["scripted"]
script = {script}
delay = 0.0
"""


def scripted_catalog() -> str:
    pieces = ", ".join(f'"{piece}"' for piece in SCRIPT)
    return SCRIPTED_CATALOG.format(script=f"[{pieces}]")


@dataclass(frozen=True)
class Front:
    """An OpenAI-compatible server to load."""

    name: str
    base_url: str
    token: str
    model: str

    @property
    def url(self) -> str:
        return self.base_url + "/v1/chat/completions"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def body(self, *, stream: bool) -> dict[str, object]:
        messages = [{"role": "user", "content": "Say something about foxes."}]
        return {"model": self.model, "messages": messages, "stream": stream}


@dataclass(frozen=True)
class LoadResult:
    front: str
    mode: str
    concurrency: int
    latencies: list[float]
    errors: int
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 0.50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1000


@dataclass(frozen=True)
class Limits:
    """Each measurement stops after ``requests`` requests or ``seconds``, whichever first."""

    requests: int
    seconds: float
    warmup: int


async def _unary(client: httpx.AsyncClient, front: Front, body: dict[str, object]) -> bool:
    response = await client.post(front.url, json=body, headers=front.headers)
    return response.status_code == 200


async def _streamed(client: httpx.AsyncClient, front: Front, body: dict[str, object]) -> bool:
    tail = b""
    async with client.stream("POST", front.url, json=body, headers=front.headers) as response:
        async for data in response.aiter_raw():
            tail = (tail + data)[-32:]
    return response.status_code == 200 and tail.endswith(b"data: [DONE]\n\n")


async def load(
    front: Front, *, concurrency: int, stream: bool, requests: int, seconds: float
) -> LoadResult:
    """``concurrency`` workers send requests back to back until the limits are hit."""
    send = _streamed if stream else _unary
    body = front.body(stream=stream)
    issued = itertools.count()
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors
            while next(issued) < requests and time.perf_counter() < deadline:
                sent = time.perf_counter()
                if await send(client, front, body):
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    mode = "stream" if stream else "unary"
    return LoadResult(front.name, mode, concurrency, latencies, errors, elapsed)


async def check_reply(front: Front) -> None:
    """One unary request: the reply must be the script."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            front.url, json=front.body(stream=False), headers=front.headers
        )
    response.raise_for_status()
    content = response.json()["choices"][0]["message"]["content"]
    if content != "".join(SCRIPT):
        raise RuntimeError(f"{front.name} replied {content!r}, not the script")


async def measure(front: Front, *, concurrency: int, stream: bool, limits: Limits) -> LoadResult:
    """A warm-up at the same concurrency, then the measured load."""
    await load(
        front,
        concurrency=concurrency,
        stream=stream,
        requests=limits.warmup,
        seconds=limits.seconds,
    )
    return await load(
        front,
        concurrency=concurrency,
        stream=stream,
        requests=limits.requests,
        seconds=limits.seconds,
    )


@contextlib.contextmanager
def pinned(cpus: Collection[int] | None) -> Iterator[None]:
    """Runs this process (the load generator) on ``cpus`` for the duration."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
