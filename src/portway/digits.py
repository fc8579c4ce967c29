"""Whole numbers written in text: ASCII decimal digits only.

``str.isdigit`` is true for superscripts and other scripts' digits, which ``int``
refuses (``"²"``) or reads (``"٣"``); input checked with it can crash or take two
spellings. Read numbers from requests with :func:`ascii_decimal` instead."""

from __future__ import annotations


def ascii_decimal(text: str, max_digits: int | None = None) -> int | None:
    """``text`` as a non-negative integer if it is 1 to ``max_digits`` ASCII
    decimal digits (no sign, space or underscore); otherwise None."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    if max_digits is not None and len(text) > max_digits:
        return None
    return int(text)
