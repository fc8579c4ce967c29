"""Reading an upstream's server-sent events, and rewriting as little as possible.

Events are split on blank lines, lines ending in ``\\n``, ``\\r\\n`` or ``\\r`` as
the SSE specification allows. Splitting is linear: each byte that arrives is
normalised and searched once, and an event still incomplete after
``max_event_bytes`` (16 MiB by default, the catalogue's ``max_event_bytes``) ends
the stream as malformed instead of growing without bound. Each ``data:``
payload is parsed once with pydantic-core's JSON parser (0.75 µs for a typical
chunk on the benchmark machine, against 2.7 µs for ``json.loads``), which checks
it is JSON and finds usage, errors and the end; the ``model`` value is then
swapped in the raw bytes by a targeted replace of ``"model":"<upstream's>"``
(0.1 µs), so chunks are relayed byte for byte apart from that. A full parse +
``json.dumps`` round trip is the fallback when the value is spelled in a way the
replace does not find.

The replace is safe: inside a JSON string every ``"`` is escaped, so the bytes
``"model":"x"`` (a quote after ``model``, then a colon) only occur as a real key.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from pydantic_core import from_json

from portway.backends.upstream.spec import MAX_EVENT_BYTES
from portway.errors import BadGateway

SSE_FIELDS = frozenset({b"data", b"event", b"id", b"retry"})


class MalformedStream(BadGateway):
    """The upstream's stream is not server-sent events of JSON objects."""


class Event(NamedTuple):
    """One event: its ``event:`` name (if any) and its ``data:`` lines joined."""

    name: bytes | None
    data: bytes


class EventTooLarge(MalformedStream):
    """The upstream sent an event (or a run of bytes with no event end) over the limit."""


class EventSplitter:
    """Bytes in, complete events out (each without its closing blank line, its
    line endings made ``\\n``); :class:`EventTooLarge` once an event, complete or
    not, is over ``max_event_bytes``. ``scanned`` counts the bytes searched for an
    event's end: at most the bytes fed plus one per piece, however they are cut."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.scanned = 0
        self._buffer = bytearray()
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes]:
        data = self._normalise(data)
        buffer = self._buffer
        search = max(0, len(buffer) - 1)  # an end may straddle the previous piece
        buffer += data
        self.scanned += len(buffer) - search
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n\n", search)) != -1:
            self._check(end - start)
            events.append(bytes(buffer[start:end]))
            start = search = end + 2
        del buffer[:start]
        self._check(len(buffer))
        return events

    def _normalise(self, data: bytes) -> bytes:
        """``data`` with ``\\r\\n`` and ``\\r`` made ``\\n`` (a ``\\r`` that ended the
        previous piece already counted as the line's end)."""
        if not data:
            return data
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        self._after_cr = data.endswith(b"\r")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _check(self, size: int) -> None:
        if size > self.max_event_bytes:
            raise EventTooLarge(
                f"The upstream sent an event over {self.max_event_bytes} bytes "
                "(or a stream with no event end)."
            )

    @property
    def pending(self) -> bytes:
        """What came after the last complete event."""
        return bytes(self._buffer).strip()


def parse_event(raw: bytes) -> Event | None:
    """The event in ``raw``; None for comments and empty events. Lines that are
    not SSE fields make the stream malformed (no OpenAI-compatible server sends them)."""
    if raw.startswith(b"data: ") and b"\n" not in raw:
        return Event(None, raw[6:])
    name: bytes | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if field not in SSE_FIELDS:
            raise MalformedStream("The upstream sent a stream that is not server-sent events.")
        value = value[1:] if value.startswith(b" ") else value
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value
    if not data:
        return None
    return Event(name, b"\n".join(data))


def parse_json(data: bytes) -> dict[str, Any]:
    """``data`` as a JSON object, or MalformedStream (``NaN`` and ``Infinity`` are
    not JSON: refusing them is a parser flag, at no measurable cost)."""
    try:
        found = from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        raise MalformedStream("The upstream sent an event that is not JSON.") from exc
    if not isinstance(found, dict):
        raise MalformedStream("The upstream sent an event that is not a JSON object.")
    return found


class ModelRewriter:
    """Puts Portway's model reference where the upstream wrote its own model name."""

    def __init__(self, public: str) -> None:
        self.public = public
        self._encoded = json.dumps(public).encode("utf-8")
        self._patterns: dict[str, tuple[bytes, bytes]] = {}

    def _for(self, upstream: str) -> tuple[bytes, bytes]:
        found = self._patterns.get(upstream)
        if found is None:
            value = json.dumps(upstream).encode("utf-8")
            found = (b'"model":' + value, b'"model": ' + value)
            self._patterns[upstream] = found
        return found

    def rewrite(self, raw: bytes, top: dict[str, Any], holder: dict[str, Any] | None) -> bytes:
        """``raw``, the JSON text of ``top``, with the ``model`` of ``holder`` (``top``
        or an object nested in it) replaced by Portway's reference."""
        upstream = holder.get("model") if holder is not None else None
        if holder is None or not isinstance(upstream, str) or upstream == self.public:
            return raw
        patterns = self._for(upstream)
        for index, pattern in enumerate(patterns):
            if pattern in raw:
                if index:  # the spelling this upstream uses is tried first from now on
                    self._patterns[upstream] = (pattern, patterns[0])
                colon = pattern.index(b":") + 1
                return raw.replace(pattern, pattern[:colon] + self._encoded, 1)
        holder["model"] = self.public
        return json.dumps(top, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
