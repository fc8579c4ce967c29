"""Numbers read from the models' backends rather than counted on the request
path: queue depth, requests in flight and runners attached (gauges), and the
hosted models' upstream retries, failures and ejections (counters the backends
keep). Reading them costs the requests nothing; :meth:`Sampler.refresh` copies
them into the metric objects before a scrape, and every second in
multiprocess mode (where the other processes' scrapes read them from files).

A backend of another kind reports its load by a ``load()`` method returning
``(waiting, running)``: :class:`ReportsLoad`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from prometheus_client import Counter

from portway.backends.upstream.backend import UpstreamBackend
from portway.metrics.definitions import Definitions
from portway.registry.models import ModelEntry, Registry
from portway.runners.backend import RunnerBackend


@runtime_checkable
class ReportsLoad(Protocol):
    def load(self) -> tuple[int, int]:
        """Requests waiting for the model, and requests it is working on now."""
        ...


@dataclass
class Sample:
    """One model's numbers, summed over its backends (a runner model's versions)."""

    waiting: int | None = None
    running: int | None = None
    runners: int | None = None
    upstream: bool = False
    retries: int = 0
    failures: int = 0
    ejections: int = 0

    def add_load(self, waiting: int, running: int) -> None:
        self.waiting = (self.waiting or 0) + waiting
        self.running = (self.running or 0) + running


def _read(sample: Sample, backend: object) -> None:
    if isinstance(backend, RunnerBackend):
        # each process counts the runners attached to it and the calls they run (a
        # call sent to another process's runner is run, and counted, there): summed
        # across a cluster's processes, a runner and a call are counted once
        links = [link for link in backend.pool.links if not link.remote]
        sample.add_load(backend.pool.health()["queued"], sum(link.in_flight for link in links))
        sample.runners = (sample.runners or 0) + len(links)
    elif isinstance(backend, UpstreamBackend):
        endpoints = backend.pool.endpoints
        sample.add_load(0, sum(endpoint.in_flight for endpoint in endpoints))
        sample.upstream = True
        sample.retries += backend.retries
        sample.failures += sum(endpoint.failures for endpoint in endpoints)
        sample.ejections += sum(endpoint.ejections for endpoint in endpoints)
    elif isinstance(backend, ReportsLoad):
        sample.add_load(*backend.load())


def sample(entries: Iterable[ModelEntry]) -> dict[str, Sample]:
    """Each model's numbers, by its name; each backend read once."""
    backends = {id(entry.backend): entry for entry in entries}
    found: dict[str, Sample] = defaultdict(Sample)
    for entry in backends.values():
        _read(found[entry.name], entry.backend)
    return found


class Sampler:
    """Copies :func:`sample`'s numbers into the metric objects: gauges are set;
    counters grow by what their backends counted since the last refresh."""

    def __init__(self, definitions: Definitions, registry: Registry) -> None:
        self._metrics = definitions
        self._registry = registry
        self._counted: dict[tuple[str, str], int] = {}

    def refresh(self) -> None:
        registry = self._registry
        metrics = self._metrics
        for model, found in sample([*registry.entries(), *registry.runner_entries()]).items():
            for gauge, value in (
                (metrics.queue_depth, found.waiting),
                (metrics.requests_in_flight, found.running),
                (metrics.runners_attached, found.runners),
            ):
                if value is not None:
                    gauge.labels(model).set(value)
            if found.upstream:
                self._grow(metrics.upstream_retries, "retries", model, found.retries)
                self._grow(metrics.upstream_failures, "failures", model, found.failures)
                self._grow(metrics.upstream_ejections, "ejections", model, found.ejections)

    def _grow(self, counter: Counter, name: str, model: str, total: int) -> None:
        """Add what ``model``'s backends counted since the last refresh (all of
        ``total`` if it went down: a backend that was replaced)."""
        before = self._counted.get((name, model), 0)
        self._counted[(name, model)] = total
        grown = total - before if total >= before else total
        child = counter.labels(model)  # shown from the start, at 0
        if grown:
            child.inc(grown)
