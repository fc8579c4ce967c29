"""The metrics' part of the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from portway.metrics.http import MetricsServer, parse_address
from portway.metrics.service import Metrics
from portway.registry.models import Registry
from portway.settings import Settings


@asynccontextmanager
async def metrics_running(
    metrics: Metrics, settings: Settings, registry: Registry
) -> AsyncIterator[None]:
    """Sample ``registry``'s backends, and serve ``--metrics-address`` if set."""
    metrics.watch(registry)
    metrics.start()
    server = None
    try:
        if settings.metrics_address:
            host, port = parse_address(settings.metrics_address)
            server = MetricsServer(metrics, host, port, shared=settings.workers > 1)
            await server.start()
        yield
    finally:
        if server is not None:
            await server.stop()
        await metrics.stop()
