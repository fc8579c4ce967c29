"""``--workers``: what the supervisor hands each worker builds the same server."""

from __future__ import annotations

import pickle
from pathlib import Path

from fastapi import FastAPI

from portway.connections import GuardedProtocol
from portway.settings import Settings
from portway.workers import ServerConfig


def test_a_worker_gets_the_settings_and_builds_its_app_and_limits(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        port=8123,
        workers=3,
        grace_seconds=12.5,
        max_connections=7,
        header_timeout=4.0,
        redis_url="redis://127.0.0.1:6379",
        nats_url="nats://127.0.0.1:4222",
        cluster_name="blue",
    )
    # What uvicorn's supervisor does to hand the config to a spawned worker.
    config = pickle.loads(pickle.dumps(ServerConfig(settings)))
    assert isinstance(config, ServerConfig) and config.settings == settings
    assert (config.port, config.workers, config.timeout_graceful_shutdown) == (8123, 3, 12)
    config.load()
    app = config.loaded_app.app  # inside uvicorn's proxy-headers middleware, as before
    assert isinstance(app, FastAPI) and app.state.settings == settings
    protocol = config.http_protocol_class
    assert issubclass(protocol, GuardedProtocol)
    assert (protocol.limits.max_connections, protocol.limits.header_timeout) == (7, 4.0)


def test_one_process_loads_the_same_way(tmp_path: Path) -> None:
    config = ServerConfig(Settings(data_dir=tmp_path))
    config.load()
    assert config.workers == 1 and not config.access_log
    assert issubclass(config.http_protocol_class, GuardedProtocol)
