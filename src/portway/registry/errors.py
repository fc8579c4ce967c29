"""The errors of resolving runner-served models (see ``Registry``)."""

from __future__ import annotations

from portway.errors import PortwayError

RETRY_AFTER = 5
"""Seconds a client is asked to wait for a runner to (re)attach."""


class RunnerUnavailable(PortwayError):
    """No runner of the model (or of the pinned version) is attached."""

    status = 503
    type = "server_error"
    code = "model_unavailable"

    def __init__(self, model: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(
            f"The model '{model}' is registered but no runner serving it is attached. "
            f"Retry after {retry_after}s.",
            headers={"Retry-After": str(retry_after)},
        )


class RunnerConflict(PortwayError):
    status = 409
    type = "invalid_request_error"
    code = "model_conflict"
