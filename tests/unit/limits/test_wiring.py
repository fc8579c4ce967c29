"""Which enforcer a process's limiter uses: its own memory when it runs alone;
with a shared cluster, Redis through the cluster's own connection (one pool per
process), its keys under ``NAME:limits:``."""

from __future__ import annotations

import secrets
from typing import Any

from portway.cluster import LocalCluster, SharedCluster
from portway.limits.limiter import enforcer_for
from portway.limits.memory import MemoryEnforcer
from portway.limits.shared import RedisEnforcer
from tests.unit.limits.conftest import drop_prefix, redis_client
from tests.unit.limits.test_enforcers import ask, token


async def test_one_process_counts_in_memory() -> None:
    enforcer = enforcer_for(LocalCluster("portway", "here"))
    assert isinstance(enforcer, MemoryEnforcer)


async def test_a_cluster_counts_on_its_own_redis_connection() -> None:
    redis = await redis_client()
    name = f"test-{secrets.token_hex(6)}"
    nats: Any = object()  # not used by limits
    cluster = SharedCluster(name, "here", redis, nats)
    try:
        enforcer = enforcer_for(cluster)
        assert isinstance(enforcer, RedisEnforcer)
        await enforcer.admit(ask(token(rpm=5)))
        keys = [key.decode() async for key in redis.scan_iter(match=f"{name}:*")]
        assert keys and all(key.startswith(f"{name}:limits:token:tok_a:") for key in keys)
        await enforcer.close()
        assert await redis.ping()  # the connection is the cluster's: it stays open
    finally:
        await drop_prefix(redis, f"{name}:")
        await redis.aclose()
