"""The runner protocol's codec, and its strictness about what runners send."""

from __future__ import annotations

import json

import pytest

from portway.backends.base import (
    CallPiece,
    Delta,
    GenerationRequest,
    Message,
    SamplingParams,
    ToolCall,
    ToolSpec,
)
from portway.runners import wire
from portway.runners.wire import DeltaFrame, ErrorFrame, FrameError, Hello, parse_runner_frame

VERSION = "0123456789abcdef0123456789abcdef"


def test_request_round_trip_leaves_defaults_out() -> None:
    request = GenerationRequest(
        messages=(
            Message("user", "hi"),
            Message("assistant", "", tool_calls=(ToolCall("c1", "f", '{"a":1}'),)),
            Message("tool", "42", tool_call_id="c1"),
        ),
        sampling=SamplingParams(max_tokens=5, stop=("x",), logit_bias={7: -1.0}, seed=3),
        tools=(ToolSpec("f", parameters={"type": "object"}),),
        tool_mode="named",
        tool_name="f",
        response_format={"type": "json_object"},
    )
    frame = json.loads(json.dumps(wire.call_frame("chat", "c1", {"request": request})))
    assert frame["request"]["messages"][0] == {"role": "user", "content": "hi"}
    assert frame["request"]["sampling"] == {
        "max_tokens": 5,
        "stop": ["x"],
        "seed": 3,
        "logit_bias": {"7": -1.0},
    }
    assert wire.request_from_json(frame["request"]) == request


def test_delta_frames_parse_strictly() -> None:
    delta = Delta(text="a", tokens=1, calls=(CallPiece(0, name="f"),), finish_reason="stop")
    text = json.dumps(wire.delta_frame("c1", delta))
    assert json.loads(text)["delta"] == {
        "text": "a",
        "tokens": 1,
        "finish_reason": "stop",
        "calls": [{"index": 0, "name": "f"}],
    }
    frame = parse_runner_frame(text)
    assert isinstance(frame, DeltaFrame)
    assert frame.delta == delta


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ("not json", "Invalid JSON"),
        ("[1]", "object"),
        ('{"type":"nope"}', "does not match"),
        ('{"type":"delta","id":"c1","delta":{"tokens":"1"}}', "tokens"),
        ('{"type":"delta","id":"c1","delta":{"tokens":-1}}', "negative"),
        ('{"type":"delta","id":"c1","delta":{"tokens":10000000000000000000}}', "above"),
        ('{"type":"delta","id":"c1","delta":{"prompt_tokens":4294967297}}', "above"),
        ('{"type":"result","id":"c1","counts":[10000000000000000000]}', "counts"),
        ('{"type":"delta","id":"c1","delta":{"bogus":1}}', "bogus"),
        ('{"type":"delta","id":"c1","delta":{"finish_reason":"why"}}', "finish_reason"),
        ('{"type":"error","id":"c1","status":200,"message":"x"}', "status"),
        ('{"type":"delta","id":"","delta":{}}', "id"),
        ('{"type":"result","id":"c1","vectors":[[0.5, NaN]]}', "vectors.0.1: .* finite"),
        ('{"type":"result","id":"c1","vectors":[[Infinity]]}', "vectors.0.0: .* finite"),
        (
            '{"type":"delta","id":"c1","delta":{"text":"NaN",'
            '"logprobs":[{"token":"a","bytes":[97],"logprob":-Infinity}]}}',
            "logprob: .* finite",
        ),
    ],
)
def test_bad_frames_are_refused_with_a_reason(frame: str, says: str) -> None:
    with pytest.raises(FrameError, match=says):
        parse_runner_frame(frame)


def test_frames_may_write_nan_and_infinity_in_strings() -> None:
    frame = parse_runner_frame('{"type":"delta","id":"c1","delta":{"text":"NaN or Infinity"}}')
    assert isinstance(frame, DeltaFrame)
    assert frame.delta.text == "NaN or Infinity"


def hello(**model: object) -> str:
    body = {"reference": "alice/demo/models/echo", "version": VERSION, **model}
    return json.dumps({"type": "hello", "model": body, "concurrency": 2})


def test_hello() -> None:
    frame = parse_runner_frame(hello(context_length=100, capabilities={"tools": True}))
    assert isinstance(frame, Hello)
    assert frame.model.capabilities.tools
    assert frame.concurrency == 2
    with pytest.raises(FrameError, match="version"):
        parse_runner_frame(hello(version="v1"))
    with pytest.raises(FrameError, match="reference"):
        parse_runner_frame(hello(reference="alice/../models/x"))
    with pytest.raises(FrameError, match="reference"):
        parse_runner_frame(hello(reference="demo/echo"))
    owned_by_token = parse_runner_frame(hello(reference="demo/models/echo"))
    assert isinstance(owned_by_token, Hello)
    with pytest.raises(FrameError, match="kind"):
        parse_runner_frame(hello(kind="audio"))


def test_error_frame() -> None:
    frame = parse_runner_frame('{"type":"error","id":"c1","message":"boom","code":"model_error"}')
    assert isinstance(frame, ErrorFrame)
    assert (frame.status, frame.message, frame.code) == (500, "boom", "model_error")
