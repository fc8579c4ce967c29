"""Streamed text helpers shared by backends: UTF-8 pieces and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class Utf8StreamDecoder:
    """Decodes a stream of byte pieces, holding back incomplete UTF-8 sequences.

    A token may end in the middle of a multi-byte character; its bytes are kept
    until the next piece completes it. Invalid bytes become U+FFFD.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        """The text that ``piece`` completes (possibly empty)."""
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """Whatever is held back, with an incomplete sequence as U+FFFD."""
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Cuts streamed text at the first stop string.

    Text that could be the beginning of a stop string is held back until it is
    known not to be one. The stop string itself and everything after it are dropped.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text now safe to emit, and whether a stop string was reached."""
        buffer = self._held + text
        cut = self._first_stop(buffer)
        if cut is not None:
            self._held = ""
            return buffer[:cut], True
        split = len(buffer) - self._partial_stop_length(buffer)
        self._held = buffer[split:]
        return buffer[:split], False

    def flush(self) -> str:
        """The held-back text, once the stream ended without a stop."""
        held, self._held = self._held, ""
        return held

    def _first_stop(self, buffer: str) -> int | None:
        found = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        return min(found, default=None)

    def _partial_stop_length(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
