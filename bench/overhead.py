"""Part (b): the request path's own cost, with a model that costs nothing.

Portway serves a scripted model (canned pieces, no delay), so what is measured is
HTTP, auth, validation, routing, chunk building, usage recording and logging.
The load generator is ``httpx.AsyncClient`` with HTTP keep-alive: one client and
connection per concurrent worker, opened and warmed up before measuring; each
worker sends its next request when the last one is answered. Unary latency is to
the full body; streamed latency to the last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
from common import CpuWatch, percentile, process_cpu_seconds

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
default_embedding_model = false

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
    pid: int

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
    server_cpu: float
    """CPU seconds the server process used meanwhile."""
    foreign_cores: float
    """Load from processes that are neither the servers nor this one (CPUs)."""

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def server_cpu_ms(self) -> float:
        """Server CPU per request (milliseconds)."""
        return self.server_cpu / max(1, self.requests + self.errors) * 1000

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


def _client() -> httpx.AsyncClient:
    """One keep-alive connection: each worker has its own client, so no worker waits
    on a pool shared with the others (httpx's pool slows down as it grows)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(limits=limits, timeout=60)


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


async def _work(
    clients: Sequence[httpx.AsyncClient],
    front: Front,
    *,
    stream: bool,
    requests: int,
    seconds: float,
) -> tuple[_Tally, float]:
    """Each client sends requests back to back until the limits are hit."""
    send = _streamed if stream else _unary
    body = front.body(stream=stream)
    issued = itertools.count()
    tally = _Tally()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while next(issued) < requests and time.perf_counter() < deadline:
            sent = time.perf_counter()
            if await send(client, front, body):
                tally.latencies.append(time.perf_counter() - sent)
            else:
                tally.errors += 1

    await asyncio.gather(*(worker(client) for client in clients))
    return tally, time.perf_counter() - started


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


async def measure(
    front: Front, *, concurrency: int, stream: bool, limits: Limits, pids: Sequence[int] = ()
) -> LoadResult:
    """``concurrency`` workers, each on its own keep-alive connection: a warm-up, then
    the measured load. ``pids``: the benchmark's other processes (not foreign load)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(_client()) for _ in range(concurrency)]
        warmup = max(limits.warmup, 4 * concurrency)
        await _work(clients, front, stream=stream, requests=warmup, seconds=limits.seconds)
        watch = CpuWatch([os.getpid(), front.pid, *pids]).start()
        server_cpu = process_cpu_seconds(front.pid)
        tally, elapsed = await _work(
            clients, front, stream=stream, requests=limits.requests, seconds=limits.seconds
        )
        server_cpu = process_cpu_seconds(front.pid) - server_cpu
        foreign = watch.foreign_cores()
    return LoadResult(
        front=front.name,
        mode="stream" if stream else "unary",
        concurrency=concurrency,
        latencies=tally.latencies,
        errors=tally.errors,
        seconds=elapsed,
        server_cpu=server_cpu,
        foreign_cores=foreign,
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
