"""The Responses API's stream events, after OpenAI's ``ResponseStreamEvent`` schema."""

from __future__ import annotations

from typing import ClassVar

from portway.protocol.base import ResponseModel
from portway.protocol.response_object import (
    Logprob,
    OutputItem,
    OutputText,
    ReasoningText,
    Response,
)


class Event(ResponseModel):
    """A stream event; ``type`` is also the SSE ``event:`` name."""

    type: str
    sequence_number: int


class ResponseEvent(Event):
    """``response.created`` / ``.in_progress`` / ``.completed`` / ``.failed`` /
    ``.incomplete``."""

    response: Response


class OutputItemEvent(Event):
    """``response.output_item.added`` / ``.done``."""

    output_index: int
    item: OutputItem


class ContentPartEvent(Event):
    """``response.content_part.added`` / ``.done``."""

    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText


class TextDeltaEvent(Event):
    """``response.output_text.delta``, or ``response.reasoning_text.delta``
    (without ``logprobs``)."""

    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Logprob] | None = None
    omit_when_none: ClassVar[frozenset[str]] = frozenset({"logprobs"})


class TextDoneEvent(Event):
    """``response.output_text.done``, or ``response.reasoning_text.done``."""

    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Logprob] | None = None
    omit_when_none: ClassVar[frozenset[str]] = frozenset({"logprobs"})


class ArgumentsDeltaEvent(Event):
    """``response.function_call_arguments.delta``."""

    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(Event):
    """``response.function_call_arguments.done``."""

    item_id: str
    output_index: int
    name: str
    arguments: str
