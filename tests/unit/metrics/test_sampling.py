"""Queue depth, in flight, runners and upstream counts are read from the backends."""

from __future__ import annotations

from pathlib import Path

from portway.backends.scripted import ScriptedBackend
from portway.backends.upstream.backend import UpstreamBackend, upstream_backend
from portway.backends.upstream.pool import Outcome
from portway.metrics import Metrics
from portway.registry.catalog import OpenAISpec
from portway.runners.backend import RunnerBackend
from portway.runners.kinds import runner_backend
from portway.runners.link import RunnerLink
from portway.runners.wire import ModelInfo
from tests.unit.doubles import registry
from tests.unit.metrics.reading import value

RUNNER = "alice/demo/models/echo"
HOSTED = "up/hosted/models/chat"
LOCAL = "local/busy/models/chat"


class BusyBackend(ScriptedBackend):
    """A backend that reports its load (``ReportsLoad``)."""

    def load(self) -> tuple[int, int]:
        return 3, 1


def hosted() -> UpstreamBackend:
    spec = OpenAISpec.model_validate(
        {
            "user": "up",
            "app": "hosted",
            "model": "chat",
            "backend": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "upstream_model": "up",
            "eject_after": 2,
        }
    )
    return upstream_backend(spec)


def runner() -> RunnerBackend:
    info = ModelInfo(reference=RUNNER, version="0" * 32, context_length=100)
    backend = runner_backend(RUNNER, "chat", info)
    for name in ("one", "two"):
        backend.add(RunnerLink(name, info, 2, "alice"))
    return backend


def test_backends_numbers_become_gauges_and_counters(tmp_path: Path) -> None:
    upstream, runners = hosted(), runner()
    metrics = Metrics(tmp_path)
    metrics.watch(registry((RUNNER, runners), (HOSTED, upstream), (LOCAL, BusyBackend(["x"]))))
    runners.pool.links[0].in_flight = 2
    endpoint = upstream.pool.acquire()
    assert value(metrics, "portway_runners_attached", model=RUNNER) == 2
    assert value(metrics, "portway_requests_in_flight", model=RUNNER) == 2
    assert value(metrics, "portway_queue_depth", model=RUNNER) == 0
    assert value(metrics, "portway_requests_in_flight", model=HOSTED) == 1
    assert value(metrics, "portway_queue_depth", model=LOCAL) == 3
    assert value(metrics, "portway_requests_in_flight", model=LOCAL) == 1
    assert value(metrics, "portway_upstream_failures_total", model=HOSTED) == 0

    upstream.pool.release(endpoint, Outcome.FAILED)
    upstream.pool.release(upstream.pool.acquire(), Outcome.FAILED)  # the second: ejected
    upstream.retries += 1
    for _ in range(2):  # counted once however often it is read
        assert value(metrics, "portway_upstream_failures_total", model=HOSTED) == 2
        assert value(metrics, "portway_upstream_ejections_total", model=HOSTED) == 1
        assert value(metrics, "portway_upstream_retries_total", model=HOSTED) == 1
        assert value(metrics, "portway_requests_in_flight", model=HOSTED) == 0


def test_models_that_report_nothing_get_no_gauges(tmp_path: Path) -> None:
    metrics = Metrics(tmp_path)
    metrics.watch(registry((LOCAL, ScriptedBackend(["x"]))))
    rendered = metrics.render().decode()
    assert LOCAL not in rendered


class OtherProcessLink(RunnerLink):
    """A runner another process of the cluster holds (as cluster.runners_remote's)."""

    remote = True


def test_runners_of_other_processes_are_not_counted_here(tmp_path: Path) -> None:
    runners = runner()
    info = runners.pool.links[0].info
    runners.add(OtherProcessLink("elsewhere", info, 2, "alice"))
    metrics = Metrics(tmp_path)
    metrics.watch(registry((RUNNER, runners)))
    assert value(metrics, "portway_runners_attached", model=RUNNER) == 2


def test_calls_on_other_processes_runners_are_counted_there(tmp_path: Path) -> None:
    runners = runner()
    info = runners.pool.links[0].info
    elsewhere = OtherProcessLink("elsewhere", info, 2, "alice")
    runners.add(elsewhere)
    runners.pool.links[0].in_flight = 1
    elsewhere.in_flight = 2  # sent from here; the process holding it counts them
    metrics = Metrics(tmp_path)
    metrics.watch(registry((RUNNER, runners)))
    assert value(metrics, "portway_requests_in_flight", model=RUNNER) == 1
