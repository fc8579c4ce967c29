"""The Responses flavour of server-sent events: named events, no ``[DONE]``."""

from __future__ import annotations

import json

from portway.errors import BackendError
from portway.sse import DONE, EventStreamResponse, NamedEventStreamResponse


def _stream(cls: type[EventStreamResponse]) -> EventStreamResponse:
    async def events():  # type: ignore[no-untyped-def]
        yield {"type": "response.created"}

    return cls(events())


def test_named_frames_and_tail() -> None:
    response = _stream(NamedEventStreamResponse)
    frame = response.frame({"type": "response.created", "sequence_number": 0})
    assert (
        frame
        == b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    )
    assert response.tail(None, 3) == b""
    tail = response.tail(BackendError("the model fell over"), 3).decode()
    event, data = tail.removesuffix("\n\n").split("\n")
    assert event == "event: error"
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "error",
        "code": None,
        "message": "the model fell over",
        "param": None,
        "sequence_number": 3,
    }
    hidden = json.loads(response.tail(RuntimeError("secret"), 0).decode().split("data: ")[1])
    assert hidden["message"] != "secret"


def test_chat_frames_are_unchanged() -> None:
    response = _stream(EventStreamResponse)
    assert response.frame({"a": 1}) == b'data: {"a":1}\n\n'
    assert response.tail(None, 5) == DONE
    assert (
        json.loads(response.tail(BackendError("x"), 5)[len(b"data: ") :])["error"]["message"] == "x"
    )
