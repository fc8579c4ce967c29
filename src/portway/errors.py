"""Portway's exception tree. Every error a client sees is one of these.

    PortwayError                       500 server_error
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── UnsupportedParameter       400 (param names the field)
    │   ├── ContextLengthExceeded      400 code context_length_exceeded
    │   ├── SchemaError                400 (param names the schema; constrain)
    │   └── InvalidModelReference      400 code invalid_model, param model (registry)
    ├── AuthenticationFailed           401 authentication_error
    ├── PermissionDenied               403 permission_error
    ├── NotFound                       404 invalid_request_error
    │   └── ModelNotFound              404 code model_not_found, param model
    ├── MethodNotAllowed               405 invalid_request_error
    ├── PayloadTooLarge                413 invalid_request_error
    ├── RequestTimeout                 408 code request_timeout (connection closes)
    ├── HeadersTooLarge                431 code headers_too_large
    ├── ClientDisconnected             499 (nobody reads it; for the log)
    ├── Overloaded                     503 (Retry-After header)
    ├── RateLimited                    429 code rate_limit_exceeded, type requests|tokens (limits)
    ├── QuotaExceeded                  429 code insufficient_quota (limits)
    ├── LimitsUnavailable              503 code limits_unavailable (limits; Retry-After)
    ├── TooManyConnections             503 code too_many_connections (Retry-After)
    ├── BackendError                   500 server_error (message is safe to show)
    ├── ModelFailed                    500 code model_error (a user model's exception)
    ├── RunnerConflict                 409 code model_conflict (registry)
    ├── RunnerLost                     502 code runner_lost (runners)
    ├── RunnerUnavailable              503 code model_unavailable (registry; Retry-After)
    ├── RunnerTimeout                  504 code runner_timeout (runners)
    ├── UpstreamRejected               the upstream's own 4xx, relayed as it came
    ├── BadGateway                     502 code upstream_error (an upstream model failed)
    │   ├── UpstreamUnavailable        502 (the upstream broke its API's promise)
    │   ├── RehostFailed               502 (an upstream image could not be fetched or kept)
    │   └── MalformedStream            502 (the upstream's stream is not JSON events)
    │       ├── EventTooLarge          502 (one event over the size limit)
    │       └── UpstreamStreamError    502 (the upstream reported an error mid-stream)
    └── GatewayTimeout                 504 code upstream_timeout (an upstream model was too slow)
        └── UpstreamTimedOut           504 (slower than the model's timeouts allow)

The subclasses named with a package in brackets, and the Upstream*, RehostFailed,
MalformedStream and EventTooLarge errors of the hosted-model relay, are defined
beside the code that raises them; ``UpstreamRejected``, ``UpstreamUnavailable``
and ``UpstreamTimedOut`` also carry ``UpstreamFailure``, what the relay needs to
decide on a retry or a fallback. ``tests/unit/test_errors_tree.py`` fails when a
subclass is missing here.

Foreign exceptions are translated at the boundary with ``raise X from exc``.
"""

from __future__ import annotations

from typing import Any


class PortwayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str = "The server had an error while processing your request.",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(PortwayError):
    status = 400
    type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"

    def __init__(self, param: str, reason: str = "is not supported") -> None:
        super().__init__(f"The parameter '{param}' {reason}.", param=param)


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_completion: int, context: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max_completion} tokens ({prompt_tokens} in the messages, "
            f"{max_completion} in the completion). Please reduce the length of the messages "
            "or completion.",
            param="messages",
        )


class AuthenticationFailed(PortwayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__(
            "Incorrect API key provided. Get a personal access token from this server's "
            "console (its address in a browser), or on the server's machine with "
            "`portway pat create --data-dir SERVER_DATA_DIR`, or from anywhere with "
            "`portway pat create --server URL --token ADMIN_TOKEN`."
        )


class PermissionDenied(PortwayError):
    status = 403
    type = "permission_error"


class NotFound(PortwayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(
        self, model: str, reason: str = "does not exist or you do not have access to it"
    ) -> None:
        super().__init__(f"The model '{model}' {reason}.", param="model")


class MethodNotAllowed(PortwayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(PortwayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds the limit of {limit} bytes.")


class RequestTimeout(PortwayError):
    """The request's head or body did not arrive in time; the connection closes."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"

    def __init__(self, part: str, seconds: float) -> None:
        super().__init__(
            f"The request {part} did not arrive within {seconds:g} seconds.",
            headers={"Connection": "close"},
        )


class HeadersTooLarge(PortwayError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"

    def __init__(self, max_bytes: int, max_headers: int) -> None:
        super().__init__(
            f"The request headers exceed the limit of {max_bytes} bytes or {max_headers} headers."
        )


class TooManyConnections(PortwayError):
    status = 503
    type = "server_error"
    code = "too_many_connections"

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        super().__init__(
            f"The server has {limit} connections open, its limit. Retry after {retry_after}s.",
            headers={"Retry-After": str(retry_after)},
        )


class ClientDisconnected(PortwayError):
    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("The client closed the connection before the response was ready.")


class Overloaded(PortwayError):
    status = 503
    type = "server_error"
    code = "model_overloaded"

    def __init__(self, model: str, retry_after: int = 1) -> None:
        super().__init__(
            f"The model '{model}' is busy: its queue is full. Retry after {retry_after}s.",
            headers={"Retry-After": str(retry_after)},
        )


class BackendError(PortwayError):
    """A failure inside a backend whose message is safe to show to the client."""


class ModelFailed(PortwayError):
    """A user's model (``portway.sdk``) raised; the message is ``"{ExcType}: {message}"``."""

    code = "model_error"


class BadGateway(PortwayError):
    """An upstream provider failed: 5xx, a broken connection or a body that is not
    what its API promises. The message is Portway's own and safe to show."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class GatewayTimeout(PortwayError):
    """An upstream provider did not answer (or finish) within the model's timeouts."""

    status = 504
    type = "server_error"
    code = "upstream_timeout"
