"""Log lines nobody can forge.

Runner names, model names, request paths and other strings from clients and
runners reach the log. :class:`SafeFormatter` escapes control characters (a
newline becomes ``\\n``, a NUL ``\\x00``) in every message, so one record is one
line; a traceback's lines are escaped too and indented, so none of them reads
as a record of its own.
"""

from __future__ import annotations

import logging
import re
from types import TracebackType

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def escape(text: str) -> str:
    """``text`` with each control character (C0, DEL, C1, line and paragraph
    separators) written as its Python escape."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def _indented(text: str) -> str:
    return "\n".join("    " + escape(line) for line in text.splitlines())


class SafeFormatter(logging.Formatter):
    """A formatter whose every record is one line (plus an indented traceback)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo | tuple[None, None, None]) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def configure(level: int = logging.INFO) -> None:
    """Log to stderr through a :class:`SafeFormatter` (what ``portway serve`` and
    ``portway runner`` do)."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
