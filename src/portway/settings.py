"""One typed settings object, built once by the CLI and passed to ``create_app``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATA_DIR = Path("~/.local/share/portway")


def clean_public_url(url: str) -> str:
    """``url`` without a trailing ``/``; ValueError unless it is an http(s) URL
    with a host and no query, fragment or credentials."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    parts.port  # noqa: B018  (a ValueError for a port that is not one)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r} may not have a query, a fragment or credentials")
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: DEFAULT_DATA_DIR.expanduser())
    config: Path | None = None
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    header_timeout: float = 10.0
    """Seconds a request's head (request line and headers) may take to arrive."""
    body_timeout: float = 60.0
    """Seconds a request's body may take to arrive, counted from its head."""
    stall_timeout: float = 30.0
    """Seconds a client may read nothing of a response before its connection drops."""
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 1000
    """Open connections (runners' included); a request on one more gets 503."""
    grace_seconds: float = 30.0
    usage_flush_seconds: float = 0.5
    public_url: str | None = None
    """Where clients reach the server (``--public-url``): image links are built
    on it, never on a request's ``Host`` header."""
    workers: int = 1
    """Server processes on this address (``--workers``); more than one needs Redis and NATS."""
    redis_url: str | None = None
    """Shared limits and token revocation across processes and hosts (``--redis-url``)."""
    nats_url: str | None = None
    """Runners and events across processes and hosts (``--nats-url``)."""
    cluster_name: str = "portway"
    """Prefix of this cluster's Redis keys and NATS subjects (``--cluster-name``), so
    that several clusters (or test runs) can share one Redis and one NATS."""
    metrics_address: str | None = None
    """``HOST:PORT`` serving ``/metrics`` without a token (``--metrics-address``);
    without it ``/metrics`` is on the API port, behind an admin token."""

    @property
    def clustered(self) -> bool:
        """Whether state is shared with other processes (Redis and NATS in use)."""
        return self.workers > 1 or bool(self.redis_url or self.nats_url)

    @property
    def catalog_path(self) -> Path:
        return self.config or self.data_dir / "portway.toml"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'portway.db'}"

    @property
    def public_base_url(self) -> str:
        """``public_url``, or else ``http://HOST:PORT`` from ``--host`` and ``--port``."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``PORTWAY_*`` variables, then explicit overrides (None = unset)."""
        values: dict[str, object] = {}
        if data_dir := os.environ.get("PORTWAY_DATA_DIR"):
            values["data_dir"] = Path(data_dir).expanduser()
        if database_url := os.environ.get("PORTWAY_DATABASE_URL"):
            values["database_url"] = database_url
        if redis_url := os.environ.get("PORTWAY_REDIS_URL"):
            values["redis_url"] = redis_url
        if nats_url := os.environ.get("PORTWAY_NATS_URL"):
            values["nats_url"] = nats_url
        if cluster_name := os.environ.get("PORTWAY_CLUSTER_NAME"):
            values["cluster_name"] = cluster_name
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]
