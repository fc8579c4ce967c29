"""Request bodies are standard JSON (RFC 8259): ``NaN``, ``Infinity`` and
``-Infinity``, which Python's and pydantic's parsers accept, are refused."""

from __future__ import annotations

from pydantic_core import from_json

from portway.errors import InvalidRequest

_CONSTANTS = (b"NaN", b"Infinity")


def non_finite_error() -> InvalidRequest:
    return InvalidRequest(
        "The request body holds NaN or Infinity, which are not JSON numbers.",
        code="invalid_json",
    )


def holds_non_finite(body: bytes) -> bool:
    """Whether ``body`` is JSON only with ``NaN``/``Infinity`` allowed as numbers.

    Costs a substring search, plus a parse when the body holds one of the names
    (inside a string, say)."""
    if not any(constant in body for constant in _CONSTANTS):
        return False
    try:
        from_json(body, allow_inf_nan=False)
    except ValueError:
        try:
            from_json(body)
        except ValueError:
            return False  # not JSON at all: the request model's parser says why
        return True
    return False
