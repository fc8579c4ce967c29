"""The NATS messages that carry runners between the processes of a cluster.

Subjects, under the cluster's runner prefix ``P``:

- ``P.state``: every process, every :data:`HEARTBEAT` seconds and whenever a
  runner attaches, drains or detaches there, announces its runners
  (:class:`Announcement`). A process silent for :data:`SILENT_AFTER` seconds is
  taken for dead: its runners are dropped.
- ``P.{process}.call``: a call for one of that process's runners (JSON
  :class:`CallRequest`); header ``from`` names the caller, ``call`` its call id.
- ``P.{process}.cancel``: the caller no longer wants a call (headers as above).
- ``P.{process}.answer``: the runner's answers to that process's calls, in order.
  Headers: ``call``, ``seq`` (0, 1, 2, ... per call: a gap means a lost message,
  and the call is lost) and ``kind``: ``frame`` (the payload is the runner's
  frame, as the runner wrote it), ``gone`` (the runner went away) or ``refused``
  (the owner would not run it; the payload is an :class:`Refusal`).

A payload larger than :data:`PIECE` bytes travels in pieces: every piece but the
last has header ``more``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from portway.runners.wire import MAX_CONCURRENCY, ModelInfo

HEARTBEAT = 1.0
"""Seconds between two announcements of a process's runners."""
SILENT_AFTER = 4.0
"""Seconds without an announcement after which a process's runners are dropped."""
PIECE = 256 * 1024
"""The largest payload of one message (NATS's default limit is 1 MiB)."""

TOKEN_LENGTH = 64
"""The longest subject token (an announcement's ``subject``)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MODEL = ConfigDict(extra="forbid", frozen=True)


def subject_token(name: str) -> str:
    """``name`` as one token of a NATS subject (no dots, spaces or wildcards), at
    most 64 characters. A longer one keeps its head and ends with a digest of the
    whole name: process names end in their pid and a random tag, so that two
    processes on one host with a long name still get tokens of their own."""
    token = _UNSAFE.sub("_", name) or "_"
    if len(token) <= TOKEN_LENGTH:
        return token
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{token[: TOKEN_LENGTH - len(digest) - 1]}-{digest}"


class RemoteRunner(BaseModel):
    """One runner as its process announces it."""

    model_config = _MODEL
    id: Annotated[str, Field(min_length=1, max_length=64)]
    """Unique within its process."""
    name: str
    owner: str
    model: ModelInfo
    visibility: Literal["public", "private"] = "public"
    concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]
    in_flight: Annotated[int, Field(ge=0)] = 0
    served: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0
    draining: bool = False


class Announcement(BaseModel):
    """A process's runners, on ``P.state``."""

    model_config = _MODEL
    process: Annotated[str, Field(min_length=1, max_length=200)]
    """The process's name (``/health`` shows it)."""
    subject: Annotated[str, Field(min_length=1, max_length=TOKEN_LENGTH)]
    """Its subject token: calls go to ``P.{subject}.call``."""
    runners: list[RemoteRunner] = []
    leaving: bool = False
    """The process is stopping: drop its runners now."""


class CallRequest(BaseModel):
    """What a process asks of another's runner (on ``P.{process}.call``)."""

    model_config = _MODEL
    reference: str
    version: str
    runner: str
    """The runner the caller chose (the owner may pick another of the version's
    runners when it has no free slot)."""
    type: Literal["chat", "embed", "count_tokens", "image"]
    payload: dict[str, object]
    """The call frame's fields, as :func:`portway.runners.wire.call_frame` takes them."""


class Refusal(BaseModel):
    """Why the owner did not run a call (no runner left, queue full, ...)."""

    model_config = _MODEL
    status: Annotated[int, Field(ge=400, le=599)]
    type: str
    message: str
    code: str | None = None
    headers: dict[str, str] = {}


def pieces(data: bytes) -> list[bytes]:
    """``data`` cut into payloads of at most :data:`PIECE` bytes (one, if empty)."""
    return [data[start : start + PIECE] for start in range(0, len(data), PIECE)] or [b""]


class Assembler:
    """Joins payloads sent in pieces, by a key naming their message."""

    def __init__(self) -> None:
        self._parts: dict[str, list[bytes]] = {}

    def add(self, key: str, data: bytes, more: bool) -> bytes | None:
        """The whole payload once its last piece arrives, else None."""
        if more:
            self._parts.setdefault(key, []).append(data)
            return None
        return b"".join([*self._parts.pop(key, []), data])

    def forget(self, key: str) -> None:
        self._parts.pop(key, None)
