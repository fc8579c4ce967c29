"""Image serving on a fake model, and the signed media store."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from portway.api.deps import invalid_request
from portway.backends.base import GeneratedImage, ImageBackend, ImageRequest
from portway.backends.scripted import ScriptedBackend
from portway.errors import InvalidRequest, NotFound, Overloaded
from portway.protocol.images import ImageGenerationRequest
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.serving.context import RequestContext
from portway.serving.images import ImageService
from portway.serving.media import MediaStore
from tests.unit.doubles import Ledger, context, registry

MODEL = "acme/art/models/fake"
PNG = b"\x89PNG\r\n\x1a\nfake"


class Fake(ImageBackend):
    """Words are tokens, at most 5; every image is the same few bytes."""

    max_prompt_tokens = 5

    def __init__(self) -> None:
        self.requests: list[ImageRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
        self.requests.append(request)
        return [GeneratedImage(png=PNG) for _ in range(request.n)]


def _service(tmp_path: Path) -> tuple[ImageService, Ledger, Fake]:
    fake = Fake()
    served = registry((MODEL, fake), ("acme/chat/models/bot", ScriptedBackend(["a"])))
    ledger = Ledger()
    media = MediaStore.open(tmp_path)
    return ImageService(served, ledger, media), ledger, fake  # type: ignore[arg-type]


def _ctx() -> RequestContext:
    return context("images.generations")


def _request(**fields: Any) -> ImageGenerationRequest:
    return ImageGenerationRequest.model_validate({"model": MODEL, "prompt": "a port", **fields})


async def test_b64_json_images_and_the_ledger_row(tmp_path: Path) -> None:
    service, ledger, fake = _service(tmp_path)
    body = await service.generate(
        _ctx(), _request(n=2, response_format="b64_json", size="64x128", user="u-1"), "http://h/"
    )
    assert [base64.b64decode(item["b64_json"]) for item in body["data"]] == [PNG, PNG]
    assert all(set(item) == {"b64_json"} for item in body["data"])
    assert body["output_format"] == "png"
    assert body["usage"]["input_tokens"] == 2
    assert (fake.requests[0].width, fake.requests[0].height, fake.requests[0].n) == (64, 128, 2)
    rows = [
        (row.status, row.prompt_tokens, row.completion_tokens, row.end_user) for row in ledger.rows
    ]
    assert rows == [("completed", 2, 2, "u-1")]


async def test_url_results_are_signed_links_to_stored_files(tmp_path: Path) -> None:
    service, _, _ = _service(tmp_path)
    body = await service.generate(_ctx(), _request(), "http://example.test:9/")
    url = urlsplit(body["data"][0]["url"])
    assert (url.scheme, url.netloc) == ("http", "example.test:9")
    query = {key: value[0] for key, value in parse_qs(url.query).items()}
    name = url.path.removeprefix("/media/")
    path, media_type = service.media.locate(name, query["expires"], query["signature"])
    assert path.read_bytes() == PNG
    assert media_type == "image/png"
    with pytest.raises(NotFound):
        service.media.locate(name, str(int(query["expires"]) + 1), query["signature"])


async def test_default_size_and_n(tmp_path: Path) -> None:
    service, _, fake = _service(tmp_path)
    await service.generate(
        _ctx(), _request(size="auto", quality="auto", moderation="low"), "http://h"
    )
    assert (fake.requests[0].width, fake.requests[0].height, fake.requests[0].n) == (512, 512, 1)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"quality": "hd"}, "quality"),
        ({"style": "vivid"}, "style"),
        ({"background": "transparent"}, "background"),
        ({"output_format": "jpeg"}, "output_format"),
        ({"output_compression": 50}, "output_compression"),
        ({"stream": True}, "stream"),
        ({"partial_images": 1}, "partial_images"),
        ({"size": "1020x1024"}, "size"),
        ({"size": "32x64"}, "size"),
        ({"size": "2048x512"}, "size"),
        ({"size": "big"}, "size"),
        ({"prompt": "one two three four five six"}, "prompt"),
        ({"model": "acme/chat/models/bot"}, "model"),
    ],
)
async def test_unsupported_requests_are_400s_naming_the_parameter(
    tmp_path: Path, fields: dict[str, Any], param: str
) -> None:
    service, ledger, fake = _service(tmp_path)
    with pytest.raises(InvalidRequest) as refused:
        await service.generate(_ctx(), _request(**fields), "http://h")
    assert refused.value.status == 400
    assert refused.value.param == param
    assert ledger.rows == []
    assert fake.requests == []


async def test_a_busy_model_refuses_without_a_ledger_row(tmp_path: Path) -> None:
    class Busy(Fake):
        async def generate(self, request: ImageRequest) -> list[GeneratedImage]:
            raise Overloaded(MODEL)

    service, ledger, _ = _service(tmp_path)
    service.registry = Registry([ModelEntry(ModelRef("acme", "art", "fake"), "0" * 32, Busy())])
    with pytest.raises(Overloaded) as refused:
        await service.generate(_ctx(), _request(), "http://h")
    assert refused.value.status == 503
    assert ledger.rows == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 50}, "n"),
        ({"prompt": "x" * 1_000_000}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"response_format": "jpeg"}, "response_format"),
        ({"seed": 1}, "seed"),
    ],
)
def test_bad_fields_are_400s(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ImageGenerationRequest.model_validate({"model": MODEL, "prompt": "a", **fields})
    error = invalid_request(caught.value)
    assert (error.status, error.param) == (400, param)


# ---------------------------------------------------------------- the media store


def _link_parts(link: str) -> tuple[str, str, str]:
    url = urlsplit(link)
    query = parse_qs(url.query)
    return url.path.removeprefix("/media/"), query["expires"][0], query["signature"][0]


def test_the_signing_key_is_made_once_and_kept(tmp_path: Path) -> None:
    first = MediaStore.open(tmp_path)
    link = first.put(PNG, "png", 60)
    again = MediaStore.open(tmp_path)
    assert again.locate(*_link_parts(link))[0].read_bytes() == PNG
    assert (tmp_path / "media.key").stat().st_mode & 0o077 == 0


def test_tampered_links_are_not_found(tmp_path: Path) -> None:
    media = MediaStore.open(tmp_path)
    name, expires, signature = _link_parts(media.put(PNG, "png", 60))
    other = _link_parts(media.put(PNG, "png", 60))[0]
    for args in (
        (other, expires, signature),
        (name, expires, "0" * 64),
        (name, "", signature),
        (name, "²", signature),
        (name, "\u0661" * len(expires), signature),
        ("../media.key", expires, signature),
    ):
        with pytest.raises(NotFound):
            media.locate(*args)


def test_an_expired_link_is_refused_and_its_file_removed(tmp_path: Path) -> None:
    media = MediaStore.open(tmp_path)
    name, expires, signature = _link_parts(media.put(PNG, "png", 1))
    stored = next((tmp_path / "media").iterdir())
    time.sleep(1.1)
    with pytest.raises(NotFound) as refused:
        media.locate(name, expires, signature)
    assert refused.value.code == "link_expired"
    assert not stored.exists()


def test_the_sweep_removes_only_expired_files(tmp_path: Path) -> None:
    media = MediaStore.open(tmp_path)
    media.put(PNG, "png", 10)
    keep = media.put(PNG, "png", 1000)
    assert media.sweep(now=time.time() + 100) == 1
    assert media.locate(*_link_parts(keep))[0].exists()
    assert len(list((tmp_path / "media").iterdir())) == 1
