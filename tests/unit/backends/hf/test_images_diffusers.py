"""The diffusers backend on a tiny random-weight Stable Diffusion pipeline."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from portway.backends.base import ImageCapabilities, ImageRequest
from portway.backends.hf.images import DiffusersBackend
from portway.errors import Overloaded
from tests.tiny_diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


async def _started(path: Path, **options: int) -> DiffusersBackend:
    backend = DiffusersBackend(path, capabilities=ImageCapabilities(), guidance=2.0, **options)
    await backend.start()
    return backend


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def backend(pipeline_dir: Path) -> AsyncIterator[DiffusersBackend]:
    started = await _started(pipeline_dir, steps=2)
    yield started
    await started.close()


async def test_generates_pngs_of_the_asked_size(backend: DiffusersBackend) -> None:
    from PIL import Image

    images = await backend.generate(ImageRequest("a red port", n=2, width=64, height=48))
    assert len(images) == 2
    for image in images:
        assert image.png.startswith(b"\x89PNG\r\n\x1a\n")
        assert Image.open(io.BytesIO(image.png)).size == (64, 48)


async def test_counts_prompt_tokens_with_the_pipeline_tokenizer(backend: DiffusersBackend) -> None:
    assert backend.max_prompt_tokens == 77
    # The tiny vocabulary has no merges: one token per character, plus start and end.
    assert backend.count_tokens("ab") == 4


async def test_cancelling_stops_generation_between_steps(pipeline_dir: Path) -> None:
    slow = await _started(pipeline_dir, steps=500)
    try:
        task = asyncio.ensure_future(slow.generate(ImageRequest("a port", 1, 64, 64)))
        while slow.steps_done < 2:  # noqa: ASYNC110 - counted in the model's thread
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        slow.steps = 1
        # The backend's one thread is free again only once the cancelled run stopped.
        await slow.generate(ImageRequest("a port", 1, 8, 8))
        assert slow.steps_done < 500
    finally:
        await slow.close()


async def test_a_full_queue_is_overloaded(pipeline_dir: Path) -> None:
    busy = await _started(pipeline_dir, steps=50, max_queue=0)
    try:
        first = asyncio.ensure_future(busy.generate(ImageRequest("a port", 1, 64, 64)))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await busy.generate(ImageRequest("a port", 1, 64, 64))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await busy.close()
