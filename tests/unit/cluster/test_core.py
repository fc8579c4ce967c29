"""The Cluster object: one process alone, and many sharing the machine's Redis and
NATS (each test under a cluster name of its own); token revocations reaching
every process's authenticator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import pytest

from portway.auth import tokens
from portway.auth.principal import Authenticator
from portway.cluster import (
    ClusterUnavailable,
    LocalCluster,
    SharedCluster,
    open_cluster,
    probe,
)
from portway.cluster.revocation import announce_revocation, share_revocations
from portway.errors import AuthenticationFailed
from portway.settings import Settings
from portway.store import Store, TokenInfo, User
from tests.unit.cluster.services import (
    NATS_URL,
    REDIS_URL,
    closed_port,
    cluster_name,
    require_redis_and_nats,
)

SECRET = tokens.generate()
USER = User(id=1, name="alice", is_admin=False, created_at=datetime(2025, 1, 1, tzinfo=UTC))


class OneTokenStore:
    """A store that knows one token, until it is revoked; counts its look-ups."""

    def __init__(self) -> None:
        self.lookups = 0
        self.revoked_at: datetime | None = None

    async def find_token(self, token_hash: bytes) -> TokenInfo | None:
        self.lookups += 1
        return TokenInfo(
            id="tok_1",
            user=USER,
            scopes=("inference",),
            created_at=USER.created_at,
            expires_at=None,
            revoked_at=self.revoked_at,
            last4=SECRET[-4:],
            token_hash=tokens.digest(SECRET),
        )


class WatchedAuthenticator(Authenticator):
    """An authenticator that says when it has forgotten a token."""

    def __init__(self, store: OneTokenStore) -> None:
        super().__init__(cast(Store, store), cache_seconds=3600)
        self.forgotten = asyncio.Event()

    def forget(self, token_hash: bytes) -> None:
        super().forget(token_hash)
        self.forgotten.set()


def shared_settings(name: str) -> Settings:
    return Settings(redis_url=REDIS_URL, nats_url=NATS_URL, cluster_name=name)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SharedCluster, SharedCluster]]:
    """Two processes' clusters (in one test process) under a fresh name."""
    require_redis_and_nats()
    name = cluster_name()
    first = await open_cluster(shared_settings(name))
    second = await open_cluster(shared_settings(name))
    assert isinstance(first, SharedCluster) and isinstance(second, SharedCluster)
    yield first, second
    await first.close()
    await second.close()


async def test_one_process_gets_a_local_cluster_with_names_and_events() -> None:
    cluster = await open_cluster(Settings(cluster_name="blue"))
    assert isinstance(cluster, LocalCluster) and not cluster.shared
    assert cluster.key("limits", "tok_1") == "blue:limits:tok_1"
    assert cluster.subject("runners", "attach") == "blue.runners.attach"
    got: list[bytes] = []

    async def record(payload: bytes) -> None:
        got.append(payload)

    await cluster.subscribe("news", record)
    await cluster.publish("news", b"one")
    await cluster.publish("other", b"two")
    assert got == [b"one"]
    await cluster.close()


async def test_process_names_differ() -> None:
    names = {(await open_cluster(Settings())).process for _ in range(3)}
    assert len(names) == 3


async def test_shared_clusters_hold_redis_and_nats(
    pair: tuple[SharedCluster, SharedCluster],
) -> None:
    first, second = pair
    assert first.shared and second.shared and first.process != second.process
    key = first.key("probe")
    await first.redis.set(key, b"x", ex=60)
    assert await second.redis.get(key) == b"x"
    await second.redis.delete(key)


async def test_an_event_reaches_every_process_of_its_cluster_only(
    pair: tuple[SharedCluster, SharedCluster],
) -> None:
    first, second = pair
    stranger = await open_cluster(shared_settings(cluster_name()))
    arrived: dict[str, asyncio.Queue[bytes]] = {
        "first": asyncio.Queue(),
        "second": asyncio.Queue(),
        "stranger": asyncio.Queue(),
    }
    for label, cluster in (("first", first), ("second", second), ("stranger", stranger)):
        await cluster.subscribe("news", arrived[label].put)
    await first.publish("news", b"hello")
    assert await asyncio.wait_for(arrived["second"].get(), 10) == b"hello"
    assert await asyncio.wait_for(arrived["first"].get(), 10) == b"hello"
    await stranger.publish("news", b"own")  # after ours, on the same connection order
    assert await asyncio.wait_for(arrived["stranger"].get(), 10) == b"own"
    assert arrived["first"].empty() and arrived["second"].empty()
    await stranger.close()


async def test_a_revocation_is_forgotten_by_every_process(
    pair: tuple[SharedCluster, SharedCluster],
) -> None:
    first, second = pair
    store = OneTokenStore()
    here, there = WatchedAuthenticator(store), WatchedAuthenticator(store)
    await share_revocations(first, here)
    await share_revocations(second, there)
    header = f"Bearer {SECRET}"
    await here.authenticate(header)
    await there.authenticate(header)
    assert store.lookups == 2  # each cached it, for an hour
    store.revoked_at = datetime.now(UTC)
    await announce_revocation(first, tokens.digest(SECRET))
    await asyncio.wait_for(there.forgotten.wait(), 10)
    assert here.forgotten.is_set()
    for authenticator in (here, there):
        with pytest.raises(AuthenticationFailed):
            await authenticator.authenticate(header)
    assert store.lookups == 4


async def test_a_local_revocation_is_forgotten_at_once() -> None:
    cluster = await open_cluster(Settings())
    store = OneTokenStore()
    authenticator = WatchedAuthenticator(store)
    await share_revocations(cluster, authenticator)
    await announce_revocation(cluster, tokens.digest(SECRET))
    assert authenticator.forgotten.is_set()


async def test_unreachable_redis_is_named() -> None:
    url = f"redis://127.0.0.1:{closed_port()}"
    settings = Settings(redis_url=url, nats_url=NATS_URL)
    with pytest.raises(ClusterUnavailable, match=f"Redis at {url} is unreachable"):
        await probe(settings)


async def test_unreachable_nats_is_named() -> None:
    require_redis_and_nats()  # Redis must answer for NATS to be tried
    url = f"nats://127.0.0.1:{closed_port()}"
    settings = Settings(redis_url=REDIS_URL, nats_url=url)
    with pytest.raises(ClusterUnavailable, match=f"NATS at {url} is unreachable"):
        await probe(settings)


async def test_an_event_lost_to_nats_is_logged_not_raised(
    pair: tuple[SharedCluster, SharedCluster], caplog: pytest.LogCaptureFixture
) -> None:
    first, _ = pair
    await first.nats.close()  # as when NATS has gone away for good
    await announce_revocation(first, tokens.digest(SECRET))
    assert "tokens.revoked not delivered" in caplog.text
