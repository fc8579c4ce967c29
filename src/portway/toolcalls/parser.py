"""The streaming tool-call parser shared by every family.

Output is text until a family's marker opens a *region* (``<tool_call>``,
``[TOOL_CALLS]``, or, for families that write bare JSON, a ``{`` at the very start
of the output). A region is read by the family's generator (see ``stream``), which
collects the calls in it. Text that might be the beginning of a marker is held
back until it is known, and so is whitespace at the end of text: whitespace right
before a call, after the last one, or before the first text is dropped (text on
both sides of a call keeps the whitespace that followed the call).

Two modes:

* unconstrained (``tool_choice: "auto"``): a region's calls are emitted once the
  region is complete and every call in it is valid (a name, arguments that are a
  JSON object); otherwise the region's text is left as text, exactly as written.
* ``constrained`` (a grammar forced the syntax): a call is announced as soon as its
  name is known and its arguments are passed on as they are written. If the output
  is cut short (``max_tokens``), the last call's arguments are incomplete, as
  OpenAI's are.

Either way, feeding a text whole or in any pieces yields the same calls, argument
fragments that concatenate to the same text, and the same text around them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator
from dataclasses import dataclass, field

from portway.toolcalls.calls import CallDraft, CheckedCall, checked_call
from portway.toolcalls.events import CallArgs, CallStart, Event, TextEvent, new_call_id
from portway.toolcalls.stream import Cursor, Need, held_suffix_length

RegionReader = Callable[[Cursor, list[CallDraft]], Need[bool]]
"""Reads one region from just after its marker; True when it held valid call syntax.
It appends a ``CallDraft`` per call and leaves the cursor where the region ends."""


@dataclass(frozen=True)
class Family:
    """How one model family writes tool calls.

    ``markers`` open a region anywhere in the output and are not part of it.
    ``start_markers`` open one only at the very start of the output (after
    whitespace) and are part of it: they begin bare JSON such as ``{``, so calls
    found this way must look like calls, not like JSON content (see
    ``checked_call``).
    """

    name: str
    read_region: RegionReader
    markers: tuple[str, ...] = ()
    start_markers: tuple[str, ...] = ()


@dataclass
class _Region:
    cursor: Cursor
    reader: Generator[None, None, bool]
    before: str
    """Text the region replaced (held whitespace and the marker), restored on failure."""
    bare: bool
    drafts: list[CallDraft] = field(default_factory=list)
    indexes: dict[int, int] = field(default_factory=dict)
    """Draft position -> call index, for calls already announced."""
    streamed: dict[int, int] = field(default_factory=dict)
    """Draft position -> length of the arguments text already passed on."""


class ToolCallParser:
    """Splits a model's output into text and tool calls, as it streams.

    ``feed`` takes the next piece of output and returns the events it completes;
    ``finish`` ends the output and returns the rest. ``tool_names``, when given,
    are the only names an unconstrained call may have (others stay text).
    """

    def __init__(
        self, family: Family, *, constrained: bool = False, tool_names: Collection[str] = ()
    ) -> None:
        self.family = family
        self.constrained = constrained
        self.tool_names = frozenset(tool_names)
        self._pending = ""
        self._held_whitespace = ""
        self._at_start = True
        self._after_call = False
        self._text_emitted = False
        self._final = False
        self._region: _Region | None = None
        self._calls = 0
        self._events: list[Event] = []

    def feed(self, text: str) -> list[Event]:
        if self._region is not None:
            self._region.cursor.push(text)
        else:
            self._pending += text
        self._run()
        return self._take_events()

    def finish(self) -> list[Event]:
        self._final = True
        if self._region is not None:
            self._region.cursor.close()
        self._run()
        if self._held_whitespace and not self._after_call:
            self._events.append(TextEvent(self._held_whitespace))
        self._held_whitespace = ""
        return self._take_events()

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _run(self) -> None:
        """Reads as far as the text allows."""
        progressing = True
        while progressing:
            progressing = self._region_done() if self._region is not None else self._text_step()

    # ------------------------------------------------------------------ text

    def _text_step(self) -> bool:
        """Passes text on until a region opens (True) or more text is needed (False)."""
        if self._at_start:
            opened = self._start_step()
            if opened is not None:
                return opened
        text = self._pending
        found = _first_marker(text, self.family.markers)
        if found is not None:
            index, marker = found
            self._emit_text(text[:index])
            self._open(marker, text[index + len(marker) :], bare=False)
            return True
        keep = 0 if self._final else held_suffix_length(text, self.family.markers)
        self._emit_text(text[: len(text) - keep])
        self._pending = text[len(text) - keep :]
        return False

    def _start_step(self) -> bool | None:
        """At the start of the output: opens a region on a start marker (True), waits
        while one may still come (False), or gives up on them (None)."""
        body = self._pending.lstrip()
        if not body and not self._final:
            return False
        for marker in self.family.start_markers:
            if body.startswith(marker):
                self._held_whitespace = self._pending[: len(self._pending) - len(body)]
                self._open("", body, bare=True)
                return True
            if marker.startswith(body) and not self._final:
                return False
        self._at_start = False
        return None

    def _emit_text(self, text: str) -> None:
        """Emits text, holding back its trailing whitespace (see the module's docstring)."""
        combined = self._held_whitespace + text
        body = combined.rstrip()
        self._held_whitespace = combined[len(body) :]
        if self._after_call and not self._text_emitted:
            body = body.lstrip()
        if body:
            self._events.append(TextEvent(body))
            self._at_start = self._after_call = False
            self._text_emitted = True

    # ------------------------------------------------------------------ regions

    def _open(self, marker: str, text: str, *, bare: bool) -> None:
        cursor = Cursor(text)
        if self._final:
            cursor.close()
        drafts: list[CallDraft] = []
        self._region = _Region(
            cursor,
            self.family.read_region(cursor, drafts),
            before=self._held_whitespace + marker,
            bare=bare,
            drafts=drafts,
        )
        self._pending, self._held_whitespace, self._at_start = "", "", False

    def _region_done(self) -> bool:
        """Advances the open region; True once it has ended (its rest is pending)."""
        region = self._region
        assert region is not None
        try:
            next(region.reader)
        except StopIteration as stop:
            self._close_region(region, valid=bool(stop.value))
            return True
        if self.constrained:
            self._stream(region)
        return False

    def _close_region(self, region: _Region, *, valid: bool) -> None:
        self._region = None
        if self.constrained and (valid or region.indexes):
            self._stream(region)
            self._end_streamed(region)
            self._after_call = True
            self._pending = region.cursor.rest
            return
        calls = self._checked(region) if valid else None
        if calls is None:
            # Not calls after all: the marker is text, and what followed it is read again.
            self._emit_text(region.before)
            self._pending = region.cursor.text
            return
        for call in calls:
            self._announce(call.name)
            self._events.append(CallArgs(self._calls - 1, call.arguments))
        self._after_call = True
        self._pending = region.cursor.rest

    def _checked(self, region: _Region) -> list[CheckedCall] | None:
        calls = [
            checked_call(draft, bare=region.bare, tool_names=self.tool_names)
            for draft in region.drafts
        ]
        if not calls or any(call is None for call in calls):
            return None
        return [call for call in calls if call is not None]

    def _announce(self, name: str) -> int:
        index = self._calls
        self._calls += 1
        self._events.append(CallStart(index, new_call_id(), name))
        return index

    # ------------------------------------------------------------------ constrained

    def _stream(self, region: _Region) -> None:
        """Announces calls whose name is known and passes on new arguments text."""
        for position, draft in enumerate(region.drafts):
            if position not in region.indexes:
                if draft.name is None:
                    return
                region.indexes[position] = self._announce(draft.name)
            if draft.streams_arguments:
                self._pass_on_arguments(region, position, draft.arguments_so_far())

    def _end_streamed(self, region: _Region) -> None:
        """Completes the calls of a constrained region whose arguments could not be
        streamed (converted syntax, or none at all)."""
        for position, draft in enumerate(region.drafts):
            if position not in region.indexes or draft.streams_arguments:
                continue
            checked = checked_call(draft, bare=False, tool_names=())
            arguments = checked.arguments if checked else draft.raw_arguments() or "{}"
            self._pass_on_arguments(region, position, arguments)

    def _pass_on_arguments(self, region: _Region, position: int, text: str) -> None:
        sent = region.streamed.get(position, 0)
        if len(text) > sent:
            self._events.append(CallArgs(region.indexes[position], text[sent:]))
            region.streamed[position] = len(text)


def _first_marker(text: str, markers: tuple[str, ...]) -> tuple[int, str] | None:
    found = [(index, marker) for marker in markers if (index := text.find(marker)) >= 0]
    return min(found, default=None)
