"""The periodic ``malloc_trim`` that gives memory freed by worker threads back."""

from __future__ import annotations

import asyncio
import ctypes
import threading
from pathlib import Path

import pytest

from portway import malloc_tuning
from portway.app import create_app
from portway.malloc_tuning import MemoryTrimmer, glibc_malloc_trim
from portway.settings import Settings


async def test_the_trimmer_trims_every_interval_until_stopped() -> None:
    calls: list[int] = []
    trimmed = asyncio.Event()

    def trim() -> None:
        calls.append(1)
        if len(calls) == 3:
            trimmed.set()

    trimmer = MemoryTrimmer(interval=0.001, trim=trim)
    trimmer.start()
    await trimmed.wait()
    await trimmer.stop()
    stopped_at = len(calls)
    await asyncio.sleep(0.01)

    assert len(calls) == stopped_at


async def test_a_running_server_trims_and_stops_trimming_at_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    trimmed = asyncio.Event()

    def trim() -> None:
        calls.append(1)
        trimmed.set()

    monkeypatch.setattr(malloc_tuning, "TRIM_SECONDS", 0.001)
    monkeypatch.setattr(malloc_tuning, "glibc_malloc_trim", lambda: trim)
    config = tmp_path / "portway.toml"
    config.write_text("default_model = false\ndefault_embedding_model = false\n")
    app = create_app(Settings(data_dir=tmp_path / "data", config=config))

    async with app.router.lifespan_context(app):
        await asyncio.wait_for(trimmed.wait(), timeout=60)
    stopped_at = len(calls)
    await asyncio.sleep(0.01)

    assert len(calls) == stopped_at


async def test_a_failing_trim_is_logged_and_the_trimmer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    again = asyncio.Event()

    def trim() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no")
        again.set()

    trimmer = MemoryTrimmer(interval=0.001, trim=trim)
    trimmer.start()
    await again.wait()
    await trimmer.stop()

    assert "malloc_trim failed" in caplog.text


async def test_without_malloc_trim_the_trimmer_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("portway.malloc_tuning.glibc_malloc_trim", lambda: None)
    trimmer = MemoryTrimmer(interval=0.001)
    trimmer.start()
    await trimmer.stop()


def test_glibc_malloc_trim_gives_back_what_a_thread_freed() -> None:
    """Memory a worker thread freed stays resident in its arena until trimmed."""
    trim = glibc_malloc_trim()
    if trim is None:
        pytest.skip("no glibc malloc_trim here")

    kept: list[ctypes.Array[ctypes.c_char]] = []

    def churn() -> None:
        blocks = [ctypes.create_string_buffer(60 * 1024) for _ in range(1024)]
        kept.append(blocks.pop())  # the last block stays: the arena cannot shrink
        blocks.clear()

    worker = threading.Thread(target=churn)
    before = _rss_kib()
    worker.start()
    worker.join()
    churned = _rss_kib()
    trim()
    after = _rss_kib()

    assert churned - before > 16 * 1024
    assert after < churned - 16 * 1024


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
