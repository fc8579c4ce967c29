"""``portway serve`` with a sampler thread that records the server's own memory counters.

Run as ``python bench/soak_probe.py serve ARGS...`` (the same arguments as
``portway serve``): the server runs in this process exactly as under ``python -m
portway``, and every ``PORTWAY_SOAK_INTERVAL`` seconds (default 10) a daemon
thread appends one JSON line to the file named by ``PORTWAY_SOAK_PROBE``:

- ``blocks``: ``sys.getallocatedblocks()``, the Python objects' memory blocks;
- ``malloc_*``: glibc's ``mallinfo2()`` summed over every arena: ``arena`` (bytes
  obtained with brk/mmap for arenas), ``inuse`` (allocated), ``free`` (held free
  inside arenas, what ``malloc_trim`` could give back), ``mmap`` (large blocks
  mapped on their own);
- ``traced``: ``tracemalloc``'s traced bytes, when ``PYTHONTRACEMALLOC`` is set;
- ``trim_ms``: with ``PORTWAY_SOAK_TRIM=1``, each sample first calls glibc's
  ``malloc_trim(0)``, and this is how long it took (an experiment: what periodic
  trimming would give back, and cost).

These separate a growing Python heap from native memory (llama.cpp, torch) and
from memory the allocator keeps but does not use. Only for ``bench/soak.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    function = getattr(libc, "mallinfo2", None)
    if function is None:
        return None
    function.restype = _MallInfo2
    return function


def sample(mallinfo: Any) -> dict[str, float]:
    found: dict[str, float] = {"t": time.time(), "blocks": sys.getallocatedblocks()}
    if mallinfo is not None:
        info = mallinfo()
        found |= {
            "malloc_arena": info.arena,
            "malloc_inuse": info.uordblks,
            "malloc_free": info.fordblks,
            "malloc_mmap": info.hblkhd,
        }
    if tracemalloc.is_tracing():
        found["traced"] = tracemalloc.get_traced_memory()[0]
    return found


def record_forever(path: Path, interval: float, trim: bool) -> None:
    """Samples every ``interval`` seconds; with ``trim``, first calls ``malloc_trim(0)``
    and records how long it took (``trim_ms``)."""
    mallinfo = _mallinfo()
    malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    while True:
        found: dict[str, float] = {}
        if trim:
            started = time.perf_counter()
            malloc_trim(0)
            found["trim_ms"] = (time.perf_counter() - started) * 1000
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(sample(mallinfo) | found) + "\n")
        time.sleep(interval)


def main() -> None:
    path = Path(os.environ["PORTWAY_SOAK_PROBE"])
    interval = float(os.environ.get("PORTWAY_SOAK_INTERVAL", "10"))
    trim = bool(os.environ.get("PORTWAY_SOAK_TRIM"))
    threading.Thread(target=record_forever, args=(path, interval, trim), daemon=True).start()
    from portway.cli import main as portway_main

    sys.argv[0] = "portway"
    portway_main()


if __name__ == "__main__":
    main()
