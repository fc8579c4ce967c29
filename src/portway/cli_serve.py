"""``portway serve``'s cluster flags, and the check that they can run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import click

from portway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _metrics_address(value: str | None) -> str | None:
    """``--metrics-address`` as given, once it is HOST:PORT (else a usage error)."""
    if value is None:
        return None
    from portway.metrics.http import parse_address

    try:
        parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


_OPTIONS = (
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Server processes on this address, each with its own event loop; "
        "more than one needs --redis-url and --nats-url.",
    ),
    click.option(
        "--redis-url",
        help="Redis shared by every process of the cluster (limits, revocations), "
        "e.g. redis://127.0.0.1:6379/0 [env PORTWAY_REDIS_URL].",
    ),
    click.option(
        "--nats-url",
        help="NATS shared by every process of the cluster (runners, events), "
        "e.g. nats://127.0.0.1:4222 [env PORTWAY_NATS_URL].",
    ),
    click.option(
        "--cluster-name",
        help="Prefix of the cluster's Redis keys and NATS subjects, so clusters can share "
        "them [default: portway; env PORTWAY_CLUSTER_NAME].",
    ),
    click.option(
        "--metrics-address",
        callback=lambda _ctx, _param, value: _metrics_address(value),
        help="HOST:PORT serving /metrics without a token (else /metrics is on the API "
        "port, behind an admin token).",
    ),
)


def cluster_options(command: F) -> F:
    """The flags that make ``portway serve`` one process of many."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def check_cluster(settings: Settings) -> None:
    """Fail with a clear message, before serving, if ``settings`` cannot run:
    flags that need others, or Redis or NATS out of reach."""
    from portway.cluster import ClusterConfigError, ClusterUnavailable, probe

    try:
        asyncio.run(probe(settings))
    except (ClusterConfigError, ClusterUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc
