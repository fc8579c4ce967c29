"""What a clustered start needs, checked before anything opens."""

from __future__ import annotations

import re

from portway.settings import Settings

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ClusterConfigError(ValueError):
    """Settings that cannot run as asked; the message says which flags to give."""


def check_settings(settings: Settings) -> None:
    """Raise :class:`ClusterConfigError` unless ``settings`` name a runnable layout:
    one process alone, or Redis and NATS both given (needed for ``--workers`` > 1)."""
    if settings.workers < 1:
        raise ClusterConfigError(f"--workers must be 1 or more, not {settings.workers}")
    if not _NAME.fullmatch(settings.cluster_name):
        raise ClusterConfigError(
            f"--cluster-name {settings.cluster_name!r} must be 1 to 64 letters, digits, "
            "'-' or '_' (it prefixes Redis keys and NATS subjects)"
        )
    has_redis, has_nats = bool(settings.redis_url), bool(settings.nats_url)
    if settings.workers > 1 and not (has_redis and has_nats):
        raise ClusterConfigError(
            f"--workers {settings.workers} needs --redis-url and --nats-url "
            "(shared limits and runners)"
        )
    if has_redis != has_nats:
        given, missing = (
            ("--redis-url", "--nats-url") if has_redis else ("--nats-url", "--redis-url")
        )
        raise ClusterConfigError(
            f"{given} needs {missing} too: limits are shared through Redis and runners "
            "through NATS (give both, or neither for a single process)"
        )
