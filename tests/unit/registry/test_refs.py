from __future__ import annotations

import pytest

from portway.registry.refs import InvalidModelReference, ModelRef, parse

REF = ModelRef("google", "gemma", "gemma-3-270m")
VERSION = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("google/gemma/models/gemma-3-270m", None),
        ("http://localhost:8000/google/gemma/models/gemma-3-270m", None),
        ("https://any.host/google/gemma/models/gemma-3-270m/", None),
        (f"google/gemma/models/gemma-3-270m/versions/{VERSION}", VERSION),
        (f"http://h:1/google/gemma/models/gemma-3-270m/versions/{VERSION}", VERSION),
    ],
)
def test_valid_references(text: str, version: str | None) -> None:
    parsed = parse(text)
    assert parsed.ref == REF
    assert parsed.version == version
    assert str(parsed.ref) == "google/gemma/models/gemma-3-270m"


@pytest.mark.parametrize(
    "text",
    [
        "../gemma/models/x",
        "google/../models/x",
        "google/%2e%2e/models/x",
        "google/gemma/models/..",
        "google/gemma/apps/x",
        "google/gemma/models",
        "google/gemma/models/x/versions/ABC",
        f"google/gemma/models/x/versions/{VERSION.upper()}",
        "google/gemma/models/x/extra/bits",
        "ftp://host/google/gemma/models/x",
        "http://host/google/gemma/models/x?v=1",
        "google/ge mma/models/x",
        "google\\gemma/models/x",
        "-google/gemma/models/x",
    ],
)
def test_malformed_references(text: str) -> None:
    with pytest.raises(InvalidModelReference) as caught:
        parse(text)
    assert caught.value.param == "model"
    assert caught.value.status == 400
