"""Token revocation reaches every process at once: the revoking process publishes
the token's hash and each process drops it from its authenticator's cache
(without this, a revoked token is still refused everywhere within the cache's
two seconds)."""

from __future__ import annotations

from portway.auth.principal import Authenticator
from portway.cluster.core import Cluster

TOPIC = "tokens.revoked"


async def share_revocations(cluster: Cluster, authenticator: Authenticator) -> None:
    """Have ``authenticator`` forget every token revoked anywhere in ``cluster``."""

    async def forget(token_hash: bytes) -> None:
        authenticator.forget(token_hash)

    await cluster.subscribe(TOPIC, forget)


async def announce_revocation(cluster: Cluster, token_hash: bytes) -> None:
    """Tell every process (this one included) that ``token_hash`` is revoked."""
    await cluster.publish(TOPIC, token_hash)
