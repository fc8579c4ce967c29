"""Garbage-collector settings for the server process.

A request allocates thousands of short-lived objects (ASGI messages, dicts of
parsed JSON, coroutines, futures). With CPython's default thresholds (700, 10, 10)
the young generation is collected every few hundred allocations, and every tenth
of those also scans the middle generation, whose size grows with the requests in
flight: at 64 concurrent relayed requests that was ≈20% of the gateway's CPU and
its p99 doubled (BENCHMARKS.md). After start-up, what the server built to run
(modules, the catalogue, models' Python objects) is moved out of the collector's
sight with :func:`gc.freeze`, and the thresholds are raised.
"""

from __future__ import annotations

import gc

THRESHOLDS = (7000, 20, 20)


def after_startup() -> None:
    """Freeze what start-up made and raise the collection thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
