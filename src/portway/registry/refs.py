"""Model references: ``[http(s)://HOST[:PORT]/]{user}/{app}/models/{model}[/versions/{id}]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from portway.errors import InvalidRequest

SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, order=True)
class ModelRef:
    user: str
    app: str
    model: str

    def __str__(self) -> str:
        return f"{self.user}/{self.app}/models/{self.model}"


@dataclass(frozen=True)
class ParsedRef:
    ref: ModelRef
    version: str | None


class InvalidModelReference(InvalidRequest):
    code = "invalid_model"

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"The model reference '{text[:200]}' is malformed: {why}.", param="model")


def looks_like_reference(text: str) -> bool:
    """Whether ``text`` is meant as a URL or path reference (not an alias)."""
    return "/" in text


def parse(text: str) -> ParsedRef:
    """Parse a full URL or short reference; raise InvalidModelReference otherwise."""
    path = _path_of(text)
    parts = path.split("/")
    if len(parts) not in (4, 6) or parts[2] != "models":
        raise InvalidModelReference(
            text, "expected '{user}/{app}/models/{model}[/versions/{version_id}]'"
        )
    user, app, _, model = parts[:4]
    for segment in (user, app, model):
        _check_segment(text, segment)
    version = None
    if len(parts) == 6:
        if parts[4] != "versions" or not VERSION_ID.fullmatch(parts[5]):
            raise InvalidModelReference(
                text, "a version is '/versions/' and 32 lower-case hex digits"
            )
        version = parts[5]
    return ParsedRef(ModelRef(user, app, model), version)


def _path_of(text: str) -> str:
    if "%" in text or "\\" in text or any(ord(char) < 0x21 for char in text):
        raise InvalidModelReference(text, "it holds escapes, spaces or control characters")
    if text.startswith(("http://", "https://")):
        url = urlsplit(text)
        if url.query or url.fragment or not url.netloc:
            raise InvalidModelReference(text, "a model URL has a host and no query or fragment")
        return url.path.strip("/")
    if "://" in text:
        raise InvalidModelReference(text, "only http and https URLs name models")
    return text.strip("/") if text.endswith("/") else text


def _check_segment(text: str, segment: str) -> None:
    if not SEGMENT.fullmatch(segment) or ".." in segment:
        raise InvalidModelReference(
            text, f"'{segment[:64]}' is not a valid name (letters, digits, '.', '_', '-')"
        )
