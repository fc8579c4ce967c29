"""The one place errors become HTTP responses, always in OpenAI's envelope."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from portway.api.deps import invalid_request_of
from portway.errors import MethodNotAllowed, NotFound, PortwayError


def error_response(error: PortwayError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _portway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PortwayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"Method {request.method} is not allowed here."))
    if exc.status_code == 404:
        return error_response(NotFound(f"No route for {request.method} {request.url.path}."))
    error = PortwayError(str(exc.detail))
    error.status = exc.status_code
    return error_response(error)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A parameter FastAPI validated (not a body: routes parse theirs) is a 400 naming it."""
    assert isinstance(exc, RequestValidationError)
    errors = [{**error, "loc": tuple(error["loc"])[1:]} for error in exc.errors()]
    return error_response(invalid_request_of(errors))


def install(app: FastAPI) -> None:
    app.add_exception_handler(PortwayError, _portway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
