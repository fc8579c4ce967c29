"""One choice's generated text as OpenAI delta pieces: ``content``,
``reasoning_content`` and ``tool_calls``. Streams and unary bodies both come
from here, so they agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from portway.backends.base import CallPiece
from portway.protocol import chat as wire
from portway.toolcalls import CallArgs, CallStart, Event, TextEvent, ToolCallParser, new_call_id
from portway.toolcalls.reasoning import ThinkSplitter


@dataclass
class ChoiceOutput:
    """Splits reasoning from content, then finds tool calls in the content.

    ``single_call`` (``parallel_tool_calls: false``) keeps the first call only.
    """

    parser: ToolCallParser | None = None
    splitter: ThinkSplitter | None = None
    single_call: bool = False
    calls: int = 0
    reasoning_tokens: int = 0
    _typed_calls: set[int] = field(default_factory=set, repr=False)

    def feed(self, text: str, tokens: int = 0) -> list[wire.ChunkDelta]:
        pieces = self.splitter.feed(text) if self.splitter else [("content", text)]
        if self.splitter and any(kind == "reasoning" for kind, _ in pieces):
            self.reasoning_tokens += tokens
        return self._deltas(pieces)

    def feed_reasoning(self, text: str, tokens: int = 0) -> list[wire.ChunkDelta]:
        """Reasoning the model reported as such."""
        self.reasoning_tokens += tokens
        return [wire.ChunkDelta(reasoning_content=text)] if text else []

    def feed_calls(self, pieces: Sequence[CallPiece]) -> list[wire.ChunkDelta]:
        """Tool calls the model reported as such: OpenAI's delta grammar, an id
        (made up when the model gave none) and the name once per call."""
        deltas = []
        for piece in pieces:
            if self.single_call and piece.index > 0:
                continue
            if piece.index not in self._typed_calls:
                self._typed_calls.add(piece.index)
                self.calls += 1
                function = wire.ChunkFunction(name=piece.name or "", arguments=piece.arguments)
                call = wire.ChunkToolCall(
                    index=piece.index,
                    id=piece.id or new_call_id(),
                    type="function",
                    function=function,
                )
            elif piece.arguments:
                function = wire.ChunkFunction(arguments=piece.arguments)
                call = wire.ChunkToolCall(index=piece.index, function=function)
            else:
                continue
            deltas.append(wire.ChunkDelta(tool_calls=[call]))
        return deltas

    def finish(self) -> list[wire.ChunkDelta]:
        pieces = self.splitter.finish() if self.splitter else []
        deltas = self._deltas(pieces)
        if self.parser is not None:
            deltas += self._from_events(self.parser.finish())
        return deltas

    def _deltas(self, pieces: Sequence[tuple[str, str]]) -> list[wire.ChunkDelta]:
        deltas: list[wire.ChunkDelta] = []
        for kind, text in pieces:
            if not text:
                continue
            if kind == "reasoning":
                deltas.append(wire.ChunkDelta(reasoning_content=text))
            elif self.parser is None:
                deltas.append(wire.ChunkDelta(content=text))
            else:
                deltas += self._from_events(self.parser.feed(text))
        return deltas

    def _from_events(self, events: list[Event]) -> list[wire.ChunkDelta]:
        deltas = []
        for event in events:
            delta = self._from_event(event)
            if delta is not None:
                deltas.append(delta)
        return deltas

    def _from_event(self, event: Event) -> wire.ChunkDelta | None:
        if isinstance(event, TextEvent):
            return wire.ChunkDelta(content=event.text) if event.text else None
        if self.single_call and event.index > 0:
            return None
        if isinstance(event, CallStart):
            self.calls += 1
            function = wire.ChunkFunction(name=event.name, arguments="")
            call = wire.ChunkToolCall(
                index=event.index, id=event.id, type="function", function=function
            )
            return wire.ChunkDelta(tool_calls=[call])
        assert isinstance(event, CallArgs)
        function = wire.ChunkFunction(arguments=event.fragment)
        return wire.ChunkDelta(
            tool_calls=[wire.ChunkToolCall(index=event.index, function=function)]
        )
