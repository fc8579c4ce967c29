"""The error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from portway.protocol.base import ResponseModel


class Error(ResponseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(ResponseModel):
    error: Error
