"""Workers share their metrics through files: a scrape in any process sees the
sums, a dead worker's gauges stop counting, and its counters keep counting.

The scenario runs in a process of its own: ``prometheus_client`` decides how it
keeps values once per process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.metrics.reading import parsed, value_in

SCENARIO = """
import multiprocessing, os, sys
from pathlib import Path
from portway.metrics import Metrics, cleanup_multiprocess, prepare_multiprocess, worker_exited

def worker(depth):
    metrics = Metrics(Path(sys.argv[1]), ["/v1/chat/completions"], ["/v1"])
    metrics.request_done("m", {"path": "/v1/chat/completions"}, 200, 0.01)
    metrics.definitions.queue_depth.labels("m").set(depth)

directory = prepare_multiprocess()  # after prometheus_client was imported: switched
fork = multiprocessing.get_context("fork")
workers = [fork.Process(target=worker, args=(depth,)) for depth in (2, 3)]
for process in workers:
    process.start()
    process.join()
worker_exited(workers[0].pid)
sys.stdout.write(Metrics(Path(sys.argv[1])).render().decode())
cleanup_multiprocess(directory)
sys.stderr.write(str(directory.exists()))
"""


def test_workers_values_are_summed_and_dead_workers_gauges_dropped(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd() / "src")}
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    found = parsed(done.stdout)
    chat = {"model": "m", "route": "/chat/completions"}
    assert value_in(found, "portway_requests_total", **chat, status="200") == 2
    assert value_in(found, "portway_request_duration_seconds_count", **chat) == 2
    assert value_in(found, "portway_queue_depth", model="m") == 3
    assert done.stderr == "False"
