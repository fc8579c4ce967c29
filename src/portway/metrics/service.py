"""``Metrics``: one per app. The request path calls :meth:`Metrics.request_done`
(middleware) and :meth:`Metrics.usage_ended` (the ledger writer); a scrape calls
:meth:`Metrics.render`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

from portway.aio import cancel_and_wait
from portway.metrics.definitions import Definitions
from portway.metrics.ledger import LedgerLag
from portway.metrics.multiprocess import multiprocess_dir
from portway.metrics.routes import RouteLabels
from portway.metrics.sampling import Sampler
from portway.registry.models import Registry
from portway.serving.usage import Meter

log = logging.getLogger("portway.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus's text format, as every Prometheus version reads it (the names
here need none of the newer format's escaping)."""
REFRESH_SECONDS = 1.0
"""How often each process copies its sampled numbers to the shared files
(multiprocess mode only; a single process reads them at each scrape)."""


class Metrics:
    """The app's metrics. ``journal_dir``: the usage ledger's journal;
    ``direct_routes`` and ``api_prefixes``: see :class:`RouteLabels`."""

    def __init__(
        self,
        journal_dir: Path,
        direct_routes: Iterable[str] = (),
        api_prefixes: Iterable[str] = (),
    ) -> None:
        shared = multiprocess_dir()
        self.multiprocess = shared is not None
        own = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.definitions = Definitions.create(own)
        self.exposition = own or CollectorRegistry()
        if shared is not None:
            MultiProcessCollector(self.exposition, path=str(shared))  # type: ignore[no-untyped-call]
        self.exposition.register(LedgerLag(journal_dir))
        self.route_label = RouteLabels(direct_routes, api_prefixes)
        self._requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._usage: dict[str, tuple[Counter, Counter, Histogram]] = {}
        self._sampler: Sampler | None = None
        self._task: asyncio.Task[None] | None = None

    def request_done(self, model: str, scope: Scope, status: int, seconds: float) -> None:
        """One HTTP request answered (``model``: empty when none was resolved)."""
        key = (model, self.route_label(scope), status)
        children = self._requests.get(key)
        if children is None:
            children = self._requests[key] = self._request_children(*key)
        children[0].inc()
        children[1].observe(seconds)

    def _request_children(self, model: str, route: str, status: int) -> tuple[Counter, Histogram]:
        metrics = self.definitions
        return (
            metrics.requests.labels(model, route, str(status)),
            metrics.request_duration.labels(model, route),
        )

    def usage_ended(self, meter: Meter, status: str) -> None:
        """One ledger row written (``status``: completed, failed, cancelled):
        its tokens, and its time to the first token where one came."""
        children = self._usage.get(meter.model)
        if children is None:
            children = self._usage[meter.model] = self._usage_children(meter.model)
        prompt, completion, first_token = children
        if meter.prompt_tokens > 0:
            prompt.inc(meter.prompt_tokens)
        if meter.completion_tokens > 0:
            completion.inc(meter.completion_tokens)
        if meter.first_token_at is not None:
            first_token.observe(max(0.0, meter.first_token_at - meter.clock_started))

    def _usage_children(self, model: str) -> tuple[Counter, Counter, Histogram]:
        metrics = self.definitions
        return (
            metrics.prompt_tokens.labels(model),
            metrics.completion_tokens.labels(model),
            metrics.time_to_first_token.labels(model),
        )

    def watch(self, registry: Registry) -> None:
        """Read queue depth, in flight, runners and upstream counts from
        ``registry``'s backends (see :mod:`portway.metrics.sampling`)."""
        self._sampler = Sampler(self.definitions, registry)

    def refresh(self) -> None:
        if self._sampler is not None:
            self._sampler.refresh()

    def render(self) -> bytes:
        """The text exposition of every metric, this process's samples fresh."""
        self.refresh()
        return generate_latest(self.exposition)

    def start(self) -> None:
        """In multiprocess mode, keep this process's samples fresh in the files."""
        if self.multiprocess and self._task is None:
            self._task = asyncio.create_task(self._refresh_often(), name="metrics-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _refresh_often(self) -> None:
        failing = False
        while True:
            try:
                self.refresh()
                failing = False
            except Exception:
                if not failing:  # once per streak
                    log.exception("reading the models' metrics failed")
                failing = True
            await asyncio.sleep(REFRESH_SECONDS)
