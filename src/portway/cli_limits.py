"""``portway serve``'s connection limits: its flags, and the uvicorn protocol they make."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from portway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

SECONDS = click.FloatRange(min=0, min_open=True)

_OPTIONS = (
    ("--header-timeout", SECONDS, "Seconds a request's headers may take to arrive (then 408)."),
    ("--body-timeout", SECONDS, "Seconds a request's body may take after its headers (then 408)."),
    (
        "--stall-timeout",
        SECONDS,
        "Seconds a client may read nothing of a response (a stream, say) before its "
        "connection drops and its request is cancelled.",
    ),
    ("--max-header-bytes", click.IntRange(min=256), "Largest request head in bytes (then 431)."),
    ("--max-headers", click.IntRange(min=1), "Most headers a request may have (then 431)."),
    (
        "--max-connections",
        click.IntRange(min=1),
        "Open connections (runners' included); a request on one more gets 503.",
    ),
)


def connection_options(command: F) -> F:
    """The connection-limit flags, each defaulting to its ``Settings`` value."""
    for flag, kind, text in reversed(_OPTIONS):
        default = getattr(Settings, flag.removeprefix("--").replace("-", "_"))
        command = click.option(flag, type=kind, default=default, show_default=True, help=text)(
            command
        )
    return command


def http_protocol(settings: Settings) -> type[Any]:
    """uvicorn's HTTP protocol class with ``settings``' limits enforced."""
    from portway.connections import ConnectionLimits, guarded_protocol

    return guarded_protocol(
        ConnectionLimits(
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            stall_timeout=settings.stall_timeout,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_connections=settings.max_connections,
        )
    )
