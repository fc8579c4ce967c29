"""``portway serve``'s processes: one, or ``--workers N`` on one address.

Workers run under uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``):
the parent binds the socket once and starts N spawned processes that accept on
it, each with its own event loop, app and lifespan. It restarts a worker that
dies, stops them all if one fails to start, and on SIGTERM or SIGINT passes
SIGTERM to each, which finishes its in-flight requests (up to ``--grace``
seconds), writes its usage ledger and exits.

The settings reach each worker inside :class:`ServerConfig`, which the
supervisor pickles into it; the worker builds its app and its HTTP protocol (with
the connection limits, counted per process) from them.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from portway import logs
from portway.settings import Settings


class ServerConfig(uvicorn.Config):
    """uvicorn's config for Portway: the app and the HTTP protocol are built from
    ``settings`` in the process that serves, not in the supervisor."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            # A string, as uvicorn wants for workers; load_app builds the app itself.
            "portway.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=int(settings.grace_seconds),
            lifespan="on",
        )
        self.settings = settings

    def load_app(self) -> Callable[[], Any]:
        from portway.app import create_app

        return functools.partial(create_app, self.settings)

    def load(self) -> None:
        from portway.cli_limits import http_protocol

        super().load()
        # Built here, in the serving process: a class made at run time cannot be pickled.
        self.http_protocol_class = http_protocol(self.settings)

    def configure_logging(self) -> None:
        super().configure_logging()
        logs.configure()  # a spawned worker starts with no logging set up


def serve(settings: Settings) -> int:
    """Serve until SIGTERM or SIGINT; the exit status (0: stopped as asked)."""
    config = ServerConfig(settings)
    if settings.workers == 1:
        return _serve_alone(config)
    from portway.metrics.multiprocess import cleanup_multiprocess, prepare_multiprocess

    metrics_dir = prepare_multiprocess()  # before the workers start: they inherit it
    try:
        supervisor = _Supervisor(config, sockets=[config.bind_socket()])
        supervisor.run()
    finally:
        cleanup_multiprocess(metrics_dir)
    failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    return 1 if failed else 0


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, telling the metrics when a worker has gone."""

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            _worker_gone(pid)

    def join_all(self) -> None:
        super().join_all()
        for process in self.processes:
            _worker_gone(process.pid)


def _worker_gone(pid: int | None) -> None:
    from portway.metrics.multiprocess import worker_exited

    if pid is not None:
        worker_exited(pid)


def _serve_alone(config: ServerConfig) -> int:
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on; a no-op handler lets us exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1
