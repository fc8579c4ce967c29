"""One chat choice's stream chunks as Responses stream events.

:class:`EventWriter` numbers the events and keeps the output items: the item
being streamed (a reasoning item, a message or a function call) is opened
(``output_item.added``), grows by deltas, and is closed (``output_item.done``)
when another kind of output starts or the choice finishes. The unary response is
the last event's ``response``, so streams and unary bodies agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from portway.protocol import response_events as wire_events
from portway.protocol import response_object as wire
from portway.serving.responses_input import new_id

Kind = Literal["message", "function_call", "reasoning"]
_PREFIX = {"message": "msg", "function_call": "fc", "reasoning": "rs"}


@dataclass
class _Open:
    """The output item being streamed."""

    kind: Kind
    index: int
    id: str
    text: list[str] = field(default_factory=list)
    logprobs: list[wire.Logprob] = field(default_factory=list)
    call_id: str = ""
    name: str = ""

    def item(self, status: wire.ItemStatus, *, final: bool = True) -> wire.OutputItem:
        text = "".join(self.text) if final else ""
        if self.kind == "message":
            parts = [self.output_text()] if final else []
            return wire.OutputMessage(id=self.id, status=status, content=parts)
        if self.kind == "reasoning":
            content = [wire.ReasoningText(text=text)] if final else []
            return wire.ReasoningOutput(id=self.id, status=status, content=content)
        return wire.FunctionCallOutput(
            id=self.id, status=status, call_id=self.call_id, name=self.name, arguments=text
        )

    def output_text(self) -> wire.OutputText:
        return wire.OutputText(text="".join(self.text), logprobs=self.logprobs)

    def part(self, *, empty: bool = False) -> wire.OutputText | wire.ReasoningText:
        if empty:
            return (
                wire.ReasoningText(text="")
                if self.kind == "reasoning"
                else wire.OutputText(text="")
            )
        if self.kind == "reasoning":
            return wire.ReasoningText(text="".join(self.text))
        return self.output_text()


def logprobs_of(choice: dict[str, Any]) -> list[wire.Logprob]:
    """A chat chunk choice's logprobs in the Responses shape."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return [wire.Logprob.model_validate(item) for item in content]


@dataclass
class EventWriter:
    """Numbers events and tracks output items; see the module docstring."""

    sequence: int = 0
    output: list[wire.OutputItem] = field(default_factory=list)
    current: _Open | None = None
    pending_space: str = ""
    """Whitespace before any item: kept until text follows, dropped before a call."""

    def event(self, model: type[wire_events.Event], kind: str, **fields: Any) -> dict[str, Any]:
        body = model(type=kind, sequence_number=self.sequence, **fields).model_dump(mode="json")
        self.sequence += 1
        return body

    def lifecycle(self, kind: str, response: wire.Response) -> dict[str, Any]:
        """``response.created``, ``.in_progress``, ``.completed``, ``.failed``, ..."""
        return self.event(wire_events.ResponseEvent, f"response.{kind}", response=response)

    # -- feeding

    def feed(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        """Events for one chat chunk choice (its ``delta`` and ``logprobs``)."""
        delta = choice["delta"]
        events: list[dict[str, Any]] = []
        if delta.get("reasoning_content"):
            events += self._text("reasoning", delta["reasoning_content"], [])
        if delta.get("content"):
            events += self._content(delta["content"], logprobs_of(choice))
        for call in delta.get("tool_calls") or ():
            events += self._call(call)
        return events

    def _content(self, text: str, logprobs: list[wire.Logprob]) -> list[dict[str, Any]]:
        if (self.current is None or self.current.kind != "message") and not text.strip():
            self.pending_space += text
            return []
        text, self.pending_space = self.pending_space + text, ""
        return self._text("message", text, logprobs)

    def _text(self, kind: Kind, text: str, logprobs: list[wire.Logprob]) -> list[dict[str, Any]]:
        events = [] if self.current and self.current.kind == kind else self._open(kind)
        assert self.current is not None
        self.current.text.append(text)
        self.current.logprobs += logprobs
        delta_kind = "output_text" if kind == "message" else "reasoning_text"
        events.append(
            self.event(
                wire_events.TextDeltaEvent,
                f"response.{delta_kind}.delta",
                item_id=self.current.id,
                output_index=self.current.index,
                content_index=0,
                delta=text,
                logprobs=logprobs if kind == "message" else None,
            )
        )
        return events

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        function = call.get("function") or {}
        events = []
        if call.get("id"):
            self.pending_space = ""
            events = self._open("function_call", call_id=call["id"], name=function["name"])
        fragment = function.get("arguments") or ""
        if fragment and self.current is not None and self.current.kind == "function_call":
            self.current.text.append(fragment)
            events.append(
                self.event(
                    wire_events.ArgumentsDeltaEvent,
                    "response.function_call_arguments.delta",
                    item_id=self.current.id,
                    output_index=self.current.index,
                    delta=fragment,
                )
            )
        return events

    # -- items

    def _open(self, kind: Kind, call_id: str = "", name: str = "") -> list[dict[str, Any]]:
        events = self.close("completed")
        index = len(self.output)
        self.current = _Open(kind, index, new_id(_PREFIX[kind]), call_id=call_id, name=name)
        item = self.current.item("in_progress", final=False)
        events.append(
            self.event(
                wire_events.OutputItemEvent,
                "response.output_item.added",
                output_index=index,
                item=item,
            )
        )
        if kind != "function_call":
            events.append(self._part_event("added", self.current, self.current.part(empty=True)))
        return events

    def _part_event(
        self, kind: str, item: _Open, part: wire.OutputText | wire.ReasoningText
    ) -> dict[str, Any]:
        return self.event(
            wire_events.ContentPartEvent,
            f"response.content_part.{kind}",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            part=part,
        )

    def close(self, status: wire.ItemStatus) -> list[dict[str, Any]]:
        """Finish the item being streamed, if any, with ``status``."""
        current, self.current = self.current, None
        if current is None:
            return []
        where = {"item_id": current.id, "output_index": current.index}
        text = "".join(current.text)
        if current.kind == "function_call":
            events = [
                self.event(
                    wire_events.ArgumentsDoneEvent,
                    "response.function_call_arguments.done",
                    **where,
                    name=current.name,
                    arguments=text,
                )
            ]
        else:
            done = "output_text" if current.kind == "message" else "reasoning_text"
            logprobs = current.logprobs if current.kind == "message" else None
            events = [
                self.event(
                    wire_events.TextDoneEvent,
                    f"response.{done}.done",
                    **where,
                    content_index=0,
                    text=text,
                    logprobs=logprobs,
                ),
                self._part_event("done", current, current.part()),
            ]
        item = current.item(status)
        self.output.append(item)
        events.append(
            self.event(
                wire_events.OutputItemEvent,
                "response.output_item.done",
                output_index=current.index,
                item=item,
            )
        )
        return events

    def finish(self, status: wire.ItemStatus) -> list[dict[str, Any]]:
        """Close the output at the end of the choice; whitespace-only text is
        kept as a message unless the model called a function."""
        calls = any(isinstance(item, wire.FunctionCallOutput) for item in self.output)
        space, self.pending_space = self.pending_space, ""
        if space and self.current is None and not calls:
            return self._text("message", space, []) + self.close(status)
        return self.close(status)

    def abandon(self) -> None:
        """Keep the item being streamed as ``incomplete``, without events (the
        stream failed or was cancelled)."""
        if self.current is not None:
            self.output.append(self.current.item("incomplete"))
            self.current = None
