"""Embedding and image models written with the SDK."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from portway.backends.base import EmbeddingBackend, ImageBackend, ImageRequest
from portway.errors import ModelFailed, UnsupportedParameter
from portway.protocol.embeddings import EmbeddingRequest
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.sdk import load_model_dir
from portway.serving.embeddings import EmbeddingService
from tests.unit.doubles import Ledger, context
from tests.unit.sdk.sdk_helpers import write_folder

EMBED = """
from portway import ModelClass

class Lengths(ModelClass):
    def count_tokens(self, text):
        return len(text.split())

    def embed(self, texts):
        if "fail" in texts:
            raise RuntimeError("cannot embed that")
        if "short" in texts:
            return [[1.0] for _ in texts]
        return [[float(len(text)), 1.0, 0.0] for text in texts]
"""

IMAGE = """
import struct, zlib
from portway import ModelClass

def png(width, height):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\\x00" + b"\\x80\\x80\\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

class Grey(ModelClass):
    def generate_image(self, prompt, *, n, width, height):
        if prompt == "jpeg":
            return [b"\\xff\\xd8\\xff" for _ in range(n)]
        return [png(width, height) for _ in range(n)]
"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return width, height


async def test_embedding_model(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "e", EMBED, 'kind = "embedding"\ndimensions = 3')
    backend = load_model_dir(folder).backend
    assert isinstance(backend, EmbeddingBackend)
    await backend.start()
    assert backend.dimensions == 3
    assert backend.max_input_tokens == 4096
    assert await backend.count_tokens(["a b", "c"]) == [2, 1]
    assert await backend.embed(["ab", "abc"]) == [[2.0, 1.0, 0.0], [3.0, 1.0, 0.0]]
    with pytest.raises(ModelFailed, match="RuntimeError: cannot embed that"):
        await backend.embed(["fail"])
    with pytest.raises(ModelFailed, match="a vector of 1 values, not 3"):
        await backend.embed(["short"])
    with pytest.raises(UnsupportedParameter, match="'input' cannot hold token ids"):
        await backend.decode([[1, 2]])
    await backend.close()


async def test_image_model(tmp_path: Path) -> None:
    backend = load_model_dir(write_folder(tmp_path / "i", IMAGE, 'kind = "image"')).backend
    assert isinstance(backend, ImageBackend)
    await backend.start()
    images = await backend.generate(ImageRequest("a grey square", n=2, width=64, height=32))
    assert [_png_size(image.png) for image in images] == [(64, 32), (64, 32)]
    with pytest.raises(ModelFailed, match="not PNG bytes"):
        await backend.generate(ImageRequest("jpeg", n=1, width=64, height=64))


async def test_embedding_model_through_the_service(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "e", EMBED, 'kind = "embedding"\ndimensions = 3')
    loaded = load_model_dir(folder)
    entry = ModelEntry(ModelRef("alice", "demo", "m"), loaded.version, loaded.backend)
    service = EmbeddingService(Registry([entry]), Ledger())
    model = "alice/demo/models/m"
    body = await service.create(
        context("embeddings"),
        EmbeddingRequest.model_validate({"model": model, "input": ["a b", "cde"]}),
    )
    assert [item["embedding"] for item in body["data"]] == [[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]]
    assert body["usage"]["prompt_tokens"] == 3
    with pytest.raises(UnsupportedParameter) as refused:
        await service.create(
            context("embeddings"),
            EmbeddingRequest.model_validate({"model": model, "input": [1, 2]}),
        )
    assert refused.value.param == "input"
