"""An upstream's JSON (events and unary bodies) is standard JSON: ``NaN`` and
``Infinity`` make it a malformed answer (502), not numbers."""

from __future__ import annotations

import pytest

from portway.backends.upstream.sse import MalformedStream, parse_json


@pytest.mark.parametrize(
    "body",
    [
        b'{"usage": {"prompt_tokens": NaN}}',
        b'{"data": [{"embedding": [0.5, Infinity]}]}',
        b'{"choices": [{"logprobs": {"content": [{"logprob": -Infinity}]}}]}',
    ],
)
def test_nan_and_infinity_are_a_malformed_answer(body: bytes) -> None:
    with pytest.raises(MalformedStream) as caught:
        parse_json(body)
    assert caught.value.status == 502


def test_the_names_in_strings_are_text() -> None:
    assert parse_json(b'{"content": "NaN or -Infinity"}') == {"content": "NaN or -Infinity"}
