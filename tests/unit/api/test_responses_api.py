"""How a bad Responses request body is named in the error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from portway.api.deps import invalid_request
from portway.protocol.responses import CreateResponse


def _error(body: Any) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as caught:
        CreateResponse.model_validate_json(body if isinstance(body, str) else json.dumps(body))
    error = invalid_request(caught.value)
    return error.param, error.message


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ("{not json", None, "parse the JSON"),
        ([1, 2], None, "JSON object"),
        ({"model": "m", "stream_options": {}}, None, "'stream_options' is only allowed"),
        ({"model": "m", "colour": 1}, "colour", "Unrecognized request argument"),
        ({"model": "m", "input": [{"content": "x"}]}, "input[0].role", "Field required"),
        ({"model": "m", "input": [{"role": "user", "content": [5]}]}, "input[0].content[0]", ""),
        ({"model": "m", "input": [{"role": "user", "content": "x", "x": 1}]}, "input[0].x", ""),
        ({"model": "m", "tools": [{"type": "function"}]}, "tools[0].name", "Field required"),
        ({"model": "m", "text": {"format": {"type": "yaml"}}}, "text.format.type", ""),
        ({"model": "m", "reasoning": {"effort": "huge"}}, "reasoning.effort", ""),
        ({"model": "m", "tool_choice": "sometimes"}, "tool_choice", ""),
    ],
)
def test_bad_bodies_are_named(body: Any, param: str | None, words: str) -> None:
    found, message = _error(body)
    assert found == param
    assert words in message
