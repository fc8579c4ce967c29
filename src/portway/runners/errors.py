"""The errors clients see because of runners."""

from __future__ import annotations

from portway.errors import PortwayError
from portway.runners.wire import ErrorFrame

_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 422, 429})
_SERVER_STATUSES = frozenset({500, 502, 503, 504})


class RunnerLost(PortwayError):
    """The runner of a response that had begun went away."""

    status = 502
    type = "server_error"
    code = "runner_lost"

    def __init__(self, model: str, attempts: int = 1) -> None:
        super().__init__(
            f"{attempts} runners serving the model '{model}' went away while handling this request."
            if attempts > 1
            else f"The runner serving the model '{model}' went away before the response "
            "was complete."
        )


class RunnerTimeout(PortwayError):
    """The runner of a call sent nothing within the model's deadline (the runner is
    asked to cancel the call)."""

    status = 504
    type = "server_error"
    code = "runner_timeout"

    def __init__(self, model: str, deadline: str, seconds: float) -> None:
        super().__init__(
            f"The runner serving the model '{model}' sent nothing for {seconds:g}s "
            f"(its {deadline} deadline); the request was cancelled."
        )


class RunnerGone(Exception):
    """Internal: the runner of a call disconnected."""


def from_frame(frame: ErrorFrame) -> PortwayError:
    """The client-facing error for a runner's ``error`` frame.

    Statuses a model has no business returning (401, 403, ...) become 400 or 500.
    """
    status = frame.status
    if status < 500 and status not in _CLIENT_STATUSES:
        status = 400
    elif status >= 500 and status not in _SERVER_STATUSES:
        status = 500
    error = PortwayError(frame.message, param=frame.param, code=frame.code)
    error.status = status
    error.type = "invalid_request_error" if status < 500 else "server_error"
    return error
