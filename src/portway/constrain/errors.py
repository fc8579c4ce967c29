"""The error for a schema or tool list that constrained decoding cannot take."""

from __future__ import annotations

from portway.errors import InvalidRequest


class SchemaError(InvalidRequest):
    """A 400 naming the field (``param``) whose schema is invalid, too large, or uses
    a feature that cannot be enforced; also for an inconsistent tool list."""
