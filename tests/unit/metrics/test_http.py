"""The metrics' own small server: its address and its answers."""

from __future__ import annotations

import pytest

from portway.metrics.http import answer, parse_address


def render() -> bytes:
    return b"portway_x 1\n"


@pytest.mark.parametrize(
    ("text", "found"),
    [("127.0.0.1:9100", ("127.0.0.1", 9100)), ("[::1]:80", ("::1", 80)), ("h:1", ("h", 1))],
)
def test_addresses_are_read(text: str, found: tuple[str, int]) -> None:
    assert parse_address(text) == found


@pytest.mark.parametrize("text", ["9100", ":9100", "host:", "host:0", "host:70000", "h:²"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port"):
        parse_address(text)


def test_get_metrics_renders() -> None:
    response = answer(b"GET /metrics?x=1 HTTP/1.1", render)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nportway_x 1\n")
    assert b"content-length: 12\r\n" in response


def test_head_has_no_body() -> None:
    assert answer(b"HEAD /metrics HTTP/1.1", render).endswith(b"connection: close\r\n\r\n")


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET / HTTP/1.1", b"404"),
        (b"POST /metrics HTTP/1.1", b"405"),
        (b"nonsense", b"400"),
        (b"GET /metrics SPDY/3", b"400"),
    ],
)
def test_anything_else_is_refused(line: bytes, status: bytes) -> None:
    assert answer(line, render).startswith(b"HTTP/1.1 " + status)
